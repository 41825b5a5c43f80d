"""Rectification of raw distorted camera images: OpenCV remap tables, computed once per calibration.

A raw image of a distorted lens is remapped into a pinhole image of the same size whose
intrinsics are the CameraInfo's P (K when P is absent) — `CameraModel.network_K('raw')` — so the
geometry the network is given is the geometry of the pixels it sees.

Tables: `cv2.initUndistortRectifyMap` (plumb_bob, rational_polynomial) or
`cv2.fisheye.initUndistortRectifyMap` (equidistant), with R = identity (undistort into the optical
frame, see `occ_ros.geometry.camera_model`), fixed-point CV_16SC2 maps as image_geometry uses
(`PinholeCameraModel::initRectificationMaps`), bilinear sampling, black outside the raw image.
They are built for the resolution the image arrives in: K and P are reduced by binning and any
reduced JPEG decode, and the ROI offset is taken out of both principal points, which is the same
table as image_geometry's full binned table cropped to the binned ROI minus its offset
(test_camera_model checks that equality).

`RemapCache` keeps the tables per (calibration digest, image size, reduction), least recently
used first out, at most `max_entries` (default 12 = two calibrations of six cameras; one table
for a 900×1600 image is 8.6 MB). A recalibration builds new tables on its first frame; the old
ones age out.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from occ_ros.core.errors import ImageError
from occ_ros.core.lru import BoundedLRU
from occ_ros.geometry.camera_model import CameraModel

DEFAULT_CACHE_ENTRIES = 12
MAX_TABLE_PIXELS = 40_000_000        # one table is 6 bytes a pixel: ≤ 240 MB, refused before allocating


@dataclass(frozen=True, eq=False)
class RemapTables:
    """cv2.remap tables for one calibration at one image size (map1 CV_16SC2, map2 CV_16UC1)."""

    map1: np.ndarray
    map2: np.ndarray
    image_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return int(self.map1.nbytes + self.map2.nbytes)


def remap_tables(model: CameraModel, image_hw: tuple[int, int], reduction: tuple[float, float] = (1.0, 1.0),
                 m1type: int = cv2.CV_16SC2) -> tuple[np.ndarray, np.ndarray]:
    """The remap tables that turn a raw image of `image_hw` (the view reduced by `reduction` =
    (ry, rx)) into the rectified image of the same size. m1type CV_32FC1 gives float maps (x, y)."""
    K_src, K_dst = model.remap_matrices(reduction)
    size = (int(image_hw[1]), int(image_hw[0]))
    if model.distortion_model == 'equidistant':
        return cv2.fisheye.initUndistortRectifyMap(K_src, model.D.reshape(1, 4), np.eye(3), K_dst, size, m1type)
    return cv2.initUndistortRectifyMap(K_src, model.D.reshape(1, -1), np.eye(3), K_dst, size, m1type)


class RemapCache:
    """Bounded, thread-safe cache of `RemapTables` keyed by calibration values (see module doc)."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self._tables: BoundedLRU[RemapTables] = BoundedLRU(max_entries)
        self.max_entries = self._tables.max_entries
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._tables)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self._tables.values())

    def tables(self, model: CameraModel, image_hw: tuple[int, int],
               reduction: tuple[float, float] = (1.0, 1.0)) -> RemapTables:
        hw = (int(image_hw[0]), int(image_hw[1]))
        if hw[0] * hw[1] > MAX_TABLE_PIXELS:
            raise ImageError(f'a {hw[1]}×{hw[0]} image is too large to rectify (limit {MAX_TABLE_PIXELS} pixels)')
        key = (model.key, hw, (float(reduction[0]), float(reduction[1])))
        found = self._tables.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        m1, m2 = remap_tables(model, hw, reduction)          # outside the lock: tens of ms
        made = RemapTables(m1, m2, hw)
        self._tables.put(key, made)
        return made

    def rectify(self, model: CameraModel, image: np.ndarray, reduction: tuple[float, float] = (1.0, 1.0),
                out: Optional[np.ndarray] = None) -> np.ndarray:
        """The rectified image (same size and dtype). Raises ImageError for a non-image array."""
        if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
            raise ImageError(f'cannot rectify an array of shape {image.shape}')
        t = self.tables(model, (int(image.shape[0]), int(image.shape[1])), reduction)
        return cv2.remap(image, t.map1, t.map2, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)


_DEFAULT: Optional[RemapCache] = None
_DEFAULT_LOCK = threading.Lock()


def default_remap_cache() -> RemapCache:
    """The process-wide cache the ROS glue uses (one per process: every node shares the tables)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = RemapCache()
        return _DEFAULT
