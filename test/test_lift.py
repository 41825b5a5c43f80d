"""The official 4D lift (temporal_mode 'lift', the default for multi-frame models) against an
independent transcription of the official evaluation path, Yzichen/FlashOCC 4084861
(`align_after_view_transfromation=False`, the panoptic 4D configs' default; `with_prev=True`):

- `projects/mmdet3d_plugin/models/detectors/bevdet4d.py` l.208-249 `prepare_inputs`: every
  frame's cameras map into the *current* key ego, sensor2keyegos = inv(ego2globals[:, 0, 0]) ·
  ego2globals · sensor2egos (double precision);
- l.290-385 `extract_img_feat`: per frame f, `get_mlp_input(sensor2keyegos[0], ego2globals[0],
  intrin_f, post_rot_f, post_tran_f, bda)` (l.327-328 — the current frame's pose for every frame),
  then l.136-160 `prepare_bev_feat`: image encoder → view transformer → `pre_process_net(…)[0]`;
  l.383-384: channel concat [t, t−1, …] → `bev_encoder`;
- `projects/mmdet3d_plugin/models/necks/view_transformer.py` l.94-111 `create_frustum`, l.153-195
  `get_ego_coor`, l.285-320 `voxel_pooling_prepare_v2` (truncation toward zero, the z ∈ [0, 1)
  pillar), the pool = Σ depth × feature per cell (`bev_pool_v2`), l.449-482 `get_mlp_input`,
  l.511-520 the DepthNet call (softmax over the first D channels, context = the next C).

The transcription calls the network's own layers (image encoder, DepthNet, pre_process, BEV
encoder, heads — their equality with the official modules is tested in test_model.py and
test_checkpoint.py) but none of the project's geometry, tables, pool, history assembly or
camera-vector code. Geometry is evaluated in float64 (the project's stated geometry precision, as
test_ego_motion.py does); the network in float32.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from occ_ros.backends import io_spec as ios
from occ_ros.backends.deploy import deploy_module, example_inputs
from occ_ros.backends.torch_backend import TorchBackend
from occ_ros.core.config import (NUSCENES_CAPTURE_OFFSETS_S, AxisSpec, GridSpec, ImageGeometry,
                                 PoolBounds)
from occ_ros.core.frames import CameraFrame, EgoPose, FrameSet
from occ_ros.geometry import nuscenes_rig, rigid_transform
from occ_ros.geometry.frame_tables import FrameTableBuilder
from occ_ros.geometry.lift_tables import LiftFrame, lift_history_inputs
from occ_ros.model.builders import build_model
from occ_ros.pipeline import OccupancyPipeline

SRC_HW = (180, 320)
# A small 3-frame pano-4d (two history slots): ResNet-18, 64×176 input (4×11 features), a 32 × 25.6 m
# grid, narrow widths. The semantics of the lift do not depend on the sizes.
SMALL_4D = dict(
    num_frames=3, image=ImageGeometry(src_hw=SRC_HW, input_hw=(64, 176)),
    grid=GridSpec(x=AxisSpec(-16.0, 16.0, 0.4, 'x'), y=AxisSpec(-12.8, 12.8, 0.4, 'y')),
    pool_bounds=PoolBounds((4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4)),
    backbone_depth=18, neck_out_channels=64, context_channels=16, aspp_mid_channels=16,
    bev_channels=(16, 32, 64), bev_neck_channels=16, occ_head_channels=16,
    centerness_share_channels=16, trained_resize=None)
SPEED, YAW_RATE = 8.0, 0.5            # m/s, rad/s: 4 m and 0.25 rad between key frames
T0_NS = 2_000_000_000


def drive_pose(t: float) -> np.ndarray:
    """T_odom_base on a circle at SPEED / YAW_RATE from (500, 200), heading 20°."""
    yaw0 = math.radians(20.0)
    yaw = yaw0 + YAW_RATE * t
    x = 500.0 + SPEED / YAW_RATE * (math.sin(yaw) - math.sin(yaw0))
    y = 200.0 - SPEED / YAW_RATE * (math.cos(yaw) - math.cos(yaw0))
    c, s = math.cos(yaw), math.sin(yaw)
    return rigid_transform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), (x, y, 0.2))


def camera_poses(rig, t: float) -> np.ndarray:
    """(N, 4, 4): each camera's ego pose at its own capture time (nuScenes firing order)."""
    return np.stack([drive_pose(t + NUSCENES_CAPTURE_OFFSETS_S[c.name]) for c in rig])


