"""The pipeline without ROS: rendered frame sets of the synthetic world through the shipped `lite`
on the torch backend, scored against the world's own ground truth; its temporal policy on a
multi-frame model (random weights: only the policy is checked there)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from occ_ros.bag.synth import SyntheticSequence
from occ_ros.core.classes import NUM_CLASSES, OCC_INDEX
from occ_ros.core.frames import EgoPose
from occ_ros.metrics import SemanticIoU
from occ_ros.pipeline import OccupancyPipeline


@pytest.fixture(scope='module')
def frames():
    """Two frame sets (0.5 s apart) of world 4242 at the shipped model's training size."""
    seq = SyntheticSequence(4242, seconds=1.0, rate=2.0, image_hw=(450, 800))
    return seq, [seq.frame(0), seq.frame(1)]


@pytest.fixture(scope='module')
def lite(frames):
    seq, _ = frames
    pipe = OccupancyPipeline.from_params('lite', rig=seq.rig, backend='torch', threads=2)
    yield pipe
    pipe.close()


def test_shipped_lite_sees_the_rendered_scene(frames, lite) -> None:
    """The outputs are the grid's, the visible mask is the live cameras' frusta, and the shipped
    weights score far above chance on the world's ground truth (the road at least)."""
    seq, fr = frames
    result = lite.run(fr[0].frame_set(seq.rig))
    occ = result.occupancy
    assert occ.semantics.shape == (200, 200, 16) and occ.semantics.dtype == np.uint8
    assert int(occ.semantics.max()) < NUM_CLASSES and occ.instances.dtype == np.uint16
    assert occ.mask_camera is not None and 0.3 < occ.mask_camera.mean() < 1.0
    miou = SemanticIoU()
    gt = fr[0].gt
    miou.update(occ.semantics, gt.semantics, gt.mask_camera)
    res = miou.compute()
    assert res.iou[OCC_INDEX['driveable_surface']] > 40.0, res.iou
    assert res.miou > 10.0, res.miou
    assert set(result.timings_ms) >= {'geometry', 'preprocess', 'inference', 'postprocess', 'total'}


def test_a_missing_camera_is_blanked_and_reported(frames, lite) -> None:
    seq, fr = frames
    fs = fr[1].frame_set(seq.rig)
    cams = list(fs.frames)
    cams[0] = dataclasses.replace(cams[0], image=None)
    result = lite.run(dataclasses.replace(fs, frames=tuple(cams)))
    assert result.missing == ('CAM_FRONT_LEFT',)
    full = lite.run(fs)
    assert result.occupancy.mask_camera.sum() < full.occupancy.mask_camera.sum()


def test_the_pipeline_owns_the_temporal_policy(frames) -> None:
    """A multi-frame model: the first frame starts the history, a frame set without an ego pose
    drops it ('missing_pose') and pushes nothing, the next posed frame starts again."""
    seq, fr = frames
    pipe = OccupancyPipeline.from_params('pano-4d', rig=seq.rig, backend='torch', threads=2)
    try:
        posed = [f.frame_set(seq.rig) for f in fr]
        first = pipe.run(posed[0])
        assert first.temporal_reset == 'first_frame'
        assert len(pipe.temporal) == 1
        unposed = dataclasses.replace(posed[1], ego_pose=None)
        lost = pipe.run(unposed)
        assert lost.temporal_reset == 'missing_pose' and len(pipe.temporal) == 0
        later = dataclasses.replace(posed[1], stamp_ns=posed[1].stamp_ns + 500_000_000,
                                    ego_pose=EgoPose(posed[1].stamp_ns + 500_000_000, fr[1].ego_pose))
        again = pipe.run(later)
        assert again.temporal_reset not in (None, 'none') and len(pipe.temporal) == 1
    finally:
        pipe.close()

