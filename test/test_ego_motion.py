"""A moving car: every camera mapped through the ego pose at its own capture time, as the official
code does, against golden values computed here from the official formulas (Yzichen/FlashOCC
4084861), not by the project's helpers:

- `projects/mmdet3d_plugin/models/detectors/bevdet.py` l.71-75 `prepare_inputs`:
  sensor2keyego = inv(ego2globals[:, 0]) · ego2globals · sensor2egos (view 0's ego is the key);
- `projects/mmdet3d_plugin/models/necks/view_transformer.py` l.94-111 `create_frustum`,
  l.135-151 `get_lidar_coor`, l.285-320 `voxel_pooling_prepare_v2` (ranks), the pool being the sum
  of depth × feature per BEV cell (bev_pool_v2), and l.449-482 `get_mlp_input` (the camera vector
  ends with sensor2keyego[:3, :4]);
- `projects/mmdet3d_plugin/datasets/pipelines/loading.py` l.81-93 / l.111-146 (test-time resize
  and crop → post_rot, post_tran) and l.148-178 `get_sensor_transforms` (each camera's own
  ego2global).

The golden is evaluated in float64 (the project's stated geometry precision, geometry/__init__.py);
the official code's float32 rounding is a separate, documented difference.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occ_ros.core.config import NUSCENES_CAPTURE_OFFSETS_S
from occ_ros.core.frames import CameraFrame, EgoPose, FrameSet
from occ_ros.geometry import compute_bev_geometry, nuscenes_rig, rigid_transform
from occ_ros.model.bev_pool import bev_pool
from occ_ros.model.builders import model_config

SRC_HW = (900, 1600)
SPREAD_S = NUSCENES_CAPTURE_OFFSETS_S        # nuScenes firing order, CAM_FRONT_LEFT first, 42 ms spread


def drive_pose(t: float, speed: float = 20.0, yaw_rate: float = 0.6) -> np.ndarray:
    """T_odom_base of a car on a circle (speed m/s, yaw rate rad/s) from (1000, −300), heading 30°."""
    yaw0 = math.radians(30.0)
    yaw = yaw0 + yaw_rate * t
    x = 1000.0 + speed / yaw_rate * (math.sin(yaw) - math.sin(yaw0))
    y = -300.0 - speed / yaw_rate * (math.cos(yaw) - math.cos(yaw0))
    c, s = math.cos(yaw), math.sin(yaw)
    return rigid_transform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), (x, y, 0.3))


def official_post(src_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """loading.py l.81-93 + l.111-146 at test time: resize = fW / W, crop the bottom fH rows."""
    H, W = src_hw
    fH, fW = input_hw
    resize = float(fW) / float(W)
    crop_h = int(int(H * resize)) - fH
    return np.diag([resize, resize, 1.0]), np.array([0.0, -float(crop_h), 0.0])


def official_ranks(cfg, K, sensor2ego, ego2global, src_hw) -> tuple[torch.Tensor, ...]:
    """ranks_depth, ranks_feat, ranks_bev and sensor2keyego of the official code (see module doc)."""
    s2e = torch.from_numpy(np.asarray(sensor2ego))[None].double()             # (1, N, 4, 4)
    e2g = torch.from_numpy(np.asarray(ego2global))[None].double()
    global2keyego = torch.inverse(e2g[:, 0, ...].unsqueeze(1))                 # bevdet.py l.71-72
    s2k = global2keyego @ e2g @ s2e                                            # l.73-74
    B, N = 1, s2e.shape[1]
    H_in, W_in = cfg.image.input_hw
    fH, fW = H_in // cfg.downsample, W_in // cfg.downsample
    d = (cfg.depth.start + torch.arange(cfg.depth.n, dtype=torch.float64) * cfg.depth.step)
    D = d.numel()
    d = d.view(-1, 1, 1).expand(-1, fH, fW)
    x = torch.linspace(0, W_in - 1, fW, dtype=torch.float64).view(1, 1, fW).expand(D, fH, fW)
    y = torch.linspace(0, H_in - 1, fH, dtype=torch.float64).view(1, fH, 1).expand(D, fH, fW)
    frustum = torch.stack((x, y, d), -1)                                       # l.106-111
    post_rot, post_tran = official_post(src_hw, cfg.image.input_hw)
    post_rots = torch.from_numpy(post_rot)[None, None].expand(B, N, 3, 3)
    post_trans = torch.from_numpy(post_tran)[None, None].expand(B, N, 3)
    intr = torch.from_numpy(np.asarray(K))[None].double()
    points = frustum - post_trans.view(B, N, 1, 1, 1, 3)                       # l.139-148
    points = torch.inverse(post_rots).view(B, N, 1, 1, 1, 3, 3).matmul(points.unsqueeze(-1))
    points = torch.cat((points[..., :2, :] * points[..., 2:3, :], points[..., 2:3, :]), 5)
    combine = s2k[:, :, :3, :3].matmul(torch.inverse(intr))
    points = combine.view(B, N, 1, 1, 1, 3, 3).matmul(points).squeeze(-1)
    points += s2k[:, :, :3, 3].view(B, N, 1, 1, 1, 3)
    grid = cfg.grid
    lower = torch.tensor([grid.x.lo, grid.y.lo, grid.z.lo], dtype=torch.float64)
    interval = torch.tensor([grid.x.step, grid.y.step, grid.z.hi - grid.z.lo], dtype=torch.float64)
    num_points = B * N * D * fH * fW                                            # l.285-320
    ranks_depth = torch.arange(num_points)
    ranks_feat = torch.arange(num_points // D).reshape(B, N, 1, fH, fW).expand(B, N, D, fH, fW).flatten()
    coor = ((points - lower) / interval).long().view(num_points, 3)
    kept = ((coor[:, 0] >= 0) & (coor[:, 0] < grid.nx) & (coor[:, 1] >= 0) & (coor[:, 1] < grid.ny)
            & (coor[:, 2] >= 0) & (coor[:, 2] < 1))
    coor, ranks_depth, ranks_feat = coor[kept], ranks_depth[kept], ranks_feat[kept]
    ranks_bev = coor[:, 1] * grid.nx + coor[:, 0]
    return ranks_depth, ranks_feat, ranks_bev, s2k[0]


def official_pool(ranks, depth: torch.Tensor, feat: torch.Tensor, bev_hw) -> torch.Tensor:
    """bev_pool_v2: out[cell] = Σ depth[rank_depth] · feat[rank_feat] → (1, C, ny, nx)."""
    rd, rf, rb = ranks[:3]
    c = feat.shape[-1]
    out = torch.zeros(bev_hw[0] * bev_hw[1], c, dtype=torch.float64)
    out.index_add_(0, rb, depth.reshape(-1)[rd].double()[:, None] * feat.reshape(-1, c)[rf].double())
    return out.t().reshape(1, c, *bev_hw)


def moving_set(rig, start_t: float = 0.0, **drive) -> tuple[np.ndarray, FrameSet]:
    """The ego poses at each camera's capture time and a FrameSet carrying them (images blank)."""
    e2g = np.stack([drive_pose(start_t + SPREAD_S[c.name], **drive) for c in rig])
    t0 = 1_000_000_000
    frames = tuple(CameraFrame(c.name, t0 + int(SPREAD_S[c.name] * 1e9), np.zeros((*SRC_HW, 3), np.uint8),
                               np.asarray(c.K), ego_pose=EgoPose(t0 + int(SPREAD_S[c.name] * 1e9), e2g[i]))
                   for i, c in enumerate(rig))
    return e2g, FrameSet(t0, frames, EgoPose(t0, e2g[0]))


