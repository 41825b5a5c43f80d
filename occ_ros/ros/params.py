"""Every parameter of `occupancy_node`, declared in one place, validated once.

`PARAMETERS` is the single table (name, default, description, allowed values / range).
`declare_parameters(node)` declares them all on an rclpy node with a ParameterDescriptor each
and returns a validated `NodeParams`. Display, threshold and rate parameters (`dynamic=True`) can
be set while the node runs: `updated(params, changes)` validates a set request exactly like
start-up (type, range, choices, cross-field) and the node's parameter callback rejects a bad one
with the reason. Every other parameter is read-only, and its descriptor says why (`FIXED_BECAUSE`:
what the node builds from it at start-up);
`NodeParams.from_mapping(values)` does the same validation without ROS (tests, the benchmark).
Invalid values raise `ConfigError` naming the parameter; the node turns that into a non-zero exit.

Topics: camera i subscribes `image_topic_template.format(camera=name)` (+ '/compressed' when
image_transport is 'compressed' and the template does not already end with it) and
`camera_info_topic_template.format(camera=name)`; remap them at launch for other layouts.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Optional

from occ_ros.core.classes import GROUND_CLASSES, OCC_CLASSES, OCC_INDEX
from occ_ros.core.config import (DEFAULT_ORT_SPINNING, DEFAULT_TEMPORAL_MODE, HISTORY_INTERVAL_S, HISTORY_TOLERANCE_S,
                                 NUSCENES_CAMERAS, PRECISIONS, RECTIFICATION_MODES, TEMPORAL_MODES,
                                 GridSpec)
from occ_ros.core.errors import ConfigError
from occ_ros.ros.convert import MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    min: Optional[float] = None
    max: Optional[float] = None
    dynamic: bool = False          # settable while the node runs (validated by the parameter callback)


_GROUND_NAMES = [OCC_CLASSES[c] for c in sorted(GROUND_CLASSES)]

PARAMETERS: tuple[ParamSpec, ...] = (
    # model and backend
    ParamSpec('model', 'lite', 'Named model configuration (occ_ros.model.configs.MODEL_NAMES).'),
    ParamSpec('checkpoint', '', 'Checkpoint file (.pt/.pth); empty = the model\'s default weights.'),
    ParamSpec('backend', 'auto', 'Inference backend.', ('auto', 'torch', 'onnxruntime', 'tensorrt')),
    ParamSpec('device', 'cpu', 'Device for the backend: cpu, cuda, cuda:N.'),
    ParamSpec('precision', 'auto', 'Graph/engine precision: auto = fp16 for TensorRT, fp32 elsewhere '
              '(fp16 falls back to fp32 on CPU backends).', ('auto', *PRECISIONS)),
    ParamSpec('engine_dir', '', 'Engine / exported-ONNX cache directory; empty = the default cache.'),
    ParamSpec('threads', 0, 'Intra-op threads of the backend; 0 = its default (every core; under a cgroup '
              'CPU quota, the cores the quota allows).', min=0, max=256),
    ParamSpec('ort_thread_spinning', DEFAULT_ORT_SPINNING, 'ONNX Runtime only: its idle pool threads spin '
              '(busy-wait) for the next parallel section (ONNX Runtime\'s own default). Off by default: '
              'a spinning thread takes the cores the pre- and post-processing need right after inference '
              '(post-processing 3x slower on two cores: README, Benchmarks).'),
    ParamSpec('build_only', False, 'Load the backend (build the TensorRT engine if needed) and exit 0.'),
    ParamSpec('autostart', False, 'occupancy_lifecycle_node only: configure, then activate, itself once it '
              'spins (the launch file\'s autostart:=true); false leaves it unconfigured for a lifecycle '
              'manager. occupancy_node ignores it.'),
    # calibration
    ParamSpec('rig_file', '', 'Rig YAML (occ_ros.geometry.save_rig layout); empty = '
              'config/nuscenes_rig.yaml, or the built-in nuScenes rig if that file is absent.'),
    ParamSpec('extrinsics_source', 'rig', 'Camera→base extrinsics: "rig" (the rig file) or "tf" '
              '(TF frame_id ← camera optical frame; unresolved cameras keep the rig values).',
              ('rig', 'tf')),
    ParamSpec('tf_refresh_s', 2.0, 'How often TF extrinsics are re-read (live recalibration).', min=0.1),
    # frames and inputs
    ParamSpec('frame_id', 'base_link', 'The robot\'s body frame (REP-105 base_link): the frame of the rig '
              'file\'s and TF\'s camera extrinsics and of the odometry pose.'),
    ParamSpec('model_frame', 'base_footprint', 'Where the network\'s ego frame sits: on the ground under '
              'the robot (nuScenes: under the rear axle), x forward, z up; the grid spans z in [-1, 5.4) m '
              'of it. Outputs in output_frame model carry this frame.'),
    ParamSpec('model_frame_offset_source', 'parameter', 'T frame_id <- model_frame: parameter '
              '(model_frame_offset; the node then publishes it on /tf_static, so do not use it when the '
              'robot description already has model_frame) or tf (looked up every tf_refresh_s; the '
              'parameter value until TF has it).', ('parameter', 'tf')),
    ParamSpec('model_frame_offset', [0.0, 0.0, 0.0, 0.0], 'Pose of model_frame in frame_id, [x, y, z, '
              'yaw] (m, rad); e.g. [0, 0, -0.3, 0] for a base_link 0.3 m above the ground.'),
    ParamSpec('output_frame', 'model', 'Frame of ~/voxels, ~/instances, ~/cloud and ~/occupancy_grid: '
              'model (model_frame) or odom (odom_frame, transformed with the pose at the set\'s stamp, so '
              'a costmap uses them as they are; sets without a pose publish only ~/panoptic, which '
              'always stays in model_frame).', ('model', 'odom')),
    ParamSpec('camera_names', list(NUSCENES_CAMERAS), 'Camera names in network view order '
              '(the model\'s order; nuScenes order by default).'),
    ParamSpec('image_topic_template', '/{camera}/image_raw', 'Image topic per camera ({camera} = name).'),
    ParamSpec('camera_info_topic_template', '/{camera}/camera_info', 'CameraInfo topic per camera.'),
    ParamSpec('image_transport', 'raw', 'raw = sensor_msgs/Image (rgb8/bgr8); compressed = '
              'sensor_msgs/CompressedImage (JPEG/PNG) on <image topic>/compressed.', ('raw', 'compressed')),
    ParamSpec('reduced_decode', True, 'Decode JPEG at 1/2, 1/4 or 1/8 resolution when the model '
              'input is small enough (and reduce a raw image that is rectified here by the same factor '
              'before the remap); the reduction is part of the resize, so the network inputs stay the '
              'official ones for the calibrated camera.'),
    ParamSpec('rectification', 'raw', 'Which images the cameras send and what is done with their lens '
              'distortion (CameraInfo D): raw = image_raw, rectified here (cached OpenCV remap) when D is '
              'non-zero, the network then gets P (K when P is zero); image_rect = already rectified '
              'upstream (image_proc; point image_topic_template at image_rect), used as published with '
              'P; none = the distortion is ignored and K used as it is (wrong geometry for a distorted '
              'lens: for comparisons only).', RECTIFICATION_MODES),
    ParamSpec('input_qos', 'best_effort', 'Camera QoS: best_effort (receives from reliable and '
              'best-effort publishers alike; REP-2003 sensor drivers publish best effort) or reliable '
              '(lossless, e.g. large raw images over shared memory; a best-effort publisher then '
              'delivers nothing — counted in /diagnostics), with depth input_depth; sensor_data = '
              'best effort, depth 5.', ('best_effort', 'reliable', 'sensor_data')),
    ParamSpec('max_image_bytes', 32 * 2 ** 20, 'Largest camera message accepted (bytes of image data); '
              'larger ones are dropped at once and counted (read-only).', min=1024),
    ParamSpec('max_image_pixels', MAX_IMAGE_PIXELS, 'Largest image decoded (pixels at the decode size): a '
              'compressed image whose header promises more is refused before decoding (decompression '
              'bomb) and counted.', min=1024),
    ParamSpec('input_depth', 10, 'History depth of the camera subscriptions (1 for the images with '
              'ingest_hold).', min=1, max=100),
    ParamSpec('ingest_hold', True, 'Take no image while the worker processes a set: the image '
              'subscriptions live on a second node, <node>_cameras, spun only while the worker is free; '
              'each camera keeps its newest image in the middleware meanwhile (depth 1) and the older '
              'ones are never copied into the process (counted from stamp gaps: dropped_sets_held). When '
              'the held set would be stale for max_set_wait_ms, the release takes nothing until the next '
              "set's CameraInfos came (ingest_releases_deferred), so the stale images are never copied either. "
              'The camera rates in /diagnostics then come from the CameraInfos. false: every image is taken as '
              'it arrives.'),
    ParamSpec('prepare_early', True, 'Decode and preprocess each camera image as soon as it is taken, '
              'while the worker is free and the set\'s other images are still arriving (ros/early.py): '
              'when the set is complete only the views still in progress are waited for. The same '
              'views as without it (used only for the same message and calibration); nothing is '
              'prepared while a set is processed. false: every image of a set is decoded once the set '
              'is complete.'),
    # synchronisation
    ParamSpec('sync_slop_s', 0.05, 'Max spread of the stamps of one camera set (seconds).', min=0.0, max=1.0),
    ParamSpec('sync_queue_size', 5, 'Messages kept per camera while waiting for a match.', min=1, max=50),
    ParamSpec('sync_matcher', 'auto', 'auto = message_filters when importable, else the built-in one.',
              ('auto', 'internal', 'message_filters')),
    ParamSpec('camera_timeout_s', 0.5, 'A camera silent this long is blanked; it rejoins with its '
              'next image.', min=0.01, max=60.0),
    ParamSpec('min_cameras', 1, 'Fewest live cameras for which a set is still processed.', min=1, max=64),
    ParamSpec('time_jump_reset_s', 0.5, 'A camera stamp this far behind its newest one is a time jump '
              '(bag loop): the synchroniser resets (smaller steps are out-of-order arrivals).',
              min=0.0, max=3600.0),
    # ego motion
    ParamSpec('odom_source', 'odometry', 'Ego pose for temporal models: odometry (nav_msgs/Odometry), '
              'tf (odom_frame → frame_id) or none.', ('odometry', 'tf', 'none')),
    ParamSpec('odom_topic', '/odom', 'nav_msgs/Odometry topic.'),
    ParamSpec('odom_frame', 'odom', 'Odometry frame (for odom_source tf).'),
    ParamSpec('odom_tolerance_s', 0.1, 'Max distance to the nearest odometry sample when the set\'s '
              'stamp cannot be interpolated.', min=0.0, max=10.0),
    ParamSpec('ego_motion_compensation', True, 'Map each camera through the ego pose at its own capture '
              'time (official sensor2keyego = inv(ego2global_view0) · ego2global_cam · sensor2ego_cam); '
              'off: one pose per camera set, a rig that fires all cameras at once.'),
    ParamSpec('camera_stamp_offsets_s', [0.0], 'Seconds each camera\'s header stamp lies after its '
              'exposure (drivers that stamp on arrival): capture time = stamp − offset. One value for every '
              'camera, or one per camera in camera_names order (floats).', min=-1.0, max=1.0),
    # multi-frame (4D) models
    ParamSpec('history_interval_s', HISTORY_INTERVAL_S, 'Spacing of a 4D model\'s history slots: slot k '
              'takes the processed frame nearest to t − k·interval (0.5 s: the key frames the official models '
              'were trained with).', min=0.01, max=10.0),
    ParamSpec('history_tolerance_s', HISTORY_TOLERANCE_S, 'How far a slot\'s frame may be from its target time '
              '(below half the interval); none that near → the slot repeats the current frame (the official '
              'rule).', min=0.001, max=5.0),
    ParamSpec('temporal_mode', DEFAULT_TEMPORAL_MODE, 'How a 4D model sees its history: lift = each history '
              'frame\'s cached image features lifted into the current ego frame (the official evaluation); '
              'warp = each history frame\'s cached BEV warped there (faster, approximate) (read-only).',
              TEMPORAL_MODES),
    # outputs
    ParamSpec('tensorrt_tf32', False, 'Let TensorRT use TF32 (10-bit mantissas) for the float32 parts of '
              'the graph on Ampere and later; off keeps them fp32 (read-only).'),
    # post-processing
    ParamSpec('official_compat', False, 'Reproduce the official Panoptic-FlashOcc instance tables and '
              'ids (its swapped det↔occ class maps, ids from 18): for comparing RayPQ with published '
              'figures. Off: the class maps the checkpoints were trained with.'),
    ParamSpec('markers_max_voxels', 20000, 'Voxel cap of ~/voxels (nearest to the ego kept).', min=0,
              dynamic=True),
    ParamSpec('markers_color_mode', 'class', 'Voxel colours: class (Occ3D palette) or instance.',
              ('class', 'instance'), dynamic=True),
    ParamSpec('markers_alpha', 1.0, 'Voxel marker opacity.', min=0.0, max=1.0, dynamic=True),
    ParamSpec('markers_visible_only', True, 'Show only voxels inside a camera frustum.', dynamic=True),
    ParamSpec('markers_min_period_s', 0.0, 'Publish ~/voxels and ~/instances at most this often '
              '(seconds; 0 = with every result).', min=0.0, max=3600.0, dynamic=True),
    ParamSpec('instances_min_score', 0.0, 'Show only instances whose centre score is at least this in '
              '~/instances (display only; the post-processing keeps score > 0.3).', min=0.0, max=1.0,
              dynamic=True),
    ParamSpec('cloud_include_ground', False, 'Send the ground classes (grid_ground_classes) in ~/cloud '
              'too; off, the cloud holds obstacles only (what a costmap marks).', dynamic=True),
    ParamSpec('cloud_visible_only', True, 'Send only voxels inside a camera frustum in ~/cloud.',
              dynamic=True),
    ParamSpec('grid_z_min', -0.2, 'Lowest voxel-centre height (m, model_frame) counted as an obstacle '
              'in ~/occupancy_grid.', dynamic=True),
    ParamSpec('grid_z_max', 2.2, 'Highest voxel-centre height counted as an obstacle.', dynamic=True),
    ParamSpec('grid_ground_classes', _GROUND_NAMES, 'Classes that are free (driveable) in the grid '
              '(and left out of ~/cloud unless cloud_include_ground).', dynamic=True),
    # monitoring and execution
    ParamSpec('processing_budget_ms', 100.0, 'Processing-time budget: WARN above, ERROR above '
              'budget × processing_error_factor (p50 over recent sets).', min=1.0, dynamic=True),
    ParamSpec('processing_error_factor', 3.0, 'See processing_budget_ms.', min=1.0, dynamic=True),
    ParamSpec('max_set_wait_ms', 10.0, 'Latency-first worker: a camera set that has waited longer '
              'than this for the busy worker is stale; the worker waits for the next set (due within an '
              'input period) and the stale one is dropped (counted); if none comes within 1.5 periods it '
              'is processed after all. -1 = always process the newest waiting set (throughput-first).',
              min=-1.0, dynamic=True),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of /diagnostics.', min=0.05),
    ParamSpec('executor', 'auto', 'rclpy executor: auto (EventsExecutor when available, else single), '
              'events, single, multi.', ('auto', 'events', 'single', 'multi')),
)

SPEC = {p.name: p for p in PARAMETERS}

# Why a parameter is read-only: what the node builds from it at start-up (so changing it needs a
# restart). Every non-dynamic parameter is in exactly one group (a test checks).
FIXED_BECAUSE: dict[str, tuple[str, ...]] = {
    'the backend, its weights and the TensorRT engine are loaded / built from it': (
        'model', 'checkpoint', 'backend', 'device', 'precision', 'engine_dir', 'threads', 'build_only',
        'ort_thread_spinning', 'tensorrt_tf32', 'official_compat', 'temporal_mode'),
    'the camera rig and the transform sources are set up from it': (
        'rig_file', 'extrinsics_source', 'tf_refresh_s', 'frame_id', 'model_frame', 'model_frame_offset_source',
        'model_frame_offset', 'output_frame', 'odom_source', 'odom_topic', 'odom_frame', 'odom_tolerance_s'),
    'the camera inputs (subscriptions, camera model, synchroniser) are set up from it': (
        'camera_names', 'rectification', 'image_topic_template', 'camera_info_topic_template', 'image_transport',
        'reduced_decode', 'input_qos', 'input_depth', 'ingest_hold', 'prepare_early', 'max_image_bytes',
        'max_image_pixels', 'sync_slop_s', 'sync_queue_size', 'sync_matcher', 'camera_timeout_s', 'min_cameras',
        'time_jump_reset_s'),
    'the timers and the executor are created from it': ('diagnostics_period_s', 'executor'),
    'the lifecycle node reads it once, when it starts spinning': ('autostart',),
    'the camera-pose resolver and the temporal history are built from it': (
        'ego_motion_compensation', 'camera_stamp_offsets_s', 'history_interval_s', 'history_tolerance_s'),
}


def read_only_reason(name: str) -> str:
    """Empty for a dynamic parameter, else why it is read-only (`FIXED_BECAUSE`)."""
    if SPEC[name].dynamic:
        return ''
    why = next((why for why, names in FIXED_BECAUSE.items() if name in names), 'it is read')
    return f'Read-only: {why} at start-up; set it at launch (-p name:=value, params file).'


@dataclass(frozen=True)
class NodeParams:
    """Validated parameter values (see `PARAMETERS` for each one's meaning)."""

    model: str
    checkpoint: str
    backend: str
    device: str
    precision: str
    engine_dir: str
    threads: int
    ort_thread_spinning: bool
    build_only: bool
    autostart: bool
    rig_file: str
    extrinsics_source: str
    tf_refresh_s: float
    frame_id: str
    model_frame: str
    model_frame_offset_source: str
    model_frame_offset: tuple[float, ...]
    output_frame: str
    camera_names: tuple[str, ...]
    image_topic_template: str
    camera_info_topic_template: str
    image_transport: str
    reduced_decode: bool
    rectification: str
    input_qos: str
    input_depth: int
    ingest_hold: bool
    prepare_early: bool
    max_image_bytes: int
    max_image_pixels: int
    sync_slop_s: float
    sync_queue_size: int
    sync_matcher: str
    camera_timeout_s: float
    min_cameras: int
    time_jump_reset_s: float
    odom_source: str
    odom_topic: str
    odom_frame: str
    odom_tolerance_s: float
    ego_motion_compensation: bool
    camera_stamp_offsets_s: tuple[float, ...]
    history_interval_s: float
    history_tolerance_s: float
    temporal_mode: str
    tensorrt_tf32: bool
    official_compat: bool
    markers_max_voxels: int
    markers_color_mode: str
    markers_alpha: float
    markers_visible_only: bool
    markers_min_period_s: float
    instances_min_score: float
    cloud_include_ground: bool
    cloud_visible_only: bool
    grid_z_min: float
    grid_z_max: float
    grid_ground_classes: tuple[str, ...]
    processing_budget_ms: float
    processing_error_factor: float
    max_set_wait_ms: float
    diagnostics_period_s: float
    executor: str

    # -- derived ----------------------------------------------------------------------------
    def image_topic(self, camera: str) -> str:
        topic = self.image_topic_template.format(camera=camera)
        if self.image_transport == 'compressed' and not topic.rstrip('/').endswith('compressed'):
            topic = topic.rstrip('/') + '/compressed'
        return topic

    def camera_info_topic(self, camera: str) -> str:
        return self.camera_info_topic_template.format(camera=camera)

    def stamp_offset_ns(self, camera: str) -> int:
        """Nanoseconds camera `camera`'s stamps lie after its exposure (`camera_stamp_offsets_s`)."""
        offs = self.camera_stamp_offsets_s
        value = offs[0] if len(offs) == 1 else offs[self.camera_names.index(camera)]
        return int(round(value * 1e9))

    @property
    def ground_class_ids(self) -> tuple[int, ...]:
        return tuple(OCC_INDEX[n] for n in self.grid_ground_classes)

    def check_grid(self, grid: GridSpec) -> None:
        """The obstacle height band must intersect the model grid's voxel centres."""
        lo = grid.z.lo + grid.z.step / 2
        hi = grid.z.hi - grid.z.step / 2
        if self.grid_z_max < lo or self.grid_z_min > hi:
            raise ConfigError(f'grid_z_min/grid_z_max [{self.grid_z_min}, {self.grid_z_max}] m contain no '
                              f'voxel centre of the model grid (z centres {lo:.2f} … {hi:.2f} m)')

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> 'NodeParams':
        """Defaults overridden by `values`; raises ConfigError for unknown names or bad values."""
        unknown = sorted(set(values) - set(SPEC))
        if unknown:
            raise ConfigError(f'unknown parameter(s) {unknown}')
        merged = {p.name: values.get(p.name, p.default) for p in PARAMETERS}
        for p in PARAMETERS:
            merged[p.name] = _coerce(p, merged[p.name])
        params = cls(**{f.name: merged[f.name] for f in fields(cls)})
        params.validate()
        return params

    def validate(self) -> None:
        """Cross-field and file-system checks (ConfigError naming the parameter)."""
        if not self.model:
            raise ConfigError('parameter model is empty')
        from occ_ros.model.configs import MODEL_NAMES            # torch-free
        if self.model not in MODEL_NAMES:
            raise ConfigError(f'parameter model: unknown model {self.model!r}; choose one of '
                              f'{", ".join(MODEL_NAMES)}')
        for name in ('checkpoint', 'rig_file'):
            path = getattr(self, name)
            if path and not os.path.isfile(os.path.expanduser(path)):
                raise ConfigError(f'parameter {name}: file {path!r} does not exist')
        if self.engine_dir and os.path.exists(self.engine_dir) and not os.path.isdir(self.engine_dir):
            raise ConfigError(f'parameter engine_dir: {self.engine_dir!r} exists and is not a directory')
        if not self.camera_names:
            raise ConfigError('parameter camera_names is empty')
        if len(set(self.camera_names)) != len(self.camera_names) or not all(self.camera_names):
            raise ConfigError(f'parameter camera_names must be unique non-empty names, got {list(self.camera_names)}')
        for name in ('image_topic_template', 'camera_info_topic_template'):
            tpl = getattr(self, name)
            if '{camera}' not in tpl:
                raise ConfigError(f'parameter {name} must contain {{camera}}, got {tpl!r}')
            try:
                tpl.format(camera='x')
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f'parameter {name}: bad template {tpl!r} ({exc})') from exc
        if len(self.camera_stamp_offsets_s) not in (1, len(self.camera_names)):
            raise ConfigError(f'parameter camera_stamp_offsets_s: give one value or one per camera '
                              f'({len(self.camera_names)}), got {len(self.camera_stamp_offsets_s)}')
        if not self.history_tolerance_s < self.history_interval_s / 2:
            raise ConfigError(f'parameter history_tolerance_s ({self.history_tolerance_s}) must be below half of '
                              f'history_interval_s ({self.history_interval_s})')
        if self.min_cameras > len(self.camera_names):
            raise ConfigError(f'parameter min_cameras ({self.min_cameras}) exceeds the number of cameras '
                              f'({len(self.camera_names)})')
        if not self.grid_z_min < self.grid_z_max:
            raise ConfigError(f'grid_z_min ({self.grid_z_min}) must be below grid_z_max ({self.grid_z_max})')
        bad = [n for n in self.grid_ground_classes if n not in OCC_INDEX or n == 'free']
        if bad:
            raise ConfigError(f'parameter grid_ground_classes: unknown class(es) {bad}; classes: '
                              f'{list(OCC_CLASSES[:-1])}')
        if not self.frame_id or not self.model_frame:
            raise ConfigError('parameters frame_id and model_frame must not be empty')
        if len(self.model_frame_offset) != 4 or not all(math.isfinite(v) for v in self.model_frame_offset):
            raise ConfigError(f'parameter model_frame_offset must be 4 finite numbers [x, y, z, yaw], got '
                              f'{list(self.model_frame_offset)}')
        if self.model_frame == self.frame_id and any(self.model_frame_offset):
            raise ConfigError(f'model_frame is frame_id ({self.frame_id}) but model_frame_offset is not zero')
        if self.output_frame == 'odom' and self.odom_source == 'none':
            raise ConfigError('output_frame odom needs an ego pose: odom_source odometry or tf')


