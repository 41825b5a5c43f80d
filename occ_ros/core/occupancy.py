"""The one occupancy volume type: predictions, ground truth, decoded messages and Occ3D files.

`Occupancy` holds one frame in the Occ3D-nuScenes layout, arrays indexed [x, y, z] =
`GridSpec.shape`:

    semantics     uint8 class ids 0..17 (17 = free; ground truth may hold 255 = ignore)
    instances     optional integer ids (0 = stuff / free / unassigned, ≥ 1 things)
    mask_camera   optional bool, voxels seen by the cameras (ground truth: the mIoU mask;
                  a prediction decoded from the node: the union of the live cameras' frusta)
    mask_lidar    optional bool (Occ3D ground truth)
    origins       optional (K, 3) ego-frame ray origins in metres (RayIoU / RayPQ)
    instance_table one `InstanceInfo` per id present (ground truth and node outputs)
    ego_pose      optional (4, 4) T_odom_ego at `stamp_ns`

Ground truth is this type with its masks; a prediction is this type with semantics (and
instances). The one conversion from the ROS message is `occupancy_from_message` (duck-typed, so
it decodes rclpy and rosbags objects alike and needs no ROS import); the Occ3D `.npz` reading
and writing is `occ_ros.metrics.io`, which returns and takes this type.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from occ_ros.core.classes import FREE, OCC_CLASSES
from occ_ros.core.config import GridSpec
from occ_ros.core.errors import ConfigError, InputError


@dataclass(frozen=True)
class InstanceInfo:
    """One thing in a frame: id, Occ3D class, centre (ego, metres), voxel count, and the score of
    the detected centre that claimed it (1.0 in ground truth)."""

    id: int
    label: int
    center: tuple[float, float, float]
    voxel_count: int
    score: float = 1.0


@dataclass
class Occupancy:
    """One frame of (panoptic) occupancy; see the module docstring for the fields."""

    semantics: np.ndarray
    instances: Optional[np.ndarray] = None
    mask_camera: Optional[np.ndarray] = None
    mask_lidar: Optional[np.ndarray] = None
    origins: Optional[np.ndarray] = None
    instance_table: list[InstanceInfo] = field(default_factory=list)
    ego_pose: Optional[np.ndarray] = None
    stamp_ns: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        nx, ny, nz = self.semantics.shape
        return int(nx), int(ny), int(nz)

    @classmethod
    def empty(cls, grid: GridSpec, free: int = FREE) -> 'Occupancy':
        """An all-free frame (what a missing prediction counts as with `--missing empty`)."""
        return cls(np.full(grid.shape, free, dtype=np.uint8), np.zeros(grid.shape, dtype=np.uint16))


@dataclass(frozen=True)
class PanopticFields:
    """The values of an occ_ros/msg/PanopticOccupancy for one frame (everything but the header and
    the message classes), so the node's publisher (rclpy) and the bag writer (rosbags) fill the
    message from one conversion. Arrays are flat in Occ3D order: index = (i·ny + j)·nz + k."""

    size: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]
    class_names: tuple[str, ...]
    free_label: int
    semantics: np.ndarray                 # (N,) uint8
    instances: np.ndarray                 # (N,) uint16
    visible: np.ndarray                   # (N,) uint8, or (0,) when the frame has no mask_camera
    instance_table: tuple[InstanceInfo, ...]


def check_shape(occ: Occupancy, grid: GridSpec) -> None:
    """ConfigError unless `occ` is a volume of `grid` (the producer and the consumer of a frame
    disagree on the grid: a configuration error, not bad input)."""
    if tuple(occ.semantics.shape) != grid.shape:
        raise ConfigError(f'occupancy semantics has shape {tuple(occ.semantics.shape)} but the grid is '
                          f'{grid.shape}: the publisher and the model disagree on the grid')


def panoptic_fields(occ: Occupancy, grid: GridSpec) -> PanopticFields:
    """`occ` as message values on `grid` (ConfigError when the shapes disagree, `check_shape`).
    Only instances that own voxels are listed."""
    check_shape(occ, grid)
    inst = occ.instances if occ.instances is not None else np.zeros(grid.shape, np.uint16)
    vis = (np.zeros(0, np.uint8) if occ.mask_camera is None
           else np.ascontiguousarray(occ.mask_camera, dtype=np.uint8).reshape(-1))
    return PanopticFields(
        size=grid.shape, voxel_size=tuple(float(v) for v in grid.voxel),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in grid.lower),  # type: ignore[arg-type]
        class_names=tuple(OCC_CLASSES), free_label=FREE,
        semantics=np.ascontiguousarray(occ.semantics, dtype=np.uint8).reshape(-1),
        instances=np.ascontiguousarray(inst, dtype=np.uint16).reshape(-1), visible=vis,
        instance_table=tuple(i for i in occ.instance_table if i.voxel_count > 0))


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (or anything with sec/nanosec) → integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_ns_of(msg: Any) -> int:
    """header.stamp of a decoded message in nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


def occupancy_from_message(msg: Any) -> Occupancy:
    """`Occupancy` from a decoded occ_ros/msg/PanopticOccupancy (an rclpy or a rosbags object).

    `visible` becomes `mask_camera` (None when the message carries none: visibility unknown).
    Raises InputError when the arrays do not match the message's size.
    """
    shape = (int(msg.size_x), int(msg.size_y), int(msg.size_z))
    n = shape[0] * shape[1] * shape[2]
    sem = np.asarray(msg.semantics, dtype=np.uint8).reshape(-1)
    inst = np.asarray(msg.instances, dtype=np.uint16).reshape(-1)
    vis = np.asarray(msg.visible, dtype=np.uint8).reshape(-1)
    if sem.size != n or inst.size != n or (vis.size not in (0, n)):
        raise InputError(f'PanopticOccupancy arrays do not match size {shape}: semantics {sem.size}, '
                         f'instances {inst.size}, visible {vis.size}')
    table = [InstanceInfo(int(i.id), int(i.label), (float(i.center.x), float(i.center.y), float(i.center.z)),
                          int(i.voxel_count), float(i.score)) for i in msg.instance_table]
    mask = vis.reshape(shape).astype(bool) if vis.size else None
    return Occupancy(sem.reshape(shape).copy(), inst.reshape(shape).copy(), mask_camera=mask,
                     instance_table=table, stamp_ns=stamp_ns_of(msg))
