"""The pipeline's calibration: the camera rig it runs (checked against the model's cameras) and
the BEV geometry of it — pool tables, camera vectors and frustum masks — computed once per
calibration and cached by a calibration key (a camera that drops out and rejoins switches between
two calibrations for free), rebuilt per frame when the cameras' capture-time ego poses differ (a
moving car; official `prepare_inputs` sensor2keyegos) by a `FrameTableBuilder` kept per
calibration.

`RigGeometry` is a base class of `OccupancyPipeline`: it holds this state (`_init_geometry`) and
answers, per frame, which rig and tables the frame's images and poses need.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any, Optional

import numpy as np
import torch

from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import CalibrationError
from occ_ros.core.frames import CameraFrame, FrameSet
from occ_ros.core.lru import BoundedLRU
from occ_ros.geometry import Rig, camera_frustum_masks, compute_bev_geometry
from occ_ros.geometry.frame_tables import FrameTableBuilder
from occ_ros.preprocess import check_plausible, check_reduction

LOG = logging.getLogger('occ_ros.pipeline')
GEOMETRY_CACHE_SIZE = 4
# Per-camera ego poses closer than this to the reference pose (every entry of inv(ref)·pose − I)
# count as the same pose: the rig's cached tables are used (a parked car, a synchronised rig).
SAME_POSE_ATOL = 1e-9


class RigGeometry:
    """The calibrated rig and its BEV geometry (a base class of `OccupancyPipeline`, which sets
    `model_cfg`, `device` and `visibility_range_m` before `_init_geometry`)."""

    model_cfg: ModelConfig
    device: torch.device
    visibility_range_m: float

    def _init_geometry(self, rig: Rig) -> None:
        """Calibrate to `rig` (CalibrationError unless it has every camera of the model); the
        geometry is computed on the first frame."""
        self._rig = self._check_rig(rig)
        self._geometry_key: Optional[str] = None
        self._geometry: Any = None
        self._frustum_masks: Optional[torch.Tensor] = None
        self._geometry_cache: BoundedLRU[tuple[Any, torch.Tensor]] = BoundedLRU(GEOMETRY_CACHE_SIZE)
        self.geometry_updates = 0
        self.moving_frames = 0                        # frames whose tables used per-camera poses
        self.moving_overflows = 0                     # … that did not fit the pool bounds (ran uncompensated)
        self._builders: BoundedLRU[FrameTableBuilder] = BoundedLRU(GEOMETRY_CACHE_SIZE)   # per calibration key
        self.input_warnings: dict[str, str] = {}     # camera → why its inputs are off the training range

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
