"""Frustum → BEV pool tables: the frustum points of every camera in the ego frame, their voxel
ranks, and the bucketed pool index the plugin-free BEV pool gathers with (`compute_bev_geometry`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from occ_ros.core.config import GridSpec, ImageGeometry, ModelConfig, PoolBounds
from occ_ros.core.errors import CalibrationError
from occ_ros.geometry.camera import camera_vectors, image_aug_matrices, sensor2keyego
from occ_ros.geometry.rig import Rig
from occ_ros.model.bev_pool import (
    BevPoolIndex,
    build_bev_pool_index,
    required_capacities,
)


def frustum_pixels(input_hw: tuple[int, int], feature_hw: tuple[int, int],
                   depth_values: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """The LSS frustum (D, fH, fW, 3) of (u, v, d) in network-input pixels.

    u = linspace(0, W_in−1, fW), v = linspace(0, H_in−1, fH) — pixel positions, not cell centres
    (official `create_frustum`), d = the depth bin values.
    """
    h_in, w_in = input_hw
    fh, fw = feature_hw
    d = np.asarray(depth_values, dtype=dtype)
    u = np.linspace(0, w_in - 1, fw, dtype=dtype)
    v = np.linspace(0, h_in - 1, fh, dtype=dtype)
    dd, vv, uu = np.meshgrid(d, v, u, indexing='ij')
    return np.stack([uu, vv, dd], axis=-1)                           # (D, fH, fW, 3)


def depth_bin_values(cfg: ModelConfig, dtype: Any = np.float64) -> np.ndarray:
    """(D,) depth of each LSS bin: start + i·step (official `torch.arange(start, stop, step)`)."""
    bins = cfg.depth.start + np.arange(cfg.depth.n, dtype=dtype) * dtype(cfg.depth.step)
    return bins.astype(dtype)


def frustum_points_ego(cfg: ModelConfig, K: np.ndarray, post_rot: np.ndarray,
                       post_tran: np.ndarray, sensor2keyego_: np.ndarray,
                       bda: Optional[np.ndarray] = None, precision: str = 'float64') -> np.ndarray:
    """Key-ego coordinates (N, D, fH, fW, 3) of every frustum point (official `get_lidar_coor`).

    Per point: q = inv(post_rot)·((u, v, d) − post_tran); p = (q_x·q_z, q_y·q_z, q_z);
    x = R·K⁻¹·p + t (sensor2keyego); then bda·x. `precision` 'float64' (default) or 'float32'
    (the official evaluation dtype; sensor2keyego is still composed in float64 first).
    """
    dt = _dtype(precision)
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0]
    pix = frustum_pixels(cfg.image.input_hw, cfg.feature_hw, depth_bin_values(cfg, dt), dt)
    b = np.eye(3) if bda is None else np.asarray(bda, dtype=np.float64)
    out = np.empty((n,) + pix.shape, dtype=dt)
    for i in range(n):
        inv_post = np.linalg.inv(np.asarray(post_rot[i], dtype=dt)).astype(dt)
        q = (pix - np.asarray(post_tran[i], dtype=dt)) @ inv_post.T            # (D, fH, fW, 3)
        p = np.concatenate([q[..., :2] * q[..., 2:3], q[..., 2:3]], axis=-1)
        s2k = np.asarray(sensor2keyego_[i]).astype(dt)
        combine = s2k[:3, :3] @ np.linalg.inv(K[i].astype(dt)).astype(dt)
        x = p @ combine.T + s2k[:3, 3]
        if bda is not None:
            x = x @ b.astype(dt).T
        out[i] = x
    return out


def _dtype(precision: str) -> Any:
    if precision == 'float64':
        return np.float64
    if precision == 'float32':
        return np.float32
    raise CalibrationError(f"precision must be 'float64' or 'float32', got {precision!r}")


@dataclass(frozen=True)
class FrustumRanks:
    """Kept frustum points and where they go (official `voxel_pooling_prepare_v2`, unsorted).

    ranks_depth: (M,) int64 flat index into depth (N, D, fH, fW).
    ranks_feat: (M,) int64 flat index into context rows (N, fH, fW).
    ranks_bev: (M,) int64 BEV cell y·nx + x.
    """

    ranks_depth: np.ndarray
    ranks_feat: np.ndarray
    ranks_bev: np.ndarray
    depth_size: int
    feat_rows: int
    bev_hw: tuple[int, int]


def voxelize_frustum(points: np.ndarray, grid: GridSpec) -> FrustumRanks:
    """Assign frustum points (N, D, fH, fW, 3) to the BEV pillar grid `grid` (nz must be 1).

    Cell index = ((p − lower) / voxel) truncated toward zero (`.long()` in the official code),
    kept when 0 ≤ ix < nx, 0 ≤ iy < ny, 0 ≤ iz < 1. Note the quirk: a point at −0.5 cell units
    is truncated to 0 and kept.
    """
    if grid.nz != 1:
        raise CalibrationError(f'the BEV pool grid must have one z cell (use grid.bev_pillar()), '
                               f'got nz={grid.nz}')
    n, d, fh, fw, _ = points.shape
    dt = points.dtype.type
    lower = np.asarray(grid.lower, dtype=dt)
    voxel = np.asarray(grid.voxel, dtype=dt)
    flat = points.reshape(-1, 3)
    cell = ((flat - lower) / voxel)
    # truncation toward zero; clip first so far-away points cannot overflow int64
    idx = np.clip(cell, -2.0, float(max(grid.nx, grid.ny) + 2)).astype(np.int64)
    keep = ((idx[:, 0] >= 0) & (idx[:, 0] < grid.nx) & (idx[:, 1] >= 0) & (idx[:, 1] < grid.ny)
            & (idx[:, 2] >= 0) & (idx[:, 2] < 1))
    ranks_depth = np.nonzero(keep)[0].astype(np.int64)                 # index into (N, D, fH, fW)
    cam = ranks_depth // (d * fh * fw)
    pix = ranks_depth % (fh * fw)
    ranks_feat = cam * (fh * fw) + pix                                 # index into (N, fH, fW)
    ranks_bev = idx[keep, 1] * grid.nx + idx[keep, 0]                  # y·nx + x
    return FrustumRanks(ranks_depth, ranks_feat, ranks_bev.astype(np.int64),
                        depth_size=n * d * fh * fw, feat_rows=n * fh * fw,
                        bev_hw=(grid.ny, grid.nx))


@dataclass(frozen=True)
class BevGeometry:
    """Calibration-derived network inputs, cached until the calibration changes.

    cam_vec: (1, N, 27) float32 tensor, the DepthNet camera vector per view.
    pool_index: the bucketed BEV-pool tables (`occ_ros.model.bev_pool`).
    K: (N, 3, 3), post_rot: (N, 3, 3), post_tran: (N, 3), sensor2keyego: (N, 4, 4) — float64
    numpy, per camera in network view order `camera_names`.
    image_geometry: per-camera ImageGeometry (source size of that camera's images).
    required_capacities: cells per pool bucket this calibration needs (for sizing PoolBounds).
    """

    cam_vec: torch.Tensor
    pool_index: BevPoolIndex
    K: np.ndarray
    post_rot: np.ndarray
    post_tran: np.ndarray
    sensor2keyego: np.ndarray
    camera_names: tuple[str, ...]
    image_geometry: tuple[ImageGeometry, ...]
    required_capacities: tuple[int, ...]
    num_frustum_points: int = 0

    @property
    def device(self) -> torch.device:
        return self.cam_vec.device

    def to(self, device: Union[torch.device, str]) -> 'BevGeometry':
        """A copy with the tensors (camera vector, pool tables) on `device`."""
        return BevGeometry(self.cam_vec.to(device), self.pool_index.to(device), self.K,
                           self.post_rot, self.post_tran, self.sensor2keyego, self.camera_names,
                           self.image_geometry, self.required_capacities,
                           self.num_frustum_points)

    def model_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network inputs: cam_vec (1, N, 27), pool_depth_idx (P,), pool_feat_idx (P,),
        pool_cell_row (ny·nx,)."""
        return (self.cam_vec,) + self.pool_index.tensors()


def rig_for_model(cfg: ModelConfig, rig: Rig) -> Rig:
    """`rig` reordered to the model's camera order (CalibrationError if cameras differ)."""
    if rig.names == tuple(cfg.cameras):
        return rig
    if set(rig.names) != set(cfg.cameras):
        raise CalibrationError(f'model {cfg.name!r} expects cameras {list(cfg.cameras)} but the '
                               f'rig has {list(rig.names)}')
    return rig.ordered(cfg.cameras)


def image_transforms(cfg: ModelConfig, rig: Rig
                     ) -> tuple[tuple[ImageGeometry, ...], np.ndarray, np.ndarray]:
    """Per-camera ImageGeometry and stacked post_rot (N, 3, 3) / post_tran (N, 3)."""
    geoms = tuple(cfg.image.with_source(c.image_hw) for c in rig)
    mats = [image_aug_matrices(g) for g in geoms]
    return geoms, np.stack([m[0] for m in mats]), np.stack([m[1] for m in mats])


def frustum_ranks(cfg: ModelConfig, rig: Rig, ego2global: Optional[np.ndarray] = None,
                  precision: str = 'float64') -> FrustumRanks:
    """Point → cell ranks for `rig` under model `cfg` (rig already in model order)."""
    _, post_rot, post_tran = image_transforms(cfg, rig)
    s2k = sensor2keyego(rig.sensor2ego(), ego2global)
    pts = frustum_points_ego(cfg, rig.intrinsics(), post_rot, post_tran, s2k, precision=precision)
    return voxelize_frustum(pts, cfg.grid.bev_pillar())


def compute_bev_geometry(cfg: ModelConfig, rig: Rig, ego2global: Optional[np.ndarray] = None,
                         *, precision: str = 'float64', fast_path: bool = True,
                         bda: Optional[np.ndarray] = None) -> BevGeometry:
    """Everything the network needs from calibration: camera vectors and the pool tables.

    rig: cameras matching `cfg.cameras` (reordered to model order if needed); each camera's K is
    for its own `image_hw`, and its resize/crop is derived from that size.
    ego2global: optional (N, 4, 4) ego pose at each camera's timestamp (see `sensor2keyego`).
    fast_path: also build the sparse-CSR tables for the eager CPU fast path (`bev_pool_fast`).
    bda: (3, 3) BEV data augmentation applied to the lifted points (training: a flip of the BEV
    plane); None at test time.
    Raises CalibrationError when the rig needs more pool capacity than `cfg.pool_bounds`; the
    message gives the capacities it needs.
    """
    rig = rig_for_model(cfg, rig)
    geoms, post_rot, post_tran = image_transforms(cfg, rig)
    K = rig.intrinsics()
    s2k = sensor2keyego(rig.sensor2ego(), ego2global)
    cam_vec = camera_vectors(K, post_rot, post_tran, s2k, bda)
    pts = frustum_points_ego(cfg, K, post_rot, post_tran, s2k, bda, precision=precision)
    ranks = voxelize_frustum(pts, cfg.grid.bev_pillar())
    rb = torch.from_numpy(ranks.ranks_bev)
    need = tuple(required_capacities(rb, ranks.bev_hw[0] * ranks.bev_hw[1],
                                     len(cfg.pool_bounds.capacities)))
    try:
        index = build_bev_pool_index(torch.from_numpy(ranks.ranks_depth),
                                     torch.from_numpy(ranks.ranks_feat), rb,
                                     ranks.depth_size, ranks.feat_rows, ranks.bev_hw,
                                     cfg.pool_bounds, fast_path=fast_path)
    except CalibrationError as exc:
        raise CalibrationError(
            f'calibration of cameras {list(rig.names)} does not fit the pool bounds of model '
            f'{cfg.name!r}: {exc}') from exc
    return BevGeometry(
        cam_vec=torch.from_numpy(cam_vec).unsqueeze(0),                 # (1, N, 27)
        pool_index=index, K=K, post_rot=post_rot, post_tran=post_tran, sensor2keyego=s2k,
        camera_names=rig.names, image_geometry=geoms, required_capacities=need,
        num_frustum_points=int(pts.shape[0] * pts.shape[1] * pts.shape[2] * pts.shape[3]))


def suggest_pool_bounds(cfg: ModelConfig, rig: Rig, ego2global: Optional[np.ndarray] = None,
                        headroom: float = 1.3) -> PoolBounds:
    """Pool bounds with `headroom` over what `rig` needs under `cfg` (for a custom rig).

    Use as `cfg.with_(pool_bounds=suggest_pool_bounds(cfg, rig))` before exporting a model for
    a rig that does not fit the derived defaults.
    """
    ranks = frustum_ranks(cfg, rig_for_model(cfg, rig), ego2global)
    cells = ranks.bev_hw[0] * ranks.bev_hw[1]
    cnt = np.bincount(ranks.ranks_bev, minlength=cells)
    nb = max(1, int(cnt.max() - 1).bit_length() + 1) if cnt.size and cnt.max() > 0 else 1
    need = required_capacities(torch.from_numpy(ranks.ranks_bev), cells, nb)
    return PoolBounds.from_need(need, headroom=headroom)
