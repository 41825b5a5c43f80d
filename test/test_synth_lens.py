"""The synthetic world's distorted lenses (`occ-ros synth --distortion`), against OpenCV.

Outside references: `cv2.projectPoints` / `cv2.fisheye.projectPoints` (OpenCV's forward lens
models: the ray a raw pixel is drawn from must project back onto that pixel) and OpenCV's own
undistortion tables (`cv2.initUndistortRectifyMap`, `cv2.fisheye.initUndistortRectifyMap`): a
distorted render undistorted by OpenCV is the pinhole render of the same frame. The ground truth's
camera mask of a distorted lens: the voxels OpenCV projects inside the raw image (and whose pixel
OpenCV undistorts back onto their own ray).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from occ_ros.bag.groundtruth import GroundTruthMaker
from occ_ros.bag.lens import DISTORTION_PRESETS, LensDistortion, project_points
from occ_ros.bag.render import NEAR
from occ_ros.bag.synth import SyntheticSequence
from occ_ros.bag.world import World
from occ_ros.core.config import AxisSpec, GridSpec
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


def _opencv_project(K: np.ndarray, model: str, pts: np.ndarray) -> np.ndarray:
    zero, D = np.zeros(3), np.asarray(DISTORTION_PRESETS[model], np.float64)
    if model == 'equidistant':
        uv, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), zero, zero, K, D)
    else:
        uv, _ = cv2.projectPoints(pts.reshape(-1, 3), zero, zero, K, D)
    return uv.reshape(-1, 2)


def _opencv_undistort(K: np.ndarray, model: str, uv: np.ndarray) -> np.ndarray:
    D = np.asarray(DISTORTION_PRESETS[model], np.float64)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    f = cv2.fisheye.undistortPoints if model == 'equidistant' else cv2.undistortPoints
    return f(uv.reshape(-1, 1, 2), K, D, criteria=crit).reshape(-1, 2)


@pytest.mark.parametrize('model', list(DISTORTION_PRESETS))
def test_project_points_is_opencvs_forward_lens_model(model: str) -> None:
    """`project_points` against `cv2.projectPoints` / `cv2.fisheye.projectPoints` (OpenCV
    modules/calib3d/src/calibration.cpp cvProjectPoints2Internal, fisheye.cpp projectPoints) on
    rays up to 68° off the axis (past where the plumb_bob polynomial folds over)."""
    K = nuscenes_rig(HW).camera('CAM_BACK').K
    rng = np.random.default_rng(7)
    pts = np.column_stack([rng.uniform(-2.5, 2.5, 500), rng.uniform(-2.5, 2.5, 500), np.ones(500)])
    pts *= rng.uniform(0.5, 40.0, (500, 1))
    want = _opencv_project(K, model, pts)
    np.testing.assert_allclose(project_points(K, DISTORTION_PRESETS[model], model, pts), want, rtol=1e-9, atol=1e-6)


COARSE = GridSpec(x=AxisSpec(-40.0, 40.0, 0.8, 'x'), y=AxisSpec(-40.0, 40.0, 0.8, 'y'), z=AxisSpec(-1.0, 5.4, 0.8, 'z'))
MASK_W = 64


@pytest.fixture(scope='module')
def coarse_world() -> World:
    return World(3, duration=1.0)


@pytest.mark.parametrize('model', list(DISTORTION_PRESETS))
def test_distorted_ground_truth_mask_is_the_lens_visible_region(model: str, coarse_world: World) -> None:
    """Which voxels a distorted camera can see, independently with OpenCV: the centres that
    `cv2.projectPoints` (`cv2.fisheye.projectPoints`) puts inside the raw image (pixel rounded at the
    mask's resolution) and whose pixel `cv2.undistortPoints` maps back onto the centre's own ray —
    the pixel shows that ray, not another one folded onto it (the plumb_bob polynomial folds past
    60° off the axis, the rational one on the wide CAM_BACK). The mask's in-view centre samples are
    exactly that set, per camera. On a frame, the lens's mask holds the pinhole mask (a barrel lens
    sees more; the depth is sampled on the pinhole image's pixel grid extended, so ≤ 0.1 % differ)
    plus ≥ 0.5 % more voxels that only the raw image's edges see."""
    rig = nuscenes_rig(HW)
    lenses = [LensDistortion(c, model) for c in rig]
    maker = GroundTruthMaker(coarse_world, list(rig), COARSE, mask_width=MASK_W, lenses=lenses)
    axes = [a.lo + (np.arange(n) + 0.5) * a.step for a, n in zip((COARSE.x, COARSE.y, COARSE.z), COARSE.shape)]
    centres = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
    mh = round(HW[0] * MASK_W / HW[1])
    folded = 0
    for cam, (_, vox, _, _, centre) in zip(rig, maker._vis):
        T = np.linalg.inv(cam.sensor2ego)
        p = centres @ T[:3, :3].T + T[:3, 3]
        ahead = np.flatnonzero(p[:, 2] > NEAR)
        uv = _opencv_project(cam.K, model, p[ahead])
        u, v = np.round(uv[:, 0] * MASK_W / HW[1]), np.round(uv[:, 1] * mh / HW[0])
        inside = (u >= 0) & (u < MASK_W) & (v >= 0) & (v < mh)
        ray = p[ahead, :2] / p[ahead, 2:]
        back = _opencv_undistort(cam.K, model, uv[inside])
        own = np.linalg.norm(back - ray[inside], axis=1) < 1e-5
        folded += int((~own).sum())
        want = ahead[np.flatnonzero(inside)[own]]
        got = np.unique(vox[centre > 0])
        np.testing.assert_array_equal(got, np.sort(want), err_msg=cam.name)
    if model == 'plumb_bob':
        assert folded > 0                        # the fold-over is real and excluded

    lens_gt = maker(0.3)
    pin_gt = GroundTruthMaker(coarse_world, list(rig), COARSE, mask_width=MASK_W)(0.3)
    lm, pm = np.asarray(lens_gt.mask_camera), np.asarray(pin_gt.mask_camera)
    assert (pm & ~lm).sum() <= 0.001 * pm.sum(), ((pm & ~lm).sum(), pm.sum())
    assert (lm & ~pm).sum() >= 0.005 * pm.sum(), ((lm & ~pm).sum(), pm.sum())
    np.testing.assert_array_equal(lens_gt.semantics, pin_gt.semantics)   # the lens changes the mask only
