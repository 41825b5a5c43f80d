"""Oriented boxes of the synthetic world: `BoxSet` (frozen arrays: never modified in place) and its builder."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from occ_ros.bag.world_mix import MAT_PLAIN


@dataclass
class BoxSet:
    """Upright oriented boxes as arrays (N boxes), the unit the renderer and voxeliser consume.

    center: (N, 3) float64 box centres (frame given by the producer).
    size: (N, 3) float64 extents along the box's own x (length), y (width), z (height).
    yaw: (N,) float64 heading of the box x axis about z, radians.
    cls: (N,) uint8 Occ3D class; inst: (N,) uint16 instance id (0 = stuff).
    colour: (N, 3) float32 base RGB 0–255; material: (N,) uint8 MAT_* style.
    """

    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    cls: np.ndarray
    inst: np.ndarray
    colour: np.ndarray
    material: np.ndarray

    def __len__(self) -> int:
        return int(self.center.shape[0])

    @staticmethod
    def empty() -> 'BoxSet':
        return BoxSet(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.uint8),
                      np.zeros(0, np.uint16), np.zeros((0, 3), np.float32), np.zeros(0, np.uint8))

    @staticmethod
    def concat(sets: list['BoxSet']) -> 'BoxSet':
        sets = [s for s in sets if len(s)]
        if not sets:
            return BoxSet.empty()
        return BoxSet(*(np.concatenate([getattr(s, f) for s in sets]) for f in
                        ('center', 'size', 'yaw', 'cls', 'inst', 'colour', 'material')))

    def select(self, keep: np.ndarray) -> 'BoxSet':
        return BoxSet(self.center[keep], self.size[keep], self.yaw[keep], self.cls[keep],
                      self.inst[keep], self.colour[keep], self.material[keep])

    def transformed(self, T: np.ndarray) -> 'BoxSet':
        """The boxes under a yaw-only rigid transform T (4, 4) (e.g. world → ego)."""
        c = self.center @ T[:3, :3].T + T[:3, 3]
        dyaw = math.atan2(T[1, 0], T[0, 0])
        return BoxSet(c, self.size, self.yaw + dyaw, self.cls, self.inst, self.colour, self.material)

    def corners(self) -> np.ndarray:
        """(N, 8, 3) corners, read-only; corner j has signs (±x, ±y, ±z) from bits (j&1, j&2, j&4).
        Computed once per set (a frame rasterises the same boxes into twelve cameras)."""
        cached = self.__dict__.get('_corners')
        if cached is not None:
            return cached
        signs = np.array([[(j & 1) * 2 - 1, ((j >> 1) & 1) * 2 - 1, ((j >> 2) & 1) * 2 - 1]
                          for j in range(8)], dtype=np.float64) * 0.5
        local = signs[None] * self.size[:, None, :]                       # (N, 8, 3)
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = local[..., 0] * c - local[..., 1] * s
        y = local[..., 0] * s + local[..., 1] * c
        out = np.stack([x, y, local[..., 2]], axis=-1) + self.center[:, None, :]
        out.flags.writeable = False
        self.__dict__['_corners'] = out
        return out


class BoxList:
    """Accumulates boxes before they are frozen into a BoxSet."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, center, size, yaw, cls, inst=0, colour=(128, 128, 128), material=MAT_PLAIN) -> None:
        self.rows.append((tuple(float(v) for v in center), tuple(float(v) for v in size), float(yaw),
                          int(cls), int(inst), tuple(float(v) for v in colour), int(material)))

    def freeze(self) -> BoxSet:
        if not self.rows:
            return BoxSet.empty()
        c, s, y, k, i, col, m = zip(*self.rows)
        return BoxSet(np.array(c), np.array(s), np.array(y), np.array(k, np.uint8),
                      np.array(i, np.uint16), np.array(col, np.float32), np.array(m, np.uint8))
