"""Ego-motion-aligned BEV history: analytic warps, the key-frame slots (against the official
`get_adj_info`, Yzichen/FlashOCC 4084861 `projects/mmdet3d_plugin/datasets/nuscenes_dataset_bevdet.py`
l.280-296) and the reset policy scaled to the history interval."""
from __future__ import annotations

import math

import pytest
import torch

from occ_ros.core.config import GridSpec, ModelConfig
from occ_ros.core.errors import ConfigError, InputError
from occ_ros.temporal import (ResetReason, TemporalBuffer, TemporalConfig, bev_affine, relative_transform,
                              warp_bev)

G = GridSpec()                       # the default 200 × 200 BEV, 0.4 m, [−40, 40)
NY, NX = G.bev_shape
S = G.x.step
SEC = 1_000_000_000


def pose(x: float = 0.0, y: float = 0.0, yaw: float = 0.0, z: float = 0.0) -> torch.Tensor:
    """T_odom_base for a planar pose."""
    T = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    T[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    T[:3, 3] = torch.tensor([x, y, z], dtype=torch.float64)
    return T


def one_hot(row: int, col: int, c: int = 1) -> torch.Tensor:
    f = torch.zeros(c, NY, NX)
    f[:, row, col] = 1.0
    return f


def peak(f: torch.Tensor) -> tuple[int, int]:
    i = int(f.reshape(-1).argmax())
    return (i // NX) % NY, i % NX


# ------------------------------------------------------------------------------------------
# pure warp
# ------------------------------------------------------------------------------------------

def test_forward_4m_moves_pattern_10_cells_back_along_x():
    f = one_hot(70, 120)
    out = warp_bev(f, relative_transform(pose(), pose(x=4.0)), G)
    assert peak(out) == (70, 110)
    assert abs(float(out[0, 70, 110]) - 1.0) < 1e-4
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-4)       # nothing else lit
    # lateral motion moves rows: 2 m left → 5 rows down (towards lower y)
    out = warp_bev(f, relative_transform(pose(), pose(y=2.0)), G)
    assert peak(out) == (65, 120)


def test_90deg_yaw_moves_cell_where_geometry_says():
    row, col = 70, 120
    # reference convention: pixel (col, row) sits at metric (x_lo + col·s, y_lo + row·s)
    xp, yp = G.x.lo + col * S, G.y.lo + row * S                  # (8, −12) in the previous frame
    # ego turned +90° (left): a world point at (x, y) is now at (y, −x) in the ego frame
    xc, yc = yp, -xp
    exp = (round((yc - G.y.lo) / S), round((xc - G.x.lo) / S))
    assert exp == (80, 70)
    out = warp_bev(one_hot(row, col), relative_transform(pose(), pose(yaw=math.pi / 2)), G)
    assert peak(out) == exp and abs(float(out[0, 80, 70]) - 1.0) < 1e-4
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-4)


def test_linear_field_is_warped_exactly_for_any_rigid_motion():
    """Bilinear sampling reproduces an affine field exactly: checks the convention at any angle."""
    a, b, c0 = 0.37, -0.21, 5.0
    cols = torch.arange(NX, dtype=torch.float64).view(1, NX).expand(NY, NX)
    rows = torch.arange(NY, dtype=torch.float64).view(NY, 1).expand(NY, NX)
    X, Y = G.x.lo + cols * S, G.y.lo + rows * S
    field = (a * X + b * Y + c0).to(torch.float64)[None]
    P, C = pose(3.0, -1.0, 0.4), pose(4.37, 0.52, 0.71)
    T = relative_transform(P, C)
    out = warp_bev(field, T, G)
    # the current pixel's metric point, expressed in the previous frame
    Tinv = torch.linalg.inv(T)
    xp = Tinv[0, 0] * X + Tinv[0, 1] * Y + Tinv[0, 3]
    yp = Tinv[1, 0] * X + Tinv[1, 1] * Y + Tinv[1, 3]
    inside = (xp >= G.x.lo) & (xp <= G.x.lo + (NX - 1) * S) & (yp >= G.y.lo) & (yp <= G.y.lo + (NY - 1) * S)
    assert inside.float().mean() > 0.7
    expected = a * xp + b * yp + c0
    assert torch.allclose(out[0][inside], expected[inside], atol=1e-6)
    # far outside → zero padding
    margin = (xp < G.x.lo - S) | (xp > G.x.lo + NX * S) | (yp < G.y.lo - S) | (yp > G.y.lo + NY * S)
    assert margin.any() and float(out[0][margin].abs().max()) == 0.0


