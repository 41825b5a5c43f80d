"""`occ-ros train`: train a FlashOcc configuration on the synthetic world (CPU).

    occ-ros train --out-dir runs/lite --export lite.ckpt      # the defaults are the shipped recipe

1. Renders a cache of training frames (seeds `--train-seeds`, worlds of the `--train-world` mix:
   'default', the evaluation world, or 'training', which turns up cones, two-wheelers and
   construction vehicles) and of held-out validation frames (`--val-seeds`, never used for training, always the evaluation
   world) through the node's preprocessing (`train.data`).
2. Trains with AdamW, linear warm-up then cosine decay, gradient clipping, the Panoptic-FlashOcc
   loss set (`train.losses`): occupancy focal (class weights 1/log(freq) from the *cache's*
   class frequencies, radial voxel weight) + Lovász-softmax (on a voxel subsample) + sem_scal +
   geo_scal, depth BCE, centre-heatmap Gaussian focal + 0.25 × L1 on reg/height; optionally
   (`--image-sem-weight`) an auxiliary per-feature-cell image-semantics cross-entropy through a
   small training-only head on the image features (`ImageSemanticHead`, never exported): a
   dense 2-D signal for the image encoder that a from-scratch network otherwise only gets
   through the lift-splat. With `--bev-flip on` every step mirrors the BEV plane in
   x and/or y (`step_flip`, a function of seed and step): the lifted points through flipped pool
   tables, the occupancy and centre targets likewise (BEVDet's BEV data augmentation).
3. Validates every `--val-every` steps on the held-out frames (camera-masked mIoU, RayIoU) and
   at the end also RayPQ through the panoptic post-processing; writes checkpoints
   (`save_checkpoint`, own format) every `--ckpt-every` steps and at the end, plus the optimiser
   state for `--resume`; `--export` writes the final fp16 checkpoint and a JSON training record.

Deterministic given `--seed`: the model init, the data order (`data.batches`) and the Lovász
subsample are functions of the seed and step only, so a resumed run continues exactly.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from occ_ros.bag.world_mix import WORLD_MIXES
from occ_ros.core.classes import FREE, NUM_CLASSES, OCC_CLASSES
from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import ConfigError
from occ_ros.train import losses as L
from occ_ros.train.data import (BEV_FLIPS, Batch, DataSettings, Sample, batches, build_cache,
                                check_flippable, class_frequencies, collate, flip_bda)

STATE_FILE = 'train_state.pt'
LAST_CKPT = 'last.ckpt'


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------

@dataclass
class TrainSettings:
    """Optimisation settings (all stored in the training record)."""

    steps: int = 1600
    batch_size: int = 1
    lr: float = 5e-4
    weight_decay: float = 1e-2
    warmup: int = 100
    warmup_ratio: float = 1e-3
    min_lr_ratio: float = 1e-2
    clip: float = 5.0
    seed: int = 0
    occ_weight: float = 100.0
    lovasz_voxels: int = 65536
    free_fraction: float = 1.0
    depth_weight: float = 1.0
    heatmap_weight: float = 1.0
    reg_weight: float = 0.25
    image_sem_weight: float = 0.0
    bev_flip: bool = False

    def lr_factor(self, step: int) -> float:
        """LR multiplier at `step` (0-based): linear warm-up from warmup_ratio, then cosine."""
        if step < self.warmup:
            return self.warmup_ratio + (1 - self.warmup_ratio) * step / max(1, self.warmup)
        span = max(1, self.steps - self.warmup)
        p = min(1.0, (step - self.warmup) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def parse_seeds(spec: str) -> tuple[int, ...]:
    """'1-40,100,200-202' → (1, …, 40, 100, 200, 201, 202)."""
    out: list[int] = []
    for part in spec.split(','):
        part = part.strip()
        if not part:
            continue
        is_range = '-' in part[1:]
        a, b = (part.split('-', 1) if not part.startswith('-') else (part, '')) if is_range else (part, part)
        try:
            lo, hi = int(a), int(b)
        except ValueError:
            raise ConfigError(f'bad seed list {spec!r}: {part!r} is not an integer or a range a-b') from None
        if hi < lo:
            raise ConfigError(f'seed range {part!r} is empty')
        out.extend(range(lo, hi + 1))
    if not out:
        raise ConfigError(f'no seeds in {spec!r}')
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def radial_weight(cfg: ModelConfig) -> torch.Tensor:
    """(nx, ny) voxel weight 1 + r / r_max over the BEV plane (reference occupancy head)."""
    g = cfg.grid
    xs = torch.arange(g.nx, dtype=torch.float32) * g.x.step + g.x.lo + g.x.step / 2
    ys = torch.arange(g.ny, dtype=torch.float32) * g.y.step + g.y.lo + g.y.step / 2
    r = torch.sqrt(xs[:, None] ** 2 + ys[None, :] ** 2)
    return 1.0 + r / r.max()


class LossComputer:
    """The training objective. `__call__(out, batch, step)` → (total, {term: float})."""

    def __init__(self, cfg: ModelConfig, settings: TrainSettings, class_weights: torch.Tensor) -> None:
        self.cfg = cfg
        self.s = settings
        self.class_weights = class_weights.float()
        self.vw = radial_weight(cfg)                                # (nx, ny)

    def __call__(self, out: dict[str, torch.Tensor], batch: Batch, step: int
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.s
        logits = out['occ_logits']                                  # (B, nx, ny, nz, C)
        b, nx, ny, nz, c = logits.shape
        flat = logits.reshape(-1, c)
        tgt = batch.semantics.reshape(-1)
        vw = self.vw[None, :, :, None].expand(b, nx, ny, nz).reshape(-1)
        g = torch.Generator().manual_seed(s.seed * 7919 + step)
        m = tgt.numel()
        if s.free_fraction < 1.0:
            # focal: every occupied voxel plus a `free_fraction` sample of the free ones, the
            # free ones weighted up by 1/free_fraction — an unbiased estimate of the full sum.
            free = tgt == FREE
            keep = ~free | (torch.rand(m, generator=g) < s.free_fraction)
            idx = keep.nonzero().squeeze(1)
            fvw = vw[idx] * torch.where(free[idx], 1.0 / s.free_fraction, 1.0)
            focal = L.occupancy_focal_loss(flat[idx], tgt[idx], self.class_weights, voxel_weight=fvw)
            focal = focal * (idx.numel() / m)
            # the ratio losses (sem_scal, geo_scal, Lovász) take no weights: they get a *uniform*
            # sample so class proportions (free vs occupied) stay those of the full volume
            uni = torch.randperm(m, generator=g)[:max(1, int(round(m * s.free_fraction)))]
            flat, tgt = flat[uni], tgt[uni]
        else:
            focal = L.occupancy_focal_loss(flat, tgt, self.class_weights, voxel_weight=vw)
        focal = focal * s.occ_weight
        probs = torch.softmax(flat, dim=1)
        sem = L.sem_scal_loss(probs, tgt)
        geo = L.geo_scal_loss(probs, tgt, empty=FREE)
        if 0 < s.lovasz_voxels < tgt.numel():
            idx = torch.randperm(tgt.numel(), generator=g)[:s.lovasz_voxels]
            lov = L.lovasz_softmax(probs[idx], tgt[idx])
        else:
            lov = L.lovasz_softmax(probs, tgt)
        dep = L.depth_loss(out['depth'], batch.depth_target) * s.depth_weight
        terms = {'focal': focal, 'lovasz': lov, 'sem': sem, 'geo': geo, 'depth': dep}
        if 'heatmap' in out:
            terms['heat'] = L.gaussian_focal_loss(out['heatmap'], batch.heatmap) * s.heatmap_weight
            reg = L.center_regression_loss(out['reg'], batch.reg, batch.center_mask)
            hgt = L.center_regression_loss(out['height'], batch.height, batch.center_mask)
            terms['reg'] = (reg + hgt) * s.reg_weight
        total = sum(terms.values())
        return total, {k: float(v.detach()) for k, v in terms.items()}


class ImageSemanticHead(torch.nn.Module):
    """Training-only auxiliary head: image features (B·N, C, fH, fW) → (B·N, K, fH, fW) logits."""

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(mid_channels), torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(mid_channels, num_classes, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def model_inputs(cfg: ModelConfig, src_hw: tuple[int, int], flip: tuple[int, int] = (1, 1)
                 ) -> tuple[torch.Tensor, ...]:
    """(cam_vec (1, N, 27), pool_depth_idx, pool_feat_idx, pool_cell_row) of the synthetic rig
    at `src_hw` (fixed calibration: computed once); `flip` ≠ (1, 1): the tables of that BEV flip
    (`data.flip_bda`)."""
    from occ_ros.geometry import compute_bev_geometry, nuscenes_rig
    bda = None if tuple(flip) == (1, 1) else flip_bda(flip)
    geo = compute_bev_geometry(cfg, nuscenes_rig(src_hw), bda=bda)
    return geo.model_inputs()


def step_flip(seed: int, step: int) -> tuple[int, int]:
    """The BEV flip of training step `step` (uniform over `BEV_FLIPS`, a function of seed and step
    only, so a resumed run flips as an uninterrupted one)."""
    g = torch.Generator().manual_seed(int(seed) * 104729 + 17 + int(step))
    return BEV_FLIPS[int(torch.randint(len(BEV_FLIPS), (1,), generator=g))]


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: Sequence[Sample], inputs: tuple[torch.Tensor, ...],
             panoptic: bool = False, rays: bool = True) -> dict[str, Any]:
    """Held-out scores: camera-masked mIoU, RayIoU (and RayPQ when `panoptic`)."""
    from occ_ros.metrics import RayIoU, RayPQ, SemanticIoU
    from occ_ros.postprocess import PanopticPostprocessor, PostprocessConfig
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    was_training = model.training
    model.eval()
    miou = SemanticIoU(cfg.grid)
    riou = RayIoU(cfg.grid) if rays else None
    rpq = RayPQ(cfg.grid) if (rays and panoptic) else None
    post = PanopticPostprocessor(PostprocessConfig(grid=cfg.grid)) if rpq is not None else None
    cam_vec, *pool = inputs
    for s in samples:
        out = model(s.images.float()[None], cam_vec, *pool)
        pred = out['occ_logits'][0].argmax(-1).to(torch.uint8).numpy()
        gt = s.semantics.numpy()
        miou.update(pred, gt, s.mask_camera)
        if riou is not None:
            riou.update(pred, gt)
        if rpq is not None and post is not None and 'heatmap' in out:
            pano = post(out['occ_logits'], out['heatmap'], out['reg'], out['height'])[0].to_numpy()
            rpq.update(np.asarray(pano.semantics), np.asarray(pano.instances), gt, s.instances)
    res: dict[str, Any] = {}
    m = miou.compute()
    res['miou'] = float(m.miou)
    res['per_class_iou'] = {k: (None if not np.isfinite(v) else round(float(v), 2))
                            for k, v in m.per_class().items()}
    if riou is not None:
        r = riou.compute()
        res['rayiou'] = float(r.rayiou)
        res['rayiou_at'] = [float(v) for v in r.rayiou_at]
    if rpq is not None:
        p = rpq.compute()
        res['raypq'] = float(p.raypq) if hasattr(p, 'raypq') else float('nan')
        if hasattr(p, 'raypq_at'):
            res['raypq_at'] = [float(v) for v in p.raypq_at]
    if was_training:
        model.train()
    return res


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------

@dataclass
class Trainer:
    """Owns model, optimiser and the cached data; `train_steps(n)` advances deterministically."""

    model: torch.nn.Module
    settings: TrainSettings
    train: list[Sample]
    class_weights: torch.Tensor
    inputs: tuple[torch.Tensor, ...]
    step: int = 0
    history: list[dict] = field(default_factory=list)
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
    src_hw: Optional[tuple[int, int]] = None       # render size of the cache (needed by bev_flip)

    def __post_init__(self) -> None:
        s = self.settings
        cfg: ModelConfig = self.model.cfg  # type: ignore[assignment]
        # network inputs per BEV flip (flip (1, 1) = `inputs`, the test-time tables)
        self.flip_inputs: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {(1, 1): self.inputs}
        if s.bev_flip:
            check_flippable(cfg.grid)
            if self.src_hw is None:
                raise ConfigError('Trainer: bev_flip needs src_hw (the render size of the cache) to '
                                  'build the flipped pool tables')
            for f in BEV_FLIPS[1:]:
                self.flip_inputs[f] = model_inputs(cfg, self.src_hw, f)
        self.aux: Optional[ImageSemanticHead] = None
        self._feats: Optional[torch.Tensor] = None
        params = list(self.model.named_parameters())
        if s.image_sem_weight > 0:
            self.aux = ImageSemanticHead(cfg.neck_out_channels, NUM_CLASSES)
            params += [(f'aux.{n}', p) for n, p in self.aux.named_parameters()]
            # the image features of every forward pass (the neck's output), for the aux head
            self.model.img_neck.register_forward_hook(            # type: ignore[union-attr,operator]
                lambda _m, _i, out: setattr(self, '_feats', out))
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for n, p in params:
            (no_decay if p.ndim <= 1 else decay).append(p)
        self.opt = torch.optim.AdamW([{'params': decay, 'weight_decay': s.weight_decay},
                                      {'params': no_decay, 'weight_decay': 0.0}], lr=s.lr)
        self.loss = LossComputer(self.model.cfg, s, self.class_weights)   # type: ignore[arg-type]
        self._stream = None

    def state(self) -> dict[str, Any]:
        st = {'step': self.step, 'optimizer': self.opt.state_dict(), 'history': self.history}
        if self.aux is not None:
            st['aux_head'] = self.aux.state_dict()
        return st

    def load_state(self, st: dict[str, Any]) -> None:
        self.step = int(st['step'])
        if self.aux is not None:
            if 'aux_head' not in st:
                raise ConfigError('--resume: the saved run has no image-semantics head; resume with '
                                  'the --image-sem-weight it was started with')
            self.aux.load_state_dict(st['aux_head'])
        self.opt.load_state_dict(st['optimizer'])
        self.history = list(st.get('history', []))
        self._stream = None

    def train_step(self, idx: list[int]) -> dict[str, float]:
        s = self.settings
        for gp in self.opt.param_groups:
            gp['lr'] = s.lr * s.lr_factor(self.step)
        flip = step_flip(s.seed, self.step) if s.bev_flip else (1, 1)
        batch = collate([self.train[i] for i in idx], self.model.cfg, flip)  # type: ignore[arg-type]
        cam_vec, *pool = self.flip_inputs[flip]
        cv = cam_vec.expand(batch.img.shape[0], -1, -1)
        self.model.train()
        out = self.model(batch.img, cv, *pool)
        total, terms = self.loss(out, batch, self.step)
        if self.aux is not None:
            if batch.image_sem is None or self._feats is None:
                raise ConfigError('--image-sem-weight needs image class targets in the cache')
            self.aux.train()
            logits = self.aux(self._feats)                                  # (B·N, K, fH, fW)
            aux = L.image_semantic_loss(logits, batch.image_sem.flatten(0, 1),
                                        self.class_weights.float()) * s.image_sem_weight
            total = total + aux
            terms['img_sem'] = float(aux.detach())
            self._feats = None
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.clip)
        self.opt.step()
        self.step += 1
        terms['total'] = float(total.detach())
        terms['grad_norm'] = float(gnorm)
        return terms

    def train_steps(self, n: int, on_step: Optional[Callable[[int, dict], None]] = None) -> None:
        """Advance n steps along the fixed data order (continues from `self.step`)."""
        stream = batches(len(self.train), self.settings.batch_size, self.settings.seed, self.step)
        for _ in range(n):
            _, idx = next(stream)
            terms = self.train_step(idx)
            if on_step is not None:
                on_step(self.step, terms)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:                                               # pragma: no cover
        pass


def make_model(name: str, seed: int) -> torch.nn.Module:
    from occ_ros.model import build_model
    seed_everything(seed)
    return build_model(name)


def cache_class_weights(train: Sequence[Sample]) -> tuple[torch.Tensor, list[int]]:
    """1/log(freq + 0.001) of the training cache's own voxel counts (classes absent from the cache
    get the weight of the rarest present class)."""
    freq = class_frequencies(train)
    f = freq.astype(np.float64)
    present = f > 0
    f[~present] = f[present].min() if present.any() else 1.0
    return L.occ_class_weights(tuple(f.tolist())), [int(v) for v in freq]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--model', default='lite', help='model configuration name (default lite)')
    p.add_argument('--out-dir', default='runs/train', help='checkpoints, state and record go here')
    p.add_argument('--export', default=None,
                   help='also write the final model here as an fp16 checkpoint (+ .json record)')
    p.add_argument('--seed', type=int, default=0, help='init / data-order seed')
    p.add_argument('--train-seeds', default='1-160', help="world seeds for training, e.g. '1-160'")
    p.add_argument('--val-seeds', default='9001-9006', help='held-out world seeds for validation')
    p.add_argument('--seconds', type=float, default=20.0, help='seconds per training sequence')
    p.add_argument('--rate', type=float, default=0.25, help='training frames per second of sequence')
    p.add_argument('--val-seconds', type=float, default=15.0)
    p.add_argument('--val-rate', type=float, default=0.2)
    p.add_argument('--src-hw', default='450x800', help='render size H×W of the source images')
    p.add_argument('--steps', type=int, default=8000)
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--weight-decay', type=float, default=1e-2)
    p.add_argument('--warmup', type=int, default=200)
    p.add_argument('--clip', type=float, default=5.0)
    p.add_argument('--lovasz-voxels', type=int, default=65536,
                   help='voxels sampled for the Lovász term per step (0 = all)')
    p.add_argument('--free-fraction', type=float, default=0.2,
                   help='voxel sampling of the occupancy losses (1 = every voxel): the focal term '
                        'uses all occupied voxels + this fraction of the free ones (re-weighted), '
                        'sem_scal / geo_scal / Lovász a uniform sample of this fraction')
    p.add_argument('--depth-weight', type=float, default=1.0,
                   help='weight of the depth loss against the rendered depth (default 1)')
    p.add_argument('--image-sem-weight', type=float, default=1.0,
                   help='weight of the auxiliary image-semantics loss (training-only head; 0 = off)')
    p.add_argument('--train-world', default='default', choices=sorted(WORLD_MIXES),
                   help="WorldMix of the training worlds: 'default' (the evaluation world) or "
                        "'training' (more cones, two-wheelers and construction vehicles); "
                        "validation always uses 'default'")
    p.add_argument('--bev-flip', default='off', choices=('on', 'off'),
                   help='BEV flip augmentation (mirror x / y of the lifted points and targets); '
                        'off in the shipped recipe')
    p.add_argument('--val-every', type=int, default=800)
    p.add_argument('--ckpt-every', type=int, default=800)
    p.add_argument('--log-every', type=int, default=10)
    p.add_argument('--workers', type=int, default=2, help='render processes for the cache')
    p.add_argument('--threads', type=int, default=2, help='torch threads')
    p.add_argument('--max-minutes', type=float, default=0.0,
                   help='stop (checkpoint + final validation) after this many minutes of training')
    p.add_argument('--resume', action='store_true', help='continue from OUT_DIR/last.ckpt')


def _fmt_terms(terms: dict[str, float]) -> str:
    return ' '.join(f'{k} {v:.3f}' for k, v in terms.items() if k != 'grad_norm')


def recipe_from_args(args: argparse.Namespace) -> tuple[TrainSettings, DataSettings, DataSettings]:
    """The optimisation settings and the training / validation data of `occ-ros train` arguments
    (ConfigError for a bad --src-hw or validation seeds that are also training seeds)."""
    try:
        h, w = (int(v) for v in str(args.src_hw).lower().split('x'))
    except ValueError:
        raise ConfigError(f'--src-hw must look like 450x800, got {args.src_hw!r}') from None
    train_seeds, val_seeds = parse_seeds(args.train_seeds), parse_seeds(args.val_seeds)
    overlap = sorted(set(train_seeds) & set(val_seeds))
    if overlap:
        raise ConfigError(f'validation seeds {overlap} are also training seeds: held-out seeds must '
                          'never be used in training')
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, warmup=args.warmup, clip=args.clip,
                             seed=args.seed, lovasz_voxels=args.lovasz_voxels,
                             free_fraction=args.free_fraction, depth_weight=args.depth_weight,
                             image_sem_weight=args.image_sem_weight, bev_flip=args.bev_flip == 'on')
    tr_set = DataSettings(train_seeds, args.seconds, args.rate, (h, w), world=args.train_world)
    va_set = DataSettings(val_seeds, args.val_seconds, args.val_rate, (h, w), keep_eval=True)
    return settings, tr_set, va_set


def run(args: argparse.Namespace) -> int:
    argv_used = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == 'train' else sys.argv[1:]
    from occ_ros.model import load_weights, model_config, save_checkpoint

    torch.set_num_threads(max(1, int(args.threads)))
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
    settings, tr_set, va_set = recipe_from_args(args)
    h, w = tr_set.src_hw
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model_config(args.model)

    t0 = time.time()
    train = build_cache(tr_set, cfg, args.workers, 'train cache', log)
    val = build_cache(va_set, cfg, args.workers, 'val cache', log)
    cache_s = time.time() - t0
    log(f'cache: {len(train)} training frames, {len(val)} validation frames, '
        f'{sum(s.nbytes() for s in train + val) / 2 ** 20:.0f} MiB, {cache_s:.0f} s')
    weights, freq = cache_class_weights(train)
    log('class frequencies (training cache): ' +
        ', '.join(f'{n} {f}' for n, f in zip(OCC_CLASSES, freq)))

    model = make_model(args.model, args.seed)
    inputs = model_inputs(cfg, (h, w))
    trainer = Trainer(model, settings, train, weights, inputs, log=log, src_hw=(h, w))
    if args.resume:
        ck = out_dir / LAST_CKPT
        if not ck.exists():
            raise ConfigError(f'--resume: no {ck}; start without --resume')
        load_weights(model, ck)
        trainer.load_state(torch.load(out_dir / STATE_FILE, weights_only=True))
        log(f'resumed at step {trainer.step}')

    record: dict[str, Any] = {
        'command': ' '.join(['occ-ros', 'train'] + [a for a in (argv_used or [])]),
        'args': {k: v for k, v in vars(args).items() if not callable(v)},
        'model': args.model, 'seed': args.seed, 'train_data': tr_set.to_dict(),
        'val_data': va_set.to_dict(), 'train_frames': len(train), 'val_frames': len(val),
        'settings': {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        'class_frequencies_train_cache': dict(zip(OCC_CLASSES, freq)),
        'class_weights': [round(float(v), 5) for v in weights],
        'cache_seconds': round(cache_s, 1), 'torch_threads': args.threads,
    }

    def checkpoint(tag: Optional[str] = None) -> None:
        meta = {'step': trainer.step, 'seed': args.seed}
        save_checkpoint(model, out_dir / LAST_CKPT, meta)
        torch.save(trainer.state(), out_dir / STATE_FILE)
        if tag:
            save_checkpoint(model, out_dir / f'{tag}.ckpt', meta, fp16=True)

    def validate(final: bool = False) -> dict:
        tv = time.time()
        res = evaluate(model, val, inputs, panoptic=final)
        res['step'] = trainer.step
        res['seconds'] = round(time.time() - tv, 1)
        trainer.history.append({k: v for k, v in res.items() if k != 'per_class_iou'} |
                               {'kind': 'final' if final else 'periodic'})
        extra = f" RayPQ {res['raypq']:.2f}" if 'raypq' in res else ''
        log(f"[val] step {trainer.step}: mIoU {res['miou']:.2f} RayIoU {res.get('rayiou', float('nan')):.2f}"
            f"{extra} ({res['seconds']} s)")
        return res

    window: list[dict] = []
    t_train = time.time()
    start_step = trainer.step
    stop = {'flag': False}

    def on_step(step: int, terms: dict) -> None:
        window.append(terms)
        if step % args.log_every == 0 or step == settings.steps:
            el = time.time() - t_train
            fps = (step - start_step) * settings.batch_size / max(el, 1e-9)
            eta = (settings.steps - step) * el / max(1, step - start_step)
            avg = {k: float(np.mean([t[k] for t in window])) for k in window[0]}
            log(f'step {step}/{settings.steps} {_fmt_terms(avg)} | gn {avg["grad_norm"]:.2f} '
                f'lr {settings.lr * settings.lr_factor(step - 1):.2e} | {fps:.2f} frames/s '
                f'ETA {eta / 60:.1f} min')
            trainer.history.append({'kind': 'train', 'step': step, **{k: round(v, 4) for k, v in avg.items()}})
            window.clear()
        if args.ckpt_every and step % args.ckpt_every == 0 and step < settings.steps:
            checkpoint(f'step_{step:05d}')
        if args.val_every and step % args.val_every == 0 and step < settings.steps:
            validate()
        if args.max_minutes and (time.time() - t_train) > args.max_minutes * 60:
            stop['flag'] = True

    while trainer.step < settings.steps and not stop['flag']:
        trainer.train_steps(1, on_step)
    train_s = time.time() - t_train
    if stop['flag'] and trainer.step < settings.steps:
        log(f'--max-minutes reached: stopping at step {trainer.step} of {settings.steps}')
    checkpoint(f'step_{trainer.step:05d}')
    final = validate(final=True)
    record.update(steps_done=trainer.step, train_seconds=round(train_s, 1),
                  wall_seconds=round(time.time() - t0, 1), stopped_early=trainer.step < settings.steps,
                  final_metrics=final,
                  validation_curve=[h for h in trainer.history if h.get('kind') != 'train'],
                  loss_curve=[h for h in trainer.history if h.get('kind') == 'train'])
    (out_dir / 'record.json').write_text(json.dumps(record, indent=1))
    if args.export:
        exp = Path(args.export)
        meta = {'step': trainer.step, 'seed': args.seed, 'final_metrics':
                {k: final[k] for k in ('miou', 'rayiou', 'raypq') if k in final},
                'train_seeds': args.train_seeds, 'val_seeds': args.val_seeds,
                'src_hw': [h, w], 'record': exp.with_suffix('.json').name}
        save_checkpoint(model, exp, meta, fp16=True)
        exp.with_suffix('.json').write_text(json.dumps(record, indent=1))
        log(f'exported {exp} ({exp.stat().st_size / 2 ** 20:.1f} MiB) and {exp.with_suffix(".json")}')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='occ-ros train', description=__doc__.split('\n')[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == '__main__':                                           # pragma: no cover
    sys.exit(main())
