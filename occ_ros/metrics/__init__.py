"""Occ3D metrics: voxel mIoU, RayIoU and RayPQ (flashocc.md §5), pure numpy, no ROS.

Accumulators take one frame at a time (`update`) and return a result dataclass (`compute`):

    SemanticIoU  — one 18×18 confusion matrix over the set, camera mask, mIoU over classes 0..16
    RayIoU       — 14 040 LiDAR-like rays per origin, class + depth agreement at 1/2/4 m
    RayPQ        — panoptic quality of the same rays (things per instance, stuff per class)

`score_pairs` scores an iterable of (prediction, ground truth) frames into an `EvalReport`;
`occ_ros.core.occ3d` reads/writes Occ3D `labels.npz` and prediction files (as
`occ_ros.core.occupancy.Occupancy`), `occ_ros.metrics.io` pairs the two sets; `occ-ros eval`
(`occ_ros.apps.evaluate`) does both for two directories.
"""
from occ_ros.metrics.evaluate import EvalReport, EvalSample, score_pairs
from occ_ros.metrics.io import FilePairing, pair_files
from occ_ros.metrics.miou import SemanticIoU, SemanticIoUResult
from occ_ros.metrics.raycast import (DEFAULT_LIDAR_ORIGIN, MAX_ORIGINS, RayCaster, RayHits,
                                     cast_ray_bruteforce, lidar_pitches, lidar_rays, select_origins)
from occ_ros.metrics.rayiou import DEFAULT_THRESHOLDS, RayIoU, RayIoUResult
from occ_ros.metrics.raypq import RayPQ, RayPQResult

__all__ = [
    'DEFAULT_LIDAR_ORIGIN', 'DEFAULT_THRESHOLDS', 'MAX_ORIGINS',
    'EvalReport', 'EvalSample', 'score_pairs',
    'FilePairing', 'pair_files',
    'SemanticIoU', 'SemanticIoUResult',
    'RayCaster', 'RayHits', 'cast_ray_bruteforce', 'lidar_pitches', 'lidar_rays', 'select_origins',
    'RayIoU', 'RayIoUResult',
    'RayPQ', 'RayPQResult',
]
