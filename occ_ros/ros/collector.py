"""Collect the occupancy node's outputs during a replay: panoptic results, latencies, diagnostics.

A small rclpy node on its own context, spun in a background thread, so a replay can play a bag
in the foreground and score what the node published.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from occ_ros.core.occupancy import Occupancy, occupancy_from_message, stamp_ns_of


@dataclass
class CollectedOutputs:
    """What the node published, keyed by the camera-set stamp (ns)."""

    panoptic: dict[int, Occupancy] = field(default_factory=dict)
    received_wall_ns: dict[int, int] = field(default_factory=dict)
    latency_ms: dict[int, float] = field(default_factory=dict)
    processing_ms: dict[int, float] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    missing_cameras: dict[int, tuple[str, ...]] = field(default_factory=dict)


class OutputCollector:
    """Subscribes to `<node>/panoptic`, `<node>/debug/*_ms` and `/diagnostics`.

    node_ns: fully qualified name of the occupancy node (e.g. '/occupancy_node').
    """

    def __init__(self, node_ns: str = '/occupancy_node') -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from occ_ros.msg import Float64Stamped, PanopticOccupancy

        self.outputs = CollectedOutputs()
        self._lock = threading.Lock()
        self._ctx = rclpy.Context()
        rclpy.init(context=self._ctx)
        self.node = rclpy.create_node('occ_ros_collector', context=self._ctx)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        base = node_ns.rstrip('/')
        self.panoptic_topic = f'{base}/panoptic'
        self.node.create_subscription(PanopticOccupancy, self.panoptic_topic, self._on_panoptic, reliable)
        self.node.create_subscription(Float64Stamped, f'{base}/debug/pipeline_latency_ms',
                                      self._scalar(self.outputs.latency_ms), reliable)
        self.node.create_subscription(Float64Stamped, f'{base}/debug/processing_time_ms',
                                      self._scalar(self.outputs.processing_ms), reliable)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self._executor = SingleThreadedExecutor(context=self._ctx)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name='occ_ros_collector', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self._ctx.ok():
            self._executor.spin_once(timeout_sec=0.1)

    def _on_panoptic(self, msg: Any) -> None:
        now = time.time_ns()
        result = occupancy_from_message(msg)
        with self._lock:
            self.outputs.panoptic[result.stamp_ns] = result
            self.outputs.received_wall_ns[result.stamp_ns] = now
            self.outputs.missing_cameras[result.stamp_ns] = tuple(msg.missing_cameras)

    def _scalar(self, target: dict[int, float]) -> Any:
        def callback(msg: Any) -> None:
            with self._lock:
                target[stamp_ns_of(msg)] = float(msg.data)
        return callback

    def _on_diagnostics(self, msg: Any) -> None:
        with self._lock:
            for status in msg.status:
                self.outputs.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def count(self) -> int:
        with self._lock:
            return len(self.outputs.panoptic)

    def newest_stamp(self) -> int:
        """Stamp (ns) of the newest panoptic result so far, −1 before the first."""
        with self._lock:
            return max(self.outputs.panoptic, default=-1)

    def node_ready(self) -> bool:
        """True once the node's panoptic publisher is visible (its backend is loaded)."""
        return self.node.count_publishers(self.panoptic_topic) > 0

    def wait_until_quiet(self, quiet_s: float = 3.0, timeout_s: float = 60.0,
                         last_stamp_ns: Optional[int] = None) -> int:
        """Wait until no new result arrived for `quiet_s` (the node drained its queue), or until
        a result stamped at or after `last_stamp_ns` (the newest input: nothing can follow it)."""
        deadline = time.monotonic() + timeout_s
        last, last_change = self.count(), time.monotonic()
        while time.monotonic() < deadline:
            if last_stamp_ns is not None and self.newest_stamp() >= last_stamp_ns:
                return self.count()
            time.sleep(0.05 if last_stamp_ns is not None else 0.2)
            n = self.count()
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change >= quiet_s:
                break
        return last

    def close(self) -> None:
        """Stop spinning and release the node and its context (again: nothing)."""
        import rclpy

        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._ctx)

    def __enter__(self) -> 'OutputCollector':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_for(predicate: Any, timeout_s: float, period_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return bool(predicate())


__all__ = ['CollectedOutputs', 'OutputCollector', 'wait_for']
