"""Ray origins by the official protocol, against an independent transcription of the official code.

The reference below follows SparseOcc `loaders/ego_pose_dataset.py` / FlashOCC
`projects/mmdet3d_plugin/datasets/ego_pose_dataset.py` (Yzichen/FlashOCC 4084861) l.44-90 step by
step: LiDAR poses are ego2global · lidar2ego (l.44-54); for each key frame of the scene, the
reference frame's origin is [0, 0, 0] (l.71-72), another frame's is the translation of
ref_lidar_from_global · global_from_curr (l.75-77); both are taken into the reference ego frame
by ref_ego_from_lidar (l.79-81); kept when |x| < 39 and |y| < 39 (l.84); thinned to 8 by
np.round(np.linspace(0, n - 1, 8)) (l.88-90).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from occ_ros.metrics.origins import EgoTrack, lidar_positions_in, official_origins

LIDAR_XYZ = (0.943713, 0.0, 1.84023)


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _pose(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = _rot_z(yaw)
    T[:3, 3] = (x, y, z)
    return T


def official_reference(ego2globals: list[np.ndarray], lidar2ego: np.ndarray, ref_index: int) -> np.ndarray:
    """ego_pose_dataset.py l.44-90, transcribed (numpy instead of pyquaternion)."""
    lidar_poses = [e @ lidar2ego for e in ego2globals]                       # l.44-54
    ref_lidar_from_global = np.linalg.inv(lidar_poses[ref_index])
    ref_ego_from_lidar = lidar2ego
    output_origin_list = []
    for k, global_from_curr in enumerate(lidar_poses):                     # l.69-85
        if k == ref_index:
            origin_tf = np.array([0.0, 0.0, 0.0])
        else:
            origin_tf = (ref_lidar_from_global @ global_from_curr)[:3, 3]
        origin_tf_pad = np.ones([4])
        origin_tf_pad[:3] = origin_tf
        origin_tf = (ref_ego_from_lidar[:3] @ origin_tf_pad)[:3]
        if np.abs(origin_tf[0]) < 39 and np.abs(origin_tf[1]) < 39:
            output_origin_list.append(origin_tf)
    if len(output_origin_list) > 8:                                          # l.88-90
        select_idx = np.round(np.linspace(0, len(output_origin_list) - 1, 8)).astype(np.int64)
        output_origin_list = [output_origin_list[i] for i in select_idx]
    return np.stack(output_origin_list)


@pytest.fixture(scope='module')
def drive():
    """A 20 s drive at 10 m/s on a gentle left curve, key frames at 2 Hz, a LiDAR mount yawed by
    −90° (nuScenes' LIDAR_TOP is rotated; only its position may matter)."""
    stamps = [int(1e9 * (100 + 0.5 * k)) for k in range(41)]
    poses = []
    for k in range(41):
        t = 0.5 * k
        yaw = 0.02 * t
        poses.append(_pose(10.0 * t * math.cos(yaw / 2), 10.0 * t * math.sin(yaw / 2), yaw, 0.1 * math.sin(t)))
    lidar2ego = np.eye(4)
    lidar2ego[:3, :3] = _rot_z(-math.pi / 2)
    lidar2ego[:3, 3] = LIDAR_XYZ
    return stamps, poses, lidar2ego


@pytest.mark.parametrize('ref_index', [0, 7, 20, 40])
def test_origins_match_the_official_computation(drive, ref_index) -> None:
    stamps, poses, lidar2ego = drive
    track = EgoTrack.from_samples(list(zip(stamps, poses)))
    got = official_origins(track, stamps[ref_index], stamps, lidar_xyz=LIDAR_XYZ)
    want = official_reference(poses, lidar2ego, ref_index)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-3


def test_thinning_can_drop_the_scored_frames_own_origin(drive) -> None:
    """Mid-drive, 15 key frames lie inside ±39 m; round(linspace(0, 14, 8)) keeps indices
    0, 2, 4, 6, 8, 10, 12, 14 — the scored frame is the 8th (index 7) and is not among them."""
    stamps, poses, lidar2ego = drive
    track = EgoTrack.from_samples(list(zip(stamps, poses)))
    got = official_origins(track, stamps[20], stamps, lidar_xyz=LIDAR_XYZ)
    own = lidar_positions_in(poses[20], poses[20][None], LIDAR_XYZ)[0]
    assert len(got) == 8
    assert np.min(np.linalg.norm(got - own, axis=1)) > 1.0
    np.testing.assert_allclose(own, LIDAR_XYZ, atol=1e-9)


def test_a_frame_between_key_frames_counts_itself(drive) -> None:
    """A 12 Hz replay scores frames between the 2 Hz key frames: their own position is added in
    time order (an extension: the official code scores key frames only)."""
    stamps, poses, _ = drive
    mid = (stamps[0] + stamps[1]) // 2
    samples = list(zip(stamps, poses)) + [(mid, _pose(2.5, 0.0, 0.0))]
    track = EgoTrack.from_samples(samples)
    got = official_origins(track, mid, stamps[:3], lidar_xyz=LIDAR_XYZ)
    np.testing.assert_allclose(got[1], LIDAR_XYZ, atol=1e-9)          # itself, between key frames 0 and 1
    assert len(got) == 4


def test_saved_predictions_rescore_to_the_same_figures(tmp_path, drive) -> None:
    """`eval --bag … --save-pred D` then `eval --pred D/pred --gt D/gt`: the Occ3D files carry the
    official origins and the ego pose, and re-scoring them gives the same mIoU, RayIoU and RayPQ."""
    from occ_ros.apps.evaluate import evaluate_dirs
    from occ_ros.apps.replay import save_samples
    from occ_ros.core.classes import FREE, OCC_INDEX
    from occ_ros.core.config import OCC3D_GRID
    from occ_ros.core.occupancy import Occupancy
    from occ_ros.metrics.evaluate import EvalSample, score_pairs
    from occ_ros.metrics.origins import PROTOCOL_OFFICIAL

    stamps, poses, _ = drive
    track = EgoTrack.from_samples(list(zip(stamps, poses)))
    rng = np.random.default_rng(5)
    samples = []
    for k in (3, 10, 20):
        sem = np.full(OCC3D_GRID.shape, FREE, np.uint8)
        sem[:, :, 2] = OCC_INDEX['driveable_surface']
        inst = np.zeros(OCC3D_GRID.shape, np.uint16)
        for i in range(6):                                            # cars, some of them mispredicted
            x, y = rng.integers(60, 140, 2)
            sem[x:x + 5, y:y + 3, 3:6] = OCC_INDEX['car']
            inst[x:x + 5, y:y + 3, 3:6] = i + 1
        sem[20:30, :, 3:10] = OCC_INDEX['manmade']
        pred_sem, pred_inst = sem.copy(), inst.copy()
        pred_sem[np.roll(sem == OCC_INDEX['car'], 2, axis=0)] = OCC_INDEX['car']
        pred_sem[25:30, :, 3:10] = FREE
        o = official_origins(track, stamps[k], stamps, lidar_xyz=LIDAR_XYZ)
        gt = Occupancy(sem, inst, mask_camera=rng.random(OCC3D_GRID.shape) < 0.8, origins=o, ego_pose=poses[k])
        samples.append(EvalSample(str(stamps[k]), Occupancy(pred_sem, pred_inst), gt, o))
    direct = score_pairs(samples, grid=OCC3D_GRID, origins_label=PROTOCOL_OFFICIAL)
    save_samples(samples, tmp_path)
    again = evaluate_dirs(tmp_path / 'pred', tmp_path / 'gt')
    assert again.num_frames == 3
    assert abs(again.semantic.miou - direct.semantic.miou) <= 0.01
    assert abs(again.ray_iou.rayiou - direct.ray_iou.rayiou) <= 0.01
    assert abs(again.ray_pq.raypq - direct.ray_pq.raypq) <= 0.01
    assert 0 < direct.ray_iou.rayiou < 100                              # not a trivial perfect score
    single = evaluate_dirs(tmp_path / 'pred', tmp_path / 'gt', origins_from='single')
    assert abs(single.ray_iou.rayiou - direct.ray_iou.rayiou) > 0.01    # the origins were really read back


def test_nuscenes_outputs_pair_with_their_sample(tmp_path) -> None:
    """A nuscenes-to-bag bag stamps ground truth at LIDAR_TOP and the cameras at their own stamps
    (43 ms apart in the devkit sample the issue names): outputs pair by sample, through the
    nuscenes.json the converter writes, not by a 5 ms stamp match that would score nothing."""
    import json

    from occ_ros.apps.replay import _match, keyframe_aliases
    lidar = [1_000_000_000, 1_500_000_000]
    cams = [{'CAM_FRONT_LEFT': t + 43_100_000, 'CAM_FRONT': t + 40_000_000} for t in lidar]
    (tmp_path / 'nuscenes.json').write_text(json.dumps({'keyframes': [
        {'sample_token': f's{i}', 'stamp_ns': t, 'camera_stamps_ns': c, 'ground_truth': True}
        for i, (t, c) in enumerate(zip(lidar, cams))]}))
    aliases = keyframe_aliases(tmp_path)
    assert _match(lidar, lidar[1] + 43_100_000) is None                  # the old stamp match
    assert _match(lidar, lidar[1] + 43_100_000, aliases=aliases) == lidar[1]
    assert _match(lidar, lidar[0] + 40_000_000, aliases=aliases) == lidar[0]
    assert keyframe_aliases(tmp_path / 'nothing') == {}
