"""Distorted lenses for the synthetic world: the renderer's pinhole views turned into the raw images
of a lens with distortion, as a post-step (`occ-ros synth --distortion MODEL`).

For a camera with intrinsics K and a lens model D (plumb_bob, rational_polynomial, equidistant —
the names of sensor_msgs/distortion_models), the raw image pixel (u, v) sees the ray that OpenCV's
undistortion gives for it (`cv2.undistortPoints` / `cv2.fisheye.undistortPoints`, iterated to
1e-10): the renderer draws a pinhole image with the same focal lengths on a canvas large enough
for every such ray (the barrel lens sees more than the pinhole of the same K), and the raw image
samples it there — bilinear for colour, nearest for depth, classes and instances (depth along the
optical axis is a property of the 3-D point, so it moves unchanged).

The CameraInfo then carries K, D and P = [K | 0]: rectifying with P gives back the pinhole view,
and ignoring D gives the wrong geometry a real lens would. The renderer and the world are
unchanged; the ground truth's camera-visibility mask is the lens's (`project_points` decides
which voxels fall inside the raw image, `occ_ros.bag.groundtruth`).

`project_points` is the forward lens model (camera-frame points → raw pixels), written out from
the formulas OpenCV documents (calib3d "Detailed Description": k1..k6 radial rational, p1 p2
tangential; fisheye module: θ_d = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸) with θ = atan(r)) and tested
against `cv2.projectPoints` / `cv2.fisheye.projectPoints`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import cv2
import numpy as np

from occ_ros.bag.render import CameraView
from occ_ros.core.config import DISTORTION_MODELS
from occ_ros.core.errors import ConfigError
from occ_ros.geometry.camera_model import CameraModel

# One lens per model, of the strength of a wide automotive camera: on the nuScenes rig at 1600×900
# an image corner lies 110–210 px from its pinhole position on the cameras of focal 1266 px and
# 290–900 px on the wide CAM_BACK (focal 800 px).
DISTORTION_PRESETS: dict[str, tuple[float, ...]] = {
    'plumb_bob': (-0.21, 0.06, 6e-4, -4e-4, -0.008),
    'rational_polynomial': (0.35, -0.02, 5e-4, -3e-4, 0.001, 0.58, 0.03, 0.002),
    'equidistant': (0.03, -0.01, 0.004, -0.001),
}
MAX_CANVAS_GROWTH = 2.0          # the pinhole canvas may be at most this many times the image per side
_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)


def undistort_pixels(model: CameraModel, uv: np.ndarray) -> np.ndarray:
    """(N, 2) raw pixels → (N, 2) normalised pinhole coordinates (x/z, y/z) of their rays."""
    pts = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 1, 2)
    if model.distortion_model == 'equidistant':
        out = cv2.fisheye.undistortPoints(pts, model.K, model.D.reshape(1, 4), criteria=_CRITERIA)
    else:
        out = cv2.undistortPoints(pts, model.K, model.D.reshape(1, -1), criteria=_CRITERIA)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def project_points(K: np.ndarray, D: tuple[float, ...], model: str, pts: np.ndarray) -> np.ndarray:
    """(N, 3) points in the optical frame (z > 0) → (N, 2) raw pixels of the lens (K, D, model).

    plumb_bob (k1 k2 p1 p2 [k3]) and rational_polynomial (k1 k2 p1 p2 k3 k4 k5 k6): radial factor
    (1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² + k5 r⁴ + k6 r⁶) and the two tangential terms;
    equidistant (k1..k4): the fisheye angle polynomial. K's skew K[0, 1] is applied as in a pinhole
    (the presets have none). Points far off the axis can fold back inside the image for a real
    polynomial: the caller must check that a pixel undistorts back to its ray.
    """
    if model not in DISTORTION_MODELS:
        raise ConfigError(f'distortion {model!r}: choose one of {", ".join(DISTORTION_MODELS)}')
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    r2 = x * x + y * y
    if model == 'equidistant':
        k = tuple(D) + (0.0,) * (4 - len(D))
        r = np.sqrt(r2)
        th = np.arctan(r)
        t2 = th * th
        th_d = th * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3]))))
        with np.errstate(divide='ignore', invalid='ignore'):
            scale = np.where(r > 1e-12, th_d / r, 1.0)
        xd, yd = x * scale, y * scale
    else:
        k = tuple(D) + (0.0,) * (8 - len(D))
        k1, k2, p1, p2, k3, k4, k5, k6 = k[:8]
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    K = np.asarray(K, dtype=np.float64)
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], axis=1)


@dataclass(frozen=True, eq=False)
class RenderCamera:
    """The pinhole camera the renderer draws for one distorted camera (same pose, larger canvas)."""

    name: str
    K: np.ndarray
    image_hw: tuple[int, int]
    sensor2ego: np.ndarray


class LensDistortion:
    """One camera's distorted lens: `render_camera` for the renderer, `apply` for its views."""

    def __init__(self, cam: Any, model: str, D: Optional[tuple[float, ...]] = None) -> None:
        if model not in DISTORTION_MODELS:
            raise ConfigError(f'distortion {model!r}: choose one of {", ".join(DISTORTION_MODELS)}')
        self.D = tuple(DISTORTION_PRESETS[model] if D is None else D)
        h, w = int(cam.image_hw[0]), int(cam.image_hw[1])
        self.model = CameraModel.create(np.asarray(cam.K, dtype=np.float64), self.D, model, (h, w), who=cam.name)
        K = self.model.K
        us, vs = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        xy = undistort_pixels(self.model, np.stack([us.ravel(), vs.ravel()], 1))
        if not np.all(np.isfinite(xy)):
            raise ConfigError(f'{cam.name}: the {model} lens {self.D} folds over inside the image')
        pu = K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]        # the pinhole pixel of each raw pixel
        pv = K[1, 1] * xy[:, 1] + K[1, 2]
        x0, x1 = math.floor(min(pu.min(), 0.0)) - 2, math.ceil(max(pu.max(), w - 1.0)) + 2
        y0, y1 = math.floor(min(pv.min(), 0.0)) - 2, math.ceil(max(pv.max(), h - 1.0)) + 2
        if x1 - x0 + 1 > MAX_CANVAS_GROWTH * w or y1 - y0 + 1 > MAX_CANVAS_GROWTH * h:
            raise ConfigError(f'{cam.name}: the {model} lens {self.D} sees more than a pinhole canvas of '
                              f'{MAX_CANVAS_GROWTH}× the image can show')
        Kr = np.array(K, dtype=np.float64)
        Kr[0, 2] -= x0
        Kr[1, 2] -= y0
        self.render_camera = RenderCamera(cam.name, Kr, (y1 - y0 + 1, x1 - x0 + 1),
                                          np.asarray(cam.sensor2ego, dtype=np.float64))
        self.map_x = (pu - x0).reshape(h, w).astype(np.float32)
        self.map_y = (pv - y0).reshape(h, w).astype(np.float32)
        self.map1, self.map2 = cv2.convertMaps(self.map_x, self.map_y, cv2.CV_16SC2)

    def _remap(self, a: np.ndarray, interpolation: int) -> np.ndarray:
        if interpolation == cv2.INTER_NEAREST:
            return cv2.remap(a, self.map_x, self.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        return cv2.remap(a, self.map1, self.map2, interpolation, borderMode=cv2.BORDER_REPLICATE)

    def apply(self, view: CameraView) -> CameraView:
        """The pinhole view of `render_camera` → the raw view of the distorted lens."""
        return replace(
            view,
            image=None if view.image is None else self._remap(view.image, cv2.INTER_LINEAR),
            depth=self._remap(view.depth, cv2.INTER_NEAREST),
            classes=None if view.classes is None else self._remap(view.classes, cv2.INTER_NEAREST),
            instances=None if view.instances is None else self._remap(view.instances, cv2.INTER_NEAREST))
