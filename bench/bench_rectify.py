"""What rectifying raw distorted images costs the node: remap tables once per calibration, one
cv2.remap per image per frame — against the frame time of the shipped `lite` model, with the
machine's fp32 matmul rate measured in the same run.

    .venv/bin/python bench/bench_rectify.py [--frames 10] [--backend onnxruntime] [--threads 2] [--json]

Six 900×1600 cameras of the synthetic world, one rendered frame, sent through the node's own
conversion (`occ_ros.ros.convert.frame_from_image`: real sensor_msgs Image / CompressedImage and
CameraInfo) with rectification 'raw' (a distorted CameraInfo: remapped) and 'none' (the same
images, not remapped); the difference is the rectification. Paths: raw rgb8 remapped at full
resolution (reduced_decode off), raw rgb8 reduced by 4 × 4 block means first (the default for lite),
and JPEG decoded at 1/4 (the remap runs on the 225×400 image). With and without are measured in
turns; so are the whole frames (conversion + `pipeline.run`: preprocess, network, post-processing)
with and without, whose ratio includes what a smaller image saves in the resize.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

from occ_ros.apps.machine import matmul_gflops
from occ_ros.bag.synth import SyntheticSequence
from occ_ros.core.frames import FrameSet
from occ_ros.geometry.rectify import RemapCache
from occ_ros.pipeline import OccupancyPipeline
from occ_ros.ros import convert as cv

SRC_HW = (900, 1600)
LENSES = {'plumb_bob': [-0.21, 0.06, 6e-4, -4e-4, -0.008], 'equidistant': [0.03, -0.01, 0.004, -0.001]}


def _median_ms(fn: Callable[[], Any], n: int) -> float:
    return _interleaved_ms([fn], n)[0]


def _interleaved_ms(fns: list[Callable[[], Any]], n: int) -> list[float]:
    """Median ms of each function, the functions taking turns (so load changes hit all alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(ts) for ts in times]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frames', type=int, default=10, help='repetitions per measurement (median)')
    ap.add_argument('--backend', default='onnxruntime')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    import cv2
    cv2.setNumThreads(args.threads)
    gflops_before = matmul_gflops()
    seq = SyntheticSequence(7, seconds=0.5, rate=2.0, image_hw=SRC_HW, ground_truth=False)
    rig = seq.rig
    frame = seq.frame(0)
    raw_msgs = [cv.rgb_to_image_msg(v.image, frame.stamp_ns, c.name) for c, v in zip(rig, frame.views)]
    jpeg_msgs = [cv.rgb_to_compressed_msg(v.image, frame.stamp_ns, c.name, 'jpeg', 90)
                 for c, v in zip(rig, frame.views)]
    lite = OccupancyPipeline.from_params('lite', rig=rig, backend=args.backend, threads=args.threads)
    geom = lite.model_cfg.image
    out: dict[str, Any] = {'cameras': len(rig), 'image_hw': list(SRC_HW), 'backend': lite.backend_kind,
                           'threads': args.threads, 'repetitions': args.frames, 'lenses': {}}
    for lens, D in LENSES.items():
        infos = [cv.camera_info_msg(c.K, c.image_hw, 0, c.name, D=D, distortion_model=lens) for c in rig]
        rect = [cv.camera_info_to_intrinsics(i, c.name, 'raw') for i, c in zip(infos, rig)]
        plain = [cv.camera_info_to_intrinsics(i, c.name, 'none') for i, c in zip(infos, rig)]
        cache = RemapCache()
        t0 = time.perf_counter()
        for i in rect:
            assert i.model is not None
            cache.tables(i.model, SRC_HW)
        build_ms = (time.perf_counter() - t0) * 1e3
        row: dict[str, Any] = {'tables_build_ms_6_cameras': round(build_ms, 1),
                               'tables_mb_6_cameras': round(cache.nbytes / 1e6, 1)}
        for path, msgs, reduced in (('raw_rgb8_full', raw_msgs, False), ('raw_rgb8_reduced', raw_msgs, True),
                                    ('jpeg_reduced', jpeg_msgs, True)):
            def convert(intrs: list[Any], msgs: list[Any] = msgs, reduced: bool = reduced) -> FrameSet:
                one = cv.frame_from_image
                return FrameSet(frame.stamp_ns, tuple(one(c.name, m, i, geom, reduced, remap_cache=cache)
                                                      for c, m, i in zip(rig, msgs, intrs)))
            convert(rect)                                    # builds the tables of this resolution
            with_ms, without_ms = _interleaved_ms([lambda: convert(rect), lambda: convert(plain)], args.frames)
            frame_with, frame_without = _interleaved_ms([lambda: lite.run(convert(rect)),
                                                         lambda: lite.run(convert(plain))], max(3, args.frames // 2))
            row[path] = {'convert_ms_with_rectification': round(with_ms, 1),
                         'convert_ms_without': round(without_ms, 1), 'rectification_ms': round(with_ms - without_ms, 1),
                         'frame_ms_with': round(frame_with, 1), 'frame_ms_without': round(frame_without, 1),
                         'rectification_share_of_frame': round((with_ms - without_ms) / frame_with, 3),
                         'frame_time_ratio': round(frame_with / frame_without, 3)}
        out['lenses'][lens] = row
    lite.close()
    out['matmul_gflops_before'] = round(gflops_before, 1)
    out['matmul_gflops_after'] = round(matmul_gflops(), 1)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"machine: fp32 matmul {out['matmul_gflops_before']} GFLOPS before, {out['matmul_gflops_after']} after; "
          f"{len(rig)} cameras {SRC_HW[1]}×{SRC_HW[0]}, lite on {out['backend']}, {args.threads} threads, "
          f'median of {args.frames}')
    for lens, row in out['lenses'].items():
        print(f"{lens}: remap tables for 6 cameras built in {row['tables_build_ms_6_cameras']} ms "
              f"({row['tables_mb_6_cameras']} MB, once per calibration)")
        for path in ('raw_rgb8_full', 'raw_rgb8_reduced', 'jpeg_reduced'):
            r = row[path]
            print(f"  {path:16s}: rectification {r['rectification_ms']:6.1f} ms per frame "
                  f"(conversion {r['convert_ms_without']} → {r['convert_ms_with_rectification']} ms) = "
                  f"{100 * r['rectification_share_of_frame']:.1f} % of the frame; frame (conversion + "
                  f"pipeline.run) {r['frame_ms_without']} → {r['frame_ms_with']} ms (× {r['frame_time_ratio']})")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
