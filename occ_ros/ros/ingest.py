"""Camera ingest held while the worker is busy (parameter `ingest_hold`).

Without it every image is taken from DDS as it arrives — rclpy copies each one twice (the
middleware's buffer → the serialized message → a Python `bytes`), about 1.5 ms for a raw
900×1600 image here — although with processing slower than the cameras most sets are then
dropped as busy. With it the image subscriptions live on a second node, `<node>_cameras` (same
namespace, same context, so the same remappings), spun by a thread of its own only while the
worker is free:

- `hold()` (the worker took a set): the thread stops taking. Each camera's DDS reader keeps only
  its newest image (the image subscriptions have history depth 1 then): the older ones are
  replaced inside the middleware and never copied into the process.
- `release()` (the set is done): if the set the readers hold would still be fresh for the
  latency-first worker (`max_set_wait_ms`), the held images are taken at once (`backlog` is true
  while that burst lasts). If it would be stale — the worker would drop it and wait for the next
  set anyway — nothing is taken until the next set's CameraInfos (which are never held) have
  come from every live camera: by then the readers hold that set's images, and the stale ones
  were replaced without ever being copied into the process (`NextSetWait`). Ingest then goes on
  as usual until the next hold.
- `clock` stands still while held: the synchroniser's camera timeouts and restart detection run
  on it, so a hold longer than `camera_timeout_s` does not declare every camera silent.
- Images never taken are counted from the gaps in each camera's stamps (`GapCounter`; an
  estimate, since the middleware does not report what it replaced).

No rclpy at import time: `IngestGate` imports it when built (the module is also used by tests
without a ROS graph for its clock and counter).
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Optional, Sequence

from occ_ros.core.threads import name_this_thread


class HeldClock:
    """`time.monotonic` minus the time spent held: stands still between `hold()` and `release()`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held_total = 0.0
        self._held_since: Optional[float] = None

    def __call__(self) -> float:
        with self._lock:
            now = self._clock()
            held = self._held_total + (now - self._held_since if self._held_since is not None else 0.0)
            return now - held

    @property
    def held(self) -> bool:
        return self._held_since is not None

    @property
    def held_total_s(self) -> float:
        with self._lock:
            return self._held_total

    def hold(self) -> None:
        with self._lock:
            if self._held_since is None:
                self._held_since = self._clock()

    def release(self) -> float:
        """End the hold; returns its length in seconds (0 when not held)."""
        with self._lock:
            if self._held_since is None:
                return 0.0
            d = self._clock() - self._held_since
            self._held_total += d
            self._held_since = None
            return d


class GapCounter:
    """Per camera, the images published but never taken, from the gaps in its stamps.

    `note(camera, stamp_ns)` for every image taken, `learn(camera, stamp_ns)` for every
    CameraInfo. The camera's period is the median of its recent stamp steps that lie within 1.5×
    the smallest (steps over skipped images are multiples of it and stay out); a step of n
    periods counts n − 1 images never taken — held back while the worker was busy, replaced in
    the reader, or lost in transport (the middleware does not say which). A stamp going back (a
    restarted driver, a looped bag) counts nothing.
    """

    WINDOW = 32

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._last_learned: dict[str, int] = {}
        self._steps: dict[str, deque[int]] = {}
        self.not_taken: dict[str, int] = {}

    def _step(self, camera: str, last: Optional[int], stamp_ns: int) -> None:
        """Keep the step last → stamp_ns among the camera's recent ones (forward, under 2 s)."""
        if last is not None and 0 < stamp_ns - last < 2_000_000_000:
            self._steps.setdefault(camera, deque(maxlen=self.WINDOW)).append(stamp_ns - last)

    def learn(self, camera: str, stamp_ns: int) -> None:
        """A stamp of another stream of the camera's frames that is always taken — its CameraInfo,
        stamped like its images: with ingest held the images alone may never show two
        consecutive frames."""
        self._step(camera, self._last_learned.get(camera), stamp_ns)
        self._last_learned[camera] = stamp_ns

    def period_ns(self, camera: str) -> Optional[float]:
        steps = self._steps.get(camera)
        if not steps:
            return None
        low = min(steps)
        return float(statistics.median(d for d in steps if d <= 1.5 * low))

    def note(self, camera: str, stamp_ns: int) -> int:
        last = self._last.get(camera)
        self._last[camera] = stamp_ns
        if last is None or stamp_ns <= last:
            return 0
        dt = stamp_ns - last
        self._step(camera, last, stamp_ns)
        period = self.period_ns(camera)
        if period is None or dt <= 1.5 * period:
            return 0
        missed = int(round(dt / period)) - 1
        self.not_taken[camera] = self.not_taken.get(camera, 0) + missed
        return missed

    @property
    def period_s(self) -> Optional[float]:
        """The set period from the stamps: the slowest camera's (a set needs all)."""
        periods = [p for p in (self.period_ns(c) for c in self._steps) if p is not None]
        return max(periods) / 1e9 if periods else None

    @property
    def sets_not_taken(self) -> int:
        """The sets never taken: the largest count of any camera (each set has one image of every
        camera; a camera that went silent meanwhile does not lower it)."""
        return max(self.not_taken.values(), default=0)


