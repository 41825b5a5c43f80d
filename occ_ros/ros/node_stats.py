"""The occupancy node's measurements: counters and rolling timings, and where they go.

`NodeStats` counts what went wrong (errors by kind, with the last one's text), temporal resets,
odometry misses, incompatible-QoS publishers and each camera's arrival lag; it keeps the rolling
processing / latency / per-stage timings and publishes them per set on
~/debug/processing_time_ms, ~/debug/pipeline_latency_ms and ~/debug/<stage>_ms
(occ_ros/msg/Float64Stamped, the set's stamp). `fill_locked` copies them into the `NodeSnapshot`
that /diagnostics shows (`diagnostics.py`).

Thread safety: the node's lock (passed in) guards the counters, as it guards the node's
calibration (`calibration.py`); callbacks and the worker share it.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from occ_ros.ros.diagnostics import NodeSnapshot, RollingStats
from occ_ros.ros.publish import float_stamped


class NodeStats:
    """Counters, rolling timings and the ~/debug timing publishers of one node (see module doc)."""

    def __init__(self, lock: threading.Lock, snap: NodeSnapshot) -> None:
        self._lock = lock                          # the node's
        self._snap = snap
        self.proc = RollingStats(64)
        self.lat = RollingStats(256)
        self.stages: dict[str, RollingStats] = {}
        self.arrival_lag: dict[str, RollingStats] = {}  # per camera: ROS now − stamp at the callback
        self.errors: dict[str, int] = {}
        self.qos_incompatible: dict[str, tuple[int, str]] = {}   # camera → (count, last policy)
        self.temporal_resets: dict[str, int] = {}
        self.odom_misses = 0
        self.odom_recent: list[bool] = []
        self.pub_proc: Any = None
        self.pub_lat: Any = None
        self.stage_pubs: dict[str, Any] = {}

    def create_publishers(self, node: Any) -> None:
        """The ~/debug timing publishers (`OccupancyNode.start`; again after a re-activation)."""
        from occ_ros.msg import Float64Stamped
        self._node = node
        self.pub_proc = node.create_publisher(Float64Stamped, '~/debug/processing_time_ms', 10)
        self.pub_lat = node.create_publisher(Float64Stamped, '~/debug/pipeline_latency_ms', 10)
        self._Float64Stamped = Float64Stamped
        self.stage_pubs = {}

    def count_error(self, kind: str, detail: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self._snap.last_error = detail[:200]

    def note_arrival_lag(self, camera: str, lag_ms: float) -> None:
        with self._lock:
            stats = self.arrival_lag.get(camera)
            if stats is None:
                stats = self.arrival_lag[camera] = RollingStats(64)
            stats.add(lag_ms)

    def note_qos_incompatible(self, camera: str, count: int, policy: str) -> None:
        with self._lock:
            self.qos_incompatible[camera] = (count, policy)

    def note_temporal_reset(self, reset: str) -> None:
        with self._lock:
            self.temporal_resets[reset] = self.temporal_resets.get(reset, 0) + 1

    def note_odometry(self, ok: bool) -> None:
        with self._lock:
            if not ok:
                self.odom_misses += 1
            self.odom_recent.append(not ok)
            del self.odom_recent[:-24]

    def publish_timings(self, stamp_ns: int, processing_ms: float, latency_ms: float,
                        stages: dict[str, float], fid: str) -> None:
        self.pub_proc.publish(float_stamped(processing_ms, stamp_ns, fid))
        self.pub_lat.publish(float_stamped(latency_ms, stamp_ns, fid))
        now = time.monotonic()
        with self._lock:
            self.proc.add(processing_ms, now)
            self.lat.add(latency_ms, now)
            for name, ms in stages.items():
                self.stages.setdefault(name, RollingStats(64)).add(ms, now)
        for name, ms in stages.items():
            pub = self.stage_pubs.get(name)
            if pub is None:
                safe = ''.join(ch if ch.isalnum() or ch == '_' else '_' for ch in name)
                pub = self.stage_pubs[name] = self._node.create_publisher(
                    self._Float64Stamped, f'~/debug/{safe}_ms', 10)
            pub.publish(float_stamped(ms, stamp_ns, fid))

    def fill_locked(self, s: NodeSnapshot) -> None:
        """Copy the counters and timings into the snapshot (the caller holds the node's lock)."""
        s.processing_p50_ms = self.proc.percentile(50)
        s.processing_p95_ms = self.proc.percentile(95)
        s.processing_last_ms = self.proc.last
        s.latency_p50_ms = self.lat.percentile(50)
        s.latency_p99_ms = self.lat.percentile(99)
        s.output_rate_hz = self.proc.rate_hz()
        s.pipeline_errors = dict(self.errors)
        s.temporal_resets = dict(self.temporal_resets)
        s.stage_p50_ms = {k: v.percentile(50) or 0.0 for k, v in self.stages.items()}
        s.odom_misses = self.odom_misses
        s.odom_recent_misses = sum(self.odom_recent)
        s.qos_incompatible = dict(self.qos_incompatible)
        s.arrival_lag_ms = {cam: (st.percentile(50) or 0.0, max(st.values, default=0.0))
                            for cam, st in self.arrival_lag.items()}
