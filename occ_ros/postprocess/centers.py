"""Centre decoding: heatmap → 3×3 peak NMS → two-stage top-k → score threshold → metric centres."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from occ_ros.core.errors import InputError
from occ_ros.postprocess.config import Centers, PostprocessConfig


def decode_centers(heatmap_logits: torch.Tensor, reg: torch.Tensor, height: torch.Tensor,
                   cfg: PostprocessConfig) -> list[Centers]:
    """Decode instance centres from the centerness head, exactly as §2.3.

    Args:
        heatmap_logits: (B, Cdet, ny, nx) raw logits, Cdet = len(cfg.det_to_occ) (10).
        reg: (B, 2, ny, nx) sub-cell offsets (x then y) in cells.
        height: (B, 1, ny, nx) centre z in metres (used directly, not from the occupancy).
        cfg: post-processing configuration.

    Returns:
        One `Centers` per batch element, in descending score order (the order of the second
        top-K stage), on the input device.

    Steps: heat = sigmoid; k×k max-pool (stride 1, pad k//2) and keep cells equal to the pooled
    max (others zeroed); top-K1 per class over ny·nx cells (K1 = min(top_k, ny·nx)); top-K2 over
    the Cdet·K1 candidates (K2 = min(top_k, Cdet·K1)), class = candidate // K1; row = cell // nx
    (y), column = cell % nx (x); x = (column + reg0)·step_x + x_lo, y = (row + reg1)·step_y + y_lo,
    z = height; keep score > threshold and lo <= xyz <= hi of `post_center_range`.
    Default mode only (not `official_compat`): the centres are clamped to the grid — a centre
    whose x or y lies outside the grid ([lo, hi)) is dropped, and a z outside the grid becomes
    the height of the lowest / highest voxel centre. The official range (±61.2 m) keeps centres the 80 m grid
    cannot hold; with a badly regressed offset (random or diverged weights: y = −50 m) such a
    centre owns every voxel of its class for which it is the nearest, and its table entry lies
    off the grid. A trained head's centres are a peak cell plus a sub-cell offset, inside the grid.
    The official coder computes x as ((col + reg0)·4)·0.1 − 40 in float32; here it is
    (col + reg0)·0.4 − 40, which may differ by one float32 ulp (irrelevant unless a centre lies
    within ~1e-6 m of a voxel boundary).
    """
    grid = cfg.grid
    ny, nx = grid.bev_shape
    ndet = len(cfg.det_to_occ)
    if heatmap_logits.dim() != 4 or tuple(heatmap_logits.shape[1:]) != (ndet, ny, nx):
        raise InputError(f'heatmap must be (B, {ndet}, {ny}, {nx}) for grid {grid.shape}, got '
                         f'{tuple(heatmap_logits.shape)}')
    b = heatmap_logits.shape[0]
    if tuple(reg.shape) != (b, 2, ny, nx):
        raise InputError(f'reg must be ({b}, 2, {ny}, {nx}), got {tuple(reg.shape)}')
    if tuple(height.shape) != (b, 1, ny, nx):
        raise InputError(f'height must be ({b}, 1, {ny}, {nx}), got {tuple(height.shape)}')
    device = heatmap_logits.device

    heat = heatmap_logits.to(torch.float32).sigmoid()
    k = cfg.nms_kernel
    if k > 1:
        pooled = F.max_pool2d(heat, kernel_size=k, stride=1, padding=k // 2)
        heat = heat * (heat == pooled)

    k1 = min(cfg.top_k, ny * nx)
    scores1, cells1 = torch.topk(heat.reshape(b, ndet, ny * nx), k1, dim=2)       # (B, Cdet, K1)
    k2 = min(cfg.top_k, ndet * k1)
    scores, cand = torch.topk(scores1.reshape(b, ndet * k1), k2, dim=1)           # (B, K2)
    det_class = torch.div(cand, k1, rounding_mode='floor')
    cell = cells1.reshape(b, ndet * k1).gather(1, cand)                           # (B, K2)
    row = torch.div(cell, nx, rounding_mode='floor')
    col = cell - row * nx

    offs = reg.to(torch.float32).reshape(b, 2, ny * nx).gather(2, cell[:, None, :].expand(b, 2, k2))
    z = height.to(torch.float32).reshape(b, ny * nx).gather(1, cell)
    x = (col.to(torch.float32) + offs[:, 0]) * grid.x.step + grid.x.lo
    y = (row.to(torch.float32) + offs[:, 1]) * grid.y.step + grid.y.lo
    xyz = torch.stack((x, y, z), dim=2)                                           # (B, K2, 3)

    rng = torch.tensor(cfg.post_center_range, dtype=torch.float32, device=device)
    keep = (scores > cfg.score_threshold) & (xyz >= rng[:3]).all(2) & (xyz <= rng[3:]).all(2)
    if not cfg.official_compat:              # clamp to the grid (see above)
        keep &= (x >= grid.x.lo) & (x < grid.x.hi) & (y >= grid.y.lo) & (y < grid.y.hi)
        zc, half = xyz[..., 2], grid.z.step / 2
        zc[zc < grid.z.lo] = grid.z.lo + half
        zc[zc >= grid.z.hi] = grid.z.hi - half
    table = torch.tensor(cfg.det_to_occ, dtype=torch.int64, device=device)
    out = []
    for i in range(b):
        m = keep[i]
        det = det_class[i][m]
        out.append(Centers(xyz=xyz[i][m], scores=scores[i][m], det_class=det, occ_class=table[det]))
    return out
