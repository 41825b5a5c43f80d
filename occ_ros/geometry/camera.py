"""The DepthNet camera inputs: image augmentation matrices, sensor → key-ego transforms and the
27-value camera vector (flashocc.md §2.2)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from occ_ros.core.config import ImageGeometry
from occ_ros.core.errors import CalibrationError

CAMERA_VECTOR_SIZE = 27           # DepthNet camera vector length (flashocc.md §2.2)


def image_aug_matrices(geom: ImageGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Test-time image transform as the official post_rot (3, 3) / post_tran (3,) (float64).

    post_rot = diag(scale, scale, 1), post_tran = (0, −crop_top, 0): a source pixel (u, v)
    lands at (scale·u, scale·v − crop_top) in the network input. `geom.src_hw` must be the size
    of the image actually received, and K must be for that size. For a camera whose images differ
    from the configured source size, pass `geom.with_source(image_hw)`: resize and crop are then
    derived for that source exactly as for the configured one (scale = input_w / src_w, keep the
    bottom input_h rows). The official code uses the same `scale` on both axes even though the
    resized height is int(src_h·scale); for 900×1600 both coincide, otherwise the vertical
    mismatch is below one pixel of the resized image. Like the official code, pixel positions
    are scaled about the image corner, ignoring the half-pixel shift of a real resize
    (0.5·(1 − scale) ≈ 0.28 px at 0.44) — the checkpoints were trained with exactly this.
    """
    s = geom.scale
    post_rot = np.diag([s, s, 1.0])
    post_tran = np.array([0.0, -float(geom.crop_top), 0.0])
    return post_rot, post_tran


def sensor2keyego(sensor2ego: np.ndarray, ego2global: Optional[np.ndarray] = None,
                  key_ego2global: Optional[np.ndarray] = None) -> np.ndarray:
    """Camera → key-ego transforms (N, 4, 4), float64.

    sensor2keyego_i = inv(ego2global_0) · ego2global_i · sensor2ego_i (the official
    `prepare_inputs`, computed in double precision): the BEV frame is the ego frame of view 0
    (CAM_FRONT_LEFT in nuScenes order) at that camera's timestamp; ego2global_i is the ego pose
    at camera i's timestamp. With `ego2global=None` every camera shares one ego pose (the
    product is the identity) and sensor2keyego = sensor2ego.
    key_ego2global (4, 4): the key ego pose when it is not view 0's of `ego2global` — a 4D
    model's history frame, whose cameras map into the *current* key frame's ego (bevdet4d.py
    l.241-249: every frame through inv(ego2globals[:, 0, 0]), the current frame's view 0).
    """
    s2e = np.asarray(sensor2ego, dtype=np.float64)
    if s2e.ndim != 3 or s2e.shape[1:] != (4, 4):
        raise CalibrationError(f'sensor2ego must be (N, 4, 4), got {s2e.shape}')
    if ego2global is None:
        return s2e.copy()
    e2g = np.asarray(ego2global, dtype=np.float64)
    if e2g.shape != s2e.shape:
        raise CalibrationError(f'ego2global must be (N, 4, 4) like sensor2ego {s2e.shape}, '
                               f'got {e2g.shape}')
    if not np.all(np.isfinite(e2g)):
        raise CalibrationError('ego2global contains NaN or infinite values')
    key = e2g[0] if key_ego2global is None else np.asarray(key_ego2global, dtype=np.float64)
    if key.shape != (4, 4) or not np.all(np.isfinite(key)):
        raise CalibrationError(f'key_ego2global must be a finite (4, 4) pose, got shape {key.shape}')
    try:
        global2key = np.linalg.inv(key)
    except np.linalg.LinAlgError as exc:
        raise CalibrationError('the key ego pose is singular') from exc
    return global2key[None] @ e2g @ s2e


def camera_vectors(K: np.ndarray, post_rot: np.ndarray, post_tran: np.ndarray,
                   sensor2keyego_: np.ndarray, bda: Optional[np.ndarray] = None) -> np.ndarray:
    """The DepthNet camera vector (N, 27) float32 (official `get_mlp_input`, flashocc.md §2.2).

    Layout per camera: [fx, fy, cx, cy, post_rot00, post_rot01, post_tran0, post_rot10,
    post_rot11, post_tran1, bda00, bda01, bda10, bda11, bda22] followed by sensor2keyego[:3, :4]
    row-major (R00 R01 R02 t0 R10 R11 R12 t1 R20 R21 R22 t2). K is the source-image intrinsics
    (before the resize/crop); bda (3, 3) defaults to the identity (test time).
    K (N,3,3), post_rot (N,3,3), post_tran (N,3), sensor2keyego (N,4,4).
    """
    K = np.asarray(K, dtype=np.float64)
    pr = np.asarray(post_rot, dtype=np.float64)
    pt = np.asarray(post_tran, dtype=np.float64)
    s2k = np.asarray(sensor2keyego_, dtype=np.float64)
    n = K.shape[0]
    if (K.shape != (n, 3, 3) or pr.shape != (n, 3, 3) or pt.shape != (n, 3)
            or s2k.shape != (n, 4, 4)):
        raise CalibrationError(f'camera_vectors: shapes K {K.shape}, post_rot {pr.shape}, '
                               f'post_tran {pt.shape}, sensor2keyego {s2k.shape} do not agree')
    b = np.eye(3) if bda is None else np.asarray(bda, dtype=np.float64)
    if b.shape != (3, 3):
        raise CalibrationError(f'bda must be (3, 3), got {b.shape}')
    head = np.stack([
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2],
        pr[:, 0, 0], pr[:, 0, 1], pt[:, 0],
        pr[:, 1, 0], pr[:, 1, 1], pt[:, 1],
        np.full(n, b[0, 0]), np.full(n, b[0, 1]), np.full(n, b[1, 0]), np.full(n, b[1, 1]),
        np.full(n, b[2, 2]),
    ], axis=1)                                                        # (N, 15)
    vec = np.concatenate([head, s2k[:, :3, :].reshape(n, 12)], axis=1)   # (N, 27)
    return vec.astype(np.float32)
