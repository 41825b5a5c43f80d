"""A/B of the renderer's face loop: compiled (`bag/raster.py`) against the Python loop it replaced.

    .venv/bin/python bench/bench_raster.py                  # demo world, 900×1600, 6 frame sets
    .venv/bin/python bench/bench_raster.py --sets 12 --reps 9

Both paths live in the same tree (`render.rasterise(..., reference=True)` is the Python loop with
`cv2.fillConvexPoly` per face) and give the same bits, so the A/B runs in one process, interleaved
(reference, compiled, reference, …) so that both see the same machine. Reported, as median **CPU**
seconds of this process (`time.process_time`, steadier than wall time on a shared machine):

- per `rasterise` call on real frames of the demo world (seed 4242, six 900×1600 cameras), for the
  colour images and for the ground truth's visibility rasters (smaller, one per camera);
- per six-camera frame set as the bag writer makes it (colour images and ground truth; the ground
  truth's visibility uses the same `rasterise`), with either face loop;

beside the machine's fp32 matmul rate before and after and the load average (compare ratios, not
seconds from different days or loads).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sets', type=int, default=6, help='frame sets per path')
    ap.add_argument('--reps', type=int, default=5, help='repetitions of the per-call timing')
    ap.add_argument('--seed', type=int, default=4242)
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    import occ_ros.bag.groundtruth as groundtruth
    import occ_ros.bag.render as render
    from occ_ros.apps.machine import matmul_gflops
    from occ_ros.bag.raster import warm_up
    from occ_ros.bag.synth import SyntheticSequence
    from occ_ros.geometry import nuscenes_rig

    warm_up()
    load_before = os.getloadavg()
    gflops_before = matmul_gflops()
    hw = (900, 1600)
    seq = SyntheticSequence(args.seed, 6.0, 12.0, nuscenes_rig(hw), hw)
    assert seq.gt_maker is not None
    frames = np.linspace(1, len(seq) - 1, args.sets).round().astype(int).tolist()

    # ---- per call -------------------------------------------------------------------------------
    calls: dict[str, list] = {'colour': [], 'visibility': []}
    for i in frames[:3]:
        t = seq.time_of(i)
        pose = seq.world.ego_pose(t)
        boxes = seq.world.boxes_at(t, pose[:2, 3], render.FAR + 10.0)
        for pre in seq.renderer.cameras:
            calls['colour'].append((pre, boxes, np.linalg.inv(pose @ pre.T_ce)))
        for pre, *_ in seq.gt_maker._vis:
            calls['visibility'].append((pre, boxes, np.linalg.inv(pose @ pre.T_ce)))
    per_call: dict[str, dict[str, float]] = {}
    for kind, cs in calls.items():
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.reps):
            for ref in (True, False):
                a = time.process_time()
                for c in cs:
                    render.rasterise(*c, reference=ref)
                cpu[ref].append((time.process_time() - a) / len(cs))
        ref_ms, cur_ms = 1e3 * float(np.median(cpu[True])), 1e3 * float(np.median(cpu[False]))
        per_call[kind] = {'calls': len(cs), 'cpu_ms_reference': round(ref_ms, 3),
                          'cpu_ms_compiled': round(cur_ms, 3), 'speed_up': round(ref_ms / cur_ms, 2)}

    # ---- per frame set (colour + ground truth), as the bag writer renders: BLAS on one thread ---
    compiled, reference = render.rasterise, lambda *a: compiled(*a, reference=True)

    def frame_set(i: int, ref: bool) -> float:
        render.rasterise = groundtruth.rasterise = reference if ref else compiled
        try:
            a = time.process_time()
            seq.frame(i)
            return time.process_time() - a
        finally:
            render.rasterise = groundtruth.rasterise = compiled

    sets: dict[bool, list[float]] = {True: [], False: []}
    with threadpool_limits(1, user_api='blas'):
        frame_set(0, True)
        frame_set(0, False)
        for i in frames:
            for ref in (True, False):
                sets[ref].append(frame_set(i, ref))
            sys.stderr.write(f'\rset {len(sets[False])}/{len(frames)} ')
    sys.stderr.write('\n')
    ref_s, cur_s = float(np.median(sets[True])), float(np.median(sets[False]))
    res = {'per_call': per_call, 'sets': len(frames), 'cpu_s_per_set_reference': round(ref_s, 3),
           'cpu_s_per_set_compiled': round(cur_s, 3), 'set_cpu_saved': f'{100 * (1 - cur_s / ref_s):.1f} %',
           'machine_matmul_gflops_before': round(gflops_before, 1),
           'machine_matmul_gflops_after': round(matmul_gflops(), 1),
           'loadavg_1min_before_after': [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(res, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
