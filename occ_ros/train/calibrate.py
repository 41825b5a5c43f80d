"""Post-training class-prior calibration of the occupancy head (fit on *training* frames only).

    python -m occ_ros.train.calibrate --ckpt occ_ros/weights/lite_synth.ckpt

The prediction is argmax over the 18 class logits of each voxel. A network trained with the
class-balanced focal + scene-class-affinity losses over-predicts rare classes (its logits carry
a prior that favours them); adding one offset per class to the logits moves the argmax decision
boundaries without touching the features. The offsets are folded into the bias of the occupancy
head's last Linear (output channel z·K + k gets offset[k] for every height slice z), so the
calibrated checkpoint is an ordinary checkpoint: same graph, same node, same ONNX export.

The offsets maximise camera-masked mIoU on frames rendered from the record's *training* seeds
by coordinate search (free class fixed at 0; each trial re-scores only the voxels whose decision
it can change, exactly as a full argmax would); held-out validation seeds are only used to report
the before/after scores, never to fit. The fit frames are rendered in the evaluation world (the
default `WorldMix`) even when training used the richer 'training' mix, so the offsets also take
out the class prior that mix taught the network. The record (`<ckpt>.json`) gets a `calibration` entry.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from occ_ros.core.classes import FREE, NUM_CLASSES, NUM_SEMANTIC, OCC_CLASSES

DELTAS = (-2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0)
BIAS_LIMIT = 4.0


def masked_logits(model: torch.nn.Module, samples: Sequence, inputs: tuple[torch.Tensor, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (V, K) and labels (V,) of the camera-visible voxels of every sample."""
    logits, labels = [], []
    with torch.no_grad():
        model.eval()
        for s in samples:
            out = model(s.images.float()[None], *inputs)['occ_logits'][0]      # nx, ny, nz, K
            m = torch.from_numpy(np.asarray(s.mask_camera, bool))
            logits.append(out[m])
            labels.append(s.semantics.long()[m])
    return torch.cat(logits), torch.cat(labels)


def miou_of(logits: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor) -> float:
    """Mean IoU (percent) over classes 0..16 with a union, of argmax(logits + bias)."""
    pred = (logits + bias).argmax(1)
    return _miou_of_confusion(torch.bincount(labels * NUM_CLASSES + pred, minlength=NUM_CLASSES ** 2))


def _miou_of_confusion(flat_conf: torch.Tensor) -> float:
    k = NUM_CLASSES
    conf = flat_conf.reshape(k, k).double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    sel = union[:NUM_SEMANTIC] > 0
    if not bool(sel.any()):
        return float('nan')
    return float((tp[:NUM_SEMANTIC][sel] / union[:NUM_SEMANTIC][sel]).mean() * 100)


class _Decisions:
    """argmax(logits + bias) kept with its runner-up, so that the confusion matrix of a trial
    that changes ONE class's offset costs O(V) instead of O(V·K): only that class's score moves,
    so each voxel either keeps its class, switches to the trial class, or (if it was the trial
    class) falls back to its runner-up. Ties resolve as torch.argmax does (lowest index), so
    every trial's confusion matrix is exactly the brute-force one."""

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor) -> None:
        self.logits, self.labels = logits, labels
        self.reset(bias)

    def reset(self, bias: torch.Tensor) -> None:
        s = self.logits + bias
        self.top = s.argmax(1)
        self.top_v = s.gather(1, self.top[:, None])[:, 0]
        s.scatter_(1, self.top[:, None], float('-inf'))
        self.second = s.argmax(1)
        self.second_v = s.gather(1, self.second[:, None])[:, 0]
        del s
        self.conf = torch.bincount(self.labels * NUM_CLASSES + self.top, minlength=NUM_CLASSES ** 2)
        self._cls: Optional[tuple[int, torch.Tensor, torch.Tensor]] = None

    def _class(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits[:, c] contiguous, top == c), cached while the trials stay on class c."""
        if self._cls is None or self._cls[0] != c:
            self._cls = (c, self.logits[:, c].contiguous(), self.top == c)
        return self._cls[1], self._cls[2]

    def trial_confusion(self, c: int, bias_c: float) -> torch.Tensor:
        """Flat confusion matrix of argmax(logits + bias) with bias[c] replaced by bias_c."""
        col, was_c = self._class(c)
        score = col + bias_c
        keeps_c = (score > self.second_v) | ((score == self.second_v) & (c < self.second))
        takes_c = (score > self.top_v) | ((score == self.top_v) & (c < self.top))
        becomes_c = torch.where(was_c, keeps_c, takes_c)
        changed = becomes_c != was_c
        if not bool(changed.any()):
            return self.conf
        lab = self.labels[changed]
        old = self.top[changed]
        new = torch.where(becomes_c[changed], torch.full_like(old, c), self.second[changed])
        k2 = NUM_CLASSES ** 2
        return (self.conf - torch.bincount(lab * NUM_CLASSES + old, minlength=k2)
                + torch.bincount(lab * NUM_CLASSES + new, minlength=k2))


def fit_class_bias(logits: torch.Tensor, labels: torch.Tensor, rounds: int = 3,
                   deltas: Sequence[float] = DELTAS, limit: float = BIAS_LIMIT,
                   log: Optional[Callable[[str], None]] = None) -> tuple[torch.Tensor, list[float]]:
    """Coordinate search of per-class offsets (free fixed at 0) → (offsets (K,), mIoU per round).
    Each trial moves one class's offset by one step and is kept when it raises the mIoU of
    argmax(logits + offsets); trials are scored incrementally (`_Decisions`), with exactly the
    brute-force result. `log` gets a progress line after every class."""
    bias = torch.zeros(NUM_CLASSES)
    state = _Decisions(logits, labels, bias)
    best = _miou_of_confusion(state.conf)
    trace = [best]
    t0 = time.time()
    for r in range(rounds):
        for c in range(NUM_CLASSES):
            if c == FREE:
                continue
            if log is not None:
                log(f'[calibrate] round {r + 1}/{rounds} class {c + 1}/{NUM_SEMANTIC} ({OCC_CLASSES[c]}): '
                    f'fit mIoU {best:.2f}, elapsed {time.time() - t0:.0f} s')
            for d in deltas:
                value = float(np.clip(float(bias[c]) + d, -limit, limit))
                v = _miou_of_confusion(state.trial_confusion(c, value))
                if v > best + 1e-6:
                    best = v
                    bias = bias.clone()
                    bias[c] = value
                    state.reset(bias)
        trace.append(best)
    return bias, trace


def apply_class_bias(model: torch.nn.Module, bias: torch.Tensor) -> None:
    """Fold per-class logit offsets into the occupancy head's last Linear (in place)."""
    head = model.occ_head                                    # type: ignore[attr-defined]
    last = head.predicter[-1]
    nz = head.nz
    with torch.no_grad():
        last.bias += bias.to(last.bias).repeat(nz)            # channel z·K + k ← bias[k]


