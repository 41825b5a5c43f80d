"""`occ-ros train`: train a FlashOcc configuration on the synthetic world (CPU).

    occ-ros train --out-dir runs/lite --export lite.ckpt      # the defaults are the shipped recipe

1. Renders a cache of training frames (seeds `--train-seeds`, worlds of the `--train-world` mix:
   'default', the evaluation world, or 'training', which turns up cones, two-wheelers and
   construction vehicles) and of held-out validation frames (`--val-seeds`, never used for training,
   always the evaluation
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

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from occ_ros.core.classes import FREE, NUM_CLASSES
from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import ConfigError
from occ_ros.metrics.origins import PROTOCOL_OFFICIAL, PROTOCOL_SINGLE
from occ_ros.train import losses as L
from occ_ros.train.data import (BEV_FLIPS, Batch, Sample, batches, check_flippable, class_frequencies, collate,
                                flip_bda)

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
            riou.update(pred, gt, s.origins)              # official origins (None: the LiDAR origin)
        if rpq is not None and post is not None and 'heatmap' in out:
            pano = post(out['occ_logits'], out['heatmap'], out['reg'], out['height'])[0].to_numpy()
            rpq.update(np.asarray(pano.semantics), np.asarray(pano.instances), gt, s.instances, s.origins)
    res: dict[str, Any] = {}
    m = miou.compute()
    res['miou'] = float(m.miou)
    res['per_class_iou'] = {k: (None if not np.isfinite(v) else round(float(v), 2))
                            for k, v in m.per_class().items()}
    if riou is not None:
        r = riou.compute()
        res['rayiou'] = float(r.rayiou)
        res['rayiou_at'] = [float(v) for v in r.rayiou_at]
        res['ray_protocol'] = PROTOCOL_OFFICIAL if all(s.origins is not None for s in samples) else PROTOCOL_SINGLE
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

def log_to_stderr(line: str) -> None:
    """The trainer's default progress sink."""
    print(line, file=sys.stderr, flush=True)


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
    log: Callable[[str], None] = log_to_stderr
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
