"""One nuScenes scene in memory: key frames, camera images and calibration, ego poses and
odometry, and the Occ3D ground truth of its samples."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from occ_ros.bag.nuscenes.tables import (
    LIDAR_CHANNEL,
    NuScenesError,
    PathLike,
    Tables,
    listing,
)
from occ_ros.core.classes import THING_CLASSES
from occ_ros.core.config import NUSCENES_CAMERAS, OCC3D_GRID, GridSpec
from occ_ros.core.errors import CalibrationError, OccFileError
from occ_ros.core.occ3d import GT_FILENAME, load_ground_truth
from occ_ros.core.occupancy import InstanceInfo, Occupancy
from occ_ros.geometry import CameraCalib, Rig, quaternion_to_matrix, rigid_transform

# Two calibrated_sensor records of one camera in one scene count as the same calibration when
# they agree to this (metres / quaternion components / pixels).
_CALIB_ATOL = 1e-9


@dataclass(frozen=True)
class CameraImage:
    """One camera sample_data record: a JPEG on disk at its own timestamp and ego pose."""

    channel: str
    token: str
    sample_token: str
    stamp_ns: int
    path: Path
    is_key_frame: bool
    image_hw: tuple[int, int]
    ego_pose_token: str
    calibrated_sensor_token: str


@dataclass(frozen=True)
class KeyFrame:
    """One keyframe sample; `stamp_ns` is its LIDAR_TOP timestamp (the Occ3D GT frame), or the
    sample timestamp when the scene has no LIDAR_TOP keyframe for it."""

    sample_token: str
    stamp_ns: int
    ego_pose_token: Optional[str]
    camera_stamps_ns: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SceneData:
    """Everything the converter writes, read from the tables and checked against the files.

    rig: the six cameras (nuScenes network order) from calibrated_sensor.
    images: camera images in time order (ties: rig order).
    ego_poses: ego_pose token → (stamp_ns, (4, 4) float64 T_global_ego).
    keyframes: keyframe samples in scene order.
    """

    name: str
    token: str
    version: str
    reader: str
    log: dict[str, Any]
    rig: Rig
    calibrated_sensor_tokens: dict[str, str]
    images: tuple[CameraImage, ...]
    ego_poses: dict[str, tuple[int, np.ndarray]]
    keyframes: tuple[KeyFrame, ...]


def _field(rec: dict[str, Any], key: str, table: str) -> Any:
    if key not in rec:
        raise NuScenesError(f'nuScenes table {table}.json: record {rec.get("token")!r} lacks the '
                            f'field {key!r}')
    return rec[key]


def _stamp_ns(rec: dict[str, Any], table: str) -> int:
    us = _field(rec, 'timestamp', table)
    if isinstance(us, bool) or not isinstance(us, (int, float)) or not math.isfinite(us) or us < 0:
        raise NuScenesError(f'nuScenes table {table}.json: record {rec["token"]!r} has timestamp '
                            f'{us!r}; expected microseconds since the epoch')
    return int(round(us)) * 1000


def _pose(rec: dict[str, Any], table: str) -> np.ndarray:
    """(4, 4) float64 from a record's translation and rotation (w, x, y, z)."""
    t, q = _field(rec, 'translation', table), _field(rec, 'rotation', table)
    try:
        t_arr = np.array(t, dtype=np.float64)
        if t_arr.shape != (3,) or not np.all(np.isfinite(t_arr)):
            raise CalibrationError(f'translation must be 3 finite numbers, got {t!r}')
        return rigid_transform(quaternion_to_matrix(q), [float(v) for v in t_arr])
    except (CalibrationError, TypeError, ValueError) as exc:
        raise NuScenesError(f'nuScenes table {table}.json: record {rec["token"]!r} has an invalid pose '
                            f'({exc})') from exc


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header (JPEG expected); NuScenesError when unreadable."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            if im.format != 'JPEG':
                raise NuScenesError(f'{path} is a {im.format} image; nuScenes camera files are JPEG')
            w, h = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise NuScenesError(f'cannot read the image header of {path} ({exc}); the file is corrupt or '
                            f'truncated') from exc
    return int(h), int(w)


