"""Benchmark the BEV-pool geometry (index build) and the pool itself on the nuScenes-like rig.

    .venv/bin/python bench/bench_bev_pool.py                        # pano-tiny and pano-depth
    .venv/bin/python bench/bench_bev_pool.py --models lite --repeat 20 --json
    .venv/bin/python bench/bench_bev_pool.py --measure              # NUSCENES_POOL_NEED rows

Per model: the frustum size, kept points, padded slots of the bucketed gather, the time to build
the calibration-derived tables (`compute_bev_geometry`, with and without the fast-path tables)
and the pool time for the exportable gather path and the eager sparse fast path (median and
p90 over `--repeat` runs, batch 1, random softmaxed depth and context features).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch

from occ_ros import geometry as G
from occ_ros.core.config import DepthBins, ImageGeometry, ModelConfig
from occ_ros.model.bev_pool import required_capacities


def _times(fn: Callable[[], object], repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {'median_ms': round(statistics.median(ms), 2),
            'p90_ms': round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 2)}


def _config(name: str) -> ModelConfig:
    from occ_ros.model.builders import model_config
    return model_config(name)


def bench_model(cfg: ModelConfig, rig: G.Rig, repeat: int) -> dict:
    build = _times(lambda: G.compute_bev_geometry(cfg, rig, fast_path=False), max(3, repeat // 4))
    build_fast = _times(lambda: G.compute_bev_geometry(cfg, rig), max(3, repeat // 4))
    geo = G.compute_bev_geometry(cfg, rig)
    idx = geo.pool_index
    n, d, (fh, fw), c = cfg.num_cameras, cfg.depth.n, cfg.feature_hw, cfg.context_channels
    g = torch.Generator().manual_seed(0)
    depth = torch.randn(1, n, d, fh, fw, generator=g).softmax(2)
    feat = torch.randn(1, n, fh, fw, c, generator=g)
    with torch.inference_mode():
        gather = _times(lambda: idx.pool(depth, feat), repeat)
        fast = _times(lambda: idx.pool(depth, feat, fast=True), repeat)
        err = float((idx.pool(depth, feat) - idx.pool(depth, feat, fast=True)).abs().max())
    return {
        'model': cfg.name, 'depth_bins': d, 'feature_hw': [fh, fw], 'context_channels': c,
        'frustum_points': cfg.frustum_points(), 'kept_points': idx.num_points,
        'non_empty_cells': idx.num_cells, 'padded_slots': cfg.pool_bounds.total_slots,
        'pool_bounds': list(cfg.pool_bounds.capacities),
        'required_capacities': list(geo.required_capacities),
        'build_tables': _summary(build), 'build_tables_with_fast_path': _summary(build_fast),
        'pool_gather': _summary(gather), 'pool_fast_sparse': _summary(fast),
        'max_abs_diff_gather_vs_fast': err,
    }


def measure_table(rig: G.Rig) -> None:
    """Print NUSCENES_POOL_NEED rows (occ_ros/core/config.py) for the usual sizes."""
    sizes = [(96, 256), (112, 320), (128, 352), (160, 448), (192, 512), (192, 544), (224, 608),
             (256, 704), (320, 880), (384, 1056), (512, 1408)]
    for step in (2.0, 1.0, 0.5):
        for hw in sizes:
            cfg = ModelConfig(name='measure', depth=DepthBins(1.0, 45.0, step),
                              image=ImageGeometry(input_hw=hw))
            r = G.frustum_ranks(cfg, rig)
            cells = r.bev_hw[0] * r.bev_hw[1]
            cnt = np.bincount(r.ranks_bev, minlength=cells)
            nb = int(cnt.max() - 1).bit_length() + 1
            need = required_capacities(torch.from_numpy(r.ranks_bev), cells, nb)
            key = (cfg.depth.n,) + cfg.feature_hw
            print(f'    {key}: {tuple(need)},  # {len(r.ranks_bev):,} {int(cnt.max())}')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=['pano-tiny', 'pano-depth'])
    ap.add_argument('--repeat', type=int, default=10)
    ap.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    ap.add_argument('--json', action='store_true', help='print one JSON document')
    ap.add_argument('--measure', action='store_true', help='print the NUSCENES_POOL_NEED table')
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rig = G.nuscenes_rig()
    if args.measure:
        measure_table(rig)
        return 0
    results = [bench_model(_config(m), rig, args.repeat) for m in args.models]
    if args.json:
        print(json.dumps({'torch_threads': torch.get_num_threads(), 'results': results},
                         indent=2))
        return 0
    for r in results:
        print(f"{r['model']}: D={r['depth_bins']} feature {r['feature_hw']}, "
              f"{r['kept_points']:,} of {r['frustum_points']:,} points kept in "
              f"{r['non_empty_cells']:,} cells; {r['padded_slots']:,} padded slots")
        for key in ('build_tables', 'build_tables_with_fast_path', 'pool_gather',
                    'pool_fast_sparse'):
            s = r[key]
            print(f"  {key:<28} median {s['median_ms']:8.2f} ms   p90 {s['p90_ms']:8.2f} ms")
        print(f"  gather vs fast max |diff| {r['max_abs_diff_gather_vs_fast']:.2e}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
