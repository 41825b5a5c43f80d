"""Frame maths of occ_ros.ros.frames against scipy's Rotation (an independent implementation)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from occ_ros.core.errors import ConfigError
from occ_ros.geometry import nuscenes_rig
from occ_ros.ros import frames as F

Rotation = pytest.importorskip('scipy.spatial.transform', reason='needs scipy').Rotation


def _T(rotvec: tuple[float, float, float], t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def test_offset_matrix_is_a_yaw_and_a_translation() -> None:
    T = F.offset_matrix([0.2, -0.1, -0.3, 0.6])
    np.testing.assert_allclose(T[:3, :3], Rotation.from_euler('z', 0.6).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], (0.2, -0.1, -0.3))
    with pytest.raises(ConfigError, match='model_frame_offset'):
        F.offset_matrix([0.0, 0.0, math.nan, 0.0])


def test_rig_in_model_frame_sees_the_same_world() -> None:
    """A point fixed on the robot projects to the same camera coordinates whether it is given in
    base_link with the rig file's extrinsics or in model_frame with the moved ones."""
    rig = nuscenes_rig()
    T_base_model = F.offset_matrix([0.4, 0.1, -0.35, 0.2])
    moved = F.rig_in_model_frame(rig, T_base_model)
    p_base = np.array([6.0, -2.0, 0.5, 1.0])
    p_model = np.linalg.inv(T_base_model) @ p_base
    for a, b in zip(rig, moved):
        np.testing.assert_allclose(np.linalg.inv(a.sensor2ego) @ p_base, np.linalg.inv(b.sensor2ego) @ p_model,
                                   atol=1e-12)
        assert b.sensor2ego[2, 3] == pytest.approx(a.sensor2ego[2, 3] + 0.35)     # 35 cm over the ground
    assert F.rig_in_model_frame(rig, np.eye(4)) is rig


def test_model_frame_tracks_offset_and_pose() -> None:
    mf = F.ModelFrame(nuscenes_rig(), np.eye(4))
    assert mf.set_offset(np.eye(4)) is None                                          # unchanged
    new = mf.set_offset(F.offset_matrix([0.0, 0.0, -0.3, 0.0]))
    assert new is not None and new.camera('CAM_FRONT').sensor2ego[2, 3] == pytest.approx(1.51095763913 + 0.3)
    T_odom_base = _T((0.0, 0.0, 0.9), (5.0, 1.0, 0.3))
    np.testing.assert_allclose(mf.model_pose(T_odom_base)[:3, 3], (5.0, 1.0, 0.0), atol=1e-12)


def test_apply_to_pose_and_static_transform_against_scipy() -> None:
    from geometry_msgs.msg import Pose
    pose = Pose()
    q = Rotation.from_rotvec((0.1, -0.2, 0.3))
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q.as_quat()
    pose.position.x, pose.position.y, pose.position.z = 1.0, 2.0, 3.0
    T = _T((0.0, 0.4, -1.1), (-3.0, 0.5, 2.0))
    F.apply_to_pose(pose, T)
    expect_R = Rotation.from_matrix(T[:3, :3]) * q
    got = Rotation.from_quat([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    assert (got.inv() * expect_R).magnitude() < 1e-9
    np.testing.assert_allclose([pose.position.x, pose.position.y, pose.position.z], T[:3, :3] @ (1, 2, 3) + T[:3, 3])
    pytest.importorskip('tf2_msgs.msg', reason='tf2_msgs interfaces not built')
    msg = F.static_transform_msg(T, 'base_link', 'base_footprint')
    tr = msg.transforms[0]
    assert (tr.header.frame_id, tr.child_frame_id) == ('base_link', 'base_footprint')
    r = tr.transform.rotation
    assert (Rotation.from_quat([r.x, r.y, r.z, r.w]).inv() * Rotation.from_matrix(T[:3, :3])).magnitude() < 1e-9


def test_output_placement() -> None:
    T = np.eye(4)
    assert F.output_placement('model', 'base_footprint', 'odom', None) == ('base_footprint', None)
    assert F.output_placement('odom', 'base_footprint', 'odom', None) is None
    frame, transform = F.output_placement('odom', 'base_footprint', 'odom', T)
    assert frame == 'odom' and transform is T
