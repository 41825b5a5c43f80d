"""A seeded synthetic driving world: roads, ground classes, buildings, vegetation, static stuff,
moving things with instance ids, and an ego vehicle with exact odometry.

Frames
------
- World / odom frame: x, y on the ground plane, z up, metres. The ground is the plane z = 0.
- Ego frame (= base_link, as in nuScenes): origin on the ground under the rear axle, x forward,
  y left, z up. The ego never pitches or rolls, so ego z = 0 is the ground too.

Layout
------
One main road (straight, or a circular arc of radius ≥ 150 m) carries the ego. It has 1–2 lanes
per direction (3.5 m), an optional median (other_flat), optional parking lanes, sidewalks on both
sides and a verge (terrain or other_flat). Cross streets meet it at right angles every 45–110 m.
Blocks between cross streets are either urban (buildings with a furniture strip of poles, bins,
parked bicycles, street trees) or parks (trees, hedges). A construction zone (barriers, cones,
a construction vehicle) may close part of the outer lane of the opposite carriageway.

How often the rare classes appear (construction zones, cones, two-wheelers, construction
vehicles) is a `WorldMix`. `WorldMix()` (= `WORLD_MIXES['default']`) is the evaluation world:
every bag, demo and held-out sequence uses it. `WORLD_MIXES['training']` only turns those
frequencies up, for training data: the same draws are made in the same order, so a default-mix
world is unchanged by the existence of other mixes.

Moving things never collide with the ego or each other: every vehicle in a main-road lane moves
with that lane's speed (the ego's lane moves with the ego's own speed profile), cross-street
traffic approaching the main road queues at stop lines outside it, pedestrians walk along the
sidewalks, cyclists ride at the curb where there is no parking lane.

Everything is drawn from `np.random.default_rng(seed)` in a fixed order, so the same seed (and
the same duration) gives the same world, bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from occ_ros.core.classes import OCC_INDEX
from occ_ros.core.errors import ConfigError

# class indices used by the world
OTHERS = OCC_INDEX['others']
BARRIER = OCC_INDEX['barrier']
BICYCLE = OCC_INDEX['bicycle']
BUS = OCC_INDEX['bus']
CAR = OCC_INDEX['car']
CONSTRUCTION = OCC_INDEX['construction_vehicle']
MOTORCYCLE = OCC_INDEX['motorcycle']
PEDESTRIAN = OCC_INDEX['pedestrian']
CONE = OCC_INDEX['traffic_cone']
TRAILER = OCC_INDEX['trailer']
TRUCK = OCC_INDEX['truck']
DRIVEABLE = OCC_INDEX['driveable_surface']
OTHER_FLAT = OCC_INDEX['other_flat']
SIDEWALK = OCC_INDEX['sidewalk']
TERRAIN = OCC_INDEX['terrain']
MANMADE = OCC_INDEX['manmade']
VEGETATION = OCC_INDEX['vegetation']

# materials (texture / shading style of a box) — used by the renderer
MAT_PLAIN, MAT_FACADE, MAT_FOLIAGE, MAT_GLASS, MAT_BARK, MAT_STRIPES, MAT_CLOTH = range(7)

# ground raster: low 5 bits class, paint flags above
GROUND_RES = 0.2                      # metres per ground-raster cell
PAINT_WHITE = 0x20
PAINT_YELLOW = 0x40
CLASS_BITS = 0x1F

LANE_W = 3.5
_EXTENT_D = 90.0                      # lateral extent of the world around the main road (m)
_AHEAD = 220.0                        # world length beyond the ego's last position (m)
_BEHIND = 140.0                       # ... and before its first position

@dataclass(frozen=True)
class WorldMix:
    """How often the rare classes appear in a world (see the module docstring).

    construction_zone_p / construction_vehicle_p: probability of a construction zone, and of a
    construction vehicle inside it; zone_cones / curb_cones / parked_two_wheelers: [lo, hi)
    counts of cones leading into the zone, cones scattered at the curbs, and bicycles or
    motorcycles parked along each side's curb; bike_lane_p: probability that a parking lane is a
    bike lane instead; vehicle_p: probabilities of car, truck, bus, trailer, construction
    vehicle, motorcycle for the other lanes' traffic.
    """

    construction_zone_p: float = 0.45
    construction_vehicle_p: float = 0.8
    zone_cones: tuple[int, int] = (3, 7)
    curb_cones: tuple[int, int] = (0, 8)
    parked_two_wheelers: tuple[int, int] = (0, 6)
    bike_lane_p: float = 0.3
    vehicle_p: tuple[float, float, float, float, float, float] = (0.66, 0.11, 0.07, 0.05, 0.03, 0.08)

    def __post_init__(self) -> None:
        for name in ('construction_zone_p', 'construction_vehicle_p', 'bike_lane_p'):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f'WorldMix.{name} must be a probability, got {v}')
        for name in ('zone_cones', 'curb_cones', 'parked_two_wheelers'):
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi:
                raise ConfigError(f'WorldMix.{name} must be a count range [lo, hi) with 0 <= lo < hi, '
                                  f'got {(lo, hi)}')
        if len(self.vehicle_p) != 6 or min(self.vehicle_p) < 0 or abs(sum(self.vehicle_p) - 1.0) > 1e-9:
            raise ConfigError(f'WorldMix.vehicle_p must be 6 probabilities summing to 1, '
                              f'got {self.vehicle_p}')


WORLD_MIXES: dict[str, WorldMix] = {
    'default': WorldMix(),
    # training data: cones, bicycles, motorcycles and construction vehicles are ~0.1-2 % of the
    # occupied voxels of default worlds (the first trained model never learnt them)
    'training': WorldMix(construction_zone_p=0.9, construction_vehicle_p=1.0, zone_cones=(6, 14),
                         curb_cones=(30, 70), parked_two_wheelers=(8, 20), bike_lane_p=0.6,
                         vehicle_p=(0.55, 0.11, 0.07, 0.05, 0.09, 0.13)),
}


def world_mix(name: str) -> WorldMix:
    """The named WorldMix ('default' or 'training'); ConfigError for other names."""
    try:
        return WORLD_MIXES[name]
    except KeyError:
        raise ConfigError(f'unknown world mix {name!r}; choose one of {sorted(WORLD_MIXES)}') from None


# Base colours (RGB 0–255) of things and stuff as the renderer draws them: natural-ish hues near
# occ_ros.core.classes.PALETTE, never equal to it. Per-instance jitter is added on top.
BASE_COLOURS: dict[int, tuple[int, int, int]] = {
    OTHERS: (112, 96, 82),
    BARRIER: (222, 122, 64),
    BICYCLE: (226, 168, 186),
    BUS: (226, 204, 58),
    CAR: (48, 122, 204),
    CONSTRUCTION: (52, 198, 194),
    MOTORCYCLE: (184, 164, 34),
    PEDESTRIAN: (204, 62, 56),
    CONE: (238, 218, 124),
    TRAILER: (138, 82, 38),
    TRUCK: (150, 72, 200),
    MANMADE: (206, 202, 214),
    VEGETATION: (48, 132, 48),
}
FACADE_COLOURS = ((206, 202, 214), (196, 184, 170), (184, 160, 150), (214, 210, 196), (170, 172, 180))
TRUNK_COLOUR = (96, 72, 48)


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------

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
        """(N, 8, 3) corners; corner j has signs (±x, ±y, ±z) from bits (j&1, j&2, j&4)."""
        signs = np.array([[(j & 1) * 2 - 1, ((j >> 1) & 1) * 2 - 1, ((j >> 2) & 1) * 2 - 1]
                          for j in range(8)], dtype=np.float64) * 0.5
        local = signs[None] * self.size[:, None, :]                       # (N, 8, 3)
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = local[..., 0] * c - local[..., 1] * s
        y = local[..., 0] * s + local[..., 1] * c
        return np.stack([x, y, local[..., 2]], axis=-1) + self.center[:, None, :]


class _BoxList:
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


# --------------------------------------------------------------------------------------------
# Main road geometry
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Moving things
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """One box of an object, in the object frame (x forward, z up from the ground)."""

    offset: tuple[float, float, float]    # centre offset (x, y, z) from the object's ground origin
    size: tuple[float, float, float]
    material: int = MAT_PLAIN
    colour_scale: float = 1.0


@dataclass(frozen=True)
class ObjectState:
    """A thing or stuff object at one instant (world frame).

    center: (3,) centre of the object's bounding box; size: (3,) its length, width, height;
    yaw: heading; velocity: (2,) world-frame planar velocity, m/s.
    """

    instance_id: int
    class_id: int
    center: np.ndarray
    size: np.ndarray
    yaw: float
    velocity: np.ndarray


Trajectory = Callable[[float], tuple[float, float, float, float, float]]  # t -> x, y, yaw, vx, vy


@dataclass
class Thing:
    """A moving (or parked) instance: class, parts in its own frame, colour and a trajectory."""

    instance_id: int
    class_id: int
    size: tuple[float, float, float]
    parts: tuple[Part, ...]
    colour: tuple[float, float, float]
    trajectory: Trajectory
    material: int = MAT_PLAIN


def _linear(s0: float, v: float, sgn: float) -> Callable[[float], float]:
    """s(t) = s0 + sgn·v·t."""
    return lambda t: s0 + sgn * v * t


def _const(v: float) -> Callable[[float], float]:
    return lambda t: v


def _vehicle_parts(cls: int, L: float, W: float, H: float) -> tuple[Part, ...]:
    """Two-box vehicles (body + cabin / cab + cargo) and single boxes for the rest."""
    if cls in (CAR,):
        hb = 0.55 * H
        return (Part((0.0, 0.0, hb / 2), (L, W, hb)),
                Part((-0.08 * L, 0.0, hb + (H - hb) / 2), (0.52 * L, 0.9 * W, H - hb), MAT_GLASS))
    if cls in (TRUCK, CONSTRUCTION):
        cab = 0.28 * L
        return (Part((L / 2 - cab / 2, 0.0, 0.42 * H), (cab, W, 0.84 * H), MAT_GLASS, 0.95),
                Part((-cab / 2, 0.0, H / 2 + 0.05), (L - cab - 0.2, W, H - 0.1)))
    if cls == BUS:
        return (Part((0.0, 0.0, 0.3 * H), (L, W, 0.6 * H)),
                Part((0.0, 0.0, 0.8 * H), (L, W, 0.4 * H), MAT_GLASS))
    if cls == PEDESTRIAN:
        return (Part((0.0, 0.0, 0.45 * H), (0.8 * L, 0.8 * W, 0.5 * H), MAT_CLOTH, 0.8),
                Part((0.0, 0.0, 0.825 * H), (L, W, 0.35 * H), MAT_CLOTH, 1.0),
                Part((0.0, 0.0, 0.25 * H + 0.0), (0.6 * L, 0.5 * W, 0.5 * H), MAT_CLOTH, 0.6))
    return (Part((0.0, 0.0, H / 2), (L, W, H)),)


# class: (length, width, height) typical sizes, metres (nuScenes-like means)
THING_SIZES: dict[int, tuple[float, float, float]] = {
    CAR: (4.6, 1.95, 1.7),
    TRUCK: (7.0, 2.5, 3.0),
    BUS: (11.0, 2.9, 3.4),
    TRAILER: (9.0, 2.5, 3.4),
    CONSTRUCTION: (6.4, 2.8, 3.2),
    MOTORCYCLE: (2.1, 0.8, 1.45),
    BICYCLE: (1.75, 0.6, 1.3),
    PEDESTRIAN: (0.6, 0.65, 1.75),
}


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------

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


class World:
    """A deterministic synthetic street scene.

    World(seed, duration, mix): the layout covers the ego's drive over [0, duration] seconds plus
    a margin, so poses and objects are defined for t in [0, duration]; `mix` sets how often the
    rare classes appear (default: the evaluation world).

    ego_pose(t) -> (4, 4) T_odom_base; ego_velocity(t) -> (v_forward m/s, yaw_rate rad/s);
    objects_at(t) -> list[ObjectState] (things and stuff); boxes_at(t) -> BoxSet (world frame,
    every box: static stuff and the parts of things); ground_class(x, y) -> class per point.
    """

    def __init__(self, seed: int, duration: float = 20.0, mix: WorldMix = WorldMix()) -> None:
        if duration <= 0 or not math.isfinite(duration):
            raise ConfigError(f'world duration must be a positive number of seconds, got {duration}')
        self.seed = int(seed)
        self.duration = float(duration)
        self.mix = mix
        rng = np.random.default_rng(self.seed)
        self._rng = rng
        # ---- road and ego --------------------------------------------------------------------
        lanes = int(rng.choice([1, 2], p=[0.45, 0.55]))
        median = float(rng.choice([0.0, 0.0, 1.6, 2.6])) if lanes == 2 else 0.0
        park_left = 2.4 if rng.random() < 0.5 else 0.0
        park_right = 2.4 if rng.random() < 0.5 else 0.0
        self.layout = Layout(lanes, median, park_left, park_right,
                             sidewalk=float(rng.uniform(2.2, 4.5)), verge=float(rng.uniform(0.0, 5.0)))
        v0 = float(rng.uniform(5.0, 11.0))
        amp = float(rng.uniform(0.0, 0.25)) * v0
        period = float(rng.uniform(8.0, 20.0))
        ego_lane = int(rng.integers(0, lanes))
        self.ego = EgoMotion(v0, amp, 2 * math.pi / period, self.layout.lane_centre(ego_lane, -1))
        self.ego_lane = ego_lane
        s_end = self.ego.s(self.duration)
        self.s_lo = -_BEHIND
        self.s_hi = s_end + _AHEAD
        length = self.s_hi - self.s_lo
        if rng.random() < 0.4:
            kappa = 0.0
        else:
            radius = float(rng.uniform(max(150.0, length / 1.3), max(600.0, length / 1.3 + 200.0)))
            kappa = float(rng.choice([-1.0, 1.0])) / radius
        self.road = MainRoad(kappa)
        self.sun = self._sun(rng)
        # ---- cross streets ---------------------------------------------------------------------
        self.cross: list[CrossStreet] = []
        s = self.s_lo + float(rng.uniform(15.0, 60.0))
        while s < self.s_hi - 15.0:
            hw = float(rng.choice([3.5, 3.5, 7.0]))
            p, t, n = self.road.frame(s)
            self.cross.append(CrossStreet(s, hw, float(rng.uniform(2.0, 3.5)), (float(p[0]), float(p[1])),
                                          (float(n[0]), float(n[1])), (float(t[0]), float(t[1]))))
            s += float(rng.uniform(45.0, 110.0)) + 2 * hw
        # block styles per side between cross streets
        bounds = [self.s_lo] + [c.s for c in self.cross] + [self.s_hi]
        self.blocks: list[tuple[float, float, int, str, str]] = []   # (s0, s1, side, style, lot ground)
        for a, b in zip(bounds[:-1], bounds[1:]):
            for side in (-1, 1):
                style = 'park' if rng.random() < 0.28 else 'urban'
                verge_cls = 'terrain' if (style == 'park' or rng.random() < 0.55) else 'other_flat'
                self.blocks.append((a, b, side, style, verge_cls))
        # ---- ground raster --------------------------------------------------------------------
        self._build_ground()
        # ---- static stuff -------------------------------------------------------------------------
        self._next_id = 1
        self.construction_zone: Optional[tuple[float, float]] = None
        static = _BoxList()
        self._things: list[Thing] = []
        self._place_static(rng, static)
        self.static_boxes = static.freeze()
        self._place_things(rng)

    # ------------------------------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------------------------------
    def ego_pose(self, t: float) -> np.ndarray:
        """(4, 4) float64 pose of base_link in the odom (world) frame at time t (seconds)."""
        s = self.ego.s(t)
        x, y = self.road.to_world(s, self.ego.lane_d)
        yaw = float(self.road.heading(s))
        c, sn = math.cos(yaw), math.sin(yaw)
        T = np.eye(4)
        T[0, 0], T[0, 1], T[1, 0], T[1, 1] = c, -sn, sn, c
        T[0, 3], T[1, 3] = float(x), float(y)
        return T

    def ego_velocity(self, t: float) -> tuple[float, float]:
        """(forward speed m/s of base_link, yaw rate rad/s) at time t."""
        v_centre = self.ego.v(t)
        # the lane is offset from the centre line: speed along the lane scales by (1 − κ·d)
        scale = 1.0 - self.road.kappa * self.ego.lane_d
        return v_centre * scale, v_centre * self.road.kappa

    def objects_at(self, t: float, include_static: bool = True) -> list[ObjectState]:
        """Things (instance ids ≥ 1) and, optionally, every static stuff box (id 0) at time t."""
        out = []
        for th in self._things:
            x, y, yaw, vx, vy = th.trajectory(t)
            out.append(ObjectState(th.instance_id, th.class_id,
                                   np.array([x, y, th.size[2] / 2]), np.array(th.size), yaw,
                                   np.array([vx, vy])))
        if include_static:
            b = self.static_boxes
            for k in range(len(b)):
                out.append(ObjectState(0, int(b.cls[k]), b.center[k].copy(), b.size[k].copy(),
                                       float(b.yaw[k]), np.zeros(2)))
        return out

    def thing_boxes_at(self, t: float) -> BoxSet:
        """Parts of every thing at time t (world frame)."""
        rows = _BoxList()
        for th in self._things:
            x, y, yaw, _, _ = th.trajectory(t)
            c, s = math.cos(yaw), math.sin(yaw)
            for p in th.parts:
                ox, oy, oz = p.offset
                col = tuple(min(255.0, v * p.colour_scale) for v in th.colour)
                rows.add((x + c * ox - s * oy, y + s * ox + c * oy, oz), p.size, yaw, th.class_id,
                         th.instance_id, col, p.material if p.material != MAT_PLAIN else th.material)
        return rows.freeze()

    def boxes_at(self, t: float, centre: Optional[np.ndarray] = None, radius: float = math.inf) -> BoxSet:
        """Every box at time t (static stuff first, then the parts of things), world frame.

        With `centre` (2,) and `radius`, only boxes whose footprint may reach within `radius`.
        """
        boxes = BoxSet.concat([self.static_boxes, self.thing_boxes_at(t)])
        if centre is not None and math.isfinite(radius) and len(boxes):
            half_diag = 0.5 * np.hypot(boxes.size[:, 0], boxes.size[:, 1])
            dist = np.hypot(boxes.center[:, 0] - centre[0], boxes.center[:, 1] - centre[1])
            boxes = boxes.select(dist - half_diag <= radius)
        return boxes

    @property
    def things(self) -> tuple[Thing, ...]:
        return tuple(self._things)

    def replace_content(self, static: BoxSet, things: Sequence[Thing] = (),
                        ground_class: Optional[int] = None) -> None:
        """Swap the generated content for a controlled scene (tests, experiments).

        The road, ego motion and sun stay; `static` replaces every stuff box, `things` every
        thing; `ground_class` (if given) paints the whole ground raster with one class, no paint.
        """
        self.static_boxes = static
        self._things = list(things)
        if ground_class is not None:
            self.ground[:] = np.uint8(ground_class)

    def make_thing(self, class_id: int, size: tuple[float, float, float], x: float, y: float, yaw: float,
                   colour: Optional[tuple[float, float, float]] = None,
                   velocity: tuple[float, float] = (0.0, 0.0)) -> Thing:
        """A thing with a fresh instance id moving at constant `velocity` from (x, y) at t = 0."""
        base = BASE_COLOURS[class_id]
        col = colour if colour is not None else (float(base[0]), float(base[1]), float(base[2]))
        vx, vy = velocity

        def traj(t: float) -> tuple[float, float, float, float, float]:
            return x + vx * t, y + vy * t, yaw, vx, vy
        return Thing(self._new_id(), class_id, size, _vehicle_parts(class_id, *size), col, traj)

    def ground_class(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground class (uint8) at world points (x, y) (nearest raster cell; terrain outside)."""
        return self.ground_cell(x, y) & CLASS_BITS

    def ground_cell(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Raw ground raster value (class | paint flags) at world points (x, y)."""
        ix = np.floor((np.asarray(x) - self.ground_x0) * (1.0 / GROUND_RES)).astype(np.int64)
        iy = np.floor((np.asarray(y) - self.ground_y0) * (1.0 / GROUND_RES)).astype(np.int64)
        h, w = self.ground.shape
        ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        out = np.full(ix.shape, TERRAIN, dtype=np.uint8)
        out[ok] = self.ground[iy[ok], ix[ok]]
        return out

    # ------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _sun(rng: np.random.Generator) -> np.ndarray:
        el = math.radians(float(rng.uniform(25.0, 65.0)))
        az = float(rng.uniform(0.0, 2 * math.pi))
        return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def _build_ground(self) -> None:
        """Rasterise ground classes and paint onto a world-aligned grid of GROUND_RES cells."""
        L = self.layout
        ss = np.linspace(self.s_lo, self.s_hi, 64)
        pts = [self.road.to_world(ss, np.full_like(ss, d)) for d in (-_EXTENT_D, _EXTENT_D)]
        xs = np.concatenate([p[0] for p in pts])
        ys = np.concatenate([p[1] for p in pts])
        self.ground_x0 = float(np.floor(xs.min() / GROUND_RES) * GROUND_RES) - 2.0
        self.ground_y0 = float(np.floor(ys.min() / GROUND_RES) * GROUND_RES) - 2.0
        w = int(math.ceil((xs.max() + 2.0 - self.ground_x0) / GROUND_RES))
        h = int(math.ceil((ys.max() + 2.0 - self.ground_y0) / GROUND_RES))
        g = np.full((h, w), TERRAIN, dtype=np.uint8)
        cx = self.ground_x0 + (np.arange(w) + 0.5) * GROUND_RES
        for r0 in range(0, h, 256):              # strips keep the temporaries small
            r1 = min(h, r0 + 256)
            cy = self.ground_y0 + (np.arange(r0, r1) + 0.5) * GROUND_RES
            X, Y = np.meshgrid(cx, cy)
            g[r0:r1] = self._ground_classes(X, Y, L)
        self.ground = g

    def _ground_classes(self, X: np.ndarray, Y: np.ndarray, L: Layout) -> np.ndarray:
        s, d = self.road.to_road(X, Y)
        out = np.full(X.shape, TERRAIN, dtype=np.uint8)
        inside = (s >= self.s_lo - 5) & (s <= self.s_hi + 5) & (np.abs(d) <= _EXTENT_D)
        el, er = L.edge_left, L.edge_right
        # verge / lot ground per block
        for (a, b, side, style, verge_cls) in self.blocks:
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
        for cs in self.cross:
            e, f = cs.to_local(X, Y)
            near = np.abs(e) <= _EXTENT_D
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

    def _clear_of_cross(self, s: float, margin: float) -> bool:
        return all(abs(s - c.s) > c.half_width + c.sidewalk + margin for c in self.cross)

    def _jitter(self, rng: np.random.Generator, base: tuple[int, int, int], amount: float = 14.0,
                bright: tuple[float, float] = (0.82, 1.15)) -> tuple[float, float, float]:
        k = float(rng.uniform(*bright))
        j = rng.uniform(-amount, amount, 3)
        r, g, b = (float(np.clip(base[i] * k + j[i], 0, 255)) for i in range(3))
        return (r, g, b)

    def _road_box(self, out: _BoxList, s: float, d: float, size, cls: int, colour, material=MAT_PLAIN,
                  z0: float = 0.0, yaw_offset: float = 0.0) -> None:
        x, y = self.road.to_world(s, d)
        out.add((float(x), float(y), z0 + size[2] / 2), size, float(self.road.heading(s)) + yaw_offset,
                cls, 0, colour, material)

    def _tree(self, out: _BoxList, rng: np.random.Generator, x: float, y: float, big: bool = True) -> None:
        trunk_h = float(rng.uniform(1.8, 3.0)) if big else float(rng.uniform(1.0, 1.6))
        tw = float(rng.uniform(0.25, 0.45))
        yaw = float(rng.uniform(0, math.pi))
        out.add((x, y, trunk_h / 2), (tw, tw, trunk_h), yaw, VEGETATION, 0,
                self._jitter(rng, TRUNK_COLOUR, 8), MAT_BARK)
        cw = float(rng.uniform(2.5, 5.0)) if big else float(rng.uniform(1.5, 2.5))
        ch = float(rng.uniform(2.5, 5.0)) if big else float(rng.uniform(1.5, 2.5))
        out.add((x, y, trunk_h + ch / 2 - 0.3), (cw, cw * float(rng.uniform(0.8, 1.1)), ch), yaw, VEGETATION,
                0, self._jitter(rng, BASE_COLOURS[VEGETATION], 18), MAT_FOLIAGE)

    def _place_static(self, rng: np.random.Generator, out: _BoxList) -> None:
        L = self.layout
        for (a, b, side, style, _verge) in self.blocks:
            edge = L.edge_left if side > 0 else -L.edge_right
            ca, cb = self._cross_at(a), self._cross_at(b)
            a_in = a + (ca.half_width + ca.sidewalk + 1.5 if ca is not None else 0.0)
            b_in = b - (cb.half_width + cb.sidewalk + 1.5 if cb is not None else 0.0)
            if b_in - a_in < 4:
                continue
            lot_start = edge + L.sidewalk + L.verge
            # furniture strip at the curb: poles, bins, parked bicycles (bicycles are things)
            s = a_in + float(rng.uniform(2, 15))
            while s < b_in - 1:
                d = side * (edge + 0.45)
                r = rng.random()
                if r < 0.45:
                    self._road_box(out, s, d, (0.22, 0.22, float(rng.uniform(5.0, 7.5))), MANMADE,
                                   self._jitter(rng, (150, 150, 156), 8))
                elif r < 0.65:
                    self._road_box(out, s, d, (0.7, 0.7, float(rng.uniform(0.9, 1.3))), OTHERS,
                                   self._jitter(rng, BASE_COLOURS[OTHERS], 20))
                elif r < 0.85 and L.verge < 1.5 and L.sidewalk > 3.0:
                    x, y = self.road.to_world(s, side * (edge + 1.2))
                    self._tree(out, rng, float(x), float(y), big=True)
                s += float(rng.uniform(8.0, 25.0))
            if L.verge >= 1.5 and style == 'urban' and rng.random() < 0.6:
                s = a_in + float(rng.uniform(3, 8))
                while s < b_in - 2:
                    x, y = self.road.to_world(s, side * (edge + L.sidewalk + L.verge / 2))
                    self._tree(out, rng, float(x), float(y), big=rng.random() < 0.7)
                    s += float(rng.uniform(7.0, 14.0))
            if style == 'urban':
                s = a_in + float(rng.uniform(0, 4))
                while s < b_in - 6:
                    front = float(min(rng.uniform(8.0, 26.0), b_in - s))
                    depth = float(rng.uniform(8.0, 20.0))
                    height = float(rng.uniform(4.0, 24.0))
                    setback = float(rng.uniform(0.0, 3.0))
                    col = self._jitter(rng, FACADE_COLOURS[int(rng.integers(len(FACADE_COLOURS)))], 10,
                                       (0.9, 1.08))
                    self._road_box(out, s + front / 2, side * (lot_start + setback + depth / 2),
                                   (front, depth, height), MANMADE, col, MAT_FACADE)
                    s += front + float(rng.uniform(0.0, 6.0))
            else:
                # park: hedge along the sidewalk and trees in rows
                if rng.random() < 0.7:
                    hh = float(rng.uniform(0.7, 1.4))
                    hd = float(rng.uniform(0.8, 1.5))
                    s0 = a_in + 1.0
                    while s0 < b_in - 2:
                        seg = float(min(rng.uniform(6, 14), b_in - s0))
                        self._road_box(out, s0 + seg / 2, side * (lot_start + hd / 2 + 0.3), (seg, hd, hh),
                                       VEGETATION, self._jitter(rng, (40, 118, 44), 12), MAT_FOLIAGE)
                        s0 += seg + float(rng.uniform(1.0, 4.0))
                rows = int(rng.integers(1, 4))
                for r in range(rows):
                    dd = lot_start + 4.0 + r * float(rng.uniform(5.0, 8.0))
                    s0 = a_in + float(rng.uniform(1, 6))
                    while s0 < b_in - 2:
                        x, y = self.road.to_world(s0, side * dd)
                        self._tree(out, rng, float(x), float(y), big=True)
                        s0 += float(rng.uniform(5.0, 11.0))
        # buildings along the cross streets, beyond the main road's building rows
        for cs in self.cross:
            for end in (-1, 1):
                for fside in (-1, 1):
                    e = 45.0 + float(rng.uniform(0, 5))
                    while e < _EXTENT_D - 5:
                        front = float(rng.uniform(8, 20))
                        depth = float(rng.uniform(8, 16))
                        f = fside * (cs.half_width + cs.sidewalk + 1.0 + depth / 2)
                        x, y = cs.to_world(end * (e + front / 2), f)
                        col = self._jitter(rng, FACADE_COLOURS[int(rng.integers(len(FACADE_COLOURS)))], 10)
                        h = float(rng.uniform(5, 20))
                        out.add((float(x), float(y), h / 2), (front, depth, h), cs.heading, MANMADE, 0, col,
                                MAT_FACADE)
                        e += front + float(rng.uniform(0, 5))
        # construction zone on the oncoming carriageway's outer lane (or the median)
        mix = self.mix
        if rng.random() < mix.construction_zone_p:
            s0 = float(rng.uniform(10.0, max(20.0, self.ego.s(self.duration) + 40.0)))
            length = float(rng.uniform(15.0, 35.0))
            if self._clear_of_cross(s0, 5) and self._clear_of_cross(s0 + length, 5):
                self.construction_zone = (s0, s0 + length)
                d_line = L.lane_centre(L.lanes - 1, 1) - LANE_W / 2 + 0.35
                s = s0
                while s < s0 + length:
                    self._road_box(out, s + 1.0, d_line, (1.95, 0.45, 0.95), BARRIER,
                                   self._jitter(rng, BASE_COLOURS[BARRIER], 10), MAT_STRIPES)
                    s += 2.05
                for k in range(int(rng.integers(*mix.zone_cones))):
                    self._road_box(out, s0 - 2.0 - 3.0 * k, d_line + 0.4 + 0.5 * k,
                                   (0.36, 0.36, 0.72), CONE, self._jitter(rng, BASE_COLOURS[CONE], 8),
                                   MAT_STRIPES)
        if L.median >= 1.6 and rng.random() < 0.5:
            s = self.s_lo + 5
            while s < self.s_hi - 5:
                if self._clear_of_cross(s, 2):
                    self._road_box(out, s, 0.0, (1.95, 0.5, 0.85), BARRIER,
                                   self._jitter(rng, (200, 196, 188), 8), MAT_PLAIN)
                s += 2.05
        # scattered cones at the curbs
        for _ in range(int(rng.integers(*mix.curb_cones))):
            s = float(rng.uniform(self.s_lo + 20, self.s_hi - 20))
            side = int(rng.choice([-1, 1]))
            edge = L.edge_left if side > 0 else -L.edge_right
            if self._clear_of_cross(s, 1):
                self._road_box(out, s, side * (edge + 0.3), (0.36, 0.36, 0.72), CONE,
                               self._jitter(rng, BASE_COLOURS[CONE], 8), MAT_STRIPES)

    def _cross_at(self, s: float) -> Optional[CrossStreet]:
        for c in self.cross:
            if abs(c.s - s) < 1e-9:
                return c
        return None

    # ------------------------------------------------------------------------------------------
    # things
    # ------------------------------------------------------------------------------------------
    def _dims(self, rng: np.random.Generator, cls: int) -> tuple[float, float, float]:
        L, W, H = THING_SIZES[cls]
        k = float(rng.uniform(0.9, 1.1))
        return (L * k * float(rng.uniform(0.95, 1.05)), W * float(rng.uniform(0.93, 1.07)),
                H * float(rng.uniform(0.9, 1.1)))

    def _new_thing(self, rng: np.random.Generator, cls: int, traj: Optional[Trajectory],
                   dims: Optional[tuple[float, float, float]] = None) -> Thing:
        dims = dims or self._dims(rng, cls)
        if cls == PEDESTRIAN:
            colour = self._jitter(rng, BASE_COLOURS[cls], 40, (0.7, 1.2))
        else:
            colour = self._jitter(rng, BASE_COLOURS[cls], 22, (0.75, 1.18))
        th = Thing(self._new_id(), cls, dims, _vehicle_parts(cls, *dims), colour,
                   traj if traj is not None else (lambda t: (0.0, 0.0, 0.0, 0.0, 0.0)))
        self._things.append(th)
        return th

    def _road_traj(self, s_of_t: Callable[[float], float], v_of_t: Callable[[float], float], d: float,
                   reverse: bool) -> Trajectory:
        road = self.road

        def traj(t: float) -> tuple[float, float, float, float, float]:
            s = s_of_t(t)
            x, y = road.to_world(s, d)
            h = float(road.heading(s))
            v = v_of_t(t) * (1.0 - road.kappa * d)
            sgn = -1.0 if reverse else 1.0
            return float(x), float(y), h + (math.pi if reverse else 0.0), sgn * v * math.cos(h), sgn * v * math.sin(h)
        return traj

    def _follow(self, offset: float) -> Callable[[float], float]:
        """s(t) of a vehicle keeping a fixed gap `offset` to the ego (same speed profile)."""
        ego = self.ego
        return lambda t: ego.s(t) + offset

    def _static_traj(self, x: float, y: float, yaw: float) -> Trajectory:
        return lambda t: (x, y, yaw, 0.0, 0.0)

    def _vehicle_class(self, rng: np.random.Generator) -> int:
        return int(rng.choice([CAR, TRUCK, BUS, TRAILER, CONSTRUCTION, MOTORCYCLE],
                              p=list(self.mix.vehicle_p)))

    def _place_things(self, rng: np.random.Generator) -> None:
        L = self.layout
        T = self.duration
        ego = self.ego
        # ---- the ego's lane: followers of the ego's own speed profile ---------------------------
        for direction in (1, -1):
            gap_from_ego = 2.6 + 3.0                 # ego half length + margin
            offset = gap_from_ego
            for _ in range(int(rng.integers(1, 4))):
                cls = int(rng.choice([CAR, CAR, CAR, TRUCK, BUS, MOTORCYCLE]))
                dims = self._dims(rng, cls)
                offset += float(rng.uniform(8.0, 35.0)) + dims[0] / 2
                off = direction * offset

                self._new_thing(rng, cls, self._road_traj(self._follow(off), ego.v, ego.lane_d, False), dims)
                offset += dims[0] / 2
        # ---- other lanes: each lane one speed ------------------------------------------------------
        for side in (-1, 1):
            for lane in range(L.lanes):
                if side == -1 and lane == self.ego_lane:
                    continue
                d = L.lane_centre(lane, side)
                if side == 1 and self.construction_zone and lane == L.lanes - 1:
                    continue                              # closed by the construction zone
                v = float(rng.uniform(0.6, 1.35)) * ego.v0 if rng.random() < 0.9 else 0.0
                reverse = side == 1
                # spread initial positions over the region that passes near the ego during [0, T]
                lo = self.s_lo - v * T - 30 if reverse is False else self.s_lo
                hi = self.s_hi if reverse is False else self.s_hi + v * T + 30
                s = lo + float(rng.uniform(0, 20))
                sgn = -1.0 if reverse else 1.0
                while s < hi:
                    cls = self._vehicle_class(rng)
                    group = [cls]
                    if cls == TRUCK and rng.random() < 0.5:
                        # a truck pulling a trailer: the trailer is the rear unit
                        group = [TRAILER, TRUCK] if not reverse else [TRUCK, TRAILER]
                    for k, c in enumerate(group):
                        dims = self._dims(rng, c)
                        s += dims[0] / 2

                        self._new_thing(rng, c, self._road_traj(_linear(s, v, sgn), _const(v), d, reverse), dims)
                        s += dims[0] / 2 + (0.6 if k + 1 < len(group) else 0.0)
                    s += float(rng.uniform(8.0, 55.0))
        # ---- curb lanes: parked vehicles, or a bike lane with cyclists at one speed --------------------
        for side, width in ((-1, L.park_right), (1, L.park_left)):
            if width <= 0:
                continue
            d = side * (L.median / 2 + L.lanes * LANE_W + width / 2)
            if rng.random() < self.mix.bike_lane_p:
                v = float(rng.uniform(3.0, 6.0))
                reverse = side > 0
                sgn = -1.0 if reverse else 1.0
                s = self.s_lo - (0.0 if reverse else v * T) + float(rng.uniform(0, 30))
                while s < self.s_hi + (v * T if reverse else 0.0):
                    cls = BICYCLE if rng.random() < 0.8 else MOTORCYCLE
                    dims = self._dims(rng, cls)
                    s += dims[0] / 2
                    self._new_thing(rng, cls, self._road_traj(_linear(s, v, sgn),
                                                              _const(v), d, reverse), dims)
                    s += dims[0] / 2 + float(rng.uniform(6.0, 40.0))
                continue
            s = self.s_lo + float(rng.uniform(0, 10))
            while s < self.s_hi:
                cls = int(rng.choice([CAR, CAR, CAR, CAR, TRUCK, TRAILER, MOTORCYCLE, BUS]))
                dims = self._dims(rng, cls)
                if dims[1] > width + 0.4:
                    dims = (dims[0], width + 0.3, dims[2])
                s += dims[0] / 2
                if self._clear_of_cross(s, dims[0] / 2 + 1.0) and rng.random() < 0.6:
                    x, y = self.road.to_world(s, d)
                    yaw = float(self.road.heading(s)) + (math.pi if side > 0 else 0.0)
                    self._new_thing(rng, cls, self._static_traj(float(x), float(y), yaw), dims)
                s += dims[0] / 2 + float(rng.uniform(1.0, 9.0))
        # ---- pedestrians on the main sidewalks and parked bicycles --------------------------------
        for side in (-1, 1):
            edge = L.edge_left if side > 0 else -L.edge_right
            # walking tracks 0.8 m apart beyond the furniture strip; one speed and direction per
            # track so walkers never run into each other; the outermost of ≥ 2 tracks holds
            # people standing still
            tracks = list(np.arange(edge + 1.1, edge + L.sidewalk - 0.34, 0.8))
            standing = tracks.pop() if len(tracks) >= 2 else None
            for d_abs in tracks:
                v = float(rng.uniform(0.8, 1.7))
                reverse = rng.random() < 0.5
                sgn = -1.0 if reverse else 1.0
                span = v * T
                s0 = self.s_lo - (0.0 if reverse else span) + float(rng.uniform(0, 8))
                while s0 < self.s_hi + (span if reverse else 0.0):
                    self._new_thing(rng, PEDESTRIAN, self._road_traj(
                        _linear(s0, v, sgn), _const(v), side * d_abs, reverse))
                    s0 += float(rng.uniform(1.2, 28.0))
            if standing is not None:
                s0 = self.s_lo + float(rng.uniform(0, 20))
                while s0 < self.s_hi:
                    x, y = self.road.to_world(s0, side * standing)
                    self._new_thing(rng, PEDESTRIAN, self._static_traj(float(x), float(y),
                                                                       float(rng.uniform(0, 2 * math.pi))))
                    s0 += float(rng.uniform(4.0, 45.0))
            for _ in range(int(rng.integers(*self.mix.parked_two_wheelers))):
                s0 = float(rng.uniform(self.s_lo, self.s_hi))
                if not self._clear_of_cross(s0, 1.5):
                    continue
                cls = BICYCLE if rng.random() < 0.75 else MOTORCYCLE
                dims = self._dims(rng, cls)
                # parked along the curb, inside the furniture strip (pedestrians walk beyond it)
                x, y = self.road.to_world(s0, side * (edge + 0.5))
                sb = self.static_boxes
                if len(sb) and np.min(np.hypot(sb.center[:, 0] - x, sb.center[:, 1] - y)
                                      - 0.5 * np.hypot(sb.size[:, 0], sb.size[:, 1])) < dims[0] / 2 + 0.3:
                    continue                               # a pole, bin or tree is there
                yaw = float(self.road.heading(s0)) + (math.pi if rng.random() < 0.5 else 0.0)
                self._new_thing(rng, cls, self._static_traj(float(x), float(y), yaw), dims)
        # ---- construction vehicle inside the construction zone ---------------------------------------
        if self.construction_zone is not None:
            s0, s1 = self.construction_zone
            d = L.lane_centre(L.lanes - 1, 1) + 0.6
            if rng.random() < self.mix.construction_vehicle_p:
                x, y = self.road.to_world((s0 + s1) / 2, d)
                self._new_thing(rng, CONSTRUCTION, self._static_traj(
                    float(x), float(y), float(self.road.heading((s0 + s1) / 2)) + float(rng.uniform(-0.12, 0.12))))
        # ---- cross-street traffic: queues stopping before the main road, and departures ------------
        for cs in self.cross:
            for end in (-1, 1):                   # end +1: the main road's left side
                main_edge = (L.edge_left if end > 0 else -L.edge_right) + L.sidewalk + 1.0
                # approaching lane: drives toward the main road (e decreasing in |e|)
                f_in = -end * cs.half_width / 2 if cs.half_width < 4 else -end * (cs.half_width - LANE_W / 2)
                f_out = -f_in
                v = float(rng.uniform(3.0, 9.0))
                stop = main_edge
                start = main_edge + float(rng.uniform(-10.0, 40.0))
                for k in range(int(rng.integers(0, 4))):
                    cls = int(rng.choice([CAR, CAR, CAR, TRUCK, BUS, MOTORCYCLE]))
                    dims = self._dims(rng, cls)
                    stop_k = stop + dims[0] / 2
                    start_k = max(start, stop_k) + dims[0] / 2
                    self._new_thing(rng, cls, self._cross_traj(cs, end, f_in, start_k, stop_k, v, True), dims)
                    stop = stop_k + dims[0] / 2 + 1.5
                    start = start_k + dims[0] / 2 + float(rng.uniform(3.0, 20.0))
                # departing lane: starts outside the main road, drives away
                v = float(rng.uniform(3.0, 9.0))
                start = main_edge + 3.0 + float(rng.uniform(0.0, 10.0))
                for k in range(int(rng.integers(0, 3))):
                    cls = int(rng.choice([CAR, CAR, TRUCK, MOTORCYCLE]))
                    dims = self._dims(rng, cls)
                    e0 = start + dims[0] / 2
                    self._new_thing(rng, cls, self._cross_traj(cs, end, f_out, e0, None, v, False), dims)
                    start = e0 + dims[0] / 2 + float(rng.uniform(5.0, 25.0))

    def _cross_traj(self, cs: CrossStreet, end: int, f: float, e_start: float, e_stop: Optional[float],
                    v: float, approaching: bool) -> Trajectory:
        """|e| moves from e_start toward the main road (approaching, stopping at e_stop) or away."""
        ux, uy = cs.along

        def traj(t: float) -> tuple[float, float, float, float, float]:
            if approaching:
                mag = max(e_start - v * t, e_stop if e_stop is not None else -math.inf)
                moving = (e_start - v * t) > (e_stop if e_stop is not None else -math.inf)
                sgn = -1.0
            else:
                mag = e_start + v * t
                moving = True
                sgn = 1.0
            x, y = cs.to_world(end * mag, f)
            dir_e = end * sgn                      # direction of travel along +e
            yaw = cs.heading + (0.0 if dir_e > 0 else math.pi)
            speed = v if moving else 0.0
            return float(x), float(y), yaw, dir_e * speed * ux, dir_e * speed * uy
        return traj


__all__ = ['World', 'WorldMix', 'WORLD_MIXES', 'world_mix', 'BoxSet', 'ObjectState', 'Thing', 'Part', 'MainRoad', 'CrossStreet', 'Layout',
           'EgoMotion', 'BASE_COLOURS', 'THING_SIZES', 'GROUND_RES', 'PAINT_WHITE', 'PAINT_YELLOW',
           'CLASS_BITS']
