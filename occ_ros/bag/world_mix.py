"""The synthetic world's vocabulary: class shorthands, materials, ground-raster flags, road
constants, the `WorldMix` of rare-class frequencies and the base colours of the renderer."""
from __future__ import annotations

import math
from dataclasses import dataclass

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


WORLD_EXTENT_D_M = 90.0                      # lateral extent of the world around the main road (m)


WORLD_AHEAD_M = 220.0                        # world length beyond the ego's last position (m)


WORLD_BEHIND_M = 140.0                       # ... and before its first position


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


def sun_direction(rng: np.random.Generator) -> np.ndarray:
    """A random sun direction (unit vector, world frame) 25–65° above the horizon."""
    el = math.radians(float(rng.uniform(25.0, 65.0)))
    az = float(rng.uniform(0.0, 2 * math.pi))
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def jitter_colour(rng: np.random.Generator, base: tuple[int, int, int], amount: float = 14.0,
                  bright: tuple[float, float] = (0.82, 1.15)) -> tuple[float, float, float]:
    """`base` RGB scaled by a random brightness and jittered per channel, clipped to 0–255."""
    k = float(rng.uniform(*bright))
    j = rng.uniform(-amount, amount, 3)
    r, g, b = (float(np.clip(base[i] * k + j[i], 0, 255)) for i in range(3))
    return (r, g, b)
