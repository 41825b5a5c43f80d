"""How many workers the renderer and the scorer start: the affinity mask, lowered to the CPU time
the process's control groups allow (occ_ros.core.parallel)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from occ_ros.core import parallel
from occ_ros.core.parallel import available_cores, cgroup_cpu_limit, ordered_map


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_cpu_max_and_the_tightest_ancestor(tmp_path: Path) -> None:
    """cgroup v2 `cpu.max` is "<quota> <period>" or "max <period>" (Linux
    Documentation/admin-guide/cgroup-v2.rst, "cpu.max"); a parent's limit binds its children."""
    proc = tmp_path / 'cgroup'
    _write(proc, '0::/user.slice/app.scope\n')
    root = tmp_path / 'fs'
    _write(root / 'cpu.max', 'max 100000\n')
    _write(root / 'user.slice' / 'cpu.max', '150000 100000\n')
    _write(root / 'user.slice' / 'app.scope' / 'cpu.max', 'max 100000\n')
    assert cgroup_cpu_limit(proc, root) == pytest.approx(1.5)
    _write(root / 'user.slice' / 'app.scope' / 'cpu.max', '50000 100000\n')
    assert cgroup_cpu_limit(proc, root) == pytest.approx(0.5)
    _write(root / 'user.slice' / 'cpu.max', 'max 100000\n')
    _write(root / 'user.slice' / 'app.scope' / 'cpu.max', 'max 100000\n')
    assert cgroup_cpu_limit(proc, root) is None


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    """cgroup v1 CFS bandwidth: `cpu.cfs_quota_us` / `cpu.cfs_period_us`, −1 = no limit (Linux
    Documentation/scheduler/sched-bwc.rst), under the mount of the `cpu` controller."""
    proc = tmp_path / 'cgroup'
    _write(proc, '4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n')
    root = tmp_path / 'fs'
    _write(root / 'cpu,cpuacct' / 'cpu.cfs_quota_us', '-1\n')
    _write(root / 'cpu,cpuacct' / 'cpu.cfs_period_us', '100000\n')
    d = root / 'cpu,cpuacct' / 'docker' / 'abc'
    _write(d / 'cpu.cfs_quota_us', '-1\n')
    _write(d / 'cpu.cfs_period_us', '100000\n')
    assert cgroup_cpu_limit(proc, root) is None
    _write(d / 'cpu.cfs_quota_us', '250000\n')
    assert cgroup_cpu_limit(proc, root) == pytest.approx(2.5)


def test_unreadable_or_malformed_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / 'missing', tmp_path) is None
    proc = tmp_path / 'cgroup'
    _write(proc, 'garbage\n0::/a\n')
    _write(tmp_path / 'fs' / 'a' / 'cpu.max', 'lots of\n')
    assert cgroup_cpu_limit(proc, tmp_path / 'fs') is None


def _writable_v1_cpu() -> Path | None:
    base = Path('/sys/fs/cgroup/cpu')
    return base if os.geteuid() == 0 and (base / 'cgroup.procs').is_file() and os.access(base, os.W_OK) else None


@pytest.mark.skipif(_writable_v1_cpu() is None, reason='needs root and a writable cgroup v1 cpu controller')
def test_a_process_in_a_half_core_cgroup_gets_one_worker() -> None:
    """The kernel's own view: a child started in a real cgroup capped at half a core (CFS quota
    5 ms per 10 ms) reads the limit and plans one worker, where the host has more cores."""
    base = _writable_v1_cpu()
    assert base is not None
    group = base / f'occ_ros_test_{uuid.uuid4().hex[:8]}'
    group.mkdir()
    try:
        (group / 'cpu.cfs_period_us').write_text('10000\n')
        (group / 'cpu.cfs_quota_us').write_text('5000\n')
        code = ('import os, sys\n'
                f'open("{group}/cgroup.procs", "w").write(str(os.getpid()))\n'
                'from occ_ros.core.parallel import available_cores, cgroup_cpu_limit, quota_threads\n'
                'print(cgroup_cpu_limit(), available_cores(), quota_threads())\n')
        out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, check=True)
        limit, cores, threads = out.stdout.split()
        assert float(limit) == pytest.approx(0.5)
        assert int(cores) == 1 and int(threads) == 1
    finally:
        group.rmdir()


