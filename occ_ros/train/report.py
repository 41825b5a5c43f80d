"""Figures of a training run: loss / validation curves and prediction-beside-ground-truth BEV views.

    python -m occ_ros.train.report --ckpt occ_ros/weights/lite_synth.ckpt --out docs/train

Reads the training record (`<ckpt>.json`, written by `occ-ros train --export`), draws
`curves.png` (training loss terms and held-out mIoU / RayIoU per validation) and
`bev_pred_vs_gt.png` (top-down class of the highest occupied voxel of each column, camera-visible
voxels only, ground truth left, prediction right) on held-out frames of the record's validation
seeds. PIL only (no plotting library needed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from occ_ros.core.classes import FREE, PALETTE

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], series: dict[str, list],
           title: str, log_y: bool = False) -> None:
    """Line plot of {name: [(x, y), …]} into box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0 + 4, y0 - 14), title, fill=(0, 0, 0))
    pts = [p for s in series.values() for p in s if np.isfinite(p[1])]
    if not pts:
        return
    xs = [p[0] for p in pts]
    ys = [np.log10(max(p[1], 1e-6)) if log_y else p[1] for p in pts]
    xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ylo, yhi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = (yhi - ylo) * 0.05
    ylo, yhi = ylo - pad, yhi + pad

    def tx(x: float, y: float) -> tuple[float, float]:
        y = np.log10(max(y, 1e-6)) if log_y else y
        return (x0 + (x - xlo) / (xhi - xlo) * (x1 - x0), y1 - (y - ylo) / (yhi - ylo) * (y1 - y0))

    for k, (name, s) in enumerate(series.items()):
        col = _COLOURS[k % len(_COLOURS)]
        p = [tx(x, y) for x, y in s if np.isfinite(y)]
        if len(p) > 1:
            draw.line(p, fill=col, width=2)
        for q in p:
            draw.ellipse((q[0] - 2, q[1] - 2, q[0] + 2, q[1] + 2), fill=col)
        last = s[-1][1] if s else float('nan')
        draw.text((x0 + 6, y0 + 4 + 12 * k), f'{name} (last {last:.3g})', fill=col)
    lo_lab = 10 ** ylo if log_y else ylo
    hi_lab = 10 ** yhi if log_y else yhi
    draw.text((x0 - 2, y1 + 2), f'{xlo:.0f}', fill=(0, 0, 0))
    draw.text((x1 - 30, y1 + 2), f'{xhi:.0f} steps', fill=(0, 0, 0))
    draw.text((x1 + 3, y0), f'{hi_lab:.3g}', fill=(0, 0, 0))
    draw.text((x1 + 3, y1 - 10), f'{lo_lab:.3g}', fill=(0, 0, 0))


def validation_series(record: dict) -> dict[str, list]:
    """The validation curves of a training record, RayIoU labelled by its ray protocol: entries
    without 'ray_protocol' were scored before the official ray origins (one origin); a later
    re-scoring by the official protocol ('validation_rescored') adds its final point."""
    val = record.get('validation_curve', [])
    scored = [h for h in val if 'rayiou' in h]
    official = [(h['step'], h['rayiou']) for h in scored if h.get('ray_protocol', '').startswith('official')]
    single = [(h['step'], h['rayiou']) for h in scored if not h.get('ray_protocol', '').startswith('official')]
    rescored = (record.get('validation_rescored') or {}).get('official_origins', {})
    if rescored.get('rayiou') is not None and val:
        official.append((val[-1]['step'], rescored['rayiou']))
    vs: dict[str, list] = {'mIoU (camera mask)': [(h['step'], h['miou']) for h in val if 'miou' in h]}
    if official:
        vs['RayIoU, official origins' + (' (final, re-scored)' if rescored and len(official) == 1 else '')] = official
    if single:
        vs['RayIoU, one origin (not the official protocol)'] = single
    return vs


