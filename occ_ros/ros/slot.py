"""The latest-only slot between the synchroniser and the worker (plain Python, no ROS)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional


class LatestSlot:
    """A one-item hand-off between the callbacks and the worker: `put` replaces a waiting item.

    put(item) → True when it replaced (dropped) an item nobody had taken yet. get(timeout) →
    the item or None (timeout or closed). Memory is bounded by construction: one waiting item.

    max_wait_s (None = no limit) makes the worker latency-first: an item that has already waited
    longer than `max_wait_s` when the worker comes for it is *stale*. With periodic input a fresh
    one is due within one input period (estimated from the put intervals), so `get` waits for it;
    the stale item is then replaced and counted in `stale`. Should nothing arrive within
    `STALE_GRACE` periods of the stale item's arrival (the stream paused or ended), the stale item
    is returned after all (`late`): the last set of a stream is never lost. So with processing
    slower than the input, the worker starts every set within `max_wait_s` of its arrival and an
    output's age is ≈ input delay + processing; the price is idle time until the next set.

    Counters: puts = taken + dropped (replaced while the worker was busy) + stale + waiting.
    `last_wait_s`: how long the item returned by the last `get` had waited.
    """

    STALE_GRACE = 1.5             # × input period: how long a fresher set is waited for
    PAUSE_S = 2.0                 # put intervals longer than this are pauses, not the period

    def __init__(self, max_wait_s: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._has = False
        self._put_t: Optional[float] = None
        self._closed = False
        self._stale_wait = False
        self._clock = clock
        self.max_wait_s = max_wait_s
        self.period_s: Optional[float] = None       # EMA of the put intervals
        self.puts = 0
        self.dropped = 0
        self.stale = 0
        self.late = 0
        self.taken = 0
        self.last_wait_s = 0.0

    def put(self, item: Any, waited_s: float = 0.0, period_s: Optional[float] = None) -> bool:
        """waited_s: how long the item has already waited before this put (a camera set completed
        from images the ingest held back: `occ_ros.ros.ingest`); it counts towards `max_wait_s`.
        period_s: the input period when the caller knows it (from stamps) — put intervals do not
        measure it when the input was held back between puts."""
        with self._cond:
            now = self._clock()
            if period_s is not None and period_s > 0:
                self.period_s = period_s
            elif self._put_t is not None and 0 < now - self._put_t <= self.PAUSE_S:
                dt = now - self._put_t
                self.period_s = dt if self.period_s is None else 0.8 * self.period_s + 0.2 * dt
            replaced = self._has
            if replaced:
                if self._stale_wait:
                    self.stale += 1
                else:
                    self.dropped += 1
            self._item, self._has, self._put_t = item, True, now - max(0.0, waited_s)
            self.puts += 1
            self._cond.notify()
            return replaced

    def get(self, timeout: Optional[float] = None) -> Any:
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = self._clock()
                wake: Optional[float] = None
                if self._has:
                    assert self._put_t is not None
                    waited = now - self._put_t
                    fresh = self.max_wait_s is None or waited <= self.max_wait_s
                    due = None if (fresh or self.period_s is None) else \
                        self._put_t + self.STALE_GRACE * self.period_s
                    if due is None or now >= due:
                        item, self._item, self._has = self._item, None, False
                        self.taken += 1
                        self.late += int(not fresh)
                        self.last_wait_s = waited
                        return item
                    wake = due                              # stale: wait for a fresher one
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wake = deadline if wake is None else min(wake, deadline)
                self._stale_wait = self._has
                self._cond.wait(None if wake is None else max(0.0, wake - now))
                self._stale_wait = False


    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        return int(self._has)
