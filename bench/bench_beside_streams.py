"""The bare pipeline beside six raw camera streams, with no consumer in its process.

    .venv/bin/python bench/bench_beside_streams.py [--rounds 2] [--runs 15] [--out X.json]

`bench_node.py` holds the node's stamp → publish latency against `pipeline.run` timed alone
("bare"). This benchmark asks what the camera streams cost the pipeline by themselves, whoever
consumes them: in this process `OccupancyPipeline.run` (lite on ONNX Runtime, the benchmark's six
900×1600 frames) is timed while, in other processes,

    none                   nothing else runs;
    driver                 bench_node's stand-in driver publishes the six raw streams at 12 Hz
                           (serialized once, stamp rewritten, one camera after another) to no one;
    driver + idle reader   … and a process subscribes (best effort, depth 1, serialized) but never
                           takes: Fast DDS still delivers every image into its reader;
    driver + taking reader … and that process takes every image.

Conditions are interleaved, `--rounds` times, each after 3 s of streaming. Any consumer of the
streams has at least a reader into which Fast DDS delivers every image: over the shared-memory
transport each sample is copied from the writer's history to the transport and from there into
the reader's history, and the copy-free data-sharing delivery needs a bounded type, which
sensor_msgs/Image is not (Fast DDS documentation, "Data-sharing delivery", Constraints). With the
driver's last image leaving some time after the stamp (the driver measures it in this run, as
`bench_node.py` does), a consumer's stamp → result latency is at least that plus the pipeline's
time beside the streams and an idle reader: the ratio printed as "floor" is (that span, p50 +
p50 beside driver + idle reader) / p50 alone.
A reader that takes every image (as a node without `ingest_hold` would) costs more on top.

The machine's fp32 matmul rate (2048², 2 threads) is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'bench'))
HW = (900, 1600)
CONDITIONS = ('none', 'driver', 'driver + idle reader', 'driver + taking reader')


def _driver(stop: Any, ready: Any, spans: Any, rate: float) -> None:
    """bench_node's stand-in driver at `rate` until `stop`; puts the p50 of its sets' stamp → last
    image published (ms) into `spans`."""
    import rclpy

    import bench_node
    from occ_ros.core.config import NUSCENES_CAMERAS
    from occ_ros.geometry import nuscenes_rig
    rig = nuscenes_rig(HW)
    images = bench_node.make_images(HW, NUSCENES_CAMERAS)
    rclpy.init()
    node = rclpy.create_node('beside_streams_driver')
    driver = bench_node._CameraDriver(node, NUSCENES_CAMERAS, images, {c.name: c.K for c in rig.cameras},
                                      jpeg=False, publish_messages=False)
    ready.set()
    span_ms: list[float] = []
    for _, target, _ in bench_node._ticks(time.monotonic(), 1.0 / rate, float('inf')):
        if stop.is_set():
            break
        driver.publish(time.time_ns(), target)
        span_ms.append((time.monotonic() - target) * 1e3)
    spans.put(float(np.median(span_ms)) if span_ms else None)
    node.destroy_node()
    rclpy.try_shutdown()


def _reader(stop: Any, ready: Any, take: bool) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from occ_ros.core.config import NUSCENES_CAMERAS
    from occ_ros.ros.qos import best_effort
    rclpy.init()
    node = rclpy.create_node('beside_streams_reader')
    qos = best_effort(1)                # the node's default input QoS with ingest_hold
    for cam in NUSCENES_CAMERAS:
        node.create_subscription(Image, f'/{cam}/image_raw', lambda raw: None, qos, raw=True)
    ready.set()
    while not stop.is_set():
        if take:
            rclpy.spin_once(node, timeout_sec=0.1)
        else:
            time.sleep(0.1)
    node.destroy_node()
    rclpy.try_shutdown()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--runs', type=int, default=15, help='pipeline runs per condition and round')
    ap.add_argument('--rate', type=float, default=12.0)
    ap.add_argument('--out', default='')
    args = ap.parse_args(argv)

    # DDS on loopback, a private domain, the node's shared-memory profile: before rclpy is imported
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(101, 200)))
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(REPO / 'config' / 'fastdds_shm_large.xml'))
    import multiprocessing

    import bench_node
    from occ_ros.core.config import NUSCENES_CAMERAS
    from occ_ros.geometry import nuscenes_rig
    from occ_ros.pipeline import OccupancyPipeline

    report: dict = {'config': vars(args), 'machine_gflops_before': bench_node.machine_gflops()}
    print(f"machine: 2048² fp32 matmul at {report['machine_gflops_before']:.0f} GFLOPS (2 threads)", flush=True)
    rig = nuscenes_rig(HW)
    images = bench_node.make_images(HW, NUSCENES_CAMERAS)
    pipe = OccupancyPipeline.from_params(model='lite', rig=rig, backend='onnxruntime', device='cpu')

    bench_node.time_pipeline(pipe, images, rig, 3)
    ctx = multiprocessing.get_context('spawn')
    results: dict[str, list[dict]] = {c: [] for c in CONDITIONS}
    spans: list[Optional[float]] = []      # the driver's stamp → last image published, p50 per condition
    for rnd in range(args.rounds):
        for cond in CONDITIONS:
            stop, spans_q = ctx.Event(), ctx.Queue()
            procs = []
            if cond != 'none':
                ready = ctx.Event()
                procs.append(ctx.Process(target=_driver, args=(stop, ready, spans_q, args.rate), daemon=True))
                procs[-1].start()
                ready.wait(120)
            if 'reader' in cond:
                ready = ctx.Event()
                procs.append(ctx.Process(target=_reader, args=(stop, ready, 'taking' in cond), daemon=True))
                procs[-1].start()
                ready.wait(120)
            time.sleep(3.0 if procs else 0.0)
            total, stages = bench_node.time_pipeline(pipe, images, rig, args.runs)
            stop.set()
            if procs:
                spans.append(spans_q.get(timeout=30))
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
            st = {k: float(np.median(v)) for k, v in stages.items()}
            row = {'p50_ms': float(np.median(total)), 'stage_p50_ms': st}
            results[cond].append(row)
            print(f"round {rnd + 1} {cond:24s} pipeline p50 {row['p50_ms']:6.1f} ms (preprocess "
                  f"{st.get('preprocess', 0):.1f}, inference {st.get('inference', 0):.1f}, postprocess "
                  f"{st.get('postprocess', 0):.1f})", flush=True)
    pipe.close()
    alone = float(np.median([r['p50_ms'] for r in results['none']]))
    summary = {c: float(np.median([r['p50_ms'] for r in rows])) / alone for c, rows in results.items()}
    beside = float(np.median([r['p50_ms'] for r in results['driver + idle reader']]))
    span = float(np.median([v for v in spans if v is not None]))
    report.update({'results': results, 'slowdown_vs_alone': summary, 'driver_stamp_to_last_publish_p50_ms': span,
                   'floor_e2e_over_bare': (span + beside) / alone,
                   'machine_gflops_after': bench_node.machine_gflops()})
    print('pipeline beside the streams / alone (median of rounds): ' +
          ', '.join(f'{c} {v:.2f}' for c, v in summary.items()))
    print(f"floor of any consumer's e2e / bare: (driver's last image {span:.0f} ms after the stamp + "
          f"{beside:.0f} ms) / {alone:.0f} ms = "
          f"{report['floor_e2e_over_bare']:.2f}; machine {report['machine_gflops_before']:.0f} → "
          f"{report['machine_gflops_after']:.0f} GFLOPS", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
