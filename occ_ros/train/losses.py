"""The Panoptic-FlashOcc loss set, written from the paper's and reference's definitions.

- occupancy: sigmoid focal loss with per-class weights 1/log(freq + 0.001), the scene-class
  affinity terms (sem_scal, geo_scal with the free class as "empty") and the Lovász-softmax loss;
- depth: binary cross-entropy of the softmaxed depth bins against the one-hot bin of the
  minimum rendered depth in each feature-stride patch;
- centerness: Gaussian focal loss on the centre heatmap and L1 on the centre offset (reg) and
  height at object centres.
All functions are pure torch and work on any device.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from occ_ros.core.classes import CLASS_FREQUENCIES, FREE
from occ_ros.core.config import DepthBins

IGNORE = 255


def occ_class_weights(frequencies=CLASS_FREQUENCIES) -> torch.Tensor:
    """(classes,) weights 1 / log(freq + 0.001) as in the reference head's class balancing."""
    freq = torch.tensor(frequencies, dtype=torch.float64)
    return (1.0 / torch.log(freq + 0.001)).float()


def occupancy_focal_loss(logits: torch.Tensor, target: torch.Tensor,
                         class_weights: Optional[torch.Tensor] = None, gamma: float = 2.0,
                         alpha: float = 0.25, voxel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sigmoid focal loss over one-hot class targets.

    logits: (M, C) float; target: (M,) int64 with IGNORE entries skipped;
    class_weights: (C,) applied per target class; voxel_weight: (M,) extra per-voxel factor.
    Returns the sum divided by the number of valid voxels.
    """
    valid = target != IGNORE
    logits, target = logits[valid], target[valid]
    if voxel_weight is not None:
        voxel_weight = voxel_weight[valid]
    if target.numel() == 0:
        return logits.sum() * 0.0
    onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    p = torch.sigmoid(logits)
    pt = p * onehot + (1 - p) * (1 - onehot)
    at = alpha * onehot + (1 - alpha) * (1 - onehot)
    loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction='none') * at * (1 - pt) ** gamma
    loss = loss.sum(1)                                                   # (M,)
    if class_weights is not None:
        loss = loss * class_weights.to(loss)[target]
    if voxel_weight is not None:
        loss = loss * voxel_weight
    return loss.sum() / target.numel()


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """Lovász-softmax loss (Berman et al. 2018), averaged over classes present in the target.

    probs: (M, C) softmax probabilities; target: (M,) int64.
    """
    valid = target != ignore
    probs, target = probs[valid], target[valid]
    if target.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in torch.unique(target).tolist():
        fg = (target == c).to(probs.dtype)
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        fg_sorted = fg[perm]
        gts = fg_sorted.sum()
        intersection = gts - fg_sorted.cumsum(0)
        union = gts + (1 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])    # Lovász extension grad
        losses.append(torch.dot(errors_sorted, jaccard))
    return torch.stack(losses).mean()


def _bce_to_one(x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(x.clamp(1e-6, 1 - 1e-6), torch.ones_like(x))


def sem_scal_loss(probs: torch.Tensor, target: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """Scene-class-affinity loss on per-class precision, recall and specificity (MonoScene).

    probs: (M, C) softmax probabilities; target: (M,).
    """
    valid = target != ignore
    probs, target = probs[valid], target[valid]
    terms = []
    for c in range(probs.shape[1]):
        p = probs[:, c]
        t = (target == c).to(probs.dtype)
        if t.sum() == 0:
            continue
        inter = (p * t).sum()
        loss = probs.new_zeros(())
        if p.sum() > 0:
            loss = loss + _bce_to_one(inter / p.sum())
        loss = loss + _bce_to_one(inter / t.sum())
        if (1 - t).sum() > 0:
            loss = loss + _bce_to_one(((1 - p) * (1 - t)).sum() / (1 - t).sum())
        terms.append(loss)
    if not terms:
        return probs.sum() * 0.0
    return torch.stack(terms).mean()


def geo_scal_loss(probs: torch.Tensor, target: torch.Tensor, empty: int = FREE,
                  ignore: int = IGNORE) -> torch.Tensor:
    """Geometry scene-class-affinity loss: occupied-vs-empty precision, recall, specificity."""
    valid = target != ignore
    probs, target = probs[valid], target[valid]
    nonempty_p = 1 - probs[:, empty]
    nonempty_t = (target != empty).to(probs.dtype)
    inter = (nonempty_p * nonempty_t).sum()
    loss = probs.new_zeros(())
    if nonempty_p.sum() > 0:
        loss = loss + _bce_to_one(inter / nonempty_p.sum())
    if nonempty_t.sum() > 0:
        loss = loss + _bce_to_one(inter / nonempty_t.sum())
    if (1 - nonempty_t).sum() > 0:
        loss = loss + _bce_to_one(((1 - nonempty_t) * probs[:, empty]).sum() / (1 - nonempty_t).sum())
    return loss


def depth_targets(depth_map: torch.Tensor, downsample: int, bins: DepthBins) -> torch.Tensor:
    """One-hot depth-bin targets from a dense depth map (0 = no depth).

    depth_map: (B, N, H, W) metres at network input resolution → (B, N, fH, fW, D) float,
    the minimum positive depth in each downsample×downsample patch; patches without depth or
    outside the bins are all-zero rows (ignored by `depth_loss`).
    """
    b, n, h, w = depth_map.shape
    fh, fw = h // downsample, w // downsample
    d = depth_map.reshape(b * n, fh, downsample, fw, downsample).permute(0, 1, 3, 2, 4)
    d = d.reshape(b * n, fh, fw, downsample * downsample)               # (B·N, fH, fW, s²)
    d = torch.where(d > 0, d, torch.full_like(d, float('inf'))).amin(-1)
    idx = torch.floor((d - bins.start) / bins.step)
    ok = torch.isfinite(d) & (idx >= 0) & (idx < bins.n)
    onehot = F.one_hot(torch.where(ok, idx, torch.zeros_like(idx)).long(), bins.n).float()
    onehot = onehot * ok.unsqueeze(-1)
    return onehot.reshape(b, n, fh, fw, bins.n)


def depth_loss(depth_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE of depth probabilities (B, N, D, fH, fW) against one-hot targets (B, N, fH, fW, D),
    summed over the D bins and averaged over the feature cells that have a depth (the reference's
    normalisation: a mean over cells × bins would make the term D times weaker)."""
    pred = depth_probs.permute(0, 1, 3, 4, 2).reshape(-1, depth_probs.shape[2])
    tgt = targets.reshape(-1, targets.shape[-1])
    fg = tgt.sum(1) > 0
    if not bool(fg.any()):
        return depth_probs.sum() * 0.0
    bce = F.binary_cross_entropy(pred[fg].clamp(1e-6, 1 - 1e-6), tgt[fg], reduction='none')
    return bce.sum() / fg.sum()


def image_semantic_loss(logits: torch.Tensor, target: torch.Tensor,
                        class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Auxiliary per-feature-cell image semantics (a training aid, not part of the served model).

    logits: (B·N, C, fH, fW) from a small head on the image features; target: (B·N, fH, fW) int64
    class of the cell (free = nothing / sky). Cross-entropy, class-weighted, mean over cells.
    """
    return F.cross_entropy(logits.float(), target, weight=class_weights)


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                        gamma: float = 4.0) -> torch.Tensor:
    """CenterNet's focal loss on a Gaussian-splatted heatmap, normalised by the peak count.

    logits: (B, K, Y, X) raw; target: same shape in [0, 1] with 1 at object centres.
    """
    pred = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg_w = (1 - target).pow(gamma)
    pos_loss = -(pred.log() * (1 - pred).pow(alpha) * pos).sum()
    neg_loss = -((1 - pred).log() * pred.pow(alpha) * neg_w * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def center_regression_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 on the regression maps at object-centre cells.

    pred, target: (B, C, Y, X); mask: (B, Y, X) bool (cells holding an object centre).
    """
    m = mask.unsqueeze(1).expand_as(pred)
    if not bool(m.any()):
        return pred.sum() * 0.0
    return F.l1_loss(pred[m], target[m], reduction='sum') / mask.sum().clamp(min=1)
