"""The synthetic world's distorted lenses (`occ-ros synth --distortion`), against OpenCV.

Outside references: `cv2.projectPoints` / `cv2.fisheye.projectPoints` (OpenCV's forward lens
models: the ray a raw pixel is drawn from must project back onto that pixel) and OpenCV's own
undistortion tables (`cv2.initUndistortRectifyMap`, `cv2.fisheye.initUndistortRectifyMap`): a
distorted render undistorted by OpenCV is the pinhole render of the same frame.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from occ_ros.bag.lens import DISTORTION_PRESETS, LensDistortion
from occ_ros.bag.synth import SyntheticSequence
from occ_ros.core.errors import ConfigError
from occ_ros.geometry import nuscenes_rig

HW = (180, 320)


@pytest.mark.parametrize('model', list(DISTORTION_PRESETS))
def test_each_raw_pixel_sees_the_ray_opencv_projects_onto_it(model: str) -> None:
    cam = nuscenes_rig(HW).camera('CAM_FRONT')
    lens = LensDistortion(cam, model)
    rc = lens.render_camera
    assert rc.image_hw[0] > HW[0] and rc.image_hw[1] > HW[1]            # the barrel lens sees more
    v, u = np.mgrid[0:HW[0]:7, 0:HW[1]:11]
    pu, pv = lens.map_x[v, u].astype(np.float64), lens.map_y[v, u].astype(np.float64)
    rays = np.linalg.solve(rc.K, np.stack([pu.ravel(), pv.ravel(), np.ones(pu.size)])).T
    zero = np.zeros(3)
    D = np.asarray(DISTORTION_PRESETS[model])
    if model == 'equidistant':
        back, _ = cv2.fisheye.projectPoints(rays.reshape(-1, 1, 3), zero, zero, cam.K, D)
    else:
        back, _ = cv2.projectPoints(rays, zero, zero, cam.K, D)
    np.testing.assert_allclose(back.reshape(-1, 2), np.stack([u.ravel(), v.ravel()], 1), atol=0.02)  # float32 maps


@pytest.fixture(scope='module')
def pinhole_frame() -> Any:
    return SyntheticSequence(5, 0.5, 2.0, nuscenes_rig(HW), HW, ground_truth=False, colour=False,
                             classes=True).frame(0)


@pytest.mark.parametrize('model', ['plumb_bob', 'equidistant'])
def test_distorted_render_undistorted_by_opencv_is_the_pinhole_render(model: str, pinhole_frame: Any) -> None:
    """One frame of the same world, rendered pinhole and through the lens: OpenCV's undistortion of
    the lens's classes (nearest) gives the pinhole classes on ≥ 97 % of the pixels (the rest are
    edges moved by a nearest-pixel rounding); the raw lens image itself agrees far less."""
    rig = nuscenes_rig(HW)
    pin = pinhole_frame
    dist_seq = SyntheticSequence(5, 0.5, 2.0, rig, HW, ground_truth=False, colour=True, classes=True,
                                 distortion=model)
    dist = dist_seq.frame(0)
    assert dist_seq.lenses is not None
    for k in (1, 4):                                       # CAM_FRONT, CAM_BACK
        K = rig.cameras[k].K
        D = np.asarray(DISTORTION_PRESETS[model])
        size = (HW[1], HW[0])
        if model == 'equidistant':
            mx, my = cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_32FC1)
        else:
            mx, my = cv2.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_32FC1)
        raw = dist.views[k].classes
        assert raw is not None and dist.views[k].image is not None and dist.views[k].image.shape == (*HW, 3)
        und = cv2.remap(raw, mx, my, cv2.INTER_NEAREST)
        ref = pin.views[k].classes
        assert ref is not None
        inside = (mx >= 0) & (mx <= HW[1] - 1) & (my >= 0) & (my <= HW[0] - 1)
        agree = float((und == ref)[inside].mean())
        assert agree >= 0.97, agree
        assert float((raw == ref).mean()) < agree - 0.03


def test_a_lens_the_pinhole_canvas_cannot_hold_is_refused() -> None:
    cam = nuscenes_rig(HW).camera('CAM_FRONT')
    with pytest.raises(ConfigError):
        LensDistortion(cam, 'kannala_brandt')
    with pytest.raises(ConfigError, match='canvas|folds'):
        LensDistortion(cam, 'plumb_bob', (-0.9, 0.0, 0.0, 0.0, 0.0))


def test_synth_cli_writes_the_lens_into_camera_info(tmp_path) -> None:
    """`occ-ros synth --distortion equidistant` on one small frame: every CameraInfo in the bag
    carries the model and its D (P = [K | 0]), and the node's CameraInfo conversion, given the
    bag's own (rosbags) message, rectifies that camera to K."""
    import argparse

    from occ_ros.apps import synth as synth_cli
    from occ_ros.bag.reader import BagReader
    from occ_ros.ros.convert import camera_info_to_intrinsics

    out = tmp_path / 'lens_bag'
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    args = parser.parse_args(['--out', str(out), '--seconds', '0.05', '--seed', '3', '--size', '90x160',
                              '--distortion', 'equidistant', '--quiet'])
    assert synth_cli.run(args) == 0
    rig = nuscenes_rig((90, 160))
    with BagReader(out) as r:
        infos = [(raw.topic, m) for raw, m in r.messages([f'/{c}/camera_info' for c in rig.names])]
    assert len(infos) == 6
    for topic, m in infos:
        cam = topic.split('/')[1]
        assert m.distortion_model == 'equidistant'
        np.testing.assert_allclose(m.d, DISTORTION_PRESETS['equidistant'])
        intr = camera_info_to_intrinsics(m, cam)
        assert intr.remap
        np.testing.assert_allclose(intr.K, rig.camera(cam).K)
