"""Scoring a set of (prediction, ground truth) frames with mIoU, RayIoU and RayPQ into one report.

`score_pairs` is the reusable core of `occ-ros eval`: it takes any iterable of frames (read from
npz directories, decoded from a bag, produced in a test) and returns an `EvalReport` with
`to_dict()` (JSON-safe) and `to_markdown()` (the per-class table).
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import EvaluationError
from occ_ros.core.parallel import ordered_map
from occ_ros.metrics._util import fmt_pct, json_float
from occ_ros.core.occupancy import Occupancy
from occ_ros.metrics.miou import SemanticIoU, SemanticIoUResult
from occ_ros.metrics.raycast import (DEFAULT_LIDAR_ORIGIN, MAX_ORIGINS, RayCaster, RayHits, default_caster,
                                     prepare_origins)
from occ_ros.metrics.rayiou import DEFAULT_THRESHOLDS, RayIoU, RayIoUResult, threshold_label
from occ_ros.metrics.raypq import RayPQ, RayPQResult


@dataclass(frozen=True)
class EvalSample:
    """One frame to score. origins: (K, 3) ego-frame metres, None → the default LiDAR origin."""

    key: str
    pred: Occupancy
    gt: Occupancy
    origins: Optional[np.ndarray] = None


@dataclass(frozen=True)
class EvalReport:
    """Scores of a set of frames (percent values; see the result types for details)."""

    semantic: SemanticIoUResult
    ray_iou: Optional[RayIoUResult]
    ray_pq: Optional[RayPQResult]
    num_frames: int
    num_panoptic_frames: int
    camera_mask: bool
    origins: str
    seconds: float
    missing_predictions: tuple[str, ...] = ()
    unmatched_predictions: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        """True when every ground-truth frame had a prediction."""
        return not self.missing_predictions

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            'num_frames': self.num_frames,
            'num_panoptic_frames': self.num_panoptic_frames,
            'miou': json_float(self.semantic.miou),
            'rayiou': json_float(self.ray_iou.rayiou) if self.ray_iou else None,
            'rayiou_at': ({threshold_label(t): json_float(v)
                           for t, v in zip(self.ray_iou.thresholds, self.ray_iou.rayiou_at)}
                          if self.ray_iou else None),
            'raypq': json_float(self.ray_pq.raypq) if self.ray_pq else None,
            'raypq_at': ({threshold_label(t): json_float(v)
                          for t, v in zip(self.ray_pq.thresholds, self.ray_pq.raypq_at)}
                         if self.ray_pq else None),
            'camera_mask': self.camera_mask,
            'origins': self.origins,
            'complete': self.complete,
            'missing_predictions': list(self.missing_predictions),
            'unmatched_predictions': list(self.unmatched_predictions),
            'notes': list(self.notes),
            'seconds': round(self.seconds, 3),
            'semantic': self.semantic.to_dict(),
            'ray_iou': self.ray_iou.to_dict() if self.ray_iou else None,
            'ray_pq': self.ray_pq.to_dict() if self.ray_pq else None,
        }
        return d

    def to_markdown(self) -> str:
        cols = ['class', 'IoU']
        ri, pq = self.ray_iou, self.ray_pq
        if ri:
            cols += [f'RayIoU@{threshold_label(t)}' for t in ri.thresholds]
        if pq:
            cols += [f'RayPQ@{threshold_label(t)}' for t in pq.thresholds]
        lines = [f'Occ3D evaluation: {self.num_frames} frames'
                 + (f' ({self.num_panoptic_frames} with instances on both sides)' if pq else '')
                 + f', camera mask {"on" if self.camera_mask else "off"}, origins: {self.origins}', '',
                 '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
        n_sem = len(self.semantic.class_names) - 1
        for c in range(n_sem):
            row = [self.semantic.class_names[c], fmt_pct(self.semantic.iou[c])]
            if ri:
                row += [fmt_pct(ri.iou[j, c]) for j in range(len(ri.thresholds))]
            if pq:
                row += [fmt_pct(pq.pq[j, c]) for j in range(len(pq.thresholds))]
            lines.append('| ' + ' | '.join(row) + ' |')
        mean = ['**mean**', fmt_pct(self.semantic.miou)]
        if ri:
            mean += [fmt_pct(v) for v in ri.rayiou_at]
        if pq:
            mean += [fmt_pct(v) for v in pq.raypq_at]
        lines.append('| ' + ' | '.join(mean) + ' |')
        lines.append('')
        summary = f'mIoU {fmt_pct(self.semantic.miou)}'
        if ri:
            summary += f' · RayIoU {fmt_pct(ri.rayiou)}'
        if pq:
            summary += f' · RayPQ {fmt_pct(pq.raypq)}'
        lines.append(summary)
        if self.missing_predictions:
            lines.append(f'MISSING predictions for {len(self.missing_predictions)} ground-truth frame(s): '
                         + _clip_list(self.missing_predictions))
        if self.unmatched_predictions:
            lines.append(f'{len(self.unmatched_predictions)} prediction(s) without ground truth: '
                         + _clip_list(self.unmatched_predictions))
        lines += list(self.notes)
        return '\n'.join(lines) + '\n'


def _clip_list(keys: Sequence[str], n: int = 10) -> str:
    head = ', '.join(keys[:n])
    return head + (f', … (+{len(keys) - n})' if len(keys) > n else '')


PairLike = Union[EvalSample, tuple]


def _as_sample(i: int, item: PairLike) -> EvalSample:
    if isinstance(item, EvalSample):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        pred, gt = item[0], item[1]
        if not isinstance(pred, Occupancy) or not isinstance(gt, Occupancy):
            raise EvaluationError('score_pairs takes EvalSample or (prediction, ground truth[, origins]) Occupancy '
                                  f'items, got ({type(pred).__name__}, {type(gt).__name__})')
        return EvalSample(str(i), pred, gt, item[2] if len(item) == 3 else None)
    raise EvaluationError(f'score_pairs item {i}: expected EvalSample or a (pred, gt) tuple, got {type(item).__name__}')


def score_pairs(samples: Iterable[PairLike], *, grid: GridSpec = OCC3D_GRID,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS, rays: bool = True, panoptic: bool = True,
                camera_mask: bool = True, max_origins: int = MAX_ORIGINS, caster: Optional[RayCaster] = None,
                origins_label: Optional[str] = None,
                progress: Optional[Callable[[int, str], None]] = None, workers: int = 1) -> EvalReport:
    """Score every frame of `samples` and return the report.

    samples: EvalSample items or (prediction, ground truth[, origins]) Occupancy tuples.
    rays: also compute RayIoU (and RayPQ); panoptic: RayPQ on frames whose prediction and GT
    both carry instances. camera_mask: mIoU over `mask_camera` voxels (the FlashOcc protocol).
    Each frame is cast once (prediction and GT in one pass) and feeds RayIoU and RayPQ.
    workers: processes casting the rays (0 = every core; `occ_ros.core.parallel`, spawned, so
    safe from a process with DDS threads); the scores are the same for any count.
    progress(i, key) is called after each frame.
    """
    t0 = time.perf_counter()
    sem = SemanticIoU(grid)
    cast = default_caster(grid, caster) if rays else None
    ray_iou = RayIoU(grid, thresholds, cast, max_origins) if rays else None
    ray_pq = RayPQ(grid, thresholds, cast, max_origins) if rays and panoptic else None
    n = n_pan = 0
    custom_origins = False
    queued: deque[EvalSample] = deque()

    def checked() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Each sample checked and queued; what the caster needs of it (key, labels, origins)."""
        for i, item in enumerate(samples):
            s = _as_sample(i, item)
            if camera_mask and s.gt.mask_camera is None:
                raise EvaluationError(f'frame {s.key!r}: the ground truth has no mask_camera; the Occ3D protocol '
                                      'scores mIoU inside it (camera_mask=False / --no-camera-mask scores all voxels)')
            try:
                o = prepare_origins(s.origins, grid, max_origins) if cast is not None else np.zeros((0, 3))
            except EvaluationError as exc:
                raise EvaluationError(f'frame {s.key}: {exc}') from exc
            queued.append(s)
            yield s.key, np.stack([s.pred.semantics, s.gt.semantics]), o

    if cast is not None:
        # the ray casting (most of the time) on `workers` spawned processes, in frame order
        casts: Iterator[Optional[RayHits]] = ordered_map(_cast_frame, cast, checked(), workers, 'spawn')
    else:
        casts = (None for _ in checked())
    for i, hits in enumerate(casts):
        s = queued.popleft()
        sem.update(s.pred.semantics, s.gt.semantics, s.gt.mask_camera if camera_mask else None)
        if hits is not None and ray_iou is not None:
            custom_origins |= s.origins is not None
            ray_iou.update_hits(hits[0], hits[1])
            if ray_pq is not None and s.pred.instances is not None and s.gt.instances is not None:
                ray_pq.update_hits(hits[0], hits[1], s.pred.instances, s.gt.instances)
                n_pan += 1
        n += 1
        if progress is not None:
            progress(i, s.key)
    if n == 0:
        raise EvaluationError('no frames to score')
    notes: list[str] = []
    if ray_pq is not None and n_pan == 0:
        notes.append('RayPQ not computed: no frame has instances in both prediction and ground truth.')
    elif ray_pq is not None and n_pan < n:
        notes.append(f'RayPQ over {n_pan} of {n} frames (the others lack instances on one side).')
    if origins_label is None:
        origins_label = ('per-frame origins' if custom_origins
                         else f'default LiDAR origin {tuple(round(v, 6) for v in DEFAULT_LIDAR_ORIGIN)} m')
    semantic = sem.compute()
    if not math.isfinite(semantic.miou):
        notes.append('mIoU is NaN: no class 0..16 occurs in the counted voxels.')
    return EvalReport(
        semantic=semantic,
        ray_iou=ray_iou.compute() if ray_iou else None,
        ray_pq=ray_pq.compute() if ray_pq is not None and n_pan else None,
        num_frames=n, num_panoptic_frames=n_pan, camera_mask=camera_mask,
        origins=origins_label if rays else 'n/a (no ray metrics)',
        seconds=time.perf_counter() - t0, notes=tuple(notes))


def _cast_frame(cast: RayCaster, item: tuple[str, np.ndarray, np.ndarray]) -> RayHits:
    """Rays of one frame: (key, (2, nx, ny, nz) prediction and GT labels, origins) → RayHits (2, O, R)."""
    key, labels, origins = item
    try:
        return cast.cast(labels, origins)
    except EvaluationError as exc:
        raise EvaluationError(f'frame {key}: {exc}') from exc


__all__ = ['EvalReport', 'EvalSample', 'score_pairs']
