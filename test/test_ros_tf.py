"""Rig / TF maths without a ROS graph: pose interpolation, the transform tree, rig-from-TF."""
from __future__ import annotations

import math

import numpy as np
import pytest

from occ_ros.core.errors import CalibrationError
from occ_ros.geometry import nuscenes_rig
from occ_ros.ros.tf import (PoseBuffer, TransformTree, TransformUnavailable, interpolate_pose, invert,
                            rig_from_tf, rig_with_extrinsics, slerp)

MS = 1_000_000


def pose(yaw: float, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]
    T[:3, 3] = (x, y, z)
    return T


def test_slerp_and_interpolation_are_exact_for_planar_motion() -> None:
    for a in (0.0, 0.25, 0.5, 1.0):
        np.testing.assert_allclose(interpolate_pose(pose(0.2, 1, 2), pose(1.0, 3, -2), a),
                                   pose(0.2 + 0.8 * a, 1 + 2 * a, 2 - 4 * a), atol=1e-12)
    q = slerp(np.array([1.0, 0, 0, 0]), np.array([-1.0, 0, 0, 0]), 0.5)   # same rotation, sign flipped
    np.testing.assert_allclose(np.abs(q), [1, 0, 0, 0], atol=1e-12)


def test_invert() -> None:
    T = pose(0.7, 1, 2, 3)
    np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)


def test_pose_buffer_lookup_rules() -> None:
    buf = PoseBuffer(maxlen=8, tolerance_ns=30 * MS, max_interp_gap_ns=200 * MS)
    assert buf.lookup(0) is None
    buf.add(0, pose(0.0, 0))
    buf.add(100 * MS, pose(0.1, 1))
    np.testing.assert_allclose(buf.lookup(50 * MS), pose(0.05, 0.5), atol=1e-12)      # interpolated
    np.testing.assert_allclose(buf.lookup(100 * MS), pose(0.1, 1), atol=1e-12)        # exact
    np.testing.assert_allclose(buf.lookup(125 * MS), pose(0.1, 1), atol=1e-12)        # hold newest
    assert buf.lookup(131 * MS) is None                                               # beyond tolerance
    assert buf.lookup(-31 * MS) is None
    buf.add(600 * MS, pose(0.6, 6))                     # gap 500 ms > max_interp_gap: no interpolation
    assert buf.lookup(350 * MS) is None
    np.testing.assert_allclose(buf.lookup(590 * MS), pose(0.6, 6), atol=1e-12)


def test_pose_buffer_is_bounded_and_resets_when_time_goes_back() -> None:
    buf = PoseBuffer(maxlen=8)
    for k in range(20):
        buf.add(k * 10 * MS, pose(0, k))
    assert len(buf) == 8 and buf.newest_ns == 190 * MS
    buf.add(190 * MS, pose(0, 99))                       # duplicate stamp replaces
    assert len(buf) == 8 and buf.lookup(190 * MS)[0, 3] == 99
    assert buf.add(5 * MS, pose(0, 0)) is True           # bag loop
    assert len(buf) == 1 and buf.resets == 1
    with pytest.raises(CalibrationError):
        buf.add(6 * MS, np.full((4, 4), np.nan))


def test_pose_buffer_takes_small_reordering_in_its_place() -> None:
    """Two odometry sources or transport jitter: a sample up to 200 ms older than the newest is
    inserted where it belongs (interpolation then uses it); older than that is a jump back."""
    buf = PoseBuffer(maxlen=8, tolerance_ns=30 * MS, max_interp_gap_ns=200 * MS)
    for k in (0, 20, 40, 60, 80, 100, 120, 140):                # full: 8 samples
        buf.add(k * MS, pose(0, k))
    assert buf.add(130 * MS, pose(0, 130)) is False             # late by 10 ms: kept, in order
    assert buf.reordered == 1 and buf.resets == 0 and len(buf) == 8
    assert buf.lookup(130 * MS)[0, 3] == pytest.approx(130)
    assert buf.lookup(125 * MS)[0, 3] == pytest.approx(125)     # between 120 and 130
    assert buf.add(140 * MS - 500 * MS, pose(0, 0)) is True     # 500 ms back: a real jump
    assert buf.resets == 1 and len(buf) == 1