def plot_curves(record: dict, path: Path) -> Path:
    """curves.png: loss terms (log scale) and validation mIoU / RayIoU against the step."""
    loss = record.get('loss_curve', [])
    img = Image.new('RGB', (1000, 420), (255, 255, 255))
    d = ImageDraw.Draw(img)
    keys = [k for k in ('total', 'focal', 'lovasz', 'sem', 'geo', 'depth', 'heat', 'reg')
            if loss and k in loss[0]]
    _panel(d, (40, 30, 470, 380), {k: [(h['step'], h[k]) for h in loss] for k in keys},
           'training loss terms (log scale, mean over log window)', log_y=True)
    vs = validation_series(record)
    _panel(d, (540, 30, 950, 380), vs, 'held-out validation (%)')
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def bev_image(semantics: np.ndarray, mask: Optional[np.ndarray] = None, scale: int = 2) -> np.ndarray:
    """(nx, ny, nz) labels → (nx·s, ny·s, 3) uint8: class of the highest non-free voxel per column;
    x (forward) up, y (left) to the left; columns with nothing are dark grey."""
    sem = semantics.copy()
    if mask is not None:
        sem[~mask] = FREE
    occ = sem != FREE
    nz = sem.shape[2]
    top = nz - 1 - np.argmax(occ[:, :, ::-1], axis=2)                    # highest occupied z
    cls = np.take_along_axis(sem, top[..., None], 2)[..., 0]
    pal = np.asarray(PALETTE + ((40, 40, 40),) * (256 - len(PALETTE)), np.uint8)
    rgb = pal[cls]
    rgb[~occ.any(2)] = (40, 40, 40)
    rgb = rgb[::-1, ::-1]                                                 # x up, y left
    return np.repeat(np.repeat(rgb, scale, 0), scale, 1)


def plot_bev(pairs: Sequence[tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]], path: Path,
             labels: Sequence[str] = ()) -> Path:
    """Rows of [ground truth | prediction] BEV images; pairs of (pred, gt, mask_camera)."""
    tiles = []
    for k, (pred, gt, mask) in enumerate(pairs):
        a, b = bev_image(gt, mask), bev_image(pred, mask)
        row = np.concatenate([a, np.full((a.shape[0], 8, 3), 255, np.uint8), b], 1)
        tiles.append(np.concatenate([np.full((18, row.shape[1], 3), 255, np.uint8), row], 0))
    img = Image.fromarray(np.concatenate(tiles, 0))
    d = ImageDraw.Draw(img)
    h = tiles[0].shape[0]
    for k in range(len(tiles)):
        lab = labels[k] if k < len(labels) else f'frame {k}'
        d.text((4, k * h + 3), f'{lab}: ground truth (camera mask)        prediction (same mask)',
               fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    from occ_ros.model import load_checkpoint
    from occ_ros.train.data import DataSettings, render_sequence
    from occ_ros.train.loop import model_inputs

    p = argparse.ArgumentParser(prog='python -m occ_ros.train.report', description=__doc__.split('\n')[0])
    p.add_argument('--ckpt', default='occ_ros/weights/lite_synth.ckpt')
    p.add_argument('--out', default='docs/train')
    p.add_argument('--frames', type=int, default=3, help='held-out frames in the BEV figure')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ck = Path(a.ckpt)
    record = json.loads(ck.with_suffix('.json').read_text())
    out = Path(a.out)
    print(plot_curves(record, out / 'curves.png'))
    model, _ = load_checkpoint(ck)
    cfg = model.cfg
    src = tuple(record['val_data']['src_hw'])
    seeds = record['val_data']['seeds']
    inputs = model_inputs(cfg, src)
    pairs, labels = [], []
    for seed in seeds[:a.frames]:
        s = render_sequence((int(seed), DataSettings((int(seed),), 5.0, 0.2, src, keep_eval=True), cfg))[0]
        with torch.no_grad():
            o = model(s.images.float()[None], *inputs)
        pairs.append((o['occ_logits'][0].argmax(-1).to(torch.uint8).numpy(), s.semantics.numpy(),
                      s.mask_camera))
        labels.append(f'held-out seed {seed}, t=0')
    print(plot_bev(pairs, out / 'bev_pred_vs_gt.png', labels))
    return 0


if __name__ == '__main__':                                           # pragma: no cover
    sys.exit(main())
