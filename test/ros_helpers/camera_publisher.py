"""Test publisher: six synthetic camera streams + CameraInfo + odometry, with fault scenarios.

    python camera_publisher.py --out stamps.json --duration 4 --scenario dead_camera

Scenarios (the fault starts at --fault-after seconds):
    normal          all cameras, stamps = wall clock
    dead_camera     --fault-camera stops publishing (images and CameraInfo)
    wrong_encoding  --fault-camera publishes mono8 images
    time_jump       every stamp jumps back by --jump-back seconds (a bag loop)
    zero_k          --fault-camera publishes a CameraInfo whose K is all zeros
--tf also publishes TF (needs tf2_msgs): the camera extrinsics base_link → <cam>_optical once on
/tf_static (reliable, transient local, sent BEFORE waiting for the node, so only latching can deliver
it), from --tf-rig (a rig YAML) or the nuScenes rig; and odom → base_link on /tf with every set,
before its images (the same pose as /odom). Without --tf nothing changes.
Writes JSON: {"sets": [[stamp_ns, phase], ...], "waited_s": …} — one entry per published camera set.
Waits (bounded by --wait) until the node subscribes to every image topic (and to /tf with --tf)
before sending. With --await-output the fault phase starts at --fault-after or at the first output
received on that topic, whichever is later, and lasts --duration − --fault-after as always.
--await-file PATH makes that "first output" the moment PATH exists (the recorder's
output_subscriber.py --first-output-file): an output this publisher receives does not mean the
recorder, a different participant with its own discovery, received one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--duration', type=float, default=4.0)
    ap.add_argument('--rate', type=float, default=12.0)
    ap.add_argument('--height', type=int, default=450)
    ap.add_argument('--width', type=int, default=800)
    ap.add_argument('--encoding', default='rgb8', choices=('rgb8', 'bgr8', 'jpeg'))
    ap.add_argument('--scenario', default='normal',
                    choices=('normal', 'dead_camera', 'wrong_encoding', 'time_jump', 'zero_k'))
    ap.add_argument('--fault-camera', default='CAM_BACK')
    ap.add_argument('--fault-after', type=float, default=1.5)
    ap.add_argument('--jump-back', type=float, default=30.0)
    ap.add_argument('--speed', type=float, default=5.0, help='ego speed, m/s along x')
    ap.add_argument('--wait', type=float, default=120.0, help='max seconds to wait for the node')
    ap.add_argument('--await-output', default='',
                    help='also wait until this output topic (~/panoptic) has a subscriber (the test\'s '
                         'recorder), so that the sets published before a fault are not lost to its late '
                         'discovery; and start the fault only once an output has come back on it (at most '
                         '--wait s later), so that there are outputs from before the fault whatever the '
                         'node\'s own discovery of this publisher took')
    ap.add_argument('--await-file', default='',
                    help='with --await-output: the first output counts once this file exists (written by the '
                         'recorder on its first output) instead of when this publisher receives one')
    ap.add_argument('--no-odom', action='store_true')
    ap.add_argument('--prefix', default='', help='namespace of the camera topics: <prefix>/<camera>/image_raw, …')
    ap.add_argument('--linger', type=float, default=1.0, help='seconds to stay up after the last set')
    ap.add_argument('--tf', action='store_true',
                    help='also publish /tf_static extrinsics and odom → base_link on /tf')
    ap.add_argument('--tf-rig', default='', help='rig YAML whose extrinsics go on /tf_static (default: nuScenes)')
    args = ap.parse_args(argv)

    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from occ_ros.core.config import NUSCENES_CAMERAS
    from occ_ros.geometry import nuscenes_rig
    from occ_ros.ros import convert as cv

    rclpy.init()
    node = rclpy.create_node('test_camera_publisher')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    hw = (args.height, args.width)
    rig = nuscenes_rig(hw)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:hw[0], 0:hw[1]]
    pubs, infos, msgs, info_msgs, bad_msgs = {}, {}, {}, {}, {}
    compressed = args.encoding == 'jpeg'
    for i, cam in enumerate(NUSCENES_CAMERAS):
        topic = f'{args.prefix}/{cam}/image_raw' + ('/compressed' if compressed else '')
        pubs[cam] = node.create_publisher(CompressedImage if compressed else Image, topic, qos)
        infos[cam] = node.create_publisher(CameraInfo, f'{args.prefix}/{cam}/camera_info', qos)
        # a sky-over-ground picture with per-camera tint and noise (not constant: exercises the net)
        rgb = np.zeros(hw + (3,), np.uint8)
        rgb[..., 0] = (x * 255 // hw[1] + 40 * i) % 256
        rgb[..., 1] = np.where(y < hw[0] // 2, 180, 90)
        rgb[..., 2] = rng.integers(0, 256, hw, dtype=np.uint8)
        if compressed:
            msgs[cam] = cv.rgb_to_compressed_msg(rgb, 0, f'{cam.lower()}_optical', 'jpeg', 85)
        else:
            msgs[cam] = cv.rgb_to_image_msg(rgb, 0, f'{cam.lower()}_optical', args.encoding)
        mono = Image(height=hw[0], width=hw[1], encoding='mono8', step=hw[1])
        mono.header.frame_id = f'{cam.lower()}_optical'
        mono.data = rgb[..., 0].tobytes()
        bad_msgs[cam] = mono
        info_msgs[cam] = cv.camera_info_msg(rig.camera(cam).K, hw, 0, f'{cam.lower()}_optical')
    zero_info = cv.camera_info_msg(np.zeros((3, 3)), hw, 0, 'zero')
    odom = node.create_publisher(Odometry, '/odom', QoSProfile(depth=50))
    tf_pub = None
    if args.tf:
        from rclpy.qos import DurabilityPolicy
        from tf2_msgs.msg import TFMessage

        from occ_ros.geometry import load_rig
        tf_rig = load_rig(args.tf_rig) if args.tf_rig else rig
        static_pub = node.create_publisher(TFMessage, '/tf_static', QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        static_pub.publish(TFMessage(transforms=[
            cv.matrix_to_transform_msg(tf_rig.camera(cam).sensor2ego, time.time_ns(), 'base_link',
                                       f'{cam.lower()}_optical') for cam in NUSCENES_CAMERAS]))
        tf_pub = node.create_publisher(TFMessage, '/tf', QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    t0 = time.monotonic()
    while time.monotonic() - t0 < args.wait:
        if all(p.get_subscription_count() > 0 for p in pubs.values()) and (
                tf_pub is None or tf_pub.get_subscription_count() > 0) and (
                not args.await_output or node.count_subscribers(args.await_output) > 0):
            break
        time.sleep(0.05)
    else:
        print('camera_publisher: the node (or the recorder) never subscribed', file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 3
    waited = time.monotonic() - t0
    outputs_seen = [0]
    if args.await_output and not args.await_file:
        from rclpy.qos import qos_profile_sensor_data

        from occ_ros.msg import PanopticOccupancy
        node.create_subscription(PanopticOccupancy, args.await_output,
                                 lambda _: outputs_seen.__setitem__(0, outputs_seen[0] + 1),
                                 qos_profile_sensor_data, raw=True)     # best effort: matches any writer
    time.sleep(0.3)                                     # let the remaining endpoints match
    print('camera_publisher: publishing', flush=True)

    sets = []
    period = 1.0 / args.rate
    start = time.monotonic()
    wall0 = time.time_ns()
    k = 0
    fault_start = None                      # elapsed time when the fault phase began
    try:
        while True:
            target = start + k * period
            now = time.monotonic()
            end = args.duration if fault_start is None else fault_start + args.duration - args.fault_after
            if target - start > end:
                break
            if target > now:
                time.sleep(target - now)
            elapsed = target - start
            if args.await_file:
                outputs_seen[0] = int(os.path.exists(args.await_file))
            elif args.await_output:
                rclpy.spin_once(node, timeout_sec=0.0)
            if fault_start is None and elapsed >= args.fault_after and (
                    not args.await_output or outputs_seen[0] > 0 or elapsed >= args.fault_after + args.wait):
                fault_start = elapsed
            fault = fault_start is not None and args.scenario != 'normal'
            stamp = wall0 + int(round(elapsed * 1e9))
            if fault and args.scenario == 'time_jump':
                stamp -= int(args.jump_back * 1e9)
            phase = 'fault' if fault else 'before'
            T_odom_base = np.eye(4)
            T_odom_base[0, 3] = args.speed * (stamp - wall0) / 1e9
            if tf_pub is not None:
                tf_pub.publish(TFMessage(transforms=[cv.matrix_to_transform_msg(T_odom_base, stamp, 'odom',
                                                                                'base_link')]))
            for cam in NUSCENES_CAMERAS:
                if fault and cam == args.fault_camera and args.scenario == 'dead_camera':
                    continue
                info = info_msgs[cam]
                if fault and cam == args.fault_camera and args.scenario == 'zero_k':
                    info = zero_info
                info.header.stamp = cv.ns_to_stamp(stamp)
                infos[cam].publish(info)
                m = msgs[cam]
                if fault and cam == args.fault_camera and args.scenario == 'wrong_encoding':
                    m = bad_msgs[cam]
                m.header.stamp = cv.ns_to_stamp(stamp)
                pubs[cam].publish(m)
            if not args.no_odom:
                odom.publish(cv.odometry_msg(T_odom_base, stamp, 'odom', 'base_link'))
            sets.append([stamp, phase])
            k += 1
    except KeyboardInterrupt:
        pass
    # Reliable samples still in the writer queues are lost if the participant goes away at once.
    linger_end = time.monotonic() + args.linger
    while time.monotonic() < linger_end:
        time.sleep(0.05)
    with open(args.out + '.tmp', 'w') as f:
        json.dump({'sets': sets, 'waited_s': waited, 'fault_after': args.fault_after}, f)
    os.replace(args.out + '.tmp', args.out)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
