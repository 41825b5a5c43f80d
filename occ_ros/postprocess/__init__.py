"""Panoptic post-processing: occupancy labels + centre heads → semantic grid, instance grid, instance table.

Pure torch, device-agnostic: every tensor is created on the device of the inputs, nothing goes
through numpy until `PanopticOccupancy.to_numpy()`. There is no Python loop over voxels or centres;
the only Python loops run over the batch, the (at most eight) thing classes and memory chunks.

Pipeline (Panoptic-FlashOcc, reference flashocc.md §2.3–§2.5):

1. `decode_centers`: sigmoid of the centre heatmap (B, 10, ny, nx), k×k max-pool peak NMS,
   two-stage top-K (per class, then over classes), x/y = (cell + reg offset)·step + lower,
   z = height head value in metres, keep score > threshold and inside `post_center_range`;
   default mode clamps the centres to the grid (x, y off the grid → dropped, z → edge layer).
2. `assign_instances`: every voxel of a thing class (`classes.THING_CLASSES`) goes to the nearest
   centre *of the same occupancy class*, measured in voxel-index space like the official CUDA op.
3. `PanopticPostprocessor` glues both and packs a `PanopticOccupancy` per batch element.

Two mapping modes:

* default (`official_compat=False`): heatmap channels map to occupancy classes through
  `classes.DET_TO_OCC` (the training-config class order, semantically correct); instance ids are
  1..K in order of descending centre score; thing voxels with no centre of their class get 0.
* `official_compat=True`: reproduces the official `BEVDepthPano.simple_test` + `nearest_assign`
  exactly, quirks included (see `PostprocessConfig` and `official_pano_inst`).

Modules: `config` (settings, centres), `centers` (decoding), `instances` (assignment),
`panoptic` (the result and the post-processor).
"""
from occ_ros.postprocess.centers import decode_centers
from occ_ros.postprocess.config import OFFICIAL_ID_OFFSET, Centers, PostprocessConfig
from occ_ros.postprocess.instances import (
    assign_instances,
    centre_voxel_indices,
    instance_ids,
    official_pano_inst,
)
from occ_ros.postprocess.panoptic import (
    InstanceTable,
    PanopticOccupancy,
    PanopticPostprocessor,
)

__all__ = [
    'OFFICIAL_ID_OFFSET', 'PostprocessConfig', 'Centers', 'InstanceTable', 'PanopticOccupancy',
    'PanopticPostprocessor', 'decode_centers', 'assign_instances', 'centre_voxel_indices',
    'instance_ids', 'official_pano_inst',
]
