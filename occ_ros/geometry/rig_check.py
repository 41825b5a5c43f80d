"""How far a camera rig is from the one a checkpoint was trained on, in numbers.

Every checkpoint this project loads — the official Panoptic-FlashOcc ones and the shipped `lite`
(trained on the synthetic world rendered through `nuscenes_rig`) — has only seen the nuScenes rig:
six cameras ≈ 1.5–1.6 m above the ground, horizontal fields of view ≈ 64.6° (CAM_BACK 89.4°),
yaws 0, ±55°, ±110°, 180°. The network still runs on another rig (geometry is an input), but
depth and height priors are learnt for that one, so output quality on a rig with other mounting
heights or lenses is unknown. `rig_differences` states the gaps with numbers, so the node can say
so once at start-up and again when the calibration changes (`RigCheck`).

Compared: the camera count; per camera (matched by name when the rig uses the reference names,
else by network order) the mounting height — z of the camera in the rig's ego frame, which for
the nuScenes reference is on the ground — and the horizontal field of view, computed like
OpenCV's `calibrationMatrixValues`: atan(cx / fx) + atan((W − cx) / fx).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

from occ_ros.geometry.rig import CameraCalib, Rig, nuscenes_rig

# A camera whose height differs from the reference camera's by more than this is reported.
RIG_HEIGHT_TOLERANCE_M = 0.25
# A camera whose horizontal field of view differs from the reference camera's by more than this.
RIG_HFOV_TOLERANCE_DEG = 10.0
TRAINING_RIG_NAME = 'nuScenes'


def horizontal_fov_deg(cam: CameraCalib) -> float:
    """Horizontal field of view (degrees) of a pinhole camera: atan(cx/fx) + atan((W − cx)/fx)."""
    fx, cx, width = float(cam.K[0, 0]), float(cam.K[0, 2]), float(cam.image_hw[1])
    return math.degrees(math.atan2(cx, fx) + math.atan2(width - cx, fx))


def mounting_height_m(cam: CameraCalib) -> float:
    """Height of the camera centre above the rig's ego-frame origin (metres)."""
    return float(cam.sensor2ego[2, 3])


def training_rig() -> Rig:
    """The rig every supported checkpoint was trained on (see the module doc)."""
    return nuscenes_rig()


def rig_differences(rig: Rig, reference: Rig,
                    height_tolerance_m: float = RIG_HEIGHT_TOLERANCE_M,
                    hfov_tolerance_deg: float = RIG_HFOV_TOLERANCE_DEG) -> tuple[str, ...]:
    """One line per difference beyond the tolerances (empty when the rigs agree), with numbers."""
    out: list[str] = []
    if len(rig) != len(reference):
        out.append(f'{len(rig)} cameras (the checkpoint\'s rig has {len(reference)})')
    if set(rig.names) <= set(reference.names):
        pairs = [(cam, reference.camera(cam.name)) for cam in rig]
    else:
        pairs = list(zip(rig, reference))       # by network order
    for cam, ref in pairs:
        who = cam.name if cam.name == ref.name else f'{cam.name} (as {ref.name})'
        h, h_ref = mounting_height_m(cam), mounting_height_m(ref)
        if abs(h - h_ref) > height_tolerance_m:
            out.append(f'{who}: mounted {h:.2f} m high, the checkpoint\'s {h_ref:.2f} m '
                       f'({h - h_ref:+.2f} m)')
        f, f_ref = horizontal_fov_deg(cam), horizontal_fov_deg(ref)
        if abs(f - f_ref) > hfov_tolerance_deg:
            out.append(f'{who}: horizontal field of view {f:.1f}°, the checkpoint\'s {f_ref:.1f}° '
                       f'({f - f_ref:+.1f}°)')
    return tuple(out)


def rig_warning(rig: Rig, reference: Optional[Rig] = None) -> Optional[str]:
    """The warning for `rig` against the training rig, or None when they agree."""
    lines = rig_differences(rig, reference if reference is not None else training_rig())
    if not lines:
        return None
    return (f'the camera rig differs from the {TRAINING_RIG_NAME} rig the checkpoint was trained on '
            f'(tolerances {RIG_HEIGHT_TOLERANCE_M} m, {RIG_HFOV_TOLERANCE_DEG:.0f}°): '
            + '; '.join(lines) + '. The network runs, but its depth and height priors are the '
            'training rig\'s: check the output before relying on it')


class RigCheck:
    """Says when the rig's warning changes: `update(rig)` returns the new warning text the first
    time and whenever it differs from the last one, `''` when a former warning no longer holds,
    and None when nothing changed (so a caller logs once per calibration change)."""

    def __init__(self, reference: Optional[Rig] = None) -> None:
        self._reference = reference if reference is not None else training_rig()
        self._last: Optional[str] = None
        self._checked = False

    def update(self, rig: Rig) -> Optional[str]:
        text = rig_warning(rig, self._reference)
        first, self._checked = not self._checked, True
        if text == self._last and not first:
            return None
        previous, self._last = self._last, text
        if text is None:
            return '' if previous is not None else None
        return text


def with_intrinsics(rig: Rig, intrinsics: Mapping[str, tuple[np.ndarray, tuple[int, int]]]) -> Rig:
    """`rig` with the (K, image_hw) of the cameras in `intrinsics` (e.g. from CameraInfo)."""
    return Rig(tuple(CameraCalib(c.name, intrinsics[c.name][0], c.sensor2ego, intrinsics[c.name][1])
                     if c.name in intrinsics else c for c in rig))