def arrival_period_s(arrivals: Iterable[Sequence[float]]) -> Optional[float]:
    """The set period in wall time from each camera's CameraInfo arrival times: the slowest
    camera's median step (a pause does not count). A release waits by it — the stamps of a bag
    played at another rate are a different period apart than their arrivals."""
    periods = [statistics.median(b - a for a, b in zip(t, list(t)[1:])) for t in arrivals if len(t) >= 3]
    return max(periods) if periods and max(periods) > 0 else None


class NextSetWait:
    """At a release, whether to take the held images at once or to wait for the next set.

    `info(camera, t)` records when each camera's CameraInfos arrived (monotonic time, the last
    `WINDOW`; a driver publishes a frame's CameraInfo with its image, so it marks when that image
    came); they also give the camera's rate (`rate_hz`) and the set period (`period_s`).
    `plan(now, period_s, max_wait_s, held_since)`: when no CameraInfo came during the hold (the
    worker finished before the next set began), the readers hold nothing new and the images are
    taken as they arrive. Else the held set was complete when its last live camera's
    info came; if it has waited longer than `max_wait_s` since, the worker would treat it as
    stale, and the plan is to wait until every live camera (an info within `LIVE_PERIODS`
    periods) has sent a newer info, at most `GRACE` periods (the worker's own wait for a fresher
    set, `LatestSlot.STALE_GRACE`) — then the held images are taken after all. None: take at once
    (the held set is fresh, or the period or the latency-first limit is not known).
    """

    LIVE_PERIODS = 2.0
    GRACE = 1.5
    WINDOW = GapCounter.WINDOW

    def __init__(self) -> None:
        self._rx: dict[str, deque[float]] = {}

    def info(self, camera: str, t: float) -> None:
        self._rx.setdefault(camera, deque(maxlen=self.WINDOW)).append(t)

    def rate_hz(self, camera: str) -> Optional[float]:
        """The camera's mean CameraInfo rate over the window (None before two arrivals)."""
        t = self._rx.get(camera)
        if not t or len(t) < 2 or t[-1] <= t[0]:
            return None
        return (len(t) - 1) / (t[-1] - t[0])

    def period_s(self) -> Optional[float]:
        return arrival_period_s(self._rx.values())

    def plan(self, now: float, period_s: Optional[float], max_wait_s: Optional[float],
             held_since: Optional[float] = None) -> Optional[tuple[float, float, frozenset[str]]]:
        """None, or (since, deadline, cameras): wait until each of `cameras` has an info after
        `since`, or until `deadline`. held_since: when the hold began (None: unknown)."""
        if period_s is None or period_s <= 0 or max_wait_s is None:
            return None
        live = frozenset(c for c, t in self._rx.items() if 0.0 <= now - t[-1] <= self.LIVE_PERIODS * period_s)
        if not live:
            return None
        newest = max(self._rx[c][-1] for c in live)
        if now - newest <= max_wait_s or (held_since is not None and newest <= held_since):
            return None
        return now, now + self.GRACE * period_s, live

    def ready(self, since: float, cameras: frozenset[str]) -> bool:
        return all(c in self._rx and self._rx[c][-1] > since for c in cameras)


