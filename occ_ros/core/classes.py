"""The one table of Occ3D-nuScenes classes, the panoptic thing set, the detection-head classes and colours.

Occupancy index order is FlashOcc's (= nuScenes-lidarseg 0–16, free = 17). The centerness
heatmap channels are in the *training config* order (`DET_CLASSES`); `DET_TO_OCC` maps them onto
occupancy classes correctly. The official post-processing used swapped tables
(`OFFICIAL_DET_TO_OCC`, `OFFICIAL_OCC_TO_DET`); they are kept only for `official_compat`.
"""
from __future__ import annotations

OCC_CLASSES: tuple[str, ...] = (
    'others', 'barrier', 'bicycle', 'bus', 'car', 'construction_vehicle', 'motorcycle',
    'pedestrian', 'traffic_cone', 'trailer', 'truck', 'driveable_surface', 'other_flat',
    'sidewalk', 'terrain', 'manmade', 'vegetation', 'free',
)
NUM_CLASSES = len(OCC_CLASSES)            # 18, free included
FREE = OCC_CLASSES.index('free')          # 17
NUM_SEMANTIC = FREE                       # classes 0..16 enter mIoU / RayIoU
OCC_INDEX = {name: i for i, name in enumerate(OCC_CLASSES)}

THING_NAMES: tuple[str, ...] = (
    'bicycle', 'bus', 'car', 'construction_vehicle', 'motorcycle', 'pedestrian', 'trailer', 'truck')
THING_CLASSES: frozenset[int] = frozenset(OCC_INDEX[n] for n in THING_NAMES)   # {2,3,4,5,6,7,9,10}

# Occupancy classes an obstacle grid treats as traversable ground.
GROUND_CLASSES: frozenset[int] = frozenset(
    OCC_INDEX[n] for n in ('driveable_surface', 'other_flat', 'sidewalk', 'terrain'))

# Centerness heatmap channels, training-config order (FlashOcc `class_names`).
DET_CLASSES: tuple[str, ...] = (
    'car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle',
    'bicycle', 'pedestrian', 'traffic_cone',
)
NUM_DET_CLASSES = len(DET_CLASSES)
# heatmap channel → occupancy class (semantically correct pairing)
DET_TO_OCC: tuple[int, ...] = tuple(OCC_INDEX[n] for n in DET_CLASSES)

# The official post-processing tables (bevdet_occ.py), written for the eval class order
# [car, truck, trailer, bus, construction_vehicle, bicycle, motorcycle, pedestrian,
# traffic_cone, barrier] but applied to heatmap channels in training order. See flashocc.md §2.5.
OFFICIAL_DET_TO_OCC: tuple[int, ...] = (4, 10, 9, 3, 5, 2, 6, 7, 8, 1)
OFFICIAL_OCC_TO_DET: tuple[int, ...] = (-1, -1, 5, 3, 0, 4, 6, 7, -1, 2, 1)

# RGB colours (0–255), one per occupancy class; free is never drawn.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),          # others
    (255, 120, 50),     # barrier
    (255, 192, 203),    # bicycle
    (255, 255, 0),      # bus
    (0, 150, 245),      # car
    (0, 255, 255),      # construction_vehicle
    (200, 180, 0),      # motorcycle
    (255, 0, 0),        # pedestrian
    (255, 240, 150),    # traffic_cone
    (135, 60, 0),       # trailer
    (160, 32, 240),     # truck
    (255, 0, 255),      # driveable_surface
    (139, 137, 137),    # other_flat
    (75, 0, 75),        # sidewalk
    (150, 240, 80),     # terrain
    (230, 230, 250),    # manmade
    (0, 175, 0),        # vegetation
    (255, 255, 255),    # free
)

# Occupancy class frequencies on Occ3D-nuScenes train (bev_occ_head.py), for loss weights.
CLASS_FREQUENCIES: tuple[int, ...] = (
    944004, 1897170, 152386, 2391677, 16957802, 724139, 189027, 2074468, 413451, 2384460,
    5916653, 175883646, 4275424, 51393615, 61411620, 105975596, 116424404, 1892500630,
)
