"""Which voxels the cameras can see: voxel centres and per-camera frustum masks."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from occ_ros.core.config import GridSpec, ImageGeometry, ModelConfig
from occ_ros.core.errors import CalibrationError
from occ_ros.geometry.camera import image_aug_matrices
from occ_ros.geometry.rig import Rig


def voxel_centres(grid: GridSpec) -> np.ndarray:
    """(nx, ny, nz, 3) float64 ego coordinates of the voxel centres of `grid`."""
    axes = [lo + (np.arange(n) + 0.5) * step
            for lo, n, step in zip(grid.lower, grid.shape, grid.voxel)]
    xx, yy, zz = np.meshgrid(*axes, indexing='ij')
    return np.stack([xx, yy, zz], axis=-1)


def camera_frustum_masks(grid: Union[GridSpec, ModelConfig], rig: Rig,
                         geom: Optional[ImageGeometry] = None, max_depth: Optional[float] = None,
                         sensor2keyego_: Optional[np.ndarray] = None) -> np.ndarray:
    """Which voxels each camera sees: (N, nx, ny, nz) bool, N = len(rig) in rig order.

    A voxel counts as seen by a camera when its centre projects inside the network-input image
    of that camera (after resize and crop: u ∈ [−0.5, W_in − 0.5), v ∈ [−0.5, H_in − 0.5), the
    pixel footprint of the input) with optical depth z ∈ (0, max_depth].
    grid: the occupancy grid, or a ModelConfig (its grid; `geom` then defaults to its image
    geometry and `max_depth` to its last depth-bin edge, `depth.stop`).
    geom: the model's image geometry (default `ImageGeometry()`); each camera's own source size
    is applied (`with_source`). max_depth defaults to 45 m without a ModelConfig.
    The union over cameras (`mask.any(0)`) is "seen by at least one camera"; a dead camera is
    left out by dropping its row (or passing `rig.without([...])`). sensor2keyego_ (N, 4, 4)
    defaults to the rig's sensor2ego (all cameras at one ego pose).
    """
    if isinstance(grid, ModelConfig):
        g = grid.grid
        geom = grid.image if geom is None else geom
        max_depth = grid.depth.stop if max_depth is None else max_depth
    else:
        g = grid
    geom = ImageGeometry() if geom is None else geom
    max_depth = 45.0 if max_depth is None else float(max_depth)
    if max_depth <= 0:
        raise CalibrationError(f'max_depth must be positive, got {max_depth}')
    s2k = rig.sensor2ego() if sensor2keyego_ is None else np.asarray(sensor2keyego_, np.float64)
    if s2k.shape != (len(rig), 4, 4):
        raise CalibrationError(f'sensor2keyego must be ({len(rig)}, 4, 4), got {s2k.shape}')
    axes = [lo + (np.arange(n) + 0.5) * step for lo, n, step in zip(g.lower, g.shape, g.voxel)]
    h_in, w_in = geom.input_hw
    masks = np.empty((len(rig),) + g.shape, dtype=bool)
    for i, cam in enumerate(rig):
        post_rot, post_tran = image_aug_matrices(geom.with_source(cam.image_hw))
        R, t = s2k[i, :3, :3], s2k[i, :3, 3]
        # ego → input pixels (homogeneous): P·(p − t) with P = post_rot·K·Rᵀ; its third row is
        # Rᵀ's, so the homogeneous weight is the optical depth z. P·p is separable over the
        # voxel axes: (nx,1,1) + (1,ny,1) + (1,1,nz) terms per component.
        P = post_rot @ cam.K @ R.T                                        # (3, 3)
        off = P @ t
        U, V, Z = (axes[0][:, None, None] * P[c, 0] + axes[1][None, :, None] * P[c, 1]
                   + axes[2][None, None, :] * P[c, 2] - off[c] for c in range(3))  # (nx,ny,nz)
        # u = U/Z + tu ∈ [−0.5, W_in − 0.5) ⇔ (−0.5 − tu)·Z ≤ U < (W_in − 0.5 − tu)·Z for Z > 0
        seen = (Z > 0) & (Z <= max_depth)
        seen &= U >= (-0.5 - post_tran[0]) * Z
        seen &= U < (w_in - 0.5 - post_tran[0]) * Z
        seen &= V >= (-0.5 - post_tran[1]) * Z
        seen &= V < (h_in - 0.5 - post_tran[1]) * Z
        masks[i] = seen
    return masks
