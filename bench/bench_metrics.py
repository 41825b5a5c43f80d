"""CPU time per frame of the Occ3D metrics: mIoU update, RayIoU and RayPQ, with 1 and 8 origins.

Usage: .venv/bin/python bench/bench_metrics.py [--runs 5] [--origins 1 8] [--seed 0] [--json]

The frame is synthetic but structured like an Occ3D-nuScenes sample on the configured grid
(200 × 200 × 16 by default): ground classes in bands (road, sidewalk, terrain), building and
vegetation rows of random heights, ~40 things (cars, trucks, buses, pedestrians, cyclists,
barriers, cones) with instance ids, and a camera mask. The prediction is the ground truth
degraded the way a network errs: some objects shifted by a voxel, two cars merged into one
id, one car missed, 5 % of occupied voxels relabelled, instance ids permuted. Origins are
spread along the ego path (x from −30 to 30 m), as key-frames of a scene would be.

Timed per frame (median of `--runs`, after one warm-up):
    miou      SemanticIoU.update (confusion matrix, camera mask)
    cast      RayCaster.cast of prediction and GT together (the shared ray casting)
    rayiou    RayIoU.update (cast + counting)
    raypq     RayPQ.update (cast + segment matching)
    both      score_pairs-style: one cast feeding RayIoU and RayPQ
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import numpy as np

from occ_ros.core.classes import FREE, OCC_INDEX
from occ_ros.core.config import GridSpec
from occ_ros.metrics import RayCaster, RayIoU, RayPQ, SemanticIoU
from occ_ros.metrics.raycast import DEFAULT_LIDAR_ORIGIN

# (class, box size in voxels x, y, z, count)
_THINGS = (('car', (11, 5, 4), 18), ('truck', (18, 6, 8), 3), ('bus', (28, 7, 9), 1),
           ('pedestrian', (2, 2, 4), 8), ('bicycle', (4, 2, 3), 3), ('motorcycle', (5, 2, 3), 2),
           ('barrier', (2, 6, 3), 4), ('traffic_cone', (1, 1, 2), 5))


def make_frame(grid: GridSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """GT semantics/instances/camera mask and a degraded prediction, all grid-shaped."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = grid.shape
    cy = ny // 2
    sem = np.full(grid.shape, FREE, dtype=np.uint8)
    inst = np.zeros(grid.shape, dtype=np.uint16)
    road = max(1, ny // 12)                                  # half-width of the road in cells
    walk = road + max(1, ny // 40)
    sem[:, :, 0:2] = OCC_INDEX['terrain']
    sem[:, cy - walk: cy + walk, 0:2] = OCC_INDEX['sidewalk']
    sem[:, cy - road: cy + road, 0:2] = OCC_INDEX['driveable_surface']
    for side in (-1, 1):                                     # building / vegetation rows
        x = 0
        while x < nx:
            w = int(rng.integers(8, 30))
            h = int(rng.integers(3, nz - 2))
            y0 = cy + side * (walk + int(rng.integers(2, 10)))
            depth = int(rng.integers(6, 25))
            ys = slice(min(y0, y0 + side * depth), max(y0, y0 + side * depth))
            cls = OCC_INDEX['manmade'] if rng.random() < 0.7 else OCC_INDEX['vegetation']
            sem[x:x + w, ys, 2:2 + h] = cls
            x += w + int(rng.integers(0, 6))
    next_id = 1
    boxes = []
    for name, (bx, by, bz), count in _THINGS:
        for _ in range(count):
            if name in ('pedestrian', 'barrier', 'traffic_cone'):
                y0 = cy + int(rng.choice([-1, 1])) * int(rng.integers(road, walk + 1)) - by // 2
            else:
                y0 = cy + int(rng.integers(-road, road - by))
            x0 = int(rng.integers(0, nx - bx))
            c = OCC_INDEX[name]
            sem[x0:x0 + bx, y0:y0 + by, 2:2 + bz] = c
            inst[x0:x0 + bx, y0:y0 + by, 2:2 + bz] = next_id
            boxes.append((next_id, c, x0, y0, bx, by, bz))
            next_id += 1
    inst[~np.isin(sem, [OCC_INDEX[n] for n, *_ in _THINGS])] = 0   # overwritten boxes, stuff
    mask = np.ones(grid.shape, dtype=bool)
    mask[:, :, nz - 3:] = False                                  # the cameras see little up there
    mask &= rng.random(grid.shape) > 0.1

    pred = sem.copy()
    pinst = inst.copy()
    occupied = np.flatnonzero(sem.reshape(-1) != FREE)
    flip = rng.choice(occupied, size=occupied.size // 20, replace=False)
    pred.reshape(-1)[flip] = rng.integers(0, FREE, size=flip.size)
    cars = [b for b in boxes if b[1] == OCC_INDEX['car']]
    for (i, c, x0, y0, bx, by, bz) in cars[:5]:                  # shifted by one voxel
        box = (slice(x0, x0 + bx), slice(y0, y0 + by), slice(2, 2 + bz))
        pred[box] = np.where(pred[box] == c, FREE, pred[box])
        pinst[box] = 0
        moved = (slice(x0 + 1, x0 + 1 + bx), slice(y0, y0 + by), slice(2, 2 + bz))
        pred[moved] = c
        pinst[moved] = i
    i_miss, c_miss, x0, y0, bx, by, bz = cars[5]
    pred[x0:x0 + bx, y0:y0 + by, 2:2 + bz] = FREE                # a missed car
    pinst[pinst == i_miss] = 0
    pinst[pinst == cars[7][0]] = cars[6][0]                      # two cars merged into one id
    perm = np.concatenate([[0], rng.permutation(np.arange(1, next_id + 1))]).astype(np.uint16)
    pinst = perm[pinst]
    pinst[~np.isin(pred, [OCC_INDEX[n] for n, *_ in _THINGS])] = 0
    return {'gt': sem, 'gt_inst': inst, 'mask': mask, 'pred': pred, 'pred_inst': pinst}


def origins_along_path(n: int) -> np.ndarray:
    if n == 1:
        return np.asarray([DEFAULT_LIDAR_ORIGIN])
    xs = np.linspace(-30.0, 30.0, n)
    return np.stack([xs, 0.05 * xs, np.full(n, DEFAULT_LIDAR_ORIGIN[2])], axis=1)


def timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    fn()                                                          # warm-up
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return {'median_ms': 1e3 * statistics.median(t), 'min_ms': 1e3 * min(t), 'max_ms': 1e3 * max(t)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--origins', type=int, nargs='+', default=[1, 8])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', action='store_true', help='print JSON instead of a table')
    args = ap.parse_args()
    grid = GridSpec()
    f = make_frame(grid, args.seed)
    caster = RayCaster(grid)
    results: dict[str, dict[str, float]] = {}
    sem = SemanticIoU(grid)
    results['miou'] = timed(lambda: sem.update(f['pred'], f['gt'], f['mask']), args.runs)
    values: dict[str, float] = {}
    for n in args.origins:
        o = origins_along_path(n)
        ri, pq = RayIoU(grid, caster=caster), RayPQ(grid, caster=caster)
        stack = np.stack([f['pred'], f['gt']])
        results[f'cast_{n}'] = timed(lambda: caster.cast(stack, o), args.runs)
        results[f'rayiou_{n}'] = timed(lambda: ri.update(f['pred'], f['gt'], o), args.runs)
        results[f'raypq_{n}'] = timed(
            lambda: pq.update(f['pred'], f['pred_inst'], f['gt'], f['gt_inst'], o), args.runs)

        def both() -> None:
            h = caster.cast(stack, o)
            ri.update_hits(h[0], h[1])
            pq.update_hits(h[0], h[1], f['pred_inst'], f['gt_inst'])
        results[f'both_{n}'] = timed(both, args.runs)
        values[f'rayiou_{n}'] = ri.compute().rayiou
        values[f'raypq_{n}'] = pq.compute().raypq
    values['miou'] = sem.compute().miou
    if args.json:
        print(json.dumps({'timings': results, 'scores': values}, indent=1))
        return
    print(f'grid {grid.shape}, {caster.num_rays} rays per origin, {args.runs} runs (median, min–max) ms/frame')
    for k, r in results.items():
        print(f'  {k:<10} {r["median_ms"]:9.1f}   ({r["min_ms"]:.1f} – {r["max_ms"]:.1f})')
    print('  scores of the degraded prediction: ' + ', '.join(f'{k} {v:.2f}' for k, v in values.items()))


if __name__ == '__main__':
    main()
