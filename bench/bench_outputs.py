"""What each result topic costs to build, per frame, on synthetic-world ground truth.

    .venv/bin/python bench/bench_outputs.py [--frames 6] [--seed 7]

Times (median over the frames, each built `--repeat` times) the builders the node runs per set:
~/cloud obstacles only (default) and with the ground classes, ~/voxels (20k-cube cap), ~/instances,
~/occupancy_grid, ~/panoptic; prints voxel counts and each time as a ratio of the ~/voxels time,
beside the machine's fp32 matmul rate measured in the same run. No DDS: messages are built only.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

from occ_ros.apps.machine import matmul_gflops
from occ_ros.bag.synth import SyntheticSequence
from occ_ros.core.classes import GROUND_CLASSES
from occ_ros.core.config import GridSpec
from occ_ros.ros import publish as pub
from occ_ros.ros.cloud import cloud_points, pointcloud2_msg


def _time(fn: Callable[[], Any], repeat: int) -> float:
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(best)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frames', type=int, default=6)
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--repeat', type=int, default=5)
    args = ap.parse_args()
    gflops = matmul_gflops()
    grid = GridSpec()
    seq = SyntheticSequence(args.seed, seconds=args.frames / 2.0, rate=2.0, image_hw=(90, 160))
    ground = sorted(GROUND_CLASSES)
    obstacles = pub.default_obstacle_classes(ground)
    voxels = pub.VoxelMarkerBuilder(grid, 'base_footprint', 20000)
    instances = pub.InstanceMarkerBuilder(grid, 'base_footprint')
    rows: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {'cloud points (obstacles)': [], 'cloud points (with ground)': []}
    for i in range(min(args.frames, len(seq))):
        occ = seq.frame(i).gt
        assert occ is not None
        builders: dict[str, Callable[[], Any]] = {
            '~/cloud, obstacles': lambda: pointcloud2_msg(cloud_points(occ, grid, ground), 0, 'f'),
            '~/cloud, with ground': lambda: pointcloud2_msg(cloud_points(occ, grid), 0, 'f'),
            '~/voxels (20k cap)': lambda: voxels.build(occ, 0),
            '~/instances': lambda: instances.build(occ, 0),
            '~/occupancy_grid': lambda: pub.occupancy_grid_msg(
                pub.occupancy_grid_values(occ, grid, (-0.2, 2.2), obstacles), grid, 0, 'f'),
            '~/panoptic': lambda: pub.panoptic_msg(occ, grid, 0, 'f'),
        }
        for name, fn in builders.items():
            rows.setdefault(name, []).append(_time(fn, args.repeat))
        counts['cloud points (obstacles)'].append(len(cloud_points(occ, grid, ground)))
        counts['cloud points (with ground)'].append(len(cloud_points(occ, grid)))
    ref = statistics.median(rows['~/voxels (20k cap)'])
    print(f'machine: fp32 matmul {gflops:.0f} GFLOPS (same run); {len(rows["~/panoptic"])} frames, '
          f'seed {args.seed}')
    for name, n in counts.items():
        print(f'{name}: median {statistics.median(n):.0f}')
    print('| topic | median ms | × ~/voxels |')
    print('|---|---|---|')
    for name, ms in rows.items():
        med = statistics.median(ms)
        print(f'| {name} | {med:.2f} | {med / ref:.2f} |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
