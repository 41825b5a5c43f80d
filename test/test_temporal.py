"""Ego-motion-aligned BEV history: analytic warps and the reset policy."""
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
    assert b.stamps_ns == [4 * SEC // 2, 3 * SEC // 2, 2 * SEC // 2]
    assert hist[1].shape == (1, 6, NY, NX) and float(hist[1][0, 2:].abs().sum()) == 0.0


def test_each_reset_fires_exactly_when_it_should():
    b = buf(n=2)
    t = 0
    assert step(b, t, pose())[2] is ResetReason.FIRST_FRAME
    # gap: exactly max_gap_s continues, one nanosecond more resets
    t += SEC
    assert step(b, t, pose())[2] is ResetReason.NONE
    t += SEC + 1
    assert step(b, t, pose())[2] is ResetReason.GAP and len(b) == 1
    # time backwards and duplicate stamps
    assert step(b, t - 1, pose())[2] is ResetReason.TIME_BACKWARDS
    assert step(b, t - 1, pose())[2] is ResetReason.TIME_BACKWARDS        # duplicate → reset
    t -= 1
    # translation: 5.0 m continues, 5.01 m resets (3-D norm: z counts)
    t += SEC // 10
    assert step(b, t, pose(x=3.0, y=4.0))[2] is ResetReason.NONE
    t += SEC // 10
    assert step(b, t, pose(x=3.0, y=4.0, z=5.01))[2] is ResetReason.POSE_JUMP
    # rotation: 0.49 rad continues, 0.51 rad resets
    t += SEC // 10
    assert step(b, t, pose(x=3.0, y=4.0, z=5.01, yaw=0.49))[2] is ResetReason.NONE
    t += SEC // 10
    assert step(b, t, pose(x=3.0, y=4.0, z=5.01, yaw=0.49 + 0.51))[2] is ResetReason.POSE_JUMP
    # explicit
    t += SEC // 10
    assert step(b, t, pose(x=3.0, y=4.0, z=5.01, yaw=1.0))[2] is ResetReason.NONE
    b.reset()
    assert len(b) == 0
    t += SEC // 10
    h, v, r = step(b, t, pose(x=3.0, y=4.0, z=5.01, yaw=1.0))
    assert r is ResetReason.EXPLICIT and v.tolist() == [0.0, 0.0]
    t += SEC // 10
    assert step(b, t, pose(x=3.0, y=4.0, z=5.01, yaw=1.0))[2] is ResetReason.NONE
    assert b.reset_counts == {'first_frame': 1, 'time_backwards': 2, 'gap': 1, 'pose_jump': 2, 'explicit': 1}
    assert len(b) == 2


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
        TemporalConfig(max_gap_s=0.0)
    m = ModelConfig(name='x', num_frames=3, context_channels=80)
    t = TemporalConfig.for_model(m)
    assert (t.num_history, t.channels, t.grid) == (2, 80, m.grid)
    with pytest.raises(ConfigError):
        TemporalConfig.for_model(ModelConfig(name='y'))