def test_zeros_where_the_previous_frame_saw_nothing():
    out = warp_bev(torch.ones(3, NY, NX), relative_transform(pose(), pose(x=4.0)), G)
    assert float(out[:, :, 190:].abs().max()) < 1e-4               # ahead: not seen before
    assert torch.allclose(out[:, :, :190], torch.ones(3, NY, 190), atol=1e-4)


def test_warp_a_then_b_equals_warp_ab():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(1, 4, NY, NX, generator=g)
    # integer-cell motions and quarter turns: bilinear is exact up to float rounding
    p0, p1, p2 = pose(0, 0, 0), pose(2.0, -1.2, math.pi / 2), pose(-0.8, 3.6, 0.0)
    A = relative_transform(p0, p1)            # frame 0 → frame 1
    B = relative_transform(p1, p2)            # frame 1 → frame 2
    twice = warp_bev(warp_bev(f, A, G), B, G)
    once = warp_bev(f, B @ A, G)
    assert torch.allclose(B @ A, relative_transform(p0, p2))
    ones = torch.ones(1, 1, NY, NX)
    interior = (warp_bev(warp_bev(ones, A, G), B, G)[0, 0] > 1 - 1e-4) & (warp_bev(ones, B @ A, G)[0, 0] > 1 - 1e-4)
    assert interior.float().mean() > 0.5
    assert torch.allclose(twice[0][:, interior], once[0][:, interior], atol=1e-4)


