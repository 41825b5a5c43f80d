"""The worker's decode step: one synchronised camera set → the pipeline's `CameraFrame`s.

Images are decoded here (`decode_view`), never in the subscription callbacks: in the occupancy
node's worker thread, or — as each image arrives, while the worker is free — on the early-view pool
(`early.py`), whose prepared views the worker then takes. Raw subscriptions hand over the serialized
CDR bytes, read in place (`cdr.py`), then converted (`convert.py`: `frame_from_image`, or
`jpeg_frame` when the pipeline decodes JPEG on its device). A camera that cannot be used — absent
from the set, refused at ingest (`RefusedImage`, counted there), without CameraInfo, or with an
image that does not decode or that the pipeline refuses (`check_frame`) — is blanked (image None,
the rig's K) and added to the set's missing cameras; the rest of the set goes on. Missing
CameraInfo and decode / check failures are shown in the camera's health
(`CameraSetSynchronizer.note_bad`) and logged, throttled; decode / check failures are also counted
by kind (`NodeStats.count_error`).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from occ_ros.core.config import ImageGeometry
from occ_ros.core.errors import CalibrationError, ImageError
from occ_ros.core.frames import CameraFrame
from occ_ros.geometry import Rig
from occ_ros.ros.calibration import CameraCalibration
from occ_ros.core.cdr import compressed_image_from_cdr, image_from_cdr
from occ_ros.ros.convert import Intrinsics, RefusedImage, frame_from_image, jpeg_frame
from occ_ros.ros.early import EarlyViews
from occ_ros.ros.node_stats import NodeStats
from occ_ros.ros.params import NodeParams
from occ_ros.ros.sync import CameraSetSynchronizer, SyncedSet

# how long a set waits, once per camera, for a first CameraInfo that its image overtook
FIRST_CAMERA_INFO_WAIT_S = 0.5

if TYPE_CHECKING:
    from occ_ros.pipeline import FramePipeline


def decode_view(cam: str, msg: Any, intr: Intrinsics, params: NodeParams, pipeline: FramePipeline,
                geometry: ImageGeometry) -> CameraFrame:
    """One camera's received message (serialized CDR bytes, read in place, or a message object)
    with its calibration → the frame for the pipeline, checked (`check_frame`: a hostile size is
    refused before any resize). Raises ImageError / CalibrationError."""
    compressed = params.image_transport == 'compressed'
    if isinstance(msg, (bytes, bytearray, memoryview)):          # read in place (core/cdr.py)
        msg = (compressed_image_from_cdr if compressed else image_from_cdr)(msg)
    decoded = jpeg_frame(cam, msg, intr, params.max_image_pixels) if compressed and pipeline.jpeg_input else None
    if decoded is None:
        decoded = frame_from_image(cam, msg, intr, geometry, params.reduced_decode, params.max_image_pixels)
    pipeline.check_frame(decoded)
    return decoded


def decode_set(s: SyncedSet, params: NodeParams, pipeline: FramePipeline, geometry: ImageGeometry,
               calib: CameraCalibration, rig_base: Rig, sync: CameraSetSynchronizer, stats: NodeStats,
               log: Any, early: Optional[EarlyViews] = None) -> tuple[list[CameraFrame], list[str], float]:
    """The set's frames in `params.camera_names` order, its missing cameras and the time taken (ms).
    A camera whose view `early` prepared as its image arrived (same message, same calibration)
    takes that view, or the error its preparation met; the others are decoded here."""
    t0 = time.perf_counter()
    calib.wait_for_first(s.items, FIRST_CAMERA_INFO_WAIT_S)     # an image may overtake its first CameraInfo
    frames: list[CameraFrame] = []
    missing = list(s.missing)
    for cam in params.camera_names:
        msg = s.items.get(cam)
        intr, problem = calib.lookup(cam)
        frame = None
        if msg is not None and not isinstance(msg, RefusedImage):   # refused: counted at ingest
            if intr is None:
                reason = problem or 'no CameraInfo received'
                sync.note_bad(cam, reason)
                log.warning(f'{cam}: blanked, {reason}', throttle_duration_sec=5.0)
            else:
                try:
                    frame = early.take(cam, msg, intr) if early is not None else None
                    if frame is None:
                        # an error blanks this camera, not the set
                        frame = decode_view(cam, msg, intr, params, pipeline, geometry)
                except (ImageError, CalibrationError) as exc:
                    stats.count_error(type(exc).__name__, str(exc))
                    sync.note_bad(cam, str(exc))
                    log.warning(f'{cam}: blanked: {exc}', throttle_duration_sec=5.0)
        if frame is None:
            if cam not in missing:
                missing.append(cam)
            K = rig_base.camera(cam).K if cam in rig_base.names else np.eye(3)
            frame = CameraFrame(name=cam, stamp_ns=s.stamp_ns, image=None, K=np.asarray(K))
        frames.append(frame)
    return frames, missing, (time.perf_counter() - t0) * 1e3
