"""Loss functions and centerness targets of the trainer."""
import math

import numpy as np
import pytest
import torch

from occ_ros.core.config import AxisSpec, DepthBins, GridSpec
from occ_ros.train import losses
from occ_ros.train.targets import center_targets, gaussian_radius


def _onehot_probs(target, c, p=1.0):
    probs = torch.full((target.numel(), c), (1 - p) / (c - 1))
    probs[torch.arange(target.numel()), target] = p
    return probs


def test_lovasz_zero_for_perfect_and_positive_otherwise():
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    assert float(losses.lovasz_softmax(_onehot_probs(target, 3), target)) < 1e-6
    wrong = torch.tensor([1, 2, 0, 0, 2, 1])
    assert float(losses.lovasz_softmax(_onehot_probs(wrong, 3), target)) > 0.9


def test_lovasz_matches_jaccard_for_hard_predictions():
    # With hard 0/1 probabilities the Lovász extension equals 1 - IoU per class.
    target = torch.tensor([0, 0, 0, 1, 1, 1])
    pred = torch.tensor([0, 0, 1, 1, 1, 1])
    value = float(losses.lovasz_softmax(_onehot_probs(pred, 2), target))
    iou0 = 2 / 3
    iou1 = 3 / 4
    assert math.isclose(value, ((1 - iou0) + (1 - iou1)) / 2, rel_tol=1e-5)


def test_focal_loss_prefers_correct_logits_and_ignores_255():
    target = torch.tensor([0, 1, 2, 255])
    good = torch.full((4, 3), -4.0)
    good[torch.arange(3), target[:3]] = 4.0
    bad = -good
    lg = float(losses.occupancy_focal_loss(good, target))
    lb = float(losses.occupancy_focal_loss(bad, target))
    assert lg < 0.01 < lb
    only_ignored = losses.occupancy_focal_loss(good[3:], target[3:])
    assert float(only_ignored) == 0.0


def test_scal_losses_small_for_perfect_prediction():
    target = torch.tensor([0, 17, 17, 4, 4, 17])
    probs = _onehot_probs(target, 18, p=0.999)
    assert float(losses.sem_scal_loss(probs, target)) < 0.05
    assert float(losses.geo_scal_loss(probs, target)) < 0.05
    flipped = torch.where(target == 17, torch.tensor(4), torch.tensor(17))
    assert float(losses.geo_scal_loss(_onehot_probs(flipped, 18, 0.999), target)) > 5


def test_depth_targets_take_patch_minimum():
    bins = DepthBins(1.0, 5.0, 1.0)
    depth = torch.zeros(1, 1, 4, 4)
    depth[0, 0, 0, 0] = 3.5            # patch (0,0): min positive = 2.2 below
    depth[0, 0, 1, 1] = 2.2
    depth[0, 0, 2:, 2:] = 9.0          # patch (1,1): out of range → ignored
    t = losses.depth_targets(depth, 2, bins)
    assert t.shape == (1, 1, 2, 2, 4)
    assert t[0, 0, 0, 0].tolist() == [0, 1, 0, 0]          # bin of 2.2 m
    assert t[0, 0, 1, 1].sum() == 0 and t[0, 0, 0, 1].sum() == 0
    probs = torch.zeros(1, 1, 4, 2, 2)
    probs[0, 0, 1, 0, 0] = 1.0
    assert float(losses.depth_loss(probs, t)) < 1e-3
    # normalisation: summed over bins, averaged over cells with a depth (one here)
    uniform = torch.full((1, 1, 4, 2, 2), 0.25)
    expect = -(math.log(0.25) + 3 * math.log(0.75))
    assert float(losses.depth_loss(uniform, t)) == pytest.approx(expect, rel=1e-5)


def test_center_targets_peak_offset_and_height():
    grid = GridSpec(x=AxisSpec(-8, 8, 0.4, 'x'), y=AxisSpec(-8, 8, 0.4, 'y'), z=AxisSpec(-1, 5.4, 0.4, 'z'))
    t = center_targets(np.array([[1.1, -2.3, 0.8], [50, 0, 0]]), np.array([[4.5, 1.9, 1.6]] * 2),
                       np.array([0, 1]), grid, num_classes=10)
    cx, cy = int((1.1 + 8) / 0.4), int((-2.3 + 8) / 0.4)
    assert t.heatmap[0, cy, cx] == 1.0 and t.heatmap.max() == 1.0
    assert t.heatmap[1].sum() == 0                              # second object off the grid
    assert torch.allclose(t.reg[:, cy, cx], torch.tensor([(1.1 + 8) / 0.4 - cx, (-2.3 + 8) / 0.4 - cy]))
    assert math.isclose(float(t.height[0, cy, cx]), 0.8, rel_tol=1e-6) and int(t.mask.sum()) == 1
    focal = float(losses.gaussian_focal_loss(torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))[None], t.heatmap[None]))
    uniform = float(losses.gaussian_focal_loss(torch.zeros_like(t.heatmap)[None], t.heatmap[None]))
    assert focal < uniform / 100
    assert gaussian_radius(10, 5) > gaussian_radius(2, 1)