def _sample_chain(tables: Tables, scene: dict[str, Any]) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    seen: set[str] = set()
    tok = _field(scene, 'first_sample_token', 'scene')
    while tok:
        if tok in seen:
            raise NuScenesError(f'nuScenes table sample.json: the sample chain of scene '
                                f'{scene.get("name")!r} loops at {tok!r}')
        seen.add(tok)
        s = tables.get('sample', tok)
        if _field(s, 'scene_token', 'sample') != scene['token']:
            raise NuScenesError(f'nuScenes table sample.json: sample {tok!r} in the chain of scene '
                                f'{scene.get("name")!r} belongs to scene {s["scene_token"]!r}')
        samples.append(s)
        tok = _field(s, 'next', 'sample')
    if not samples:
        raise NuScenesError(f'scene {scene.get("name")!r} has no samples (first_sample_token is empty)')
    return samples


def load_scene(tables: Tables, scene_name: str, *, cameras: Sequence[str] = NUSCENES_CAMERAS,
               keyframes_only: bool = False, check_files: bool = True) -> SceneData:
    """Read scene `scene_name` from `tables` into a `SceneData`.

    Raises NuScenesError for an unknown scene (listing the scene names), a camera without images,
    malformed or inconsistent records, a calibration that changes within the scene, and (with
    `check_files`) image files that are missing (all listed), not JPEG, or of another size than
    their record says.
    """
    scenes = tables.records('scene')
    matches = [s for s in scenes if s.get('name') == scene_name]
    if not matches:
        names = sorted(str(s.get('name')) for s in scenes)
        raise NuScenesError(f'unknown scene {scene_name!r}; {len(names)} scene(s) available: '
                            f'{listing(names, 100)}')
    if len(matches) > 1:
        raise NuScenesError(f'nuScenes table scene.json holds {len(matches)} scenes named {scene_name!r}')
    scene = matches[0]
    samples = _sample_chain(tables, scene)
    sample_tokens = {s['token'] for s in samples}
    channel_of_cs: dict[str, str] = {}

    def channel(sd: dict[str, Any]) -> str:
        cs_tok = _field(sd, 'calibrated_sensor_token', 'sample_data')
        ch = channel_of_cs.get(cs_tok)
        if ch is None:
            cs = tables.get('calibrated_sensor', cs_tok)
            sensor = tables.get('sensor', _field(cs, 'sensor_token', 'calibrated_sensor'))
            ch = str(_field(sensor, 'channel', 'sensor'))
            channel_of_cs[cs_tok] = ch
        return ch

    want = tuple(cameras)
    order = {c: i for i, c in enumerate(want)}
    images: list[CameraImage] = []
    lidar_key: dict[str, dict[str, Any]] = {}
    missing_files: list[str] = []
    for sd in tables.records('sample_data'):
        if _field(sd, 'sample_token', 'sample_data') not in sample_tokens:
            continue
        ch = channel(sd)
        key = bool(_field(sd, 'is_key_frame', 'sample_data'))
        if ch == LIDAR_CHANNEL and key:
            if sd['sample_token'] in lidar_key:
                raise NuScenesError(f'nuScenes table sample_data.json: sample {sd["sample_token"]!r} has '
                                    f'two LIDAR_TOP keyframes')
            lidar_key[sd['sample_token']] = sd
            continue
        if ch not in order or (keyframes_only and not key):
            continue
        fname = str(_field(sd, 'filename', 'sample_data'))
        path = tables.dataroot / fname
        h, w = sd.get('height') or 0, sd.get('width') or 0
        if check_files:
            if not path.is_file():
                missing_files.append(fname)
                continue
            fh, fw = _image_size(path)
            if (h, w) == (0, 0):
                h, w = fh, fw
            elif (int(h), int(w)) != (fh, fw):
                raise NuScenesError(f'{path}: the image is {fw}×{fh} but sample_data {sd["token"]!r} '
                                    f'says {w}×{h}')
        elif (h, w) == (0, 0):
            raise NuScenesError(f'sample_data {sd["token"]!r} has no width/height and files are not checked')
        images.append(CameraImage(ch, sd['token'], sd['sample_token'], _stamp_ns(sd, 'sample_data'), path,
                                  key, (int(h), int(w)), str(_field(sd, 'ego_pose_token', 'sample_data')),
                                  str(sd['calibrated_sensor_token'])))
    if missing_files:
        raise NuScenesError(f'{len(missing_files)} image file(s) of scene {scene_name!r} are missing under '
                            f'{tables.dataroot}: {listing(sorted(missing_files))}. Extract the samples/ '
                            f'and sweeps/ archives (or pass --keyframes-only if you have only samples/)')
    present = {im.channel for im in images}
    absent = [c for c in want if c not in present]
    if absent:
        raise NuScenesError(f'scene {scene_name!r} has no images for camera(s) {absent}')
    images.sort(key=lambda im: (im.stamp_ns, order[im.channel]))

    # Calibration: one per camera per scene.
    cams: list[CameraCalib] = []
    cs_tokens: dict[str, str] = {}
    for c in want:
        mine = [im for im in images if im.channel == c]
        sizes = sorted({im.image_hw for im in mine})
        if len(sizes) > 1:
            raise NuScenesError(f'camera {c} changes image size within scene {scene_name!r}: {sizes}')
        toks = sorted({im.calibrated_sensor_token for im in mine})
        recs = [tables.get('calibrated_sensor', t) for t in toks]
        ref = recs[0]
        for r in recs[1:]:
            same = all(np.allclose(np.asarray(_field(r, k, 'calibrated_sensor'), dtype=np.float64),
                                   np.asarray(_field(ref, k, 'calibrated_sensor'), dtype=np.float64),
                                   rtol=0, atol=_CALIB_ATOL)
                       for k in ('translation', 'rotation', 'camera_intrinsic'))
            if not same:
                raise NuScenesError(f'camera {c} has differing calibrated_sensor records {ref["token"]!r} and '
                                    f'{r["token"]!r} within scene {scene_name!r}; /tf_static and the rig '
                                    f'hold one calibration per camera')
        try:
            K = np.array(_field(ref, 'camera_intrinsic', 'calibrated_sensor'), dtype=np.float64)
            cams.append(CameraCalib(c, K, _pose(ref, 'calibrated_sensor'), sizes[0]))
        except (CalibrationError, TypeError, ValueError) as exc:
            raise NuScenesError(f'nuScenes table calibrated_sensor.json: record {ref["token"]!r} ({c}) is '
                                f'not a valid camera calibration: {exc}') from exc
        cs_tokens[c] = ref['token']

    keyframes: list[KeyFrame] = []
    for s in samples:
        lid = lidar_key.get(s['token'])
        cam_stamps = {im.channel: im.stamp_ns for im in images
                      if im.is_key_frame and im.sample_token == s['token']}
        if lid is not None:
            keyframes.append(KeyFrame(s['token'], _stamp_ns(lid, 'sample_data'),
                                      str(_field(lid, 'ego_pose_token', 'sample_data')), cam_stamps))
        else:
            keyframes.append(KeyFrame(s['token'], _stamp_ns(s, 'sample'), None, cam_stamps))

    poses: dict[str, tuple[int, np.ndarray]] = {}
    for tok in [im.ego_pose_token for im in images] + [k.ego_pose_token for k in keyframes if k.ego_pose_token]:
        if tok not in poses:
            rec = tables.get('ego_pose', tok)
            poses[tok] = (_stamp_ns(rec, 'ego_pose'), _pose(rec, 'ego_pose'))

    log_rec = tables.get('log', _field(scene, 'log_token', 'scene'))
    log = {k: log_rec.get(k) for k in ('token', 'logfile', 'vehicle', 'date_captured', 'location')}
    return SceneData(scene_name, scene['token'], tables.version, tables.kind, log,
                     Rig(tuple(cams)), cs_tokens, tuple(images), poses, tuple(keyframes))


