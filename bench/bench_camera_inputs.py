"""What the JPEG decode path does to an official-style model's inputs and to the shipped `lite`'s
labels: full decode, reduced decode as the node does it now (the reduction folded into the resize,
the calibrated K kept), and the old reduced path (K scaled to the decoded image, its own resize).

    .venv/bin/python bench/bench_camera_inputs.py [--frames 4] [--seed 4242]

Prints the first camera's DepthNet camera vector (head) for each path and, per frame, the share of
voxels whose label equals the full-decode label. No DDS: messages are built and converted in-process.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from occ_ros.bag.synth import SyntheticSequence
from occ_ros.core.frames import FrameSet
from occ_ros.pipeline import OccupancyPipeline
from occ_ros.ros import convert as cv

SRC_HW = (900, 1600)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frames', type=int, default=4)
    ap.add_argument('--seed', type=int, default=4242)
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    seq = SyntheticSequence(args.seed, seconds=args.frames / 2.0, rate=2.0, image_hw=SRC_HW, ground_truth=False)
    rig = seq.rig
    lite = OccupancyPipeline.from_params('lite', rig=rig, backend='torch', threads=2)
    infos = [cv.camera_info_to_intrinsics(cv.camera_info_msg(c.K, c.image_hw, 0, c.name)) for c in rig]
    rows = []
    cam_vecs: dict[str, list[float]] = {}
    t0 = time.monotonic()
    for i in range(len(seq)):
        f = seq.frame(i)
        jpegs = [cv.rgb_to_compressed_msg(v.image, f.stamp_ns, c.name, 'jpeg', 90) for c, v in zip(rig, f.views)]

        def frames(reduced: bool) -> FrameSet:
            return FrameSet(f.stamp_ns, tuple(cv.frame_from_image(c.name, m, info, lite.model_cfg.image, reduced)
                                              for c, m, info in zip(rig, jpegs, infos)))
        full, reduced = frames(False), frames(True)
        # the old path: K scaled to the decoded size and the decoded size taken as the source
        old = FrameSet(f.stamp_ns, tuple(dataclasses.replace(
            fr, K=np.diag([fr.image.shape[1] / c.image_hw[1], fr.image.shape[0] / c.image_hw[0], 1.0]) @ fr.K,
            calib_hw=None) for fr, c in zip(reduced.frames, rig)))
        labels = {}
        for name, fs in (('full', full), ('reduced', reduced), ('reduced_old', old)):
            if i == 0:
                inputs, _ = lite.network_inputs(fs)
                cam_vecs[name] = [round(float(v), 4) for v in inputs['cam_vec'][0, 0, :10]]
            labels[name] = lite.run(fs).occupancy.semantics
        rows.append({'frame': i, 'reduced_agree': float((labels['reduced'] == labels['full']).mean()),
                     'reduced_old_agree': float((labels['reduced_old'] == labels['full']).mean())})
    lite.close()
    out = {'seed': args.seed, 'frames': rows, 'cam_vec_head_cam0': cam_vecs,
           'mean_reduced_agree': float(np.mean([r['reduced_agree'] for r in rows])),
           'mean_reduced_old_agree': float(np.mean([r['reduced_old_agree'] for r in rows])),
           'seconds': round(time.monotonic() - t0, 1)}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in cam_vecs.items():
            print(f'{k:12s} cam_vec[:10] of {rig.cameras[0].name}: {v}')
        for r in rows:
            print(f"frame {r['frame']}: labels = full decode  reduced (now) {100 * r['reduced_agree']:.2f} %   "
                  f"reduced (old path) {100 * r['reduced_old_agree']:.2f} %")
        print(f"mean: now {100 * out['mean_reduced_agree']:.2f} %, old {100 * out['mean_reduced_old_agree']:.2f} %")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
