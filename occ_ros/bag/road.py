"""The road network of the synthetic world: the main road (straight or an arc), cross streets,
the lane layout, the ego's speed profile and the ground raster (classes and paint)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from occ_ros.bag.world_mix import (WORLD_EXTENT_D_M, DRIVEABLE, GROUND_RES, LANE_W, OTHER_FLAT, PAINT_WHITE,
                                  PAINT_YELLOW, SIDEWALK, TERRAIN)
from occ_ros.core.classes import OCC_INDEX


@dataclass(frozen=True)
class MainRoad:
    """Centre line of the main road: straight (kappa = 0) or a circular arc of curvature kappa.

    Road coordinates (s, d): s = arc length along the centre line from the world origin
    (heading +x at s = 0), d = signed lateral offset, positive to the left.
    """

    kappa: float

    @property
    def straight(self) -> bool:
        return abs(self.kappa) < 1e-9

    def heading(self, s):
        return np.asarray(s, dtype=np.float64) * self.kappa

    def to_world(self, s, d) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(s, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        if self.straight:
            return s + 0.0 * d, d + 0.0 * s
        R = 1.0 / self.kappa
        th = s * self.kappa
        rho = R - d
        return rho * np.sin(th), R - rho * np.cos(th)

    def to_road(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.straight:
            return x.copy(), y.copy()
        R = 1.0 / self.kappa
        vx, vy = x, y - R
        sg = 1.0 if R > 0 else -1.0
        r = np.hypot(vx, vy)
        th = np.arctan2(sg * vx, -sg * vy)
        return th * R, R - sg * r

    def frame(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point, unit tangent and unit left normal of the centre line at s (world frame)."""
        x, y = self.to_world(s, 0.0)
        h = float(self.heading(s))
        return (np.array([float(x), float(y)]), np.array([math.cos(h), math.sin(h)]),
                np.array([-math.sin(h), math.cos(h)]))


@dataclass(frozen=True)
class CrossStreet:
    """A straight street crossing the main road at arc length `s`, along the main road's normal.

    Local coordinates: e along the street (positive = the main road's left side), f across it.
    """

    s: float
    half_width: float
    sidewalk: float
    origin: tuple[float, float]
    along: tuple[float, float]     # unit vector of +e (world)
    across: tuple[float, float]    # unit vector of +f (world), = main road tangent at s

    def to_world(self, e, f):
        e = np.asarray(e, dtype=np.float64)
        f = np.asarray(f, dtype=np.float64)
        return (self.origin[0] + e * self.along[0] + f * self.across[0],
                self.origin[1] + e * self.along[1] + f * self.across[1])

    def to_local(self, x, y):
        dx = np.asarray(x, dtype=np.float64) - self.origin[0]
        dy = np.asarray(y, dtype=np.float64) - self.origin[1]
        return dx * self.along[0] + dy * self.along[1], dx * self.across[0] + dy * self.across[1]

    @property
    def heading(self) -> float:
        return math.atan2(self.along[1], self.along[0])


@dataclass(frozen=True)
class EgoMotion:
    """Ego speed profile v(t) = v0 + a·sin(w·t) (m/s) along its lane, s(0) = 0."""

    v0: float
    a: float
    w: float
    lane_d: float

    def s(self, t: float) -> float:
        return self.v0 * t + (self.a / self.w) * (1.0 - math.cos(self.w * t))

    def v(self, t: float) -> float:
        return self.v0 + self.a * math.sin(self.w * t)


@dataclass
class Layout:
    """Cross-section of the main road (lateral offsets d, metres; right side negative)."""

    lanes: int
    median: float
    park_left: float
    park_right: float
    sidewalk: float
    verge: float

    @property
    def edge_left(self) -> float:
        return self.median / 2 + self.lanes * LANE_W + self.park_left

    @property
    def edge_right(self) -> float:
        return -(self.median / 2 + self.lanes * LANE_W + self.park_right)

    def lane_centre(self, i: int, side: int) -> float:
        """Centre of lane i (0 = next to the centre line); side +1 left (oncoming), −1 right."""
        return side * (self.median / 2 + (i + 0.5) * LANE_W)


