"""What flows from the ROS glue into the pure pipeline: camera frames, ego poses, frame sets.

These types hold plain numpy data. `occ_ros.ros.convert` makes them from messages; the
synthetic world, the trainer and the tests make them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np


@dataclass(frozen=True)
class JpegImage:
    """A camera image still JPEG-compressed: `data` the file's bytes (uint8 array, possibly a view
    of the received message), `hw` its (height, width) from the header. A device-side
    preprocessor (`occ_ros.preprocess.DeviceImagePreprocessor`) decodes it on the device."""

    data: np.ndarray
    hw: tuple[int, int]


@dataclass(frozen=True)
class PreparedImage:
    """A camera image already turned into its network view: `planes` the (3, H_in, W_in) float32
    input planes exactly as the preprocessing makes them from the image (resized, cropped,
    normalised; `occ_ros.preprocess.ImagePreprocessor.prepare`), `hw` the (height, width) of the
    image they were made from (what size checks and the geometry read). The node prepares a
    camera's view as soon as its image arrives, while the set's other images are still on their
    way (`occ_ros.ros.early`); the pipeline then only copies the planes into the batch."""

    planes: np.ndarray
    hw: tuple[int, int]


@dataclass(frozen=True)
class CameraFrame:
    """One camera image at one instant.

    image: (H, W, 3) uint8 in **RGB** order, or None when the camera is missing (the pipeline
    blanks that view and marks its frustum unknown), or a `JpegImage` for a pipeline that decodes
    on its device (`jpeg_input`), or a `PreparedImage` (the view already preprocessed).
    K: (3, 3) float64 intrinsics at `calib_hw`, the calibrated resolution.
    calib_hw: (height, width) the calibration (K) refers to. None: the image's own size. When the
        image is a uniform reduction of the calibrated view (a JPEG decoded at 1/2, 1/4 or 1/8,
        binning, an image resized upstream), the network still gets the camera vector, the
        post-rotation and the pool tables of the calibrated resolution — what the official
        pipeline computes for that camera — and the reduction becomes part of the resize.
    ego_pose: the ego pose (T_odom_base) at this camera's capture time — the official per-camera
        `ego2global` (loading.py `get_sensor_transforms`). None: the set's pose (a rig whose cameras
        fire together, or no pose known at this camera's stamp).
    """

    name: str
    stamp_ns: int
    image: Optional[Union[np.ndarray, JpegImage, PreparedImage]]
    K: np.ndarray
    calib_hw: Optional[tuple[int, int]] = None
    ego_pose: Optional['EgoPose'] = None

    @property
    def image_hw(self) -> Optional[tuple[int, int]]:
        if isinstance(self.image, (JpegImage, PreparedImage)):
            return self.image.hw
        return None if self.image is None else (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def source_hw(self) -> Optional[tuple[int, int]]:
        """The size K refers to: `calib_hw`, else the image's own size (None without either)."""
        return self.calib_hw if self.calib_hw is not None else self.image_hw


@dataclass(frozen=True)
class EgoPose:
    """Pose of the ego frame (base_link) in the odometry frame at `stamp_ns`: T_odom_base (4, 4)."""

    stamp_ns: int
    matrix: np.ndarray


@dataclass(frozen=True)
class FrameSet:
    """A synchronised set of camera frames (in rig order) with the ego pose at the set's stamp.

    `ego_pose` is the reference of the BEV frame: the ego pose at view 0's capture time (the
    official `prepare_inputs` key ego, `ego2globals[:, 0]`), which is also the pose of view 0's
    frame when it carries one. Frames may carry their own capture-time poses (`CameraFrame.ego_pose`).
    """

    stamp_ns: int
    frames: tuple[CameraFrame, ...]
    ego_pose: Optional[EgoPose] = None
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.frames)
