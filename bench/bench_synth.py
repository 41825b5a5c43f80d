"""Benchmark: render a synthetic sequence (six cameras + Occ3D ground truth) and optionally write it.

    .venv/bin/python bench/bench_synth.py                       # 10 s × 12 Hz × 6 cams × 900×1600
    .venv/bin/python bench/bench_synth.py --frames 24           # a subset, extrapolated to the sequence
    .venv/bin/python bench/bench_synth.py --write /tmp/b --compressed   # + JPEG encoding and bag writing

Reports per-frame time split into rendering (6 cameras) and ground truth (one process), per-image
time, the (extrapolated) time for the whole sequence, with --write the bag's frames per second on
--workers processes, and the machine's fp32 matmul rate before and after (compare ratios, not
seconds from different days).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--rate', type=float, default=12.0)
    ap.add_argument('--size', default='900x1600')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--frames', type=int, default=0, help='render only this many frames (evenly spread) and '
                                                          'extrapolate; 0 = all')
    ap.add_argument('--write', default='', help='also write a bag here (replaced if it exists)')
    ap.add_argument('--compressed', action='store_true')
    ap.add_argument('--workers', type=int, default=0, help='rendering processes of --write (0 = every core)')
    ap.add_argument('--json', default='', help='write the figures to this JSON file')
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split('x'))

    from occ_ros.apps.machine import matmul_gflops
    from occ_ros.bag.render import FAR
    from occ_ros.bag.synth import SyntheticSequence

    gflops_before = matmul_gflops()

    t0 = time.perf_counter()
    seq = SyntheticSequence(args.seed, args.seconds, args.rate, image_hw=(h, w))
    t_init = time.perf_counter() - t0
    n = len(seq)
    gt_maker = seq.gt_maker
    assert gt_maker is not None
    idx = list(range(n)) if args.frames <= 0 or args.frames >= n else \
        sorted(set(np.linspace(0, n - 1, args.frames).round().astype(int).tolist()))
    render_s, gt_s = [], []
    for k, i in enumerate(idx):
        t = seq.time_of(i)
        pose = seq.world.ego_pose(t)
        a = time.perf_counter()
        boxes = seq.world.boxes_at(t, pose[:2, 3], FAR + 10.0)
        for c in range(len(seq.renderer.cameras)):
            seq.renderer.render_camera(c, pose, boxes, frame_index=i)
        b = time.perf_counter()
        gt_maker(t, seq.stamps[i], boxes)
        c_ = time.perf_counter()
        render_s.append(b - a)
        gt_s.append(c_ - b)
        sys.stderr.write(f'\rframe {k + 1}/{len(idx)}  render {b - a:.3f} s  gt {c_ - b:.3f} s ')
    sys.stderr.write('\n')
    per_frame = float(np.mean(render_s) + np.mean(gt_s))
    cams = len(seq.renderer.cameras)
    res = {
        'size': [h, w], 'frames_in_sequence': n, 'frames_measured': len(idx), 'cameras': cams,
        'init_s': round(t_init, 2),
        'render_per_frame_s': round(float(np.mean(render_s)), 3),
        'gt_per_frame_s': round(float(np.mean(gt_s)), 3),
        'per_image_incl_gt_s': round(per_frame / cams, 3),
        'sequence_s' + ('' if len(idx) == n else '_extrapolated'): round(per_frame * n + t_init, 1),
        'budget_s': 180.0,
    }
    res['machine_matmul_gflops_before'] = round(gflops_before, 1)
    if args.write:
        from occ_ros.bag.writer import write_synthetic_bag
        out = Path(args.write)
        if out.exists():
            shutil.rmtree(out)
        a = time.perf_counter()
        s = write_synthetic_bag(out, args.seconds, args.seed, rate=args.rate, image_hw=(h, w),
                                compressed=args.compressed, workers=args.workers)
        res['bag_write_total_s'] = round(time.perf_counter() - a, 1)
        res['bag_write_workers'] = args.workers
        res['bag_frames_per_s'] = round(s.frames / res['bag_write_total_s'], 2)
        res['bag_bytes'] = sum(f.stat().st_size for f in out.iterdir())
        res['bag_messages'] = s.messages
    res['machine_matmul_gflops_after'] = round(matmul_gflops(), 1)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
