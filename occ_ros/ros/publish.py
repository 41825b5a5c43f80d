"""Pipeline result → ROS messages: voxel and instance MarkerArrays, OccupancyGrid, PanopticOccupancy.

The result is a `core.occupancy.Occupancy` (the pipeline's `PipelineResult.occupancy`):
    semantics      (nx, ny, nz) uint8 Occ3D labels (17 = free)
    instances      (nx, ny, nz) uint16 instance ids (0 = none), or None
    mask_camera    (nx, ny, nz) bool or None (inside at least one live camera frustum, in range)
    instance_table one InstanceInfo (id, label, centre, voxel count, score) per instance
Voxel (i, j, k) has its centre at grid.lower + (i + ½, j + ½, k + ½) · voxel.

The numpy parts (`select_voxels`, `occupancy_grid_values`, `instance_boxes`) are separate
functions so they can be tested and timed without building messages. Array fields are assigned
`bytes` / `array.array` (never numpy arrays: ros_env.md §1).
"""
from __future__ import annotations

import array
import colorsys
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from occ_ros.core.classes import FREE, GROUND_CLASSES, OCC_CLASSES, PALETTE
from occ_ros.core.config import GridSpec
from occ_ros.core.occupancy import Occupancy, check_shape, panoptic_fields
from occ_ros.core.errors import ConfigError
from occ_ros.ros.convert import header

GRID_FREE = 0
GRID_OCCUPIED = 100
GRID_UNKNOWN = -1


# --------------------------------------------------------------------------------------------
# numpy helpers
# --------------------------------------------------------------------------------------------

def voxel_centres(ijk: np.ndarray, grid: GridSpec) -> np.ndarray:
    """(M, 3) integer voxel indices → (M, 3) float64 centres in metres (ego frame)."""
    lower = np.asarray(grid.lower, dtype=np.float64)
    voxel = np.asarray(grid.voxel, dtype=np.float64)
    return lower + (np.asarray(ijk, dtype=np.float64) + 0.5) * voxel


@dataclass(frozen=True)
class VoxelSelection:
    """Voxels chosen for display: indices (M, 3), labels (M,), instance ids (M,), and counts."""

    ijk: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    total: int            # non-free (and visible, if asked) voxels before the cap
    dropped: int          # removed by the cap (the farthest from the ego origin)


