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
- Forked workers never run the caller's finalizers: the caller's garbage is collected before the
  fork and the rest frozen for the children (`gc.freeze`, as Python's documentation advises for
  fork without exec). A worker that dies is a `BrokenProcessPool` in the caller, not a hang
  (`concurrent.futures`, not `multiprocessing.Pool`, whose lost tasks are waited for forever).
- `fn` should return only what the consumer needs: results cross a pipe.
"""
from __future__ import annotations

import gc
import math
import multiprocessing as mp
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

S = TypeVar('S')
T = TypeVar('T')
R = TypeVar('R')

_STATE: dict[str, Any] = {}


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask (where the OS has one), lowered to the
    CPU time its control groups allow (`cgroup_cpu_limit`, rounded up) — a container started with
    `--cpus=1.5` gets 2 workers, one capped at half a core gets 1, not one per host core."""
    return _cores_within(cgroup_cpu_limit())


def _cores_within(limit: Optional[float]) -> int:
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                        # pragma: no cover (not Linux)
        cores = max(1, os.cpu_count() or 1)
    return cores if limit is None else max(1, min(cores, math.ceil(limit - 1e-9)))


def quota_threads() -> Optional[int]:
    """Threads for a compute pool when the process's control groups limit its CPU time, else None
    (no limit: the runtime's own default stands). ONNX Runtime and PyTorch size their pools by
    the cores they see, not by the quota: in a container started with `--cpus=2` on a 64-core host
    they would start 64 threads (spinning, for ONNX Runtime) for 2 cores' worth of time."""
    limit = cgroup_cpu_limit()
    return None if limit is None else _cores_within(limit)


def cgroup_cpu_limit(proc_cgroup: Path = Path('/proc/self/cgroup'),
                     root: Path = Path('/sys/fs/cgroup')) -> Optional[float]:
    """The CPU time this process's control groups allow, in cores (quota / period), or None when
    unlimited or unknown. The tightest limit on the way from the process's group up to the root
    counts (a parent's limit binds its children). cgroup v2: `cpu.max` ("max 100000" or
    "<quota> <period>") under the unified hierarchy; v1: `cpu.cfs_quota_us` (−1 = none) and
    `cpu.cfs_period_us` under the `cpu` controller's mount (Linux's cgroup-v1/v2 documentation).
    Anything unreadable or malformed counts as no limit."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(':', 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == '':                     # v2: "0::/path"
            mounts = [root, root / 'unified']
            limits += [_v2_limit(m, path) for m in mounts]
        elif 'cpu' in controllers.split(','):     # v1: "N:cpu,cpuacct:/path"
            mounts = list(dict.fromkeys([root / controllers, root / 'cpu', root / 'cpu,cpuacct']))
            limits += [_v1_limit(m, path) for m in mounts]
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def _ancestors(mount: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip('/').split('/') if p and p != '..']
    return [mount.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def _v2_limit(mount: Path, path: str) -> Optional[float]:
    best: Optional[float] = None
    for d in _ancestors(mount, path):
        try:
            quota, period = (d / 'cpu.max').read_text().split()[:2]
            cores = None if quota == 'max' else int(quota) / int(period)
        except (OSError, ValueError):
            continue
        if cores is not None and cores > 0:
            best = cores if best is None else min(best, cores)
    return best


def _v1_limit(mount: Path, path: str) -> Optional[float]:
    best: Optional[float] = None
    for d in _ancestors(mount, path):
        try:
            quota = int((d / 'cpu.cfs_quota_us').read_text())
            period = int((d / 'cpu.cfs_period_us').read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            best = quota / period if best is None else min(best, quota / period)
    return best


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
    (0 = every core). One worker, or a start method this platform lacks, computes in the caller.
    A worker that dies (a signal, `os._exit`) raises `BrokenProcessPool` here, never a hang; an
    exception in `fn` is raised here as it was raised there."""
    n_workers = resolve_workers(workers)
    if n_workers <= 1 or start_method not in mp.get_all_start_methods():
        for item in items:
            yield fn(state, item)
        return
    ctx = mp.get_context(start_method)
    pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init, initargs=(state, fn))
    # the first submits fork the workers (all at the first on Python ≥ 3.11, one per submit before):
    # the caller's garbage is collected now and what is left frozen until the first batch is out,
    # so a child's collector never finalizes the caller's objects (native handles of libraries
    # whose threads a fork does not copy — DDS participants of a test session — segfaulted in a
    # worker's collection)
    frozen = start_method == 'fork'
    if frozen:
        gc.collect()
        gc.freeze()
    try:
        pending: deque[Future] = deque()
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * n_workers:
                try:
                    pending.append(pool.submit(_run, next(it)))
                except StopIteration:
                    exhausted = True
            if frozen:
                gc.unfreeze()
                frozen = False
            if not pending:
                break
            yield pending.popleft().result()
    finally:
        if frozen:
            gc.unfreeze()
        pool.shutdown(wait=True, cancel_futures=True)
