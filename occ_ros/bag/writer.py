"""Write synthetic sequences into rosbag2 bags (MCAP or sqlite3) with rosbags — no rclpy needed.

Topics (frame ids in brackets):
- /<CAM>/image_raw            sensor_msgs/msg/Image rgb8            [<cam>_optical_frame]
  or /<CAM>/image_raw/compressed  sensor_msgs/msg/CompressedImage (JPEG, format
  'rgb8; jpeg compressed bgr8' as compressed_image_transport writes it)
- /<CAM>/camera_info          sensor_msgs/msg/CameraInfo (plumb_bob, zero distortion, P = [K|0];
                               with a lens: its model and D)
- /tf_static                  tf2_msgs/msg/TFMessage base_link → <cam>_optical_frame, once, at the
                              first stamp (offered QoS: reliable, transient_local, keep_last 1)
- /tf                         tf2_msgs/msg/TFMessage odom → base_link
- /odom                       nav_msgs/msg/Odometry odom → base_link, twist in base_link
- /ground_truth/panoptic      occ_ros/msg/PanopticOccupancy [base_link]

Odometry and /tf are written `odom_per_frame` times per camera frame (at every frame stamp and
evenly in between), so a consumer can either look the pose up exactly at a frame stamp or
interpolate. header.stamp of every message equals its bag timestamp. All six cameras of a
frame share one stamp (a synchronised rig), unless the bag is `staggered`: then each camera is
rendered and stamped at its own capture time (nuScenes firing order, ≈ 42 ms spread) and the
ground truth is at view 0's (the frame stamp).

Metadata version: 8. rosbag2 metadata v9 (Kilted's own) stores `offered_qos_profiles` as a
YAML list, which Humble's and Iron's readers cannot parse (they expect the v4–v8 string form);
Jazzy and Kilted read v8 (they read every version ≤ their own). So v8 bags open with
`ros2 bag` from Humble to Kilted. The MCAP file uses the `ros2` profile with `ros2msg`
schemas (rosbag2_storage_mcap), the sqlite3 file rosbag2's schema-4 layout.

The rig is also saved as `rig.yaml` inside the bag directory (`occ_ros.geometry.save_rig`);
rosbag2 ignores files it does not list in metadata.yaml.
"""
from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import cv2
import numpy as np

from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.paths import share_dirs
from occ_ros.core.occupancy import Occupancy, panoptic_fields
from occ_ros.core.errors import BagError, ConfigError
from occ_ros.geometry import matrix_to_quaternion_xyzw as matrix_to_quaternion

BASE_FRAME = 'base_link'
ODOM_FRAME = 'odom'
GT_TOPIC = '/ground_truth/panoptic'
GT_TYPE = 'occ_ros/msg/PanopticOccupancy'
INSTANCE_TYPE = 'occ_ros/msg/PanopticInstance'
PROJECT_TYPES = (INSTANCE_TYPE, GT_TYPE)          # dependency order
BAG_VERSION: Literal[8] = 8
RIG_FILE = 'rig.yaml'
JPEG_FORMAT = 'rgb8; jpeg compressed bgr8'


def camera_frame_id(name: str) -> str:
    """TF frame of a camera's optical frame: 'CAM_FRONT' → 'cam_front_optical_frame'."""
    return f'{name.lower()}_optical_frame'


def image_topic(name: str, compressed: bool) -> str:
    return f'/{name}/image_raw' + ('/compressed' if compressed else '')


def camera_info_topic(name: str) -> str:
    return f'/{name}/camera_info'


def find_msg_dir() -> Path:
    """The project's msg/ directory: the source tree's, else the installed share/occ_ros/msg."""
    candidates = [root / 'msg' for root in share_dirs()]
    for c in candidates:
        if (c / 'PanopticOccupancy.msg').is_file() and (c / 'PanopticInstance.msg').is_file():
            return c
    raise BagError('cannot find the occ_ros message definitions (PanopticOccupancy.msg, '
                   f'PanopticInstance.msg); looked in {[str(c) for c in candidates]}. Install the '
                   'package (share/occ_ros/msg) or run from the source tree.')