def ground_raster(road: MainRoad, L: Layout, cross: Sequence[CrossStreet],
                  blocks: Sequence[tuple[float, float, int, str, str]], s_lo: float, s_hi: float
                  ) -> tuple[np.ndarray, float, float]:
    """Ground classes and paint on a world-aligned grid of GROUND_RES cells around the main road:
    (raster (h, w) uint8 = class | paint flags, x0, y0 of its corner)."""
    ss = np.linspace(s_lo, s_hi, 64)
    pts = [road.to_world(ss, np.full_like(ss, d)) for d in (-WORLD_EXTENT_D_M, WORLD_EXTENT_D_M)]
    xs = np.concatenate([p[0] for p in pts])
    ys = np.concatenate([p[1] for p in pts])
    x0 = float(np.floor(xs.min() / GROUND_RES) * GROUND_RES) - 2.0
    y0 = float(np.floor(ys.min() / GROUND_RES) * GROUND_RES) - 2.0
    w = int(math.ceil((xs.max() + 2.0 - x0) / GROUND_RES))
    h = int(math.ceil((ys.max() + 2.0 - y0) / GROUND_RES))
    g = np.full((h, w), TERRAIN, dtype=np.uint8)
    cx = x0 + (np.arange(w) + 0.5) * GROUND_RES
    for r0 in range(0, h, 256):              # strips keep the temporaries small
        r1 = min(h, r0 + 256)
        cy = y0 + (np.arange(r0, r1) + 0.5) * GROUND_RES
        X, Y = np.meshgrid(cx, cy)
        g[r0:r1] = _ground_classes(X, Y, road, L, cross, blocks, s_lo, s_hi)
    return g, x0, y0


def _ground_classes(X: np.ndarray, Y: np.ndarray, main_road: MainRoad, L: Layout, cross: Sequence[CrossStreet],
                    blocks: Sequence[tuple[float, float, int, str, str]], s_lo: float, s_hi: float) -> np.ndarray:
    s, d = main_road.to_road(X, Y)
    out = np.full(X.shape, TERRAIN, dtype=np.uint8)
    inside = (s >= s_lo - 5) & (s <= s_hi + 5) & (np.abs(d) <= WORLD_EXTENT_D_M)
    el, er = L.edge_left, L.edge_right
    # verge / lot ground per block
    for (a, b, side, style, verge_cls) in blocks:
        blk = inside & (s >= a) & (s < b) & ((d > 0) if side > 0 else (d < 0))
        lot_cls = TERRAIN if style == 'park' else OTHER_FLAT
        out[blk] = lot_cls
        edge = el if side > 0 else -er
        vz = blk & (np.abs(d) > edge + L.sidewalk) & (np.abs(d) <= edge + L.sidewalk + L.verge)
        out[vz] = OCC_INDEX[verge_cls]
    road = inside & (d <= el) & (d >= er)
    out[road] = DRIVEABLE
    if L.median > 0:
        out[inside & (np.abs(d) <= L.median / 2)] = OTHER_FLAT
    walk = inside & (((d > el) & (d <= el + L.sidewalk)) | ((d < er) & (d >= er - L.sidewalk)))
    out[walk] = SIDEWALK
    paint = np.zeros(X.shape, dtype=np.uint8)
    # lane paint on the main road
    if L.median == 0:
        paint[road & (np.abs(d) < 0.1)] = PAINT_YELLOW
    for side in (-1, 1):
        for i in range(1, L.lanes):
            dsep = side * (L.median / 2 + i * LANE_W)
            dash = (np.mod(s, 9.0) < 3.0)
            paint[road & (np.abs(d - dsep) < 0.1) & dash] = PAINT_WHITE
        lane_edge = side * (L.median / 2 + L.lanes * LANE_W)
        paint[road & (np.abs(d - lane_edge + side * 0.15) < 0.1)] = PAINT_WHITE
    # cross streets: driveable band and their sidewalks, crosswalks on the main road
    for cs in cross:
        e, f = cs.to_local(X, Y)
        near = np.abs(e) <= WORLD_EXTENT_D_M
        band = near & (np.abs(f) <= cs.half_width)
        out[band] = DRIVEABLE
        paint[band & (np.abs(d) <= max(el, -er) + L.sidewalk)] = 0
        cwalk = near & (np.abs(f) > cs.half_width) & (np.abs(f) <= cs.half_width + cs.sidewalk)
        outside_main = (d > el + L.sidewalk) | (d < er - L.sidewalk)
        out[cwalk & outside_main] = SIDEWALK
        # centre line of the cross street outside the main road
        paint[band & outside_main & (np.abs(f) < 0.1)] = PAINT_YELLOW if cs.half_width > 4 else PAINT_WHITE
        # zebra crossings on the main road on both sides of the intersection
        zebra = road & (np.abs(np.abs(f) - cs.half_width - 2.0) < 1.5) & (np.mod(d, 1.0) < 0.5)
        paint[zebra] = PAINT_WHITE
    return out | paint
