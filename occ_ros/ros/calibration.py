"""The occupancy node's live camera calibration: what it knows of the rig while it runs.

`CameraCalibration` keeps each camera's intrinsics from CameraInfo (or why there are none), the
cameras' optical frame ids (from CameraInfo and image headers), and refreshes the extrinsics and
the model_frame offset from TF (`extrinsics_source:=tf`, `model_frame_offset_source:=tf`, every
`tf_refresh_s`). A changed rig waits as the pending rig until the worker takes it
(`take_pending_rig`, at the start of the next set: `pipeline.set_calibration`). `check` warns once
per calibration change when the rig in use is not the checkpoint's (`geometry/rig_check.py`).

Thread safety: the node's lock (passed in) guards this state, together with the node's
counters; the CameraInfo callback, the TF timer and the worker share it.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import numpy as np

from occ_ros.core.errors import CalibrationError
from occ_ros.geometry.rig_check import RigCheck, with_intrinsics
from occ_ros.ros.convert import Intrinsics, camera_info_to_intrinsics
from occ_ros.ros.diagnostics import NodeSnapshot
from occ_ros.ros.frames import ModelFrame
from occ_ros.ros.params import NodeParams
from occ_ros.ros.tf import rig_from_tf, same_extrinsics

if TYPE_CHECKING:
    from occ_ros.pipeline import FramePipeline


class CameraCalibration:
    """Intrinsics, camera frames, the pending rig and the rig check of one node (see module doc)."""

    def __init__(self, lock: threading.Lock, log: Any) -> None:
        self._lock = lock                          # the node's: guards the dicts and the pending rig
        self._log = log
        self.intrinsics: dict[str, Intrinsics] = {}
        self.problem: dict[str, str] = {}          # camera → why its CameraInfo is unusable
        self.camera_frames: dict[str, str] = {}
        self.pending_rig: Any = None
        self.dirty = True                          # the rig check is due
        self._rig_check = RigCheck()               # warns when the rig is not the checkpoint's
        self._extrinsics_from_rig_file: Optional[frozenset[str]] = None    # last reported, extrinsics_source tf
        self._first = threading.Condition()        # notified at every CameraInfo (wait_for_first)
        self._gave_up: set[str] = set()            # cameras wait_for_first no longer waits for

    def lookup(self, camera: str) -> tuple[Optional[Intrinsics], Optional[str]]:
        """The camera's intrinsics and, when it has none, why."""
        with self._lock:
            return self.intrinsics.get(camera), self.problem.get(camera)

    def wait_for_first(self, cameras: Iterable[str], timeout_s: float) -> list[str]:
        """Wait (the worker) until each of `cameras` has had a CameraInfo — good or refused — at
        most `timeout_s`, and return those that still have none. The images of a set can overtake
        their cameras' first CameraInfos: with `ingest_hold` they are taken on a thread of their
        own, and a camera decoded without calibration would be blanked and reported unusable for
        the next 10 s. Once per camera: one that timed out is never waited for again (its
        CameraInfo may never come), and once calibrated this costs a dictionary look-up."""
        deadline = time.monotonic() + timeout_s
        with self._first:
            while True:
                with self._lock:
                    pending = [c for c in cameras
                               if c not in self.intrinsics and c not in self.problem and c not in self._gave_up]
                left = deadline - time.monotonic()
                if not pending or left <= 0:
                    self._gave_up.update(pending)
                    return pending
                self._first.wait(left)

    def _notify_first(self) -> None:
        with self._first:
            self._first.notify_all()

    def take_pending_rig(self) -> Any:
        """The rig changed since the last call (None if it did not); the worker applies it."""
        with self._lock:
            rig, self.pending_rig = self.pending_rig, None
        return rig

    def note_frame_id(self, camera: str, frame_id: str) -> None:
        """An image header's frame id (CameraInfo's, once received, takes precedence)."""
        if frame_id and camera not in self.camera_frames:
            self.camera_frames[camera] = frame_id

    def on_camera_info(self, camera: str, msg: Any, rectification: str) -> None:
        try:
            intr = camera_info_to_intrinsics(msg, camera, rectification)
        except CalibrationError as exc:
            with self._lock:
                self.problem[camera] = str(exc)
            self._notify_first()
            self._log.warning(str(exc), throttle_duration_sec=5.0)
            return
        with self._lock:
            prev, self.intrinsics[camera] = self.intrinsics.get(camera), intr
            self.dirty |= prev is None or prev.image_hw != intr.image_hw or not np.array_equal(prev.K, intr.K)
            self.problem.pop(camera, None)
            if intr.frame_id:
                self.camera_frames[camera] = intr.frame_id
        self._notify_first()
        if prev is None or prev.summary != intr.summary:
            self._log.info(f'{camera}: {intr.summary}')

    def refresh_from_tf(self, tf_lookup: Callable[[str, str, Optional[int]], np.ndarray], p: NodeParams,
                        frame: ModelFrame, rig_base: Any, pipeline: Optional[FramePipeline],
                        snap: NodeSnapshot) -> None:
        """The model_frame offset and the extrinsics from TF (the `tf_refresh_s` timer)."""
        if p.model_frame_offset_source == 'tf':
            T = frame.offset_from_tf(tf_lookup, p.frame_id, p.model_frame, self._log)
            if T is not None:
                with self._lock:                 # the offset and the rig it implies change together
                    model_rig = frame.set_offset(T)
                    if model_rig is not None:
                        self.pending_rig, self.dirty = model_rig, True
                if model_rig is not None:
                    self._log.info(f'model_frame offset from TF: {frame.T_base_model[:3, 3].round(3).tolist()}')
        if p.extrinsics_source != 'tf':
            return
        with self._lock:
            frames = dict(self.camera_frames)
        try:
            rig, unresolved = rig_from_tf(rig_base, frames, p.frame_id,
                                          lambda target, source: tf_lookup(target, source, None))
        except CalibrationError as exc:
            self._log.warning(str(exc), throttle_duration_sec=10.0)
            return
        snap.extrinsics_unresolved = {k: f'rig file ({v})' for k, v in unresolved.items()}
        current = pipeline.rig if pipeline is not None else None
        with self._lock:                         # as above: the frame's rig and the pending one agree
            model_rig = frame.set_extrinsics(rig)
            changed = current is None or not same_extrinsics(model_rig, current)
            if changed:
                self.pending_rig, self.dirty = model_rig, True
        # report when the transforms change and when a camera's source changes (TF may give the
        # very transform the rig file had: the rig stays, but the log must not keep saying "rig file")
        sources = frozenset(unresolved)
        if changed or sources != self._extrinsics_from_rig_file:
            self._extrinsics_from_rig_file = sources
            self._log.info(f'extrinsics from TF for {len(rig.cameras) - len(unresolved)} cameras '
                           f'({len(unresolved)} from the rig file)')

    def check(self, pipeline: Optional[FramePipeline], rig_base: Any) -> None:
        """Warn once per calibration change when the rig in use is not the checkpoint's (rig_check)."""
        with self._lock:
            self.dirty = False
            rig = self.pending_rig or (pipeline.rig if pipeline is not None else rig_base)
            intrinsics = {c: (i.K, i.image_hw) for c, i in self.intrinsics.items() if c in rig.names}
        text = self._rig_check.update(with_intrinsics(rig, intrinsics))
        if text:
            self._log.warning(text)
        elif text == '':
            self._log.info('the camera rig now agrees with the checkpoint\'s')