def _coerce(p: ParamSpec, value: Any) -> Any:
    d = p.default
    try:
        if isinstance(d, bool):
            if not isinstance(value, bool):
                raise TypeError
            out: Any = value
        elif isinstance(d, int):
            if isinstance(value, bool) or int(value) != value:
                raise TypeError
            out = int(value)
        elif isinstance(d, float):
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
        elif isinstance(d, list) and d and isinstance(d[0], float):
            if isinstance(value, str) or not value or any(isinstance(v, (bool, str)) for v in value):
                raise TypeError
            out = tuple(float(v) for v in value)
            if not all(math.isfinite(v) for v in out):
                raise ValueError
        elif isinstance(d, list):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError
            out = tuple(value)
        else:
            if not isinstance(value, str):
                raise TypeError
            out = value
    except (TypeError, ValueError):
        raise ConfigError(f'parameter {p.name}: expected {type(d).__name__}, got {value!r}') from None
    if p.choices and out not in p.choices:
        raise ConfigError(f'parameter {p.name}: {out!r} is not one of {", ".join(p.choices)}')
    for v in (out if isinstance(out, tuple) else (out,)):
        if p.min is not None and not isinstance(v, str) and v < p.min:
            raise ConfigError(f'parameter {p.name}: {v} is below the minimum {p.min}')
        if p.max is not None and not isinstance(v, str) and v > p.max:
            raise ConfigError(f'parameter {p.name}: {v} is above the maximum {p.max}')
    return out