def select_voxels(occ: Occupancy, grid: GridSpec, max_voxels: int, visible_only: bool = True) -> VoxelSelection:
    """Non-free voxels (inside a camera frustum when `visible_only` and visibility is known).

    If more than `max_voxels` remain, the `max_voxels` whose centres are nearest to the ego origin
    are kept (RViz slows down badly beyond ~20k cubes, and nearby space matters most).
    Result order: by class, then nearest first.
    """
    check_shape(occ, grid)
    sem = np.asarray(occ.semantics)
    mask = sem != FREE
    if visible_only and occ.mask_camera is not None:
        mask &= np.asarray(occ.mask_camera, dtype=bool)
    ijk = np.argwhere(mask)
    total = int(ijk.shape[0])
    if total:
        d2 = np.sum(voxel_centres(ijk, grid) ** 2, axis=1)
        if max_voxels >= 0 and total > max_voxels:
            keep = np.argpartition(d2, max_voxels - 1)[:max_voxels] if max_voxels > 0 else np.zeros(0, int)
            ijk, d2 = ijk[keep], d2[keep]
        labels = sem[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        order = np.lexsort((d2, labels))
        ijk, labels = ijk[order], labels[order]
    else:
        labels = np.zeros(0, np.uint8)
    inst = (np.asarray(occ.instances)[ijk[:, 0], ijk[:, 1], ijk[:, 2]] if len(ijk) and occ.instances is not None
            else np.zeros(len(ijk), np.uint16))
    return VoxelSelection(ijk=ijk, labels=labels.astype(np.uint8), instances=inst.astype(np.uint16),
                          total=total, dropped=total - int(ijk.shape[0]))


def occupancy_grid_values(occ: Occupancy, grid: GridSpec, z_band: tuple[float, float],
                          obstacle_classes: Iterable[int]) -> np.ndarray:
    """(ny, nx) int8 nav_msgs/OccupancyGrid cells (row = y index, column = x index).

    100: an obstacle-class voxel whose centre z lies in [z_band[0], z_band[1]];
    -1: no voxel of the column is visible (no camera sees it), when visibility is known;
    0: otherwise (seen, and free or ground). Unknown takes precedence over occupied.
    """
    check_shape(occ, grid)
    zc = grid.z.lo + (np.arange(grid.nz) + 0.5) * grid.z.step
    band = (zc >= z_band[0]) & (zc <= z_band[1])
    sem = np.asarray(occ.semantics)[:, :, band]                      # (nx, ny, nb)
    obstacle = np.zeros(256, dtype=bool)
    obstacle[list(obstacle_classes)] = True
    occupied = obstacle[sem].any(axis=2)                              # (nx, ny)
    out = np.where(occupied, GRID_OCCUPIED, GRID_FREE).astype(np.int8)
    vis = occ.mask_camera
    if vis is not None:
        seen = np.asarray(vis, dtype=bool).any(axis=2)
        out[~seen] = GRID_UNKNOWN
    return np.ascontiguousarray(out.T)                                # (ny, nx)


def default_obstacle_classes(ground: Iterable[int] = GROUND_CLASSES) -> tuple[int, ...]:
    """Every semantic class except free and the ground classes."""
    g = set(ground)
    return tuple(c for c in range(len(OCC_CLASSES)) if c != FREE and c not in g)


@dataclass(frozen=True)
class InstanceBoxes:
    """Axis-aligned voxel bounding boxes of instances: ids (K,), lo/hi (K, 3) metres, labels, scores."""

    ids: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    voxel_count: np.ndarray


def instance_boxes(occ: Occupancy, grid: GridSpec) -> InstanceBoxes:
    """Boxes around the voxels of each instance of the table that owns voxels (voxel_count > 0)."""
    rows = [i for i in occ.instance_table if i.voxel_count > 0]
    ids = np.array([i.id for i in rows], dtype=np.int64)
    counts = np.array([i.voxel_count for i in rows], dtype=np.int64)
    labels = np.array([i.label for i in rows], dtype=np.int64)
    scores = np.array([i.score for i in rows], dtype=np.float32)
    inst = np.asarray(occ.instances) if occ.instances is not None else np.zeros(grid.shape, np.uint16)
    ijk = np.argwhere(inst > 0)
    if not len(ids) or not len(ijk):
        z3 = np.zeros((0, 3))
        return InstanceBoxes(np.zeros(0, np.int64), z3, z3, np.zeros(0, np.int64), np.zeros(0, np.float32),
                             np.zeros(0, np.int64))
    vid = inst[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.int64)
    size = int(max(vid.max(), ids.max())) + 1
    lo = np.full((size, 3), np.iinfo(np.int64).max)
    hi = np.full((size, 3), -1)
    for a in range(3):
        np.minimum.at(lo[:, a], vid, ijk[:, a])
        np.maximum.at(hi[:, a], vid, ijk[:, a])
    has = hi[ids, 0] >= 0
    ids = ids[has]
    lower = np.asarray(grid.lower)
    voxel = np.asarray(grid.voxel)
    return InstanceBoxes(
        ids=ids,
        lo=lower + lo[ids] * voxel, hi=lower + (hi[ids] + 1) * voxel,
        labels=labels[has], scores=scores[has], voxel_count=counts[has])


def instance_colour(inst_id: int) -> tuple[float, float, float]:
    """A stable, well-spread RGB colour in [0, 1] for an instance id (golden-ratio hue walk)."""
    h = (int(inst_id) * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(h, 0.75, 1.0)


def class_colour(label: int) -> tuple[float, float, float]:
    r, g, b = PALETTE[int(label)]
    return (r / 255.0, g / 255.0, b / 255.0)


# --------------------------------------------------------------------------------------------
# message builders
# --------------------------------------------------------------------------------------------

def _points(xyz: np.ndarray) -> list:
    from geometry_msgs.msg import Point
    return [Point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]


def _rgba(r: float, g: float, b: float, a: float) -> Any:
    from std_msgs.msg import ColorRGBA
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


class VoxelMarkerBuilder:
    """~/voxels: one CUBE_LIST per class (namespace = class name, id = class index).

    color_mode 'class' uses the Occ3D palette (one colour per marker); 'instance' colours the
    voxels of each thing instance with `instance_colour(id)` (per-point colours) and stuff with
    its class colour. Classes shown in the previous message but absent now get a DELETE, so
    stale cubes never linger. Free voxels are never sent; at most `max_voxels` (nearest first).
    """

    def __init__(self, grid: GridSpec, frame_id: str, max_voxels: int = 20000, color_mode: str = 'class',
                 alpha: float = 1.0, visible_only: bool = True) -> None:
        if color_mode not in ('class', 'instance'):
            raise ConfigError(f"voxel colour mode must be 'class' or 'instance', got {color_mode!r}")
        self.grid = grid
        self.frame_id = frame_id
        self.max_voxels = int(max_voxels)
        self.color_mode = color_mode
        self.alpha = float(alpha)
        self.visible_only = visible_only
        self._shown: set[int] = set()
        self.last_selection: Optional[VoxelSelection] = None

    def build(self, occ: Occupancy, stamp_ns: int) -> Any:
        from visualization_msgs.msg import Marker, MarkerArray
        sel = select_voxels(occ, self.grid, self.max_voxels, self.visible_only)
        self.last_selection = sel
        out = MarkerArray()
        hdr = header(stamp_ns, self.frame_id)
        sx, sy, sz = self.grid.voxel
        labels = sel.labels
        present = [int(c) for c in np.unique(labels)]
        starts = np.searchsorted(labels, present, side='left')
        ends = np.searchsorted(labels, present, side='right')
        centres = voxel_centres(sel.ijk, self.grid)
        for c, a, b in zip(present, starts, ends):
            m = Marker(header=hdr, ns=OCC_CLASSES[c], id=c, type=Marker.CUBE_LIST, action=Marker.ADD)
            m.pose.orientation.w = 1.0
            m.scale.x, m.scale.y, m.scale.z = float(sx), float(sy), float(sz)
            m.color = _rgba(*class_colour(c), self.alpha)
            m.points = _points(centres[a:b])
            if self.color_mode == 'instance':
                ids = sel.instances[a:b]
                cols = np.tile(np.asarray(class_colour(c)), (b - a, 1))
                thing = ids > 0
                if thing.any():
                    uniq, inv = np.unique(ids[thing], return_inverse=True)
                    palette = np.asarray([instance_colour(int(u)) for u in uniq])
                    cols[thing] = palette[inv]
                m.colors = [_rgba(r, g, bb, self.alpha) for r, g, bb in cols.tolist()]
            out.markers.append(m)
        for c in sorted(self._shown - set(present)):
            out.markers.append(Marker(header=hdr, ns=OCC_CLASSES[c], id=c, action=Marker.DELETE))
        self._shown = set(present)
        return out


class InstanceMarkerBuilder:
    """~/instances: per instance a translucent CUBE around its voxels (ns 'instances') and a
    TEXT_VIEW_FACING label "class id score" above it (ns 'instance_labels'); id = instance id.
    Each message starts with DELETEALL, so instances that vanished disappear."""

    def __init__(self, grid: GridSpec, frame_id: str, alpha: float = 0.35, text_height: float = 0.8) -> None:
        self.grid = grid
        self.frame_id = frame_id
        self.alpha = alpha
        self.text_height = text_height

    def build(self, occ: Occupancy, stamp_ns: int, min_score: float = 0.0) -> Any:
        """The markers of the instances whose score is at least `min_score`."""
        from visualization_msgs.msg import Marker, MarkerArray
        boxes = instance_boxes(occ, self.grid)
        hdr = header(stamp_ns, self.frame_id)
        out = MarkerArray()
        out.markers.append(Marker(header=hdr, action=Marker.DELETEALL))
        for k in range(len(boxes.ids)):
            if float(boxes.scores[k]) < min_score:
                continue
            iid, label = int(boxes.ids[k]), int(boxes.labels[k])
            lo, hi = boxes.lo[k], boxes.hi[k]
            centre, size = (lo + hi) / 2.0, hi - lo
            colour = instance_colour(iid)
            box = Marker(header=hdr, ns='instances', id=iid, type=Marker.CUBE, action=Marker.ADD)
            box.pose.position.x, box.pose.position.y, box.pose.position.z = (float(v) for v in centre)
            box.pose.orientation.w = 1.0
            box.scale.x, box.scale.y, box.scale.z = (float(v) for v in size)
            box.color = _rgba(*colour, self.alpha)
            text = Marker(header=hdr, ns='instance_labels', id=iid, type=Marker.TEXT_VIEW_FACING,
                          action=Marker.ADD)
            text.pose.position.x, text.pose.position.y = float(centre[0]), float(centre[1])
            text.pose.position.z = float(hi[2]) + 0.5
            text.pose.orientation.w = 1.0
            text.scale.z = self.text_height
            text.color = _rgba(1.0, 1.0, 1.0, 1.0)
            name = OCC_CLASSES[label] if 0 <= label < len(OCC_CLASSES) else str(label)
            text.text = f'{name} {iid} {float(boxes.scores[k]):.2f}'
            out.markers += [box, text]
        return out


def occupancy_grid_msg(values: np.ndarray, grid: GridSpec, stamp_ns: int, frame_id: str,
                       transform: Optional[np.ndarray] = None) -> Any:
    """(ny, nx) int8 cells → nav_msgs/OccupancyGrid: resolution = x cell size, origin = grid lower
    x/y (z 0) in the grid's frame, moved by the 4×4 `transform` (grid frame → `frame_id`) if given."""
    from nav_msgs.msg import OccupancyGrid
    ny, nx = values.shape
    if (ny, nx) != grid.bev_shape:
        raise ConfigError(f'grid values {values.shape} do not match the BEV shape {grid.bev_shape}')
    if abs(grid.x.step - grid.y.step) > 1e-9:
        raise ConfigError(f'OccupancyGrid needs square cells; the grid has {grid.x.step} × {grid.y.step} m')
    msg = OccupancyGrid(header=header(stamp_ns, frame_id))
    msg.info.map_load_time = msg.header.stamp
    msg.info.resolution = float(grid.x.step)
    msg.info.width, msg.info.height = int(nx), int(ny)
    msg.info.origin.position.x, msg.info.origin.position.y = float(grid.x.lo), float(grid.y.lo)
    msg.info.origin.position.z = 0.0
    msg.info.origin.orientation.w = 1.0
    if transform is not None:
        from occ_ros.ros.frames import apply_to_pose
        apply_to_pose(msg.info.origin, transform)
    msg.data = array.array('b', np.ascontiguousarray(values, dtype=np.int8).tobytes())
    return msg


def panoptic_msg(occ: Occupancy, grid: GridSpec, stamp_ns: int, frame_id: str,
                 missing: Sequence[str] = ()) -> Any:
    """occ_ros/msg/PanopticOccupancy with Occ3D-layout arrays (index = (i·ny + j)·nz + k)."""
    from occ_ros.msg import PanopticInstance, PanopticOccupancy
    f = panoptic_fields(occ, grid)
    msg = PanopticOccupancy(header=header(stamp_ns, frame_id))
    msg.size_x, msg.size_y, msg.size_z = f.size
    msg.voxel_size.x, msg.voxel_size.y, msg.voxel_size.z = f.voxel_size
    msg.origin.x, msg.origin.y, msg.origin.z = f.origin
    msg.class_names = list(f.class_names)
    msg.free_label = f.free_label
    msg.semantics = f.semantics.tobytes()
    inst = array.array('H')
    inst.frombytes(f.instances.tobytes())
    msg.instances = inst
    msg.visible = f.visible.tobytes()
    table = []
    for i in f.instance_table:
        e = PanopticInstance(id=i.id, label=i.label, score=i.score, voxel_count=i.voxel_count)
        e.center.x, e.center.y, e.center.z = i.center
        table.append(e)
    msg.instance_table = table
    msg.missing_cameras = list(missing)
    return msg


def float_stamped(value: float, stamp_ns: int, frame_id: str) -> Any:
    """occ_ros/msg/Float64Stamped (the debug timing topics)."""
    from occ_ros.msg import Float64Stamped
    return Float64Stamped(header=header(stamp_ns, frame_id), data=float(value))
