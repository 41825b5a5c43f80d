"""Frames of the node's outputs, after REP-105.

    odom ──(pose at the set's stamp: odometry or TF)──▶ frame_id (base_link)
                                                           │  model_frame_offset (TF, or the
                                                           ▼  parameter; a static transform)
                                                        model_frame (base_footprint): the
                                                        network's ego frame, on the ground

The network's ego frame is nuScenes' (on the ground under the rear axle, x forward, z up; the
grid spans z ∈ [−1, 5.4) m of it). `model_frame` names where that frame sits on the robot; its
offset to `frame_id` (the frame of the rig's extrinsics) comes from TF or from the parameter
`model_frame_offset` [x, y, z, yaw]. The camera rig given relative to `frame_id` is moved into
`model_frame` for the network, and so are ego poses. Outputs go out in `model_frame`
(`output_frame: model`) or in `odom_frame` (`output_frame: odom`), transformed with the ego pose
at the camera set's stamp so a costmap can use them without a lookup of its own.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from occ_ros.core.errors import ConfigError
from occ_ros.geometry import CameraCalib, Rig, matrix_to_quaternion_xyzw, quaternion_to_matrix


def offset_matrix(offset: Sequence[float]) -> np.ndarray:
    """[x, y, z, yaw] (metres, radians) of model_frame in frame_id → 4×4 T_frame_id←model_frame."""
    if len(offset) != 4 or not all(math.isfinite(float(v)) for v in offset):
        raise ConfigError(f'parameter model_frame_offset must be 4 finite numbers [x, y, z, yaw], got {list(offset)}')
    x, y, z, yaw = (float(v) for v in offset)
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = (x, y, z)
    return T


def rig_in_model_frame(rig: Rig, T_base_model: np.ndarray) -> Rig:
    """The rig with extrinsics camera → model_frame: T_model←cam = T_base←model⁻¹ · T_base←cam."""
    if np.array_equal(T_base_model, np.eye(4)):
        return rig
    inv = np.linalg.inv(T_base_model)
    return Rig(tuple(CameraCalib(c.name, c.K, inv @ c.sensor2ego, c.image_hw) for c in rig))


def pose_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose → 4×4."""
    q = pose.orientation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix((q.w, q.x, q.y, q.z))
    T[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    return T


def apply_to_pose(pose: Any, transform: np.ndarray) -> None:
    """pose ← transform · pose (a geometry_msgs/Pose, in place)."""
    T = np.asarray(transform, dtype=np.float64) @ pose_matrix(pose)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    qx, qy, qz, qw = matrix_to_quaternion_xyzw(T[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = qx, qy, qz, qw
