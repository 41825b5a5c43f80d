"""The approximate-time matchers behind `CameraSetSynchronizer` (`sync.py`): which queued messages form a set.

Matching (message_filters' ApproximateTime semantics, queue-per-input): every input keeps its
last `queue_size` messages by stamp. When a message arrives it is matched with one message from
each other *live* camera such that all stamps lie within `slop` of each other (max − min <= slop),
preferring the smallest spread, then the stamps closest to the new one. Matched messages leave
the queues; so does every queued message at or before the newest stamp of an emitted set (they
could only form older sets, and sets are emitted in time order). When message_filters is
importable (`matcher='auto'`), its ApproximateTimeSynchronizer does the matching over the live
inputs (rebuilt when the live set changes); otherwise `ApproximateTimeMatcher` does. The
search here is over windows, not the Cartesian product: O(N·Q) candidate windows per arrival.

Both matchers answer the same calls (add, rematch, prune_upto, clear, pending, evicted); the
synchroniser owns liveness, health and what is emitted, and calls them under its lock.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

NS = 1_000_000_000

Match = dict[int, tuple[int, Any]]     # input index → (stamp_ns, item)


class ApproximateTimeMatcher:
    """Per-input bounded queues {stamp: item} and the approximate-time match (see module doc)."""

    def __init__(self, n_inputs: int, queue_size: int, slop_ns: int) -> None:
        self.queues: list[dict[int, Any]] = [{} for _ in range(n_inputs)]
        self.queue_size = queue_size
        self.slop_ns = slop_ns
        self.evicted = [0] * n_inputs          # dropped by the queue bound before matching

    def clear(self) -> None:
        for q in self.queues:
            q.clear()

    def pending(self) -> int:
        return sum(len(q) for q in self.queues)

    def prune_upto(self, stamp_ns: int) -> int:
        """Drop queued items with stamp <= stamp_ns; returns how many."""
        n = 0
        for q in self.queues:
            old = [s for s in q if s <= stamp_ns]
            for s in old:
                del q[s]
            n += len(old)
        return n

    def add(self, index: int, stamp_ns: int, item: Any, active: Sequence[int]) -> Optional[Match]:
        """Queue the item; return the match it completes over the `active` inputs, if any."""
        q = self.queues[index]
        q[stamp_ns] = item
        while len(q) > self.queue_size:
            del q[min(q)]
            self.evicted[index] += 1
        if stamp_ns not in q or index not in active:
            return None
        return self._search(index, stamp_ns, active)

    def rematch(self, active: Sequence[int]) -> Optional[Match]:
        """The newest set already queued over `active` (after the live set shrank), if any."""
        pivots = sorted(((s, j) for j in active for s in self.queues[j]), reverse=True)
        for s, j in pivots:
            m = self._search(j, s, active)
            if m is not None:
                return m
        return None

    def _search(self, index: int, t: int, active: Sequence[int]) -> Optional[Match]:
        """Best set over `active` containing queued message (index, t); removes it from the queues."""
        slop = self.slop_ns
        others = [j for j in active if j != index]
        cands: dict[int, list[int]] = {}
        for j in others:
            near = sorted(s for s in self.queues[j] if abs(s - t) <= slop)
            if not near:
                return None
            cands[j] = near
        # Every valid set has its minimum stamp m in [t - slop, t]; trying each candidate
        # minimum as the window start finds it. Within a window pick the stamp closest to t.
        starts = sorted({t} | {s for near in cands.values() for s in near if s <= t})
        best: Optional[tuple[tuple[int, int], dict[int, int]]] = None
        for lo in starts:
            hi = lo + slop
            if hi < t:
                continue
            pick: dict[int, int] = {index: t}
            for j, near in cands.items():
                inside = [s for s in near if lo <= s <= hi]
                if not inside:
                    break
                pick[j] = min(inside, key=lambda s: (abs(s - t), s))
            else:
                vals = list(pick.values())
                score = (max(vals) - min(vals), sum(abs(v - t) for v in vals))
                if best is None or score < best[0]:
                    best = (score, pick)
        if best is None:
            return None
        return {j: (s, self.queues[j].pop(s)) for j, s in best[1].items()}


class _Stamped:
    """What message_filters sees: `header.stamp` with `.nanoseconds` (an rclpy Time)."""

    __slots__ = ('header', 'item', 'stamp_ns')

    def __init__(self, stamp: Any, stamp_ns: int, item: Any) -> None:
        self.header = type('H', (), {})()
        self.header.stamp = stamp
        self.stamp_ns = stamp_ns
        self.item = item


class MessageFiltersMatcher:
    """message_filters.ApproximateTimeSynchronizer over the active inputs (rebuilt when they change)."""

    def __init__(self, n_inputs: int, queue_size: int, slop_ns: int, mf: Any = None,
                 time_cls: Any = None) -> None:
        if mf is None:
            import importlib
            mf = importlib.import_module('message_filters')
        if time_cls is None:
            from rclpy.time import Time
            time_cls = Time
        self._mf = mf
        self._Time = time_cls
        self.n = n_inputs
        self.queue_size = queue_size
        self.slop_ns = slop_ns
        self.evicted = [0] * n_inputs          # not observable inside message_filters
        self._active: tuple[int, ...] = ()
        self._inputs: dict[int, Any] = {}
        self._sync: Any = None
        self._out: Optional[tuple] = None

    def _collect(self, *msgs: Any) -> None:    # runs under message_filters' lock: no work, no raise
        self._out = msgs

    def _rebuild(self, active: Sequence[int]) -> None:
        self._active = tuple(sorted(active))
        self._inputs = {i: self._mf.SimpleFilter() for i in self._active}
        self._sync = self._mf.ApproximateTimeSynchronizer(
            [self._inputs[i] for i in self._active], self.queue_size, self.slop_ns / NS)
        self._sync.registerCallback(self._collect)

    def clear(self) -> None:
        if self._active:
            self._rebuild(self._active)

    def pending(self) -> int:
        queues = getattr(self._sync, 'queues', None) or []
        return sum(len(q) for q in queues)

    def prune_upto(self, stamp_ns: int) -> int:
        return 0                                 # message_filters bounds its own queues

    def rematch(self, active: Sequence[int]) -> Optional[Match]:
        return None                              # its queues are rebuilt on the next arrival

    def add(self, index: int, stamp_ns: int, item: Any, active: Sequence[int]) -> Optional[Match]:
        if tuple(sorted(active)) != self._active:
            self._rebuild(active)
        if index not in self._inputs:
            return None
        self._out = None
        self._inputs[index].signalMessage(_Stamped(self._Time(nanoseconds=stamp_ns), stamp_ns, item))
        out, self._out = self._out, None
        if out is None:
            return None
        return {i: (m.stamp_ns, m.item) for i, m in zip(self._active, out)}


def message_filters_available() -> bool:
    try:
        import message_filters  # noqa: F401
        return hasattr(message_filters, 'ApproximateTimeSynchronizer')
    except Exception:
        return False
