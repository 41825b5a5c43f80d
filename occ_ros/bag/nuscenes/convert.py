"""nuScenes scene → rosbag2: the bag the synthetic world would have given (cameras, CameraInfo,
odometry, TF, rig file, Occ3D ground truth)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from occ_ros.bag.nuscenes.scene import (
    SceneData,
    ego_twists,
    find_gt_file,
    load_occ3d_gt,
    load_scene,
    odometry_track,
)
from occ_ros.bag.nuscenes.tables import (
    LOG,
    NuScenesError,
    PathLike,
    listing,
    open_tables,
)
from occ_ros.bag.writer import (
    BASE_FRAME,
    GT_TOPIC,
    ODOM_FRAME,
    RIG_FILE,
    BagSink,
    MessageFactory,
    camera_frame_id,
    camera_info_topic,
    image_topic,
    new_bag_target,
    project_typestore,
)
from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import BagError
from occ_ros.core.occ3d import GT_FILENAME
from occ_ros.geometry import save_rig

MAP_FRAME = 'map'
SCENE_FILE = 'nuscenes.json'
IMAGE_FORMAT = 'jpeg'

Progress = Callable[[int, int, float], None]    # (messages written, total, seconds since writing began)


def print_progress(done: int, total: int, elapsed: float) -> None:
    """One progress line on stderr: messages, rate, ETA."""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float('nan')
    end = '\n' if done >= total else ''
    sys.stderr.write(f'\r[nuscenes-to-bag] message {done}/{total}  {rate:7.1f} msg/s  '
                     f'elapsed {elapsed:6.1f} s  ETA {eta:6.1f} s ' + end)
    sys.stderr.flush()


@dataclass
class NuScenesBagSummary:
    """What `convert_scene` wrote."""

    path: Path
    scene: str
    reader: str
    images: int
    keyframes: int
    gt_frames: int
    odometry: int
    messages: int
    start_ns: int
    end_ns: int
    seconds: float
    topics: dict[str, int] = field(default_factory=dict)


def _scene_metadata(scene: SceneData, T_map_odom: np.ndarray, odom_start_ns: int,
                    gt_written: Iterable[str]) -> dict[str, Any]:
    with_gt = set(gt_written)
    return {
        'format': 'occ_ros.nuscenes_scene', 'version': 1,
        'scene': scene.name, 'scene_token': scene.token, 'nuscenes_version': scene.version,
        'reader': scene.reader, 'log': scene.log,
        'calibrated_sensor_tokens': scene.calibrated_sensor_tokens,
        'odom': {'frame': ODOM_FRAME, 'parent': MAP_FRAME, 'stamp_ns': int(odom_start_ns),
                 'T_map_odom': [[float(v) for v in row] for row in T_map_odom]},
        'ground_truth_topic': GT_TOPIC,
        'keyframes': [{'sample_token': k.sample_token, 'stamp_ns': k.stamp_ns,
                       'camera_stamps_ns': dict(k.camera_stamps_ns),
                       'ground_truth': k.sample_token in with_gt} for k in scene.keyframes],
    }


def convert_scene(dataroot: PathLike, version: str, scene_name: str, out: PathLike, *,
                  occ_gts: Optional[PathLike] = None, storage: str = 'mcap', keyframes_only: bool = False,
                  reader: str = 'auto', grid: GridSpec = OCC3D_GRID, skip_missing_gt: bool = False,
                  progress: Optional[Progress] = None, progress_every: int = 500) -> NuScenesBagSummary:
    """Convert nuScenes scene `scene_name` into a rosbag2 bag at `out` (see the module docstring).

    Everything that can be checked is checked before the bag is created (dataroot, version,
    scene, tables, image files and sizes, ground-truth files); a failure while writing removes
    the partial bag. Raises NuScenesError / BagError / OccFileError with what to fix.
    """
    t_start = time.perf_counter()
    out, plugin = new_bag_target(out, storage)
    if progress_every < 1:
        raise BagError(f'progress_every must be >= 1, got {progress_every}')
    tables = open_tables(dataroot, version, reader)
    scene = load_scene(tables, scene_name, keyframes_only=keyframes_only)

    gt_files: dict[str, Path] = {}
    if occ_gts is not None:
        if not Path(occ_gts).is_dir():
            raise NuScenesError(f'--occ-gts {occ_gts} is not a directory (expected the Occ3D gts/ tree: '
                                f'<scene>/<sample_token>/labels.npz)')
        absent = []
        for k in scene.keyframes:
            p = find_gt_file(occ_gts, scene.name, k.sample_token)
            if p is None:
                absent.append(k.sample_token)
            else:
                gt_files[k.sample_token] = p
        if absent and not skip_missing_gt:
            raise NuScenesError(
                f'{len(absent)} of {len(scene.keyframes)} keyframe sample(s) of {scene.name} have no '
                f'{GT_FILENAME} under {occ_gts} (looked for <scene>/<token>/{GT_FILENAME} and '
                f'<token>/{GT_FILENAME}): {listing(absent)}. Pass --skip-missing-gt to convert without them')
        for tok in absent:
            LOG.warning('no Occ3D ground truth for sample %s: skipped', tok)

    odom_stamps, odom_poses, T_map_odom = odometry_track(scene)
    lin, ang = ego_twists(odom_stamps, odom_poses)

    # Events in time order; ties: odometry, then camera info + image (rig order), then GT.
    events: list[tuple[int, int, int, str, Any]] = [(odom_stamps[i], 0, i, 'odom', i) for i in range(len(odom_stamps))]
    cam_rank = {n: i for i, n in enumerate(scene.rig.names)}
    events += [(im.stamp_ns, 1, cam_rank[im.channel], 'image', im) for im in scene.images]
    events += [(k.stamp_ns, 2, 0, 'gt', k) for k in scene.keyframes if k.sample_token in gt_files]
    events.sort(key=lambda e: e[:3])
    t0 = events[0][0]
    total = 1 + sum(1 if e[3] == 'gt' else 2 for e in events)

    ts = project_typestore()
    mk = MessageFactory(ts)
    last_report = 0
    t_write = time.perf_counter()
    sink = BagSink(out, plugin, ts)
    try:
        def put(topic: str, stamp: int, msg: Any) -> None:
            nonlocal last_report
            sink.put(topic, stamp, msg)
            written = sink.written
            if progress is not None and (written - last_report >= progress_every or written == total):
                last_report = written
                progress(written, total, time.perf_counter() - t_write)

        sink.add_rig_topics(scene.rig, compressed=True, ground_truth=occ_gts is not None)
        save_rig(scene.rig, out / RIG_FILE, comment='\n'.join(
            [f'From nuScenes {scene.version} scene {scene.name} ({scene.token}), log {scene.log.get("logfile")};',
             'calibrated_sensor tokens:']
            + [f'  {k}: {v}' for k, v in scene.calibrated_sensor_tokens.items()]))
        (out / SCENE_FILE).write_text(json.dumps(
            _scene_metadata(scene, T_map_odom, odom_stamps[0], gt_files), indent=1), encoding='utf-8')

        statics = [mk.transform(t0, MAP_FRAME, ODOM_FRAME, T_map_odom)]
        statics += [mk.transform(t0, BASE_FRAME, camera_frame_id(c.name), c.sensor2ego) for c in scene.rig]
        put('/tf_static', t0, mk.tf(statics))
        for stamp, _, _, kind, item in events:
            if kind == 'odom':
                pose = odom_poses[item]
                put('/tf', stamp, mk.tf([mk.transform(stamp, ODOM_FRAME, BASE_FRAME, pose)]))
                put('/odom', stamp, mk.odometry(stamp, pose, lin[item], ang[item]))
            elif kind == 'image':
                cam = scene.rig.camera(item.channel)
                fid = camera_frame_id(cam.name)
                try:
                    data = item.path.read_bytes()
                except OSError as exc:
                    raise NuScenesError(f'cannot read image {item.path}: {exc}') from exc
                put(camera_info_topic(cam.name), stamp, mk.camera_info(stamp, fid, cam.K, cam.image_hw))
                put(image_topic(cam.name, True), stamp, mk.CompressedImage(
                    header=mk.header(stamp, fid), format=IMAGE_FORMAT,
                    data=np.frombuffer(data, dtype=np.uint8)))
            else:
                put(GT_TOPIC, stamp, mk.panoptic(load_occ3d_gt(gt_files[item.sample_token], stamp, grid), grid))
    except BaseException:
        try:
            sink.close()
        finally:
            shutil.rmtree(out, ignore_errors=True)      # the directory did not exist before: ours
        raise
    sink.close()
    end = max(e[0] for e in events)
    return NuScenesBagSummary(out, scene.name, scene.reader, len(scene.images), len(scene.keyframes),
                              sink.counts.get(GT_TOPIC, 0), len(odom_stamps), sink.written, t0, end,
                              time.perf_counter() - t_start, sink.counts)
