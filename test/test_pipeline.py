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



def test_views_prepared_ahead_give_the_same_outputs(frames, lite) -> None:
    """`prepare_view` (what the node runs on each camera as its image arrives, ros/early.py) gives
    the planes of the official transform — the independent reference of test_preprocess.py, PIL
    bicubic resize, bottom rows, B, G, R normalised — and a set of prepared views runs to exactly
    the outputs of the same set given as images, as does a set mixing both."""
    from test_preprocess import reference

    seq, fr = frames
    fs = fr[0].frame_set(seq.rig)
    prepared = [lite.prepare_view(f) for f in fs.frames]
    for f, p in zip(fs.frames, prepared):
        assert p.image_hw == f.image_hw and p.name == f.name and p.calib_hw == f.calib_hw
        want = reference(f.image, lite.model_cfg.image.input_hw)
        assert np.abs(p.image.planes - want).max() <= 1e-4
    base = lite.run(fs)
    mixed = [p if i % 2 else f for i, (f, p) in enumerate(zip(fs.frames, prepared))]
    for frames_in in (prepared, mixed):
        got = lite.run(dataclasses.replace(fs, frames=tuple(frames_in)))
        assert np.array_equal(got.occupancy.semantics, base.occupancy.semantics)
        assert np.array_equal(got.occupancy.instances, base.occupancy.instances)
    inputs_img, _ = lite.network_inputs(fs)
    inputs_prep, _ = lite.network_inputs(dataclasses.replace(fs, frames=tuple(prepared)))
    assert np.array_equal(inputs_img['img'].numpy(), inputs_prep['img'].numpy())


def test_a_prepared_view_of_another_input_size_is_refused(frames, lite) -> None:
    from occ_ros.core.errors import ImageError
    from occ_ros.core.frames import PreparedImage

    seq, fr = frames
    fs = fr[0].frame_set(seq.rig)
    bad = dataclasses.replace(fs.frames[0], image=PreparedImage(np.zeros((3, 8, 8), np.float32), (450, 800)))
    with pytest.raises(ImageError, match='prepared view must be'):
        lite.run(dataclasses.replace(fs, frames=(bad,) + fs.frames[1:]))
