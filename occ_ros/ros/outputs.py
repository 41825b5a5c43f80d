"""The node's result publishers: ~/voxels, ~/instances, ~/cloud, ~/occupancy_grid, ~/panoptic.

`OutputPublishers` creates them on a node, turns each result into messages (`publish.py`,
`cloud.py`) in the output frame (`frames.OutputFrame`: the model frame, or odom with the pose at
the set's stamp) and takes new display settings at run time (`configure`, called by the
parameter callback). Marker arrays and the cloud are built only while someone subscribes.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional, Sequence

import numpy as np

from occ_ros.core.config import GridSpec
from occ_ros.core.occupancy import Occupancy
from occ_ros.ros.cloud import cloud_points, pointcloud2_msg
from occ_ros.ros.params import NodeParams
from occ_ros.ros.publish import (InstanceMarkerBuilder, VoxelMarkerBuilder, default_obstacle_classes,
                                 occupancy_grid_msg, occupancy_grid_values, panoptic_msg)
from occ_ros.ros.qos import reliable as _reliable


class OutputPublishers:
    """Publishers and builders of the result topics (see the module doc)."""

    def __init__(self, node: Any, params: NodeParams, grid: GridSpec) -> None:
        from nav_msgs.msg import OccupancyGrid
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from occ_ros.msg import PanopticOccupancy
        self.grid = grid
        self.voxels = node.create_publisher(MarkerArray, '~/voxels', _reliable(1))
        self.instances = node.create_publisher(MarkerArray, '~/instances', _reliable(1))
        self.cloud = node.create_publisher(PointCloud2, '~/cloud', _reliable(2))
        self.grid_pub = node.create_publisher(OccupancyGrid, '~/occupancy_grid', _reliable(5))
        self.panoptic = node.create_publisher(PanopticOccupancy, '~/panoptic', _reliable(5))
        self._lock = threading.Lock()
        self._last_markers = -1e18
        self.voxels_dropped_by_cap = 0
        self._voxels = VoxelMarkerBuilder(grid, '')
        self._instances = InstanceMarkerBuilder(grid, '')
        self.configure(params)

    def configure(self, p: NodeParams) -> None:
        """Take the (validated) display settings of `p`; safe while the worker publishes. The voxel
        builder is kept (it remembers the classes shown, to delete them when they vanish)."""
        with self._lock:
            self.params = p
            v = self._voxels
            v.max_voxels, v.color_mode, v.alpha = p.markers_max_voxels, p.markers_color_mode, p.markers_alpha
            v.visible_only = p.markers_visible_only
            self._obstacles = default_obstacle_classes(p.ground_class_ids)
            self._cloud_skip = () if p.cloud_include_ground else p.ground_class_ids

    def publish(self, occ: Occupancy, stamp_ns: int, missing: Sequence[str], model_frame: str,
                placement: Optional[tuple[str, Optional[np.ndarray]]]) -> None:
        """One result, computed in `model_frame`. Markers, cloud and grid go out as `placement`
        says — (frame_id, transform 4×4 model frame → frame_id, None = the same frame), moving their
        points and the grid's origin pose — or not at all when it is None; ~/panoptic (an origin
        without orientation) always goes out, in `model_frame`."""
        if placement is None:
            self.panoptic.publish(panoptic_msg(occ, self.grid, stamp_ns, model_frame, missing))
            return
        frame_id, transform = placement
        with self._lock:
            p, voxels, instances = self.params, self._voxels, self._instances
            obstacles, cloud_skip = self._obstacles, self._cloud_skip
        grid = self.grid
        now = time.monotonic()
        markers_due = now - self._last_markers >= p.markers_min_period_s
        if markers_due and self.voxels.get_subscription_count() > 0:
            voxels.frame_id = frame_id
            self.voxels.publish(_moved_markers(voxels.build(occ, stamp_ns), transform))
            sel = voxels.last_selection
            self.voxels_dropped_by_cap = sel.dropped if sel is not None else 0
            self._last_markers = now
        if markers_due and self.instances.get_subscription_count() > 0:
            instances.frame_id = frame_id
            msg = instances.build(occ, stamp_ns, min_score=p.instances_min_score)
            self.instances.publish(_moved_markers(msg, transform))
            self._last_markers = now
        if self.cloud.get_subscription_count() > 0:
            pts = cloud_points(occ, grid, cloud_skip, p.cloud_visible_only, transform)
            self.cloud.publish(pointcloud2_msg(pts, stamp_ns, frame_id))
        values = occupancy_grid_values(occ, grid, (p.grid_z_min, p.grid_z_max), obstacles)
        self.grid_pub.publish(occupancy_grid_msg(values, grid, stamp_ns, frame_id, transform))
        self.panoptic.publish(panoptic_msg(occ, grid, stamp_ns, model_frame, missing))


def _moved_markers(msg: Any, transform: Optional[np.ndarray]) -> Any:
    """Marker poses mapped by `transform` (markers keep their points relative to their pose)."""
    if transform is None:
        return msg
    from occ_ros.ros.frames import apply_to_pose
    for m in msg.markers:
        apply_to_pose(m.pose, transform)
    return msg