# ---------------------------------------------------------------------------- the transcription
def official_post(src_hw, input_hw) -> tuple[np.ndarray, np.ndarray]:
    """loading.py l.81-93 + l.111-146 at test time: resize = fW / W, crop the bottom fH rows."""
    H, W = src_hw
    fH, fW = input_hw
    resize = float(fW) / float(W)
    crop_h = int(int(H * resize)) - fH
    return np.diag([resize, resize, 1.0]), np.array([0.0, -float(crop_h), 0.0])


def official_mlp_input(sensor2ego, intrin, post_rot, post_tran) -> torch.Tensor:
    """view_transformer.py l.449-482 `get_mlp_input` with bda = I (test time) → (1, N, 27)."""
    B, N = 1, sensor2ego.shape[0]
    bda = torch.eye(3, dtype=torch.float64).view(B, 1, 3, 3).repeat(1, N, 1, 1)
    intrin, post_rot, post_tran = intrin[None], post_rot[None], post_tran[None]
    mlp_input = torch.stack([
        intrin[:, :, 0, 0], intrin[:, :, 1, 1], intrin[:, :, 0, 2], intrin[:, :, 1, 2],
        post_rot[:, :, 0, 0], post_rot[:, :, 0, 1], post_tran[:, :, 0],
        post_rot[:, :, 1, 0], post_rot[:, :, 1, 1], post_tran[:, :, 1],
        bda[:, :, 0, 0], bda[:, :, 0, 1], bda[:, :, 1, 0], bda[:, :, 1, 1], bda[:, :, 2, 2]], dim=-1)
    s2e = sensor2ego[None][:, :, :3, :].reshape(B, N, -1)
    return torch.cat([mlp_input, s2e], dim=-1).float()