def test_ordered_map_keeps_the_order_whatever_the_workers() -> None:
    items = list(range(23))
    assert list(ordered_map(lambda s, x: s * x, 3, items, workers=2)) == [3 * x for x in items]
    assert list(ordered_map(lambda s, x: s * x, 3, items, workers=1)) == [3 * x for x in items]
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


def test_backend_threads_follow_the_quota_only_when_there_is_one(monkeypatch) -> None:
    """threads=None: the runtime's default where nothing limits the CPU time; under a quota the
    cores it allows (ONNX Runtime and PyTorch size their pools by the cores they see)."""
    import torch

    from occ_ros.backends.factory import create_backend
    from occ_ros.model import build_model

    previous = torch.get_num_threads()
    model = build_model('lite').eval()
    try:
        monkeypatch.setattr(parallel, 'cgroup_cpu_limit', lambda *a, **k: None)
        assert parallel.quota_threads() is None
        torch.set_num_threads(2)
        create_backend('torch', model=model, device='cpu').close()
        assert torch.get_num_threads() == 2                          # untouched without a quota
        monkeypatch.setattr(parallel, 'cgroup_cpu_limit', lambda *a, **k: 0.7)
        assert parallel.quota_threads() == 1
        create_backend('torch', model=model, device='cpu').close()
        assert torch.get_num_threads() == 1
        create_backend('torch', model=model, device='cpu', threads=2).close()
        assert torch.get_num_threads() == 2                          # an explicit count wins
    finally:
        torch.set_num_threads(previous)


def _die_on_three(_state: object, x: int) -> int:
    if x == 3:
        os._exit(7)                          # a worker killed mid-task (as by a segfault)
    return x


def test_a_worker_that_dies_is_an_error_not_a_hang() -> None:
    """`multiprocessing.Pool` waits forever for the task of a worker that died (a segfaulting
    renderer hung the test suite); `ordered_map` raises `BrokenProcessPool`, the documented error of
    `concurrent.futures` for a worker terminated abruptly, and returns the results before it."""
    from concurrent.futures.process import BrokenProcessPool

    got: list[int] = []
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            for r in ordered_map(_die_on_three, None, range(8), workers=2):
                got.append(r)
        except BaseException as exc:         # noqa: BLE001 — the test inspects it
            outcome.append(exc)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), 'ordered_map hung after a worker died'
    assert len(outcome) == 1 and isinstance(outcome[0], BrokenProcessPool)
    assert got == list(range(len(got))) and len(got) <= 3


class _Finalized:
    """A reference cycle with a finalizer that records the process it ran in."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.me = self

    def __del__(self) -> None:
        with open(self.log, 'a') as f:
            f.write(f'{os.getpid()}\n')


def _collect_in_worker(_state: object, x: int) -> int:
    import gc
    gc.collect()
    return x


def test_forked_workers_never_finalize_the_callers_objects(tmp_path: Path) -> None:
    """Python's documentation (`gc.freeze`) for fork without exec: collect in the parent, freeze for
    the children. A garbage cycle the caller left before the map is finalized once, in the caller,
    not by a worker's collection (a worker once segfaulted finalizing a test session's DDS
    handles); a cycle the caller drops during the map is finalized in the caller too."""
    import gc

    log = tmp_path / 'finalized'
    gc.disable()                              # keep the cycle uncollected until the map
    try:
        _Finalized(log)
        alive = _Finalized(log)
        out = []
        for r in ordered_map(_collect_in_worker, None, range(6), workers=2):
            out.append(r)
            alive = None                      # noqa: F841 — dropped by the caller mid-map
    finally:
        gc.enable()
    gc.collect()
    assert out == list(range(6))
    pids = log.read_text().split()
    assert pids == [str(os.getpid())] * 2
