"""Per-camera ego poses of a camera set: every camera mapped through the ego pose at its own
capture time, as the official pipeline does.

Official FlashOcc: `loading.py` `PrepareImageInputs.get_sensor_transforms` reads each camera's
own `ego2global` (the ego pose at that camera's timestamp); `bevdet.py` / `bevdet4d.py`
`prepare_inputs` forms sensor2keyego = inv(ego2global of view 0) · ego2global_cam · sensor2ego_cam.
The BEV (reference) frame is therefore the ego frame at **view 0's capture time**.

`CameraPoseResolver.resolve` gives, for one set: the reference pose (the first present camera in
model order — view 0 unless it is dead — at its capture time) and each present camera's pose at
its own capture time. A camera's capture time is its header stamp minus its
`camera_stamp_offsets_s` entry (drivers that stamp on arrival). A camera whose capture time lies
outside the pose buffer (odometry: no interpolation possible; TF: what the TF buffer refuses)
takes the reference pose and is counted in `fallbacks`. No reference pose: no poses at all (the
pipeline then runs without ego motion, as before).

Odometry usually trails the images: when a set completes, the last camera's capture time may lie
just past the newest odometry sample. Up to MAX_POSE_EXTRAPOLATION_NS past it the pose is
extrapolated at the constant velocity of the last two samples (`PoseBuffer.interpolate`); beyond,
the camera falls back. TF (tf2) does not extrapolate.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from occ_ros.core.frames import CameraFrame, EgoPose
from occ_ros.ros.tf import PoseBuffer

PoseLookup = Callable[[int], Optional[np.ndarray]]       # stamp_ns → T_odom_base or None
MAX_POSE_EXTRAPOLATION_NS = 50_000_000    # one nuScenes firing spread; 2.5 m at 50 m/s if the speed changed


TfLookup = Callable[[str, str, Optional[int]], np.ndarray]     # (target, source, stamp_ns) → T


def pose_lookups(params: Any, odom: PoseBuffer, tf_lookup: Optional[TfLookup]) -> tuple[PoseLookup, PoseLookup]:
    """(set lookup, camera lookup) of the node's ego-pose source (`params.odom_source`).

    odometry: the set lookup interpolates or holds the nearest sample within the buffer's tolerance;
    the camera lookup interpolates inside the buffer or extrapolates up to MAX_POSE_EXTRAPOLATION_NS.
    tf: `odom_frame → frame_id` at the stamp for both (a failed lookup → None). none: no poses.
    """
    if params.odom_source == 'odometry':
        return odom.lookup, lambda t: odom.interpolate(t, MAX_POSE_EXTRAPOLATION_NS)
    if params.odom_source == 'tf' and tf_lookup is not None:
        def from_tf(stamp_ns: int) -> Optional[np.ndarray]:
            try:
                return tf_lookup(params.odom_frame, params.frame_id, stamp_ns)
            except Exception:             # tf2 exceptions, TransformUnavailable
                return None
        return from_tf, from_tf
    return (lambda t: None), (lambda t: None)


@dataclass(frozen=True)
class SetPoses:
    """reference: ego pose at view 0's capture time (None: unknown). cameras: camera → its own
    capture-time pose. fallbacks: present cameras outside the pose buffer (they use the reference)."""

    reference: Optional[EgoPose]
    cameras: Mapping[str, EgoPose] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()

    def apply(self, frames: Sequence[CameraFrame]) -> tuple[CameraFrame, ...]:
        """`frames` with their capture-time poses attached (`CameraFrame.ego_pose`)."""
        return tuple(dataclasses.replace(f, ego_pose=self.cameras[f.name]) if f.name in self.cameras else f
                     for f in frames)


class CameraPoseResolver:
    """Capture-time ego poses for camera sets (see module doc).

    cameras: model (view) order. offsets_ns: camera → ns its stamps lie after its exposure.
    enabled: False → only the reference pose (one pose per set, the node's behaviour before).
    Counters: `sets`, `camera_poses` (cameras given their own pose), `fallbacks`.
    """

    def __init__(self, cameras: Sequence[str], offsets_ns: Optional[Mapping[str, int]] = None,
                 enabled: bool = True) -> None:
        self.cameras = tuple(cameras)
        self.offsets_ns = {c: int((offsets_ns or {}).get(c, 0)) for c in self.cameras}
        self.enabled = bool(enabled)
        self.sets = 0
        self.camera_poses = 0
        self.fallbacks = 0

    def capture_ns(self, camera: str, stamp_ns: int) -> int:
        return int(stamp_ns) - self.offsets_ns.get(camera, 0)

    def resolve(self, stamps_ns: Mapping[str, int], reference: PoseLookup,
                camera: Optional[PoseLookup] = None) -> SetPoses:
        """stamps_ns: header stamp of each present camera. camera(t): the strict lookup (interpolation,
        short extrapolation; default `reference`), used for every camera, the reference first;
        reference(t): the set's lookup (may hold the nearest sample), used when the strict one has no
        pose for the reference camera."""
        self.sets += 1
        present = [c for c in self.cameras if c in stamps_ns]
        if not present:
            return SetPoses(None)
        ref_cam = present[0]
        t_ref = self.capture_ns(ref_cam, stamps_ns[ref_cam])
        strict = camera or reference
        T_ref = strict(t_ref)                  # interpolated / extrapolated like the other cameras,
        if T_ref is None:                      # else what the set lookup gives (it may hold a sample)
            T_ref = reference(t_ref)
        if T_ref is None:
            return SetPoses(None)
        ref = EgoPose(stamp_ns=t_ref, matrix=T_ref)
        if not self.enabled:
            return SetPoses(ref)
        poses: dict[str, EgoPose] = {ref_cam: ref}
        missed = []
        for cam in present[1:]:
            t = self.capture_ns(cam, stamps_ns[cam])
            T = T_ref if t == t_ref else strict(t)
            if T is None:
                missed.append(cam)
            else:
                poses[cam] = EgoPose(stamp_ns=t, matrix=T)
        self.camera_poses += len(poses) - 1
        self.fallbacks += len(missed)
        return SetPoses(ref, poses, tuple(missed))
