"""Node statistics → diagnostic_msgs/DiagnosticArray (what `/diagnostics` shows).

`NodeSnapshot` collects everything the node knows at one instant; `diagnostic_entries` turns it
into (level, name, message, key/values) tuples — pure, testable — and `diagnostic_array` builds the
message. Statuses, each named "<node>: <topic>" with hardware_id = the node name:

    backend       model, backend, device, engine/backend state (ERROR while it is not ready)
    processing    processing time p50/p95 vs `budget_ms` (WARN above, ERROR above budget × error_factor),
                  output rate, stamp-to-publish latency, dropped sets, pipeline errors, temporal resets
    synchronizer  sets, partial sets, time resets, skew, queue fill
    camera <name> one per camera: state, rate, age, stamp offset, duplicates, backwards, bad input
    odometry      source, misses (WARN when recent sets had no ego pose and the model is temporal)
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from occ_ros.ros.sync import CameraHealth, SyncStats

OK, WARN, ERROR, STALE = 0, 1, 2, 3
# A camera fault (unusable images) is reported until it has not recurred for this long.
FAULT_CLEAR_S = 10.0


class RollingStats:
    """Last `n` samples of a quantity (ms) with percentiles, plus event times for a rate."""

    def __init__(self, n: int = 64) -> None:
        self.values: deque[float] = deque(maxlen=n)
        self.times: deque[float] = deque(maxlen=n)

    def add(self, value: float, t: Optional[float] = None) -> None:
        self.values.append(float(value))
        self.times.append(time.monotonic() if t is None else t)

    def percentile(self, q: float) -> Optional[float]:
        return float(np.percentile(np.fromiter(self.values, float), q)) if self.values else None

    @property
    def last(self) -> Optional[float]:
        return self.values[-1] if self.values else None

    def rate_hz(self, now: Optional[float] = None, horizon_s: float = 10.0) -> float:
        """Events per second over the last `horizon_s` seconds (0 when fewer than 2 events)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self.times if now - t <= horizon_s]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], recent[-1] - recent[0])
        return (len(recent) - 1) / span if span > 0 else 0.0


@dataclass
class NodeSnapshot:
    """Everything `/diagnostics` reports, gathered by the node at one instant."""

    node: str
    model: str = ''
    backend: str = ''
    device: str = ''
    backend_state: str = 'loading'        # loading | building_engine | ready | failed | unconfigured
    backend_detail: str = ''
    temporal_model: bool = False
    processing_p50_ms: Optional[float] = None
    processing_p95_ms: Optional[float] = None
    processing_last_ms: Optional[float] = None
    latency_p50_ms: Optional[float] = None
    latency_p99_ms: Optional[float] = None
    output_rate_hz: float = 0.0
    outputs: int = 0
    sets_received: int = 0            # complete sets handed to the worker slot
    dropped_sets: int = 0             # = dropped_sets_busy + dropped_sets_stale + dropped_sets_held
    dropped_sets_busy: int = 0        # replaced in the slot by a newer set
    dropped_sets_held: int = 0        # ingest_hold: never taken while the worker was busy (stamp gaps)
    ingest_images_taken: Optional[int] = None   # ingest_hold: images taken from the middleware
    ingest_releases_deferred: int = 0           # ingest_hold: releases that waited for the next set
    views_prepared_early: Optional[int] = None  # prepare_early: camera views a set took ready-made
    views_discarded: int = 0                    # prepare_early: prepared (or started) but not used
    dropped_sets_stale: int = 0       # waited longer than max_set_wait_ms, replaced by a fresher one
    sets_taken: int = 0               # started by the worker (→ outputs, or a counted error)
    sets_taken_late: int = 0          # started after max_set_wait_ms: nothing fresher came in time
    pipeline_errors: dict[str, int] = field(default_factory=dict)
    last_error: str = ''
    temporal_resets: dict[str, int] = field(default_factory=dict)
    stage_p50_ms: dict[str, float] = field(default_factory=dict)
    budget_ms: float = 100.0
    error_factor: float = 3.0
    sync: Optional[SyncStats] = None
    cameras: dict[str, CameraHealth] = field(default_factory=dict)
    missing_calibration: dict[str, str] = field(default_factory=dict)   # camera → reason (view blanked)
    stale_calibration: dict[str, str] = field(default_factory=dict)     # camera → why its latest
    #                                     CameraInfo is refused (the last good one is still in use)
    input_warnings: dict[str, str] = field(default_factory=dict)        # camera → off the training range
    qos_incompatible: dict[str, tuple[int, str]] = field(default_factory=dict)   # camera → (events, policy)
    odom_source: str = 'none'
    odom_misses: int = 0
    odom_recent_misses: int = 0
    odom_age_s: Optional[float] = None
    odom_reordered: int = 0             # samples older than the newest, inserted (reorder window)
    odom_resets: int = 0                # samples further back: the pose buffer was cleared
    camera_pose_fallbacks: int = 0     # cameras whose capture time was outside the pose buffer (set pose used)
    extrinsics_source: str = 'rig'
    extrinsics_unresolved: dict[str, str] = field(default_factory=dict)
    voxels_dropped_by_cap: int = 0
    arrival_lag_ms: dict[str, tuple[float, float]] = field(default_factory=dict)   # camera → (p50, max)


