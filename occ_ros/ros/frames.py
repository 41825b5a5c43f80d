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
from typing import Any, Callable, Optional, Sequence

import numpy as np

from occ_ros.core.errors import ConfigError
from occ_ros.geometry import CameraCalib, Rig, matrix_to_quaternion_xyzw
from occ_ros.ros.convert import matrix_to_transform_msg, pose_to_matrix


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


def apply_to_pose(pose: Any, transform: np.ndarray) -> None:
    """pose ← transform · pose (a geometry_msgs/Pose, in place)."""
    T = np.asarray(transform, dtype=np.float64) @ pose_to_matrix(pose.position, pose.orientation)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    qx, qy, qz, qw = matrix_to_quaternion_xyzw(T[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = qx, qy, qz, qw


class ModelFrame:
    """Where the network's ego frame sits (`model_frame`) and where results go out.

    Holds the rig relative to `frame_id` (rig file or TF) and T_frame_id←model_frame (the
    `model_frame_offset` parameter, or TF); `model_rig` is what the network gets. `set_extrinsics`
    and `set_offset` return the new model-frame rig when it changed (else None).
    """

    def __init__(self, rig_in_base: Rig, T_base_model: np.ndarray) -> None:
        self.rig_in_base = rig_in_base
        self.T_base_model = np.asarray(T_base_model, dtype=np.float64)

    @property
    def model_rig(self) -> Rig:
        return rig_in_model_frame(self.rig_in_base, self.T_base_model)

    def set_extrinsics(self, rig_in_base: Rig) -> Rig:
        self.rig_in_base = rig_in_base
        return self.model_rig

    def set_offset(self, T_base_model: np.ndarray, atol: float = 1e-6) -> Optional[Rig]:
        if np.allclose(T_base_model, self.T_base_model, rtol=0, atol=atol):
            return None
        self.T_base_model = np.asarray(T_base_model, dtype=np.float64)
        return self.model_rig

    def offset_from_tf(self, lookup: Callable[[str, str, Optional[int]], np.ndarray], frame_id: str,
                       model_frame: str, log: Any) -> Optional[np.ndarray]:
        """model_frame_offset_source tf: T frame_id←model_frame from TF, or None (with a throttled
        warning: the current offset stays) while TF does not have it. The caller applies it with
        `set_offset` under the lock with which it hands the new rig to the worker, so that no
        camera set sees the new offset with the old rig."""
        try:
            return lookup(frame_id, model_frame, None)
        except Exception as exc:
            log.warning(f'TF {frame_id} ← {model_frame} unavailable ({exc}); model_frame offset stays '
                        f'{self.T_base_model[:3, 3].round(3).tolist()}', throttle_duration_sec=30.0)
            return None

    def model_pose(self, T_odom_base: np.ndarray) -> np.ndarray:
        """Ego pose of the model frame: T_odom←model = T_odom←base · T_base←model."""
        return np.asarray(T_odom_base, dtype=np.float64) @ self.T_base_model

    def model_lookups(self, lookups: Sequence[Callable[[int], Optional[np.ndarray]]]
                      ) -> tuple[Callable[[int], Optional[np.ndarray]], ...]:
        """Pose lookups (stamp → T_odom←base or None) turned into model-frame pose lookups."""
        def wrap(lookup: Callable[[int], Optional[np.ndarray]]) -> Callable[[int], Optional[np.ndarray]]:
            def model(stamp_ns: int) -> Optional[np.ndarray]:
                T = lookup(stamp_ns)
                return None if T is None else self.model_pose(T)
            return model
        return tuple(wrap(lookup) for lookup in lookups)


def output_placement(output_frame: str, model_frame: str, odom_frame: str,
                     T_odom_model: Optional[np.ndarray]) -> Optional[tuple[str, Optional[np.ndarray]]]:
    """(frame_id, transform model → frame_id or None) for the outputs; None when output_frame is
    'odom' and the set has no pose (the transformed outputs cannot be made)."""
    if output_frame == 'model':
        return model_frame, None
    if T_odom_model is None:
        return None
    return odom_frame, T_odom_model


def static_transform_msg(T_parent_child: np.ndarray, parent: str, child: str) -> Any:
    """tf2_msgs/TFMessage with one geometry_msgs/TransformStamped parent → child (stamp 0)."""
    from tf2_msgs.msg import TFMessage
    return TFMessage(transforms=[matrix_to_transform_msg(T_parent_child, 0, parent, child)])


def publish_model_frame_tf(node: Any, T_base_model: np.ndarray, frame_id: str, model_frame: str) -> Any:
    """Publish frame_id → model_frame (the model_frame_offset parameter) on /tf_static, latched, so
    TF users (RViz, costmaps) find model_frame; returns the publisher (None without tf2_msgs)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    log = node.get_logger()
    try:
        msg = static_transform_msg(T_base_model, frame_id, model_frame)
    except ImportError:
        log.warning(f'tf2_msgs is not importable: {frame_id} → {model_frame} is not published on /tf_static; '
                    'publish it yourself for TF users of the outputs')
        return None
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(type(msg), '/tf_static', latched)
    pub.publish(msg)
    log.info(f'/tf_static: {frame_id} → {model_frame} = model_frame_offset (set model_frame_offset_source:=tf '
             'when the robot description already has it)')
    return pub
