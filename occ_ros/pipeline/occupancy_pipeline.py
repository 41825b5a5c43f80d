"""`OccupancyPipeline`: one model and one camera rig, a FrameSet in, panoptic occupancy out —
preprocess → backend → post-process (→ temporal) per frame (the stages: the package docstring).
Its calibration and BEV geometry are `rig_geometry.RigGeometry`'s, its result type `protocol`'s.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

from occ_ros.backends import io_spec as ios
from occ_ros.backends.protocol import InferenceBackend
from occ_ros.core.config import DEFAULT_TEMPORAL_MODE, ModelConfig, check_temporal_mode
from occ_ros.core.errors import ConfigError, ImageError
from occ_ros.core.frames import CameraFrame, FrameSet, JpegImage, PreparedImage
from occ_ros.geometry import Rig
from occ_ros.geometry.lift_tables import LiftFrame, lift_history_inputs
from occ_ros.pipeline.protocol import PipelineResult
from occ_ros.pipeline.rig_geometry import RigGeometry
from occ_ros.postprocess import PanopticPostprocessor, PostprocessConfig
from occ_ros.preprocess import DeviceImagePreprocessor, ImagePreprocessor, make_preprocessor
from occ_ros.temporal import TemporalBuffer, TemporalConfig

LOG = logging.getLogger('occ_ros.pipeline')


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


class OccupancyPipeline(RigGeometry):
    """Preprocess → backend → post-process (→ temporal) for one model and one camera rig.

    `backend` is any `occ_ros.backends.InferenceBackend` whose inputs/outputs follow the
    exported graph's names (img, cam_vec, pool_* [, bev_history | hist_*, history_valid] →
    occ_label [, heatmap, reg, height, bev_feat | img_feat]).

    temporal_mode (multi-frame models; None = `core.config.DEFAULT_TEMPORAL_MODE`): 'lift' or
    'warp'. The backend's graph decides what can run: a graph of the other mode runs its own, and
    the reason is logged and kept in `temporal_fallback` (never silently).

    The calibration — the rig, its BEV geometry and caches, `set_calibration`, `check_frame`,
    `camera_ego2global` — is the base class `RigGeometry`'s (`pipeline.rig_geometry`).
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
        self._init_geometry(rig)
        self.missing_pose_resets = 0

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

    @property
    def backend_kind(self) -> str:
        return str(self.backend.kind)

    @property
    def jpeg_input(self) -> bool:
        """True with the device-side preprocessing (a CUDA backend) where it decodes `JpegImage`
        views on the device (nvJPEG through torchvision), so only compressed bytes reach it; without
        a device decoder the node keeps its reduced CPU decode (`DeviceImagePreprocessor.take_jpeg`)."""
        return isinstance(self.preprocessor, DeviceImagePreprocessor) and self.preprocessor.takes_jpeg

    def prepare_view(self, frame: CameraFrame) -> CameraFrame:
        """`frame` with its image replaced by its network view (a `PreparedImage`: the planes `run`'s
        batch makes of it, bit for bit) when the preprocessing runs on the CPU, so that a caller can
        prepare each camera as its image arrives (the node: `occ_ros.ros.early`); unchanged for a
        device-side preprocessing or a JPEG, missing or prepared view. The size checks of
        `check_frame` come first (a hostile size is refused, not resized). ImageError."""
        if not isinstance(self.preprocessor, ImagePreprocessor) or not isinstance(frame.image, np.ndarray):
            return frame
        self.check_frame(frame)
        return dataclasses.replace(frame, image=self.preprocessor.prepare(frame.image, frame.calib_hw))

    # ------------------------------------------------------------------ per frame
    def _images(self, frames: FrameSet) -> tuple[torch.Tensor, tuple[str, ...]]:
        """(1, N, 3, H, W) network input in rig order; missing cameras are blank views."""
        by_name = {f.name: f for f in frames.frames}
        images: list[Optional[Union[np.ndarray, JpegImage, PreparedImage]]] = []
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
        ort_spinning: ONNX Runtime's idle threads spin (None: `core.config.DEFAULT_ORT_SPINNING`, no).
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