def project_typestore() -> Any:
    """A rosbags typestore (ROS 2 Kilted) with occ_ros/msg/* registered from msg/*.msg."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    ts = get_typestore(Stores.ROS2_KILTED)
    msg_dir = find_msg_dir()
    types: dict[str, Any] = {}
    for full in PROJECT_TYPES:
        name = full.rsplit('/', 1)[1]
        types.update(get_types_from_msg((msg_dir / f'{name}.msg').read_text(encoding='utf-8'), full))
    ts.register(types)
    return ts


def _qos(depth: int, transient_local: bool = False) -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    inf = QosTime(2147483647, 4294967295)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               inf, inf, QosLiveliness.AUTOMATIC, inf, False)


def encode_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """JPEG bytes (uint8 array) of an RGB image, stored BGR as compressed_image_transport does."""
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise BagError(f'JPEG encoding failed for a {rgb.shape} image')
    return buf.reshape(-1).astype(np.uint8)


class MessageFactory:
    """Builds rosbags message objects of the typestore `ts` (standard + occ_ros types)."""

    def __init__(self, ts: Any) -> None:
        self.ts = ts
        t = ts.types
        self.Time = t['builtin_interfaces/msg/Time']
        self.Header = t['std_msgs/msg/Header']
        self.Image = t['sensor_msgs/msg/Image']
        self.CompressedImage = t['sensor_msgs/msg/CompressedImage']
        self.CameraInfo = t['sensor_msgs/msg/CameraInfo']
        self.RegionOfInterest = t['sensor_msgs/msg/RegionOfInterest']
        self.TFMessage = t['tf2_msgs/msg/TFMessage']
        self.TransformStamped = t['geometry_msgs/msg/TransformStamped']
        self.Transform = t['geometry_msgs/msg/Transform']
        self.Vector3 = t['geometry_msgs/msg/Vector3']
        self.Quaternion = t['geometry_msgs/msg/Quaternion']
        self.Point = t['geometry_msgs/msg/Point']
        self.Pose = t['geometry_msgs/msg/Pose']
        self.PoseWithCovariance = t['geometry_msgs/msg/PoseWithCovariance']
        self.Twist = t['geometry_msgs/msg/Twist']
        self.TwistWithCovariance = t['geometry_msgs/msg/TwistWithCovariance']
        self.Odometry = t['nav_msgs/msg/Odometry']
        self.Panoptic = t[GT_TYPE]
        self.Instance = t[INSTANCE_TYPE]

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self.Header(stamp=self.Time(sec=int(stamp_ns // 1_000_000_000),
                                           nanosec=int(stamp_ns % 1_000_000_000)), frame_id=frame_id)

    def image(self, stamp_ns: int, frame_id: str, rgb: np.ndarray) -> Any:
        h, w = rgb.shape[:2]
        return self.Image(header=self.header(stamp_ns, frame_id), height=h, width=w, encoding='rgb8',
                          is_bigendian=0, step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))

    def compressed(self, stamp_ns: int, frame_id: str, rgb: np.ndarray, quality: int) -> Any:
        return self.compressed_bytes(stamp_ns, frame_id, encode_jpeg(rgb, quality))

    def compressed_bytes(self, stamp_ns: int, frame_id: str, jpeg: np.ndarray) -> Any:
        """CompressedImage from already encoded JPEG bytes (uint8 array, see `encode_jpeg`)."""
        return self.CompressedImage(header=self.header(stamp_ns, frame_id), format=JPEG_FORMAT, data=jpeg)

    def camera_info(self, stamp_ns: int, frame_id: str, K: np.ndarray, hw: tuple[int, int],
                    D: Sequence[float] = (0.0,) * 5, distortion_model: str = 'plumb_bob') -> Any:
        K = np.asarray(K, dtype=np.float64)
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.CameraInfo(
            header=self.header(stamp_ns, frame_id), height=int(hw[0]), width=int(hw[1]),
            distortion_model=distortion_model, d=np.asarray(D, dtype=np.float64), k=K.reshape(-1).copy(),
            r=np.eye(3).reshape(-1),
            p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=self.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def transform(self, stamp_ns: int, parent: str, child: str, T: np.ndarray) -> Any:
        qx, qy, qz, qw = matrix_to_quaternion(T[:3, :3])
        return self.TransformStamped(
            header=self.header(stamp_ns, parent), child_frame_id=child,
            transform=self.Transform(translation=self.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                                     rotation=self.Quaternion(x=qx, y=qy, z=qz, w=qw)))

    def tf(self, transforms: list) -> Any:
        return self.TFMessage(transforms=transforms)

    def odometry(self, stamp_ns: int, pose: np.ndarray, linear: Sequence[float],
                 angular: Sequence[float]) -> Any:
        """nav_msgs/Odometry odom → base_link: `pose` (4, 4), twist in base_link (m/s, rad/s)."""
        qx, qy, qz, qw = matrix_to_quaternion(pose[:3, :3])
        cov = np.zeros(36)
        return self.Odometry(
            header=self.header(stamp_ns, ODOM_FRAME), child_frame_id=BASE_FRAME,
            pose=self.PoseWithCovariance(pose=self.Pose(
                position=self.Point(x=float(pose[0, 3]), y=float(pose[1, 3]), z=float(pose[2, 3])),
                orientation=self.Quaternion(x=qx, y=qy, z=qz, w=qw)), covariance=cov),
            twist=self.TwistWithCovariance(twist=self.Twist(
                linear=self.Vector3(x=float(linear[0]), y=float(linear[1]), z=float(linear[2])),
                angular=self.Vector3(x=float(angular[0]), y=float(angular[1]), z=float(angular[2]))),
                covariance=cov.copy()))

    def panoptic(self, gt: Occupancy, grid: GridSpec, missing: Sequence[str] = ()) -> Any:
        f = panoptic_fields(gt, grid)
        table = [self.Instance(id=i.id, label=i.label, score=i.score,
                               center=self.Point(x=i.center[0], y=i.center[1], z=i.center[2]),
                               voxel_count=i.voxel_count) for i in f.instance_table]
        return self.Panoptic(
            header=self.header(gt.stamp_ns, BASE_FRAME), size_x=f.size[0], size_y=f.size[1], size_z=f.size[2],
            voxel_size=self.Vector3(x=f.voxel_size[0], y=f.voxel_size[1], z=f.voxel_size[2]),
            origin=self.Point(x=f.origin[0], y=f.origin[1], z=f.origin[2]),
            class_names=list(f.class_names), free_label=f.free_label, semantics=f.semantics,
            instances=f.instances, visible=f.visible, instance_table=table, missing_cameras=list(missing))


@dataclass
class BagSummary:
    """What a synthetic bag holds."""

    path: Path
    frames: int
    messages: int
    seconds_rendering: float          # rendering + ground truth (+ JPEG), summed over the workers
    seconds_total: float
    topics: dict[str, int] = field(default_factory=dict)


Progress = Callable[[int, int, float], None]       # (frames done — 0 once set up —, total, elapsed s)


def print_progress(done: int, total: int, elapsed: float) -> None:
    """Progress line on stderr: frames, rate, ETA (done = 0: the set-up before the first frame)."""
    if done == 0:
        sys.stderr.write(f'[synth] set up in {elapsed:.1f} s; rendering {total} frames\n')
        sys.stderr.flush()
        return
    fps = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / fps if fps > 0 else float('nan')
    end = '\n' if done == total else ''
    sys.stderr.write(f'\r[synth] frame {done}/{total}  {fps:5.2f} frames/s  '
                     f'elapsed {elapsed:6.1f} s  ETA {eta:6.1f} s ' + end)
    sys.stderr.flush()


def new_bag_target(out: str | Path, storage: str) -> tuple[Path, Any]:
    """Check a bag destination: (path, rosbags StoragePlugin). BagError if it exists or the storage is unknown."""
    from rosbags.rosbag2 import StoragePlugin

    plugins = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise BagError(f'unknown storage {storage!r}: choose mcap or sqlite3')
    path = Path(out)
    if path.exists():
        raise BagError(f'{path} exists already; rosbag2 bags are written into a new directory '
                       f'(remove it or choose another --out)')
    return path, plugins[storage]


def rig_topics(rig: Any, compressed: bool, ground_truth: bool) -> list[tuple[str, str, bool]]:
    """The project's bag layout as (topic, type, latched), in this order: /tf_static (latched),
    /tf, /odom, CameraInfo and image per camera (rig order), and the ground truth when
    `ground_truth` (the demo makes its player's publishers from it before the bag exists)."""
    img_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    out = [('/tf_static', 'tf2_msgs/msg/TFMessage', True), ('/tf', 'tf2_msgs/msg/TFMessage', False),
           ('/odom', 'nav_msgs/msg/Odometry', False)]
    for cam in rig:
        out += [(camera_info_topic(cam.name), 'sensor_msgs/msg/CameraInfo', False),
                (image_topic(cam.name, compressed), img_type, False)]
    if ground_truth:
        out.append((GT_TOPIC, GT_TYPE, False))
    return out


class BagSink:
    """An open rosbag2 bag: one connection per topic, CDR serialisation, per-topic counts.

    `with BagSink(path, plugin, typestore) as sink:` (path and plugin from `new_bag_target`)
    closes the bag on exit, also when an exception leaves the block. BagError when the bag
    cannot be created.
    """

    def __init__(self, out: Path, plugin: Any, typestore: Any) -> None:
        from rosbags.rosbag2 import Writer, WriterError

        self.typestore = typestore
        self.counts: dict[str, int] = {}
        self.written = 0
        self._conns: dict[str, Any] = {}
        try:
            self._writer = Writer(out, version=BAG_VERSION, storage_plugin=plugin)
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f'cannot create bag {out}: {exc}') from exc

    def add(self, topic: str, msgtype: str, transient: bool = False) -> None:
        """A connection for `topic`: reliable keep-last 10, or keep-last 1 transient local (latched)."""
        qos = _qos(1, True) if transient else _qos(10)
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                         offered_qos_profiles=[qos])
        self.counts[topic] = 0

    def add_rig_topics(self, rig: Any, compressed: bool, ground_truth: bool) -> None:
        """The project's bag layout (`rig_topics`)."""
        for topic, msgtype, transient in rig_topics(rig, compressed, ground_truth):
            self.add(topic, msgtype, transient=transient)

    def put(self, topic: str, stamp: int, msg: Any) -> None:
        conn = self._conns[topic]
        self._writer.write(conn, stamp, self.typestore.serialize_cdr(msg, conn.msgtype))
        self.counts[topic] += 1
        self.written += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> 'BagSink':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_synthetic_bag(out: str | Path, seconds: float, seed: int, *, rate: float = 12.0,
                        image_hw: tuple[int, int] = (900, 1600), compressed: bool = False,
                        storage: str = 'mcap', jpeg_quality: int = 90, grid: GridSpec = OCC3D_GRID,
                        odom_per_frame: int = 4, progress: Optional[Progress] = None,
                        start_ns: Optional[int] = None, staggered: bool = False,
                        time_scale: float = 1.0, workers: int = 0,
                        distortion: Optional[str] = None) -> BagSummary:
    """Render `seconds` of `World(seed)` at `rate` Hz and write it as a rosbag2 bag at `out`.

    staggered: each camera exposed and stamped at its own time in the nuScenes firing order
    (`bag.synth.staggered_offsets`, ≈ 42 ms spread). time_scale: the world runs that many times
    faster (a fast drive; `SyntheticSequence`). distortion: a lens model
    (occ_ros.bag.lens.DISTORTION_PRESETS): raw images of that lens, its D in the CameraInfo
    (P = [K | 0]); None: pinhole images, zero D.

    Frames are rendered (and JPEG-encoded) by `workers` processes (0 = every core; forked by
    `occ_ros.core.parallel`, so they share the built world and the compiled colour pass) and
    written in frame order: the bag is the same, byte for byte, whatever the number of workers.
    BLAS runs on one thread meanwhile: the renderer's and the ground truth's matrix products are
    thin ((N, 3) @ (3, 3)), and OpenBLAS's threads spinning against the rendering processes made
    them several times slower on a shared machine (the products are the same: OpenBLAS splits
    rows between threads, not sums). Streams: at most a few frames are
    held at once. Raises BagError when `out` exists or the storage is unknown, ConfigError for
    bad sizes/rates.
    """
    from threadpoolctl import threadpool_limits

    out, plugin = new_bag_target(out, storage)
    if odom_per_frame < 1:
        raise ConfigError(f'odom_per_frame must be >= 1, got {odom_per_frame}')
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f'jpeg quality must be in 1..100, got {jpeg_quality}')
    t_start = time.perf_counter()
    with threadpool_limits(1, user_api='blas'):
        return _write_synthetic_bag(out, plugin, seconds, seed, rate, image_hw, compressed, jpeg_quality, grid,
                                    odom_per_frame, progress, start_ns, staggered, time_scale, workers,
                                    distortion, t_start)


