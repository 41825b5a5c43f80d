"""RayIoU (flashocc.md §5.2): IoU of ray hits (class and depth) at depth thresholds 1, 2, 4 m.

The same rays are cast through the prediction and the ground truth (`raycast`). Only rays
whose GT hit is not free are evaluated (no camera or visibility mask). For each threshold t
and class c in 0..16, over the whole set:
    TP_c = rays with GT class c, predicted class c and |d_pred − d_gt| < t
    IoU_c = TP_c / (GT rays of c + predicted rays of c − TP_c)
RayIoU@t = NaN-mean over classes; RayIoU = mean of the RayIoU@t. A frame's rays from all its
origins are pooled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from occ_ros.core.classes import FREE, NUM_SEMANTIC, OCC_CLASSES
from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import EvaluationError
from occ_ros.metrics._util import as_volume, json_float, nanmean
from occ_ros.metrics.raycast import MAX_ORIGINS, RayCaster, RayHits, default_caster, prepare_origins

DEFAULT_THRESHOLDS: tuple[float, ...] = (1.0, 2.0, 4.0)


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    t = tuple(float(x) for x in thresholds)
    if not t or any(not (x > 0) for x in t):
        raise EvaluationError(f'depth thresholds must be positive metres, got {thresholds}')
    return t


def threshold_label(t: float) -> str:
    """'1' for 1.0, '0.5' for 0.5: the suffix of 'RayIoU@…'."""
    return f'{t:g}'


@dataclass(frozen=True)
class RayIoUResult:
    """RayIoU over a set of frames (percent values).

    iou: (T, C) per threshold and class (C = 17 classes 0..16), NaN where the class has neither
        GT nor predicted rays. rayiou_at: (T,) NaN-means over classes; rayiou: their mean.
    tp: (T, C) int64; gt_count, pred_count: (C,) int64 (evaluated rays only).
    """

    thresholds: tuple[float, ...]
    class_names: tuple[str, ...]
    iou: np.ndarray
    rayiou_at: np.ndarray
    rayiou: float
    tp: np.ndarray
    gt_count: np.ndarray
    pred_count: np.ndarray
    num_frames: int
    num_rays: int

    def to_dict(self) -> dict:
        return {
            'rayiou': json_float(self.rayiou),
            'rayiou_at': {threshold_label(t): json_float(v) for t, v in zip(self.thresholds, self.rayiou_at)},
            'per_class': {n: {threshold_label(t): json_float(self.iou[j, c]) for j, t in enumerate(self.thresholds)}
                          for c, n in enumerate(self.class_names)},
            'tp': self.tp.tolist(),
            'gt_rays': self.gt_count.tolist(),
            'pred_rays': self.pred_count.tolist(),
            'num_frames': self.num_frames,
            'num_rays': self.num_rays,
        }


class RayIoU:
    """Accumulates RayIoU counts over frames.

    grid: label-volume geometry. thresholds: depth thresholds in metres. caster: a RayCaster for
    `grid` (default: the official 14 040-ray pattern). max_origins: origins kept per frame.
    """

    def __init__(self, grid: GridSpec = OCC3D_GRID, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 caster: Optional[RayCaster] = None, max_origins: int = MAX_ORIGINS,
                 num_semantic: int = NUM_SEMANTIC, free: int = FREE,
                 class_names: tuple[str, ...] = OCC_CLASSES[:NUM_SEMANTIC]) -> None:
        self.grid = grid
        self.thresholds = check_thresholds(thresholds)
        self.caster = default_caster(grid, caster)
        self.max_origins = max_origins
        self.num_semantic = num_semantic
        self.free = free
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        T, C = len(self.thresholds), self.num_semantic
        self.tp = np.zeros((T, C), dtype=np.int64)
        self.gt_count = np.zeros(C, dtype=np.int64)
        self.pred_count = np.zeros(C, dtype=np.int64)
        self.num_frames = 0
        self.num_rays = 0

    def update(self, pred: Any, gt: Any, origins: Any = None) -> None:
        """Add one frame: pred, gt (nx, ny, nz) integer labels; origins (K, 3) ego-frame metres
        (filtered and subsampled by `select_origins`), None → the default LiDAR origin."""
        p = as_volume(pred, self.grid, 'prediction semantics')
        g = as_volume(gt, self.grid, 'ground-truth semantics')
        o = prepare_origins(origins, self.grid, self.max_origins)
        hits = self.caster.cast(np.stack([p, g]), o)   # one DDA pass for both volumes
        self.update_hits(hits[0], hits[1])

    def update_hits(self, pred: RayHits, gt: RayHits) -> None:
        """Add one frame from already-cast rays (same shape for both; all origins of the frame)."""
        if pred.shape != gt.shape:
            raise EvaluationError(f'prediction rays {pred.shape} and GT rays {gt.shape} differ')
        pl, pd = pred.labels.reshape(-1), pred.depth.reshape(-1)
        gl, gd = gt.labels.reshape(-1), gt.depth.reshape(-1)
        valid = gl != self.free
        pl, gl, err = pl[valid], gl[valid], np.abs(pd[valid] - gd[valid])
        C = self.num_semantic
        in_g = (gl >= 0) & (gl < C)
        in_p = (pl >= 0) & (pl < C)
        self.gt_count += np.bincount(gl[in_g], minlength=C)[:C]
        self.pred_count += np.bincount(pl[in_p], minlength=C)[:C]
        same = in_g & (gl == pl)
        for j, t in enumerate(self.thresholds):
            self.tp[j] += np.bincount(gl[same & (err < t)], minlength=C)[:C]
        self.num_frames += 1
        self.num_rays += int(valid.sum())

    def compute(self) -> RayIoUResult:
        union = self.gt_count[None, :] + self.pred_count[None, :] - self.tp
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = np.where(union > 0, self.tp / np.where(union > 0, union, 1), np.nan) * 100.0
        at = np.asarray([nanmean(row) for row in iou])
        return RayIoUResult(thresholds=self.thresholds, class_names=self.class_names, iou=iou,
                            rayiou_at=at, rayiou=nanmean(at), tp=self.tp.copy(),
                            gt_count=self.gt_count.copy(), pred_count=self.pred_count.copy(),
                            num_frames=self.num_frames, num_rays=self.num_rays)


__all__ = ['DEFAULT_THRESHOLDS', 'RayIoU', 'RayIoUResult', 'check_thresholds', 'threshold_label']