@pytest.fixture(scope='module')
def rig():
    return nuscenes_rig(SRC_HW)


@pytest.mark.parametrize('model', ['lite', 'pano-tiny'])
def test_moving_tables_are_the_official_ones(rig, model) -> None:
    """20 m/s in a 0.6 rad/s turn, cameras fired over 42 ms: the pool of the per-camera-pose tables
    equals the official pool, and the camera vector carries the official sensor2keyego."""
    cfg = model_config(model)
    e2g, _ = moving_set(rig)
    geo = compute_bev_geometry(cfg, rig, e2g)
    ranks = official_ranks(cfg, rig.intrinsics(), rig.sensor2ego(), e2g, SRC_HW)
    # the compensation matters: CAM_BACK_LEFT moved 0.83 m and turned 1.4° since view 0
    static = official_ranks(cfg, rig.intrinsics(), rig.sensor2ego(), np.repeat(e2g[:1], 6, 0), SRC_HW)
    assert not torch.equal(static[2], ranks[2])
    g = torch.Generator().manual_seed(0)
    n, d, (fh, fw) = len(rig), cfg.depth.n, cfg.feature_hw
    depth = torch.rand(1, n, d, fh, fw, generator=g)
    feat = torch.randn(1, n, fh, fw, 5, generator=g)
    want = official_pool(ranks, depth, feat, cfg.grid.bev_shape)
    got = bev_pool(depth, feat, *geo.pool_index.tensors(), geo.pool_index.bounds, geo.pool_index.bev_hw)
    assert geo.pool_index.num_points == ranks[0].numel()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(geo.cam_vec[0, :, 15:].numpy(), ranks[3][:, :3, :].reshape(n, 12).numpy(),
                               rtol=1e-6, atol=1e-5)


