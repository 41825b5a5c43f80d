"""Named errors. Each says what went wrong and what to do about it."""
from __future__ import annotations


class OccRosError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(OccRosError, ValueError):
    """A configuration or parameter value is invalid."""


class CalibrationError(OccRosError, ValueError):
    """Camera calibration is missing, degenerate or exceeds the model's declared bounds."""


class DistortionModelError(CalibrationError):
    """A CameraInfo names a distortion model this package cannot undo (not one of
    `occ_ros.core.config.DISTORTION_MODELS`)."""


class DistortionCoefficientsError(CalibrationError):
    """A CameraInfo's D has the wrong length for its distortion model, or non-finite values."""


class ProjectionMatrixError(CalibrationError):
    """A CameraInfo's P or R is malformed: wrong size, non-finite, non-positive focal lengths, or a
    rectification R that the chosen input cannot honour."""


class RegionOfInterestError(CalibrationError):
    """A CameraInfo's ROI does not lie inside the calibrated image, or its binning leaves no pixel."""


class CheckpointError(OccRosError):
    """A checkpoint file cannot be read safely or does not fit the model."""


class ImageError(OccRosError, ValueError):
    """An input image has an unsupported encoding, size or layout."""


class BackendError(OccRosError, RuntimeError):
    """An inference backend cannot be created or run."""


class EngineCacheError(BackendError):
    """A cached TensorRT engine is missing, foreign, stale or corrupt."""


class BagError(OccRosError):
    """A rosbag2 file is missing, corrupt, truncated or holds unknown message types."""


class InputError(OccRosError, ValueError):
    """A tensor handed to a pipeline stage has the wrong shape, dtype or values for its configuration."""


class EvaluationError(OccRosError, ValueError):
    """Metric inputs disagree (shapes, label ranges, ray origins) or predictions and ground truth do not pair up."""


class OccFileError(EvaluationError):
    """An Occ3D-format .npz (ground-truth labels or a prediction) is missing, unreadable, lacks a key or has the
    wrong shape, dtype or values."""
