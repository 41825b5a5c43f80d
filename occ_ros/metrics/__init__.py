"""Occ3D metrics: voxel mIoU, RayIoU and RayPQ (flashocc.md §5), pure numpy, no ROS.

Accumulators take one frame at a time (`update`) and return a result dataclass (`compute`):

    SemanticIoU  — one 18×18 confusion matrix over the set, camera mask, mIoU over classes 0..16
    RayIoU       — 14 040 LiDAR-like rays per origin, class + depth agreement at 1/2/4 m
    RayPQ        — panoptic quality of the same rays (things per instance, stuff per class)

`score_pairs` scores an iterable of (prediction, ground truth) frames into an `EvalReport`;
`occ_ros.metrics.io` reads/writes Occ3D `labels.npz` and prediction files; `occ-ros eval`
(`occ_ros.metrics.cli`) does both for two directories.
"""
from occ_ros.metrics.evaluate import EvalReport, EvalSample, score_pairs
from occ_ros.metrics.io import (FilePairing, OccGroundTruth, OccPrediction, load_ground_truth,
                                load_prediction, pair_files, save_ground_truth, save_prediction)
from occ_ros.metrics.miou import SemanticIoU, SemanticIoUResult
from occ_ros.metrics.raycast import (DEFAULT_LIDAR_ORIGIN, MAX_ORIGINS, RayCaster, RayHits,
                                     cast_ray_bruteforce, lidar_pitches, lidar_rays, select_origins)
from occ_ros.metrics.rayiou import DEFAULT_THRESHOLDS, RayIoU, RayIoUResult
from occ_ros.metrics.raypq import RayPQ, RayPQResult, instances_from_official_pano

__all__ = [
    'DEFAULT_LIDAR_ORIGIN', 'DEFAULT_THRESHOLDS', 'MAX_ORIGINS',
    'EvalReport', 'EvalSample', 'score_pairs',
    'FilePairing', 'OccGroundTruth', 'OccPrediction', 'load_ground_truth', 'load_prediction', 'pair_files',
    'save_ground_truth', 'save_prediction',
    'SemanticIoU', 'SemanticIoUResult',
    'RayCaster', 'RayHits', 'cast_ray_bruteforce', 'lidar_pitches', 'lidar_rays', 'select_origins',
    'RayIoU', 'RayIoUResult',
    'RayPQ', 'RayPQResult', 'instances_from_official_pano',
]