Entry = tuple[int, str, str, dict[str, str]]


def _fmt(v: Any, unit: str = '', digits: int = 1) -> str:
    if v is None:
        return 'n/a'
    if isinstance(v, float):
        return f'{v:.{digits}f}{unit}'
    return f'{v}{unit}'


def diagnostic_entries(s: NodeSnapshot) -> list[Entry]:
    """(level, name, message, values) per status, in a fixed order."""
    out: list[Entry] = []
    # backend
    lvl = OK if s.backend_state == 'ready' else (ERROR if s.backend_state == 'failed' else WARN)
    out.append((lvl, 'backend', f'{s.backend_state}: {s.model} on {s.backend}/{s.device}'
                + (f' ({s.backend_detail})' if s.backend_detail else ''),
                {'model': s.model, 'backend': s.backend, 'device': s.device, 'state': s.backend_state,
                 'detail': s.backend_detail, 'temporal_model': str(s.temporal_model)}))
    # processing
    p50 = s.processing_p50_ms
    if p50 is None:
        lvl, msg = OK, 'no camera set processed yet'
    elif p50 > s.budget_ms * s.error_factor:
        lvl, msg = ERROR, f'processing {p50:.0f} ms > {s.error_factor:g} × budget {s.budget_ms:.0f} ms'
    elif p50 > s.budget_ms:
        lvl, msg = WARN, f'processing {p50:.0f} ms over budget {s.budget_ms:.0f} ms'
    else:
        lvl, msg = OK, f'processing {p50:.0f} ms within budget {s.budget_ms:.0f} ms'
    errors = sum(s.pipeline_errors.values())
    if errors and lvl == OK:
        lvl = WARN
        msg += f'; {errors} sets failed ({s.last_error})'
    values = {'processing_p50_ms': _fmt(p50), 'processing_p95_ms': _fmt(s.processing_p95_ms),
              'processing_last_ms': _fmt(s.processing_last_ms), 'budget_ms': _fmt(s.budget_ms),
              'latency_p50_ms': _fmt(s.latency_p50_ms), 'latency_p99_ms': _fmt(s.latency_p99_ms),
              'output_rate_hz': _fmt(s.output_rate_hz, digits=2), 'outputs': str(s.outputs),
              'sets_received': str(s.sets_received), 'dropped_sets': str(s.dropped_sets),
              'dropped_sets_busy': str(s.dropped_sets_busy), 'dropped_sets_stale': str(s.dropped_sets_stale),
              **({} if s.ingest_images_taken is None else {
                  'dropped_sets_held': str(s.dropped_sets_held), 'ingest_images_taken': str(s.ingest_images_taken),
                  'ingest_releases_deferred': str(s.ingest_releases_deferred)}),
              **({} if s.views_prepared_early is None else {
                  'views_prepared_early': str(s.views_prepared_early), 'views_discarded': str(s.views_discarded)}),
              'sets_taken': str(s.sets_taken), 'sets_taken_late': str(s.sets_taken_late),
              'pipeline_errors': str(errors), 'last_error': s.last_error,
              'voxels_dropped_by_cap': str(s.voxels_dropped_by_cap)}
    for k, v in sorted(s.pipeline_errors.items()):
        values[f'errors.{k}'] = str(v)
    for k, v in sorted(s.temporal_resets.items()):
        values[f'temporal_resets.{k}'] = str(v)
    for stage, ms in sorted(s.stage_p50_ms.items()):
        values[f'stage_p50_ms.{stage}'] = _fmt(ms)
    out.append((lvl, 'processing', msg, values))
    # synchroniser
    sy = s.sync
    if sy is not None:
        n_cams = len(s.cameras)
        lvl = OK if len(sy.live) == n_cams else (ERROR if not sy.live else WARN)
        msg = f'{len(sy.live)}/{n_cams} cameras live, {sy.sets} sets ({sy.partial_sets} partial)'
        if sy.resets:
            msg += f', {sy.resets} time resets'
        values = {'matcher': sy.matcher, 'sets': str(sy.sets), 'partial_sets': str(sy.partial_sets),
                  'time_resets': str(sy.resets), 'generation': str(sy.generation),
                  'stale_sets': str(sy.stale_sets), 'too_few_cameras': str(sy.too_few_cameras),
                  'superseded': str(sy.superseded), 'pending': str(sy.pending),
                  'images_received': str(sy.images_received), 'images_in_sets': str(sy.images_in_sets),
                  'images_unmatched': str(sy.images_unmatched),
                  'last_skew_ms': _fmt(sy.last_skew_ms), 'max_skew_ms': _fmt(sy.max_skew_ms),
                  'live': ','.join(sy.live)}
        for k, v in sorted(sy.reset_reasons.items()):
            values[f'resets.{k}'] = str(v)
        out.append((lvl, 'synchronizer', msg, values))
    # cameras
    for name, h in s.cameras.items():
        calib = s.missing_calibration.get(name)
        if h.state in ('waiting', 'never') and name in s.qos_incompatible:     # nothing can arrive: say why
            policy = s.qos_incompatible[name][1]
            lvl, msg = ERROR, f'a publisher has an incompatible QoS ({policy}): nothing received; see input_qos'
        elif h.state in ('silent', 'never'):
            lvl = ERROR
            msg = ('never received' if h.state == 'never' else f'silent for {_fmt(h.age_s, " s")}') + \
                  ': its view is blanked and its frustum marked unknown'
        elif calib:
            lvl, msg = ERROR, f'blanked: {calib}'
        elif name in s.stale_calibration:
            lvl, msg = WARN, ('using its last good calibration; the latest CameraInfo is refused: '
                              f'{s.stale_calibration[name]}')
        elif h.state == 'waiting':
            lvl, msg = WARN, 'waiting for the first image'
        else:
            lvl, msg = OK, f'{h.rate_hz:.1f} Hz'
            if h.bad and (h.last_bad_age_s is None or h.last_bad_age_s < FAULT_CLEAR_S):
                lvl, msg = WARN, f'{h.rate_hz:.1f} Hz, {h.bad} unusable images ({h.last_bad})'
            elif name in s.input_warnings:
                lvl, msg = WARN, f'{h.rate_hz:.1f} Hz; {s.input_warnings[name]}'
        out.append((lvl, f'camera {name}', msg, {
            'input': s.input_warnings.get(name, 'ok'),
            'qos_incompatible': str(s.qos_incompatible.get(name, (0, ''))[0]),
            'state': h.state, 'rate_hz': _fmt(h.rate_hz, digits=2), 'age_s': _fmt(h.age_s, digits=3),
            'received': str(h.received), 'duplicates': str(h.duplicates), 'backwards': str(h.backwards),
            'evicted': str(h.evicted), 'timeouts': str(h.timeouts), 'rejoins': str(h.rejoins),
            'bad': str(h.bad), 'last_bad': h.last_bad, 'last_bad_age_s': _fmt(h.last_bad_age_s),
            'offset_ms': _fmt(h.offset_ms),
            'max_abs_offset_ms': _fmt(h.max_abs_offset_ms),
            'calibration': calib or (f'last good (latest refused: {s.stale_calibration[name]})'
                                     if name in s.stale_calibration else 'ok'),
            'extrinsics': s.extrinsics_unresolved.get(name, s.extrinsics_source),
            'arrival_lag_p50_ms': _fmt(s.arrival_lag_ms.get(name, (None, None))[0]),
            'arrival_lag_max_ms': _fmt(s.arrival_lag_ms.get(name, (None, None))[1])}))
    # odometry
    if s.odom_source == 'none':
        lvl, msg = OK, 'disabled' + (' (temporal model runs single-frame)' if s.temporal_model else '')
    elif s.odom_recent_misses and s.temporal_model:
        lvl, msg = WARN, f'{s.odom_recent_misses} recent sets without ego pose: temporal history reset'
    elif s.odom_recent_misses:
        lvl, msg = OK, f'{s.odom_recent_misses} recent sets without ego pose (single-frame model: no effect)'
    else:
        lvl, msg = OK, f'ego pose from {s.odom_source}'
    if s.odom_source != 'none' and (s.odom_reordered or s.odom_resets):
        msg += (f'; {s.odom_reordered} samples out of order (reordered), '
                f'{s.odom_resets} time jumps back (buffer cleared)')
    out.append((lvl, 'odometry', msg, {'source': s.odom_source, 'misses': str(s.odom_misses),
                                       'reordered': str(s.odom_reordered), 'time_back_resets': str(s.odom_resets),
                                       'recent_misses': str(s.odom_recent_misses),
                                       'age_s': _fmt(s.odom_age_s, digits=3),
                                       'camera_pose_fallbacks': str(s.camera_pose_fallbacks)}))
    return out


def diagnostic_array(s: NodeSnapshot, stamp_ns: int) -> Any:
    """diagnostic_msgs/DiagnosticArray for `s` (statuses named '<node>: <topic>')."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from occ_ros.ros.convert import header
    arr = DiagnosticArray(header=header(stamp_ns, ''))
    for level, name, message, values in diagnostic_entries(s):
        st = DiagnosticStatus(level=bytes([level]), name=f'{s.node}: {name}', message=message,
                              hardware_id=s.node)
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr.status.append(st)
    return arr


def diagnostic_array_type() -> Any:
    """diagnostic_msgs/DiagnosticArray (imported when the node starts, not when this module loads)."""
    from diagnostic_msgs.msg import DiagnosticArray
    return DiagnosticArray
