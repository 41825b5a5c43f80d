"""`occ-ros nuscenes-to-bag`: one nuScenes scene (+ optional Occ3D ground truth) → a rosbag2 bag.

    occ-ros nuscenes-to-bag --dataroot DIR --version v1.0-mini --scene scene-0061 --out BAG
                            [--occ-gts DIR] [--storage mcap|sqlite3] [--keyframes-only]
                            [--reader auto|devkit|json] [--skip-missing-gt]

Reading the dataset
-------------------
Two interchangeable readers feed one extraction (`load_scene`):
- `DevkitTables`: the official `nuscenes-devkit` (`nuscenes.nuscenes.NuScenes`), used when it is
  importable (`--reader auto`, the default). The devkit needs all 13 v1.0 tables (category,
  attribute, visibility, instance, sensor, calibrated_sensor, ego_pose, log, scene, sample,
  sample_data, sample_annotation, map).
- `JsonTables`: a small reader of the v1.0 JSON tables this converter needs (scene, sample,
  sample_data, calibrated_sensor, ego_pose, sensor, log), with named errors for missing,
  unparsable or inconsistent tables. No dependency beyond the standard library.
Both give the same records (the devkit only adds shortcut fields), so both give the same bag.

Conventions (all checked by `test/test_nuscenes.py`)
---------------------------------------------------
- Stamps: nuScenes timestamps are microseconds since the epoch; bag and header stamps are
  ``µs · 1000`` nanoseconds. Every message's header stamp equals its bag timestamp.
- Images: every camera `sample_data` of the scene, keyframes (2 Hz) **and sweeps** (≈ 12 Hz)
  by default — the cameras as recorded; `keyframes_only=True` (`--keyframes-only`) keeps the
  2 Hz keyframes. The six nuScenes cameras are not triggered together (each fires as the
  lidar sweeps past it): each image keeps its own timestamp, so the six stamps of one "frame"
  differ by up to ≈ 50 ms. `/<CAM>/image_raw/compressed`, sensor_msgs/CompressedImage with the
  JPEG file bytes copied unchanged, format ``'jpeg'``, frame ``<cam>_optical_frame``.
- `/<CAM>/camera_info` with every image (same stamp): K = calibrated_sensor.camera_intrinsic,
  plumb_bob with zero distortion (nuScenes images are undistorted), P = [K | 0], size from the
  sample_data record (checked against the JPEG header; the header is used when the record has
  no size).
- `/tf_static` (once, at the first stamp, latched QoS): ``base_link → <cam>_optical_frame`` from
  calibrated_sensor (translation, rotation quaternion **w, x, y, z**). The nuScenes camera
  sensor frame *is* an optical frame (x right, y down, z forward), so no axis swap is applied.
  Plus ``map → odom``: the scene's first ego pose in the nuScenes global (map) frame.
- Odometry: nuScenes `ego_pose` is the pose of the ego (base_link: rear axle on the ground,
  x forward, y left, z up) in the global frame, T_global_ego. ``odom`` is the ego frame at the
  scene's first published pose, so T_odom_base(t) = T_global_ego(t0)⁻¹ · T_global_ego(t)
  (REP-105: odom starts at the origin and is continuous; the global pose is recovered through
  ``map → odom``). One `/odom` (nav_msgs/Odometry, odom → base_link, twist in base_link from
  central differences) and one `/tf` per distinct ego pose timestamp of the written images and
  of the LIDAR_TOP keyframes, in time order (each camera image has its own ego pose at its own
  timestamp, so a consumer can look up the exact pose of every image).
- Ground truth (`occ_gts`): Occ3D ``<occ_gts>/<scene>/<sample_token>/labels.npz`` (or
  ``<occ_gts>/<sample_token>/labels.npz``), read with `occ_ros.core.occ3d.load_ground_truth`.
  One occ_ros/msg/PanopticOccupancy per keyframe sample on `/ground_truth/panoptic`, frame
  base_link, stamped at the sample's LIDAR_TOP timestamp (Occ3D GT is in the ego frame of the
  lidar keyframe), `visible` = mask_camera. The optional `instances` array (Occ3D-panoptic,
  SparseOcc layout) becomes `instances` with ids kept only on thing-class voxels (the message
  says 0 = stuff/free); the instance table gives per id the majority thing class, the mean voxel
  centre (ego metres) and the voxel count. Without `instances` the grid is all zero.
- Beside the messages, inside the bag directory (rosbag2 ignores unlisted files): `rig.yaml`
  (`occ_ros.geometry.save_rig`, cameras in nuScenes network order) and `nuscenes.json` (scene,
  log, the odom origin, and per keyframe sample its token, lidar stamp and camera stamps — what
  an evaluation needs to pair outputs with ground truth).

Topic names, frame names, message construction, QoS and the rosbags typestore with the
project's messages come from `occ_ros.bag.writer` (the synthetic-bag writer), so both kinds of
bag look the same to the node and to `occ-ros eval`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence, Union

import numpy as np

from occ_ros.core.occ3d import load_ground_truth
from occ_ros.core.occupancy import InstanceInfo, Occupancy
from occ_ros.bag.writer import (BASE_FRAME, GT_TOPIC, ODOM_FRAME, RIG_FILE, BagSink, MessageFactory,
                                camera_frame_id, camera_info_topic, image_topic, new_bag_target,
                                project_typestore)
from occ_ros.core.classes import THING_CLASSES
from occ_ros.core.config import NUSCENES_CAMERAS, GridSpec
from occ_ros.core.errors import BagError, CalibrationError, OccFileError
from occ_ros.geometry import CameraCalib, Rig, quaternion_to_matrix, rigid_transform, save_rig

LOG = logging.getLogger('occ_ros.nuscenes')

PathLike = Union[str, Path]
MAP_FRAME = 'map'
SCENE_FILE = 'nuscenes.json'
IMAGE_FORMAT = 'jpeg'
LIDAR_CHANNEL = 'LIDAR_TOP'
GT_FILENAME = 'labels.npz'
# What `JsonTables` reads; the devkit reads these plus the annotation and map tables.
REQUIRED_TABLES: tuple[str, ...] = (
    'scene', 'sample', 'sample_data', 'calibrated_sensor', 'ego_pose', 'sensor', 'log')
DEVKIT_TABLES: tuple[str, ...] = REQUIRED_TABLES + (
    'category', 'attribute', 'visibility', 'instance', 'sample_annotation', 'map')
READERS: tuple[str, ...] = ('auto', 'devkit', 'json')
# Two calibrated_sensor records of one camera in one scene count as the same calibration when
# they agree to this (metres / quaternion components / pixels).
_CALIB_ATOL = 1e-9
_MAX_LISTED = 20


class NuScenesError(BagError):
    """A nuScenes dataset cannot be converted: missing dataroot, unknown version or scene, missing
    image or ground-truth files, malformed tables. The message names the file, table or record."""


# ---------------------------------------------------------------------------------------------
# Table access: the devkit, or a small JSON reader
# ---------------------------------------------------------------------------------------------

class Tables(Protocol):
    """What `load_scene` needs from a nuScenes database."""

    kind: str
    dataroot: Path
    version: str

    def records(self, table: str) -> list[dict[str, Any]]:
        """All records of `table` (a list of dicts, each with a 'token')."""

    def get(self, table: str, token: str) -> dict[str, Any]:
        """The record of `table` with `token`; NuScenesError when there is none."""


def _listing(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    shown = ', '.join(str(i) for i in items[:limit])
    return shown + (f', … ({len(items) - limit} more)' if len(items) > limit else '')


def available_versions(dataroot: PathLike) -> list[str]:
    """Sub-directories of `dataroot` that hold a scene.json (nuScenes version folders)."""
    root = Path(dataroot)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / 'scene.json').is_file())


def check_dataset(dataroot: PathLike, version: str) -> Path:
    """Validate `dataroot`/`version`; returns the table folder. Raises NuScenesError."""
    root = Path(dataroot)
    if not root.exists():
        raise NuScenesError(f'nuScenes dataroot {root} does not exist; pass --dataroot the folder that '
                            f'holds samples/, sweeps/ and the version folders (e.g. v1.0-mini/)')
    if not root.is_dir():
        raise NuScenesError(f'nuScenes dataroot {root} is not a directory')
    table_root = root / version
    if not version or not table_root.is_dir():
        found = available_versions(root)
        raise NuScenesError(
            f'unknown nuScenes version {version!r}: {table_root} does not exist. Versions found in '
            f'{root}: {found if found else "none (no sub-folder holds a scene.json)"}')
    return table_root


def _load_table(path: Path, table: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise NuScenesError(f'nuScenes table {table}.json is missing in {path.parent}; the converter '
                            f'needs {", ".join(t + ".json" for t in REQUIRED_TABLES)}')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise NuScenesError(f'nuScenes table {path} is not valid JSON (line {exc.lineno}, column '
                            f'{exc.colno}: {exc.msg}); re-extract the dataset archive') from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise NuScenesError(f'cannot read nuScenes table {path}: {exc}') from exc
    if not isinstance(data, list):
        raise NuScenesError(f'nuScenes table {path} must be a JSON list of records, '
                            f'got a {type(data).__name__}')
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get('token'), str):
            raise NuScenesError(f'nuScenes table {path}: record {i} is not an object with a string '
                                f'"token" ({str(rec)[:120]})')
    return data


class JsonTables:
    """The v1.0 JSON tables of `dataroot/version`, loaded on first use, indexed by token."""

    kind = 'json'

    def __init__(self, dataroot: PathLike, version: str) -> None:
        self.table_root = check_dataset(dataroot, version)
        self.dataroot = Path(dataroot)
        self.version = version
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._index: dict[str, dict[str, int]] = {}

    def records(self, table: str) -> list[dict[str, Any]]:
        if table not in self._tables:
            path = self.table_root / f'{table}.json'
            recs = _load_table(path, table)
            index: dict[str, int] = {}
            for i, rec in enumerate(recs):
                if rec['token'] in index:
                    raise NuScenesError(f'nuScenes table {path}: token {rec["token"]} appears twice '
                                        f'(records {index[rec["token"]]} and {i})')
                index[rec['token']] = i
            self._tables[table], self._index[table] = recs, index
        return self._tables[table]

    def get(self, table: str, token: str) -> dict[str, Any]:
        recs = self.records(table)
        i = self._index[table].get(token)
        if i is None:
            raise NuScenesError(f'nuScenes table {table}.json has no record with token {token!r} '
                                f'(a dangling reference: the tables in {self.table_root} are '
                                f'inconsistent or from different versions)')
        return recs[i]


def devkit_available() -> bool:
    """True when `from nuscenes.nuscenes import NuScenes` works in this environment."""
    try:
        importlib.import_module('nuscenes.nuscenes')
    except Exception:                  # ImportError, or a broken dependency raising at import time
        return False
    return True


class DevkitTables:
    """The database loaded by the official nuscenes-devkit (`NuScenes(version, dataroot)`)."""

    kind = 'devkit'

    def __init__(self, dataroot: PathLike, version: str) -> None:
        table_root = check_dataset(dataroot, version)
        try:
            from nuscenes.nuscenes import NuScenes  # type: ignore[import-untyped,unused-ignore]
        except Exception as exc:
            raise NuScenesError(f'the nuscenes-devkit is not importable ({type(exc).__name__}: {exc}); '
                                f'install it (see the module docstring) or use --reader json') from exc
        missing = [t for t in DEVKIT_TABLES if not (table_root / f'{t}.json').is_file()]
        if missing:
            raise NuScenesError(
                f'the nuscenes-devkit needs all v1.0 tables but {table_root} lacks '
                f'{", ".join(m + ".json" for m in missing)}; use --reader json, which needs only '
                f'{", ".join(t + ".json" for t in REQUIRED_TABLES)}')
        self.dataroot = Path(dataroot)
        self.version = version
        try:
            self.nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
        except json.JSONDecodeError as exc:
            raise NuScenesError(f'a nuScenes table in {table_root} is not valid JSON (line {exc.lineno}, '
                                f'column {exc.colno}: {exc.msg})') from exc
        except (AssertionError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise NuScenesError(f'the nuscenes-devkit cannot index the tables in {table_root} '
                                f'({type(exc).__name__}: {exc}); the tables are malformed or '
                                f'inconsistent (try --reader json for a more specific error)') from exc

    def records(self, table: str) -> list[dict[str, Any]]:
        if table not in self.nusc.table_names:
            raise NuScenesError(f'the nuscenes-devkit has no table {table!r}')
        recs: list[dict[str, Any]] = getattr(self.nusc, table)
        return recs

    def get(self, table: str, token: str) -> dict[str, Any]:
        try:
            rec: dict[str, Any] = self.nusc.get(table, token)
        except KeyError as exc:
            raise NuScenesError(f'nuScenes table {table}.json has no record with token {token!r} '
                                f'(a dangling reference in {self.nusc.table_root})') from exc
        return rec


def open_tables(dataroot: PathLike, version: str, reader: str = 'auto') -> Tables:
    """A `Tables` for `dataroot/version`: 'devkit', 'json', or 'auto' (devkit when importable)."""
    if reader not in READERS:
        raise NuScenesError(f'unknown reader {reader!r}: choose one of {list(READERS)}')
    if reader == 'json' or (reader == 'auto' and not devkit_available()):
        if reader == 'auto':
            LOG.info('nuscenes-devkit not importable: reading the JSON tables directly')
        return JsonTables(dataroot, version)
    return DevkitTables(dataroot, version)


# ---------------------------------------------------------------------------------------------
# One scene as plain data
# ---------------------------------------------------------------------------------------------

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
                            f'{_listing(names, 100)}')
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
                            f'{tables.dataroot}: {_listing(sorted(missing_files))}. Extract the samples/ '
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


# ---------------------------------------------------------------------------------------------
# Odometry
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------

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


def load_occ3d_gt(path: PathLike, stamp_ns: int, grid: GridSpec = GridSpec()) -> Occupancy:
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


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

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
                  reader: str = 'auto', grid: GridSpec = GridSpec(), skip_missing_gt: bool = False,
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
                f'<token>/{GT_FILENAME}): {_listing(absent)}. Pass --skip-missing-gt to convert without them')
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


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--dataroot', required=True, help='nuScenes root (holds samples/, sweeps/, v1.0-*/)')
    parser.add_argument('--version', default='v1.0-mini', help='table folder under the dataroot (default v1.0-mini)')
    parser.add_argument('--scene', required=True, help='scene name, e.g. scene-0061')
    parser.add_argument('--out', required=True, help='bag directory to create (must not exist)')
    parser.add_argument('--occ-gts', default=None, metavar='DIR',
                        help='Occ3D gts/ (or occ3d_panoptic/) tree: <scene>/<sample_token>/labels.npz; '
                             'adds /ground_truth/panoptic at each keyframe\'s LIDAR_TOP stamp')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='storage plugin')
    parser.add_argument('--keyframes-only', action='store_true',
                        help='only the 2 Hz keyframe images (default: keyframes and sweeps, ≈12 Hz)')
    parser.add_argument('--reader', choices=READERS, default='auto',
                        help='auto: nuscenes-devkit when importable, else the built-in JSON reader')
    parser.add_argument('--skip-missing-gt', action='store_true',
                        help='convert keyframes without labels.npz (default: error listing them)')
    parser.add_argument('--progress-every', type=int, default=500, metavar='N',
                        help='progress line every N messages (default 500)')
    parser.add_argument('--quiet', action='store_true', help='no progress line')


def run(args: argparse.Namespace) -> int:
    s = convert_scene(args.dataroot, args.version, args.scene, args.out, occ_gts=args.occ_gts,
                      storage=args.storage, keyframes_only=args.keyframes_only, reader=args.reader,
                      skip_missing_gt=args.skip_missing_gt,
                      progress=None if args.quiet else print_progress, progress_every=args.progress_every)
    LOG.info('wrote %s (%s reader): scene %s, %d images, %d keyframes, %d ground-truth frames, %d ego poses, '
             '%d messages over %.1f s of data in %.1f s; rig in %s/%s, scene index in %s/%s',
             s.path, s.reader, s.scene, s.images, s.keyframes, s.gt_frames, s.odometry, s.messages,
             (s.end_ns - s.start_ns) * 1e-9, s.seconds, s.path, RIG_FILE, s.path, SCENE_FILE)
    return 0
