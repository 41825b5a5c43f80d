"""RayPQ (flashocc.md §5.3): panoptic quality of ray hits at depth thresholds 1, 2, 4 m.

Rays and filtering are those of RayIoU (GT hit not free; a frame's origins pooled). Each
evaluated ray carries (class, instance id, depth) on both sides, the instance id being the
instance grid sampled at the hit voxel. Per frame, threshold t and class c in 0..16:

- GT segments: for the thing classes (car, truck, construction_vehicle, bus, trailer,
  motorcycle, bicycle, pedestrian) one segment per GT instance id; GT thing rays with id 0
  (no box) form one segment per class; every other class (including barrier, traffic_cone and
  others) is one segment per class, whatever its GT ids. As in the official code, a GT id
  whose evaluated rays span more than one class is treated as id 0.
- Predicted segments: rays of predicted class c grouped by predicted instance id (id 0, i.e.
  stuff or unassigned, is one segment). Ids are matched, never compared.
- Intersection: rays where both sides are class c, in the two segments, and |depth error| < t.
  IoU = inter / (|gt seg| + |pred seg| − inter), areas counting all rays of the segment in
  class c. IoU > 0.5 is a TP (a unique match); unmatched GT segments with ≥ 10 rays are FN,
  unmatched predicted segments with ≥ 10 rays are FP.
- PQ_c = (Σ IoU_TP / TP) · TP / (TP + ½FP + ½FN), NaN where TP + FP + FN = 0.
  RayPQ@t = NaN-mean over classes; RayPQ = NaN-mean over all (t, c).

Instance grids: occ_ros post-processing produces 0 for stuff/free and ids ≥ 1 for things,
which is what this module takes. The official FlashOcc `pano_inst` grid stores the class id in
stuff voxels and ids ≥ 18 for things; `instances_from_official_pano` converts it (the
grouping into segments is unchanged by the conversion). Occ3D-panoptic GT `instances` (ids
≥ 1 for boxes, one id per stuff class) can be used as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from occ_ros.core.classes import FREE, NUM_SEMANTIC, OCC_CLASSES, THING_CLASSES
from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import EvaluationError
from occ_ros.metrics._util import as_numpy, as_volume, json_float, nanmean
from occ_ros.metrics.raycast import MAX_ORIGINS, RayCaster, RayHits, default_caster, prepare_origins
from occ_ros.metrics.rayiou import DEFAULT_THRESHOLDS, check_thresholds, threshold_label

MIN_SEGMENT_RAYS = 10      # unmatched segments smaller than this are neither FP nor FN
MATCH_IOU = 0.5            # a pair is a TP when IoU > MATCH_IOU
_EPS = 1e-5


@dataclass(frozen=True)
class RayPQResult:
    """RayPQ over a set of frames (percent values).

    pq, sq, rq: (T, C) per threshold and class (C = 17 classes 0..16), NaN where
        TP + FP + FN = 0. raypq_at: (T,) NaN-means over classes; raypq: NaN-mean over (t, c).
    tp, fp, fn: (T, C) int64 segment counts; iou_sum: (T, C) Σ IoU over TPs.
    """

    thresholds: tuple[float, ...]
    class_names: tuple[str, ...]
    pq: np.ndarray
    sq: np.ndarray
    rq: np.ndarray
    raypq_at: np.ndarray
    raypq: float
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou_sum: np.ndarray
    num_frames: int

    def to_dict(self) -> dict:
        def table(a: np.ndarray) -> dict:
            return {n: {threshold_label(t): json_float(a[j, c]) for j, t in enumerate(self.thresholds)}
                    for c, n in enumerate(self.class_names)}
        return {
            'raypq': json_float(self.raypq),
            'raypq_at': {threshold_label(t): json_float(v) for t, v in zip(self.thresholds, self.raypq_at)},
            'per_class': table(self.pq),
            'sq': table(self.sq),
            'rq': table(self.rq),
            'tp': self.tp.tolist(), 'fp': self.fp.tolist(), 'fn': self.fn.tolist(),
            'num_frames': self.num_frames,
        }


class RayPQ:
    """Accumulates RayPQ counts over frames (see the module docstring for the rules)."""

    def __init__(self, grid: GridSpec = OCC3D_GRID, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 caster: Optional[RayCaster] = None, max_origins: int = MAX_ORIGINS,
                 thing_classes: Iterable[int] = THING_CLASSES, min_segment_rays: int = MIN_SEGMENT_RAYS,
                 match_iou: float = MATCH_IOU, num_semantic: int = NUM_SEMANTIC, free: int = FREE,
                 class_names: tuple[str, ...] = OCC_CLASSES[:NUM_SEMANTIC]) -> None:
        if not 0.5 <= match_iou < 1.0:
            raise EvaluationError(f'match_iou must be in [0.5, 1) for matches to be unique, got {match_iou}')
        self.grid = grid
        self.thresholds = check_thresholds(thresholds)
        self.caster = default_caster(grid, caster)
        self.max_origins = max_origins
        self.thing_classes = np.asarray(sorted(set(int(c) for c in thing_classes)), dtype=np.int64)
        self.min_segment_rays = int(min_segment_rays)
        self.match_iou = float(match_iou)
        self.num_semantic = num_semantic
        self.free = free
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        T, C = len(self.thresholds), self.num_semantic
        self.tp = np.zeros((T, C), dtype=np.int64)
        self.fp = np.zeros((T, C), dtype=np.int64)
        self.fn = np.zeros((T, C), dtype=np.int64)
        self.iou_sum = np.zeros((T, C), dtype=np.float64)
        self.num_frames = 0

    def update(self, pred_semantics: Any, pred_instances: Any, gt_semantics: Any, gt_instances: Any,
               origins: Any = None) -> None:
        """Add one frame: (nx, ny, nz) semantic and instance grids of both sides; origins (K, 3)
        ego-frame metres (filtered/subsampled by `select_origins`), None → default origin."""
        p = as_volume(pred_semantics, self.grid, 'prediction semantics')
        g = as_volume(gt_semantics, self.grid, 'ground-truth semantics')
        o = prepare_origins(origins, self.grid, self.max_origins)
        hits = self.caster.cast(np.stack([p, g]), o)
        self.update_hits(hits[0], hits[1], pred_instances, gt_instances)

    def update_hits(self, pred: RayHits, gt: RayHits, pred_instances: Any, gt_instances: Any) -> None:
        """Add one frame from already-cast rays; instance grids are sampled at the hit voxels."""
        pi = as_volume(pred_instances, self.grid, 'prediction instances')
        gi = as_volume(gt_instances, self.grid, 'ground-truth instances')
        if pred.shape != gt.shape:
            raise EvaluationError(f'prediction rays {pred.shape} and GT rays {gt.shape} differ')
        self.update_rays(pred.labels, pred.sample(pi), pred.depth, gt.labels, gt.sample(gi), gt.depth)

    def update_rays(self, pred_labels: Any, pred_ids: Any, pred_depth: Any,
                    gt_labels: Any, gt_ids: Any, gt_depth: Any) -> None:
        """Add one frame from per-ray values (any equal shapes; every ray of the frame)."""
        arrays = [np.asarray(as_numpy(a)).reshape(-1)
                  for a in (pred_labels, pred_ids, pred_depth, gt_labels, gt_ids, gt_depth)]
        if len({a.size for a in arrays}) != 1:
            raise EvaluationError(f'per-ray arrays differ in length: {[a.size for a in arrays]}')
        pl, pi, pd, gl, gi, gd = arrays
        valid = gl != self.free
        pl, gl = pl[valid].astype(np.int64), gl[valid].astype(np.int64)
        pi, gi = pi[valid].astype(np.int64), gi[valid].astype(np.int64)
        err = np.abs(pd[valid].astype(np.float64) - gd[valid].astype(np.float64))
        if (pi.size and pi.min() < 0) or (gi.size and gi.min() < 0):
            raise EvaluationError('instance ids must be non-negative (0 = no instance)')
        # as the official ray_pq.py (add_panoptic_sample): an id's class is checked over all its GT
        # rays — stuff rays included — before stuff becomes one segment per class
        gi = self._drop_mixed_ids(gi, gl)
        gi = np.where(np.isin(gl, self.thing_classes), gi, 0)       # stuff: one segment per class
        for c in range(self.num_semantic):
            gm, pm = gl == c, pl == c
            if gm.any() or pm.any():
                self._add_class(c, gi, gm, pi, pm, err)
        self.num_frames += 1

    @staticmethod
    def _drop_mixed_ids(gi: np.ndarray, gl: np.ndarray) -> np.ndarray:
        """GT ids whose rays carry more than one class become 0 (the official behaviour)."""
        pos = gi > 0
        if not pos.any():
            return gi
        span = int(gl[pos].max()) + 1                                 # (id, class) pairs as one key
        pairs = np.unique(gi[pos] * span + gl[pos])
        ids, n_classes = np.unique(pairs // span, return_counts=True)
        mixed = ids[n_classes > 1]
        return np.where(np.isin(gi, mixed), 0, gi) if mixed.size else gi

    def _add_class(self, c: int, gi: np.ndarray, gm: np.ndarray, pi: np.ndarray, pm: np.ndarray,
                   err: np.ndarray) -> None:
        g_ids, g_area = np.unique(gi[gm], return_counts=True)
        p_ids, p_area = np.unique(pi[pm], return_counts=True)
        both = gm & pm
        n_p = max(p_ids.size, 1)
        pair = np.searchsorted(g_ids, gi[both]) * n_p + np.searchsorted(p_ids, pi[both])
        err_b = err[both]
        big_g, big_p = g_area >= self.min_segment_rays, p_area >= self.min_segment_rays
        for j, t in enumerate(self.thresholds):
            keys, inter = np.unique(pair[err_b < t], return_counts=True)
            gs, ps = keys // n_p, keys % n_p
            iou = inter / (g_area[gs] + p_area[ps] - inter)
            match = iou > self.match_iou
            matched_g = np.zeros(g_ids.size, dtype=bool)
            matched_p = np.zeros(p_ids.size, dtype=bool)
            matched_g[gs[match]] = True
            matched_p[ps[match]] = True
            self.tp[j, c] += int(match.sum())
            self.iou_sum[j, c] += float(iou[match].sum())
            self.fn[j, c] += int((big_g & ~matched_g).sum())
            self.fp[j, c] += int((big_p & ~matched_p).sum())

    def compute(self) -> RayPQResult:
        tp, fp, fn = (a.astype(np.float64) for a in (self.tp, self.fp, self.fn))
        sq = self.iou_sum / np.maximum(tp, _EPS)
        rq = tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, _EPS)
        pq = sq * rq
        absent = (self.tp + self.fp + self.fn) == 0
        pq, sq, rq = (np.where(absent, np.nan, a * 100.0) for a in (pq, sq, rq))
        at = np.asarray([nanmean(row) for row in pq])
        return RayPQResult(thresholds=self.thresholds, class_names=self.class_names, pq=pq, sq=sq, rq=rq,
                           raypq_at=at, raypq=nanmean(pq), tp=self.tp.copy(), fp=self.fp.copy(),
                           fn=self.fn.copy(), iou_sum=self.iou_sum.copy(), num_frames=self.num_frames)