def main(argv: Optional[Sequence[str]] = None) -> int:
    from occ_ros.model import load_checkpoint, save_checkpoint
    from occ_ros.train.data import DataSettings, build_cache
    from occ_ros.train.loop import evaluate, model_inputs

    p = argparse.ArgumentParser(prog='python -m occ_ros.train.calibrate',
                                description=__doc__.split('\n')[0])
    p.add_argument('--ckpt', default='occ_ros/weights/lite_synth.ckpt', help='checkpoint (+ .json record)')
    p.add_argument('--out', default=None, help='calibrated checkpoint (default: overwrite --ckpt)')
    p.add_argument('--seeds', type=int, default=16, help='first N training seeds to fit on')
    p.add_argument('--seconds', type=float, default=10.0)
    p.add_argument('--rate', type=float, default=0.1, help='frames per second per seed')
    p.add_argument('--workers', type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ck = Path(a.ckpt)
    rec_path = ck.with_suffix('.json')
    record = json.loads(rec_path.read_text())
    if 'calibration' in record:
        raise SystemExit(f'{ck} is already calibrated (see {rec_path}); calibrate the raw export')
    model, meta = load_checkpoint(ck)
    cfg = model.cfg                                          # type: ignore[attr-defined]
    src = tuple(record['train_data']['src_hw'])
    train_seeds = tuple(int(s) for s in record['train_data']['seeds'][:a.seeds])
    val = record['val_data']
    fit = build_cache(DataSettings(train_seeds, a.seconds, a.rate, src, keep_eval=True, world='default'), cfg,
                      a.workers, 'calibration frames (training seeds)')
    vset = build_cache(DataSettings(tuple(val['seeds']), val['seconds'], val['rate'], src,
                                    keep_eval=True), cfg, a.workers, 'val frames')
    inputs = model_inputs(cfg, src)
    before = evaluate(model, vset, inputs, panoptic=True)
    logits, labels = masked_logits(model, fit, inputs)
    print(f'[calibrate] fitting {NUM_SEMANTIC} class offsets on {labels.numel()} visible voxels of '
          f'{len(fit)} frames', file=sys.stderr, flush=True)
    bias, trace = fit_class_bias(logits, labels, log=lambda m: print(m, file=sys.stderr, flush=True))
    del logits, labels
    apply_class_bias(model, bias)
    after = evaluate(model, vset, inputs, panoptic=True)
    print(f'held-out before: mIoU {before["miou"]:.2f} RayIoU {before["rayiou"]:.2f} '
          f'RayPQ {before.get("raypq", float("nan")):.2f}', file=sys.stderr)
    print(f'held-out after:  mIoU {after["miou"]:.2f} RayIoU {after["rayiou"]:.2f} '
          f'RayPQ {after.get("raypq", float("nan")):.2f}', file=sys.stderr)
    record['calibration'] = {
        'command': 'python -m occ_ros.train.calibrate ' + ' '.join(sys.argv[1:] if argv is None else argv),
        'fit_seeds': list(train_seeds), 'fit_frames': len(fit),
        'class_offsets': {n: round(float(v), 3) for n, v in zip(OCC_CLASSES, bias)},
        'fit_miou_trace': [round(v, 3) for v in trace],
        'held_out_before': before, 'held_out_after': after}
    record['final_metrics_uncalibrated'] = record.get('final_metrics')
    record['final_metrics'] = after
    out = Path(a.out) if a.out else ck
    meta = dict(meta)
    for key in ('model_name', 'storage_dtype', 'torch_version'):
        meta.pop(key, None)
    meta['final_metrics'] = {k: after[k] for k in ('miou', 'rayiou', 'raypq') if k in after}
    meta['calibrated'] = True
    save_checkpoint(model, out, meta, fp16=True)
    out.with_suffix('.json').write_text(json.dumps(record, indent=1))
    print(out, file=sys.stderr)
    return 0


if __name__ == '__main__':                                           # pragma: no cover
    sys.exit(main())
