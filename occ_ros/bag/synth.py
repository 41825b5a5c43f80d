"""Synthetic sequences: frames of the world rendered through a rig, with ground truth.

`SyntheticSequence` is what both the bag writer and the trainer consume: it yields one
`SynthFrame` at a time (six images, depths, optional per-pixel classes, the ego pose and the
Occ3D ground truth), so nothing holds a whole sequence in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import ConfigError
from occ_ros.core.frames import CameraFrame, EgoPose, FrameSet
from occ_ros.bag.groundtruth import GroundTruthMaker
from occ_ros.core.occupancy import Occupancy
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
    """

    index: int
    t: float
    stamp_ns: int
    ego_pose: np.ndarray
    velocity: tuple[float, float]
    views: list[CameraView]
    gt: Optional[Occupancy]

    def frame_set(self, rig: Any) -> FrameSet:
        """The frame as the pipeline's `FrameSet` (images in rig order, K of the rig)."""
        frames = tuple(CameraFrame(c.name, self.stamp_ns, v.image, np.asarray(c.K))
                       for c, v in zip(rig, self.views))
        return FrameSet(self.stamp_ns, frames, EgoPose(self.stamp_ns, self.ego_pose))


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
    """

    def __init__(self, seed: int, seconds: float, rate: float = 12.0, rig: Any = None,
                 image_hw: tuple[int, int] = (900, 1600), grid: GridSpec = OCC3D_GRID, *,
                 start_ns: int = DEFAULT_START_NS, colour: bool = True, classes: bool = False,
                 ground_truth: bool = True, mask_width: int = 400, mix: WorldMix = WorldMix()) -> None:
        if rig is None:
            from occ_ros.geometry import nuscenes_rig
            rig = nuscenes_rig((int(image_hw[0]), int(image_hw[1])))
        self.rig = rig
        self.seed = int(seed)
        self.rate = float(rate)
        self.stamps = frame_stamps(seconds, rate, start_ns)
        self.start_ns = int(start_ns)
        self.world = World(seed, duration=max(seconds, (len(self.stamps) - 1) / rate) + 1e-6, mix=mix)
        self.renderer = Renderer(self.world, list(rig))
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.gt_maker = GroundTruthMaker(self.world, list(rig), grid, mask_width) if ground_truth else None
        self.colour = colour
        self.classes = classes

    def __len__(self) -> int:
        return len(self.stamps)

    def time_of(self, i: int) -> float:
        return (self.stamps[i] - self.start_ns) * 1e-9

    def frame(self, i: int) -> SynthFrame:
        if not 0 <= i < len(self.stamps):
            raise IndexError(f'frame {i} outside [0, {len(self.stamps)})')
        t = self.time_of(i)
        pose = self.world.ego_pose(t)
        boxes = self.world.boxes_at(t, pose[:2, 3], FAR + 10.0)
        views = [self.renderer.render_camera(k, pose, boxes, colour=self.colour, classes=self.classes,
                                             frame_index=i) for k in range(len(self.renderer.cameras))]
        gt = None
        if self.gt_maker is not None:
            gt = self.gt_maker(t, self.stamps[i], boxes)
        return SynthFrame(i, t, self.stamps[i], pose, self.world.ego_velocity(t), views, gt)

    def __iter__(self) -> Iterator[SynthFrame]:
        for i in range(len(self.stamps)):
            yield self.frame(i)
