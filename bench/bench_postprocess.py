"""CPU time of the panoptic post-processing for one full frame (decode + assignment + table).

Usage: .venv/bin/python bench/bench_postprocess.py [--runs 7] [--centres 0 50 500] [--thing-frac 0.08]
       [--logits] [--threads N] [--worst-case] [--json]

The scene is synthetic but realistic in size: the configured grid (200 × 200 × 16 by default),
`--thing-frac` of the voxels in thing classes laid out as boxes (cars, trucks, pedestrians, …),
the rest ground / manmade / vegetation / free; the heatmap holds exactly N separated peaks above
the threshold. `--worst-case` makes every centre and every thing voxel a car (one class: the
distance blocks are largest). Prints the median (and min/max) over `--runs` timed runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from occ_ros.core.classes import DET_CLASSES, FREE, NUM_CLASSES, OCC_INDEX
from occ_ros.core.config import GridSpec
from occ_ros.postprocess import PanopticPostprocessor, PostprocessConfig

# (occupancy class, heatmap channel, box size in voxels x, y, z, relative frequency)
_THINGS = (
    ('car', (11, 5, 4), 0.55), ('truck', (18, 6, 8), 0.12), ('pedestrian', (2, 2, 5), 0.15),
    ('bus', (28, 7, 9), 0.04), ('bicycle', (4, 2, 3), 0.05), ('motorcycle', (5, 2, 3), 0.04),
    ('trailer', (25, 6, 9), 0.03), ('construction_vehicle', (15, 7, 8), 0.02),
)


def make_scene(grid: GridSpec, n_centres: int, thing_frac: float, worst_case: bool, seed: int = 0):
    """Labels (1, nx, ny, nz) int64 and heads (heatmap, reg, height) with `n_centres` peaks."""
    g = torch.Generator().manual_seed(seed)
    nx, ny, nz = grid.shape
    sem = torch.full(grid.shape, FREE, dtype=torch.int64)
    sem[:, :, 0] = OCC_INDEX['driveable_surface']
    sem[:, : ny // 5, 0:6] = OCC_INDEX['manmade']
    sem[:, -ny // 6:, 0:4] = OCC_INDEX['vegetation']
    names = [t[0] for t in _THINGS]
    probs = torch.tensor([t[2] for t in _THINGS])
    target = int(thing_frac * sem.numel())
    placed = 0
    while placed < target:
        k = 0 if worst_case else int(torch.multinomial(probs, 1, generator=g))
        name, (bx, by, bz), _ = _THINGS[k]
        x0 = int(torch.randint(0, nx - bx, (1,), generator=g))
        y0 = int(torch.randint(0, ny - by, (1,), generator=g))
        box = sem[x0:x0 + bx, y0:y0 + by, 1:1 + bz]
        placed += int((box != OCC_INDEX[name]).sum())
        box.fill_(OCC_INDEX[name])
    hm = torch.full((1, len(DET_CLASSES), ny, nx), -6.0)
    reg = torch.rand(1, 2, ny, nx, generator=g)
    height = torch.rand(1, 1, ny, nx, generator=g) * 2.0
    cells = torch.randperm((ny // 3) * (nx // 3), generator=g)[:n_centres]     # 3-cell spacing: no NMS merges
    rows, cols = (cells // (nx // 3)) * 3 + 1, (cells % (nx // 3)) * 3 + 1
    chans = torch.zeros(n_centres, dtype=torch.int64) if worst_case else torch.tensor(
        [DET_CLASSES.index(names[int(i)]) for i in torch.multinomial(probs, n_centres, True, generator=g)]
        if n_centres else [], dtype=torch.int64)
    hm[0, chans, rows, cols] = 0.5 + torch.rand(n_centres, generator=g) * 3
    return sem[None], hm, reg, height


def run(runs: int, centres: list[int], thing_frac: float, logits: bool, worst_case: bool) -> list[dict]:
    cfg = PostprocessConfig()
    pp = PanopticPostprocessor(cfg)
    results = []
    for n in centres:
        sem, hm, reg, height = make_scene(cfg.grid, n, thing_frac, worst_case)
        occ = (torch.nn.functional.one_hot(sem, NUM_CLASSES).float() * 4 - 2) if logits else sem
        out = pp(occ, hm, reg, height)[0]                       # warm-up + sanity
        assert len(out.table) == n, (len(out.table), n)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            pp(occ, hm, reg, height)
            times.append((time.perf_counter() - t0) * 1e3)
        things = torch.tensor([OCC_INDEX[t[0]] for t in _THINGS])
        results.append(dict(centres=n, thing_voxels=int(torch.isin(out.semantics.long(), things).sum()),
            assigned_voxels=int((out.instances != 0).sum()), input='logits' if logits else 'labels',
            worst_case=worst_case, median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
            runs=runs, threads=torch.get_num_threads()))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=7)
    ap.add_argument('--centres', type=int, nargs='+', default=[0, 50, 500])
    ap.add_argument('--thing-frac', type=float, default=0.08)
    ap.add_argument('--logits', action='store_true', help='feed (1, nx, ny, nz, 18) logits instead of labels')
    ap.add_argument('--worst-case', action='store_true', help='all centres and thing voxels are cars')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0 = torch default)')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args.runs, args.centres, args.thing_frac, args.logits, args.worst_case)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f'panoptic post-processing, CPU, {torch.get_num_threads()} thread(s), input={res[0]["input"]}'
          f'{", worst case" if args.worst_case else ""}')
    print(f'{"centres":>8} {"thing vox":>10} {"assigned":>9} {"median ms":>10} {"min":>7} {"max":>7}')
    for r in res:
        print(f'{r["centres"]:>8} {r["thing_voxels"]:>10} {r["assigned_voxels"]:>9} {r["median_ms"]:>10.1f} '
              f'{r["min_ms"]:>7.1f} {r["max_ms"]:>7.1f}')


if __name__ == '__main__':
    main()