class IngestGate:
    """The camera subscriptions' node and the thread that spins it only while the worker is free.

    parent: the occupancy node (its name, namespace, context and logger). Subscriptions are made
    on `self.node`. max_wait_s: the worker's latency-first limit, read at each release (None =
    throughput-first: held images are always taken). `start()` starts the thread; `hold()` /
    `release()` from the worker; `close()` stops the thread and destroys the node (idempotent).
    """

    SPIN_S = 0.25      # idle: 4 wake-ups a second (a spin costs ≈ 0.3 ms); a message ends a spin at once

    def __init__(self, parent: Any, max_wait_s: Callable[[], Optional[float]] = lambda: None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self._context = parent.context
        self._log = parent.get_logger()
        self.node = rclpy.create_node(f'{parent.get_name()}_cameras', namespace=parent.get_namespace(),
                                      context=parent.context, start_parameter_services=False)
        self._executor = SingleThreadedExecutor(context=parent.context)
        self._executor.add_node(self.node)
        self.clock = HeldClock()
        self.gaps = GapCounter()
        self.backlog = False              # true while the images held by the last hold are taken
        self._taken = 0                   # images taken (counted by `note`)
        self._input_delay_s: Optional[float] = None     # usual stamp → set complete (EMA)
        self._max_wait_s = max_wait_s
        self._next = NextSetWait()
        self._deferred: Optional[tuple[float, float, frozenset[str]]] = None   # NextSetWait.plan
        self._infos = threading.Event()   # a CameraInfo came (wakes a deferred release)
        self.releases_deferred = 0        # releases that waited for the next set instead of the held one
        self._free = threading.Event()
        self._free.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, name='occupancy_ingest', daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def note_info(self, camera: str, stamp_ns: int) -> None:
        """Called by the CameraInfo callback (never held): the camera's period."""
        with self._lock:
            self.gaps.learn(camera, stamp_ns)
            self._next.info(camera, time.monotonic())
        self._infos.set()

    def camera_rate_hz(self, camera: str) -> Optional[float]:
        """The camera's rate from its CameraInfo arrivals, which are never held (its images are
        taken only while the worker is free, so their arrivals measure the node, not the camera)."""
        with self._lock:
            return self._next.rate_hz(camera)

    def note(self, camera: str, stamp_ns: int) -> None:
        """Called by the image callback for every image taken (the ingest thread)."""
        with self._lock:
            self._taken += 1
            self.gaps.note(camera, stamp_ns)

    def set_completed(self, age_s: float) -> float:
        """A camera set became complete `age_s` after its stamp (ROS time). Returns how long it has
        already waited: 0 for a set completed by images taken as they arrived (their ages teach the
        usual input delay), else — a set completed from the held images, at a release — its age
        beyond the usual input delay."""
        if self.backlog:
            return max(0.0, age_s - (self._input_delay_s or 0.0))
        if 0.0 <= age_s < 5.0:
            d = self._input_delay_s
            self._input_delay_s = age_s if d is None else 0.9 * d + 0.1 * age_s
        return 0.0

    @property
    def images_taken(self) -> int:
        return self._taken

    @property
    def period_s(self) -> Optional[float]:
        with self._lock:
            return self.gaps.period_s

    @property
    def sets_not_taken(self) -> int:
        with self._lock:
            return self.gaps.sets_not_taken

    def hold(self) -> None:
        self._free.clear()
        self.clock.hold()

    def release(self) -> None:
        held_s = self.clock.release()
        now = time.monotonic()
        with self._lock:
            period = self._next.period_s() or self.gaps.period_s
            plan = self._next.plan(now, period, self._max_wait_s(), held_since=now - held_s)
        self._deferred = plan
        self.releases_deferred += plan is not None
        self.backlog = plan is None
        self._free.set()

    def _wait_for_next_set(self, plan: tuple[float, float, frozenset[str]]) -> None:
        """A deferred release: wait (this thread) until the next set's infos came or the deadline;
        then take — fresh images as they arrive, or at the deadline what the readers hold."""
        since, deadline, cameras = plan
        ready = self._await_infos(lambda: self._next.ready(since, cameras), deadline)
        if self._free.is_set():           # (not held again meanwhile)
            self.backlog = not ready
        if self._deferred is plan:        # (a release meanwhile brought a plan of its own)
            self._deferred = None

    def _await_infos(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until `done()` (checked under the lock at each CameraInfo) — True — or until the
        deadline, a hold or the stop — False."""
        while not self._stop.is_set() and self._free.is_set():
            with self._lock:
                if done():
                    return True
            now = time.monotonic()
            if now >= deadline:
                return False
            self._infos.wait(deadline - now)
            self._infos.clear()
        return False

    def _spin(self) -> None:
        name_this_thread('occ_ingest')
        ok = self._rclpy.ok
        while not self._stop.is_set() and ok(context=self._context):
            if not self._free.wait(0.1):
                continue
            plan = self._deferred
            if plan is not None:
                self._wait_for_next_set(plan)
                continue
            try:
                if self.backlog:
                    # take what the readers held, each spin one message, until a spin takes nothing
                    before = self._taken
                    self._executor.spin_once(timeout_sec=0.0)
                    if self._taken == before:
                        self.backlog = False
                else:
                    self._executor.spin_once(timeout_sec=self.SPIN_S)
            except Exception as exc:
                if self._stop.is_set() or not ok(context=self._context):
                    return                               # shutting down
                self._log.error(f'camera ingest: {type(exc).__name__}: {exc}', throttle_duration_sec=5.0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._free.set()
        self._infos.set()                 # wakes a deferred release: the thread ends before the join does
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        try:
            self._executor.shutdown(timeout_sec=0.5)
        except Exception:
            pass
        self.node.destroy_node()
