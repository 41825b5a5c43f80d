"""Test subscriber: records every output of the occupancy node and checks each one's content.

    python output_subscriber.py --node /occupancy_node --out report.json --duration 6

Per panoptic message it keeps the arrays; at the end every occupancy grid, voxel MarkerArray and
instance MarkerArray is checked against the panoptic message of the same stamp:
    grid     == occupancy_grid_values(panoptic) with the node's default band and ground classes
    voxels   every cube is a non-free, visible voxel of its marker's class; count = min(cap, total)
    instances one box + label per instance-table entry
Writes a JSON report (types, frames, stamps, check results, the last diagnostics).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--node', default='/occupancy_node')
    ap.add_argument('--out', required=True)
    ap.add_argument('--duration', type=float, default=6.0)
    ap.add_argument('--max-voxels', type=int, default=20000)
    ap.add_argument('--wait', type=float, default=120.0, help='max seconds to wait for the node')
    ap.add_argument('--publisher-report', default='',
                    help="the camera publisher's JSON: once it exists, stop after the output for its "
                         'last set (or --idle seconds without output)')
    ap.add_argument('--idle', type=float, default=20.0)
    ap.add_argument('--first-output-file', default='',
                    help='created when the first ~/panoptic message arrives: a publisher waiting on it '
                         '(camera_publisher.py --await-file) knows this recorder, not just itself, gets outputs')
    args = ap.parse_args(argv)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from visualization_msgs.msg import Marker, MarkerArray

    from occ_ros.core.classes import FREE, OCC_CLASSES
    from occ_ros.core.config import AxisSpec, GridSpec
    from occ_ros.core.occupancy import occupancy_from_message
    from occ_ros.msg import Float64Stamped, PanopticOccupancy
    from occ_ros.ros.convert import stamp_to_ns
    from occ_ros.ros.params import NodeParams
    from occ_ros.ros.publish import default_obstacle_classes, occupancy_grid_values

    rclpy.init()
    node = rclpy.create_node('test_output_subscriber')
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    rec: dict = {k: [] for k in ('panoptic', 'grid', 'voxels', 'instances', 'processing', 'latency')}
    panoptic: dict[int, tuple[Any, Any]] = {}    # stamp → (grid, Occupancy)
    grids: list = []
    voxels: list = []
    instances: list = []
    diag: dict = {}              # status name → the last status
    diag_history: dict = {}      # status name → every status received (bounded)
    first_rx = [None]

    def on_panoptic(m: PanopticOccupancy) -> None:
        s = stamp_to_ns(m.header.stamp)
        if first_rx[0] is None and args.first_output_file:
            with open(args.first_output_file + '.tmp', 'w') as f:
                f.write(str(s))
            os.replace(args.first_output_file + '.tmp', args.first_output_file)
        first_rx[0] = first_rx[0] or time.monotonic()
        n = m.size_x * m.size_y * m.size_z
        shape = (m.size_x, m.size_y, m.size_z)
        rec['panoptic'].append({
            'stamp': s, 'frame': m.header.frame_id, 'type': type(m).__name__, 'shape': list(shape),
            'len_ok': len(m.semantics) == n and len(m.instances) == n and len(m.visible) in (0, n),
            'missing': list(m.missing_cameras), 'instances': len(m.instance_table),
            'class_names_ok': list(m.class_names) == list(OCC_CLASSES) and m.free_label == FREE,
            'table_ids_ok': all(e.id > 0 for e in m.instance_table),
            'nonfree': int((np.frombuffer(m.semantics, np.uint8) != FREE).sum()),
            'visible_frac': float(np.frombuffer(m.visible, np.uint8).mean()) if len(m.visible) else None,
        })
        grid = GridSpec(AxisSpec(m.origin.x, m.origin.x + m.size_x * m.voxel_size.x, m.voxel_size.x, 'x'),
                        AxisSpec(m.origin.y, m.origin.y + m.size_y * m.voxel_size.y, m.voxel_size.y, 'y'),
                        AxisSpec(m.origin.z, m.origin.z + m.size_z * m.voxel_size.z, m.voxel_size.z, 'z'))
        panoptic[s] = (grid, occupancy_from_message(m))
        while len(panoptic) > 80:
            del panoptic[min(panoptic)]

    def on_grid(m: OccupancyGrid) -> None:
        grids.append(m)

    def on_voxels(m: MarkerArray) -> None:
        voxels.append(m)

    def on_instances(m: MarkerArray) -> None:
        instances.append(m)

    def on_diag(m: DiagnosticArray) -> None:
        for st in m.status:
            if st.name.startswith(args.node.lstrip('/')) or st.name.startswith(args.node):
                diag[st.name] = {'level': st.level[0] if isinstance(st.level, bytes) else int(st.level),
                                 'message': st.message, 'values': {kv.key: kv.value for kv in st.values}}
                hist = diag_history.setdefault(st.name, [])
                hist.append(diag[st.name])
                del hist[:-200]

    def on_float(key: str):
        return lambda m: rec[key].append({'stamp': stamp_to_ns(m.header.stamp), 'frame': m.header.frame_id,
                                          'value': m.data})

    base = args.node.rstrip('/')
    node.create_subscription(PanopticOccupancy, f'{base}/panoptic', on_panoptic, rel)
    node.create_subscription(OccupancyGrid, f'{base}/occupancy_grid', on_grid, rel)
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(MarkerArray, f'{base}/voxels', on_voxels, reliable)
    node.create_subscription(MarkerArray, f'{base}/instances', on_instances, reliable)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, rel)
    node.create_subscription(Float64Stamped, f'{base}/debug/processing_time_ms', on_float('processing'), rel)
    node.create_subscription(Float64Stamped, f'{base}/debug/pipeline_latency_ms', on_float('latency'), rel)

    stop = [False]

    def on_signal(*_a) -> None:
        stop[0] = True
    signal.signal(signal.SIGTERM, on_signal)
    start = time.monotonic()
    last_stamp = None
    last_rx = [start]
    n_seen = [0]
    try:
        while not stop[0]:
            rclpy.spin_once(node, timeout_sec=0.05)
            now = time.monotonic()
            if len(rec['panoptic']) != n_seen[0]:
                n_seen[0] = len(rec['panoptic'])
                last_rx[0] = now
            if args.publisher_report:
                if last_stamp is None and os.path.exists(args.publisher_report):
                    with open(args.publisher_report) as f:
                        sets = json.load(f)['sets']
                    last_stamp = sets[-1][0] if sets else -1
                    last_rx[0] = now
                if last_stamp is not None:
                    got_grid = any(stamp_to_ns(g.header.stamp) == last_stamp for g in grids[-3:])
                    if (last_stamp in panoptic and got_grid) or now - last_rx[0] > args.idle:
                        t_end = now + 0.3                 # let the other topics of that set arrive
                        while time.monotonic() < t_end:
                            rclpy.spin_once(node, timeout_sec=0.05)
                        break
                if now - start > args.wait + args.duration:
                    break
                continue
            if first_rx[0] is None and now - start > args.wait:
                break
            if first_rx[0] is not None and now - first_rx[0] > args.duration:
                break
    except (KeyboardInterrupt, Exception) as exc:        # ExternalShutdownException on SIGINT
        if not isinstance(exc, KeyboardInterrupt) and type(exc).__name__ != 'ExternalShutdownException':
            raise

    # ---------------------------------------------------------------- cross-checks
    defaults = NodeParams.from_mapping({})
    obstacles = default_obstacle_classes(defaults.ground_class_ids)
    for g in grids:
        s = stamp_to_ns(g.header.stamp)
        data = np.asarray(g.data, np.int8)
        entry = {'stamp': s, 'frame': g.header.frame_id, 'type': type(g).__name__,
                 'size': [g.info.width, g.info.height], 'resolution': g.info.resolution,
                 'origin': [g.info.origin.position.x, g.info.origin.position.y],
                 'values': sorted(int(v) for v in np.unique(data)),
                 'unknown_frac': float((data == -1).mean()) if data.size else None,
                 'matches_panoptic': None}
        got = panoptic.get(s)
        if got is not None:
            grid, p = got
            expect = occupancy_grid_values(p, grid, (defaults.grid_z_min, defaults.grid_z_max), obstacles)
            entry['matches_panoptic'] = bool(np.array_equal(expect.ravel(), data))
            # behind the ego (x = -20 m, y = 0): the CAM_BACK frustum
            ix, iy = int((-20.0 - grid.x.lo) / grid.x.step), int((0.0 - grid.y.lo) / grid.y.step)
            entry['behind_value'] = int(data[iy * g.info.width + ix])
        rec['grid'].append(entry)
    for v in voxels:
        adds = [m for m in v.markers if m.action == Marker.ADD]
        s = stamp_to_ns(adds[0].header.stamp) if adds else (
            stamp_to_ns(v.markers[0].header.stamp) if v.markers else None)
        entry = {'stamp': s, 'frames': sorted({m.header.frame_id for m in v.markers}), 'type': type(v).__name__,
                 'types_ok': all(m.type == Marker.CUBE_LIST for m in adds),
                 'ids_ok': all(m.ns in OCC_CLASSES and OCC_CLASSES.index(m.ns) == m.id and m.id != FREE
                               for m in v.markers),
                 'points': sum(len(m.points) for m in adds), 'consistent': None}
        got = panoptic.get(s)
        if got is not None:
            g, p = got
            ok = True
            for m in adds:
                xyz = np.array([(q.x, q.y, q.z) for q in m.points]).reshape(-1, 3)
                ijk = np.floor((xyz - np.array(g.lower)) / np.array(g.voxel)).astype(int)
                ok &= bool((p.semantics[tuple(ijk.T)] == m.id).all())
                if p.mask_camera is not None:
                    ok &= bool(p.mask_camera[tuple(ijk.T)].all())
            shown = (p.semantics != FREE) & (p.mask_camera if p.mask_camera is not None else True)
            entry['consistent'] = ok and entry['points'] == min(args.max_voxels, int(shown.sum()))
        rec['voxels'].append(entry)
    for v in instances:
        s = stamp_to_ns(v.markers[0].header.stamp) if v.markers else None
        boxes = sorted(m.id for m in v.markers if m.ns == 'instances')
        labels = sorted(m.id for m in v.markers if m.ns == 'instance_labels')
        entry = {'stamp': s, 'first_is_deleteall': bool(v.markers) and v.markers[0].action == Marker.DELETEALL,
                 'boxes': len(boxes), 'consistent': None}
        got = panoptic.get(s)
        if got is not None:
            entry['consistent'] = boxes == labels == sorted(i.id for i in got[1].instance_table)
        rec['instances'].append(entry)
    rec['diagnostics'] = diag
    rec['diagnostics_history'] = diag_history
    with open(args.out + '.tmp', 'w') as f:
        json.dump(rec, f)
    os.replace(args.out + '.tmp', args.out)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
