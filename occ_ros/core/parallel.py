"""Ordered parallel map over processes: `ordered_map(fn, state, items, workers)` yields
`fn(state, item)` for every item, in the items' order, computed by `workers` processes.

Serves the synthetic renderer (frames of a sequence, `bag.writer`) and the ray-casting scorer
(frames of an evaluation, `metrics.evaluate`). Results are those of the serial loop whatever the
scheduling, as long as `fn` depends only on its arguments.

- start_method 'fork' (the renderer's, and the trainer's frame cache's): workers inherit `state`
  as built in the caller (a synthetic world holds closures and takes seconds to build; forking
  shares it for free). 'spawn': `state`, `fn` and the items are pickled to fresh interpreters
  (about a second of start-up per worker). Where the method does not exist, the map runs serially.
- Forked workers leave OpenCV's thread settings alone: `cv2.setNumThreads` in a child forked from
  a process whose OpenCV pool had already run waits forever for the parent's pool threads (seen:
  a test session that had resized images before writing a bag); OpenCV's own calls in the child
  work.
- At most `2 × workers` items are in flight, so a slow consumer bounds memory to a few results.
- `fn` should return only what the consumer needs: results cross a pipe.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator, TypeVar

S = TypeVar('S')
T = TypeVar('T')
R = TypeVar('R')

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


def _init(state: Any, fn: Callable[[Any, Any], Any]) -> None:
    _STATE['state'] = state
    _STATE['fn'] = fn


def _run(item: Any) -> Any:
    return _STATE['fn'](_STATE['state'], item)


def ordered_map(fn: Callable[[S, T], R], state: S, items: Iterable[T], workers: int = 0,
                start_method: str = 'fork') -> Iterator[R]:
    """`fn(state, item)` for each of `items` (consumed lazily), in order, on `workers` processes
    (0 = every core). One worker, or a start method this platform lacks, computes in the caller."""
    n_workers = resolve_workers(workers)
    if n_workers <= 1 or start_method not in mp.get_all_start_methods():
        for item in items:
            yield fn(state, item)
        return
    ctx = mp.get_context(start_method)
    pool = ctx.Pool(n_workers, initializer=_init, initargs=(state, fn))
    try:
        pending: deque = deque()
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * n_workers:
                try:
                    pending.append(pool.apply_async(_run, (next(it),)))
                except StopIteration:
                    exhausted = True
            if not pending:
                break
            yield pending.popleft().get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()
