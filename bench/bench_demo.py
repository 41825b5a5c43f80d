"""The demo's time to its report, on this machine as it is or on an emulated slow day.

    .venv/bin/python bench/bench_demo.py                       # this machine as it is, after set-up
    .venv/bin/python bench/bench_demo.py --steal 0.6           # a slow day: every core at 0.4 of its speed
    .venv/bin/python bench/bench_demo.py --cores 0.6           # fewer cores: 0.6 of a core's time in all
    .venv/bin/python bench/bench_demo.py --cores 0.72 --caches cold --runs 2 --json demo_slow.json

Runs `occ-ros demo` (a fresh bag each run) and reports when the report and pictures were written
(the demo's "report written" line), when it said "done" (after the node's exit) and when its process
exited, the phases the demo prints (the renderer's set-up done → first frame rendering, rendering
done → node ready, playing, scoring), the CPU time of the demo's processes (and its split, from the
demo's own CPU line: the rendering processes, the demo's process, the node), and the machine's fp32
2048² matmul rate (2 threads) measured in the same conditions just before and
just after — the figure that says what kind of day it was.

`--caches setup` (default): the state `scripts/setup.sh` leaves — `occ-ros prepare` is run first
(untimed; it reuses what exists), so the node's ONNX graph and the compiled kernels are there.
`--caches cold`: a machine where nothing ran before — the project's numba caches are deleted and
the node exports its graph into an empty engine directory, so their cost is in the figure.
`--caches warm`: leave everything as it is (an A/B against an older tree: copy this file there and
run it once untimed first).

Two ways to emulate a slow day (issue 18's "70-GFLOPS day" is a 2-thread matmul at ~70 GFLOPS:
choose the setting so that the printed rate is about that). Both need root; without them nothing
is restricted.

`--steal F`: every core slower. On each CPU a SCHED_FIFO process pinned to it takes F of every
10 ms and sleeps the rest, as a busy host takes time from a virtual machine's CPUs; every thread
of the demo, the matmul's included, gets the other 1 − F of each core. This is the slow day the
issue describes (the machine's speed varies between days; the old demo rendered "on one core,
the second core idle" while the matmul ran at 70 GFLOPS on two). F ≈ 0.6 reads ~60–80 GFLOPS
here. The spinners stop at exit.

`--cores C`: fewer cores. This process and everything it starts run in a CPU cgroup limited to C
cores' worth of time (`cpu.max` on cgroup v2, `cpu.cfs_quota_us` on v1; period 10 ms so that the
cap is smooth at the node's 12 Hz), the matmul included (C ≈ 0.6 reads ~60–70 GFLOPS here). Under
the cap a single thread still gets up to C of a core, but the cores together get only C; the
renderer then works in one process (`occ_ros.core.parallel.available_cores` reads the quota).
The cgroup is removed at exit.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
CGROUP_NAME = 'occ_ros_bench_demo'
PERIOD_US = 10_000
PHASES = {'rendering': re.compile(r'rendering [\d.]+ s of synthetic world'), 'ready': re.compile(r'node ready after'),
          'played': re.compile(r'played \d+ messages'), 'scoring': re.compile(r'scoring \d+ frames'),
          'written': re.compile(r'report written'), 'done': re.compile(r'^done$')}
LINE = re.compile(r'^\[demo\s+([\d.]+) s\] (.*)$')
SET_UP = re.compile(r'\[synth\] set up in ([\d.]+) s')     # the renderer's set-up, from the rendering line
CPU_SPLIT = re.compile(r'CPU: rendering processes ([\d.]+) s, this process ([\d.]+) s, node ([\d.]+) s')


class CpuLimit:
    """This process (and its future children) in a CPU cgroup capped at `cores` cores."""

    def __init__(self, cores: float) -> None:
        v2 = Path('/sys/fs/cgroup/cgroup.controllers').is_file()
        self.path = Path('/sys/fs/cgroup') / CGROUP_NAME if v2 else Path('/sys/fs/cgroup/cpu') / CGROUP_NAME
        self.root = self.path.parent
        self.path.mkdir(exist_ok=True)
        quota = int(round(cores * PERIOD_US))
        if v2:
            (self.path / 'cpu.max').write_text(f'{quota} {PERIOD_US}\n')
        else:
            (self.path / 'cpu.cfs_period_us').write_text(f'{PERIOD_US}\n')
            (self.path / 'cpu.cfs_quota_us').write_text(f'{quota}\n')
        (self.path / 'cgroup.procs').write_text(f'{os.getpid()}\n')

    def close(self) -> None:
        (self.root / 'cgroup.procs').write_text(f'{os.getpid()}\n')
        for _ in range(50):                        # children may take a moment to leave
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _steal_cpu(cpu: int, fraction: float, period_s: float) -> None:
    """Take `fraction` of every period of CPU `cpu` (SCHED_FIFO: nothing else runs meanwhile)."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    busy = fraction * period_s
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < busy:
            pass
        time.sleep(max(0.0, period_s - (time.perf_counter() - start)))


