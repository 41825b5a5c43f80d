"""Centerness-head training targets: Gaussian heatmaps, centre offsets and heights (CenterPoint style).

The heatmap has one channel per detection class (classes.DET_CLASSES order) on the BEV grid
(rows y, columns x). Each object splats a Gaussian whose radius follows CenterNet's
`gaussian_radius` with min_overlap 0.1 and a minimum radius of 2 cells, as in the reference
training config; the centre cell holds exactly 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from occ_ros.core.config import GridSpec


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float = 0.1) -> float:
    """CenterNet's radius so that a box shifted by it still overlaps the truth by min_overlap."""
    h, w = length_cells, width_cells
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


@dataclass
class CenterTargets:
    """heatmap (K, ny, nx) float32, reg (2, ny, nx), height (1, ny, nx), mask (ny, nx) bool."""

    heatmap: torch.Tensor
    reg: torch.Tensor
    height: torch.Tensor
    mask: torch.Tensor


def center_targets(centers: np.ndarray, sizes: np.ndarray, det_class: np.ndarray, grid: GridSpec,
                   num_classes: int, min_radius: int = 2, min_overlap: float = 0.1) -> CenterTargets:
    """Targets for objects given in the ego frame.

    centers: (K, 3) box gravity centres (m); sizes: (K, 3) length, width, height (m);
    det_class: (K,) heatmap channel. Objects whose centre cell is outside the grid are skipped.
    """
    ny, nx = grid.bev_shape
    heat = np.zeros((num_classes, ny, nx), np.float32)
    reg = np.zeros((2, ny, nx), np.float32)
    height = np.zeros((1, ny, nx), np.float32)
    mask = np.zeros((ny, nx), bool)
    step_x, step_y = grid.x.step, grid.y.step
    for (x, y, z), (length, width, _), cls in zip(np.asarray(centers), np.asarray(sizes), det_class):
        fx, fy = (x - grid.x.lo) / step_x, (y - grid.y.lo) / step_y
        cx, cy = int(math.floor(fx)), int(math.floor(fy))
        if not (0 <= cx < nx and 0 <= cy < ny):
            continue
        radius = max(min_radius, int(gaussian_radius(length / step_x, width / step_y, min_overlap)))
        sigma = (2 * radius + 1) / 6.0
        ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
        g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma)).astype(np.float32)
        y0, y1 = max(0, cy - radius), min(ny, cy + radius + 1)
        x0, x1 = max(0, cx - radius), min(nx, cx + radius + 1)
        patch = g[y0 - cy + radius:y1 - cy + radius, x0 - cx + radius:x1 - cx + radius]
        region = heat[int(cls), y0:y1, x0:x1]
        np.maximum(region, patch, out=region)
        reg[:, cy, cx] = (fx - cx, fy - cy)
        height[0, cy, cx] = z
        mask[cy, cx] = True
    return CenterTargets(torch.from_numpy(heat), torch.from_numpy(reg), torch.from_numpy(height),
                         torch.from_numpy(mask))
