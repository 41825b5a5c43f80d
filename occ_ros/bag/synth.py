"""Synthetic sequences: frames of the world rendered through a rig, with ground truth.

`SyntheticSequence` is what both the bag writer and the trainer consume: it yields one
`SynthFrame` at a time (six images, depths, optional per-pixel classes, the ego pose and the
Occ3D ground truth), so nothing holds a whole sequence in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from occ_ros.core.config import NUSCENES_CAPTURE_OFFSETS_S, OCC3D_GRID, GridSpec
from occ_ros.core.errors import ConfigError
from occ_ros.core.frames import CameraFrame, EgoPose, FrameSet
from occ_ros.bag.groundtruth import GroundTruthMaker
from occ_ros.core.occupancy import Occupancy
from occ_ros.bag.lens import LensDistortion
from occ_ros.bag.render import FAR, CameraView, Renderer
from occ_ros.bag.world import World
from occ_ros.bag.world_mix import WorldMix

DEFAULT_START_NS = 1_700_000_000_000_000_000      # 2023-11-14T22:13:20Z: a fixed, plausible epoch


@dataclass
class SynthFrame:
    """One instant of a synthetic sequence.

    views: per camera (rig order) the RGB image (H, W, 3) uint8, depth (H, W) float32 metres
    (0 = sky) and, when asked, per-pixel classes / instances. gt: Occ3D ground truth in the ego
    frame at `stamp_ns`. ego_pose: (4, 4) T_odom_base. velocity: (forward m/s, yaw rate rad/s).
    view_stamps_ns / view_poses: each view's capture stamp and ego pose (all `stamp_ns` /
    `ego_pose` unless the sequence renders each camera at its own capture time).
    """

    index: int
    t: float
    stamp_ns: int
    ego_pose: np.ndarray
    velocity: tuple[float, float]
    views: list[CameraView]
    gt: Optional[Occupancy]
    view_stamps_ns: tuple[int, ...] = ()
    view_poses: tuple[np.ndarray, ...] = ()

    def frame_set(self, rig: Any, camera_poses: bool = True) -> FrameSet:
        """The frame as the pipeline's `FrameSet` (images in rig order, K of the rig, each view at its
        capture stamp; with `camera_poses`, each view carries its capture-time ego pose)."""
        stamps = self.view_stamps_ns or (self.stamp_ns,) * len(self.views)
        poses = self.view_poses or (self.ego_pose,) * len(self.views)
        frames = tuple(CameraFrame(c.name, st, v.image, np.asarray(c.K),
                                   ego_pose=EgoPose(st, T) if camera_poses else None)
                       for c, v, st, T in zip(rig, self.views, stamps, poses))
        return FrameSet(self.stamp_ns, frames, EgoPose(self.stamp_ns, self.ego_pose))


def staggered_offsets(rig: Any) -> tuple[float, ...]:
    """Capture offsets (s) of `rig`'s cameras in the nuScenes firing order
    (`core.config.NUSCENES_CAPTURE_OFFSETS_S`; cameras it does not name fire with view 0)."""
    return tuple(NUSCENES_CAPTURE_OFFSETS_S.get(c.name, 0.0) for c in rig)


def frame_stamps(seconds: float, rate: float, start_ns: int = DEFAULT_START_NS) -> list[int]:
    """Stamps (ns) of the frames of a `seconds`-long sequence at `rate` Hz: start + round(i·1e9/rate)."""
    if rate <= 0 or seconds <= 0:
        raise ConfigError(f'seconds and rate must be positive, got {seconds} s at {rate} Hz')
    n = max(1, int(np.floor(seconds * rate + 1e-9)))
    return [int(start_ns + round(i * 1e9 / rate)) for i in range(n)]


class SyntheticSequence:
    """Frames of `World(seed)` at `rate` Hz for `seconds`, rendered through `rig`.

    rig: `occ_ros.geometry.Rig` (default: `nuscenes_rig(image_hw)`).
    colour / classes: render RGB (else depth only) / per-pixel classes and instances.
    ground_truth: compute Occupancy per frame on `grid`. mix: how often the rare classes appear
    (`WorldMix`; the default is the evaluation world).
    capture_offsets_s: per rig camera, seconds after the frame stamp at which it exposes (e.g.
    `staggered_offsets(rig)`, the nuScenes firing order); each camera is rendered at its own
    capture time, the ground truth at the frame stamp (view 0's, the official BEV frame). None:
    every camera at the frame stamp (a synchronised rig).
    time_scale: world seconds per sequence second — above 1 the world runs fast-forward (the ego
    and every agent `time_scale`× faster: a fast drive through the same town).
    distortion: a lens model name (occ_ros.bag.lens.DISTORTION_PRESETS): the views are the raw
    images of that lens (`self.lenses[i].model` is camera i's calibration), else pinhole views.
    """

    def __init__(self, seed: int, seconds: float, rate: float = 12.0, rig: Any = None,
                 image_hw: tuple[int, int] = (900, 1600), grid: GridSpec = OCC3D_GRID, *,
                 start_ns: int = DEFAULT_START_NS, colour: bool = True, classes: bool = False,
                 ground_truth: bool = True, mask_width: int = 400, mix: WorldMix = WorldMix(),
                 capture_offsets_s: Optional[Sequence[float]] = None, time_scale: float = 1.0,
                 distortion: Optional[str] = None) -> None:
        if rig is None:
            from occ_ros.geometry import nuscenes_rig
            rig = nuscenes_rig((int(image_hw[0]), int(image_hw[1])))
        self.rig = rig
        self.seed = int(seed)
        self.rate = float(rate)
        self.stamps = frame_stamps(seconds, rate, start_ns)
        self.start_ns = int(start_ns)
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ConfigError(f'time_scale must be a positive number, got {time_scale}')
        self.time_scale = float(time_scale)
        offs = tuple(float(o) for o in (capture_offsets_s or [0.0] * len(rig)))
        if len(offs) != len(rig) or not all(math.isfinite(o) and 0.0 <= o < 1.0 / self.rate for o in offs):
            raise ConfigError(f'capture_offsets_s: one offset per camera in [0, {1.0 / self.rate:.3f}) s, '
                              f'got {capture_offsets_s}')
        self.capture_offsets_ns = tuple(int(round(o * 1e9)) for o in offs)
        span = max(seconds, (len(self.stamps) - 1) / rate) + max(offs)
        self.world = World(seed, duration=span * self.time_scale + 1e-6, mix=mix)
        self.lenses = [LensDistortion(c, distortion) for c in rig] if distortion else None
        self.renderer = Renderer(self.world, [lens.render_camera for lens in self.lenses] if self.lenses else list(rig))
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.gt_maker = (GroundTruthMaker(self.world, list(rig), grid, mask_width, lenses=self.lenses)
                         if ground_truth else None)
        self.colour = colour
        self.classes = classes

    def __len__(self) -> int:
        return len(self.stamps)

    def time_of(self, i: int) -> float:
        """World time (s) of frame i's stamp."""
        return self.world_time(self.stamps[i])

    def world_time(self, stamp_ns: int) -> float:
        """World time (s) at a sequence stamp (`time_scale` world seconds per second)."""
        return (int(stamp_ns) - self.start_ns) * 1e-9 * self.time_scale

    def ego_velocity(self, stamp_ns: int) -> tuple[float, float]:
        """(forward m/s, yaw rate rad/s) at a sequence stamp, in sequence time."""
        v, w = self.world.ego_velocity(self.world_time(stamp_ns))
        return v * self.time_scale, w * self.time_scale

    def frame(self, i: int) -> SynthFrame:
        if not 0 <= i < len(self.stamps):
            raise IndexError(f'frame {i} outside [0, {len(self.stamps)})')
        t = self.time_of(i)
        pose = self.world.ego_pose(t)
        boxes = self.world.boxes_at(t, pose[:2, 3], FAR + 10.0)
        view_stamps, view_poses, views = [], [], []
        for k, off in enumerate(self.capture_offsets_ns):
            st = self.stamps[i] + off
            tk = self.world_time(st)
            pose_k, boxes_k = (pose, boxes) if off == 0 else (self.world.ego_pose(tk), None)
            if boxes_k is None:
                boxes_k = self.world.boxes_at(tk, pose_k[:2, 3], FAR + 10.0)
            views.append(self.renderer.render_camera(k, pose_k, boxes_k, colour=self.colour,
                                                     classes=self.classes, frame_index=i))
            view_stamps.append(st)
            view_poses.append(pose_k)
        if self.lenses:
            views = [lens.apply(v) for lens, v in zip(self.lenses, views)]
        gt = None
        if self.gt_maker is not None:
            gt = self.gt_maker(t, self.stamps[i], boxes)
        return SynthFrame(i, t, self.stamps[i], pose, self.ego_velocity(self.stamps[i]), views, gt,
                          tuple(view_stamps), tuple(view_poses))

    def __iter__(self) -> Iterator[SynthFrame]:
        for i in range(len(self.stamps)):
            yield self.frame(i)
