"""mIoU of the shipped `lite` on distorted bags with and without rectification, frame for frame.

    .venv/bin/python bench/bench_distortion_miou.py --bags pb.bag [pb2.bag …] [--modes raw none]
                                                    [--step 1] [--backend onnxruntime] [--threads 2]

Every ground-truth frame of each bag (every `--step`-th) is converted from the bag's own
CameraInfo and CompressedImage messages by the node's conversion (`camera_info_to_intrinsics`
with each `rectification` mode, `frame_from_image`) and run through the same pipeline, so each
mode sees exactly the same frames — unlike `occ-ros eval --bag`, whose node drops sets by timing.
mIoU with the camera mask (the replay's protocol), per bag and pooled. A pinhole bag of the same
seed gives the undistorted reference (its D is zero: every mode is the same there).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from occ_ros.apps.machine import matmul_gflops
from occ_ros.bag.reader import BagReader
from occ_ros.core.config import RECTIFICATION_MODES
from occ_ros.core.frames import FrameSet
from occ_ros.geometry import load_rig
from occ_ros.metrics.miou import SemanticIoU
from occ_ros.pipeline import OccupancyPipeline
from occ_ros.ros import convert as cv


def _messages(bag: Path, cams: tuple[str, ...]) -> tuple[dict[int, Any], dict[tuple[str, int], Any], dict[str, Any]]:
    with BagReader(bag) as r:
        gt = r.ground_truth()
        topics = [f'/{c}/image_raw/compressed' for c in cams] + [f'/{c}/camera_info' for c in cams]
        images: dict[tuple[str, int], Any] = {}
        infos: dict[str, Any] = {}
        for raw, msg in r.messages(topics):
            cam = raw.topic.split('/')[1]
            if raw.topic.endswith('camera_info'):
                infos.setdefault(cam, msg)
            else:
                images[(cam, cv.stamp_to_ns(msg.header.stamp))] = msg
    return gt, images, infos


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bags', type=Path, nargs='+', required=True)
    ap.add_argument('--modes', nargs='+', choices=RECTIFICATION_MODES, default=['raw', 'none'])
    ap.add_argument('--step', type=int, default=1, help='score every step-th ground-truth frame')
    ap.add_argument('--backend', default='onnxruntime')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    gflops = matmul_gflops()
    t0 = time.monotonic()
    pooled = {m: SemanticIoU() for m in args.modes}
    rows = []
    for bag in args.bags:
        rig = load_rig(bag / 'rig.yaml')
        pipe = OccupancyPipeline.from_params('lite', rig=rig, backend=args.backend, threads=args.threads)
        gt, images, infos = _messages(bag, rig.names)
        per = {m: SemanticIoU() for m in args.modes}
        stamps = sorted(gt)[::max(1, args.step)]
        for mode in args.modes:
            intr = {c: cv.camera_info_to_intrinsics(infos[c], c, mode) for c in rig.names}
            for st in stamps:
                fs = FrameSet(st, tuple(cv.frame_from_image(c, images[(c, st)], intr[c], pipe.model_cfg.image)
                                        for c in rig.names))
                pred = pipe.run(fs).occupancy.semantics
                for acc in (per[mode], pooled[mode]):
                    acc.update(pred, gt[st].semantics, gt[st].mask_camera)
        pipe.close()
        model = infos[rig.names[0]].distortion_model
        d0 = [round(float(v), 4) for v in infos[rig.names[0]].d]
        rows.append({'bag': bag.name, 'frames': len(stamps), 'lens': f'{model} {d0}',
                     **{m: round(per[m].compute().miou, 2) for m in args.modes}})
    out = {'rows': rows, 'pooled': {m: round(pooled[m].compute().miou, 2) for m in args.modes},
           'matmul_gflops': round(gflops, 1), 'seconds': round(time.monotonic() - t0, 1)}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"machine: fp32 matmul {out['matmul_gflops']} GFLOPS; lite on {args.backend}; {out['seconds']} s")
    for r in rows:
        print(f"{r['bag']}: {r['frames']} frames, {r['lens']}: " + ', '.join(f'{m} {r[m]}' for m in args.modes))
    print('pooled mIoU: ' + ', '.join(f'{m} {v}' for m, v in out['pooled'].items()))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
