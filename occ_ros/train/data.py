"""Training data for `occ-ros train`: synthetic frames rendered once into a compact in-memory cache.

Every frame of `SyntheticSequence(seed, …)` is rendered at a source resolution `src_hw`
(default 450×800, K scaled by `nuscenes_rig(src_hw)`), and turned into exactly what the network
and the losses need:

- images: the node's own `ImagePreprocessor(cfg.image).batch(...)` output (N, 3, H_in, W_in)
  stored as float16 (the normalised values are ~[-2, 2.7], float16 keeps ~1e-3 of them — far
  below the uint8 quantisation step 1/58 of the source pixels);
- depth: the rendered z-depth taken through the same resize/crop geometry by *min* sampling
  (every source pixel lands in the input pixel its centre maps to; the input pixel keeps the
  nearest surface), then `losses.depth_targets` → one bin index per feature cell (int8, -1 none);
- image_sem: the rendered per-pixel class image taken to one class per feature cell (the most
  frequent class of the source pixels whose centres land in the cell; free = sky) — the target of
  the optional auxiliary image-semantics loss (`--image-sem-weight`);
- semantics: Occ3D (nx, ny, nz) uint8 over all voxels (the panoptic recipe trains without the
  camera mask); mask_camera / instances are kept for validation frames only;
- objects: centre, size and detection class (`classes.DET_CLASSES` index) of every world object
  of one of the ten detection classes, in the ego frame; heatmap targets are made per batch by
  `targets.center_targets` (cheap, and 10×200×200 floats per frame would dominate the cache).

Frames are rendered by worker processes (one sequence per task) with a progress line. The cache
depends only on (seeds, seconds, rate, src_hw, world mix, model image/grid/depth config), never
on timing. Training worlds may use a richer `WorldMix` (`DataSettings.world`, default
'default'); validation always uses the evaluation world.

BEV flip augmentation (`BEV_FLIPS`, `flip_bda`): the lifted points are mirrored in x and/or y by
a BEV-augmentation matrix (pool tables built with `compute_bev_geometry(..., bda=...)`), and
`collate(..., flip=...)` mirrors the occupancy target and the object centres the same way; the
images and the image-side targets (depth, image classes) are untouched, as in BEVDet's BDA.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from occ_ros.core.classes import DET_CLASSES, DET_TO_OCC, NUM_CLASSES
from occ_ros.core.config import GridSpec, ModelConfig
from occ_ros.metrics.origins import EgoTrack, keyframe_stamps, official_origins
from occ_ros.core.errors import ConfigError
from occ_ros.train.losses import depth_targets
from occ_ros.train.targets import CenterTargets, center_targets

_OCC_TO_DET = {occ: k for k, occ in enumerate(DET_TO_OCC)}


@dataclass(frozen=True)
class DataSettings:
    """What the cache is rendered from.

    seeds: world seeds (one sequence each); seconds / rate: frames per sequence = seconds·rate;
    src_hw: render size of every camera (K of `nuscenes_rig(src_hw)`); keep_eval: also keep the
    camera mask and instance grid (validation frames); world: the `WorldMix` name of the worlds.
    """

    seeds: tuple[int, ...]
    seconds: float = 20.0
    rate: float = 1.0
    src_hw: tuple[int, int] = (450, 800)
    keep_eval: bool = False
    world: str = 'default'

    @property
    def frames_per_sequence(self) -> int:
        return max(1, int(math.floor(self.seconds * self.rate + 1e-9)))

    @property
    def frames(self) -> int:
        return self.frames_per_sequence * len(self.seeds)

    def to_dict(self) -> dict:
        d = asdict(self)
        d['seeds'] = list(self.seeds)
        d['src_hw'] = list(self.src_hw)
        return d


@dataclass
class Sample:
    """One cached frame.

    images: (N, 3, H_in, W_in) float16 normalised B, G, R planes (the node's preprocessing);
    depth_bin: (N, fH, fW) int8 depth-bin index of the nearest surface per feature cell, -1 none;
    semantics: (nx, ny, nz) uint8 (free = 17);
    obj_center / obj_size: (K, 3) float32 ego frame; obj_det: (K,) int64 heatmap channel;
    mask_camera: (nx, ny, nz) bool and instances (nx, ny, nz) uint16, validation frames only.
    """

    seed: int
    index: int
    images: torch.Tensor
    depth_bin: torch.Tensor
    semantics: torch.Tensor
    obj_center: np.ndarray
    obj_size: np.ndarray
    obj_det: np.ndarray
    mask_camera: Optional[np.ndarray] = None
    instances: Optional[np.ndarray] = None
    image_sem: Optional[torch.Tensor] = None     # (N, fH, fW) uint8 class per feature cell
    origins: Optional[np.ndarray] = None         # (K, 3) official RayIoU origins, validation frames only

    def nbytes(self) -> int:
        n = self.images.numel() * 2 + self.depth_bin.numel() + self.semantics.numel()
        if self.image_sem is not None:
            n += self.image_sem.numel()
        if self.mask_camera is not None:
            n += self.mask_camera.nbytes
        if self.instances is not None:
            n += self.instances.nbytes
        return n


def source_to_grid(src_hw: tuple[int, int], cfg: ModelConfig, cell: int = 1
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Where source rows / columns land through the resize/crop of `cfg.image`, in a grid of
    `cell`×`cell` input pixels (1 = input pixels, `cfg.downsample` = feature cells).

    Source pixel (y, x) has its centre at input coordinates ((x+0.5)·s, (y+0.5)·s − crop_top),
    s = W_in / W_src (`ImageGeometry`, bottom crop). Returns (row mask, column mask of the source
    rows / columns that stay inside, their grid row / column indices, grid size (h, w)).
    """
    g = cfg.image.with_source(src_hw)
    h, w = g.input_hw[0] // cell, g.input_hw[1] // cell
    ys = np.floor(((np.arange(src_hw[0]) + 0.5) * g.scale - g.crop_top) / cell).astype(np.int64)
    xs = np.floor((np.arange(src_hw[1]) + 0.5) * g.scale / cell).astype(np.int64)
    yok = (ys >= 0) & (ys < h)
    xok = (xs >= 0) & (xs < w)
    return yok, xok, ys[yok], xs[xok], (h, w)


def min_sample_depth(depth: np.ndarray, src_hw: tuple[int, int], cfg: ModelConfig) -> np.ndarray:
    """Rendered z-depth (H_src, W_src) → (H_in, W_in) through the resize/crop of `cfg.image`.

    Each source pixel goes to the input pixel containing its centre (`source_to_grid`) and each
    input pixel keeps the minimum positive depth (the nearest surface; 0 = no depth).
    """
    yok, xok, yy, xx, (h_in, w_in) = source_to_grid(src_hw, cfg)
    d = depth[yok][:, xok].astype(np.float32)
    d = np.where(d > 0, d, np.inf)
    flat = (yy[:, None] * w_in + xx[None, :]).ravel()
    out = torch.full((h_in * w_in,), float('inf'))
    out.scatter_reduce_(0, torch.from_numpy(flat), torch.from_numpy(d.ravel()), 'amin')
    out = out.reshape(h_in, w_in).numpy()
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


def cell_classes(cls_img: np.ndarray, src_hw: tuple[int, int], cfg: ModelConfig,
                 num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Rendered class image (H_src, W_src) → (fH, fW) uint8: per feature cell the most frequent
    class among the source pixels whose centres land in it through the resize/crop of `cfg.image`
    (same geometry as `min_sample_depth`; ties → the lower class index)."""
    yok, xok, yy, xx, (fh, fw) = source_to_grid(src_hw, cfg, cfg.downsample)
    cell = (yy[:, None] * fw + xx[None, :]).ravel()
    cls = cls_img[yok][:, xok].ravel().astype(np.int64)
    counts = np.bincount(cell * num_classes + cls, minlength=fh * fw * num_classes)
    return counts.reshape(fh * fw, num_classes).argmax(1).reshape(fh, fw).astype(np.uint8)


def depth_bin_index(depth_in: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(N, H_in, W_in) metres → (N, fH, fW) int8 bin of `losses.depth_targets` (-1 = none)."""
    t = depth_targets(torch.from_numpy(depth_in)[None], cfg.downsample, cfg.depth)[0]   # N,fH,fW,D
    idx = t.argmax(-1)
    return torch.where(t.sum(-1) > 0, idx, torch.full_like(idx, -1)).to(torch.int8).numpy()


def ego_objects(world, t: float, ego_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objects of the detection classes at time t in the ego frame: centres (K, 3), sizes (K, 3),
    heatmap channels (K,). Static boxes of a detection class (barriers, cones) are included."""
    inv = np.linalg.inv(ego_pose)
    cen, size, det = [], [], []
    for o in world.objects_at(t, include_static=True):
        k = _OCC_TO_DET.get(int(o.class_id))
        if k is None:
            continue
        p = inv @ np.array([o.center[0], o.center[1], o.center[2], 1.0])
        cen.append(p[:3])
        size.append(np.asarray(o.size, dtype=np.float64))
        det.append(k)
    if not det:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    return (np.asarray(cen, np.float32), np.asarray(size, np.float32), np.asarray(det, np.int64))


def _keyframe_track(seq: Any) -> tuple[list[int], EgoTrack]:
    """The sequence's key frames (every 0.5 s over its span) and the ego poses of those and of
    every frame: what the official RayIoU origins are computed from (metrics.origins)."""
    keys = keyframe_stamps(seq.start_ns, seq.stamps[-1])
    stamps = sorted(set(keys) | set(seq.stamps))
    return keys, EgoTrack.from_samples([(s, seq.world.ego_pose(seq.world_time(s))) for s in stamps])


def render_sequence(task: tuple[int, DataSettings, ModelConfig]) -> list[Sample]:
    """Render every frame of one seed's sequence into Samples (runs in a worker process)."""
    seed, settings, cfg = task
    torch.set_num_threads(1)
    from occ_ros.bag.synth import SyntheticSequence
    from occ_ros.bag.world_mix import world_mix
    from occ_ros.geometry import nuscenes_rig
    from occ_ros.preprocess import ImagePreprocessor

    rig = nuscenes_rig(settings.src_hw)
    seq = SyntheticSequence(seed, settings.seconds, settings.rate, rig=rig, image_hw=settings.src_hw,
                            grid=cfg.grid, classes=True, mix=world_mix(settings.world))
    pre = ImagePreprocessor(cfg.image, workers=1)
    names = [c.name for c in rig]
    order = [names.index(n) for n in cfg.cameras]
    out = []
    keyframes, track = (_keyframe_track(seq) if settings.keep_eval else ([], None))
    for i in range(len(seq)):
        f = seq.frame(i)
        views = [f.views[j] for j in order]
        imgs = pre.batch([v.image for v in views]).to(torch.float16)
        dep = np.stack([min_sample_depth(v.depth, settings.src_hw, cfg) for v in views])
        if any(v.classes is None for v in views):          # pragma: no cover (classes=True)
            raise ConfigError(f'seed {seed} frame {i}: the renderer gave no class image')
        sem = np.stack([cell_classes(v.classes, settings.src_hw, cfg) for v in views])  # type: ignore[arg-type]
        cen, size, det = ego_objects(seq.world, f.t, f.ego_pose)
        gt = f.gt
        if gt is None or gt.mask_camera is None or gt.instances is None:   # pragma: no cover
            raise ConfigError(f'seed {seed} frame {i}: the synthetic sequence gave no ground truth')
        out.append(Sample(seed, i, imgs, torch.from_numpy(depth_bin_index(dep, cfg)),
                          torch.from_numpy(np.ascontiguousarray(gt.semantics)), cen, size, det,
                          gt.mask_camera.copy() if settings.keep_eval else None,
                          gt.instances.copy() if settings.keep_eval else None,
                          torch.from_numpy(sem),
                          official_origins(track, f.stamp_ns, keyframes, grid=cfg.grid) if track is not None else None))
    pre.close()
    return out


def build_cache(settings: DataSettings, cfg: ModelConfig, workers: int = 2, label: str = 'cache',
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
                ) -> list[Sample]:
    """Render all frames of `settings` (sequence per task, `workers` processes) → Samples in a
    fixed order (seed order, then frame order), whatever the worker scheduling."""
    if not settings.seeds:
        raise ConfigError(f'{label}: no seeds to render')
    tasks = [(s, settings, cfg) for s in settings.seeds]
    total = settings.frames
    t0 = time.time()
    results: dict[int, list[Sample]] = {}
    done = 0

    def report() -> None:
        el = time.time() - t0
        rate = done / el if el > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float('nan')
        log(f'[{label}] rendered {done}/{total} frames ({len(results)}/{len(tasks)} sequences) '
            f'{rate:.2f} frames/s, elapsed {el:.0f} s, ETA {eta:.0f} s')

    if workers <= 1:
        for t in tasks:
            results[t[0]] = render_sequence(t)
            done += len(results[t[0]])
            report()
    else:
        ctx = mp.get_context('fork')
        with ctx.Pool(workers) as pool:
            for samples in pool.imap_unordered(render_sequence, tasks):
                results[samples[0].seed] = samples
                done += len(samples)
                report()
    return [s for seed in settings.seeds for s in results[seed]]


def class_frequencies(samples: Sequence[Sample], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes,) int64 voxel counts over the cache (all voxels, as the training target)."""
    counts = np.zeros(num_classes, np.int64)
    for s in samples:
        counts += np.bincount(s.semantics.numpy().ravel(), minlength=num_classes)[:num_classes]
    return counts


@dataclass
class Batch:
    """img (B, N, 3, H, W) float32; depth_target (B, N, fH, fW, D) float32; semantics
    (B, nx, ny, nz) int64; centers: CenterTargets stacked to (B, …); image_sem (B, N, fH, fW)
    int64 (None when a sample has no image classes)."""

    img: torch.Tensor
    depth_target: torch.Tensor
    semantics: torch.Tensor
    heatmap: torch.Tensor
    reg: torch.Tensor
    height: torch.Tensor
    center_mask: torch.Tensor
    image_sem: Optional[torch.Tensor] = None


BEV_FLIPS: tuple[tuple[int, int], ...] = ((1, 1), (-1, 1), (1, -1), (-1, -1))
"""The BEV flips (sign of x, sign of y) of the flip augmentation; (1, 1) is no flip."""


def check_flippable(grid: GridSpec) -> None:
    """The flip augmentation mirrors voxel indices, exact only for a grid symmetric about the ego
    in x and y; ConfigError otherwise."""
    for ax, name in ((grid.x, 'x'), (grid.y, 'y')):
        if not math.isclose(ax.lo, -ax.hi, abs_tol=1e-9):
            raise ConfigError(f'BEV flip augmentation needs a grid symmetric in {name}, '
                              f'got [{ax.lo}, {ax.hi}); train with --bev-flip off')


def flip_bda(flip: tuple[int, int]) -> np.ndarray:
    """(3, 3) BEV-augmentation matrix of a flip (sx, sy) ∈ BEV_FLIPS."""
    if tuple(flip) not in BEV_FLIPS:
        raise ConfigError(f'flip must be one of {BEV_FLIPS}, got {flip}')
    return np.diag([float(flip[0]), float(flip[1]), 1.0])


def sample_center_targets(s: Sample, cfg: ModelConfig, flip: tuple[int, int] = (1, 1)) -> CenterTargets:
    """Centre targets of one sample; `flip` mirrors the object centres as `flip_bda` does."""
    centers = s.obj_center
    if tuple(flip) != (1, 1):
        centers = centers * np.asarray([flip[0], flip[1], 1], dtype=centers.dtype)
    return center_targets(centers, s.obj_size, s.obj_det, cfg.grid, len(DET_CLASSES))


def collate(samples: Sequence[Sample], cfg: ModelConfig, flip: tuple[int, int] = (1, 1)) -> Batch:
    """Stack samples into a training batch (targets made here).

    flip: BEV flip (sx, sy) of the batch (see `BEV_FLIPS`): the occupancy targets and object
    centres are mirrored; the caller feeds the network the pool tables built with `flip_bda(flip)`.
    """
    if tuple(flip) not in BEV_FLIPS:
        raise ConfigError(f'flip must be one of {BEV_FLIPS}, got {flip}')
    img = torch.stack([s.images.float() for s in samples])
    d = cfg.depth.n
    dep = []
    for s in samples:
        b = s.depth_bin.long()
        oh = torch.nn.functional.one_hot(b.clamp(min=0), d).float() * (b >= 0).unsqueeze(-1)
        dep.append(oh)
    ct = [sample_center_targets(s, cfg, flip) for s in samples]
    sems = [s.image_sem for s in samples]
    image_sem = None if any(x is None for x in sems) else torch.stack([x.long() for x in sems])  # type: ignore[union-attr]
    sem = torch.stack([s.semantics.long() for s in samples])                 # (B, nx, ny, nz)
    dims = [d for d, f in ((1, flip[0]), (2, flip[1])) if f < 0]
    if dims:
        check_flippable(cfg.grid)
        sem = sem.flip(dims)
    return Batch(img, torch.stack(dep), sem,
                 torch.stack([c.heatmap for c in ct]), torch.stack([c.reg for c in ct]),
                 torch.stack([c.height for c in ct]), torch.stack([c.mask for c in ct]), image_sem)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The fixed shuffled order of `n` cached frames for one epoch (a function of seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 1000003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def batches(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[tuple[int, list[int]]]:
    """Endless (step, frame indices) from `start_step` on: epochs of `epoch_order`, dropping the
    incomplete tail of each epoch. Resuming at step k yields what an uninterrupted run would."""
    per_epoch = max(1, n // batch_size)
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        order = epoch_order(n, seed, epoch)
        yield step, order[k * batch_size:(k + 1) * batch_size]
        step += 1


__all__ = ['DataSettings', 'Sample', 'Batch', 'build_cache', 'collate', 'class_frequencies',
           'source_to_grid', 'min_sample_depth', 'cell_classes', 'depth_bin_index', 'ego_objects', 'render_sequence',
           'epoch_order',
           'batches', 'sample_center_targets']
