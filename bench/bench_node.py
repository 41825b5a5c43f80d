"""End-to-end benchmark of `occupancy_node` through DDS (and an optional memory soak).

    .venv/bin/python bench/bench_node.py --seconds 30                  # six 900×1600 rgb8 at 12 Hz
    .venv/bin/python bench/bench_node.py --seconds 20 --soak-minutes 10 --out soak.json
    .venv/bin/python bench/bench_node.py --seconds 30 --jpeg                  # JPEG cameras (quality 90)
    .venv/bin/python bench/bench_node.py --seconds 30 --drivers per-camera    # six driver processes
    .venv/bin/python bench/bench_node.py --seconds 30 --jpeg --scene rendered # camera-like JPEGs (≈ 0.2 MB)
    .venv/bin/python bench/bench_node.py --seconds 30 --stagger-ms 40 --rate 3  # cameras 40 ms apart, worker idle
    .venv/bin/python bench/bench_node.py --seconds 30 --consumer minimal      # the harness's floor (no node)

1. Bare pipeline: `OccupancyPipeline.from_params` in this process, run on the benchmark's own
   frames (the same six images the cameras will send) → pipeline latency p50/p99.
2. The node in its own process (real rclpy, Fast DDS with config/fastdds_shm_large.xml, loopback,
   a private ROS_DOMAIN_ID); this process publishes the six camera streams + CameraInfo +
   odometry at --rate (each image serialised once, only its stamp rewritten per publish, as a C++
   driver would; --publish-messages for rclpy messages) and subscribes to the node's outputs.
   --drivers one (default): this process publishes the six images of a set one after another, so
   the last one leaves ~6 publishes after the set's stamp (printed: "the driver's last image
   published … after the stamp", the floor of the node's input delay); --drivers per-camera: one
   driver process per camera publishes at the same instants, as six camera drivers do (the same
   publishes; its CPU, the six processes together, is reported as the publisher's).
3. The bare pipeline again, so that e2e is compared with bare runs on both sides of the node phase.
4. Report: output rate, stamp-to-publish latency p50/p99 (the node's ~/debug/pipeline_latency_ms),
   stamp-to-receive latency of ~/panoptic, node processing time, dropped sets, the ratio of the
   end-to-end latency to the bare pipeline latency (issue 16's goal: <= 1.15), the node's and the
   publisher's CPU from /proc (the node's per thread). With --soak-minutes, the node's RSS and the
   synchroniser's queue fill are sampled every minute (flat = no leak, no growing queue).

The machine's fp32 matmul rate is printed before and after: the figures are only comparable between
runs at similar rates on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / 'config' / 'fastdds_shm_large.xml'
PARAMS = REPO / 'config' / 'occupancy.yaml'


def _pct(values: list[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


def _fmt(v: Optional[float], unit: str = ' ms') -> str:
    return 'n/a' if v is None else f'{v:.1f}{unit}'


def _cpu_report(t0: Any, t1: Any, span_s: float, images: int, outputs: int) -> dict:
    """CPU time of the node between two psutil cpu_times() (read from /proc/<pid>/stat): in cores,
    per image published to it, and per output."""
    cpu_ms = ((t1.user - t0.user) + (t1.system - t0.system)) * 1e3
    return {'cpu_s': cpu_ms / 1e3, 'cores': cpu_ms / 1e3 / span_s if span_s > 0 else None,
            'ms_per_image': cpu_ms / images if images else None,
            'ms_per_output': cpu_ms / outputs if outputs else None}


def _cpu_sum(procs: list) -> Any:
    """The summed user and system CPU times of psutil processes (the driver and its children)."""
    from types import SimpleNamespace
    times = [p.cpu_times() for p in procs]
    return SimpleNamespace(user=sum(t.user for t in times), system=sum(t.system for t in times))


def _thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of `pid`: tid → (name, user + system clock ticks), from /proc/<pid>/task/*/stat."""
    out = {}
    for task in Path(f'/proc/{pid}/task').iterdir():
        try:
            stat = (task / 'stat').read_text()
        except OSError:
            continue                              # the thread ended meanwhile
        name, rest = stat[stat.index('(') + 1:stat.rindex(')')], stat[stat.rindex(')') + 2:].split()
        out[int(task.name)] = (name, int(rest[11]) + int(rest[12]))     # fields 14, 15: utime, stime
    return out


