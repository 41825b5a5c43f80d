"""Ray origins by the official RayIoU / RayPQ protocol, from the ego motion of a sequence.

The official evaluation (SparseOcc / FlashOCC `ego_pose_dataset.py`, `EgoPoseDataset`) casts the
rays of a scored key frame from the LiDAR position of **every key frame of its scene** — past and
future, 2 Hz — expressed in the scored frame's ego frame (the scored frame's own LiDAR position
among them), keeps those with |x| < 39 m and |y| < 39 m, in time order, and thins them to at most
8 with indices round(linspace(0, n − 1, 8)). `select_origins` does the window and the thinning;
this module gives it the positions.

A sequence here is a list of key-frame stamps and ego poses (T_world_ego, e.g. odometry
`T_odom_base`) — the rotation of the LiDAR mount does not matter, only its position in the ego
frame (`lidar_xyz`, nuScenes' LIDAR_TOP by default). Frames that are not key frames (a 12 Hz
replay scores every frame) get the origins of the key frames plus their own LiDAR position, in
time order, as if they were one — the official code scores key frames only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import EvaluationError
from occ_ros.metrics.raycast import DEFAULT_LIDAR_ORIGIN, MAX_ORIGINS, select_origins

KEYFRAME_INTERVAL_S = 0.5          # nuScenes samples (key frames) are 2 Hz
PROTOCOL_OFFICIAL = 'official (LiDAR positions of the key frames every 0.5 s of the sequence, |x|, |y| < 39 m, ≤ 8)'
PROTOCOL_SINGLE = 'single (the scored frame\'s own LiDAR origin only; not the official protocol)'


def lidar_positions_in(ref_pose: np.ndarray, poses: np.ndarray,
                       lidar_xyz: Sequence[float] = DEFAULT_LIDAR_ORIGIN) -> np.ndarray:
    """(N, 3) positions of the LiDAR of each pose in `poses` (N, 4, 4) T_world_ego, expressed in
    the ego frame of `ref_pose` (4, 4): inv(ref) · pose · [lidar_xyz, 1]."""
    ref = np.asarray(ref_pose, dtype=np.float64)
    P = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    p = np.append(np.asarray(lidar_xyz, dtype=np.float64), 1.0)
    world = P @ p                                             # (N, 4)
    return (np.linalg.inv(ref) @ world.T).T[:, :3]


@dataclass(frozen=True)
class EgoTrack:
    """Ego poses of a sequence in time order: stamps (N,) int64 ns, poses (N, 4, 4) T_world_ego."""

    stamps_ns: np.ndarray
    poses: np.ndarray

    @classmethod
    def from_samples(cls, samples: Sequence[tuple[int, np.ndarray]]) -> 'EgoTrack':
        if not samples:
            raise EvaluationError('no ego poses: the official ray origins need the ego motion of the sequence '
                                  '(odometry), or use the single-origin protocol')
        order = sorted(samples, key=lambda s: s[0])
        stamps = np.array([int(s) for s, _ in order], dtype=np.int64)
        poses = np.stack([np.asarray(T, dtype=np.float64).reshape(4, 4) for _, T in order])
        return cls(stamps, poses)

    def pose_at(self, stamp_ns: int) -> np.ndarray:
        """The pose of the nearest sample (odometry is written at the frame stamps)."""
        i = int(np.argmin(np.abs(self.stamps_ns - int(stamp_ns))))
        return self.poses[i]



def keyframe_stamps(first_ns: int, last_ns: int, interval_s: float = KEYFRAME_INTERVAL_S) -> list[int]:
    """first, first + interval, … ≤ last: the 2 Hz samples of a span (ns)."""
    step = int(round(interval_s * 1e9))
    return list(range(int(first_ns), int(last_ns) + 1, step))


def official_origins(track: EgoTrack, stamp_ns: int, keyframes_ns: Sequence[int], *,
                     lidar_xyz: Sequence[float] = DEFAULT_LIDAR_ORIGIN, grid: GridSpec = OCC3D_GRID,
                     max_origins: int = MAX_ORIGINS) -> np.ndarray:
    """(K, 3) ray origins of the frame at `stamp_ns` by the official protocol (module docstring):
    the LiDAR positions of the key frames and of the frame itself, in time order, in its ego frame,
    inside ±39 m, thinned to ≤ `max_origins` by round(linspace)."""
    stamps = sorted(set(int(s) for s in keyframes_ns) | {int(stamp_ns)})
    poses = np.stack([track.pose_at(s) for s in stamps])
    return select_origins(lidar_positions_in(track.pose_at(stamp_ns), poses, lidar_xyz), grid, max_origins)
