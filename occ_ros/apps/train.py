"""`occ-ros train`: the training recipe from the command line (the trainer is `occ_ros.train`)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from occ_ros.bag.world_mix import WORLD_MIXES
from occ_ros.core.classes import OCC_CLASSES
from occ_ros.core.errors import ConfigError
from occ_ros.train.data import DataSettings, build_cache
from occ_ros.train.loop import (LAST_CKPT, STATE_FILE, Trainer, TrainSettings, cache_class_weights, evaluate,
                                log_to_stderr, make_model, model_inputs, parse_seeds)


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
    log = log_to_stderr
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
