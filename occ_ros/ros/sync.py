"""Approximate-time synchronisation of N camera streams, with camera health and a dead-camera policy.

`CameraSetSynchronizer.add(camera, stamp_ns, item)` is called from each image subscription; it
returns (and passes to the registered callbacks) the camera sets that became complete. No ROS
graph is needed: tests feed stamps directly, as message_filters' own tests do.

Matching (message_filters' ApproximateTime semantics, queue-per-input: the smallest spread within
`slop`, matched and older messages leave the queues) is done by the matchers of `sync_match.py`:
message_filters' ApproximateTimeSynchronizer when it is importable (`matcher='auto'`), otherwise
`ApproximateTimeMatcher`. This module owns liveness, health, statistics and what is emitted.

Dead cameras: a camera whose last message *arrived* more than `camera_timeout_s` ago is silent.
When the streams start (the first message, or the first after every camera was silent for
3 × `camera_timeout_s`: node start-up, a paused bag), every camera not yet heard is waited for
during `camera_timeout_s` — so sets never start with the single camera that happened to speak
first. `poll()` (a timer) emits the newest queued set that became complete over the live
cameras when one is declared silent between arrivals, so the last sets are not left waiting.
Sets are then matched over the
live cameras only and emitted with the silent ones listed in `missing` (the pipeline blanks those
views and marks their frusta unknown). A silent camera rejoins with its next message.

Time: a stamp older than the newest stamp of its camera by more than `time_jump_reset_s` (bag
loop, restarted driver) resets the synchroniser (queues cleared, `generation` incremented,
counted); smaller backward steps are out-of-order arrivals and are queued as usual. A stamp the
camera already delivered is dropped and counted as a duplicate. Emitted stamps strictly increase
within a generation (a late set older than the last one emitted is dropped as stale).

Thread safety: one lock guards the state; callbacks run after it is released, so a raising
callback cannot leave it held. Memory: at most `queue_size` items per camera.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Optional

from occ_ros.core.errors import ConfigError
from occ_ros.ros.sync_match import NS, ApproximateTimeMatcher, Match, MessageFiltersMatcher, message_filters_available

RESTART_FACTOR = 3.0    # every camera silent for this × camera_timeout_s: the streams restart


@dataclass(frozen=True)
class SyncConfig:
    """cameras: names in rig order. slop_s: max spread of a set's stamps. queue_size: per camera.

    camera_timeout_s: silence after which a camera is declared dead. min_cameras: smallest set
    that is emitted. time_jump_reset_s: a camera stamp this far behind the camera's newest one is
    a time jump (reset). health_window: arrivals used for the rate estimate.
    """

    cameras: tuple[str, ...]
    slop_s: float = 0.05
    queue_size: int = 5
    camera_timeout_s: float = 0.5
    min_cameras: int = 1
    time_jump_reset_s: float = 0.5
    health_window: int = 24

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ConfigError('sync: the camera list is empty')
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f'sync: camera names must be unique, got {list(self.cameras)}')
        if not self.slop_s >= 0:
            raise ConfigError(f'sync_slop_s must be >= 0, got {self.slop_s}')
        if self.queue_size < 1:
            raise ConfigError(f'sync_queue_size must be >= 1, got {self.queue_size}')
        if not self.camera_timeout_s > 0:
            raise ConfigError(f'camera_timeout_s must be > 0, got {self.camera_timeout_s}')
        if not 1 <= self.min_cameras <= len(self.cameras):
            raise ConfigError(f'min_cameras must be in [1, {len(self.cameras)}], got {self.min_cameras}')
        if not self.time_jump_reset_s >= 0:
            raise ConfigError(f'time_jump_reset_s must be >= 0, got {self.time_jump_reset_s}')
        if self.health_window < 2:
            raise ConfigError(f'health_window must be >= 2, got {self.health_window}')

    @property
    def slop_ns(self) -> int:
        return int(round(self.slop_s * NS))


@dataclass(frozen=True)
class SyncedSet:
    """One matched camera set.

    stamp_ns: the set's stamp = the stamp of the first present camera in rig order (view 0's
    stamp is the BEV reference time, as in FlashOcc). items/stamps_ns: present cameras only, in
    rig order. missing: silent cameras, in rig order. generation: bumps at every time reset.
    """

    stamp_ns: int
    items: Mapping[str, Any]
    stamps_ns: Mapping[str, int]
    missing: tuple[str, ...]
    generation: int

    @property
    def skew_ns(self) -> int:
        """max − min stamp of the present cameras."""
        s = list(self.stamps_ns.values())
        return max(s) - min(s) if s else 0


# --------------------------------------------------------------------------------------------
# health
# --------------------------------------------------------------------------------------------

@dataclass
class CameraHealth:
    """Health of one camera stream (a snapshot; times in seconds of the synchroniser's clock)."""

    name: str
    state: str = 'waiting'         # waiting (never seen, within timeout) | ok | silent | never
    received: int = 0
    duplicates: int = 0
    backwards: int = 0
    evicted: int = 0
    timeouts: int = 0              # times declared silent
    rejoins: int = 0
    bad: int = 0                   # reported by the consumer (bad encoding, size, calibration)
    last_bad: str = ''
    last_bad_age_s: Optional[float] = None  # since the last bad message (a fault that has passed clears)
    rate_hz: float = 0.0
    age_s: Optional[float] = None  # since the last arrival
    last_stamp_ns: Optional[int] = None     # newest stamp delivered
    offset_ms: Optional[float] = None       # stamp − set stamp in the last set it was part of
    max_abs_offset_ms: float = 0.0          # over the last `health_window` sets


@dataclass
class SyncStats:
    """Counters of the synchroniser (a snapshot)."""

    sets: int = 0
    partial_sets: int = 0
    resets: int = 0
    reset_reasons: dict[str, int] = field(default_factory=dict)
    generation: int = 0
    stale_sets: int = 0            # matched but not newer than the last emitted set
    too_few_cameras: int = 0       # matched but fewer than min_cameras live
    superseded: int = 0            # queued items dropped because a newer set was emitted
    pending: int = 0
    images_received: int = 0       # every add(), all cameras
    images_in_sets: int = 0        # images that are part of an emitted set
    images_unmatched: int = 0      # = received − in sets − pending: every image that will never
                                   # be processed (duplicates, superseded, evicted, reset, stale
                                   # or too-few-camera matches) — one number for the accounting
    last_skew_ms: Optional[float] = None
    max_skew_ms: float = 0.0       # over the last `health_window` sets
    live: tuple[str, ...] = ()
    matcher: str = 'internal'


class _CamState:
    def __init__(self, name: str, window: int) -> None:
        self.h = CameraHealth(name=name)
        self.arrivals: deque[float] = deque(maxlen=window)
        self.offsets: deque[float] = deque(maxlen=window)
        self.recent: deque[int] = deque(maxlen=window)      # stamps delivered (duplicate check)
        self.last_arrival: Optional[float] = None
        self.bad_at: Optional[float] = None
        self.alive = False


# --------------------------------------------------------------------------------------------
# the synchroniser
# --------------------------------------------------------------------------------------------

SetCallback = Callable[[SyncedSet], None]


class CameraSetSynchronizer:
    """Approximate-time camera sets with health and dead-camera handling (see module doc)."""

    def __init__(self, cfg: SyncConfig, callback: Optional[SetCallback] = None,
                 clock: Callable[[], float] = time.monotonic, matcher: str = 'auto') -> None:
        if matcher not in ('auto', 'internal', 'message_filters'):
            raise ConfigError(f"sync matcher must be 'auto', 'internal' or 'message_filters', got {matcher!r}")
        self.cfg = cfg
        self._clock = clock
        self._callbacks: list[SetCallback] = [callback] if callback else []
        self._lock = threading.Lock()
        self._index = {name: i for i, name in enumerate(cfg.cameras)}
        self._cams = [_CamState(n, cfg.health_window) for n in cfg.cameras]
        if matcher == 'message_filters' and not message_filters_available():
            raise ConfigError("sync matcher 'message_filters' requested but message_filters is not importable "
                              "(it comes with a ROS 2 install, not from PyPI); use 'auto' or 'internal'")
        use_mf = matcher == 'message_filters' or (matcher == 'auto' and message_filters_available())
        self._matcher_kind = 'message_filters' if use_mf else 'internal'
        self._matcher: Any = (MessageFiltersMatcher if use_mf else ApproximateTimeMatcher)(
            len(cfg.cameras), cfg.queue_size, cfg.slop_ns)
        self._grace_start = clock()          # start of the current streaming period
        self._last_any: Optional[float] = None
        self._stats = SyncStats(matcher=self._matcher_kind)
        self._skews: deque[float] = deque(maxlen=cfg.health_window)
        self._last_emitted: Optional[int] = None

    # -- public -------------------------------------------------------------------------------
    def register_callback(self, callback: SetCallback) -> None:
        self._callbacks.append(callback)

    @property
    def matcher_kind(self) -> str:
        return self._matcher_kind

    def add(self, camera: str, stamp_ns: int, item: Any) -> list[SyncedSet]:
        """Feed one message; returns the sets it completed (also passed to the callbacks)."""
        i = self._index.get(camera)
        if i is None:
            raise ConfigError(f'sync: unknown camera {camera!r}; configured: {list(self.cfg.cameras)}')
        stamp_ns = int(stamp_ns)
        out: list[SyncedSet] = []
        with self._lock:
            now = self._clock()
            cs = self._cams[i]
            cs.h.received += 1
            self._stats.images_received += 1
            newest = cs.h.last_stamp_ns
            if newest is not None and stamp_ns < newest - int(self.cfg.time_jump_reset_s * NS):
                cs.h.backwards += 1
                self._reset_locked('time_backwards')
                newest = None
            elif stamp_ns in cs.recent:
                cs.h.duplicates += 1
                cs.last_arrival = now
                return out
            if self._last_any is None or now - self._last_any > RESTART_FACTOR * self.cfg.camera_timeout_s:
                self._grace_start = now       # streams (re)start: wait for the others again
            self._last_any = now
            cs.last_arrival = now
            cs.arrivals.append(now)
            cs.recent.append(stamp_ns)
            cs.h.last_stamp_ns = stamp_ns if newest is None else max(newest, stamp_ns)
            live = self._live_locked(now)
            before = self._matcher.evicted[i]
            match = self._matcher.add(i, stamp_ns, item, live)
            cs.h.evicted += self._matcher.evicted[i] - before
            out = self._emit_locked(match, live)
        self._deliver(out)
        return out

    def _deliver(self, sets: list[SyncedSet]) -> None:
        """Call the registered callbacks, outside the lock (a raising callback cannot wedge us)."""
        for s in sets:
            for cb in list(self._callbacks):
                cb(s)

    def poll(self) -> list[SyncedSet]:
        """Re-evaluate liveness now and emit a set that became complete because a camera was
        declared silent since the last arrival (a timer calls this; also keeps diagnostics fresh)."""
        with self._lock:
            live = self._live_locked(self._clock())
            match = self._matcher.rematch(live) if live and self._matcher.pending() else None
            out = self._emit_locked(match, live)
        self._deliver(out)
        return out

    def reset(self, reason: str = 'explicit') -> None:
        with self._lock:
            self._reset_locked(reason)

    def note_bad(self, camera: str, reason: str) -> None:
        """Record that the consumer could not use a message of `camera` (shown in health)."""
        i = self._index.get(camera)
        if i is None:
            return
        with self._lock:
            self._cams[i].h.bad += 1
            self._cams[i].h.last_bad = reason
            self._cams[i].bad_at = self._clock()

    def health(self) -> dict[str, CameraHealth]:
        with self._lock:
            now = self._clock()
            self._update_liveness_locked(now)
            out = {}
            for c in self._cams:
                h = CameraHealth(**vars(c.h))
                h.age_s = None if c.last_arrival is None else now - c.last_arrival
                if len(c.arrivals) >= 2 and c.arrivals[-1] > c.arrivals[0]:
                    h.rate_hz = (len(c.arrivals) - 1) / (c.arrivals[-1] - c.arrivals[0])
                h.max_abs_offset_ms = max((abs(o) for o in c.offsets), default=0.0)
                h.last_bad_age_s = None if c.bad_at is None else now - c.bad_at
                out[c.h.name] = h
            return out

    def stats(self) -> SyncStats:
        with self._lock:
            s = replace(self._stats, reset_reasons=dict(self._stats.reset_reasons))
            s.pending = self._matcher.pending()
            s.images_unmatched = s.images_received - s.images_in_sets - s.pending
            s.live = tuple(c.h.name for c in self._cams if c.alive)
            s.max_skew_ms = max(self._skews, default=0.0)
            return s

    # -- internals (lock held) ----------------------------------------------------------------
    def _update_liveness_locked(self, now: float) -> None:
        timeout = self.cfg.camera_timeout_s
        for c in self._cams:
            if c.last_arrival is not None and c.last_arrival >= self._grace_start:
                alive_now = now - c.last_arrival <= timeout
                state = 'ok' if alive_now else 'silent'
            else:
                # Not heard in this streaming period: waited for during the grace period.
                alive_now = now - self._grace_start <= timeout
                state = 'waiting' if alive_now else ('never' if c.last_arrival is None else 'silent')
            if c.alive and not alive_now:
                c.h.timeouts += 1
            elif not c.alive and alive_now and c.h.state == 'silent' and state == 'ok':
                c.h.rejoins += 1
            c.alive = alive_now
            c.h.state = state

    def _reset_locked(self, reason: str) -> None:
        self._matcher.clear()
        for c in self._cams:
            c.h.last_stamp_ns = None
            c.recent.clear()
        self._last_emitted = None
        self._stats.resets += 1
        self._stats.reset_reasons[reason] = self._stats.reset_reasons.get(reason, 0) + 1
        self._stats.generation += 1

    def _live_locked(self, now: float) -> list[int]:
        """Update liveness at `now`; indices of the live cameras."""
        self._update_liveness_locked(now)
        return [j for j, c in enumerate(self._cams) if c.alive]

    def _emit_locked(self, match: Optional[Match], live: list[int]) -> list[SyncedSet]:
        """The set of `match` (counted), as a list: empty when there is no match or the set is
        dropped (too few cameras, not newer than the last one emitted)."""
        if match is None:
            return []
        present = sorted(match)
        if len(present) < self.cfg.min_cameras:
            self._stats.too_few_cameras += 1
            return []
        names = self.cfg.cameras
        stamps = {names[j]: match[j][0] for j in present}
        stamp = match[present[0]][0]
        newest = max(stamps.values())
        self._stats.superseded += self._matcher.prune_upto(newest)
        if self._last_emitted is not None and stamp <= self._last_emitted:
            self._stats.stale_sets += 1
            return []
        self._last_emitted = stamp
        missing = tuple(names[j] for j in range(len(names)) if j not in match)
        skew_ms = (newest - min(stamps.values())) / 1e6
        self._skews.append(skew_ms)
        self._stats.last_skew_ms = skew_ms
        self._stats.sets += 1
        self._stats.images_in_sets += len(present)
        if missing:
            self._stats.partial_sets += 1
        for j in present:
            off = (match[j][0] - stamp) / 1e6
            self._cams[j].h.offset_ms = off
            self._cams[j].offsets.append(off)
        return [SyncedSet(stamp_ns=stamp, items={names[j]: match[j][1] for j in present},
                          stamps_ns=stamps, missing=missing, generation=self._stats.generation)]


def feed(sync: CameraSetSynchronizer, events: Iterable[tuple[str, int, Any]]) -> list[SyncedSet]:
    """Feed (camera, stamp_ns, item) events in order; all sets emitted (a test/replay helper)."""
    out: list[SyncedSet] = []
    for cam, stamp, item in events:
        out.extend(sync.add(cam, stamp, item))
    return out