def _thread_report(t0: dict, t1: dict, span_s: float) -> list[dict]:
    """The node's CPU per thread over the window, in cores, busiest first (Fast DDS names its threads
    dds.*, the node its worker occ_worker — threads a thread starts inherit its name, so ONNX
    Runtime's pool threads, started by the worker's first inference, are occ_worker too — and its
    held ingest occ_ingest; the executor keeps the process name)."""
    hz = os.sysconf('SC_CLK_TCK')
    rows = [{'tid': tid, 'name': name, 'cores': (ticks - t0.get(tid, (name, 0))[1]) / hz / span_s}
            for tid, (name, ticks) in t1.items()]
    return sorted((r for r in rows if r['cores'] >= 0.005), key=lambda r: -r['cores'])


class _Serialized:
    """A message serialised once (CDR, little endian); `.at(stamp)` gives its bytes with the header
    stamp rewritten — std_msgs/Header is the first field of Image and CompressedImage, right after
    the 4-byte encapsulation header."""

    def __init__(self, msg: Any) -> None:
        from rclpy.serialization import serialize_message
        self.buf = bytearray(serialize_message(msg))
        if self.buf[:2] != b'\x00\x01':
            raise ValueError('expected little-endian CDR')

    def at(self, stamp_ns: int) -> bytes:
        struct.pack_into('<iI', self.buf, 4, stamp_ns // 10 ** 9, stamp_ns % 10 ** 9)
        return bytes(self.buf)


def make_images(hw: tuple[int, int], cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Six deterministic, textured RGB frames (sky/ground split, per-camera tint, noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:hw[0], 0:hw[1]]
    out = {}
    for i, cam in enumerate(cameras):
        img = np.empty(hw + (3,), np.uint8)
        img[..., 0] = (x * 255 // hw[1] + 40 * i) % 256
        img[..., 1] = np.where(y < hw[0] // 2, 170, 80)
        img[..., 2] = rng.integers(0, 256, hw, dtype=np.uint8)
        out[cam] = img
    return out


def rendered_images(hw: tuple[int, int], cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Six views of the synthetic world (seed 4242, its first frame) rendered at `hw`: camera-like
    content, so a JPEG of it has a camera's size (≈ 190–230 kB at 1600×900, quality 90; nuScenes'
    camera JPEGs are 131–165 kB) where the noise of `make_images` makes it 0.63 MB."""
    from occ_ros.bag.synth import SyntheticSequence
    seq = SyntheticSequence(4242, seconds=0.5, rate=2.0, image_hw=hw)
    frames = {f.name: f.image for f in seq.frame(0).frame_set(seq.rig).frames}
    return {c: np.ascontiguousarray(frames[c]) for c in cameras}


def machine_gflops() -> float:
    """The machine's rate in this run: 2048² fp32 matmul on 2 threads (torch's count restored)."""
    import torch

    from occ_ros.apps.machine import matmul_gflops
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return matmul_gflops()
    finally:
        torch.set_num_threads(threads)


def time_pipeline(pipe: Any, images: dict, rig: Any, runs: int, warmup_runs: int = 0) -> tuple[list, dict]:
    """`pipe.run` on the benchmark frames, `warmup_runs` untimed then `runs` timed: (wall ms per
    run, {stage: [ms per run]} from the result's timings)."""
    from occ_ros.core.frames import CameraFrame, FrameSet
    times: list[float] = []
    stages: dict[str, list[float]] = {}
    for k in range(warmup_runs + runs):
        frames = tuple(CameraFrame(c.name, k, images[c.name], c.K) for c in rig.cameras)
        t = time.perf_counter()
        res = pipe.run(FrameSet(stamp_ns=k * 83_333_333, frames=frames))
        dt = (time.perf_counter() - t) * 1e3
        if k >= warmup_runs:
            times.append(dt)
            for name, ms in res.timings_ms.items():
                stages.setdefault(name, []).append(ms)
    return times, stages


def bare_pipeline(args: argparse.Namespace, images: dict, rig: Any) -> dict:
    """Pipeline latency on the benchmark frames, in this process, nothing else running."""
    from occ_ros.pipeline import OccupancyPipeline
    t0 = time.perf_counter()
    pipe = OccupancyPipeline.from_params(model=args.model, rig=rig, backend=args.backend, device='cpu',
                                         threads=args.threads or None)
    load_s = time.perf_counter() - t0
    times, stages = time_pipeline(pipe, images, rig, args.runs, args.warmup_runs)
    if hasattr(pipe, 'close'):
        pipe.close()
    return {'load_s': load_s, 'runs': len(times), 'p50_ms': _pct(times, 50), 'p99_ms': _pct(times, 99),
            'stage_p50_ms': {k: _pct(v, 50) for k, v in stages.items()}, 'times_ms': times}


def _ticks(start: float, period: float, total_s: float) -> Any:
    """The stream's schedule: yields (k, target, behind) at each tick k (CLOCK_MONOTONIC target =
    start + k·period, slept until), `behind` when this process is more than a period late."""
    k = 0
    while k * period <= total_s:
        target = start + k * period
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        yield k, target, now - target > period
        k += 1


class _CameraDriver:
    """The stand-in camera driver of `cams`: their Image (or CompressedImage) and CameraInfo
    publishers; `publish(stamp_ns)` sends each camera's CameraInfo and image at that stamp, one
    camera after another."""

    def __init__(self, node: Any, cams: tuple[str, ...], images: dict, Ks: dict, jpeg: bool,
                 publish_messages: bool, stagger_s: float = 0.0) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from occ_ros.ros import convert as cv
        self.cv, self.cams, self.publish_messages = cv, cams, publish_messages
        # camera i exposed (stamped) and published i·stagger_s / (n − 1) after the set's first camera
        self.step_s = stagger_s / (len(cams) - 1) if len(cams) > 1 else 0.0
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        hw = images[cams[0]].shape[:2]
        if jpeg:            # what the node subscribes with image_transport:=compressed
            self.img_pubs = {c: node.create_publisher(CompressedImage, f'/{c}/image_raw/compressed', qos)
                             for c in cams}
            self.img_msgs: dict[str, Any] = {
                c: cv.rgb_to_compressed_msg(images[c], 0, f'{c.lower()}_optical', quality=90) for c in cams}
        else:
            self.img_pubs = {c: node.create_publisher(Image, f'/{c}/image_raw', qos) for c in cams}
            self.img_msgs = {c: cv.rgb_to_image_msg(images[c], 0, f'{c.lower()}_optical') for c in cams}
        self.info_pubs = {c: node.create_publisher(CameraInfo, f'/{c}/camera_info', qos) for c in cams}
        self.info_msgs = {c: cv.camera_info_msg(Ks[c], hw, 0, f'{c.lower()}_optical') for c in cams}
        if not publish_messages:
            # like a C++ camera driver: the image is serialised once and each publish only rewrites its
            # stamp (rclpy publishes bytes as they are), so the stand-in driver does not take the CPU
            # that the node needs to convert and serialise 52 MB/s of Python messages
            self.img_msgs = {c: _Serialized(self.img_msgs[c]) for c in cams}

    def matched(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.img_pubs.values())

    def publish(self, stamp_ns: int, target: Optional[float] = None) -> None:
        """Each camera's CameraInfo and image at `stamp_ns` (+ its stagger, published not before
        `target` + its stagger on CLOCK_MONOTONIC)."""
        for i, c in enumerate(self.cams):
            cam_ns = stamp_ns + int(round(i * self.step_s * 1e9))
            if i and self.step_s > 0 and target is not None:
                wait = target + i * self.step_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            st = self.cv.ns_to_stamp(cam_ns)
            self.info_msgs[c].header.stamp = st
            self.info_pubs[c].publish(self.info_msgs[c])
            if self.publish_messages:
                self.img_msgs[c].header.stamp = st
                self.img_pubs[c].publish(self.img_msgs[c])
            else:
                self.img_pubs[c].publish(self.img_msgs[c].at(cam_ns))


def _camera_driver_process(cam: str, image: np.ndarray, K: np.ndarray, jpeg: bool, publish_messages: bool,
                           period: float, ready: Any, start_q: Any, result_q: Any) -> None:
    """`--drivers per-camera`: one camera's driver in its own process (as six driver nodes are):
    the same publishes as the single driver, on the same schedule (CLOCK_MONOTONIC is shared by
    all processes), stamps from the parent's wall clock origin."""
    import rclpy
    rclpy.init()
    node = rclpy.create_node(f'bench_camera_driver_{cam.lower()}')
    code = 0
    try:
        drv = _CameraDriver(node, (cam,), {cam: image}, {cam: K}, jpeg, publish_messages)
        while not drv.matched():
            time.sleep(0.05)
        ready.set()
        start, wall0, total_s, measure_from = start_q.get()
        spans: dict[int, float] = {}
        late = 0
        for k, target, behind in _ticks(start, period, total_s):
            late += behind
            stamp = wall0 + int(round((target - start) * 1e9))
            drv.publish(stamp)
            if stamp >= measure_from:
                spans[k] = (time.monotonic() - target) * 1e3
        result_q.put({'cam': cam, 'late': late, 'spans': spans})
        result_q.close()
        result_q.join_thread()                 # the result is in the pipe
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        # no destroy_node(): seen to spin for minutes in rclpy's destroy_when_not_in_use after the
        # parent's end; the process only publishes, so leaving it at once loses nothing
        rclpy.try_shutdown()
        os._exit(code)


def run_node_bench(args: argparse.Namespace, images: dict, rig: Any, log_dir: Path) -> dict:
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from occ_ros.msg import Float64Stamped, PanopticOccupancy
    from occ_ros.ros import convert as cv

    node_log = open(log_dir / 'occupancy_node.log', 'wb')
    if args.consumer == 'minimal':      # the floor of this harness: bench/minimal_consumer.py
        cmd = [sys.executable, str(REPO / 'bench' / 'minimal_consumer.py'), '--model', args.model,
               '--backend', args.backend, '--threads', str(args.threads), '--height', str(args.height),
               '--width', str(args.width)]
    else:
        cmd = [sys.executable, '-m', 'occ_ros.ros.main', '--ros-args', '--params-file', str(PARAMS),
               '-p', f'model:={args.model}', '-p', f'backend:={args.backend}', '-p', f'threads:={args.threads}',
               '-p', 'odom_source:=odometry', *(['-p', 'image_transport:=compressed'] if args.jpeg else []),
               *args.node_arg]
    node_proc = subprocess.Popen(cmd, stdout=node_log, stderr=subprocess.STDOUT, cwd=str(REPO),
                                 start_new_session=True)
    rclpy.init()
    me = rclpy.create_node('bench_node_driver')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    cams = tuple(c.name for c in rig.cameras)
    odom_pub = me.create_publisher(Odometry, '/odom', QoSProfile(depth=50))
    Ks = {c: rig.camera(c).K for c in cams}
    children: list[Any] = []
    if args.drivers == 'one':
        driver: Optional[_CameraDriver] = _CameraDriver(me, cams, images, Ks, args.jpeg, args.publish_messages,
                                                        args.stagger_ms / 1e3)
    else:
        import multiprocessing
        mp = multiprocessing.get_context('spawn')       # a fresh interpreter: its own rclpy context
        ready_evts, start_qs, result_q = [], [], mp.Queue()
        driver = None
        for c in cams:
            ready_evts.append(mp.Event())
            start_qs.append(mp.Queue())
            children.append(mp.Process(target=_camera_driver_process, daemon=True, args=(
                c, images[c], Ks[c], args.jpeg, args.publish_messages, 1.0 / args.rate, ready_evts[-1],
                start_qs[-1], result_q)))
            children[-1].start()

    lock = threading.Lock()
    rx: list[tuple[int, float]] = []           # (stamp, receive wall ns)
    lat: list[tuple[int, float]] = []
    proc: list[tuple[int, float]] = []
    pipe_ms: list[tuple[int, float]] = []       # pipeline.run inside the node, per set
    parts: dict[str, list[tuple[int, float]]] = {'input_delay': [], 'queue_wait': []}
    diag: dict[str, dict] = {}

    def on_panoptic(m: Any) -> None:
        with lock:
            rx.append((cv.stamp_to_ns(m.header.stamp), time.time_ns()))

    def on_lat(m: Any) -> None:
        with lock:
            lat.append((cv.stamp_to_ns(m.header.stamp), m.data))

    def on_proc(m: Any) -> None:
        with lock:
            proc.append((cv.stamp_to_ns(m.header.stamp), m.data))

    def on_pipe(m: Any) -> None:
        with lock:
            pipe_ms.append((cv.stamp_to_ns(m.header.stamp), m.data))

    def on_diag(m: Any) -> None:
        with lock:
            for st in m.status:
                diag[st.name.split(': ', 1)[-1]] = {kv.key: kv.value for kv in st.values}

    me.create_subscription(PanopticOccupancy, '/occupancy_node/panoptic', on_panoptic, qos)
    me.create_subscription(Float64Stamped, '/occupancy_node/debug/pipeline_latency_ms', on_lat, qos)
    me.create_subscription(Float64Stamped, '/occupancy_node/debug/processing_time_ms', on_proc, qos)
    me.create_subscription(Float64Stamped, '/occupancy_node/debug/pipeline_ms', on_pipe, qos)
    me.create_subscription(DiagnosticArray, '/diagnostics', on_diag, qos)
    for part, values in parts.items():
        def on_part(m: Any, values: list = values) -> None:
            with lock:
                values.append((cv.stamp_to_ns(m.header.stamp), m.data))
        me.create_subscription(Float64Stamped, f'/occupancy_node/debug/{part}_ms', on_part, qos)
    ex = SingleThreadedExecutor()
    ex.add_node(me)
    def spin() -> None:
        try:
            ex.spin()
        except ExternalShutdownException:
            pass
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    report: dict = {}
    try:
        t0 = time.monotonic()
        while not (driver.matched() if driver is not None else all(e.is_set() for e in ready_evts)):
            if node_proc.poll() is not None or time.monotonic() - t0 > args.node_timeout:
                raise RuntimeError(f'the node did not come up (see {log_dir / "occupancy_node.log"})')
            time.sleep(0.1)
        report['node_startup_s'] = time.monotonic() - t0
        node_ps = psutil.Process(node_proc.pid)
        me_ps = psutil.Process()                 # this process: the stand-in camera driver + recorder
        kids_ps = [psutil.Process(ch.pid) for ch in children]     # --drivers per-camera
        total_s = args.warmup + args.seconds + 60.0 * args.soak_minutes
        period = 1.0 / args.rate
        start = time.monotonic() + (0.3 if children else 0.0)     # the children get the origin first
        wall0 = time.time_ns() + (300_000_000 if children else 0)
        measure_from = wall0 + int(args.warmup * 1e9)
        for q in (start_qs if children else []):
            q.put((start, wall0, total_s, measure_from))
        n_sets, published, rss, queue = 0, 0, [], []
        cpu0, my_cpu0 = node_ps.cpu_times(), _cpu_sum([me_ps, *kids_ps])
        threads0 = _thread_ticks(node_proc.pid)
        next_sample = start + args.warmup
        late = 0
        driver_span: list[float] = []           # the set's stamp → its last image published, ms
        for k, target, behind in _ticks(start, period, total_s):
            late += behind                      # this process could not keep the rate
            n_sets = k + 1
            stamp = wall0 + int(round((target - start) * 1e9))
            if driver is not None:
                driver.publish(stamp, target)
                if stamp >= measure_from:
                    driver_span.append((time.monotonic() - target) * 1e3)
            T = np.eye(4)
            T[0, 3] = 5.0 * (stamp - wall0) / 1e9
            odom_pub.publish(cv.odometry_msg(T, stamp))
            if stamp >= measure_from:
                if published == 0:              # the node's CPU time (/proc/<pid>/stat) at the window start
                    cpu0 = node_ps.cpu_times()
                    my_cpu0 = _cpu_sum([me_ps, *kids_ps])
                    threads0 = _thread_ticks(node_proc.pid)
                published += 1
            if time.monotonic() >= next_sample:
                with lock:
                    sync = dict(diag.get('synchronizer', {}))
                    processing = dict(diag.get('processing', {}))
                rss.append({'t_s': round(time.monotonic() - start, 1),
                            'node_rss_mb': node_ps.memory_info().rss / 2 ** 20})
                queue.append({'t_s': rss[-1]['t_s'], 'sync_pending': sync.get('pending'),
                              'dropped_sets': processing.get('dropped_sets'),
                              'outputs': processing.get('outputs')})
                next_sample += 60.0 if args.soak_minutes else max(args.seconds / 4, 1.0)
        end_wall = time.time_ns()
        cpu1 = node_ps.cpu_times()
        my_cpu1 = _cpu_sum([me_ps, *kids_ps])
        if children:
            results = [result_q.get(timeout=30) for _ in children]
            late += sum(r['late'] for r in results)
            # a set's last image: the latest of the six drivers
            driver_span = [max(r['spans'][k2] for r in results if k2 in r['spans'])
                           for k2 in sorted(set().union(*(r['spans'] for r in results)))]
        threads1 = _thread_ticks(node_proc.pid)
        time.sleep(2.0)                          # let the last set come out
        with lock:
            rx_m = [(s, t) for s, t in rx if s >= measure_from]
            lat_m = [v for s, v in lat if s >= measure_from]
            proc_m = [v for s, v in proc if s >= measure_from]
            pipe_m = [v for s, v in pipe_ms if s >= measure_from]
            parts_m = {name: [v for s, v in vals if s >= measure_from] for name, vals in parts.items()}
            d = {k2: dict(v) for k2, v in diag.items()}
        span_s = (end_wall - measure_from) / 1e9
        n_out = len(lat_m) if args.consumer == 'minimal' else len(rx_m)
        pr, sy = d.get('processing', {}), d.get('synchronizer', {})
        cam_rx = sum(int(v.get('received', 0)) for k2, v in d.items() if k2.startswith('camera '))
        report.update({
            'published_sets': published, 'publisher_late_frames': late,
            # the minimal consumer publishes no panoptic message: its outputs are its latency samples
            'outputs': n_out, 'output_rate_hz': n_out / span_s if span_s > 0 else None,
            'stamp_to_publish_ms': {'p50': _pct(lat_m, 50), 'p99': _pct(lat_m, 99), 'all': lat_m},
            'stamp_to_receive_ms': {'p50': _pct([(t - s) / 1e6 for s, t in rx_m], 50),
                                    'p99': _pct([(t - s) / 1e6 for s, t in rx_m], 99)},
            'node_processing_ms': {'p50': _pct(proc_m, 50), 'p99': _pct(proc_m, 99)},
            'in_node_pipeline_ms': {'p50': _pct(pipe_m, 50), 'p99': _pct(pipe_m, 99)},
            'dropped_sets': int(pr.get('dropped_sets', -1)),
            # the node process's CPU time over the measured window (user + system, all threads)
            'node_cpu': _cpu_report(cpu0, cpu1, span_s, images=published * len(cams), outputs=n_out),
            'node_threads': _thread_report(threads0, threads1, span_s),
            'publisher_cpu': _cpu_report(my_cpu0, my_cpu1, span_s, images=published * len(cams),
                                         outputs=n_out),
            'publisher': ('messages' if args.publish_messages else 'serialized once, stamp rewritten') +
                         (', one process per camera' if children else ', one process for the six cameras'),
            # how long after a set's stamp the stand-in driver has published its last image (it
            # publishes the six one after another): the floor of the node's input delay
            'driver_stamp_to_last_publish_ms': {'p50': _pct(driver_span, 50), 'p99': _pct(driver_span, 99)},
            'sets_received_by_node': int(pr.get('sets_received', -1)),
            # stamp → publish = input delay (publisher, DDS, synchroniser) + queue wait + processing
            'latency_parts_ms': {name: {'p50': _pct(v, 50), 'p99': _pct(v, 99)} for name, v in parts_m.items()},
            # where every published set went (whole run incl. warm-up; from the node's diagnostics)
            'accounting': {
                'sets_published': n_sets, 'images_published': n_sets * len(cams),
                'images_received_by_node': cam_rx,
                # ingest_hold: the images of sets never taken were replaced in the readers, not lost
                'images_lost_in_transport': max(0, n_sets * len(cams) - cam_rx
                                                - len(cams) * int(pr.get('dropped_sets_held', 0))),
                'images_unmatched_in_sync': int(sy.get('images_unmatched', -1)),
                'sets_formed': int(sy.get('sets', -1)),
                'dropped_busy': int(pr.get('dropped_sets_busy', -1)),
                'dropped_stale': int(pr.get('dropped_sets_stale', -1)),
                'processed': int(pr.get('outputs', -1)),
                'errors': int(pr.get('pipeline_errors', -1)),
                # ingest_hold: sets never taken from the middleware (counted from stamp gaps)
                'never_taken': int(pr.get('dropped_sets_held', 0)),
                # images copied into the node for every image a processed set used (1.0: none wasted)
                'images_taken_per_image_used': (cam_rx / (len(cams) * int(pr['outputs']))
                                                if int(pr.get('outputs', 0) or 0) > 0 else None)},
            'stage_p50_ms': {k2[len('stage_p50_ms.'):]: float(v) for k2, v in d.get('processing', {}).items()
                             if k2.startswith('stage_p50_ms.')},
            'sync_max_skew_ms': d.get('synchronizer', {}).get('max_skew_ms'),
            # outputs per 10 s of stream time: a stall or a slow-down shows here
            'outputs_per_10s': np.bincount([int((s - measure_from) / 1e10) for s, _ in rx_m]).tolist(),
            'rss_samples': rss, 'queue_samples': queue,
            'diagnostics_final': d})
    finally:
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(30)
            except subprocess.TimeoutExpired:
                node_proc.kill()
                node_proc.wait(10)
        report['node_exit_code'] = node_proc.returncode
        for ch in children:
            ch.join(10)
            if ch.is_alive():
                ch.terminate()
        rclpy.try_shutdown()                     # ends ex.spin() in the spinner thread
        spinner.join(10)
        ex.shutdown()
        me.destroy_node()
        node_log.close()
    return report


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seconds', type=float, default=30.0, help='measured streaming time')
    ap.add_argument('--warmup', type=float, default=5.0, help='streaming seconds not measured')
    ap.add_argument('--soak-minutes', type=float, default=0.0, help='extra streaming minutes, RSS sampled each minute')
    ap.add_argument('--rate', type=float, default=12.0)
    ap.add_argument('--height', type=int, default=900)
    ap.add_argument('--width', type=int, default=1600)
    ap.add_argument('--model', default='lite')
    ap.add_argument('--backend', default='auto')
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--runs', type=int, default=20, help='bare-pipeline runs (after --warmup-runs)')
    ap.add_argument('--warmup-runs', type=int, default=3)
    ap.add_argument('--skip-bare', action='store_true')
    ap.add_argument('--node-timeout', type=float, default=300.0)
    ap.add_argument('--node-arg', action='append', default=[], help='extra node argument, e.g. -p x:=y')
    ap.add_argument('--jpeg', action='store_true',
                    help='publish JPEG CompressedImage (quality 90) instead of raw rgb8; the node decodes them')
    ap.add_argument('--publish-messages', action='store_true',
                    help='publish Python messages (rclpy converts and serialises each one, ~0.3 core here) '
                         'instead of bytes serialised once with the stamp rewritten')
    ap.add_argument('--drivers', choices=('one', 'per-camera'), default='one',
                    help='one: this process publishes the six cameras one after another (a set\'s last image '
                         'leaves ~6 publishes after its stamp); per-camera: six driver processes publish at '
                         'the same instants, as six camera drivers do')
    ap.add_argument('--scene', choices=('noise', 'rendered'), default='noise',
                    help='the cameras\' images: noise = textured frames with per-pixel noise (a JPEG of one is '
                         '0.63 MB); rendered = the synthetic world seen by the six cameras (≈ 0.2 MB, camera-like)')
    ap.add_argument('--stagger-ms', type=float, default=0.0,
                    help='--drivers one: the cameras of a set are exposed (stamped) and published this far apart '
                         'from the first to the last, evenly spaced — a rig triggered as a lidar sweeps past its '
                         'cameras (nuScenes: one rotation is 50 ms); e2e is then measured from the first camera')
    ap.add_argument('--consumer', choices=('node', 'minimal'), default='node',
                    help='node: occupancy_node with config/occupancy.yaml; minimal: bench/minimal_consumer.py, '
                         'the least a consumer can do (the bare pipeline on each complete set while free, no '
                         'outputs) — the floor of this harness on this machine (raw images, equal stamps only)')
    ap.add_argument('--out', default='', help='write the report as JSON')
    args = ap.parse_args(argv)
    if args.stagger_ms and args.drivers != 'one':
        ap.error('--stagger-ms needs --drivers one')
    if args.consumer == 'minimal' and (args.jpeg or args.stagger_ms or args.node_arg):
        ap.error('--consumer minimal takes raw images with equal stamps and no node arguments')

    # DDS on loopback, a private domain, the shared-memory profile: before rclpy is imported.
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(PROFILE))
    log_dir = Path(tempfile.mkdtemp(prefix='occ_bench_'))
    os.environ.setdefault('ROS_LOG_DIR', str(log_dir / 'roslog'))

    from occ_ros.core.config import NUSCENES_CAMERAS
    from occ_ros.geometry import nuscenes_rig
    hw = (args.height, args.width)
    rig = nuscenes_rig(hw)
    images = (rendered_images if args.scene == 'rendered' else make_images)(hw, NUSCENES_CAMERAS)
    report: dict = {'config': {k: v for k, v in vars(args).items() if k != 'out'}, 'logs': str(log_dir),
                    'machine_load_1min': os.getloadavg()[0], 'cpus': os.cpu_count()}
    report['machine_gflops_before'] = machine_gflops()    # the machine's rate in this run (2048² fp32, 2 threads)
    print(f"machine: 2048² fp32 matmul at {report['machine_gflops_before']:.0f} GFLOPS (2 threads)", flush=True)
    if not args.skip_bare:
        report['bare_pipeline'] = bare_pipeline(args, images, rig)
        print(f"bare pipeline: p50 {_fmt(report['bare_pipeline']['p50_ms'])}, "
              f"p99 {_fmt(report['bare_pipeline']['p99_ms'])} over {report['bare_pipeline']['runs']} runs",
              flush=True)
    report['node'] = run_node_bench(args, images, rig, log_dir)
    n = report['node']
    bare = None
    if not args.skip_bare:
        # the bare pipeline again after the node: the machine's speed drifts over minutes, so e2e is
        # compared with the median of the bare runs on both sides of the node phase
        after = report['bare_pipeline_after'] = bare_pipeline(args, images, rig)
        bare = _pct(report['bare_pipeline']['times_ms'] + after['times_ms'], 50)
        report['bare_p50_ms_both_sides'] = bare
        print(f"bare pipeline after the node: p50 {_fmt(after['p50_ms'])}; both sides p50 {_fmt(bare)}",
              flush=True)
    e2e = n['stamp_to_publish_ms']['p50']
    report['e2e_over_bare_p50'] = (e2e / bare) if (e2e and bare) else None
    report['processing_over_bare_p50'] = (n['node_processing_ms']['p50'] / bare) \
        if (n['node_processing_ms']['p50'] and bare) else None
    # The same ratio against pipeline.run timed inside the node on the very frames it published:
    # robust to the load of a shared machine changing between the two phases.
    in_node = n['in_node_pipeline_ms']['p50']
    report['e2e_over_in_node_pipeline_p50'] = (e2e / in_node) if (e2e and in_node) else None
    rate = n['output_rate_hz']
    rate_txt = 'n/a' if rate is None else f'{rate:.2f} Hz'
    span = args.seconds + 60.0 * args.soak_minutes
    print(f"node: {n['outputs']} outputs from {n['published_sets']} sets in {span:.0f} s "
          f"({rate_txt}), dropped {n['dropped_sets']}, stamp→publish p50 {_fmt(e2e)} "
          f"p99 {_fmt(n['stamp_to_publish_ms']['p99'])}, processing p50 {_fmt(n['node_processing_ms']['p50'])}, "
          f"e2e/bare {report['e2e_over_bare_p50'] or float('nan'):.2f}, "
          f"e2e/in-node pipeline {report['e2e_over_in_node_pipeline_p50'] or float('nan'):.2f}", flush=True)
    parts = n['latency_parts_ms']
    print('latency parts p50: ' + ', '.join(f"{k} {_fmt(v['p50'])}" for k, v in parts.items()) +
          f", processing {_fmt(n['node_processing_ms']['p50'])}; the driver's last image published "
          f"{_fmt(n['driver_stamp_to_last_publish_ms']['p50'])} after the stamp (p50)")
    a = n['accounting']
    if args.consumer == 'minimal':
        print('accounting: none (the minimal consumer publishes no diagnostics)')
    else:
        print(f"accounting: {a['sets_published']} sets published → {a['images_received_by_node']} of "
              f"{a['images_published']} images taken ({a['images_lost_in_transport']} lost in transport, "
              f"{a['images_unmatched_in_sync']} unmatched in sync) → {a['sets_formed']} sets → "
              f"{a['processed']} processed, {a['dropped_busy']} dropped busy, {a['dropped_stale']} dropped stale, "
              f"{a['errors']} errors; {a['never_taken']} sets never taken (ingest_hold); "
              f"{a['images_taken_per_image_used'] or float('nan'):.2f} images taken per image used", flush=True)
    c = n['node_cpu']
    report['machine_gflops_after'] = machine_gflops()
    print(f"node CPU (from /proc): {c['cores']:.2f} cores, {c['ms_per_image'] or float('nan'):.2f} ms per image "
          f"received, {c['ms_per_output'] or float('nan'):.0f} ms per output; machine "
          f"{report['machine_gflops_before']:.0f} → {report['machine_gflops_after']:.0f} GFLOPS", flush=True)
    print('node threads (cores): ' + ', '.join(f"{t['name']}/{t['tid']} {t['cores']:.2f}" for t in n['node_threads']))
    pc = n['publisher_cpu']
    print(f"publisher ({n['publisher']}) CPU: {pc['cores']:.2f} cores, "
          f"{pc['ms_per_image'] or float('nan'):.2f} ms per image", flush=True)
    if n['rss_samples']:
        print('node RSS (MB): ' + ', '.join(f"{s['t_s']:.0f}s {s['node_rss_mb']:.0f}" for s in n['rss_samples']))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0 if n['outputs'] > 0 and n['node_exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