def _write_synthetic_bag(out: Path, plugin: Any, seconds: float, seed: int, rate: float, image_hw: tuple[int, int],
                         compressed: bool, jpeg_quality: int, grid: GridSpec, odom_per_frame: int,
                         progress: Optional[Progress], start_ns: Optional[int], staggered: bool, time_scale: float,
                         workers: int, distortion: Optional[str], t_start: float) -> BagSummary:
    from occ_ros.core.parallel import ordered_map
    from occ_ros.bag.raster import warm_up
    from occ_ros.bag.synth import DEFAULT_START_NS, SyntheticSequence, staggered_offsets
    from occ_ros.geometry import nuscenes_rig, save_rig

    warm_up()                                   # compiled once here, before the workers fork
    hw = (int(image_hw[0]), int(image_hw[1]))
    rig = nuscenes_rig(hw)
    seq = SyntheticSequence(seed, seconds, rate, rig, hw, grid,
                            start_ns=DEFAULT_START_NS if start_ns is None else int(start_ns),
                            capture_offsets_s=staggered_offsets(rig) if staggered else None,
                            time_scale=time_scale, distortion=distortion)
    lens = [(lz.model.D.tolist(), lz.model.distortion_model) for lz in seq.lenses] if seq.lenses else None
    ts = project_typestore()
    mk = MessageFactory(ts)
    render_s = 0.0
    with BagSink(out, plugin, ts) as sink:
        put = sink.put
        sink.add_rig_topics(rig, compressed, ground_truth=True)
        save_rig(rig, out / RIG_FILE)

        stamps = seq.stamps
        t0 = stamps[0]
        put('/tf_static', t0, mk.tf([mk.transform(t0, BASE_FRAME, camera_frame_id(c.name), c.sensor2ego)
                                     for c in rig]))

        def put_odom(stamp: int) -> None:
            pose = seq.world.ego_pose(seq.world_time(stamp))
            v, w = seq.ego_velocity(stamp)
            put('/tf', stamp, mk.tf([mk.transform(stamp, ODOM_FRAME, BASE_FRAME, pose)]))
            put('/odom', stamp, mk.odometry(stamp, pose, (v, 0.0, 0.0), (0.0, 0.0, w)))

        n = len(seq)
        render = functools.partial(_render_for_bag, jpeg_quality=jpeg_quality if compressed else 0)
        if progress is not None:
            progress(0, n, time.perf_counter() - t_start)
        for i, frame in enumerate(ordered_map(render, seq, range(n), workers)):
            render_s += frame.seconds
            st = frame.stamp_ns
            put_odom(st)
            for k, (cam, image, cst) in enumerate(zip(rig, frame.images, frame.view_stamps_ns)):
                fid = camera_frame_id(cam.name)
                put(camera_info_topic(cam.name), cst, mk.camera_info(cst, fid, cam.K, cam.image_hw,
                                                                     *(lens[k] if lens else ())))
                if compressed:
                    put(image_topic(cam.name, True), cst, mk.compressed_bytes(cst, fid, image))
                else:
                    put(image_topic(cam.name, False), cst, mk.image(cst, fid, image))
            put(GT_TOPIC, st, mk.panoptic(frame.gt, grid))
            if i + 1 < n:
                nxt = stamps[i + 1]
                for j in range(1, odom_per_frame):
                    put_odom(st + (nxt - st) * j // odom_per_frame)
            del frame
            if progress is not None:
                progress(i + 1, n, time.perf_counter() - t_start)
    return BagSummary(out, len(seq), sink.written, render_s, time.perf_counter() - t_start, sink.counts)


@dataclass
class _BagFrame:
    """What the bag needs of one rendered frame (no depth maps: they stay in the worker)."""

    stamp_ns: int
    view_stamps_ns: list[int]         # per camera: its capture stamp (= stamp_ns unless staggered)
    images: list[np.ndarray]          # per camera: RGB (H, W, 3) uint8, or JPEG bytes
    gt: Occupancy
    seconds: float                    # rendering + ground truth + encoding time in the worker


def _render_for_bag(seq: Any, i: int, jpeg_quality: int) -> _BagFrame:
    """Frame i of `seq` as the bag writer consumes it; JPEG-encoded when jpeg_quality > 0."""
    t0 = time.perf_counter()
    frame = seq.frame(i)
    images = []
    for view in frame.views:
        if view.image is None or frame.gt is None:     # pragma: no cover (the sequence renders both)
            raise BagError(f'frame {i}: the synthetic sequence gave no image or ground truth')
        images.append(encode_jpeg(view.image, jpeg_quality) if jpeg_quality > 0 else view.image)
    stamps = list(frame.view_stamps_ns or (frame.stamp_ns,) * len(images))
    return _BagFrame(frame.stamp_ns, stamps, images, frame.gt, time.perf_counter() - t0)
