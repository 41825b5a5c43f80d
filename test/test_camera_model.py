"""The camera model (CameraInfo K, D, distortion model, R, P, binning, ROI) and the rectification of
raw distorted images, checked against OpenCV's own projection and image_geometry's REP-104 rules.

Outside references:
- OpenCV's forward lens models: `cv2.projectPoints` (plumb_bob = k1 k2 p1 p2 k3, rational_polynomial =
  k1 k2 p1 p2 k3 k4 k5 k6) and `cv2.fisheye.projectPoints` (equidistant k1..k4). A 3-D point is
  projected through the distorted lens onto the raw image; after our rectification it must sit
  where the pinhole P projection puts it.
- REP-104 as image_geometry implements it (ros-perception/vision_opencv,
  image_geometry/src/pinhole_camera_model.cpp:178-215 `fromCameraInfo`: ROI offset out of K and P
  first, then ÷ binning; :503-575 `initRectificationMaps`: the table at binned full resolution,
  cropped to ROI ÷ binning minus its offset) and sensor_msgs/msg/CameraInfo.msg (ROI in
  full-resolution pixels; binning 0 = 1; P all zeros = uncalibrated).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 message wheels')

from occ_ros.core.errors import (CalibrationError, ConfigError, DistortionCoefficientsError,  # noqa: E402
                                 DistortionModelError, ImageError, ProjectionMatrixError, RegionOfInterestError)
from occ_ros.geometry.camera_model import CameraModel  # noqa: E402
from occ_ros.geometry.rectify import RemapCache, remap_tables  # noqa: E402
from occ_ros.ros import convert as cv  # noqa: E402
from occ_ros.ros.params import NodeParams  # noqa: E402

HW = (900, 1600)
K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])     # nuScenes CAM_FRONT
P = np.array([[1150.0, 0.0, 805.0], [0.0, 1150.0, 470.0], [0.0, 0.0, 1.0]])      # ≠ K on purpose
LENSES = {
    'plumb_bob': [-0.21, 0.06, 6e-4, -4e-4, -0.008],
    'rational_polynomial': [0.35, -0.02, 5e-4, -3e-4, 0.001, 0.58, 0.03, 0.002],
    'equidistant': [0.03, -0.01, 0.004, -0.001],
}


def _info(D: Any = (0.0,) * 5, model: str = 'plumb_bob', P_: Any = P, K_: np.ndarray = K,
          hw: tuple[int, int] = HW) -> Any:
    return cv.camera_info_msg(K_, hw, 0, 'cam_optical', D=D, distortion_model=model, P=P_)


def _points_for(P_: np.ndarray, hw: tuple[int, int], margin: int = 120,
                offset: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Integer rectified pixels on a grid inside the (offset) window, and 3-D points (optical frame)
    that the pinhole P projects exactly onto them (at depths 4–40 m)."""
    us, vs = np.meshgrid(np.linspace(offset[0] + margin, offset[0] + hw[1] - margin, 7).round(),
                         np.linspace(offset[1] + margin, offset[1] + hw[0] - margin, 5).round())
    uv = np.stack([us.ravel(), vs.ravel()], 1)
    depth = np.linspace(4.0, 40.0, len(uv))
    rays = np.linalg.solve(P_, np.concatenate([uv, np.ones((len(uv), 1))], 1).T).T
    return uv, rays * depth[:, None]


def _project_raw(pts: np.ndarray, K_: np.ndarray, D: list[float], model: str) -> np.ndarray:
    """OpenCV's own projection through the distorted lens (the reference)."""
    zero = np.zeros(3)
    if model == 'equidistant':
        out, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), zero, zero, K_, np.asarray(D, float))
    else:
        out, _ = cv2.projectPoints(pts, zero, zero, K_, np.asarray(D, float))
    return out.reshape(-1, 2)