def updated(params: NodeParams, changes: Mapping[str, Any]) -> NodeParams:
    """`params` with `changes` applied, validated as at start-up. Raises ConfigError (naming the
    parameter and the reason) for an unknown or read-only parameter or a bad value."""
    for name in changes:
        if name not in SPEC:
            raise ConfigError(f'unknown parameter {name}')
        if not SPEC[name].dynamic:
            raise ConfigError(f'parameter {name}: {read_only_reason(name)}')
    merged = {f.name: getattr(params, f.name) for f in fields(NodeParams)}
    merged = {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}
    merged.update(changes)
    return NodeParams.from_mapping(merged)


def set_parameters_callback(current: Callable[[], NodeParams], apply: Callable[[NodeParams], None],
                            log: Any) -> Callable[[list[Any]], Any]:
    """An rclpy on-set-parameters callback: the request validated by `updated` against `current()`,
    then handed to `apply`; a bad value is refused with the reason (rclpy itself refuses read-only
    parameters and values outside a descriptor's range before calling it)."""
    def callback(changes: list[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult
        try:
            p = updated(current(), {c.name: c.value for c in changes})
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        apply(p)
        log.info('parameters set: ' + ', '.join(f'{c.name}={c.value!r}' for c in changes))
        return SetParametersResult(successful=True)
    return callback


def declare_parameters(node: Any) -> NodeParams:
    """Declare every parameter on `node` (described; read-only with the reason unless dynamic)
    and return the validated values."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    values = {}
    for p in PARAMETERS:
        constraints = f'one of: {", ".join(p.choices)}' if p.choices else ''
        # Floats accept integers too (a YAML `100` for a double), validated by NodeParams.
        why = read_only_reason(p.name)
        desc = ParameterDescriptor(description=f'{p.description} {why}'.strip(), read_only=not p.dynamic,
                                   additional_constraints=constraints,
                                   dynamic_typing=isinstance(p.default, float))
        if isinstance(p.default, float) and (p.min is not None or p.max is not None):
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(p.min if p.min is not None else -1e300),
                to_value=float(p.max if p.max is not None else 1e300), step=0.0)]
        elif isinstance(p.default, int) and not isinstance(p.default, bool) and (
                p.min is not None or p.max is not None):
            desc.integer_range = [IntegerRange(from_value=int(p.min if p.min is not None else -2 ** 62),
                                               to_value=int(p.max if p.max is not None else 2 ** 62), step=1)]
        values[p.name] = node.declare_parameter(p.name, p.default, desc).value
    return NodeParams.from_mapping(values)