class CpuSteal:
    """One `_steal_cpu` process per CPU of this process's affinity, until `close()`."""

    def __init__(self, fraction: float, period_s: float = PERIOD_US / 1e6) -> None:
        import multiprocessing as mp
        if not 0.0 < fraction < 0.95:
            raise SystemExit(f'--steal must be in (0, 0.95) (the kernel keeps 5 % from real-time tasks), '
                             f'got {fraction}')
        ctx = mp.get_context('fork')
        self.procs = [ctx.Process(target=_steal_cpu, args=(cpu, fraction, period_s), daemon=True)
                      for cpu in sorted(os.sched_getaffinity(0))]
        for p in self.procs:
            p.start()
        time.sleep(0.5)
        dead = [p for p in self.procs if not p.is_alive()]
        if dead:
            self.close()
            raise SystemExit('--steal needs root (SCHED_FIFO): the spinners could not start')

    def close(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.join()


def clear_numba_cache() -> int:
    """Delete the compiled-kernel caches under occ_ros/ (what a fresh clone does not have)."""
    n = 0
    for f in list((ROOT / 'occ_ros').rglob('__pycache__/*.nb[ic]')):
        f.unlink()
        n += 1
    return n


def run_demo(out: Path, env: dict[str, str]) -> dict:
    """One `occ-ros demo` run: wall time, CPU of the children, the demo's phase times."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, '-m', 'occ_ros.apps.cli', 'demo', '--out', str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    phases: dict[str, float] = {}
    cpu_split: dict[str, float] = {}
    tail: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip('\n')
        tail = (tail + [line])[-40:]
        m = LINE.match(line.strip())
        set_up = SET_UP.search(line)
        split = CPU_SPLIT.search(line)
        if split:
            cpu_split = dict(zip(('rendering', 'demo', 'node'), (float(g) for g in split.groups())))
        if set_up and 'rendering' in phases:
            phases['first_frame'] = phases['rendering'] + float(set_up.group(1))
        if m:
            for name, pat in PHASES.items():
                if pat.search(m.group(2)) and name not in phases:
                    phases[name] = float(m.group(1))
            print(f'  {line.strip()}', flush=True)
    code = proc.wait()
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        print('\n'.join(tail), file=sys.stderr)
    report = json.loads((out / 'report.json').read_text()) if (out / 'report.json').is_file() else {}
    return {'exit_code': code, 'wall_s': wall, 'cpu_s': cpu, 'cpu_split_s': cpu_split, 'phases_s': phases,
            'frames_scored': report.get('matched'), 'outputs': report.get('outputs')}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cores', type=float, default=None, help='CPU time cap in cores (needs root)')
    ap.add_argument('--steal', type=float, default=None, metavar='F',
                    help='take F of every core with real-time spinners (needs root)')
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--out', type=Path, default=Path('/tmp/occ_ros_bench_demo'))
    ap.add_argument('--caches', choices=('setup', 'cold', 'warm'), default='setup',
                    help='setup: as scripts/setup.sh leaves them (default); cold: first-run work included; '
                         'warm: as they are (for an A/B against a tree without occ-ros prepare)')
    ap.add_argument('--json', type=Path, default=None)
    args = ap.parse_args(argv)

    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=os.environ.get('OCC_ROS_BENCH_DOMAIN', '87'), PYTHONUNBUFFERED='1')
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_DOMAIN_ID=env['ROS_DOMAIN_ID'])
    import torch

    from occ_ros.apps.machine import matmul_gflops
    torch.set_num_threads(2)
    if args.caches == 'setup':
        subprocess.run([sys.executable, '-m', 'occ_ros.apps.cli', 'prepare'], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    limit = CpuLimit(args.cores) if args.cores else None
    steal = CpuSteal(args.steal) if args.steal else None
    runs = []
    try:
        for i in range(args.runs):
            cleared = 0
            if args.caches == 'cold':
                cleared = clear_numba_cache()
                engines = args.out.parent / f'{args.out.name}_engines'
                shutil.rmtree(engines, ignore_errors=True)
                env['OCC_ROS_ENGINE_DIR'] = str(engines)
            rate0 = matmul_gflops()
            load0 = os.getloadavg()[0]
            print(f'run {i + 1}/{args.runs}: fp32 matmul {rate0:.0f} GFLOPS, load {load0:.1f}, caches '
                  f'{args.caches} ({cleared} numba cache files deleted)', flush=True)
            r = run_demo(args.out, env)
            r.update(gflops_before=rate0, gflops_after=matmul_gflops(), load_before=load0, cores=args.cores,
                     steal=args.steal, caches=args.caches)
            runs.append(r)
            ph = {k: r['phases_s'].get(k, float('nan')) for k in (*PHASES, 'first_frame')}
            split = r['cpu_split_s']
            cpu = (f'CPU {r["cpu_s"]:.1f} s (rendering {split["rendering"]:.1f}, demo {split["demo"]:.1f}, '
                   f'node {split["node"]:.1f})' if split else f'CPU {r["cpu_s"]:.1f} s')
            print(f'run {i + 1}: report and pictures written at {ph["written"]:.1f} s, done at {ph["done"]:.1f} s, '
                  f'process exited at {r["wall_s"]:.1f} s (code {r["exit_code"]}), {cpu}; '
                  f'first frame rendering at {ph["first_frame"]:.1f} s, node ready at {ph["ready"]:.1f} s, '
                  f'played at {ph["played"]:.1f} s, '
                  f'scoring from {ph["scoring"]:.1f} s '
                  f'({r["frames_scored"]} frames); matmul {r["gflops_before"]:.0f} → {r["gflops_after"]:.0f} GFLOPS',
                  flush=True)
    finally:
        if steal is not None:
            steal.close()
        if limit is not None:
            limit.close()
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0 if all(r['exit_code'] == 0 for r in runs) else 1


if __name__ == '__main__':
    sys.exit(main())
