"""Render the frames of a synthetic sequence on every core, in frame order.

`map_frames(seq, fn, indices, workers)` yields `fn(seq, i)` for every i of `indices`, in that
order, computed by `workers` processes. A frame depends only on its index (world, poses, boxes
and the sensor-grain offset are functions of i), so the result is the same, bit for bit, as the
serial loop, whatever the scheduling.

- Workers are forked from the calling process (the start method the trainer's frame cache uses
  too): they inherit the already built sequence (world, ground raster, per-camera tables — a few
  seconds of set-up) instead of rebuilding it. Where `fork` does not exist the frames are
  computed serially.
- At most `2 × workers` frames are in flight, so a slow consumer (the bag writer) bounds memory
  to a few frames, whatever the sequence length.
- `fn` runs in the worker: it should return only what the consumer needs (e.g. JPEG bytes
  rather than raw images and depth maps), since results cross a pipe.
- Each worker runs OpenCV single-threaded (`cv2.setNumThreads(1)`): parallelism is over frames.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar('T')
FrameFn = Callable[[Any, int], Any]

_STATE: dict[str, Any] = {}


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                        # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int) -> int:
    """`workers` ≥ 1 as given; 0 (or less) → every available core."""
    return int(workers) if workers >= 1 else available_cores()


def _init(seq: Any, fn: FrameFn) -> None:
    import cv2
    cv2.setNumThreads(1)
    _STATE['seq'] = seq
    _STATE['fn'] = fn


def _run(i: int) -> Any:
    return _STATE['fn'](_STATE['seq'], i)


def map_frames(seq: Any, fn: Callable[[Any, int], T], indices: Iterable[int], workers: int = 0) -> Iterator[T]:
    """`fn(seq, i)` for i in `indices`, in order, on `workers` processes (0 = every core).

    One worker (or no `fork` on this platform) computes in the calling process.
    """
    order = list(indices)
    n_workers = min(resolve_workers(workers), max(1, len(order)))
    if n_workers <= 1 or 'fork' not in mp.get_all_start_methods():
        for i in order:
            yield fn(seq, i)
        return
    ctx = mp.get_context('fork')
    pool = ctx.Pool(n_workers, initializer=_init, initargs=(seq, fn))
    try:
        pending: deque = deque()
        it = iter(order)
        for i in it:
            pending.append(pool.apply_async(_run, (i,)))
            if len(pending) >= 2 * n_workers:
                break
        while pending:
            result = pending.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.apply_async(_run, (nxt,)))
            yield result
        pool.close()
    finally:
        pool.terminate()
        pool.join()
