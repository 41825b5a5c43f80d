"""Things of the synthetic world: parts, states, trajectories and the sizes of each class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from occ_ros.bag.world_mix import (BICYCLE, BUS, CAR, CONSTRUCTION, MAT_CLOTH, MAT_GLASS, MAT_PLAIN,
                                  MOTORCYCLE, PEDESTRIAN, TRAILER, TRUCK)


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


def linear_fn(s0: float, v: float, sgn: float) -> Callable[[float], float]:
    """s(t) = s0 + sgn·v·t."""
    return lambda t: s0 + sgn * v * t


def const_fn(v: float) -> Callable[[float], float]:
    return lambda t: v


def vehicle_parts(cls: int, L: float, W: float, H: float) -> tuple[Part, ...]:
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
