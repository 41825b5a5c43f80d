"""The moving things of the synthetic world (`World`): which vehicles, cyclists and pedestrians
it holds and the trajectories that keep them from ever colliding with the ego or each other.

Every vehicle in a main-road lane moves with that lane's speed (the ego's lane moves with the
ego's own speed profile); parking lanes hold parked vehicles or a bike lane of cyclists at one
speed; pedestrians walk along the sidewalks on tracks of one speed and direction each (the
outermost of two or more holds people standing still), two-wheelers park along the curb clear of
the street furniture; a construction zone may hold a construction vehicle; cross-street traffic
approaching the main road queues at stop lines outside it, departing traffic drives away.

`Traffic` is the part of `World` that draws them: `World.__init__` calls `_place_things(rng)`
once its layout and static stuff are drawn (the draws continue its one random stream, in a fixed
order), and each thing gets a fresh instance id (≥ 1) from `_new_id`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from occ_ros.bag.boxes import BoxSet
from occ_ros.bag.road import CrossStreet, EgoMotion, Layout, MainRoad
from occ_ros.bag.things import THING_SIZES, Thing, Trajectory, const_fn, linear_fn, vehicle_parts
from occ_ros.bag.world_mix import (BASE_COLOURS, BICYCLE, BUS, CAR, CONSTRUCTION, LANE_W, MOTORCYCLE,
                                   PEDESTRIAN, TRAILER, TRUCK, WorldMix, jitter_colour)


class Traffic:
    """The things of a `World` (a base class of it): their placement and trajectories.

    Reads the world's layout (set by `World.__init__` before `_place_things` runs) and appends to
    `_things`.
    """

    # the world's layout, ego and static stuff (World.__init__)
    layout: Layout
    road: MainRoad
    cross: list[CrossStreet]
    ego: EgoMotion
    ego_lane: int
    duration: float
    mix: WorldMix
    s_lo: float
    s_hi: float
    construction_zone: Optional[tuple[float, float]]
    static_boxes: BoxSet
    _clear_of_cross: Callable[[float, float], bool]
    # the things and the next free instance id
    _things: list[Thing]
    _next_id: int

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def _dims(self, rng: np.random.Generator, cls: int) -> tuple[float, float, float]:
        L, W, H = THING_SIZES[cls]
        k = float(rng.uniform(0.9, 1.1))
        return (L * k * float(rng.uniform(0.95, 1.05)), W * float(rng.uniform(0.93, 1.07)),
                H * float(rng.uniform(0.9, 1.1)))

    def _new_thing(self, rng: np.random.Generator, cls: int, traj: Optional[Trajectory],
                   dims: Optional[tuple[float, float, float]] = None) -> Thing:
        dims = dims or self._dims(rng, cls)
        if cls == PEDESTRIAN:
            colour = jitter_colour(rng, BASE_COLOURS[cls], 40, (0.7, 1.2))
        else:
            colour = jitter_colour(rng, BASE_COLOURS[cls], 22, (0.75, 1.18))
        th = Thing(self._new_id(), cls, dims, vehicle_parts(cls, *dims), colour,
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

                        self._new_thing(rng, c, self._road_traj(linear_fn(s, v, sgn), const_fn(v), d, reverse), dims)
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
                    self._new_thing(rng, cls, self._road_traj(linear_fn(s, v, sgn),
                                                              const_fn(v), d, reverse), dims)
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
                        linear_fn(s0, v, sgn), const_fn(v), side * d_abs, reverse))
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
