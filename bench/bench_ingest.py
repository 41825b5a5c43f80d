"""What a camera message costs the node before the worker takes it, per message, in one run:

- the old ingest: rclpy deserialises every Image into a message object (`deserialize_message`)
  before the callback runs, whether the set is processed or dropped;
- the lazy ingest: the subscription is raw, the callback reads the CDR header (`cdr_header`) and
  the size; the worker deserialises only the sets it takes.

    .venv/bin/python bench/bench_ingest.py [--height 900 --width 1600 --repeat 200]

Prints microseconds per message and the ratio, beside the machine's fp32 matmul rate measured in
the same run (absolute times vary ~3× between days on this machine; the ratio does not).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

import numpy as np  # noqa: E402


def _per_call_us(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--height', type=int, default=900)
    ap.add_argument('--width', type=int, default=1600)
    ap.add_argument('--repeat', type=int, default=200)
    args = ap.parse_args()
    import torch
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from occ_ros.core import cdr
    from occ_ros.ros import convert as cv

    torch.set_num_threads(2)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    gflops = 2 * 2048 ** 3 * 10 / (time.perf_counter() - t0) / 1e9

    rgb = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)
    raw_image = serialize_message(cv.rgb_to_image_msg(rgb, 1_000, 'cam'))
    jpeg = cv.rgb_to_compressed_msg(rgb, 1_000, 'cam', 'jpeg', 90)
    raw_jpeg = serialize_message(jpeg)
    rows = []
    for name, raw, typ in (('Image rgb8', raw_image, Image), ('CompressedImage JPEG q90', raw_jpeg, CompressedImage)):
        full = _per_call_us(lambda: deserialize_message(raw, typ), args.repeat)
        lazy = _per_call_us(lambda: cdr.cdr_header(raw), args.repeat * 20)
        rows.append((name, len(raw), full, lazy))
    print(f'machine: 2048² fp32 matmul on 2 threads {gflops:.0f} GFLOPS (same run)')
    print(f'{"message":28s} {"bytes":>10s} {"deserialise µs":>15s} {"header only µs":>15s} {"ratio":>8s}')
    for name, size, full, lazy in rows:
        print(f'{name:28s} {size:10d} {full:15.1f} {lazy:15.2f} {full / lazy:8.0f}×')
    print('per received image the lazy ingest costs the header read; the deserialisation (and the '
          'decode) is paid only for the sets the worker takes')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
