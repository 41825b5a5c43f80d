"""Test-only occupancy node whose backend returns the ground truth of a bag (never a product option).

It proves the wiring end to end: replaying a bag through this node must score 100 on every
metric, so any loss comes from the node, the messages, the matching or the metrics — not from a
network. The bag path comes from the environment variable OCC_ROS_TEST_GT_BAG. With
OCC_ROS_TEST_GT_SHIFT=k (voxels, default 0) the answer is the ground truth moved k voxels along x:
a prediction that scores neither 0 nor 100, for tests that compare figures computed two ways.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Mapping

import numpy as np
import torch

from occ_ros.bag.reader import read_ground_truth
from occ_ros.core.classes import DET_TO_OCC
from occ_ros.model import model_config
from occ_ros.backends import InferenceBackend, TensorSpec
from occ_ros.pipeline import OccupancyPipeline
from occ_ros.ros.main import main

PEAK_LOGIT = 20.0


class GroundTruthBackend:
    """InferenceBackend that answers with the ground truth of the frame being processed
    (mypy checks it against the protocol: test_typing.py)."""

    kind = 'ground_truth'
    device = torch.device('cpu')
    output_names = ('occ_label', 'heatmap', 'reg', 'height')

    def __init__(self, gt: dict, cfg: Any) -> None:
        self.gt = gt
        self.stamps = np.array(sorted(gt), dtype=np.int64)
        self.cfg = cfg
        self.stamp_ns = 0

    def infer(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        i = int(np.argmin(np.abs(self.stamps - self.stamp_ns)))
        g = self.gt[int(self.stamps[i])]
        grid = self.cfg.grid
        ny, nx = grid.bev_shape
        heatmap = torch.full((1, len(DET_TO_OCC), ny, nx), -PEAK_LOGIT)
        reg = torch.zeros(1, 2, ny, nx)
        height = torch.zeros(1, 1, ny, nx)
        for inst in g.instance_table:
            if inst.label not in DET_TO_OCC:
                continue
            x, y, z = inst.center
            fx, fy = (x - grid.x.lo) / grid.x.step, (y - grid.y.lo) / grid.y.step
            cx, cy = math.floor(fx), math.floor(fy)
            if not (0 <= cx < nx and 0 <= cy < ny):
                continue
            heatmap[0, DET_TO_OCC.index(inst.label), cy, cx] = PEAK_LOGIT
            reg[0, :, cy, cx] = torch.tensor([fx - cx, fy - cy])
            height[0, 0, cy, cx] = z
        label = torch.from_numpy(g.semantics.astype(np.int32))[None]
        return {'occ_label': label, 'heatmap': heatmap, 'reg': reg, 'height': height}

    def input_spec(self) -> tuple[TensorSpec, ...]:
        return ()

    def output_spec(self) -> tuple[TensorSpec, ...]:
        return ()

    def close(self) -> None:
        pass

    def __enter__(self) -> 'GroundTruthBackend':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StampedPipeline(OccupancyPipeline):
    """The real pipeline (preprocess, geometry, post-processing, visibility) around the GT backend.

    Semantics go through the real post-processor. The instance grid is then replaced by the
    ground-truth instances: nearest-centre assignment legitimately splits touching objects of one
    class differently from the box-based ground truth, and this node exists to prove the wiring
    (messages, stamps, matching, metrics), which must then give exactly 100.
    """

    def run(self, frames: Any) -> Any:
        b = self.backend
        assert isinstance(b, GroundTruthBackend)
        b.stamp_ns = frames.stamp_ns
        result = super().run(frames)
        g = b.gt[int(b.stamps[int(np.argmin(np.abs(b.stamps - frames.stamp_ns)))])]
        occ = result.occupancy
        occ.instances = g.instances.astype(np.uint16)
        occ.instance_table = list(g.instance_table)
        shift = int(os.environ.get('OCC_ROS_TEST_GT_SHIFT', '0'))
        if shift:
            occ.semantics = np.roll(occ.semantics, shift, axis=0)
            occ.instances = np.roll(occ.instances, shift, axis=0)
        return result


def _conforms(gt: dict, cfg: Any) -> InferenceBackend:
    return GroundTruthBackend(gt, cfg)    # mypy: the stand-in implements the backend protocol


def factory(params: Any, rig: Any, progress: Any) -> OccupancyPipeline:
    gt = read_ground_truth(os.environ['OCC_ROS_TEST_GT_BAG'])
    cfg = model_config(params.model)
    progress(f'ground-truth backend over {len(gt)} frames (TEST ONLY)')
    return StampedPipeline(cfg, GroundTruthBackend(gt, cfg), rig)


if __name__ == '__main__':
    sys.exit(main(sys.argv, pipeline_factory=factory))
