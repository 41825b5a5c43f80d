"""The least a ROS consumer of six raw cameras can do: `bench_node.py --consumer minimal` runs it in
place of `occupancy_node`, so that the node's latency can be held against the floor of the same
harness on the same machine.

It subscribes to the six `sensor_msgs/Image` streams (serialized, best effort, depth 1 — the node's
default QoS), keeps each camera's newest image as a view of its serialized bytes, and whenever the
six newest images share a stamp and the worker is free it hands them to `OccupancyPipeline.run` —
the very call `bench_node.py` times as "bare" — in a second thread. For every set it publishes what
the node publishes for the benchmark: `~/debug/pipeline_latency_ms` (the set's stamp → the
pipeline done, wall clock) and `~/debug/pipeline_ms` (`pipeline.run` alone), stamped with the set.

What it leaves out is everything the node adds to `pipeline.run`: CameraInfo and odometry (the
rig's own intrinsics and no ego motion), the synchroniser's tolerances, validation of hostile
input, early preparation, the outputs (markers, grid, panoptic message) and diagnostics. Its
latency is therefore the floor any consumer reaches in this harness: the driver's publishing, DDS,
and the pipeline sharing two cores with the camera streams.

    .venv/bin/python bench/bench_node.py --consumer minimal --seconds 25 --warmup 10 --backend onnxruntime
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any, Optional


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', default='lite')
    ap.add_argument('--backend', default='auto')
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--height', type=int, default=900)
    ap.add_argument('--width', type=int, default=1600)
    args = ap.parse_args(argv)

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    from occ_ros.core.cdr import cdr_header, image_from_cdr
    from occ_ros.core.frames import CameraFrame, FrameSet
    from occ_ros.geometry import nuscenes_rig
    from occ_ros.msg import Float64Stamped
    from occ_ros.pipeline import OccupancyPipeline
    from occ_ros.ros import convert as cv
    from occ_ros.ros.qos import best_effort

    rig = nuscenes_rig((args.height, args.width))
    cams = tuple(c.name for c in rig.cameras)
    pipe = OccupancyPipeline.from_params(model=args.model, rig=rig, backend=args.backend, device='cpu',
                                         threads=args.threads or None)
    rclpy.init()
    node = rclpy.create_node('occupancy_node')
    pub_latency = node.create_publisher(Float64Stamped, '~/debug/pipeline_latency_ms', 10)
    pub_pipeline = node.create_publisher(Float64Stamped, '~/debug/pipeline_ms', 10)

    newest: dict[str, tuple[int, bytes]] = {}        # camera → (stamp, its serialized image)
    ready = threading.Condition()
    todo: list[tuple[int, dict[str, tuple[int, bytes]]]] = []
    busy = threading.Event()
    stop = threading.Event()

    def on_image(cam: str) -> Any:
        def take(raw: bytes) -> None:
            stamp, _ = cdr_header(raw)
            newest[cam] = (stamp, raw)
            if busy.is_set() or len(newest) < len(cams) or any(newest[c][0] != stamp for c in cams):
                return
            with ready:
                busy.set()
                todo.append((stamp, dict(newest)))
                ready.notify()
        return take

    qos = best_effort(1)                # the node's default input QoS with ingest_hold
    for cam in cams:
        node.create_subscription(Image, f'/{cam}/image_raw', on_image(cam), qos, raw=True)

    def stamped(stamp: int, value: float) -> Any:
        m = Float64Stamped()
        m.header.stamp = cv.ns_to_stamp(stamp)
        m.data = value
        return m

    def work() -> None:
        while not stop.is_set():
            with ready:
                if not todo and not ready.wait(0.2):
                    continue
                stamp, views = todo.pop()
            frames = tuple(CameraFrame(c.name, stamp, cv.image_to_rgb(image_from_cdr(views[c.name][1])), c.K)
                           for c in rig.cameras)
            t = time.perf_counter()
            pipe.run(FrameSet(stamp_ns=stamp, frames=frames))
            done_ns = time.time_ns()
            pub_pipeline.publish(stamped(stamp, (time.perf_counter() - t) * 1e3))
            pub_latency.publish(stamped(stamp, (done_ns - stamp) / 1e6))
            busy.clear()

    worker = threading.Thread(target=work, name='minimal_worker', daemon=True)
    worker.start()
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    stop.set()
    worker.join(5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
