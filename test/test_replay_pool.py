"""Pooled scoring of several replays (`occ_ros.apps.replay.pool_scores` / `ReplaySetReport`).

Pure: the per-bag reports are built from scored pairs directly (the replay itself — node, DDS,
matching — is tested end to end in test_replay.py; `run_replay_set` only loops over it).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from occ_ros.core.classes import FREE, OCC_INDEX
from occ_ros.core.config import GridSpec
from occ_ros.metrics.evaluate import EvalSample, score_pairs
from occ_ros.core.occupancy import Occupancy
from occ_ros.apps.replay import ReplayReport, ReplaySetReport, pool_scores

CAR, BARRIER = OCC_INDEX['car'], OCC_INDEX['barrier']


def _pair(key, gt_boxes, pred_boxes):
    shape = GridSpec().shape
    gt = np.full(shape, FREE, np.uint8)
    pred = np.full(shape, FREE, np.uint8)
    for vol, boxes in ((gt, gt_boxes), (pred, pred_boxes)):
        for cls, sl in boxes:
            vol[sl] = cls
    mask = np.ones(shape, bool)
    return EvalSample(key, Occupancy(pred), Occupancy(gt, mask_camera=mask))


def _report(name, samples):
    scores = score_pairs(samples, rays=False) if samples else None
    return ReplayReport(bag=name, model='lite', backend='torch', scores=scores, frames_in_bag=len(samples),
                        outputs=len(samples), matched=len(samples), dropped_sets=0, output_rate_hz=5.0,
                        input_rate_hz=12.0, latency_p50_ms=100.0, latency_p99_ms=150.0,
                        processing_p50_ms=90.0, samples=list(samples))


def test_pooled_scores_are_one_confusion_over_every_bag():
    car = (CAR, np.s_[100:110, 100:105, 2:6])            # 200 voxels
    barrier = (BARRIER, np.s_[120:130, 90:92, 2:4])      # 40 voxels
    stray = (BARRIER, np.s_[60, 60, 3])                  # one false barrier voxel
    a = _report('a', [_pair('a0', [car], [car, stray])])  # bag a shows no barrier at all
    b = _report('b', [_pair('b0', [barrier], [barrier])])
    # per bag: a's one stray voxel makes its barrier IoU 0; b has no car (NaN, left out)
    assert a.scores.semantic.iou[BARRIER] == 0.0
    assert np.isnan(b.scores.semantic.iou[CAR])
    pooled = pool_scores([a, b], rays=False)
    np.testing.assert_array_equal(pooled.semantic.confusion,
                                  a.scores.semantic.confusion + b.scores.semantic.confusion)
    assert pooled.num_frames == 2
    assert pooled.semantic.iou[CAR] == pytest.approx(100.0)
    assert pooled.semantic.iou[BARRIER] == pytest.approx(100.0 * 40 / 41)
    # the two classes present in the set, both scored: the pooled mean is theirs
    assert pooled.semantic.miou == pytest.approx((100.0 + 100.0 * 40 / 41) / 2)

    rep = ReplaySetReport([a, b], pooled)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert [x['bag'] for x in d['bags']] == ['a', 'b'] and d['pooled']['frames_scored'] == 2
    assert d['pooled']['scores']['miou'] == pytest.approx(pooled.semantic.miou, abs=1e-3)
    md = rep.to_markdown()
    assert '| **pooled** | 2 |' in md and '| `a` | 1 |' in md


def test_pooling_nothing_scored_gives_no_scores():
    empty = _report('e', [])
    assert pool_scores([empty]) is None
    assert 'n/a' in ReplaySetReport([empty], None).to_markdown()


def test_eval_cli_takes_several_bags():
    from pathlib import Path

    from occ_ros.apps.cli import build_parser
    args = build_parser('eval').parse_args(['eval', '--bag', 'a', 'b', '--bag', 'c', '--out', 'o'])
    assert args.bag == [Path('a'), Path('b'), Path('c')]
    assert build_parser('eval').parse_args(['eval', '--pred', 'p', '--gt', 'g']).bag is None