@pytest.fixture(scope='module')
def lite(rig):
    from occ_ros.pipeline import OccupancyPipeline
    pipe = OccupancyPipeline.from_params('lite', rig=rig, backend='torch', threads=2)
    yield pipe
    pipe.close()


def test_the_pipeline_feeds_the_network_the_official_moving_tables(rig, lite) -> None:
    """The per-camera poses of a FrameSet reach the network: its pool tables and camera vector are
    the official ones for them; a set whose cameras share one pose keeps the cached rig tables."""
    e2g, fs = moving_set(rig, start_t=1.0)
    inputs, _ = lite.network_inputs(fs)
    cfg = lite.model_cfg
    ranks = official_ranks(cfg, rig.intrinsics(), rig.sensor2ego(), e2g, SRC_HW)
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(1, 6, cfg.depth.n, *cfg.feature_hw, generator=g)
    feat = torch.randn(1, 6, *cfg.feature_hw, 3, generator=g)
    want = official_pool(ranks, depth, feat, cfg.grid.bev_shape)
    got = bev_pool(depth, feat, inputs['pool_depth_idx'], inputs['pool_feat_idx'], inputs['pool_cell_row'],
                   cfg.pool_bounds, cfg.grid.bev_shape)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inputs['cam_vec'][0, :, 15:].numpy(), ranks[3][:, :3, :].reshape(6, 12).numpy(),
                               rtol=1e-6, atol=1e-5)
    assert lite.moving_frames == 1
    # one pose for the whole set (a parked car, a synchronised rig): the rig's own tables
    parked = FrameSet(fs.stamp_ns, tuple(f.__class__(f.name, f.stamp_ns, f.image, f.K, ego_pose=fs.ego_pose)
                                         for f in fs.frames), fs.ego_pose)
    assert lite.camera_ego2global(parked) is None
    still, _ = lite.network_inputs(parked)
    assert torch.equal(still['pool_cell_row'], lite._geometry.pool_index.cell_row) and lite.moving_frames == 1


def test_views_without_their_own_pose_take_the_set_pose(rig, lite) -> None:
    """A camera outside the pose buffer (no own pose) is mapped with the reference pose; without a
    set pose there is no compensation at all (the single-pose path)."""
    e2g, fs = moving_set(rig)
    frames = list(fs.frames)
    frames[3] = CameraFrame(frames[3].name, frames[3].stamp_ns, frames[3].image, frames[3].K)
    got = lite.camera_ego2global(FrameSet(fs.stamp_ns, tuple(frames), fs.ego_pose))
    assert got is not None
    np.testing.assert_array_equal(got[3], e2g[0])
    np.testing.assert_array_equal(got[[0, 1, 2, 4, 5]], e2g[[0, 1, 2, 4, 5]])
    assert lite.camera_ego2global(FrameSet(fs.stamp_ns, fs.frames, None)) is None


