"""Per-frame pool tables for a moving car, in torch on the backend's device.

With per-camera capture-time ego poses (`occ_ros.ros.ego_poses`) the frustum → BEV-cell mapping
changes every frame, so the tables cannot be cached by calibration. `FrameTableBuilder` splits
`tables.compute_bev_geometry` at the pose: what depends only on calibration is computed once in
float64 numpy exactly as there (the frustum lifted to p = (q_x·q_z, q_y·q_z, q_z) per camera, K⁻¹,
the image transforms); per frame it composes sensor2keyego (numpy, the official
`prepare_inputs` formula), applies R·K⁻¹ and t to the cached points in float64 **on the device**,
truncates to cells toward zero and builds the bucketed tables there (`build_bev_pool_index`). The
result equals `compute_bev_geometry(cfg, rig, ego2global)` table for table (tested) and costs a
fraction of it (`bench/bench_frame_tables.py`).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import CalibrationError
from occ_ros.geometry.camera import camera_vectors, sensor2keyego
from occ_ros.geometry.rig import Rig
from occ_ros.geometry.tables import (BevGeometry, depth_bin_values, frustum_pixels, image_transforms,
                                     rig_for_model)
from occ_ros.model.bev_pool import build_bev_pool_index, required_capacities


class FrameTableBuilder:
    """Pool tables and camera vectors of `rig` under `cfg` for any per-camera ego poses.

    rig: the calibration (reordered to the model's camera order); device: where the tables are
    built and live (the backend's). fast_path: also build the eager CSR tables (`bev_pool_fast`).
    `build(ego2global)` → `BevGeometry` on `device`; raises CalibrationError when the frame does not
    fit `cfg.pool_bounds` (the derived bounds hold the relative motion of a fast drive:
    `core.config.MOTION_MAX_*`).
    """

    def __init__(self, cfg: ModelConfig, rig: Rig, device: Union[str, torch.device] = 'cpu',
                 fast_path: bool = True) -> None:
        self.cfg = cfg
        self.rig = rig_for_model(cfg, rig)
        self.device = torch.device(device)
        self.fast_path = fast_path
        self.geoms, self.post_rot, self.post_tran = image_transforms(cfg, self.rig)
        self.K = self.rig.intrinsics()
        self.sensor2ego = self.rig.sensor2ego()
        pix = frustum_pixels(cfg.image.input_hw, cfg.feature_hw, depth_bin_values(cfg))    # (D, fH, fW, 3)
        lifted = []
        for i in range(len(self.rig)):                # the operations of tables.frustum_points_ego
            inv_post = np.linalg.inv(np.asarray(self.post_rot[i], dtype=np.float64))
            q = (pix - np.asarray(self.post_tran[i], dtype=np.float64)) @ inv_post.T
            lifted.append(np.concatenate([q[..., :2] * q[..., 2:3], q[..., 2:3]], axis=-1))
        # (N, 3, M): coordinate-major, so the per-camera 3×3 product is one wide matmul
        self._points = torch.from_numpy(np.ascontiguousarray(
            np.stack(lifted).reshape(len(self.rig), -1, 3).transpose(0, 2, 1))).to(self.device)
        self._k_inv = [np.linalg.inv(k) for k in self.K]
        grid = cfg.grid.bev_pillar()
        self._grid = grid
        self._lower = torch.tensor(grid.lower, dtype=torch.float64, device=self.device)
        self._voxel = torch.tensor(grid.voxel, dtype=torch.float64, device=self.device)
        n, m = self._points.shape[0], self._points.shape[2]
        d = cfg.depth.n
        fh, fw = cfg.feature_hw
        self._depth_size = n * m
        self._feat_rows = n * fh * fw
        self._pix_per_cam = fh * fw
        self._points_per_cam = d * fh * fw
        self._clip_hi = float(max(grid.nx, grid.ny) + 2)

    def build(self, ego2global: Optional[np.ndarray] = None,
              key_ego2global: Optional[np.ndarray] = None) -> BevGeometry:
        """The tables for ego2global (N, 4, 4), the ego pose at each camera's capture time (None:
        one shared pose). Matches `compute_bev_geometry(cfg, rig, ego2global)`. key_ego2global
        (4, 4): the key ego when it is not view 0's (a 4D history frame posed in the current key
        ego: `camera.sensor2keyego`); the returned camera vector then carries that relative pose."""
        s2k = sensor2keyego(self.sensor2ego, ego2global, key_ego2global)
        cam_vec = camera_vectors(self.K, self.post_rot, self.post_tran, s2k)
        combine = np.stack([s2k[i, :3, :3] @ self._k_inv[i] for i in range(len(self.rig))])
        c = torch.from_numpy(combine).to(self.device)                              # (N, 3, 3)
        t = torch.from_numpy(np.ascontiguousarray(s2k[:, :3, 3])).to(self.device)  # (N, 3)
        x = torch.matmul(c, self._points) + t[:, :, None]                           # (N, 3, M) float64
        cell = ((x - self._lower[:, None]) / self._voxel[:, None]).clamp_(-2.0, self._clip_hi)
        idx = cell.to(torch.int64)                                                  # truncation toward zero
        g = self._grid
        ix, iy, iz = idx[:, 0].reshape(-1), idx[:, 1].reshape(-1), idx[:, 2].reshape(-1)   # point order
        keep = (ix >= 0) & (ix < g.nx) & (iy >= 0) & (iy < g.ny) & (iz >= 0) & (iz < 1)
        ranks_depth = torch.nonzero(keep).squeeze(1)
        cam = ranks_depth // self._points_per_cam
        ranks_feat = cam * self._pix_per_cam + ranks_depth % self._pix_per_cam
        ranks_bev = iy[ranks_depth] * g.nx + ix[ranks_depth]
        try:
            index = build_bev_pool_index(ranks_depth, ranks_feat, ranks_bev, self._depth_size,
                                         self._feat_rows, (g.ny, g.nx), self.cfg.pool_bounds,
                                         fast_path=self.fast_path)
        except CalibrationError as exc:
            raise CalibrationError(
                f'the per-camera ego poses of this frame do not fit the pool bounds of model '
                f'{self.cfg.name!r}: {exc}') from exc
        need = tuple(required_capacities(ranks_bev, g.ny * g.nx, len(self.cfg.pool_bounds.capacities)))
        return BevGeometry(
            cam_vec=torch.from_numpy(cam_vec).unsqueeze(0).to(self.device), pool_index=index, K=self.K,
            post_rot=self.post_rot, post_tran=self.post_tran, sensor2keyego=s2k,
            camera_names=self.rig.names, image_geometry=self.geoms, required_capacities=need,
            num_frustum_points=self._depth_size)