def test_batched_warp_and_affine_match_reference_formula():
    Ts = torch.stack([relative_transform(pose(), pose(x=4.0)), relative_transform(pose(), pose(yaw=0.3))])
    f = torch.rand(2, 2, NY, NX)
    both = warp_bev(f, Ts, G)
    assert torch.allclose(both[0], warp_bev(f[0], Ts[0], G)) and torch.allclose(both[1], warp_bev(f[1], Ts[1], G))
    # the reference matrix for pure translation: pixel shift of +10 columns
    tf = bev_affine(Ts[0], G)
    assert torch.allclose(tf, torch.tensor([[1.0, 0, 10.0], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float64))
    with pytest.raises(InputError):
        warp_bev(torch.zeros(1, 2, NY, NX - 1), Ts[0], G)


# ------------------------------------------------------------------------------------------
# the buffer
# ------------------------------------------------------------------------------------------

def buf(n: int = 2, c: int | None = 3, **kw) -> TemporalBuffer:
    return TemporalBuffer(TemporalConfig(num_history=n, grid=G, channels=c, **kw))


def step(b: TemporalBuffer, t_ns: int, p: torch.Tensor, value: float = 1.0):
    h, v, r = b.prepare(t_ns, p)
    b.push(torch.full((1, b.channels or 3, NY, NX), value), t_ns, p)
    return h, v, r


def test_buffer_warps_history_into_current_frame():
    b = buf(n=1, c=1)
    h, v, r = b.prepare(0, pose())
    assert r is ResetReason.FIRST_FRAME and v.tolist() == [0.0] and float(h.abs().sum()) == 0
    b.push(one_hot(70, 120)[None], 0, pose())
    h, v, r = b.prepare(SEC // 2, pose(x=4.0))
    assert r is ResetReason.NONE and v.tolist() == [1.0]
    assert h.shape == (1, 1, NY, NX) and peak(h[0]) == (70, 110)


def test_valid_mask_fills_over_first_n_frames_and_newest_first():
    b = buf(n=3, c=2)
    valids, hist = [], []
    for i in range(5):
        h, v, _ = b.prepare(i * SEC // 2, pose(x=0.1 * i))
        valids.append(v.tolist())
        hist.append(h)
        # stationary-valued maps: frame i holds value i + 1 everywhere
        b.push(torch.full((1, 2, NY, NX), float(i + 1)), i * SEC // 2, pose(x=0.1 * i))
    assert valids == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    h = hist[4].view(3, 2, NY, NX)        # frame 4: slots hold frames 3, 2, 1 (values 4, 3, 2)
    centre = h[:, :, 100, 50]             # far from the edges the small motions keep values intact
    assert torch.allclose(centre, torch.tensor([[4.0, 4.0], [3.0, 3.0], [2.0, 2.0]]), atol=1e-5)
    # the ring keeps what a later frame's slots can still reach (oldest target − tolerance)
    assert b.stamps_ns == [4 * SEC // 2, 3 * SEC // 2, 2 * SEC // 2, SEC // 2]
    assert hist[1].shape == (1, 6, NY, NX) and float(hist[1][0, 2:].abs().sum()) == 0.0


def test_each_reset_fires_exactly_when_it_should():
    """Limits at the defaults (0.5 s interval): gap 2 intervals; 50 m/s and 1 rad/s over the time
    since the newest stored frame, floored at a quarter interval (6.25 m, 0.125 rad)."""
    b = buf(n=2)
    t = 0
    assert step(b, t, pose())[2] is ResetReason.FIRST_FRAME
    # gap: exactly max_gap_s (2 × 0.5 s) continues, one nanosecond more resets
    t += SEC
    assert step(b, t, pose())[2] is ResetReason.NONE
    t += SEC + 1
    assert step(b, t, pose())[2] is ResetReason.GAP and len(b) == 1
    # time backwards and duplicate stamps
    assert step(b, t - 1, pose())[2] is ResetReason.TIME_BACKWARDS
    assert step(b, t - 1, pose())[2] is ResetReason.TIME_BACKWARDS        # duplicate → reset
    t -= 1
    # translation at camera rate (dt = 0.125 s): 6.25 m continues, 6.26 m resets (3-D norm: z counts)
    eighth = SEC // 8
    t += eighth
    assert step(b, t, pose(x=3.75, y=5.0))[2] is ResetReason.NONE
    t += eighth
    assert step(b, t, pose(x=3.75, y=5.0, z=6.26))[2] is ResetReason.POSE_JUMP
    # rotation: 0.12 rad continues, 0.13 rad resets
    t += eighth
    assert step(b, t, pose(x=3.75, y=5.0, z=6.26, yaw=0.12))[2] is ResetReason.NONE
    t += eighth
    assert step(b, t, pose(x=3.75, y=5.0, z=6.26, yaw=0.12 + 0.13))[2] is ResetReason.POSE_JUMP
    # the limits grow with the time since the newest stored frame: 20 m in 0.5 s is 40 m/s
    t += SEC // 2
    assert step(b, t, pose(x=23.75, y=5.0, z=6.26, yaw=0.25))[2] is ResetReason.NONE
    # explicit
    t += eighth
    assert step(b, t, pose(x=23.75, y=5.0, z=6.26, yaw=0.25))[2] is ResetReason.NONE
    b.reset()
    assert len(b) == 0
    t += eighth
    h, v, r = step(b, t, pose(x=23.75, y=5.0, z=6.26, yaw=0.25))
    assert r is ResetReason.EXPLICIT and v.tolist() == [0.0, 0.0]
    t += eighth
    assert step(b, t, pose(x=23.75, y=5.0, z=6.26, yaw=0.25))[2] is ResetReason.NONE
    assert b.reset_counts == {'first_frame': 1, 'time_backwards': 2, 'gap': 1, 'pose_jump': 2, 'explicit': 1}
    assert len(b) == 2


def test_limits_scale_with_the_history_interval():
    """A 0.8 s pause keeps a 0.5 s-interval history and resets a 0.25 s one; at camera rate the
    translation limit is the same speed, not the same distance."""
    for interval, want in ((0.5, ResetReason.NONE), (0.25, ResetReason.GAP)):
        b = buf(n=2, history_interval_s=interval, history_tolerance_s=interval / 4)
        step(b, 0, pose())
        assert step(b, int(0.8 * SEC), pose(x=20.0))[2] is want
    cfg = TemporalConfig(history_interval_s=0.25, history_tolerance_s=0.05)
    assert cfg.max_gap_s == 0.5 and cfg.jump_limits(0.25) == (12.5, 0.25)
    assert cfg.jump_limits(0.01) == (50.0 * 0.0625, 0.0625)


def official_adjacent(scene_of: list[int], index: int, k: int) -> int:
    """`get_adj_info` l.289-295: select max(index − k, 0); another scene → the current frame."""
    select = max(index - k, 0)
    return index if scene_of[select] != scene_of[index] else select


def test_key_frame_slots_follow_the_official_adjacent_frames():
    """Key frames at 2 Hz (the official training input), longterm8f's 8 slots: slot k is the
    official k-th adjacent frame; before the scene holds k frames it repeats the current one
    (valid 0). A previous scene precedes this one, so max(index − k, 0) never clips."""
    n = 8
    scene_of = [0] * 5 + [1] * 14                    # 5 key frames of another scene, then ours
    b = buf(n=n, c=1)
    for i in range(5, len(scene_of)):
        t = (i - 5) * SEC // 2
        _, v, _ = b.prepare(t, pose(x=2.0 * (i - 5)))
        for k in range(1, n + 1):
            adj = official_adjacent(scene_of, i, k)
            if adj == i:
                assert v[k - 1] == 0.0 and b.last_slots[k - 1] is None
            else:
                assert v[k - 1] == 1.0 and b.last_slots[k - 1] == (adj - 5) * SEC // 2
        b.push(torch.zeros(1, 1, NY, NX), t, pose(x=2.0 * (i - 5)))


def test_camera_rate_frames_fill_the_slots_at_key_frame_spacing():
    """Frames processed at an irregular 4–12 Hz: every slot's frame lies within the tolerance of
    t − k·0.5 s, so 8 slots span 4 s (not 8 processed frames); a slot whose target no frame is
    near (a processing stall) is left empty and the model repeats the current frame."""
    n = 8
    b = buf(n=n, c=1)
    rng = torch.Generator().manual_seed(5)
    t = 0
    stamps = []
    while t < 6 * SEC:
        _, v, _ = b.prepare(t, pose(x=t / SEC * 10.0))
        for k, st in enumerate(b.last_slots, start=1):
            target = t - k * SEC // 2
            if st is not None:
                assert abs(st - target) <= SEC // 8 and st in stamps
                assert all(abs(s - target) >= abs(st - target) for s in stamps)     # the nearest one
            elif target >= SEC // 8:
                # only when no frame at all lay within the tolerance of the target
                assert all(abs(s - target) > SEC // 8 for s in stamps)
        if t >= 4 * SEC + SEC // 8:
            assert v.tolist() == [1.0] * n
        b.push(torch.zeros(1, 1, NY, NX), t, pose(x=t / SEC * 10.0))
        stamps.append(t)
        t += int((1 / 12 + float(torch.rand(1, generator=rng)) * (1 / 4 - 1 / 12)) * SEC)
    assert len(b) <= b.cfg.ring_capacity and b.thinned == 0
    # a 0.7 s stall: the slot whose target falls in it is empty, the others are kept
    stall = b.stamps_ns[0] + int(0.7 * SEC)
    _, v, r = b.prepare(stall, pose(x=stall / SEC * 10.0))
    assert r is ResetReason.NONE and v.tolist()[0] == 0.0 and sum(v.tolist()) >= n - 2
    # faster than one frame per half tolerance: the ring is thinned, never longer than its capacity
    fast = buf(n=1, c=1)
    for i in range(40):
        step(fast, i * SEC // 50, pose())
    assert len(fast) == fast.cfg.ring_capacity == 11 and fast.thinned > 0


def test_reset_clears_history_and_reports_in_prepare():
    b = buf(n=2)
    for i in range(3):
        step(b, i * SEC // 2, pose())
    h, v, r = b.prepare(10 * SEC, pose())
    assert r is ResetReason.GAP and v.tolist() == [0.0, 0.0] and float(h.abs().sum()) == 0.0
    assert b.last_reason is ResetReason.GAP


def test_push_without_prepare_runs_the_checks():
    b = buf(n=2)
    assert b.push(torch.ones(1, 3, NY, NX), 0, pose()) is ResetReason.FIRST_FRAME
    assert b.push(torch.ones(1, 3, NY, NX), SEC // 2, pose()) is ResetReason.NONE
    assert b.push(torch.ones(1, 3, NY, NX), SEC // 4, pose()) is ResetReason.TIME_BACKWARDS
    assert len(b) == 1 and b.reset_counts['time_backwards'] == 1
    # after prepare for the same stamp, push does not report (or count) again
    b.prepare(SEC, pose())
    assert b.push(torch.ones(1, 3, NY, NX), SEC, pose()) is ResetReason.NONE
    assert sum(b.reset_counts.values()) == 2


def test_channels_from_pushes_and_validation():
    b = buf(n=1, c=None)
    h, v, r = b.prepare(0, pose())                    # C unknown before the first push
    assert h is None and v.tolist() == [0.0] and r is ResetReason.FIRST_FRAME
    b.push(torch.zeros(1, 5, NY, NX), 0, pose())
    h, _, _ = b.prepare(SEC // 2, pose())
    assert h.shape == (1, 5, NY, NX)
    with pytest.raises(InputError):
        b.push(torch.zeros(1, 4, NY, NX), SEC // 2, pose())
    with pytest.raises(InputError):
        b.push(torch.zeros(1, 5, NY, NX - 8), SEC // 2, pose())
    bad = pose()
    bad[0, 0] = float('nan')
    with pytest.raises(InputError):
        b.prepare(SEC, bad)
    with pytest.raises(InputError):
        b.prepare(SEC, torch.eye(3))
    with pytest.raises(InputError):
        b.prepare(SEC, None)                          # no odometry


def test_config_validation_and_for_model():
    with pytest.raises(ConfigError):
        TemporalConfig(num_history=0)
    with pytest.raises(ConfigError):
        TemporalConfig(max_gap_intervals=0.0)
    with pytest.raises(ConfigError):
        TemporalConfig(history_interval_s=0.5, history_tolerance_s=0.25)   # a frame could serve two slots
    m = ModelConfig(name='x', num_frames=3, context_channels=80)
    t = TemporalConfig.for_model(m)
    assert (t.num_history, t.channels, t.grid) == (2, 80, m.grid)
    with pytest.raises(ConfigError):
        TemporalConfig.for_model(ModelConfig(name='y'))


def test_history_parameters_of_the_node():
    from occ_ros.ros.params import NodeParams
    p = NodeParams.from_mapping({})
    cfg = TemporalConfig()
    assert (p.history_interval_s, p.history_tolerance_s) == (cfg.history_interval_s, cfg.history_tolerance_s)
    assert NodeParams.from_mapping({'history_interval_s': 0.25, 'history_tolerance_s': 0.1}).history_interval_s == 0.25
    with pytest.raises(ConfigError, match='history_tolerance_s'):
        NodeParams.from_mapping({'history_interval_s': 0.25, 'history_tolerance_s': 0.2})
