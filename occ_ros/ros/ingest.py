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
- `release()` (the set is done): the held images are taken at once (`backlog` is true while that
  burst lasts) and ingest goes on as usual until the next hold.
- `clock` stands still while held: the synchroniser's camera timeouts and restart detection run
  on it, so a hold longer than `camera_timeout_s` does not declare every camera silent.
- Images never taken are counted from the gaps in each camera's stamps across a hold
  (`GapCounter`; an estimate, since the middleware does not report what it replaced).

No rclpy at import time: `IngestGate` imports it when built (the module is also used by tests
without a ROS graph for its clock and counter).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional


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
    """Per camera, the images published but never taken, from stamp gaps spanning a hold.

    `note(camera, stamp_ns, epoch)` for every image taken, `epoch` = the number of holds so far.
    Consecutive stamps within one epoch teach the camera's period (exponential average); a gap
    across a hold of n periods counts n − 1 images not taken. A stamp going back (a restarted
    driver, a looped bag) counts nothing and restarts the camera's count.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}        # camera → (stamp_ns, epoch)
        self._period: dict[str, float] = {}                # camera → period in ns
        self.not_taken: dict[str, int] = {}

    def note(self, camera: str, stamp_ns: int, epoch: int) -> int:
        last = self._last.get(camera)
        self._last[camera] = (stamp_ns, epoch)
        if last is None or stamp_ns <= last[0]:
            return 0
        dt = stamp_ns - last[0]
        period = self._period.get(camera)
        if last[1] == epoch:                               # no hold in between: learn the period
            if dt < 2_000_000_000:
                self._period[camera] = float(dt) if period is None else 0.8 * period + 0.2 * dt
            return 0
        if period is None or period <= 0:
            return 0
        missed = max(0, int(round(dt / period)) - 1)
        self.not_taken[camera] = self.not_taken.get(camera, 0) + missed
        return missed

    @property
    def period_s(self) -> Optional[float]:
        """The set period learned from the stamps: the slowest camera's (a set needs all)."""
        return max(self._period.values()) / 1e9 if self._period else None

    @property
    def sets_not_taken(self) -> int:
        """The sets that were never taken: the largest count of any camera (each set has one image
        of every camera; a camera that went silent meanwhile does not lower it)."""
        return max(self.not_taken.values(), default=0)


class IngestGate:
    """The camera subscriptions' node and the thread that spins it only while the worker is free.

    parent: the occupancy node (its name, namespace, context and logger). Subscriptions are made
    on `self.node`. `start()` starts the thread; `hold()` / `release()` from the worker;
    `close()` stops the thread and destroys the node (idempotent).
    """

    SPIN_S = 0.05

    def __init__(self, parent: Any) -> None:
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
        self.epoch = 0
        self.holds = 0
        self.backlog = False              # true while the images held by the last hold are taken
        self._taken = 0                   # images taken (counted by `note`)
        self._free = threading.Event()
        self._free.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, name='occupancy_ingest', daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def note(self, camera: str, stamp_ns: int) -> None:
        """Called by the image callback for every image taken (the ingest thread)."""
        with self._lock:
            self._taken += 1
            self.gaps.note(camera, stamp_ns, self.epoch)

    def hold(self) -> None:
        with self._lock:
            self.epoch += 1
            self.holds += 1
        self._free.clear()
        self.clock.hold()

    def release(self) -> None:
        self.clock.release()
        self.backlog = True
        self._free.set()

    def _spin(self) -> None:
        ok = self._rclpy.ok
        while not self._stop.is_set() and ok(context=self._context):
            if not self._free.wait(0.1):
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
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        try:
            self._executor.shutdown(timeout_sec=0.5)
        except Exception:
            pass
        self.node.destroy_node()