def test_capture_time_poses_from_odometry() -> None:
    """CameraPoseResolver over a 50 Hz odometry buffer of the drive: each camera's pose is the drive's
    pose at its capture time (stamp − stamp offset), the reference is view 0's; a camera beyond the
    newest odometry sample takes the reference pose and is counted; disabled → the reference only."""
    pytest.importorskip('rclpy', reason='occ_ros.ros needs the ROS 2 wheels')
    from occ_ros.ros.ego_poses import CameraPoseResolver
    from occ_ros.ros.tf import PoseBuffer
    odom = PoseBuffer(maxlen=512)
    t0 = 5_000_000_000
    for k in range(0, 60):
        odom.add(t0 + k * 20_000_000, drive_pose(k * 0.02))
    cams = list(SPREAD_S)
    late = {c: 10_000_000 for c in cams}                     # this driver stamps 10 ms after exposure
    res = CameraPoseResolver(cams, late)
    base = t0 + 400_000_000
    stamps = {c: base + int(SPREAD_S[c] * 1e9) + 10_000_000 for c in cams}
    poses = res.resolve(stamps, odom.lookup, odom.interpolate)
    assert poses.reference is not None and poses.reference.stamp_ns == base
    for c in cams:
        want = drive_pose(0.4 + SPREAD_S[c])
        np.testing.assert_allclose(poses.cameras[c].matrix, want, atol=2e-3)   # 20 ms lerp of a 33 m circle
    assert poses.fallbacks == () and res.camera_poses == 5
    # odometry trails the images: up to 50 ms past its newest sample (+1.18 s) the pose is
    # extrapolated at constant velocity — the circle's pose to within centimetres
    T = odom.interpolate(t0 + 1_220_000_000, extrapolate_ns=50_000_000)
    assert T is not None and odom.interpolate(t0 + 1_240_000_000, extrapolate_ns=50_000_000) is None
    np.testing.assert_allclose(T, drive_pose(1.22), atol=2e-2)
    # without extrapolation, the cameras captured after the newest sample have no pose of their own
    edge = t0 + 1_160_000_000
    poses = res.resolve({c: edge + int(SPREAD_S[c] * 1e9) + 10_000_000 for c in cams}, odom.lookup,
                        odom.interpolate)
    assert poses.fallbacks == ('CAM_BACK_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT')      # captured after +1.18 s
    assert res.fallbacks == 3 and set(poses.cameras) == {'CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT'}
    applied = poses.apply([CameraFrame(c, 0, None, np.eye(3)) for c in cams])
    assert [f.ego_pose is not None for f in applied] == [True, True, True, False, False, False]
    # view 0 dead: the first present camera is the reference
    poses = res.resolve({c: stamps[c] for c in cams[1:]}, odom.lookup, odom.interpolate)
    assert poses.reference is not None and poses.reference.stamp_ns == stamps['CAM_FRONT'] - 10_000_000
    off = CameraPoseResolver(cams, enabled=False).resolve(stamps, odom.lookup, odom.interpolate)
    assert off.reference is not None and not off.cameras
    assert CameraPoseResolver(cams).resolve(stamps, lambda t: None).reference is None


def test_stamp_offset_parameter() -> None:
    pytest.importorskip('rclpy', reason='occ_ros.ros needs the ROS 2 wheels')
    from occ_ros.core.errors import ConfigError
    from occ_ros.ros.params import NodeParams
    p = NodeParams.from_mapping({})
    assert p.ego_motion_compensation and p.stamp_offset_ns('CAM_BACK') == 0
    p = NodeParams.from_mapping({'camera_stamp_offsets_s': [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]})
    assert p.stamp_offset_ns('CAM_FRONT') == 10_000_000 and p.stamp_offset_ns('CAM_BACK_RIGHT') == 50_000_000
    assert NodeParams.from_mapping({'camera_stamp_offsets_s': [0.03]}).stamp_offset_ns('CAM_BACK') == 30_000_000
    for bad in ([0.0, 0.1], [2.0], ['x'], []):
        with pytest.raises(ConfigError, match='camera_stamp_offsets_s'):
            NodeParams.from_mapping({'camera_stamp_offsets_s': bad})
