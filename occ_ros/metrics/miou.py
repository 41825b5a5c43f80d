"""Occ3D voxel mIoU (flashocc.md §5.1): one confusion matrix over the whole set.

Only voxels where the camera mask is true are counted (FlashOcc evaluates every model that
way); ground-truth labels outside [0, num_classes) (e.g. 255) are ignored. IoU_c =
diag / (row + col − diag); mIoU is the NaN-mean over classes 0..16 (free, 17, is in the matrix
but not in the mean). Classes that appear neither in GT nor in predictions have IoU NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from occ_ros.core.classes import NUM_CLASSES, OCC_CLASSES
from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import EvaluationError
from occ_ros.metrics._util import as_numpy, as_volume, json_float, nanmean


@dataclass(frozen=True)
class SemanticIoUResult:
    """mIoU over a set of frames.

    iou: (num_classes,) float64 percent per class (free included), NaN where a class is absent
        from both GT and prediction in the counted voxels.
    miou: percent, NaN-mean of `iou` over the classes before `free` (0..16).
    confusion: (num_classes, num_classes) int64, rows = GT class, columns = predicted class.
    """

    iou: np.ndarray
    miou: float
    confusion: np.ndarray
    class_names: tuple[str, ...]
    num_frames: int
    num_voxels: int

    def per_class(self) -> dict[str, float]:
        """Per-class IoU (percent) for the classes entering the mean (0..16)."""
        k = len(self.class_names) - 1
        return {n: float(v) for n, v in zip(self.class_names[:k], self.iou[:k])}

    def to_dict(self) -> dict:
        return {
            'miou': json_float(self.miou),
            'per_class': {n: json_float(v) for n, v in zip(self.class_names, self.iou)},
            'num_frames': self.num_frames,
            'num_voxels': self.num_voxels,
            'confusion': self.confusion.tolist(),
            'confusion_layout': 'rows = ground truth, columns = prediction',
        }


class SemanticIoU:
    """Accumulates the voxel confusion matrix of an evaluation set.

    grid: shape of the volumes (all inputs are (nx, ny, nz) = grid.shape).
    num_classes: labels 0..num_classes−1 (free is the last); IoU is averaged over 0..free−1.
    """

    def __init__(self, grid: GridSpec = OCC3D_GRID, num_classes: int = NUM_CLASSES,
                 class_names: tuple[str, ...] = OCC_CLASSES) -> None:
        if len(class_names) != num_classes:
            raise EvaluationError(f'{len(class_names)} class names for {num_classes} classes')
        self.grid = grid
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.num_frames = 0
        self.num_voxels = 0

    def update(self, pred: Any, gt: Any, mask: Optional[Any] = None) -> None:
        """Add one frame.

        pred, gt: (nx, ny, nz) integer labels (numpy or torch). mask: (nx, ny, nz) bool/0-1,
        e.g. Occ3D `mask_camera`; None counts every voxel. Predicted labels outside
        [0, num_classes) in counted voxels raise EvaluationError.
        """
        p = as_volume(pred, self.grid, 'prediction semantics').reshape(-1)
        g = as_volume(gt, self.grid, 'ground-truth semantics').reshape(-1)
        n = self.num_classes
        keep = (g >= 0) & (g < n)
        if mask is not None:
            m = as_numpy(mask)
            if m.shape != self.grid.shape:
                raise EvaluationError(f'mask shape {m.shape} differs from the grid {self.grid.shape}')
            keep &= m.reshape(-1).astype(bool)
        p, g = p[keep].astype(np.int64), g[keep].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= n):
            raise EvaluationError(
                f'predicted labels must be in [0, {n}) where scored, found {p.min()}..{p.max()}; '
                f'map unknown voxels to free ({n - 1}) before scoring')
        self.confusion += np.bincount(g * n + p, minlength=n * n).reshape(n, n)
        self.num_frames += 1
        self.num_voxels += int(g.size)

    def compute(self) -> SemanticIoUResult:
        c = self.confusion.astype(np.float64)
        tp = np.diag(c)
        denom = c.sum(axis=0) + c.sum(axis=1) - tp
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan) * 100.0
        return SemanticIoUResult(iou=iou, miou=nanmean(iou[:self.num_classes - 1]),
                                 confusion=self.confusion.copy(), class_names=self.class_names,
                                 num_frames=self.num_frames, num_voxels=self.num_voxels)
