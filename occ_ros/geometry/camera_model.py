"""The camera model of a sensor_msgs/CameraInfo, as REP-104 defines it, without ROS.

A `CameraModel` holds everything a CameraInfo says about the images it describes: K, the
distortion model and D, R and P, the calibrated size, binning and ROI. It answers the two
questions the pipeline has:

- which intrinsics describe the image the network will see (`network_K`), for each way of
  feeding the node (`occ_ros.core.config.RECTIFICATION_MODES`);
- for a raw distorted image, the pinhole matrices between which it must be remapped
  (`remap_matrices`), at the resolution the image actually arrived in.

REP-104 conventions (sensor_msgs/msg/CameraInfo.msg; image_geometry's
`PinholeCameraModel::fromCameraInfo` and `initRectificationMaps`):
- K, D, R, P are for the full-resolution image the camera was calibrated at (width × height).
- The ROI is a sub-window in full-resolution (unbinned) pixels; the published image is the ROI
  (or the whole image) reduced by binning_x × binning_y. Binning 0 means 1.
- The intrinsics of the published raw image are K with the ROI offset taken out of the
  principal point, then divided by the binning; those of the rectified image are P's, adjusted
  the same way. P all zeros (an uncalibrated or pinhole-only driver) means "use K".

Rectification in this package undistorts into the camera's own optical frame (R taken as the
identity) with P's intrinsics: the extrinsics the node has are those of the optical frame
(frame_id), so that is the frame the network's geometry must be in. For a monocular camera
R is the identity anyway; for a stereo-rectified pair see `network_K`.

Arrays are validated, copied and made read-only; bad values raise the named
`CalibrationError` subclasses of `occ_ros.core.errors`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from occ_ros.core.config import DISTORTION_MODELS, RECTIFICATION_MODES
from occ_ros.core.errors import (CalibrationError, ConfigError, DistortionCoefficientsError, DistortionModelError,
                                 ProjectionMatrixError, RegionOfInterestError)
from occ_ros.geometry.rig import check_intrinsics

R_IDENTITY_TOL = 1e-6          # |R − I| below this is the identity (a monocular CameraInfo)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class CameraModel:
    """One camera's calibration (REP-104). Build it with `CameraModel.create` (validates).

    K: (3, 3) full-resolution intrinsics. D: (n,) distortion coefficients (n = 0: none).
    distortion_model: a key of DISTORTION_MODELS, or '' with an all-zero D.
    R: (3, 3) rectification rotation. P: (3, 4) projection of the rectified image, or None when
    the CameraInfo's P is all zeros. size_hw: calibrated (height, width). binning: (by, bx) ≥ 1.
    roi: (x_offset, y_offset, width, height) in full-resolution pixels, or None (whole image).
    """

    K: np.ndarray
    D: np.ndarray
    distortion_model: str
    R: np.ndarray
    P: Optional[np.ndarray]
    size_hw: tuple[int, int]
    binning: tuple[int, int] = (1, 1)
    roi: Optional[tuple[int, int, int, int]] = None

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def create(cls, K: Any, D: Any, distortion_model: str, size_hw: tuple[int, int], *,
               R: Any = None, P: Any = None, binning: tuple[int, int] = (1, 1),
               roi: Optional[tuple[int, int, int, int]] = None, who: str = 'camera') -> 'CameraModel':
        """Validate and build. R None / all zeros → identity; P None / all zeros → None (use K);
        binning 0 → 1; a ROI of zero width or height → None (the whole image, REP-104).

        Raises CalibrationError (K, size), DistortionModelError, DistortionCoefficientsError,
        ProjectionMatrixError, RegionOfInterestError, each naming `who`.
        """
        raw_K = np.asarray(K, dtype=np.float64)
        if raw_K.size == 9:
            raw_K = raw_K.reshape(3, 3)               # CameraInfo.k is row-major float64[9]
        if raw_K.size == 9 and np.all(raw_K == 0):
            raise CalibrationError(f'{who}: CameraInfo K is all zeros (uncalibrated camera); publish a '
                                   'calibrated CameraInfo (camera_calibration) for this camera')
        Kc = check_intrinsics(raw_K, f'{who}: CameraInfo K')
        h, w = int(size_hw[0]), int(size_hw[1])
        if h <= 0 or w <= 0:
            raise CalibrationError(f'{who}: CameraInfo size is {w}×{h}; it must give the image size')
        d = np.asarray(list(D), dtype=np.float64).reshape(-1)
        model = str(distortion_model)
        if not np.all(np.isfinite(d)):
            raise DistortionCoefficientsError(f'{who}: CameraInfo D has non-finite values {d.tolist()}')
        if model not in DISTORTION_MODELS and (model or np.any(d != 0)):
            raise DistortionModelError(
                f'{who}: CameraInfo distortion_model {model!r} is not supported; publish one of '
                f'{", ".join(DISTORTION_MODELS)} (sensor_msgs/distortion_models), or rectified images '
                'with rectification:=image_rect')
        if d.size and model in DISTORTION_MODELS and d.size not in DISTORTION_MODELS[model]:
            raise DistortionCoefficientsError(
                f'{who}: CameraInfo D has {d.size} values; {model} needs '
                f'{" or ".join(str(n) for n in DISTORTION_MODELS[model])}')
        Rm = _rotation(R, who)
        Pm = _projection(P, who)
        by, bx = (max(1, int(binning[0])), max(1, int(binning[1])))
        roi_t: Optional[tuple[int, int, int, int]] = None
        if roi is not None and int(roi[2]) > 0 and int(roi[3]) > 0:
            x0, y0, rw, rh = (int(v) for v in roi)
            if x0 < 0 or y0 < 0 or x0 + rw > w or y0 + rh > h:
                raise RegionOfInterestError(f'{who}: CameraInfo ROI {rw}×{rh}+{x0}+{y0} lies outside the '
                                            f'calibrated image {w}×{h}')
            if (x0, y0, rw, rh) != (0, 0, w, h):
                roi_t = (x0, y0, rw, rh)
        vh, vw = (roi_t[3], roi_t[2]) if roi_t else (h, w)
        if vh // by < 1 or vw // bx < 1:
            raise RegionOfInterestError(f'{who}: binning {bx}×{by} leaves no pixel of the {vw}×{vh} view')
        return cls(K=Kc, D=_frozen(d), distortion_model=model, R=_frozen(Rm), P=None if Pm is None else _frozen(Pm),
                   size_hw=(h, w), binning=(by, bx), roi=roi_t)

    # -- what the images are -------------------------------------------------------------------
    @property
    def distorted(self) -> bool:
        """True when D has a non-zero coefficient (the raw image is not a pinhole image)."""
        return bool(np.any(self.D != 0))

    @property
    def view_hw(self) -> tuple[int, int]:
        """(height, width) of the calibrated view at full resolution: the ROI's, else the image's."""
        return (self.roi[3], self.roi[2]) if self.roi else self.size_hw

    @property
    def published_hw(self) -> tuple[int, int]:
        """(height, width) of the images this CameraInfo describes: the view reduced by binning."""
        vh, vw = self.view_hw
        return vh // self.binning[0], vw // self.binning[1]

    def _shift(self, M: np.ndarray) -> np.ndarray:
        out = np.array(M[:3, :3], dtype=np.float64)
        if self.roi:
            out[0, 2] -= self.roi[0]              # the ROI's pixel (0, 0) is the full image's (x0, y0)
            out[1, 2] -= self.roi[1]
        return out

    @property
    def K_view(self) -> np.ndarray:
        """Intrinsics of the raw view (ROI) at full resolution (image_geometry: K_full − ROI offset)."""
        return self._shift(self.K)

    @property
    def P_view(self) -> np.ndarray:
        """(3, 3) intrinsics of the rectified view at full resolution: P[:, :3] − ROI offset, or K_view
        when P is absent."""
        return self._shift(self.P) if self.P is not None else self.K_view

    @property
    def R_is_identity(self) -> bool:
        return bool(np.max(np.abs(self.R - np.eye(3))) <= R_IDENTITY_TOL)

    def network_K(self, mode: str) -> tuple[np.ndarray, bool]:
        """(K of the image the network sees, at full resolution of the view; remap needed?).

        raw: a distorted camera is rectified to P (K when P is absent) — remap; an undistorted one
            is used as it is with K. image_rect: the images are rectified upstream: P as published
            (refused when R is not the identity — that image is rotated away from frame_id, whose
            extrinsics the node uses — or when P is absent although D is not zero). none: K,
            distortion ignored.
        """
        if mode not in RECTIFICATION_MODES:
            raise ConfigError(f'rectification {mode!r} is not one of {", ".join(RECTIFICATION_MODES)}')
        if mode == 'none':
            return self.K_view, False
        if mode == 'raw':
            return (self.P_view, True) if self.distorted else (self.K_view, False)
        if not self.R_is_identity:
            raise ProjectionMatrixError(
                'CameraInfo R is not the identity: image_rect is rotated by R from the optical frame '
                'whose extrinsics the node uses; subscribe to image_raw with rectification:=raw (which '
                'undistorts into the optical frame) or publish TF for the rectified frame and R = I')
        if self.P is None and self.distorted:
            raise ProjectionMatrixError('CameraInfo P is all zeros but D is not: the intrinsics of '
                                        'image_rect are unknown; publish P (REP-104)')
        return self.P_view, False

    def remap_matrices(self, reduction: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """(K_src, K_dst) for an image that is the view reduced by `reduction` = (ry, rx) (binning
        × any reduced decode): the raw image's intrinsics and the rectified image's, both at that
        resolution (image_geometry's K_binned / P_binned, with the ROI offset taken out first)."""
        ry, rx = float(reduction[0]), float(reduction[1])
        if not (ry >= 1.0 and rx >= 1.0):
            raise RegionOfInterestError(f'image reduction {rx}×{ry} must be ≥ 1 on both axes')
        S = np.diag([1.0 / rx, 1.0 / ry, 1.0])
        return S @ self.K_view, S @ self.P_view

    @property
    def key(self) -> str:
        """A digest of every value that shapes the rectification (the remap cache's key)."""
        h = hashlib.sha1()
        for a in (self.K, self.D, self.R, self.P if self.P is not None else np.zeros(0)):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
            h.update(b'|')
        h.update(repr((self.distortion_model, self.size_hw, self.binning, self.roi)).encode())
        return h.hexdigest()

    def describe(self) -> str:
        """One line for logs: the model, D and the view."""
        d = ', '.join(f'{v:.4g}' for v in self.D) if self.D.size else 'none'
        vh, vw = self.view_hw
        extra = f', ROI {vw}×{vh}+{self.roi[0]}+{self.roi[1]}' if self.roi else ''
        if self.binning != (1, 1):
            extra += f', binning {self.binning[1]}×{self.binning[0]}'
        return f'{self.distortion_model or "no model"} D=[{d}]{extra}'


def _field(values: Any, shape: tuple[int, int], name: str, who: str) -> Optional[np.ndarray]:
    """A CameraInfo matrix field as a finite float64 array of `shape`; None when unset or all zeros."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.size != shape[0] * shape[1]:
        raise ProjectionMatrixError(f'{who}: CameraInfo {name} has {arr.size} values, not {shape[0] * shape[1]}')
    arr = arr.reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise ProjectionMatrixError(f'{who}: CameraInfo {name} has non-finite values')
    return None if np.all(arr == 0) else arr


def _rotation(R: Any, who: str) -> np.ndarray:
    arr = _field(R, (3, 3), 'R', who)
    if arr is None:
        return np.eye(3)                       # unset, as many drivers leave it
    if np.max(np.abs(arr @ arr.T - np.eye(3))) > 1e-4 or np.linalg.det(arr) < 0:
        raise ProjectionMatrixError(f'{who}: CameraInfo R is not a rotation: {arr.tolist()}')
    return arr


def _projection(P: Any, who: str) -> Optional[np.ndarray]:
    arr = _field(P, (3, 4), 'P', who)
    if arr is None:
        return None
    try:
        check_intrinsics(arr[:, :3], f'{who}: CameraInfo P[:, :3]')
    except CalibrationError as exc:
        raise ProjectionMatrixError(str(exc)) from None
    if arr[2, 3] != 0:
        raise ProjectionMatrixError(f'{who}: CameraInfo P[2, 3] must be 0, got {arr[2, 3]}')
    return arr
