"""~/cloud: the occupied voxels as a sensor_msgs/PointCloud2 — what Nav2's voxel and obstacle
layers, Autoware, nvblox and Foxglove take directly.

One point per occupied voxel (its centre), free never sent; fields, little-endian, 20 bytes a point:

    x, y, z    float32  offsets 0, 4, 8   metres in the message's frame
    class      uint8    offset 12         Occ3D class index (0..16; `class_names` of ~/panoptic)
    instance   uint16   offset 14         instance id, 0 for stuff / unassigned voxels
    score      float32  offset 16         the centre score of the voxel's instance; NaN without
                                          an instance (the network outputs labels, no per-voxel score)

The cloud is unordered (height 1, is_dense true: no NaN coordinates). `cloud_points` is the numpy
half (voxel choice and an optional rigid transform into the output frame), `pointcloud2_msg` packs
it; the node builds the cloud only while ~/cloud has a subscriber.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from occ_ros.core.classes import FREE
from occ_ros.core.config import GridSpec
from occ_ros.core.occupancy import Occupancy, check_shape
from occ_ros.ros.convert import header
from occ_ros.ros.publish import voxel_centres

# (name, offset, sensor_msgs/PointField datatype constant)
CLOUD_FIELDS: tuple[tuple[str, int, str], ...] = (
    ('x', 0, 'FLOAT32'), ('y', 4, 'FLOAT32'), ('z', 8, 'FLOAT32'),
    ('class', 12, 'UINT8'), ('instance', 14, 'UINT16'), ('score', 16, 'FLOAT32'))
CLOUD_POINT_STEP = 20
CLOUD_DTYPE = np.dtype({'names': ['x', 'y', 'z', 'class', 'instance', 'score'],
                        'formats': ['<f4', '<f4', '<f4', 'u1', '<u2', '<f4'],
                        'offsets': [0, 4, 8, 12, 14, 16], 'itemsize': CLOUD_POINT_STEP})


def cloud_points(occ: Occupancy, grid: GridSpec, skip_classes: Iterable[int] = (), visible_only: bool = True,
                 transform: Optional[np.ndarray] = None) -> np.ndarray:
    """(M,) `CLOUD_DTYPE` points: every voxel that is not free and not of `skip_classes` (and inside
    a camera frustum when `visible_only` and visibility is known), centres mapped by the 4×4
    `transform` (grid frame → output frame) when given. Order: voxel index order."""
    check_shape(occ, grid)
    sem = np.asarray(occ.semantics)
    drop = np.zeros(256, dtype=bool)
    drop[FREE] = True
    drop[list(skip_classes)] = True
    mask = ~drop[sem]
    if visible_only and occ.mask_camera is not None:
        mask &= np.asarray(occ.mask_camera, dtype=bool)
    ijk = np.argwhere(mask)
    xyz = voxel_centres(ijk, grid)
    if transform is not None:
        T = np.asarray(transform, dtype=np.float64)
        xyz = xyz @ T[:3, :3].T + T[:3, 3]
    out = np.empty(len(ijk), dtype=CLOUD_DTYPE)
    out['x'], out['y'], out['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    out['class'] = sem[mask]
    inst = (np.asarray(occ.instances)[mask] if occ.instances is not None
            else np.zeros(len(ijk), np.uint16))
    out['instance'] = inst
    score = np.full(len(ijk), np.nan, np.float32)
    if occ.instances is not None and occ.instance_table:
        ids = np.array([i.id for i in occ.instance_table], dtype=np.int64)
        scores = np.array([i.score for i in occ.instance_table], dtype=np.float32)
        order = np.argsort(ids)
        ids, scores = ids[order], scores[order]
        pos = np.clip(np.searchsorted(ids, inst), 0, len(ids) - 1)
        known = (inst > 0) & (ids[pos] == inst)
        score[known] = scores[pos[known]]
    out['score'] = score
    return out


def pointcloud2_msg(points: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """`CLOUD_DTYPE` points → sensor_msgs/PointCloud2 (unordered, little-endian, dense)."""
    from sensor_msgs.msg import PointCloud2, PointField
    pts = np.ascontiguousarray(points, dtype=CLOUD_DTYPE)
    msg = PointCloud2(header=header(stamp_ns, frame_id))
    msg.height, msg.width = 1, int(len(pts))
    msg.fields = [PointField(name=n, offset=o, datatype=getattr(PointField, t), count=1)
                  for n, o, t in CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step = CLOUD_POINT_STEP
    msg.row_step = CLOUD_POINT_STEP * msg.width
    msg.data = pts.tobytes()
    msg.is_dense = True
    return msg