def _blobs(hw: tuple[int, int], centres: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """An RGB image of Gaussian dots at sub-pixel `centres` (pixel centres at integers)."""
    img = np.zeros(hw, np.float64)
    r = int(4 * sigma) + 1
    for x, y in centres:
        x0, y0 = int(round(x)), int(round(y))
        ys, xs = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
        img[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1] += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    grey = np.clip(img * 250.0, 0, 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _centroids(img: np.ndarray, near: np.ndarray, r: int = 9) -> np.ndarray:
    g = img[..., 0].astype(np.float64)
    out = []
    for x, y in near:
        x0, y0 = int(round(x)), int(round(y))
        patch = g[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
        ys, xs = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
        out.append(((patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()))
    return np.array(out)


# ------------------------------------------------------------------ rectification vs OpenCV's lens models
@pytest.mark.parametrize('model', list(LENSES))
def test_rectified_points_land_on_the_pinhole_projection(model: str) -> None:
    """Dots drawn where OpenCV's distorted projection puts 35 known 3-D points, sent as a real
    sensor_msgs/Image with a real CameraInfo, come out of the node's conversion (frame_from_image,
    rectification 'raw') where the pinhole P projection says — within 0.1 px — and the frame's K is P.
    With the distortion ignored (rectification 'none') they are pixels away: the check can fail."""
    D = LENSES[model]
    uv, pts = _points_for(P, HW)
    raw_uv = _project_raw(pts, K, D, model)
    assert np.abs(raw_uv - uv).max() > 20.0                 # a lens that matters
    msg = cv.rgb_to_image_msg(_blobs(HW, raw_uv), 0, 'cam_optical')
    info = _info(D, model)

    intr = cv.camera_info_to_intrinsics(info, 'CAM_FRONT', 'raw')
    assert intr.remap and intr.model is not None and intr.model.distortion_model == model
    frame = cv.frame_from_image('CAM_FRONT', msg, intr, remap_cache=RemapCache())
    np.testing.assert_allclose(frame.K, P)
    assert frame.image is not None and frame.image.shape == (*HW, 3)
    err = np.linalg.norm(_centroids(frame.image, uv) - uv, axis=1)
    assert err.max() < 0.1, err

    # the float tables themselves: the raw position of each rectified pixel is OpenCV's projection
    mx, my = remap_tables(intr.model, HW, m1type=cv2.CV_32FC1)
    iu, iv = uv[:, 0].astype(int), uv[:, 1].astype(int)
    np.testing.assert_allclose(np.stack([mx[iv, iu], my[iv, iu]], 1), raw_uv, atol=2e-3)

    ignored = cv.camera_info_to_intrinsics(info, 'CAM_FRONT', 'none')
    assert not ignored.remap
    np.testing.assert_allclose(ignored.K, K)
    plain = cv.frame_from_image('CAM_FRONT', msg, ignored)
    assert plain.image is not None
    pinhole_K = (K @ np.concatenate([pts.T / pts[:, 2]], 0)).T[:, :2]     # what K claims
    assert np.linalg.norm(raw_uv - pinhole_K, axis=1).max() > 20.0


def test_binning_and_roi_follow_image_geometry() -> None:
    """ROI 1200×700+100+50, binning 2: hand-computed REP-104 intrinsics of the published 600×350
    image, K' = ((K − ROI offset) ÷ 2) and P' likewise; and our tables, built directly for the ROI,
    equal image_geometry's recipe (binned full table, cropped to ROI ÷ 2, minus the offset)."""
    D = LENSES['plumb_bob']
    info = _info(D, 'plumb_bob')
    info.binning_x = info.binning_y = 2
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 50, 1200, 700
    intr = cv.camera_info_to_intrinsics(info, 'CAM_FRONT')
    assert intr.image_hw == (700, 1200) and intr.published_hw == (350, 600) and intr.binning == (2, 2)
    np.testing.assert_allclose(intr.K, [[1150.0, 0, 705.0], [0, 1150.0, 420.0], [0, 0, 1]])   # P − offset
    assert intr.model is not None
    K_src, K_dst = intr.model.remap_matrices((2, 2))
    np.testing.assert_allclose(K_src, [[633.2, 0, 358.15], [0, 633.2, 220.75], [0, 0, 1]])
    np.testing.assert_allclose(K_dst, [[575.0, 0, 352.5], [0, 575.0, 210.0], [0, 0, 1]])

    ours = remap_tables(intr.model, (350, 600), (2, 2), m1type=cv2.CV_32FC1)
    full = cv2.initUndistortRectifyMap(K * [[.5], [.5], [1]], np.asarray(D), np.eye(3), P * [[.5], [.5], [1]],
                                       (800, 450), cv2.CV_32FC1)
    ref = (full[0][25:375, 50:650] - 50, full[1][25:375, 50:650] - 25)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-3)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-3)

    # end to end: a binned ROI image with dots at OpenCV's projection, rectified by the conversion
    uv_full, pts = _points_for(P, (700, 1200), margin=80, offset=(100, 50))
    raw = _project_raw(pts, K, D, 'plumb_bob')
    raw_pub = (raw - [100, 50]) / 2                       # REP-104: ROI, then binning
    rect_pub = (uv_full - [100, 50]) / 2
    img = _blobs((350, 600), raw_pub, sigma=1.5)
    frame = cv.frame_from_image('CAM_FRONT', cv.rgb_to_image_msg(img, 0, 'x'), intr, remap_cache=RemapCache())
    assert frame.calib_hw == (700, 1200)
    assert frame.image is not None
    err = np.linalg.norm(_centroids(frame.image, rect_pub, r=6) - rect_pub, axis=1)
    assert err.max() < 0.1, err


@pytest.mark.parametrize('transport', ['jpeg', 'raw'])
def test_reduced_images_are_rectified_at_their_own_resolution(transport: str) -> None:
    """A distorted JPEG decoded at 1/4 (the lite model's reduced decode), or a raw Image reduced by
    4 × 4 block means before its remap, is rectified with K/4 and P/4: dots land at the P
    projection ÷ 4, less the 1.5/4 px block-centre shift (reduced pixel i averages source pixels
    4i … 4i+3, as libjpeg's DCT scaling does). Without the reduction flag the raw image is remapped
    at full size."""
    from occ_ros.core.config import ImageGeometry
    D = LENSES['plumb_bob']
    uv, pts = _points_for(P, HW)
    img = _blobs(HW, _project_raw(pts, K, D, 'plumb_bob'), sigma=4.0)
    msg = (cv.rgb_to_compressed_msg(img, 0, 'x', quality=98) if transport == 'jpeg'
           else cv.rgb_to_image_msg(img, 0, 'x'))
    intr = cv.camera_info_to_intrinsics(_info(D), 'CAM_FRONT')
    geom = ImageGeometry(input_hw=(160, 320), src_hw=HW)
    assert cv.reduced_decode_factor(HW, geom) == 4
    frame = cv.frame_from_image('CAM_FRONT', msg, intr, geom, reduced_decode=True, remap_cache=RemapCache())
    assert frame.image is not None and frame.image.shape[:2] == (225, 400) and frame.calib_hw == HW
    expect = (uv - 1.5) / 4
    err = np.linalg.norm(_centroids(frame.image, expect, r=4) - expect, axis=1)
    assert err.max() < 0.15, err
    if transport == 'raw':
        full = cv.frame_from_image('CAM_FRONT', msg, intr, geom, reduced_decode=False, remap_cache=RemapCache())
        assert full.image is not None and full.image.shape[:2] == HW and full.calib_hw is None


# ------------------------------------------------------------------ CameraInfo → model
def test_modes_choose_the_intrinsics_the_network_sees() -> None:
    D = LENSES['plumb_bob']
    rect = cv.camera_info_to_intrinsics(_info(D), 'c', 'image_rect')
    assert not rect.remap
    np.testing.assert_allclose(rect.K, P)                 # image_rect: P as published
    undistorted = cv.camera_info_to_intrinsics(_info(P_=P), 'c', 'raw')
    assert not undistorted.remap                          # D = 0: the raw image is K's pinhole image
    np.testing.assert_allclose(undistorted.K, K)
    no_p = cv.camera_info_to_intrinsics(_info(D, P_=np.zeros((3, 3))), 'c', 'raw')
    assert no_p.remap                                     # P all zeros: rectify to K
    np.testing.assert_allclose(no_p.K, K)
    with pytest.raises(ProjectionMatrixError, match='P is all zeros'):
        cv.camera_info_to_intrinsics(_info(D, P_=np.zeros((3, 3))), 'c', 'image_rect')
    rotated = _info(D)
    c, s = np.cos(0.05), np.sin(0.05)
    rotated.r = [c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c]
    with pytest.raises(ProjectionMatrixError, match='R is not the identity'):
        cv.camera_info_to_intrinsics(rotated, 'c', 'image_rect')
    assert cv.camera_info_to_intrinsics(rotated, 'c', 'raw').remap     # raw: undistorted into frame_id
    empty = _info(D=[], model='')                           # some drivers: no model, no D
    assert not cv.camera_info_to_model(empty).distorted
    with pytest.raises(ConfigError, match='rectification'):
        cv.camera_info_to_intrinsics(_info(D), 'c', 'fisheye')
    with pytest.raises(ConfigError, match='rectification'):
        NodeParams.from_mapping({'rectification': 'fisheye'})
    assert NodeParams.from_mapping({}).rectification == 'raw'


def _with(**fields: Any) -> Any:
    msg = _info(LENSES['plumb_bob'])
    for k, v in fields.items():
        if k.startswith('roi_'):
            setattr(msg.roi, k[4:], v)
        else:
            setattr(msg, k, v)
    return msg


@pytest.mark.parametrize('msg, error, match', [
    (_with(distortion_model='kannala_brandt'), DistortionModelError, 'kannala_brandt'),
    (_with(distortion_model='', d=[0.1, 0.0, 0.0, 0.0, 0.0]), DistortionModelError, "''"),
    (_with(d=[0.1] * 6), DistortionCoefficientsError, '6 values; plumb_bob needs 5 or 4'),
    (_with(distortion_model='equidistant'), DistortionCoefficientsError, 'equidistant needs 4'),
    (_with(distortion_model='rational_polynomial'), DistortionCoefficientsError, 'needs 8'),
    (_with(d=[0.1, float('nan'), 0.0, 0.0, 0.0]), DistortionCoefficientsError, 'non-finite'),
    (_with(p=[1150.0, 0, 805, 0, 0, float('inf'), 470, 0, 0, 0, 1, 0]), ProjectionMatrixError, 'non-finite'),
    (_with(p=[-1150.0, 0, 805, 0, 0, 1150, 470, 0, 0, 0, 1, 0]), ProjectionMatrixError, 'positive'),
    (_with(r=[1.0, 0, 0, 0, 2, 0, 0, 0, 1]), ProjectionMatrixError, 'not a rotation'),
    (_with(roi_x_offset=500, roi_width=1200, roi_height=100), RegionOfInterestError, 'outside'),
    (_with(binning_x=2000), RegionOfInterestError, 'no pixel'),
    (_with(k=[float('nan')] + [0.0] * 8), CalibrationError, 'NaN'),
])
def test_bad_camera_info_is_a_named_error(msg: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cv.camera_info_to_intrinsics(msg, 'CAM_FRONT')


# ------------------------------------------------------------------ the cache
def test_remap_tables_are_cached_per_calibration_and_bounded() -> None:
    cache = RemapCache(max_entries=2)
    a = cv.camera_info_to_model(_info(LENSES['plumb_bob']))
    b = cv.camera_info_to_model(_info([-0.2, 0.06, 6e-4, -4e-4, -0.008]))      # k1 differs
    img = np.zeros((90, 160, 3), np.uint8)
    t1 = cache.tables(a, (90, 160), (10, 10))
    assert cache.tables(a, (90, 160), (10, 10)) is t1 and (cache.hits, cache.misses) == (1, 1)
    assert cache.tables(b, (90, 160), (10, 10)) is not t1          # a recalibration: new tables
    cache.rectify(a, img, (10, 10))
    cache.tables(a, (45, 80), (20, 20))                            # another resolution: a third entry
    assert len(cache) == 2 and cache.misses == 3                   # the least recently used went out
    assert cache.tables(a, (90, 160), (10, 10)) is t1
    assert cache.nbytes == 90 * 160 * 6 + 45 * 80 * 6             # CV_16SC2 + CV_16UC1: 6 bytes a pixel
    assert CameraModel.create(K, LENSES['plumb_bob'], 'plumb_bob', HW).key != b.key
    with pytest.raises(ImageError, match='too large'):
        cache.tables(a, (9000, 16000))                              # refused before any allocation


def test_a_repeated_camera_info_is_not_validated_again() -> None:
    """Drivers send the same CameraInfo with every image: equal fields (another stamp) give the same
    Intrinsics object back; any changed value (D here) a new, validated one."""
    a = _info(LENSES['plumb_bob'])
    first = cv.camera_info_to_intrinsics(a, 'CAM_FRONT')
    b = _info(LENSES['plumb_bob'])
    b.header.stamp.sec = 99
    assert cv.camera_info_to_intrinsics(b, 'CAM_FRONT') is first
    assert cv.camera_info_to_intrinsics(b, 'CAM_FRONT', 'none') is not first
    b.d = [-0.2, 0.06, 6e-4, -4e-4, -0.008]
    changed = cv.camera_info_to_intrinsics(b, 'CAM_FRONT')
    assert changed is not first and changed.model is not None and changed.model.D[0] == -0.2
    b.d = [0.1] * 6
    with pytest.raises(DistortionCoefficientsError):
        cv.camera_info_to_intrinsics(b, 'CAM_FRONT')
