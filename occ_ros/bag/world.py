"""A seeded synthetic driving world: roads, ground classes, buildings, vegetation, static stuff,
moving things with instance ids, and an ego vehicle with exact odometry. This module draws the
layout and the static stuff and answers the queries at time t (ego pose and velocity, objects,
boxes, ground class); the moving things are drawn by `world_traffic.Traffic`.

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

Moving things never collide with the ego or each other (`world_traffic`): every vehicle in a
main-road lane moves with that lane's speed (the ego's lane moves with the ego's own speed
profile), cross-street traffic approaching the main road queues at stop lines outside it,
pedestrians walk along the sidewalks, cyclists ride at the curb where there is no parking lane.

Everything is drawn from `np.random.default_rng(seed)` in a fixed order, so the same seed (and
the same duration) gives the same world, bit for bit.
"""
# Modules: `world_mix` (vocabulary, WorldMix), `boxes`, `road` (layout, ground raster),
# `things` (moving objects), `world_traffic` (placing them); `World` (this module) draws them
# from one seed.
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from occ_ros.bag.boxes import BoxList, BoxSet
from occ_ros.bag.road import CrossStreet, EgoMotion, Layout, MainRoad, ground_raster
from occ_ros.bag.things import ObjectState, Thing, vehicle_parts
from occ_ros.bag.world_mix import (BARRIER, BASE_COLOURS, CLASS_BITS, CONE, FACADE_COLOURS, GROUND_RES, LANE_W,
                                   MANMADE, MAT_BARK, MAT_FACADE, MAT_FOLIAGE, MAT_PLAIN, MAT_STRIPES, OTHERS,
                                   TERRAIN, TRUNK_COLOUR, VEGETATION, WORLD_AHEAD_M, WORLD_BEHIND_M,
                                   WORLD_EXTENT_D_M, WorldMix, jitter_colour, sun_direction)
from occ_ros.bag.world_traffic import Traffic
from occ_ros.core.errors import ConfigError


class World(Traffic):
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
        self.s_lo = -WORLD_BEHIND_M
        self.s_hi = s_end + WORLD_AHEAD_M
        length = self.s_hi - self.s_lo
        if rng.random() < 0.4:
            kappa = 0.0
        else:
            radius = float(rng.uniform(max(150.0, length / 1.3), max(600.0, length / 1.3 + 200.0)))
            kappa = float(rng.choice([-1.0, 1.0])) / radius
        self.road = MainRoad(kappa)
        self.sun = sun_direction(rng)
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
        static = BoxList()
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
        rows = BoxList()
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
        return Thing(self._new_id(), class_id, size, vehicle_parts(class_id, *size), col, traj)

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
    def _build_ground(self) -> None:
        """Rasterise ground classes and paint onto a world-aligned grid of GROUND_RES cells."""
        self.ground, self.ground_x0, self.ground_y0 = ground_raster(
            self.road, self.layout, self.cross, self.blocks, self.s_lo, self.s_hi)

    def _clear_of_cross(self, s: float, margin: float) -> bool:
        return all(abs(s - c.s) > c.half_width + c.sidewalk + margin for c in self.cross)

    def _road_box(self, out: BoxList, s: float, d: float, size, cls: int, colour, material=MAT_PLAIN,
                  z0: float = 0.0, yaw_offset: float = 0.0) -> None:
        x, y = self.road.to_world(s, d)
        out.add((float(x), float(y), z0 + size[2] / 2), size, float(self.road.heading(s)) + yaw_offset,
                cls, 0, colour, material)

    def _tree(self, out: BoxList, rng: np.random.Generator, x: float, y: float, big: bool = True) -> None:
        trunk_h = float(rng.uniform(1.8, 3.0)) if big else float(rng.uniform(1.0, 1.6))
        tw = float(rng.uniform(0.25, 0.45))
        yaw = float(rng.uniform(0, math.pi))
        out.add((x, y, trunk_h / 2), (tw, tw, trunk_h), yaw, VEGETATION, 0,
                jitter_colour(rng, TRUNK_COLOUR, 8), MAT_BARK)
        cw = float(rng.uniform(2.5, 5.0)) if big else float(rng.uniform(1.5, 2.5))
        ch = float(rng.uniform(2.5, 5.0)) if big else float(rng.uniform(1.5, 2.5))
        out.add((x, y, trunk_h + ch / 2 - 0.3), (cw, cw * float(rng.uniform(0.8, 1.1)), ch), yaw, VEGETATION,
                0, jitter_colour(rng, BASE_COLOURS[VEGETATION], 18), MAT_FOLIAGE)

    def _place_static(self, rng: np.random.Generator, out: BoxList) -> None:
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
                                   jitter_colour(rng, (150, 150, 156), 8))
                elif r < 0.65:
                    self._road_box(out, s, d, (0.7, 0.7, float(rng.uniform(0.9, 1.3))), OTHERS,
                                   jitter_colour(rng, BASE_COLOURS[OTHERS], 20))
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
                    col = jitter_colour(rng, FACADE_COLOURS[int(rng.integers(len(FACADE_COLOURS)))], 10,
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
                                       VEGETATION, jitter_colour(rng, (40, 118, 44), 12), MAT_FOLIAGE)
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
                    while e < WORLD_EXTENT_D_M - 5:
                        front = float(rng.uniform(8, 20))
                        depth = float(rng.uniform(8, 16))
                        f = fside * (cs.half_width + cs.sidewalk + 1.0 + depth / 2)
                        x, y = cs.to_world(end * (e + front / 2), f)
                        col = jitter_colour(rng, FACADE_COLOURS[int(rng.integers(len(FACADE_COLOURS)))], 10)
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
                                   jitter_colour(rng, BASE_COLOURS[BARRIER], 10), MAT_STRIPES)
                    s += 2.05
                for k in range(int(rng.integers(*mix.zone_cones))):
                    self._road_box(out, s0 - 2.0 - 3.0 * k, d_line + 0.4 + 0.5 * k,
                                   (0.36, 0.36, 0.72), CONE, jitter_colour(rng, BASE_COLOURS[CONE], 8),
                                   MAT_STRIPES)
        if L.median >= 1.6 and rng.random() < 0.5:
            s = self.s_lo + 5
            while s < self.s_hi - 5:
                if self._clear_of_cross(s, 2):
                    self._road_box(out, s, 0.0, (1.95, 0.5, 0.85), BARRIER,
                                   jitter_colour(rng, (200, 196, 188), 8), MAT_PLAIN)
                s += 2.05
        # scattered cones at the curbs
        for _ in range(int(rng.integers(*mix.curb_cones))):
            s = float(rng.uniform(self.s_lo + 20, self.s_hi - 20))
            side = int(rng.choice([-1, 1]))
            edge = L.edge_left if side > 0 else -L.edge_right
            if self._clear_of_cross(s, 1):
                self._road_box(out, s, side * (edge + 0.3), (0.36, 0.36, 0.72), CONE,
                               jitter_colour(rng, BASE_COLOURS[CONE], 8), MAT_STRIPES)

    def _cross_at(self, s: float) -> Optional[CrossStreet]:
        for c in self.cross:
            if abs(c.s - s) < 1e-9:
                return c
        return None
