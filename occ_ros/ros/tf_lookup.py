"""The node's TF lookup: tf2_ros when importable, else the built-in `TransformTree` fed from /tf
and /tf_static (needs the tf2_msgs interfaces, which scripts/build_interfaces.sh provides in the
venv). Both give lookup(target, source, stamp_ns | None) → 4×4 T_target←source."""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from occ_ros.core.errors import CalibrationError, ConfigError
from occ_ros.ros.convert import transform_to_matrix
from occ_ros.ros.qos import reliable as _reliable
from occ_ros.ros.tf import TransformTree

TfLookup = Callable[[str, str, Optional[int]], np.ndarray]


def make_tf_lookup(node: Any, tolerance_ns: int) -> TfLookup:
    """A lookup on `node`'s subscriptions (tf2_ros' listener or the built-in tree's)."""
    try:
        import tf2_ros
    except ImportError:
        return _own_tf(node, tolerance_ns)
    from rclpy.time import Time
    buf = tf2_ros.Buffer()
    node._tf_listener = tf2_ros.TransformListener(buf, node)

    def lookup(target: str, source: str, stamp_ns: Optional[int] = None) -> np.ndarray:
        t = Time() if stamp_ns is None else Time(nanoseconds=int(stamp_ns))
        return transform_to_matrix(buf.lookup_transform(target, source, t))
    node.get_logger().info('TF: tf2_ros')
    return lookup


def _own_tf(node: Any, tolerance_ns: int) -> TfLookup:
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        raise ConfigError('extrinsics_source/odom_source "tf" needs tf2_ros (a ROS 2 install) or at '
                          'least the tf2_msgs interfaces; neither is importable here. Use '
                          'extrinsics_source:=rig and odom_source:=odometry') from None
    tree = TransformTree(tolerance_ns=tolerance_ns)
    tree_lock = threading.Lock()
    log = node.get_logger()

    def on_tf(msg: Any, static: bool) -> None:
        with tree_lock:
            try:
                tree.add_message(msg, static=static)
            except CalibrationError as exc:
                log.warning(f'bad TF message: {exc}', throttle_duration_sec=5.0)
    static_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, '/tf', lambda m: on_tf(m, False), _reliable(100))
    node.create_subscription(TFMessage, '/tf_static', lambda m: on_tf(m, True), static_qos)

    def lookup(target: str, source: str, stamp_ns: Optional[int] = None) -> np.ndarray:
        with tree_lock:
            return tree.lookup(target, source, stamp_ns)
    log.info('TF: tf2_ros not importable; built-in transform tree on /tf and /tf_static')
    return lookup