def official_pool(cfg, sensor2keyego, intrin, post_rot, post_tran, depth, tran_feat) -> torch.Tensor:
    """create_frustum + get_ego_coor + voxel_pooling_prepare_v2 + bev_pool_v2 (float64 geometry):
    depth (N, D, fH, fW), tran_feat (N, C, fH, fW) → (1, C, ny, nx) float32."""
    N = sensor2keyego.shape[0]
    H_in, W_in = cfg.image.input_hw
    fH, fW = H_in // cfg.downsample, W_in // cfg.downsample
    d = cfg.depth.start + torch.arange(cfg.depth.n, dtype=torch.float64) * cfg.depth.step
    D = d.numel()
    d = d.view(-1, 1, 1).expand(-1, fH, fW)
    x = torch.linspace(0, W_in - 1, fW, dtype=torch.float64).view(1, 1, fW).expand(D, fH, fW)
    y = torch.linspace(0, H_in - 1, fH, dtype=torch.float64).view(1, fH, 1).expand(D, fH, fW)
    frustum = torch.stack((x, y, d), -1)                                       # (D, fH, fW, 3)
    points = frustum - post_tran.view(1, N, 1, 1, 1, 3)
    points = torch.inverse(post_rot).view(1, N, 1, 1, 1, 3, 3).matmul(points.unsqueeze(-1))
    points = torch.cat((points[..., :2, :] * points[..., 2:3, :], points[..., 2:3, :]), 5)
    combine = sensor2keyego[None, :, :3, :3].matmul(torch.inverse(intrin[None]))
    points = combine.view(1, N, 1, 1, 1, 3, 3).matmul(points).squeeze(-1)
    points += sensor2keyego[None, :, :3, 3].view(1, N, 1, 1, 1, 3)
    g = cfg.grid
    lower = torch.tensor([g.x.lo, g.y.lo, g.z.lo], dtype=torch.float64)
    interval = torch.tensor([g.x.step, g.y.step, g.z.hi - g.z.lo], dtype=torch.float64)
    num_points = N * D * fH * fW
    ranks_depth = torch.arange(num_points)
    ranks_feat = torch.arange(num_points // D).reshape(1, N, 1, fH, fW).expand(1, N, D, fH, fW).flatten()
    coor = ((points - lower) / interval).long().view(num_points, 3)
    kept = ((coor[:, 0] >= 0) & (coor[:, 0] < g.nx) & (coor[:, 1] >= 0) & (coor[:, 1] < g.ny)
            & (coor[:, 2] >= 0) & (coor[:, 2] < 1))
    coor, ranks_depth, ranks_feat = coor[kept], ranks_depth[kept], ranks_feat[kept]
    ranks_bev = coor[:, 1] * g.nx + coor[:, 0]
    C = tran_feat.shape[1]
    feat = tran_feat.permute(0, 2, 3, 1).reshape(-1, C)                        # (N·fH·fW, C)
    out = torch.zeros(g.ny * g.nx, C, dtype=torch.float64)
    out.index_add_(0, ranks_bev, depth.reshape(-1)[ranks_depth].double()[:, None] * feat[ranks_feat].double())
    return out.t().reshape(1, C, g.ny, g.nx).float()


def official_extract(model, imgs, sensor2egos, ego2globals, intrins, post_rots, post_trans
                     ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """bevdet4d.py `extract_img_feat` (align_after_view_transfromation=False) + the occupancy head.

    imgs: F × (1, N, 3, H, W), newest first; sensor2egos / ego2globals (F, N, 4, 4); intrins /
    post_rots (F, N, 3, 3); post_trans (F, N, 3), float64. Returns the per-frame pre-processed BEV
    features and the occupancy logits.
    """
    cfg = model.cfg
    keyego2global = ego2globals[0, 0]                                           # l.243
    sensor2keyegos = torch.inverse(keyego2global) @ ego2globals @ sensor2egos   # l.245-248
    D, C = cfg.depth.n, cfg.context_channels
    bev_feat_list = []
    with torch.no_grad():
        for f in range(len(imgs)):                                              # l.321-345
            mlp_input = official_mlp_input(sensor2keyegos[0], intrins[f], post_rots[f], post_trans[f])
            x = model.encode_images(imgs[f])                                    # image_encoder
            x = model.img_view_transformer.depth_net(x, mlp_input)             # l.516
            depth = x[:, :D].softmax(dim=1)
            tran_feat = x[:, D:D + C]
            bev = official_pool(cfg, sensor2keyegos[f], intrins[f], post_rots[f], post_trans[f],
                                depth, tran_feat)
            bev_feat_list.append(model.pre_process_net(bev)[0])                # l.158-159
        x = torch.cat(bev_feat_list, dim=1)                                     # l.383
        x = model.img_bev_encoder_neck(model.img_bev_encoder_backbone(x))       # bev_encoder
        return bev_feat_list, model.occ_head(x)


def official_inputs(rig, e2g_frames):
    """The official per-frame calibration tensors of `rig` for the frames' camera poses."""
    F, N = len(e2g_frames), len(rig)
    post_rot, post_tran = official_post(SRC_HW, SMALL_4D['image'].input_hw)
    s2e = torch.from_numpy(np.asarray(rig.sensor2ego())).double()[None].expand(F, N, 4, 4)
    e2g = torch.from_numpy(np.stack(e2g_frames)).double()
    intr = torch.from_numpy(np.asarray(rig.intrinsics())).double()[None].expand(F, N, 3, 3)
    pr = torch.from_numpy(post_rot)[None, None].expand(F, N, 3, 3)
    pt = torch.from_numpy(post_tran)[None, None].expand(F, N, 3)
    return s2e, e2g, intr, pr, pt


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def rig():
    return nuscenes_rig(SRC_HW)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    net = build_model('pano-4d', **SMALL_4D).eval()
    # give the BatchNorms non-trivial statistics, so no layer is an identity by accident
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net


def random_images(cfg, frames: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image.input_hw
    return [torch.randn(1, cfg.num_cameras, 3, h, w, generator=g) for _ in range(frames)]


# ---------------------------------------------------------------------------- tests
def fp32_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal to float32 accumulation error: 1e-5 of the tensor's scale (random weights give
    logits of several hundred; the differences are summation order, ~1e-6 of the scale)."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_lift_equals_the_official_extract_img_feat(rig, model) -> None:
    """A moving ego (8 m/s, 0.5 rad/s, cameras fired over 42 ms), two history key frames 0.5 s
    apart: the project's lift (history tables + camera vectors from `lift_history_inputs`, the
    network's `forward_lift`) gives the official per-frame BEV features and logits."""
    cfg = model.cfg
    times = [0.0, -0.5, -1.0]                                                  # newest first
    e2g = [camera_poses(rig, t) for t in times]
    imgs = random_images(cfg, 3)
    want_bevs, want_logits = official_extract(model, imgs, *official_inputs(rig, e2g))

    builder = FrameTableBuilder(cfg, rig)
    with torch.no_grad():
        feats = [model.encode_images(im) for im in imgs]                        # what the ring caches
        cur = builder.build(e2g[0])
        slots = [LiftFrame(feats[k], e2g[k], builder) for k in (1, 2)]
        lift = lift_history_inputs(cfg, slots, e2g[0][0], cur.sensor2keyego, torch.device('cpu'))
        assert lift.valid.tolist() == [1.0, 1.0] and lift.overflows == 0
        history = model.lift_history(lift.img_feat, lift.cam_vec, lift.depth_idx, lift.feat_idx,
                                     lift.cell_row)
        out = model.forward_lift(imgs[0], cur.cam_vec.float(), *cur.pool_index.tensors(),
                                 lift.img_feat, lift.cam_vec, lift.depth_idx, lift.feat_idx,
                                 lift.cell_row, lift.valid)
    c = cfg.context_channels
    for k in (1, 2):
        fp32_close(history[:, (k - 1) * c:k * c], want_bevs[k])
    fp32_close(out['bev_feat'], want_bevs[0])
    fp32_close(out['occ_logits'], want_logits)
    # the motion matters: the history lifted with its own ego frame (no relative pose) differs
    still = lift_history_inputs(cfg, [LiftFrame(feats[1], np.repeat(e2g[0][:1], 6, 0), builder),
                                      slots[1]], e2g[0][0], cur.sensor2keyego, torch.device('cpu'))
    assert not torch.equal(still.cell_row[0], lift.cell_row[0])
    # and so does the camera vector: the official one is the *current* frame's, not the history's own
    own = builder.build(e2g[1], key_ego2global=e2g[0][0]).cam_vec[0]
    assert not torch.allclose(own, lift.cam_vec[0])
    torch.testing.assert_close(lift.cam_vec[0], cur.cam_vec[0].float())


class RecordingBackend:
    """A real TorchBackend that also keeps every call's inputs and outputs (for the golden)."""

    def __init__(self, inner: TorchBackend) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.calls: list[tuple[dict, dict]] = []

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def output_names(self):
        return self.inner.output_names

    def input_spec(self):
        return self.inner.input_spec()

    def output_spec(self):
        return self.inner.output_spec()

    def infer(self, inputs):
        out = self.inner.infer(inputs)
        self.calls.append(({k: v.clone() for k, v in inputs.items()}, out))
        return out

    def close(self) -> None:
        self.inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frame_set(rig, t: float, seed: int) -> FrameSet:
    """Images of random pixels, each camera stamped and posed at its own capture time."""
    rng = np.random.default_rng(seed)
    e2g = camera_poses(rig, t)
    stamp = T0_NS + int(round(t * 1e9))
    frames = tuple(
        CameraFrame(c.name, stamp + int(NUSCENES_CAPTURE_OFFSETS_S[c.name] * 1e9),
                    rng.integers(0, 255, (*SRC_HW, 3), dtype=np.uint8), np.asarray(c.K),
                    ego_pose=EgoPose(stamp + int(NUSCENES_CAPTURE_OFFSETS_S[c.name] * 1e9), e2g[i]))
        for i, c in enumerate(rig))
    return FrameSet(stamp, frames, EgoPose(stamp, e2g[0]))


def test_the_pipeline_lifts_its_key_frame_history_as_the_official_code(rig, model) -> None:
    """The node's path: five frame sets at 4 Hz of a moving car through the pipeline (torch backend,
    default temporal_mode = lift). The last output's history slots are the frames 0.5 s and 1 s
    before it (key-frame spacing), and its labels are the official `extract_img_feat`'s on the
    images the network got, wherever the official top-two logits differ by more than 1e-3."""
    backend = RecordingBackend(TorchBackend(model))
    pipe = OccupancyPipeline(model.cfg, backend, rig)
    assert pipe.temporal_mode == 'lift' and pipe.temporal_fallback is None
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    results = [pipe.run(frame_set(rig, t, seed=i)) for i, t in enumerate(times)]
    assert results[0].temporal_reset == 'first_frame' and results[-1].temporal_reset is None
    assert pipe.temporal.last_slots == [T0_NS + 500_000_000, T0_NS]
    inputs, outputs = backend.calls[-1]
    assert inputs[ios.HISTORY_VALID].tolist() == [1.0, 1.0]
    assert ios.BEV_HISTORY not in inputs
    used = [4, 2, 0]                                                          # t, t − 0.5 s, t − 1 s
    imgs = [backend.calls[i][0][ios.IMG] for i in used]
    e2g = [camera_poses(rig, times[i]) for i in used]
    _, logits = official_extract(model, imgs, *official_inputs(rig, e2g))
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-3
    want = logits.argmax(-1).to(torch.int32)
    got = outputs[ios.OCC_LABEL]
    assert clear.float().mean() > 0.99
    assert torch.equal(got[clear], want[clear])
    # the cached neck features are the network's own for those frames
    torch.testing.assert_close(inputs[ios.HIST_IMG_FEAT][0], backend.calls[2][1][ios.IMG_FEAT][0])
    pipe.close()


def test_warp_mode_keeps_the_bev_history_contract(rig, model) -> None:
    """temporal_mode 'warp': the engine contract is the one before the lift (BEV history in, BEV
    feature out) and the pipeline feeds the cached BEV warped into the current frame (test_temporal.py
    checks the warp itself against the official shift_feature)."""
    spec = ios.engine_io_spec(model.cfg, 'warp')
    ny, nx = model.cfg.grid.bev_shape
    assert spec.input_names == ('img', 'cam_vec', 'pool_depth_idx', 'pool_feat_idx', 'pool_cell_row',
                                'bev_history', 'history_valid')
    assert spec.input('bev_history').shape == (1, 2 * model.cfg.context_channels, ny, nx)
    assert spec.output_names[-1] == 'bev_feat'
    backend = RecordingBackend(TorchBackend(model, temporal_mode='warp'))
    pipe = OccupancyPipeline(model.cfg, backend, rig, temporal_mode='warp')
    assert pipe.temporal_mode == 'warp'
    for i, t in enumerate((0.0, 0.5)):
        pipe.run(frame_set(rig, t, seed=i))
    (first_in, first_out), (second_in, _) = backend.calls
    assert second_in[ios.HISTORY_VALID].tolist() == [1.0, 0.0]
    hist = second_in[ios.BEV_HISTORY][:, :model.cfg.context_channels]
    assert float(hist.abs().sum()) > 0 and not torch.allclose(hist, first_out[ios.BEV_FEAT])
    pipe.close()


def test_a_graph_of_the_other_mode_falls_back_with_a_named_reason(rig, model, caplog) -> None:
    """lift requested, a warp graph given: the pipeline runs warp and says why (never silently)."""
    backend = TorchBackend(model, temporal_mode='warp')
    with caplog.at_level(logging.WARNING, logger='occ_ros.pipeline'):
        pipe = OccupancyPipeline(model.cfg, backend, rig, temporal_mode='lift')
    assert pipe.temporal_mode == 'warp'
    assert "temporal_mode 'lift' requested" in pipe.temporal_fallback
    assert pipe.temporal_fallback in caplog.text
    pipe.close()


def test_onnx_runtime_runs_the_lift_graph(tmp_path, model) -> None:
    """The lift exports (history neck features, camera vectors and tables as graph inputs; only
    TensorRT-native operators — `check_exported`) and ONNX Runtime gives torch's outputs."""
    pytest.importorskip('onnxruntime')
    from occ_ros.backends.export import export_onnx
    from occ_ros.backends.ort_backend import OrtBackend

    path = export_onnx(model, tmp_path / 'lift.onnx', temporal_mode='lift')
    assert ios.same_contract(ios.onnx_io_spec(path), ios.engine_io_spec(model.cfg)) == []
    feeds = example_inputs(model.cfg, seed=3)
    feeds[ios.HISTORY_VALID] = torch.tensor([1.0, 0.0])
    with OrtBackend(path) as ort:
        got = ort.infer(feeds)
    with torch.no_grad():
        want = deploy_module(model, 'fp32').run(feeds)
    for name in (ios.HEATMAP, ios.REG, ios.HEIGHT, ios.IMG_FEAT):
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4)


def test_lift_inputs_of_empty_slots_and_bounds(rig, model) -> None:
    """An empty slot is all-pad tables and valid 0 (the network repeats the current frame); a slot
    whose relative pose overflows the pool bounds runs as empty and is counted."""
    cfg = model.cfg
    builder = FrameTableBuilder(cfg, rig)
    e2g = camera_poses(rig, 0.0)
    cur = builder.build(e2g)
    feat = torch.ones(cfg.num_cameras, cfg.neck_out_channels, *cfg.feature_hw)
    tight = dataclasses.replace(cfg, pool_bounds=PoolBounds((8, 4)))
    lift = lift_history_inputs(cfg, [LiftFrame(feat, e2g, builder), None], e2g[0], cur.sensor2keyego,
                               torch.device('cpu'))
    assert lift.valid.tolist() == [1.0, 0.0]
    n, d, (fh, fw) = cfg.num_cameras, cfg.depth.n, cfg.feature_hw
    assert bool((lift.depth_idx[1] == n * d * fh * fw).all()) and int(lift.cell_row[1].abs().sum()) == 0
    small = FrameTableBuilder(tight, rig)
    over = lift_history_inputs(tight, [LiftFrame(feat, e2g, small), None], e2g[0], cur.sensor2keyego,
                               torch.device('cpu'))
    assert over.overflows == 1 and over.valid.tolist() == [0.0, 0.0]
    assert over.overflow_reason.startswith('history slot 1: ') and 'pool bounds' in over.overflow_reason


def test_parked_the_lift_and_the_warp_agree(rig, model) -> None:
    """A parked car (every frame, every camera at one pose): the history frame's tables and camera
    vector are the current ones, so the lift re-creates exactly the BEV the warp stored and warps by
    the identity — both modes give the same labels. (Moving, they differ: bench/bench_lift.py.)"""
    labels = {}
    for mode in ('lift', 'warp'):
        pipe = OccupancyPipeline(model.cfg, TorchBackend(model, temporal_mode=mode), rig, temporal_mode=mode)
        for i, t in enumerate((0.0, 0.5)):
            fs = frame_set(rig, t, seed=10 + i)
            still = tuple(dataclasses.replace(f, ego_pose=EgoPose(f.stamp_ns, drive_pose(0.0)))
                          for f in fs.frames)
            res = pipe.run(dataclasses.replace(fs, frames=still, ego_pose=EgoPose(fs.stamp_ns, drive_pose(0.0))))
        assert pipe.temporal.last_slots == [T0_NS, None]
        labels[mode] = res.occupancy.semantics
        pipe.close()
    assert (labels['lift'] == labels['warp']).mean() > 0.9999, (labels['lift'] != labels['warp']).sum()


def test_longterm_bounds_hold_a_history_frame_seconds_back() -> None:
    """The drive of the README's label figures (synthetic world 9201, staggered cameras, ≈ 21 m/s):
    history slot 4 of frame 8 lies 41.6 m back, where a frustum apex near the grid's edge folds two
    cells' points into one (832 points: beyond the single-frame bounds' largest bucket of 512).
    The multi-frame models' derived bounds carry one bucket more, so the slot is lifted."""
    from occ_ros.bag.synth import SyntheticSequence, staggered_offsets
    from occ_ros.core.errors import CalibrationError
    from occ_ros.model.builders import model_config

    cfg = model_config('pano-longterm8f')
    rig = nuscenes_rig((450, 800))
    seq = SyntheticSequence(9201, 5.5, 2.0, rig, (450, 800), capture_offsets_s=staggered_offsets(rig),
                            time_scale=3.0, ground_truth=False)

    def poses(i: int) -> np.ndarray:
        return np.stack([seq.world.ego_pose(seq.world_time(seq.stamps[i] + off)) for off in seq.capture_offsets_ns])

    key, hist = poses(8)[0], poses(4)
    assert np.linalg.norm(np.linalg.solve(key, hist[0])[:2, 3]) > 40.0
    geo = FrameTableBuilder(cfg, rig, fast_path=False).build(hist, key_ego2global=key)
    assert geo.required_capacities[10] == 1                     # one cell with 513–1024 points
    single = dataclasses.replace(cfg, num_frames=1)             # the single-frame bounds
    with pytest.raises(CalibrationError, match='at most 512'):
        FrameTableBuilder(single, rig, fast_path=False).build(hist, key_ego2global=key)
