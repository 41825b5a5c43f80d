"""Per-frame pool tables of a moving car: what a frame with per-camera capture-time poses costs.

    .venv/bin/python bench/bench_frame_tables.py                       # lite, pano-tiny, pano-longterm8f
    .venv/bin/python bench/bench_frame_tables.py --models pano-4d --frames 20 --json out.json

A drive at 20 m/s in a 0.6 rad/s turn with the nuScenes firing spread (42 ms): every frame has new
per-camera poses. Per model: the calibration builder `compute_bev_geometry(cfg, rig, ego2global)`
(numpy, the cached rig path) and `FrameTableBuilder.build(ego2global)` (torch on `--device`, what
the pipeline runs per frame), with and without the eager fast-path (CSR) tables, median and p90
over `--frames` frames — and the machine's fp32 matmul rate measured in the same run, since this
machine's speed varies about 3× between days (compare ratios, not milliseconds across runs).
`budget` is the torch build as a fraction of the network's ideal time on this machine (its GFLOP
per frame, counted by torch's flop counter on random weights, at the measured matmul rate); the
README states the budget: at most 10 %.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from occ_ros.apps.machine import matmul_gflops, network_gflop
from occ_ros.backends.deploy import DeployModule, example_inputs
from occ_ros.core.config import NUSCENES_CAMERAS, NUSCENES_CAPTURE_OFFSETS_S
from occ_ros.geometry import compute_bev_geometry, nuscenes_rig, rigid_transform
from occ_ros.geometry.frame_tables import FrameTableBuilder
from occ_ros.model.builders import build_from_config, model_config

SPREAD_S = tuple(NUSCENES_CAPTURE_OFFSETS_S[c] for c in NUSCENES_CAMERAS)    # view order


def drive(t: float, speed: float = 20.0, yaw_rate: float = 0.6) -> np.ndarray:
    yaw = yaw_rate * t
    x, y = speed / yaw_rate * math.sin(yaw), speed / yaw_rate * (1 - math.cos(yaw))
    c, s = math.cos(yaw), math.sin(yaw)
    return rigid_transform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), (x, y, 0.0))


def _stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {'median_ms': statistics.median(ms), 'p90_ms': ms[min(len(ms) - 1, int(0.9 * len(ms)))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--models', nargs='+', default=['lite', 'pano-tiny', 'pano-longterm8f'])
    ap.add_argument('--frames', type=int, default=8)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rig = nuscenes_rig((900, 1600))
    gflops = matmul_gflops(device=args.device)
    report: dict[str, object] = {'matmul_gflops': gflops, 'device': args.device, 'threads': args.threads}
    print(f'machine: fp32 matmul {gflops:.0f} GFLOPS ({args.threads} threads, {args.device})')
    print(f'{"model":16s} {"points":>8s} {"numpy+csr":>10s} {"torch+csr":>10s} {"torch":>8s} {"ratio":>6s} '
          f'{"GFLOP":>6s} {"budget":>7s}')
    for name in args.models:
        cfg = model_config(name)
        builders = {True: FrameTableBuilder(cfg, rig, args.device, fast_path=True),
                    False: FrameTableBuilder(cfg, rig, args.device, fast_path=False)}
        times: dict[str, list[float]] = {'numpy_csr': [], 'torch_csr': [], 'torch': []}
        for i in range(args.frames + 1):
            e2g = np.stack([drive(0.5 * i + dt) for dt in SPREAD_S])
            t0 = time.perf_counter()
            compute_bev_geometry(cfg, rig, e2g)
            t1 = time.perf_counter()
            builders[True].build(e2g)
            t2 = time.perf_counter()
            geo = builders[False].build(e2g)
            if args.device.startswith('cuda'):
                torch.cuda.synchronize()
            t3 = time.perf_counter()
            if i:                                        # the first frame warms up
                times['numpy_csr'].append((t1 - t0) * 1e3)
                times['torch_csr'].append((t2 - t1) * 1e3)
                times['torch'].append((t3 - t2) * 1e3)
        row: dict[str, object] = {k: _stats(v) for k, v in times.items()}
        net = DeployModule(build_from_config(cfg).float(), 'fp32', 'warp').eval()    # as measured before the lift
        gflop = network_gflop(net.run, example_inputs(cfg, temporal_mode='warp'))
        del net
        med = {k: statistics.median(v) for k, v in times.items()}
        ideal_ms = gflop / gflops * 1e3
        row.update(frustum_points=geo.num_frustum_points, network_gflop=gflop, network_ideal_ms=ideal_ms,
                   budget_fraction=med['torch'] / ideal_ms, numpy_over_torch=med['numpy_csr'] / med['torch_csr'])
        report[name] = row
        print(f'{name:16s} {geo.num_frustum_points:8d} {med["numpy_csr"]:8.1f}ms {med["torch_csr"]:8.1f}ms '
              f'{med["torch"]:6.1f}ms {med["numpy_csr"] / med["torch_csr"]:5.1f}x {gflop:6.0f} '
              f'{100 * med["torch"] / ideal_ms:6.1f}%')
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == '__main__':
    main()
