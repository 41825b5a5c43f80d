"""Transforms without a ROS graph: pose buffers with interpolation, a small TF tree, rig-from-TF.

`PoseBuffer`    time-ordered 4×4 poses (odometry, or one dynamic TF link) with slerp/lerp lookup
                at a stamp, a tolerance for holding the nearest sample, and a reset when time
                jumps backwards (bag loop).
`TransformTree` parent/child links fed from /tf and /tf_static messages (or anything else),
                `lookup(target, source, stamp)` through the common ancestor. The node uses it
                when tf2_ros is not importable (it is not on PyPI); with tf2_ros it uses
                tf2_ros.Buffer instead through the same `lookup` signature.
`rig_with_extrinsics` / `rig_from_tf`   replace the rig file's camera→base_link extrinsics with
                the ones TF gives, camera by camera.

Conventions: T_a_b (4, 4) maps points in frame b to frame a; a TF message with
header.frame_id = a and child_frame_id = b carries T_a_b. All maths is float64 numpy.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from occ_ros.core.errors import CalibrationError
from occ_ros.geometry import Rig


class TransformUnavailable(CalibrationError, LookupError):
    """A transform is not (yet) known at the requested time."""


# --------------------------------------------------------------------------------------------
# rotation helpers
# --------------------------------------------------------------------------------------------

def _quat_wxyz(R: np.ndarray) -> np.ndarray:
    from occ_ros.ros.convert import matrix_to_quaternion_xyzw
    x, y, z, w = matrix_to_quaternion_xyzw(R)
    return np.array([w, x, y, z])


def _quat_to_R(q: np.ndarray) -> np.ndarray:
    from occ_ros.ros.convert import quaternion_xyzw_to_matrix
    w, x, y, z = q
    return quaternion_xyzw_to_matrix(x, y, z, w)


def slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (w, x, y, z), shortest path, a in [0, 1]."""
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9995:                       # nearly parallel: normalised lerp is exact enough
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, d))
    s = math.sin(theta)
    return (math.sin((1 - a) * theta) * q0 + math.sin(a * theta) * q1) / s


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    """Pose a of the way from T0 to T1 (translation lerp, rotation slerp)."""
    T = np.eye(4)
    T[:3, :3] = _quat_to_R(slerp(_quat_wxyz(T0[:3, :3]), _quat_wxyz(T1[:3, :3]), a))
    T[:3, 3] = (1 - a) * T0[:3, 3] + a * T1[:3, 3]
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4×4 transform."""
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


# --------------------------------------------------------------------------------------------
# pose buffer
# --------------------------------------------------------------------------------------------

class PoseBuffer:
    """Time-ordered rigid poses with interpolated lookup.

    add(stamp_ns, T): a stamp older than the newest by at most `reorder_window_ns` (two sources,
    transport jitter) is inserted in its place and counted in `reordered`; one older than that
    means time jumped back (bag loop, restarted source): the buffer is cleared and `resets`
    counted. A duplicate stamp replaces the stored pose. At most `maxlen` samples are kept
    (bounded memory).

    lookup(stamp_ns): between two samples at most `max_interp_gap_ns` apart → interpolated;
    otherwise the nearest sample if it is within `tolerance_ns`; otherwise None.
    """

    def __init__(self, maxlen: int = 512, tolerance_ns: int = 100_000_000,
                 max_interp_gap_ns: int = 500_000_000, reorder_window_ns: int = 200_000_000) -> None:
        self.maxlen = int(maxlen)
        self.reorder_window_ns = int(reorder_window_ns)
        self.reordered = 0
        self.tolerance_ns = int(tolerance_ns)
        self.max_interp_gap_ns = int(max_interp_gap_ns)
        self._stamps: deque[int] = deque(maxlen=self.maxlen)
        self._poses: deque[np.ndarray] = deque(maxlen=self.maxlen)
        self.resets = 0

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_ns(self) -> Optional[int]:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._poses.clear()

    def add(self, stamp_ns: int, T: np.ndarray) -> bool:
        """Store a pose; returns True if the buffer was reset because time went backwards."""
        stamp_ns = int(stamp_ns)
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise CalibrationError(f'pose at {stamp_ns} ns must be a finite 4×4 matrix')
        reset = False
        if self._stamps:
            last = self._stamps[-1]
            if stamp_ns == last:
                self._poses[-1] = T
                return False
            if stamp_ns < last:
                if last - stamp_ns <= self.reorder_window_ns and stamp_ns > self._stamps[0]:
                    i = bisect.bisect_left(self._stamps, stamp_ns)
                    if self._stamps[i] == stamp_ns:
                        self._poses[i] = T
                    else:
                        if len(self._stamps) == self.maxlen:         # a full deque refuses insert()
                            self._stamps.popleft()
                            self._poses.popleft()
                            i -= 1
                        self._stamps.insert(i, stamp_ns)
                        self._poses.insert(i, T)
                        self.reordered += 1
                    return False
                self.clear()
                self.resets += 1
                reset = True
        self._stamps.append(stamp_ns)
        self._poses.append(T)
        return reset

    def interpolate(self, stamp_ns: int, extrapolate_ns: int = 0) -> Optional[np.ndarray]:
        """Pose at `stamp_ns` inside the buffer: a stored sample or the interpolation of two at most
        `max_interp_gap_ns` apart. Up to `extrapolate_ns` past the newest sample: extrapolated at the
        constant velocity of the last two samples (slerp/lerp beyond 1). None otherwise (no hold)."""
        stamps = self._stamps
        t = int(stamp_ns)
        i = bisect.bisect_left(stamps, t)
        if i < len(stamps) and stamps[i] == t:
            return self._poses[i].copy()
        if 0 < i < len(stamps) and stamps[i] - stamps[i - 1] <= self.max_interp_gap_ns:
            t0, t1 = stamps[i - 1], stamps[i]
            return interpolate_pose(self._poses[i - 1], self._poses[i], (t - t0) / (t1 - t0))
        if i == len(stamps) >= 2 and t - stamps[-1] <= extrapolate_ns:
            t0, t1 = stamps[-2], stamps[-1]
            if t1 - t0 <= self.max_interp_gap_ns:
                return interpolate_pose(self._poses[-2], self._poses[-1], (t - t0) / (t1 - t0))
        return None

    def lookup(self, stamp_ns: int) -> Optional[np.ndarray]:
        """Pose at `stamp_ns` (see class doc) or None: a sample or an interpolation (`interpolate`),
        else the nearest sample within `tolerance_ns`."""
        T = self.interpolate(stamp_ns)
        if T is not None:
            return T
        stamps = self._stamps
        t = int(stamp_ns)
        i = bisect.bisect_left(stamps, t)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(stamps) and abs(stamps[j] - t) <= self.tolerance_ns:
                if best is None or abs(stamps[j] - t) < abs(stamps[best] - t):
                    best = j
        return None if best is None else self._poses[best].copy()


# --------------------------------------------------------------------------------------------
# transform tree
# --------------------------------------------------------------------------------------------

@dataclass
class _Link:
    parent: str
    static: Optional[np.ndarray]
    dynamic: Optional[PoseBuffer]


class TransformTree:
    """A TF tree: each child frame has one parent; links are static or time-varying.

    `set_transform(parent, child, T_parent_child, stamp_ns, static)`; `lookup(target, source,
    stamp_ns=None)` → T_target_source (maps source-frame points into the target frame), at the
    latest common time when stamp_ns is None. Raises TransformUnavailable.
    """

    def __init__(self, cache_len: int = 256, tolerance_ns: int = 100_000_000) -> None:
        self.cache_len = cache_len
        self.tolerance_ns = tolerance_ns
        self._links: dict[str, _Link] = {}

    @property
    def frames(self) -> set[str]:
        return set(self._links) | {lk.parent for lk in self._links.values()}

    def set_transform(self, parent: str, child: str, T: np.ndarray, stamp_ns: int = 0,
                      static: bool = False) -> None:
        parent, child = parent.lstrip('/'), child.lstrip('/')
        if not parent or not child or parent == child:
            raise CalibrationError(f'invalid TF link {parent!r} → {child!r}')
        link = self._links.get(child)
        if link is None or link.parent != parent or (link.static is not None) != static:
            link = _Link(parent=parent, static=None,
                         dynamic=None if static else PoseBuffer(self.cache_len, self.tolerance_ns))
            self._links[child] = link
        if static:
            link.static = np.array(T, dtype=np.float64)
        else:
            assert link.dynamic is not None
            link.dynamic.add(stamp_ns, T)

    def add_message(self, msg: object, static: bool = False) -> None:
        """Feed a tf2_msgs/TFMessage (or an iterable of TransformStamped)."""
        from occ_ros.ros.convert import stamp_to_ns, transform_to_matrix
        transforms: Iterable[Any] = msg.transforms if hasattr(msg, 'transforms') else msg  # type: ignore[assignment]
        for t in transforms:
            self.set_transform(t.header.frame_id, t.child_frame_id, transform_to_matrix(t),
                               stamp_to_ns(t.header.stamp), static=static)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        seen = {frame}
        while chain[-1] in self._links:
            parent = self._links[chain[-1]].parent
            if parent in seen:
                raise TransformUnavailable(f'TF loop through frame {parent!r}')
            chain.append(parent)
            seen.add(parent)
        return chain

    def _link_T(self, child: str, stamp_ns: Optional[int]) -> np.ndarray:
        link = self._links[child]
        if link.static is not None:
            return link.static
        buf = link.dynamic
        assert buf is not None
        t = buf.newest_ns if stamp_ns is None else stamp_ns
        T = None if t is None else buf.lookup(t)
        if T is None:
            raise TransformUnavailable(
                f'no transform {link.parent!r} → {child!r} at t={stamp_ns} ns '
                f'(newest {buf.newest_ns}, tolerance {self.tolerance_ns / 1e9:.3f} s)')
        return T

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> np.ndarray:
        target, source = target.lstrip('/'), source.lstrip('/')
        if target == source:
            return np.eye(4)
        up_s, up_t = self._chain(source), self._chain(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise TransformUnavailable(f'frames {source!r} and {target!r} are not connected in TF '
                                       f'(known frames: {sorted(self.frames)})')
        T_common_source = np.eye(4)
        for f in up_s[:up_s.index(common)]:            # source → … → common
            T_common_source = self._link_T(f, stamp_ns) @ T_common_source
        T_common_target = np.eye(4)
        for f in up_t[:up_t.index(common)]:
            T_common_target = self._link_T(f, stamp_ns) @ T_common_target
        return invert(T_common_target) @ T_common_source


# --------------------------------------------------------------------------------------------
# rig from TF
# --------------------------------------------------------------------------------------------

def rig_with_extrinsics(rig: Rig, sensor2ego: Mapping[str, np.ndarray]) -> Rig:
    """`rig` with the cameras named in `sensor2ego` given those (4, 4) camera-optical → base transforms."""
    cams = []
    for cam in rig.cameras:
        T = sensor2ego.get(cam.name)
        cams.append(cam if T is None else replace(cam, sensor2ego=np.asarray(T, dtype=np.float64)))
    return Rig(tuple(cams))


LookupFn = Callable[[str, str], np.ndarray]


def rig_from_tf(rig: Rig, camera_frames: Mapping[str, str], base_frame: str,
                lookup: LookupFn) -> tuple[Rig, dict[str, str]]:
    """Extrinsics from TF for every camera whose optical frame is known.

    camera_frames: camera name → its optical frame id (CameraInfo/Image header.frame_id).
    lookup(target, source) → T_target_source, raising on failure.
    Returns the rig (cameras TF could not resolve keep the rig's values) and {camera: reason}
    for those unresolved.
    """
    found: dict[str, np.ndarray] = {}
    unresolved: dict[str, str] = {}
    for cam in rig.cameras:
        frame = camera_frames.get(cam.name, '')
        if not frame:
            unresolved[cam.name] = 'optical frame unknown (no CameraInfo/Image received yet)'
            continue
        try:
            found[cam.name] = np.asarray(lookup(base_frame, frame), dtype=np.float64)
        except Exception as exc:      # tf2 exceptions, TransformUnavailable
            unresolved[cam.name] = f'{type(exc).__name__}: {exc}'
    if not found:
        return rig, unresolved
    try:
        return rig_with_extrinsics(rig, found), unresolved
    except CalibrationError as exc:
        raise CalibrationError(f'TF gives an invalid camera extrinsic: {exc}') from exc


def same_extrinsics(a: Any, b: Any, atol: float = 1e-6) -> bool:
    """Whether two rigs hold the same camera → ego transforms (to `atol`), camera by camera."""
    try:
        return all(np.allclose(a.camera(n).sensor2ego, b.camera(n).sensor2ego, atol=atol, rtol=0)
                   for n in a.names)
    except Exception:
        return False
