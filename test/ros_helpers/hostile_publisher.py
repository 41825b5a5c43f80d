"""Hostile publisher for the fault suite: five good cameras, one camera that misbehaves in phases.

    python hostile_publisher.py --transport raw --faults wide_strip,tiny,... --out report.json

Runs a program at 12 Hz: a good phase (baseline), then for each fault a phase of --phase-s seconds
in which --camera (CAM_FRONT_LEFT) sends that fault while the other five send good images, each
followed by --gap-s seconds of good sets (the fault must pass). It records, in the same process,
what the node publishes: every ~/panoptic output (stamp, missing cameras) and every /diagnostics
status of the node (receive time, name, level, message, values). Writes JSON:
    {"sets": [[stamp_ns, phase], ...], "phases": [[name, t0, t1], ...] (time.time()),
     "outputs": [[stamp_ns, missing], ...], "diagnostics": [[t, name, level, message, values], ...]}

Faults (raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage), each with a CameraInfo
that agrees with the image unless the fault is the disagreement:
    wide_strip, tall_strip, tiny    8×4000, 4000×8 and 2×2 images (raw or JPEG)
    oversized       a 1400×1200 rgb8 image (5 MB; run the node with a smaller max_image_bytes)
    wrong_encoding  mono8                      short_data   data shorter than height × step
    info_mismatch   image 450×800, CameraInfo 900×1600
    nan_info        CameraInfo with a NaN in K (the node must keep the last good K)
    malformed_cdr   serialized bytes whose header nanosec is ≥ 1e9
    truncated_cdr   a valid header, the rest of the message cut
    odom_disorder   (all cameras good) odometry sent in swapped pairs and from a second source
                    0.15 s behind — within the reorder window — plus a stale sample 2 s old
    png_bomb        a PNG whose header says 10000×10000, CameraInfo agreeing
    corrupt_jpeg    entropy-coded data overwritten mid-stream (libjpeg: "Corrupt JPEG data")
    truncated_jpeg  the second half cut off           garbage      bytes that are no image
    theora          format 'theora'
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
import zlib

import numpy as np

FAULT_CAMERA = 'CAM_FRONT_LEFT'
HW = (450, 800)


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width×height, a tiny IDAT, IEND: a bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')


def picture(hw: tuple[int, int], seed: int) -> np.ndarray:
    y, x = np.mgrid[0:hw[0], 0:hw[1]]
    rgb = np.zeros(hw + (3,), np.uint8)
    rgb[..., 0] = (x * 255 // max(1, hw[1]) + 40 * seed) % 256
    rgb[..., 1] = np.where(y < hw[0] // 2, 180, 90)
    rgb[..., 2] = np.random.default_rng(seed).integers(0, 256, hw, dtype=np.uint8)
    return rgb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--transport', choices=('raw', 'compressed'), default='raw')
    ap.add_argument('--faults', required=True, help='comma-separated fault names (see the docstring)')
    ap.add_argument('--baseline-s', type=float, default=2.5)
    ap.add_argument('--phase-s', type=float, default=2.5)
    ap.add_argument('--gap-s', type=float, default=1.0)
    ap.add_argument('--rate', type=float, default=12.0)
    ap.add_argument('--node', default='/occupancy_node')
    ap.add_argument('--wait', type=float, default=120.0)
    ap.add_argument('--linger', type=float, default=3.0)
    args = ap.parse_args(argv)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from occ_ros.core.config import NUSCENES_CAMERAS
    from occ_ros.geometry import nuscenes_rig
    from occ_ros.msg import PanopticOccupancy
    from occ_ros.ros import convert as cv

    rclpy.init()
    node = rclpy.create_node('test_hostile_publisher')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    compressed = args.transport == 'compressed'
    rig = nuscenes_rig(HW)
    K_fault = rig.camera(FAULT_CAMERA).K

    def info_for(hw: tuple[int, int], K: np.ndarray = K_fault) -> CameraInfo:
        s = np.diag([hw[1] / HW[1], hw[0] / HW[0], 1.0])
        return cv.camera_info_msg(s @ K, hw, 0, 'x')

    def image(rgb: np.ndarray, frame: str) -> object:
        if compressed:
            return cv.rgb_to_compressed_msg(rgb, 0, frame, 'jpeg', 85)
        return cv.rgb_to_image_msg(rgb, 0, frame, 'rgb8')

    pubs, infos, good, good_info = {}, {}, {}, {}
    for i, cam in enumerate(NUSCENES_CAMERAS):
        topic = f'/{cam}/image_raw' + ('/compressed' if compressed else '')
        pubs[cam] = node.create_publisher(CompressedImage if compressed else Image, topic, qos)
        infos[cam] = node.create_publisher(CameraInfo, f'/{cam}/camera_info', qos)
        good[cam] = image(picture(HW, i), f'{cam.lower()}_optical')
        good_info[cam] = cv.camera_info_msg(rig.camera(cam).K, HW, 0, f'{cam.lower()}_optical')
    odom = node.create_publisher(Odometry, '/odom', QoSProfile(depth=50))

    # ---------------------------------------------------------------- the faults: (image, info)
    def strip(hw: tuple[int, int]) -> tuple[object, CameraInfo]:
        return image(picture(hw, 9), 'f'), info_for(hw)

    def compressed_bytes(data: bytes, fmt: str = 'jpeg') -> object:
        m = CompressedImage(format=fmt)
        m.data = data
        return m

    jpeg = bytes(good[FAULT_CAMERA].data) if compressed else b''
    faults: dict[str, tuple[object, CameraInfo]] = {
        'wide_strip': strip((8, 4000)), 'tall_strip': strip((4000, 8)), 'tiny': strip((2, 2)),
        'info_mismatch': (good[FAULT_CAMERA], info_for((900, 1600))),
        'nan_info': (good[FAULT_CAMERA], cv.camera_info_msg(np.full((3, 3), np.nan), HW, 0, 'x')),
        'odom_disorder': (good[FAULT_CAMERA], good_info[FAULT_CAMERA]),
    }
    if compressed:
        damaged = bytearray(jpeg)
        mid = len(damaged) // 2
        damaged[mid:mid + 40] = b'\xff\x00' * 20
        damaged[mid + 48:mid + 50] = b'\xff\xd0'
        faults.update({
            'png_bomb': (compressed_bytes(png_header(10000, 10000), 'png'), info_for((10000, 10000))),
            'corrupt_jpeg': (compressed_bytes(bytes(damaged)), good_info[FAULT_CAMERA]),
            'truncated_jpeg': (compressed_bytes(jpeg[:len(jpeg) // 2]), good_info[FAULT_CAMERA]),
            'garbage': (compressed_bytes(bytes(range(256)) * 40), good_info[FAULT_CAMERA]),
            'theora': (compressed_bytes(jpeg, 'theora'), good_info[FAULT_CAMERA]),
        })
    else:
        mono = Image(height=HW[0], width=HW[1], encoding='mono8', step=HW[1])
        mono.data = bytes(HW[0] * HW[1])
        short = Image(height=HW[0], width=HW[1], encoding='rgb8', step=HW[1] * 3)
        short.data = bytes(1000)
        big = (1200, 1400)
        faults.update({
            'oversized': (image(np.zeros(big + (3,), np.uint8), 'f'), info_for(big)),
            'wrong_encoding': (mono, good_info[FAULT_CAMERA]),
            'short_data': (short, good_info[FAULT_CAMERA]),
            'malformed_cdr': ('malformed_cdr', good_info[FAULT_CAMERA]),      # built per stamp below
            'truncated_cdr': ('truncated_cdr', good_info[FAULT_CAMERA]),
        })
    program = [f for f in args.faults.split(',') if f]
    unknown = [f for f in program if f not in faults]
    if unknown:
        print(f'hostile_publisher: unknown faults for {args.transport}: {unknown}', file=sys.stderr)
        return 2

    # ---------------------------------------------------------------- the recorder
    lock = threading.Lock()
    outputs: list = []
    diagnostics: list = []
    node_name = args.node.lstrip('/')

    def on_panoptic(m: PanopticOccupancy) -> None:
        with lock:
            outputs.append([cv.stamp_to_ns(m.header.stamp), list(m.missing_cameras)])

    def on_diag(m: DiagnosticArray) -> None:
        t = time.time()
        with lock:
            for st in m.status:
                if st.name.lstrip('/').startswith(node_name):
                    level = st.level[0] if isinstance(st.level, bytes) else int(st.level)
                    diagnostics.append([t, st.name, level, st.message, {kv.key: kv.value for kv in st.values}])

    node.create_subscription(PanopticOccupancy, f'{args.node}/panoptic', on_panoptic, qos)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:       # rclpy.try_shutdown() below: spin returns
            pass
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    def close() -> None:
        # Shut the context down first (the spinning thread's wait returns), join it, then destroy:
        # a C++ executor thread still waiting when the interpreter exits aborts the process
        # (SIGABRT, "terminate called without an active exception").
        rclpy.try_shutdown()
        spinner.join(timeout=10.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()

    t0 = time.monotonic()
    while time.monotonic() - t0 < args.wait:
        if all(p.get_subscription_count() > 0 for p in pubs.values()):
            break
        time.sleep(0.05)
    else:
        print('hostile_publisher: the node never subscribed', file=sys.stderr)
        close()
        return 3
    time.sleep(0.5)
    print('hostile_publisher: publishing', flush=True)

    schedule = [('good', args.baseline_s)]
    for f in program:
        schedule += [(f, args.phase_s), (f'after_{f}', args.gap_s)]
    sets, phases = [], []
    period = 1.0 / args.rate
    wall0 = time.time_ns()
    start = time.monotonic()
    k = 0
    for name, dur in schedule:
        phase_start = time.time()
        phase_end_mono = time.monotonic() + dur
        fault = faults.get(name)
        while time.monotonic() < phase_end_mono:
            target = start + k * period
            if target > time.monotonic():
                time.sleep(target - time.monotonic())
            stamp = wall0 + int(round((target - start) * 1e9))
            T = np.eye(4)
            T[0, 3] = 5.0 * (stamp - wall0) / 1e9
            for cam in NUSCENES_CAMERAS:
                msg, info = good[cam], good_info[cam]
                if fault is not None and cam == FAULT_CAMERA:
                    msg, info = fault
                info.header.stamp = cv.ns_to_stamp(stamp)
                infos[cam].publish(info)
                if msg in ('malformed_cdr', 'truncated_cdr'):
                    m = good[cam]
                    m.header.stamp = cv.ns_to_stamp(stamp)     # type: ignore[attr-defined]
                    raw = bytearray(serialize_message(m))
                    if msg == 'malformed_cdr':
                        raw[8:12] = struct.pack('<I', 2_000_000_000)       # nanosec ≥ 1e9
                    else:
                        raw = raw[:200]
                    pubs[cam].publish(bytes(raw))
                    continue
                msg.header.stamp = cv.ns_to_stamp(stamp)       # type: ignore[attr-defined]
                pubs[cam].publish(msg)
            if name == 'odom_disorder':
                # pairs sent in swapped order, a second source 0.15 s behind, and one stale sample
                if k % 2 == 0:
                    odom.publish(cv.odometry_msg(T, stamp + int(period * 1e9), 'odom', 'base_link'))
                odom.publish(cv.odometry_msg(T, stamp, 'odom', 'base_link'))
                odom.publish(cv.odometry_msg(T, stamp - 150_000_000, 'odom', 'base_link'))
                if k % 6 == 0:
                    odom.publish(cv.odometry_msg(T, stamp - 2_000_000_000, 'odom', 'base_link'))
            else:
                odom.publish(cv.odometry_msg(T, stamp, 'odom', 'base_link'))
            sets.append([stamp, name])
            k += 1
        phases.append([name, phase_start, time.time()])
    time.sleep(args.linger)
    with lock:
        report = {'sets': sets, 'phases': phases, 'outputs': list(outputs), 'diagnostics': list(diagnostics),
                  'fault_camera': FAULT_CAMERA}
    with open(args.out + '.tmp', 'w') as fh:
        json.dump(report, fh)
    os.replace(args.out + '.tmp', args.out)
    close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
