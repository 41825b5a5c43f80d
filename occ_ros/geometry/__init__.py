"""Camera rig maths: calibration, test-time image transform, frustum → BEV cells, visibility.

Conventions
-----------
- Ego frame (= `base_link`): x forward, y left, z up, metres.
- Camera optical frame: x right, y down, z forward (OpenCV / ROS `*_optical_frame`).
- `CameraCalib.sensor2ego` maps optical-frame points to the ego frame: p_ego = R·p_cam + t.
- `CameraCalib.K` is the pinhole matrix of the image the camera *actually delivers*
  (`image_hw`), pixel centres at integer coordinates (OpenCV / ROS CameraInfo).
- The BEV frame is the ego frame of view 0 (CAM_FRONT_LEFT in nuScenes order) at its timestamp
  (`sensor2keyego`), as in the official FlashOcc `prepare_inputs`.

Calibration maths runs in numpy float64. Torch appears only where the pool index and the camera
vector are produced for the network.

The frustum → cell mapping reproduces the official `LSSViewTransformer.get_lidar_coor` +
`voxel_pooling_prepare_v2` step by step (flashocc.md §2.1 item 4): u = linspace(0, W_in−1, fW),
v = linspace(0, H_in−1, fH), d = depth bins; undo post_rot/post_tran; (u·d, v·d, d);
R·K⁻¹·p + t; (p − lower) / voxel truncated toward zero (so points in (−1, 0) cell units land in
cell 0 — the official quirk). We compute it in **float64** by default: the official code runs in
float32 on the GPU (with TF32 matmuls on Ampere under the PyTorch versions it was trained with),
so no host computation can match its rounding bit for bit anyway. The two precisions disagree
only for points within float32 rounding of a cell boundary — measured on the nuScenes rig:
1 of 152,112 kept points (44 bins) and 3 of 301,989 (88 bins) change cell. `precision='float32'`
reproduces the float32 evaluation order when wanted.

Modules: `rig` (calibration types, the nuScenes rig), `rig_file` (YAML), `camera` (DepthNet
camera inputs), `tables` (frustum → BEV pool tables), `frame_tables` (the per-frame tables of a moving car, in
torch on the backend's device), `visibility` (frustum masks).
"""
from typing import TYPE_CHECKING

from occ_ros.core.lazy import lazy_attributes
from occ_ros.geometry.camera import (
    CAMERA_VECTOR_SIZE,
    camera_vectors,
    image_aug_matrices,
    sensor2keyego,
)
from occ_ros.geometry.rig import (
    RIG_FORMAT,
    RIG_VERSION,
    CameraCalib,
    Rig,
    check_intrinsics,
    matrix_to_quaternion_xyzw,
    nuscenes_rig,
    quaternion_to_matrix,
    rigid_transform,
)
from occ_ros.geometry.rig_file import (
    DEFAULT_RIG_COMMENT,
    default_rig,
    default_rig_path,
    load_rig,
    save_rig,
    write_default_rig,
)
from occ_ros.geometry.visibility import camera_frustum_masks, voxel_centres

if TYPE_CHECKING:
    from occ_ros.geometry.frame_tables import FrameTableBuilder
    from occ_ros.geometry.tables import (
        BevGeometry,
        FrustumRanks,
        compute_bev_geometry,
        depth_bin_values,
        frustum_pixels,
        frustum_points_ego,
        frustum_ranks,
        image_transforms,
        rig_for_model,
        suggest_pool_bounds,
        voxelize_frustum,
    )

# The pool tables are torch tensors: their modules (and torch, ≈1 s to import) load on first use,
# so that the calibration types serve torch-free processes (the synthetic renderer, bag tools).
__getattr__ = lazy_attributes(globals(), {
    'occ_ros.geometry.tables': (
        'BevGeometry', 'FrustumRanks', 'compute_bev_geometry', 'depth_bin_values', 'frustum_pixels',
        'frustum_points_ego', 'frustum_ranks', 'image_transforms', 'rig_for_model', 'suggest_pool_bounds',
        'voxelize_frustum'),
    'occ_ros.geometry.frame_tables': ('FrameTableBuilder',),
})

__all__ = [
    'CameraCalib', 'Rig', 'RIG_FORMAT', 'RIG_VERSION', 'check_intrinsics', 'matrix_to_quaternion_xyzw',
    'nuscenes_rig', 'quaternion_to_matrix', 'rigid_transform', 'DEFAULT_RIG_COMMENT', 'default_rig',
    'default_rig_path', 'load_rig', 'save_rig', 'write_default_rig', 'CAMERA_VECTOR_SIZE', 'camera_vectors',
    'image_aug_matrices', 'sensor2keyego', 'BevGeometry', 'FrustumRanks', 'compute_bev_geometry',
    'depth_bin_values', 'frustum_pixels', 'frustum_points_ego', 'frustum_ranks', 'image_transforms',
    'rig_for_model', 'suggest_pool_bounds', 'voxelize_frustum', 'camera_frustum_masks', 'voxel_centres',
    'FrameTableBuilder',
]