def test_transform_tree_chain_and_common_ancestor() -> None:
    tree = TransformTree()
    T_odom_base = pose(0.3, 10, 5)
    T_base_cam = pose(-1.2, 1.5, 0.1, 1.6)
    T_base_cam2 = pose(2.0, -1.0, 0.0, 1.5)
    tree.set_transform('odom', 'base_link', T_odom_base, 0)
    tree.set_transform('odom', 'base_link', T_odom_base @ pose(0, 1), 100 * MS)
    tree.set_transform('base_link', 'cam_a', T_base_cam, static=True)
    tree.set_transform('/base_link', 'cam_b', T_base_cam2, static=True)
    np.testing.assert_allclose(tree.lookup('base_link', 'cam_a'), T_base_cam, atol=1e-12)
    np.testing.assert_allclose(tree.lookup('cam_b', 'cam_a'), invert(T_base_cam2) @ T_base_cam, atol=1e-12)
    np.testing.assert_allclose(tree.lookup('odom', 'cam_a', 50 * MS),
                               T_odom_base @ pose(0, 0.5) @ T_base_cam, atol=1e-12)
    np.testing.assert_allclose(tree.lookup('odom', 'base_link'), T_odom_base @ pose(0, 1), atol=1e-12)
    with pytest.raises(TransformUnavailable, match='not connected'):
        tree.lookup('map', 'cam_a')
    with pytest.raises(TransformUnavailable, match='no transform'):
        tree.lookup('odom', 'base_link', 10_000 * MS)


def test_transform_tree_from_messages() -> None:
    pytest.importorskip('geometry_msgs.msg', reason='needs the ROS 2 message wheels')
    from occ_ros.ros.convert import matrix_to_transform_msg
    tree = TransformTree()
    T = pose(0.4, 1, 2, 3)
    tree.add_message([matrix_to_transform_msg(T, 0, 'base_link', 'cam')], static=True)
    np.testing.assert_allclose(tree.lookup('base_link', 'cam'), T, atol=1e-12)


def test_rig_from_tf_replaces_only_resolved_cameras() -> None:
    rig = nuscenes_rig()
    tree = TransformTree()
    new_front = rig.camera('CAM_FRONT').sensor2ego @ pose(0.01, 0.02)
    tree.set_transform('base_link', 'cam_front_optical', new_front, static=True)
    frames = {'CAM_FRONT': 'cam_front_optical', 'CAM_BACK': 'cam_back_optical'}
    out, unresolved = rig_from_tf(rig, frames, 'base_link', lambda t, s: tree.lookup(t, s))
    np.testing.assert_allclose(out.camera('CAM_FRONT').sensor2ego, new_front, atol=1e-12)
    np.testing.assert_array_equal(out.camera('CAM_BACK').sensor2ego, rig.camera('CAM_BACK').sensor2ego)
    assert set(unresolved) == set(rig.names) - {'CAM_FRONT'}
    assert 'TransformUnavailable' in unresolved['CAM_BACK']
    assert 'optical frame unknown' in unresolved['CAM_FRONT_LEFT']
    # K and image sizes are untouched
    np.testing.assert_array_equal(out.camera('CAM_FRONT').K, rig.camera('CAM_FRONT').K)


def test_rig_with_an_invalid_tf_extrinsic_is_a_calibration_error() -> None:
    rig = nuscenes_rig()
    bad = np.eye(4)
    bad[:3, :3] *= 2.0                                    # not a rotation
    with pytest.raises(CalibrationError):
        rig_with_extrinsics(rig, {'CAM_FRONT': bad})
