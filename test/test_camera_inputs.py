"""The node's input path against the official pipeline: whatever the decode path, the network gets
the camera vector, post-rotation / translation and pool tables that the official code computes for
the camera at its calibrated resolution.

Golden values are computed here from the official formulas, not by the project's helpers:
- test-time image augmentation, `projects/mmdet3d_plugin/datasets/pipelines/loading.py`
  (Yzichen/FlashOCC 4084861) l.81-93 `sample_augmentation` (resize = fW / W, resize_dims =
  (int(W·resize), int(H·resize)), crop_h = int(newH) − fH, crop_w = 0) and l.111-146
  `img_transform` (post_rot = resize·I, post_tran = −crop[:2]);
- the 27-value camera vector, `projects/mmdet3d_plugin/models/necks/view_transformer.py` l.449-482
  `get_mlp_input`: fx, fy, cx, cy (the raw, unscaled intrinsics: loading.py l.214), post_rot00,
  post_rot01, post_tran0, post_rot10, post_rot11, post_tran1, bda00, bda01, bda10, bda11, bda22,
  then sensor2ego[:3, :4] row by row.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 message wheels')

from occ_ros.bag.synth import SyntheticSequence  # noqa: E402
from occ_ros.core.frames import CameraFrame, FrameSet  # noqa: E402
from occ_ros.pipeline import OccupancyPipeline  # noqa: E402
from occ_ros.ros import convert as cv  # noqa: E402

SRC_HW = (900, 1600)
STAMP = 1_000_000_000


def official_camera_vector(K: np.ndarray, sensor2ego: np.ndarray, src_hw: tuple[int, int],
                           input_hw: tuple[int, int]) -> np.ndarray:
    """loading.py l.81-93 + l.111-146, view_transformer.py l.449-482 (test time: no flip, no
    rotation, identity BDA)."""
    H, W = src_hw
    fH, fW = input_hw
    resize = float(fW) / float(W)
    newH = int(H * resize)
    crop_h = int((1 - 0.0) * newH) - fH
    post_rot = np.eye(2) * resize
    post_tran = -np.array([0.0, float(crop_h)])
    head = [K[0, 0], K[1, 1], K[0, 2], K[1, 2],
            post_rot[0, 0], post_rot[0, 1], post_tran[0], post_rot[1, 0], post_rot[1, 1], post_tran[1],
            1.0, 0.0, 0.0, 1.0, 1.0]
    return np.concatenate([head, np.asarray(sensor2ego)[:3, :4].reshape(-1)])


@pytest.fixture(scope='module')
def scene():
    """One rendered frame set at the nuScenes size, with its JPEG and CameraInfo messages."""
    seq = SyntheticSequence(4242, seconds=0.5, rate=2.0, image_hw=SRC_HW, ground_truth=False)
    frame = seq.frame(0)
    rig = seq.rig
    jpegs = [cv.rgb_to_compressed_msg(v.image, STAMP, c.name, 'jpeg', quality=90) for c, v in zip(rig, frame.views)]
    infos = [cv.camera_info_to_intrinsics(cv.camera_info_msg(c.K, c.image_hw, STAMP, c.name)) for c in rig]
    return rig, frame, jpegs, infos


def frame_set(frames: list[CameraFrame]) -> FrameSet:
    return FrameSet(STAMP, tuple(frames))


def from_messages(rig, msgs, infos, model_cfg, reduced: bool) -> FrameSet:
    return frame_set([cv.frame_from_image(c.name, m, i, model_cfg.image, reduced_decode=reduced)
                      for c, m, i in zip(rig, msgs, infos)])


@pytest.fixture(scope='module')
def tiny(scene):
    rig = scene[0]
    pipe = OccupancyPipeline.from_params('pano-tiny', rig=rig, backend='torch', threads=2)   # random weights
    yield pipe
    pipe.close()


@pytest.fixture(scope='module')
def lite(scene):
    pipe = OccupancyPipeline.from_params('lite', rig=scene[0], backend='torch', threads=2)  # shipped weights
    yield pipe
    pipe.close()


def test_reduced_jpeg_decode_gives_the_official_camera_vector(scene, tiny) -> None:
    """pano-tiny (256×704) on 1600×900 JPEGs decoded at 1/2: the camera vector is the official one
    for the full-resolution camera (fx = 1272.6 …, resize 0.44, crop −140), not that of a 800×450
    image (the old path gave fx 636.3, resize 0.88 — outside the 0.38–0.55 the model was trained
    on)."""
    rig, _, jpegs, infos = scene
    fs = from_messages(rig, jpegs, infos, tiny.model_cfg, reduced=True)
    assert fs.frames[0].image.shape[:2] == (450, 800)             # really decoded at 1/2
    inputs, missing = tiny.network_inputs(fs)
    assert missing == ()
    got = inputs['cam_vec'][0].double().numpy()
    for i, c in enumerate(rig):
        want = official_camera_vector(np.asarray(c.K), np.asarray(c.sensor2ego), SRC_HW, (256, 704))
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-4, err_msg=c.name)
    assert got[0, 4] == pytest.approx(0.44) and got[0, 9] == pytest.approx(-140.0)


def test_compressed_and_raw_paths_give_identical_network_inputs(scene, tiny) -> None:
    """A JPEG decoded once and the same pixels published as a raw Image: camera vector, pool tables
    and image tensor are identical (≤ 1e-6)."""
    rig, _, jpegs, infos = scene
    via_jpeg = from_messages(rig, jpegs, infos, tiny.model_cfg, reduced=False)
    raws = []
    for c, m in zip(rig, jpegs):
        bgr = cv2.imdecode(np.frombuffer(bytes(m.data), np.uint8), cv2.IMREAD_COLOR)
        raws.append(cv.rgb_to_image_msg(np.ascontiguousarray(bgr[..., ::-1]), STAMP, c.name))
    via_raw = from_messages(rig, raws, infos, tiny.model_cfg, reduced=False)
    a, _ = tiny.network_inputs(via_jpeg)
    b, _ = tiny.network_inputs(via_raw)
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        if a[k].dtype.is_floating_point:
            assert float((a[k] - b[k]).abs().max()) <= 1e-6, k
        else:
            assert torch.equal(a[k], b[k]), k


def test_full_and_reduced_decode_agree_with_the_shipped_model(scene, lite) -> None:
    """Same JPEGs, full vs reduced decode (1/4 for lite's 320-wide input): identical geometry
    inputs, and the shipped lite's labels agree on ≥ 99.5 % of the voxels."""
    rig, _, jpegs, infos = scene
    full = from_messages(rig, jpegs, infos, lite.model_cfg, reduced=False)
    reduced = from_messages(rig, jpegs, infos, lite.model_cfg, reduced=True)
    assert reduced.frames[0].image.shape[:2] == (225, 400)
    a, _ = lite.network_inputs(full)
    b, _ = lite.network_inputs(reduced)
    for k in ('cam_vec', 'pool_depth_idx', 'pool_feat_idx', 'pool_cell_row'):
        assert torch.equal(a[k], b[k]), k
    assert float((a['img'] - b['img']).abs().mean()) < 0.05        # normalised units (σ ≈ 58 grey levels)
    la = lite.run(full).occupancy.semantics
    lb = lite.run(reduced).occupancy.semantics
    assert (la == lb).mean() >= 0.995


def test_binned_image_is_a_reduction_of_the_calibrated_view(scene, tiny) -> None:
    """REP-104 binning 2×2: the published 800×450 image gets the full-resolution camera vector."""
    rig, frame, _, _ = scene
    frames = []
    for c, v in zip(rig, frame.views):
        info = cv.camera_info_msg(c.K, c.image_hw, STAMP, c.name)
        info.binning_x = info.binning_y = 2
        binned = cv2.resize(v.image, (800, 450), interpolation=cv2.INTER_AREA)
        frames.append(cv.frame_from_image(c.name, cv.rgb_to_image_msg(binned, STAMP, c.name),
                                          cv.camera_info_to_intrinsics(info)))
    inputs, _ = tiny.network_inputs(frame_set(frames))
    want = official_camera_vector(np.asarray(rig.cameras[0].K), np.asarray(rig.cameras[0].sensor2ego), SRC_HW,
                                  (256, 704))
    np.testing.assert_allclose(inputs['cam_vec'][0, 0].double().numpy(), want, rtol=1e-6, atol=1e-4)


def test_an_image_that_is_not_a_reduction_of_its_calibration_is_refused(scene, tiny) -> None:
    from occ_ros.core.errors import ImageError
    rig, frame, _, _ = scene
    frames = [CameraFrame(c.name, STAMP, v.image, np.asarray(c.K)) for c, v in zip(rig, frame.views)]
    frames[2] = CameraFrame(rig.cameras[2].name, STAMP, np.zeros((300, 800, 3), np.uint8),
                            np.asarray(rig.cameras[2].K), calib_hw=SRC_HW)   # 800 wide but 300 high
    with pytest.raises(ImageError, match='not a uniform reduction'):
        tiny.network_inputs(frame_set(frames))


def test_a_resolution_the_checkpoint_never_saw_is_reported(scene, tiny) -> None:
    """Official checkpoints saw image resizes of 0.38–0.55 (loading.py l.70-80: 704/1600 +
    U(−0.06, 0.11)). 1600-wide cameras (0.44) pass; cameras calibrated at 800×450 (0.88) are named."""
    rig, frame, jpegs, infos = scene
    tiny.network_inputs(from_messages(rig, jpegs, infos, tiny.model_cfg, reduced=True))
    assert tiny.input_warnings == {}
    small = []
    for c, v in zip(rig, frame.views):
        K = np.diag([0.5, 0.5, 1.0]) @ np.asarray(c.K)
        small.append(CameraFrame(c.name, STAMP, cv2.resize(v.image, (800, 450), interpolation=cv2.INTER_AREA), K))
    tiny.network_inputs(frame_set(small))
    assert set(tiny.input_warnings) == set(rig.names)
    assert '0.880' in tiny.input_warnings[rig.names[0]] and '0.38–0.55' in tiny.input_warnings[rig.names[0]]


def test_a_thin_tall_camera_is_refused_before_the_resize(scene, tiny) -> None:
    """A 8×4000 image whose calibration agrees: refused by name before anything is resized or any
    geometry computed (it would otherwise be scaled to a 704 × 352 000 band)."""
    import tracemalloc

    from occ_ros.core.errors import ImageError
    rig, frame, _, _ = scene
    frames = [CameraFrame(c.name, STAMP, v.image, np.asarray(c.K)) for c, v in zip(rig, frame.views)]
    K = np.array([[10.0, 0, 4.0], [0, 10.0, 2000.0], [0, 0, 1]])
    frames[1] = CameraFrame(rig.cameras[1].name, STAMP, np.zeros((4000, 8, 3), np.uint8), K)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match='too small'):
            tiny.network_inputs(frame_set(frames))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20, peak