def _rotation_vector(R: np.ndarray) -> np.ndarray:
    """(3,) axis·angle of a rotation matrix (log map), robust near 0 and π."""
    cos = float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))
    angle = math.acos(cos)
    skew = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle < 1e-7:
        return 0.5 * skew
    if math.pi - angle < 1e-4:          # near π: axis from the symmetric part
        M = (R + np.eye(3)) / 2.0
        axis = M[int(np.argmax(np.diag(M)))]
        axis = axis / np.linalg.norm(axis)
        return angle * axis
    return angle / (2.0 * math.sin(angle)) * skew


def ego_twists(stamps_ns: Sequence[int], poses: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Linear and angular velocity in the body frame at each pose, by central differences.

    stamps_ns: (N,) strictly increasing; poses: N (4, 4) T_odom_base.
    Returns (N, 3) linear m/s and (N, 3) angular rad/s, both in base_link at that pose
    (one-sided differences at the ends; zeros for a single pose).
    """
    n = len(poses)
    lin, ang = np.zeros((n, 3)), np.zeros((n, 3))
    for i in range(n):
        a, b = max(i - 1, 0), min(i + 1, n - 1)
        if a == b:
            continue
        dt = (stamps_ns[b] - stamps_ns[a]) * 1e-9
        Ri = poses[i][:3, :3]
        lin[i] = Ri.T @ (poses[b][:3, 3] - poses[a][:3, 3]) / dt
        # body-frame angular velocity ≈ log(R_a^T R_b) / dt, expressed in frame a ≈ frame i
        ang[i] = _rotation_vector(poses[a][:3, :3].T @ poses[b][:3, :3]) / dt
    return lin, ang


def odometry_track(scene: SceneData) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """(stamps_ns, T_odom_base list, T_map_odom) of the ego poses to publish, in time order.

    One pose per distinct timestamp (nuScenes keeps one ego_pose per sample_data; equal stamps
    would repeat a TF). odom = the ego frame of the first pose.
    """
    by_stamp: dict[int, np.ndarray] = {}
    for stamp, T in scene.ego_poses.values():
        by_stamp.setdefault(stamp, T)
    stamps = sorted(by_stamp)
    T_map_odom = by_stamp[stamps[0]]
    inv0 = np.linalg.inv(T_map_odom)
    return stamps, [inv0 @ by_stamp[s] for s in stamps], T_map_odom


def find_gt_file(occ_gts: PathLike, scene_name: str, sample_token: str) -> Optional[Path]:
    """`<occ_gts>/<scene>/<token>/labels.npz`, else `<occ_gts>/<token>/labels.npz`, else None."""
    root = Path(occ_gts)
    for p in (root / scene_name / sample_token / GT_FILENAME, root / sample_token / GT_FILENAME):
        if p.is_file():
            return p
    return None


def instance_table(semantics: np.ndarray, instances: np.ndarray, grid: GridSpec) -> list[InstanceInfo]:
    """Per id > 0 in `instances` (nx, ny, nz): majority semantic class, mean voxel centre (ego
    metres), voxel count; sorted by id."""
    flat = instances.reshape(-1)
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        return []
    ids = flat[idx].astype(np.int64)
    labels = semantics.reshape(-1)[idx].astype(np.int64)
    ijk = np.stack(np.unravel_index(idx, instances.shape), axis=1).astype(np.float64)   # (M, 3)
    centres = np.asarray(grid.lower) + (ijk + 0.5) * np.asarray(grid.voxel)
    uniq, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    sums = np.zeros((uniq.size, 3))
    np.add.at(sums, inv, centres)
    n_lab = int(labels.max()) + 1
    votes = np.zeros((uniq.size, n_lab), dtype=np.int64)
    np.add.at(votes, (inv, labels), 1)
    out = []
    for k, i in enumerate(uniq):
        c = sums[k] / counts[k]
        out.append(InstanceInfo(int(i), int(np.argmax(votes[k])), (float(c[0]), float(c[1]), float(c[2])),
                                int(counts[k])))
    return out


def load_occ3d_gt(path: PathLike, stamp_ns: int, grid: GridSpec = OCC3D_GRID) -> Occupancy:
    """An Occ3D (or Occ3D-panoptic) labels.npz as an `Occupancy` stamped `stamp_ns`.

    Instance ids are kept on thing-class voxels only (0 elsewhere); ids must fit uint16.
    """
    gt = load_ground_truth(path, grid)
    if gt.instances is None:
        inst = np.zeros(grid.shape, dtype=np.uint16)
    else:
        if int(gt.instances.max(initial=0)) > np.iinfo(np.uint16).max:
            raise OccFileError(f'{path}: instance ids exceed 65535 (max {int(gt.instances.max())})')
        thing = np.isin(gt.semantics, np.fromiter(THING_CLASSES, dtype=np.int64))
        inst = np.where(thing, gt.instances, 0).astype(np.uint16)
    return Occupancy(gt.semantics, inst, mask_camera=gt.mask_camera, mask_lidar=gt.mask_lidar,
                     instance_table=instance_table(gt.semantics, inst, grid), stamp_ns=int(stamp_ns))
