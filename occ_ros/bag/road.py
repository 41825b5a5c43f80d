"""The road network of the synthetic world: the main road (straight or an arc), cross streets,
the lane layout, the ego's speed profile and the ground raster (classes and paint)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit

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
    """Ground class | paint flags of the cells at world points (X, Y) (a strip of the raster).

    The road coordinates come from `MainRoad.to_road` (numpy); the classification is one compiled
    pass (`_classify`) that applies the rules in the order they overwrite each other — blocks
    (lot, verge), road, median, sidewalks, lane paint, then each cross street (band, its paint,
    crosswalk sidewalks, centre line, zebras) — with every threshold computed here in Python as
    the numpy expressions did, and the same float64 comparisons, so the raster is that of the
    mask-by-mask numpy code it replaces, cell for cell (test_render_pinned pins rendered frames;
    `test_synth` compares the two on several worlds)."""
    s, d = main_road.to_road(X, Y)
    el, er = L.edge_left, L.edge_right
    blk = np.array([(a, b, float(side), TERRAIN if style == 'park' else OTHER_FLAT, OCC_INDEX[verge_cls],
                     (el if side > 0 else -er) + L.sidewalk, (el if side > 0 else -er) + L.sidewalk + L.verge)
                    for (a, b, side, style, verge_cls) in blocks], dtype=np.float64).reshape(-1, 7)
    seps = [side * (L.median / 2 + i * LANE_W) for side in (-1, 1) for i in range(1, L.lanes)]
    edges = [(side * (L.median / 2 + L.lanes * LANE_W), side * 0.15) for side in (-1, 1)]
    cs = np.array([(c.origin[0], c.origin[1], c.along[0], c.along[1], c.across[0], c.across[1], c.half_width,
                    c.half_width + c.sidewalk, float(PAINT_YELLOW if c.half_width > 4 else PAINT_WHITE))
                   for c in cross], dtype=np.float64).reshape(-1, 9)
    out = np.empty(s.shape, dtype=np.uint8)
    _classify(out, s, d, np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(Y, dtype=np.float64),
              s_lo - 5, s_hi + 5, WORLD_EXTENT_D_M, el, er, L.sidewalk, L.median, L.median / 2, blk,
              np.array(seps, dtype=np.float64), np.array(edges, dtype=np.float64).reshape(-1, 2),
              el + L.sidewalk, er - L.sidewalk, max(el, -er) + L.sidewalk, cs)
    return out


@njit(cache=True, inline='always')
def _mod(a: float, b: float) -> float:
    """numpy's float64 `mod` (floored: fmod, then + b when the signs differ)."""
    r = np.fmod(a, b)
    if r != 0.0 and (b < 0.0) != (r < 0.0):
        r += b
    return r


@njit(cache=True)
def _classify(out: np.ndarray, S: np.ndarray, D: np.ndarray, X: np.ndarray, Y: np.ndarray, s_min: float,
              s_max: float, ext: float, el: float, er: float, sw: float, median: float, half_median: float,
              blk: np.ndarray, seps: np.ndarray, edges: np.ndarray, walk_l: float, walk_r: float,
              main_half: float, cs: np.ndarray) -> None:
    """The per-cell rules of `_ground_classes` (see there); blk rows: a, b, side, lot class, verge
    class, verge from, verge to; edges: (lane edge, side·0.15); cs rows: origin x, y, along x, y,
    across x, y, half width, half width + sidewalk, centre-line paint."""
    h, w = S.shape
    for r in range(h):
        for c in range(w):
            s = S[r, c]
            d = D[r, c]
            ad = abs(d)
            inside = s >= s_min and s <= s_max and ad <= ext
            cls = np.uint8(TERRAIN)
            paint = np.uint8(0)
            road = False
            if inside:
                for k in range(blk.shape[0]):
                    if s >= blk[k, 0] and s < blk[k, 1] and ((d > 0) if blk[k, 2] > 0 else (d < 0)):
                        cls = np.uint8(blk[k, 3])
                        if ad > blk[k, 5] and ad <= blk[k, 6]:
                            cls = np.uint8(blk[k, 4])
                road = d <= el and d >= er
                if road:
                    cls = np.uint8(DRIVEABLE)
                if median > 0 and ad <= half_median:
                    cls = np.uint8(OTHER_FLAT)
                if (d > el and d <= walk_l) or (d < er and d >= walk_r):
                    cls = np.uint8(SIDEWALK)
            if road:
                if median == 0 and ad < 0.1:
                    paint = np.uint8(PAINT_YELLOW)
                dash = _mod(s, 9.0) < 3.0
                for k in range(seps.shape[0]):
                    if dash and abs(d - seps[k]) < 0.1:
                        paint = np.uint8(PAINT_WHITE)
                for k in range(edges.shape[0]):
                    if abs((d - edges[k, 0]) + edges[k, 1]) < 0.1:
                        paint = np.uint8(PAINT_WHITE)
            x = X[r, c]
            y = Y[r, c]
            for k in range(cs.shape[0]):
                dx = x - cs[k, 0]
                dy = y - cs[k, 1]
                e = dx * cs[k, 2] + dy * cs[k, 3]
                f = dx * cs[k, 4] + dy * cs[k, 5]
                if not abs(e) <= ext:
                    if road and abs(abs(f) - cs[k, 6] - 2.0) < 1.5 and _mod(d, 1.0) < 0.5:
                        paint = np.uint8(PAINT_WHITE)
                    continue
                af = abs(f)
                outside_main = d > walk_l or d < walk_r
                if af <= cs[k, 6]:
                    cls = np.uint8(DRIVEABLE)
                    if ad <= main_half:
                        paint = np.uint8(0)
                    if outside_main and af < 0.1:
                        paint = np.uint8(cs[k, 8])
                elif af <= cs[k, 7] and outside_main:
                    cls = np.uint8(SIDEWALK)
                if road and abs(af - cs[k, 6] - 2.0) < 1.5 and _mod(d, 1.0) < 0.5:
                    paint = np.uint8(PAINT_WHITE)
            out[r, c] = cls | paint


def warm_up() -> None:
    """Compile `_classify` (or load it from numba's cache) on a one-cell strip: `occ-ros prepare`
    calls it so that the first world built on a new machine does not compile it."""
    one = np.zeros((1, 1))
    _classify(np.zeros((1, 1), np.uint8), one, one, one, one, 0.0, 1.0, 1.0, 1.0, -1.0, 1.0, 0.0, 0.0,
              np.zeros((0, 7)), np.zeros(0), np.zeros((0, 2)), 2.0, -2.0, 2.0, np.zeros((0, 9)))
