"""Benchmark: does the shipped training recipe fit the 90-minute budget on this machine?

    .venv/bin/python bench/bench_train.py                  # 4 training sequences, 30 + 100 steps
    .venv/bin/python bench/bench_train.py --steps 300 --json

Renders a few sequences of the shipped recipe's training data (the `occ-ros train` defaults,
which a test pins to the shipped record), times the cache rendering and then steady-state
optimisation steps (after warm-up steps that are not timed), and projects the wall time of the
whole recipe: cache of every training + validation frame, then every step. The shipped record's
own figures (measured when it was trained) are printed beside it. Periodic validation and the
calibration (2–3 min) are not included.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

REPO = Path(__file__).resolve().parent.parent
BUDGET_MIN = 90.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sequences', type=int, default=4, help='training sequences to render and train on')
    ap.add_argument('--warmup-steps', type=int, default=30, help='untimed steps first')
    ap.add_argument('--steps', type=int, default=100, help='timed steps')
    ap.add_argument('--json', action='store_true', help='print the figures as JSON')
    a = ap.parse_args(argv)

    import torch

    from occ_ros.model import model_config
    from occ_ros.train.data import build_cache
    from occ_ros.weights import default_checkpoint
    from occ_ros.apps.train import add_arguments, recipe_from_args
    from occ_ros.train.loop import (Trainer, cache_class_weights, make_model, model_inputs, parse_seeds,
                                    seed_everything)

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args([])                       # the shipped recipe (test_cli_defaults_are_the_shipped_recipe)
    settings, tr_full, va_full = recipe_from_args(args)
    torch.set_num_threads(max(1, int(args.threads)))
    cfg = model_config(args.model)
    seeds = parse_seeds(args.train_seeds)[:a.sequences]
    tr = dataclasses.replace(tr_full, seeds=seeds)
    quiet = lambda s: None                        # noqa: E731

    t0 = time.perf_counter()
    train = build_cache(tr, cfg, args.workers, 'bench cache', quiet)
    cache_fps = len(train) / (time.perf_counter() - t0)

    seed_everything(args.seed)
    weights, _ = cache_class_weights(train)
    trainer = Trainer(make_model(args.model, args.seed), settings, train, weights,
                      model_inputs(cfg, tr.src_hw), log=quiet, src_hw=tr.src_hw)
    trainer.train_steps(a.warmup_steps)
    t1 = time.perf_counter()
    trainer.train_steps(a.steps)
    step_s = (time.perf_counter() - t1) / a.steps
    train_fps = settings.batch_size / step_s

    cache_frames = tr_full.frames + va_full.frames
    proj_cache_min = cache_frames / cache_fps / 60
    proj_train_min = settings.steps * step_s / 60
    ckpt = default_checkpoint(args.model)
    rec_path = ckpt.with_suffix('.json') if ckpt is not None else None
    rec = json.loads(rec_path.read_text()) if rec_path is not None and rec_path.exists() else {}
    figures = {
        'torch_threads': int(args.threads), 'workers': int(args.workers),
        'cache_frames_per_s': round(cache_fps, 2), 'train_frames_per_s': round(train_fps, 2),
        'recipe_steps': settings.steps, 'recipe_cache_frames': cache_frames,
        'projected_cache_min': round(proj_cache_min, 1), 'projected_train_min': round(proj_train_min, 1),
        'projected_total_min': round(proj_cache_min + proj_train_min, 1), 'budget_min': BUDGET_MIN,
    }
    if rec.get('train_seconds'):
        figures['shipped_record'] = {
            'cache_min': round(rec['cache_seconds'] / 60, 1), 'train_min': round(rec['train_seconds'] / 60, 1),
            'train_frames_per_s': round(rec['steps_done'] * settings.batch_size / rec['train_seconds'], 2),
            'wall_min': round(rec['wall_seconds'] / 60, 1)}
    if a.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f'training benchmark ({len(seeds)} sequences, {len(train)} frames, {a.steps} timed steps, '
          f'{args.threads} threads, {args.workers} render workers)')
    print(f'  cache rendering      {cache_fps:6.2f} frames/s  → {cache_frames} frames of the recipe: '
          f'{proj_cache_min:5.1f} min')
    print(f'  optimisation         {train_fps:6.2f} frames/s  → {settings.steps} steps: {proj_train_min:5.1f} min')
    total = proj_cache_min + proj_train_min
    verdict = 'fits' if total <= BUDGET_MIN else 'does NOT fit'
    print(f'  projected recipe     {total:5.1f} min ({verdict} the {BUDGET_MIN:.0f}-min budget; '
          'validation and calibration not included)')
    if 'shipped_record' in figures:
        r = figures['shipped_record']
        print(f"  shipped record       cache {r['cache_min']} min + {r['train_min']} min at "
              f"{r['train_frames_per_s']} frames/s = {r['wall_min']} min wall (the machine it was trained on)")
    return 0


if __name__ == '__main__':
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
