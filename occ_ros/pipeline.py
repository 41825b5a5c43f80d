"""The occupancy pipeline: FrameSet in, panoptic occupancy out. No ROS below this line.

    rig/geometry   calibration → BEV-pool tables + camera vectors (cached until calibration changes;
                   rebuilt per frame when the cameras' capture-time ego poses differ: a moving car)
    preprocess     resize/crop, B,G,R planes, normalise → tensor on the backend's device
    temporal       multi-frame models: key-frame history, either lifted from each history frame's
                   cached neck features into the current ego frame (temporal_mode 'lift', the official
                   evaluation, default) or its cached BEV warped there ('warp')
    backend        torch | onnxruntime | tensorrt, one protocol
    postprocess    labels + centres → semantic grid, instance grid, instance table, visibility

The same object serves the node, the benchmark, the evaluator and the tests.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Union

import numpy as np
import torch

from occ_ros.backends import io_spec as ios
from occ_ros.backends.protocol import InferenceBackend
from occ_ros.core.config import DEFAULT_TEMPORAL_MODE, ModelConfig, check_temporal_mode
from occ_ros.core.errors import CalibrationError, ConfigError, ImageError
from occ_ros.core.frames import CameraFrame, FrameSet, JpegImage
from occ_ros.core.lru import BoundedLRU
from occ_ros.core.occupancy import Occupancy
from occ_ros.geometry import Rig, camera_frustum_masks, compute_bev_geometry
from occ_ros.geometry.frame_tables import FrameTableBuilder
from occ_ros.geometry.lift_tables import LiftFrame, lift_history_inputs
from occ_ros.postprocess import PanopticPostprocessor, PostprocessConfig
from occ_ros.preprocess import DeviceImagePreprocessor, check_plausible, check_reduction, make_preprocessor
from occ_ros.temporal import TemporalBuffer, TemporalConfig

LOG = logging.getLogger(__name__)
GEOMETRY_CACHE_SIZE = 4
# Per-camera ego poses closer than this to the reference pose (every entry of inv(ref)·pose − I)
# count as the same pose: the rig's cached tables are used (a parked car, a synchronised rig).
SAME_POSE_ATOL = 1e-9


@dataclass
class PipelineResult:
    """One processed frame set.

    occupancy: the frame as `core.occupancy.Occupancy` (semantics uint8 (nx, ny, nz), instances
    uint16, mask_camera = the live cameras' frusta, instance table with scores).
    timings_ms: stage → milliseconds.
    """

    stamp_ns: int
    occupancy: Occupancy
    timings_ms: dict[str, float]
    temporal_reset: Optional[str] = None
    missing: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


class FramePipeline(Protocol):
    """What the ROS node needs of a pipeline (`OccupancyPipeline` is one; the node tests use a
    stand-in that mypy checks against this protocol, test/fakes.py).

    `run` owns the whole per-frame policy, the temporal one included: a frame set without an
    ego pose (`frames.ego_pose is None`) drops the history of a multi-frame model and is reported
    as `temporal_reset='missing_pose'`.
    """

    model_cfg: ModelConfig

    @property
    def rig(self) -> Rig: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def backend_kind(self) -> str: ...

    @property
    def input_warnings(self) -> Mapping[str, str]: ...

    @property
    def jpeg_input(self) -> bool:
        """True when camera frames may carry `JpegImage`s: the preprocessing decodes them itself
        (on the backend's device), so a node hands it the received JPEG bytes undecoded."""
        ...

    def set_calibration(self, rig: Rig) -> None: ...

    def check_frame(self, frame: CameraFrame) -> None: ...

    def run(self, frames: FrameSet) -> PipelineResult: ...

    def close(self) -> None: ...


class _Timer:
    def __init__(self, sync_device: Optional[torch.device]) -> None:
        self.times: dict[str, float] = {}
        self._sync = sync_device is not None and sync_device.type == 'cuda'
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        if self._sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + (now - self._t) * 1e3
        self._t = now


class OccupancyPipeline:
    """Preprocess → backend → post-process (→ temporal) for one model and one camera rig.

    `backend` is any `occ_ros.backends.InferenceBackend` whose inputs/outputs follow the
    exported graph's names (img, cam_vec, pool_* [, bev_history | hist_*, history_valid] →
    occ_label [, heatmap, reg, height, bev_feat | img_feat]).

    temporal_mode (multi-frame models; None = `core.config.DEFAULT_TEMPORAL_MODE`): 'lift' or
    'warp'. The backend's graph decides what can run: a graph of the other mode runs its own, and
    the reason is logged and kept in `temporal_fallback` (never silently).
    """

    def __init__(self, model_cfg: ModelConfig, backend: InferenceBackend, rig: Rig,
                 post_cfg: Optional[PostprocessConfig] = None,
                 temporal_cfg: Optional[TemporalConfig] = None,
                 visibility_range_m: Optional[float] = None,
                 temporal_mode: Optional[str] = None) -> None:
        self.model_cfg = model_cfg
        self.backend = backend
        self.device = torch.device(backend.device)
        self.post_cfg = post_cfg or PostprocessConfig(grid=model_cfg.grid)
        self.postprocessor = PanopticPostprocessor(self.post_cfg)
        self.visibility_range_m = visibility_range_m or model_cfg.depth.stop
        self.temporal: Optional[TemporalBuffer] = None
        if model_cfg.num_frames > 1:
            tcfg = temporal_cfg or TemporalConfig.for_model(model_cfg)
            if tcfg.num_history != model_cfg.num_frames - 1:
                raise ConfigError(f'temporal num_history {tcfg.num_history} does not match the model '
                                  f'({model_cfg.num_frames} frames)')
            self.temporal = TemporalBuffer(tcfg)
        self.temporal_mode: Optional[str] = None
        self.temporal_fallback: Optional[str] = None   # why the requested mode does not run
        self.lift_overflows = 0                         # history slots beyond the pool bounds (run empty)
        if model_cfg.num_frames > 1:
            self.temporal_mode = self._resolve_temporal_mode(temporal_mode)
        self.preprocessor = make_preprocessor(model_cfg.image, self.device)   # by the backend's device
        self._rig = self._check_rig(rig)
        self._geometry_key: Optional[str] = None
        self._geometry: Any = None
        self._frustum_masks: Optional[torch.Tensor] = None
        self._geometry_cache: BoundedLRU[tuple[Any, torch.Tensor]] = BoundedLRU(GEOMETRY_CACHE_SIZE)
        self.geometry_updates = 0
        self.moving_frames = 0                        # frames whose tables used per-camera poses
        self.moving_overflows = 0                     # … that did not fit the pool bounds (ran uncompensated)
        self._builders: BoundedLRU[FrameTableBuilder] = BoundedLRU(GEOMETRY_CACHE_SIZE)   # per calibration key
        self.missing_pose_resets = 0
        self.input_warnings: dict[str, str] = {}     # camera → why its inputs are off the training range

    def _resolve_temporal_mode(self, requested: Optional[str]) -> str:
        """The mode the backend's graph runs; logs (and keeps) why when it is not `requested`."""
        want = check_temporal_mode(DEFAULT_TEMPORAL_MODE if requested is None else requested)
        names = {s.name for s in self.backend.input_spec()}
        graph = 'lift' if ios.HIST_IMG_FEAT in names else 'warp' if ios.BEV_HISTORY in names else None
        if graph is None:
            raise ConfigError(f'{self.model_cfg.name} is a multi-frame model but the {self.backend.kind} '
                              f'graph takes no history (inputs {sorted(names)})')
        if graph != want:
            self.temporal_fallback = (f'temporal_mode {want!r} requested but the {self.backend.kind} graph '
                                      f'takes the {graph!r} history inputs: running {graph!r} (export the '
                                      f'graph with --temporal-mode {want})')
            LOG.warning('%s', self.temporal_fallback)
        return graph

    # ------------------------------------------------------------------ calibration
    def _check_rig(self, rig: Rig) -> Rig:
        names = tuple(c.name for c in rig.cameras)
        missing = [n for n in self.model_cfg.cameras if n not in names]
        if missing:
            raise CalibrationError(f'the rig has no calibration for cameras {missing}; '
                                   f'rig cameras: {list(names)}')
        by_name = {c.name: c for c in rig.cameras}
        return Rig(cameras=tuple(by_name[n] for n in self.model_cfg.cameras))

    @property
    def rig(self) -> Rig:
        return self._rig

    @property
    def backend_kind(self) -> str:
        return str(self.backend.kind)

    @property
    def jpeg_input(self) -> bool:
        """True with the device-side preprocessing (a CUDA backend) where it decodes `JpegImage`
        views on the device (nvJPEG through torchvision), so only compressed bytes reach it; without
        a device decoder the node keeps its reduced CPU decode (`DeviceImagePreprocessor.take_jpeg`)."""
        return isinstance(self.preprocessor, DeviceImagePreprocessor) and self.preprocessor.takes_jpeg

    def set_calibration(self, rig: Rig) -> None:
        """Replace extrinsics/intrinsics; geometry is recomputed lazily on the next frame."""
        self._rig = self._check_rig(rig)
        self._geometry_key = None
        self._geometry_cache = BoundedLRU(GEOMETRY_CACHE_SIZE)

    def check_frame(self, frame: CameraFrame) -> None:
        """ImageError unless `frame`'s image can become a network input: a plausible size for the
        model's input and a uniform reduction of its calibrated size. `run` applies it to every
        camera and refuses the whole set; a caller that would rather blank the one camera (the node:
        one hostile stream must not starve the other five) calls it per camera first."""
        if frame.image is None:
            return
        # before any geometry or resize: a hostile size is refused, not allocated
        hw = frame.image_hw
        assert hw is not None
        check_plausible(frame.source_hw or hw, self.model_cfg.image.input_hw, frame.name)
        check_reduction(hw, frame.calib_hw)

    def _rig_for(self, frames: FrameSet) -> Rig:
        """The rig with each camera's K and calibrated size taken from the frame when it has one
        (the calibrated size, not a reduced image's: the geometry is the official one for it)."""
        cams = []
        by_name = {f.name: f for f in frames.frames}
        for calib in self._rig.cameras:
            f = by_name.get(calib.name)
            if f is not None and f.image is not None:
                self.check_frame(f)
                cams.append(dataclasses.replace(calib, K=np.asarray(f.K, dtype=np.float64),
                                                image_hw=f.source_hw or calib.image_hw))
            else:
                cams.append(calib)
        return Rig(cameras=tuple(cams))

    @staticmethod
    def _key(rig: Rig) -> str:
        h = hashlib.sha1()
        for c in rig.cameras:
            h.update(c.name.encode())
            h.update(np.ascontiguousarray(c.K, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(c.sensor2ego, dtype=np.float64).tobytes())
            h.update(repr(tuple(c.image_hw)).encode())
        return h.hexdigest()

    def _ensure_geometry(self, rig: Rig) -> None:
        """Make the BEV geometry of `rig` current; the last few are cached by calibration key.

        A camera that drops out and rejoins switches between two calibrations (its frame K vs
        the rig's); the cache makes that switch free instead of a ~1 s recomputation.
        """
        key = self._key(rig)
        if key == self._geometry_key:
            return
        cached = self._geometry_cache.get(key)
        if cached is None:
            geometry = compute_bev_geometry(self.model_cfg, rig).to(self.device)
            masks = camera_frustum_masks(self.model_cfg, rig, max_depth=self.visibility_range_m)
            cached = (geometry, torch.as_tensor(masks, device=self.device))
            self.geometry_updates += 1
            LOG.info('BEV geometry computed for %d cameras (%d frustum points in %d cells)',
                     len(rig.cameras), geometry.pool_index.num_points, geometry.pool_index.num_cells)
            self._geometry_cache.put(key, cached)
        self._geometry, self._frustum_masks = cached
        self._geometry_key = key
        self.input_warnings = self._check_camera_vectors(rig)

    def _check_camera_vectors(self, rig: Rig) -> dict[str, str]:
        """Cameras whose image resize (the camera vector's post_rot) lies outside the range the
        camera-aware DepthNet was trained on: its depth is then extrapolated."""
        lo_hi = self.model_cfg.trained_resize
        if lo_hi is None or self.model_cfg.depthnet != 'bevdepth':
            return {}
        out = {}
        for c in rig.cameras:
            resize = self.model_cfg.image.input_hw[1] / c.image_hw[1]
            if not lo_hi[0] - 1e-9 <= resize <= lo_hi[1] + 1e-9:
                out[c.name] = (f'image resize {resize:.3f} ({c.image_hw[1]} px wide → '
                               f'{self.model_cfg.image.input_hw[1]}) outside the {lo_hi[0]:.2f}–{lo_hi[1]:.2f} '
                               f'{self.model_cfg.name} was trained on: publish the resolution it was trained with')
        for name, why in out.items():
            LOG.warning('%s: %s', name, why)
        return out

    # ------------------------------------------------------------------ per frame
    def _images(self, frames: FrameSet) -> tuple[torch.Tensor, tuple[str, ...]]:
        """(1, N, 3, H, W) network input in rig order; missing cameras are blank views."""
        by_name = {f.name: f for f in frames.frames}
        images: list[Optional[Union[np.ndarray, JpegImage]]] = []
        sources: list[Optional[tuple[int, int]]] = []
        missing = list(frames.missing)
        for calib in self._rig.cameras:
            f = by_name.get(calib.name)
            images.append(None if f is None else f.image)
            sources.append(None if f is None else f.calib_hw)
            if images[-1] is None and calib.name not in missing:
                missing.append(calib.name)
        if len(missing) == len(self._rig.cameras):
            raise ImageError('every camera is missing: nothing to infer from')
        if isinstance(self.preprocessor, DeviceImagePreprocessor):
            return self.preprocessor.batch(images, sources).unsqueeze(0), tuple(missing)
        rgb = [im for im in images if not isinstance(im, JpegImage)]
        if len(rgb) != len(images):
            raise ImageError('a JPEG view reached a pipeline whose preprocessing does not decode '
                             '(jpeg_input is False): decode it first (occ_ros.ros.convert.frame_from_image)')
        return self.preprocessor.batch(rgb, sources).unsqueeze(0), tuple(missing)

    def camera_ego2global(self, frames: FrameSet) -> Optional[np.ndarray]:
        """(N, 4, 4) ego pose at each view's capture time in rig order — the official per-camera
        `ego2globals` — or None when every view shares the reference pose (no compensation needed).

        A view without its own pose (missing camera, none known at its stamp) takes the set's pose
        `frames.ego_pose`, the reference (view 0's capture time); without a set pose there is no
        compensation at all.
        """
        if frames.ego_pose is None:
            return None
        ref = np.asarray(frames.ego_pose.matrix, dtype=np.float64)
        by_name = {f.name: f for f in frames.frames}
        poses = []
        for calib in self._rig.cameras:
            f = by_name.get(calib.name)
            own = None if f is None or f.ego_pose is None else f.ego_pose.matrix
            poses.append(ref if own is None else np.asarray(own, dtype=np.float64))
        e2g = np.stack(poses)
        rel = np.linalg.solve(e2g[0], e2g)                          # inv(ego2global_0) · ego2global_i
        if float(np.max(np.abs(rel - np.eye(4)))) <= SAME_POSE_ATOL:
            return None
        return e2g

    def _builder(self, rig: Rig) -> FrameTableBuilder:
        """The per-frame table builder of the current calibration (a few kept: 4D history frames
        re-use theirs)."""
        key = self._geometry_key or self._key(rig)
        builder = self._builders.get(key)
        if builder is None:
            builder = FrameTableBuilder(self.model_cfg, rig, self.device, fast_path=False)
            self._builders.put(key, builder)
        return builder

    def _frame_geometry(self, rig: Rig, ego2global: np.ndarray) -> Any:
        """The tables of this frame's per-camera poses (official `prepare_inputs` sensor2keyegos),
        built in torch on the backend's device by a builder kept per calibration."""
        builder = self._builder(rig)
        self.moving_frames += 1
        try:
            return builder.build(ego2global)
        except CalibrationError as exc:
            # beyond the motion the bounds were sized for (core.config.MOTION_MAX_*): this frame
            # runs uncompensated instead of being lost
            self.moving_overflows += 1
            if self.moving_overflows in (1, 10) or self.moving_overflows % 100 == 0:   # not once per frame
                LOG.warning('per-camera poses not applied (%d frames so far): %s', self.moving_overflows, exc)
            return self._geometry

    def network_inputs(self, frames: FrameSet, timer: Optional['_Timer'] = None
                       ) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
        """The single-frame network inputs of `frames` (img, cam_vec, pool tables) on the backend's
        device, and the cameras that are missing. What the official pipeline feeds the network for
        these images, calibrations and per-camera ego poses (tested against it in
        test_camera_inputs.py and test_ego_motion.py)."""
        inputs, missing, _ = self._frame_inputs(frames, timer or _Timer(None))
        return inputs, missing

    def _frame_inputs(self, frames: FrameSet, timer: '_Timer'
                      ) -> tuple[dict[str, torch.Tensor], tuple[str, ...], tuple[Rig, Any, Optional[np.ndarray]]]:
        """`network_inputs` plus (rig, geometry, per-camera ego2global or None) of the frame."""
        rig = self._rig_for(frames)
        self._ensure_geometry(rig)
        e2g = self.camera_ego2global(frames)
        geo = self._geometry if e2g is None else self._frame_geometry(rig, e2g)
        timer.lap('geometry')
        img, missing = self._images(frames)
        inputs: dict[str, torch.Tensor] = {
            'img': img.to(self.device),
            'cam_vec': geo.cam_vec,
            'pool_depth_idx': geo.pool_index.depth_idx,
            'pool_feat_idx': geo.pool_index.feat_idx,
            'pool_cell_row': geo.pool_index.cell_row,
        }
        timer.lap('preprocess')
        return inputs, missing, (rig, geo, e2g)

    def _lift_inputs(self, frames: FrameSet, pose: Optional[np.ndarray], rig: Rig, geo: Any,
                     e2g: Optional[np.ndarray]) -> tuple[dict[str, torch.Tensor], Optional[str], np.ndarray]:
        """The lift's history inputs of this frame (official `extract_img_feat`, see
        `geometry.lift_tables`), the reset reason, and this frame's per-camera ego poses (what its
        `LiftFrame` keeps once the forward has given its neck features)."""
        assert self.temporal is not None
        n_hist = self.temporal.cfg.num_history
        slots: list[Any] = [None] * n_hist
        reason: Optional[str] = None
        if pose is not None:
            stored, why = self.temporal.select(frames.stamp_ns, pose)
            slots = [None if f is None else f.feat for f in stored]
            reason = why.value
        key_pose = np.asarray(pose if pose is not None else np.eye(4), dtype=np.float64)
        lift = lift_history_inputs(self.model_cfg, slots, key_pose, geo.sensor2keyego, self.device)
        if lift.overflows:
            self.lift_overflows += lift.overflows
            if self.lift_overflows in (1, 10) or self.lift_overflows % 100 == 0:   # not once per frame
                LOG.warning('lift: %d history slot(s) beyond the pool bounds ran as empty (%d so far): %s',
                            lift.overflows, self.lift_overflows, lift.overflow_reason)
        inputs = {ios.HIST_IMG_FEAT: lift.img_feat, ios.HIST_CAM_VEC: lift.cam_vec,
                  ios.HIST_POOL_DEPTH_IDX: lift.depth_idx, ios.HIST_POOL_FEAT_IDX: lift.feat_idx,
                  ios.HIST_POOL_CELL_ROW: lift.cell_row, ios.HISTORY_VALID: lift.valid}
        cams = e2g if e2g is not None else np.repeat(key_pose[None], len(rig.cameras), axis=0)
        return inputs, reason, cams

    def run(self, frames: FrameSet) -> PipelineResult:
        """Process one synchronised frame set. Raises ImageError / CalibrationError on bad input."""
        timer = _Timer(self.device)
        inputs, missing, (rig, geo, e2g) = self._frame_inputs(frames, timer)
        reset: Optional[str] = None
        pose = frames.ego_pose.matrix if frames.ego_pose is not None else None
        lift_cams: Optional[np.ndarray] = None        # lift: this frame's per-camera poses, kept with its features
        if self.temporal is not None and pose is None:
            # No ego motion known: history cannot be aligned, so it is dropped.
            self.temporal.reset()
            self.missing_pose_resets += 1
            reset = 'missing_pose'
        if self.temporal is not None and self.temporal_mode == 'lift':
            lift_inputs, why, lift_cams = self._lift_inputs(frames, pose, rig, geo, e2g)
            inputs.update(lift_inputs)
            if why is not None and why != 'none':
                reset = why
            timer.lap('temporal')
        elif self.temporal is not None:
            if pose is None:
                history, valid, reason = None, torch.zeros(self.temporal.cfg.num_history), None
            else:
                history, valid, reason = self.temporal.prepare(frames.stamp_ns, pose)
            if history is None:
                ny, nx = self.model_cfg.grid.bev_shape
                history = torch.zeros(1, self.model_cfg.history_channels, ny, nx)
            inputs['bev_history'] = history.to(self.device)
            inputs['history_valid'] = valid.to(self.device)
            if reason is not None and reason.name != 'NONE':
                reset = reason.value
            timer.lap('temporal')
        outputs = self.backend.infer(inputs)
        timer.lap('inference')
        if self.temporal is not None and pose is not None and lift_cams is not None:
            feat = outputs[ios.IMG_FEAT][0].detach()                   # (N, C_neck, fH, fW), exact to cache
            self.temporal.store(LiftFrame(img_feat=feat, ego2global=lift_cams, builder=self._builder(rig)),
                                frames.stamp_ns, pose)
        elif self.temporal is not None and pose is not None and ios.BEV_FEAT in outputs:
            self.temporal.push(outputs[ios.BEV_FEAT], frames.stamp_ns, pose)
        visible = self._visibility(missing)
        result = self.postprocessor(outputs['occ_label'], outputs.get('heatmap'),
                                    outputs.get('reg'), outputs.get('height'),
                                    visible=visible.unsqueeze(0))[0]
        result.stamp_ns = frames.stamp_ns
        occupancy = result.to_occupancy()
        timer.lap('postprocess')
        timings = dict(timer.times)
        timings['total'] = sum(timings.values())
        return PipelineResult(stamp_ns=frames.stamp_ns, occupancy=occupancy, timings_ms=timings,
                              temporal_reset=reset, missing=missing)

    def _visibility(self, missing: tuple[str, ...]) -> torch.Tensor:
        """(nx, ny, nz) bool: inside the frustum (within range) of at least one live camera."""
        assert self._frustum_masks is not None
        live = [i for i, c in enumerate(self._rig.cameras) if c.name not in missing]
        return self._frustum_masks[live].any(0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, model: str, rig: Rig, checkpoint: Optional[str] = None,
                    backend: str = 'auto', device: str = 'cpu', engine_dir: Optional[str] = None,
                    precision: Optional[str] = None, threads: Optional[int] = None,
                    post_cfg: Optional[PostprocessConfig] = None,
                    temporal_cfg: Optional[TemporalConfig] = None, official_compat: bool = False,
                    tensorrt_tf32: bool = False,
                    progress: Optional[Callable[[str], None]] = None,
                    history: Optional[Mapping[str, float]] = None,
                    temporal_mode: Optional[str] = None,
                    ort_spinning: Optional[bool] = None) -> 'OccupancyPipeline':
        """Build model + backend from names and paths (what the node and the CLI call).

        checkpoint: an occ_ros checkpoint (its config wins) or an official FlashOcc one;
        None → the shipped weights of `model` (occ_ros.weights), else random weights.
        history: TemporalConfig overrides of a multi-frame model (history_interval_s, …).
        temporal_mode: multi-frame models — 'lift' | 'warp' (None: `core.config.DEFAULT_TEMPORAL_MODE`).
        ort_spinning: ONNX Runtime's idle threads spin (None: its default, yes; see OrtBackend).
        precision: None → fp16 for TensorRT (the
        strongly typed graph), fp32 elsewhere (also for 'auto'). `progress` receives one line per step.
        """
        from pathlib import Path

        from occ_ros.backends.factory import (create_backend, probe_availability, resolve_precision,
                                              select_backend_kind)
        from occ_ros.model.loading import load_model

        kind = select_backend_kind(backend, probe_availability())
        precision = resolve_precision(precision, kind, device)
        say = progress or (lambda line: (LOG.warning if line.startswith('WARNING:') else LOG.info)('%s', line))
        if not checkpoint:
            from occ_ros.weights import default_checkpoint
            shipped = default_checkpoint(model)
            if shipped is not None:
                checkpoint = str(shipped)
            else:
                # through `progress`: the node logs it with the ROS logger (WARNING lines at warn level)
                say(f'WARNING: model {model} has no checkpoint: running with RANDOM weights (outputs are '
                    'meaningless; pass a checkpoint)')
        net = load_model(model, Path(checkpoint) if checkpoint else None, say)
        inference = create_backend(kind, model=net, device=device, precision=precision,
                                   threads=threads, engine_dir=engine_dir, tf32=tensorrt_tf32,
                                   temporal_mode=temporal_mode, ort_spinning=ort_spinning)
        if post_cfg is None:
            post_cfg = PostprocessConfig(grid=net.cfg.grid, official_compat=official_compat)
        elif official_compat and not post_cfg.official_compat:
            post_cfg = post_cfg.with_(official_compat=True)
        if temporal_cfg is None and history and net.cfg.num_frames > 1:
            temporal_cfg = TemporalConfig.for_model(net.cfg, **history)
        pipe = cls(net.cfg, inference, rig, post_cfg=post_cfg, temporal_cfg=temporal_cfg,
                   temporal_mode=temporal_mode)
        if pipe.temporal_fallback:
            say(f'WARNING: {pipe.temporal_fallback}')
        elif pipe.temporal_mode:
            say(f'{net.cfg.name}: temporal_mode {pipe.temporal_mode}')
        return pipe

    def close(self) -> None:
        self.preprocessor.close()
        self.backend.close()
