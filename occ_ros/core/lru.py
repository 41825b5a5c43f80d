"""A bounded, thread-safe least-recently-used map: what the CameraInfo memo (ros/convert.py) and
the remap-table cache (geometry/rectify.py) keep their recent entries in."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, Iterator, Optional, TypeVar

V = TypeVar('V')


class BoundedLRU(Generic[V]):
    """At most `max_entries` values; `get` marks a value recently used, `put` evicts the least
    recently used beyond the bound. Every call holds the map's lock only for the dict operation."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(1, int(max_entries))
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Optional[V]:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def values(self) -> Iterator[V]:
        with self._lock:
            return iter(list(self._items.values()))
