"""Occ3D-format files: ground-truth `labels.npz` and prediction files, read into and written from
`occ_ros.core.occupancy.Occupancy` (pairing the two sets of files is `occ_ros.metrics.io`).

Ground truth (`labels.npz`, Occ3D-nuScenes layout, arrays indexed [x, y, z] = GridSpec.shape):
    semantics    uint8  class ids 0..17 (17 = free; values ≥ 18 such as 255 are ignored by mIoU)
    mask_camera  bool / uint8 0-1, voxels visible from the cameras (the mIoU mask)
    mask_lidar   optional, bool / uint8 0-1
    instances    optional, integer instance ids (Occ3D-panoptic GT: ≥ 1 for boxes)
    origins      optional, (K, 3) float ray origins in ego-frame metres (an occ_ros extension,
                 used by `occ-ros eval` by default when present)
    ego_pose     optional, (4, 4) float T_world_ego of the frame (an occ_ros extension)
Prediction (same format):
    semantics    integer class ids 0..17
    instances    optional, occ_ros instance grid (0 = stuff/free, ≥ 1 things)
    pano_inst    optional alternative: the official FlashOcc panoptic grid, converted with
                 `instances_from_official_pano` (ignored when `instances` is present)

Every problem raises `OccFileError` naming the file, the key and what was expected.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from occ_ros.core.classes import NUM_CLASSES
from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import EvaluationError, OccFileError
from occ_ros.core.occupancy import Occupancy

PathLike = Union[str, Path]
GT_FILENAME = 'labels.npz'


def as_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of `x` (numpy array, torch tensor on any device, or nested sequence)."""
    if isinstance(x, np.ndarray):
        return x
    detach = getattr(x, 'detach', None)
    if detach is not None:          # torch.Tensor without importing torch here
        return detach().cpu().numpy()
    return np.asarray(x)


def instances_from_official_pano(pano_inst: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Official FlashOcc `pano_inst` grid → occ_ros instance grid.

    pano_inst: (nx, ny, nz) integers; values < num_classes are class ids (stuff voxels and thing
    voxels left without an instance), values ≥ num_classes are thing instance ids.
    Returns the same shape, uint16 (uint32 if needed): 0 for the former, id − num_classes + 1
    (≥ 1) for the latter.
    """
    a = np.asarray(as_numpy(pano_inst))
    if not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
        raise EvaluationError(f'pano_inst must hold non-negative integers, got dtype {a.dtype}')
    out = np.where(a >= num_classes, a.astype(np.int64) - num_classes + 1, 0)
    dtype = np.uint16 if out.size == 0 or out.max() <= np.iinfo(np.uint16).max else np.uint32
    return out.astype(dtype)


def _open(path: PathLike) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise OccFileError(f'{p}: no such file')
    try:
        with np.load(p, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise OccFileError(f'{p}: not a readable .npz archive ({exc}); re-export it with numpy.savez') from exc


def _volume(data: dict[str, np.ndarray], key: str, path: PathLike, grid: GridSpec, *,
            required: bool, mask: bool = False) -> Optional[np.ndarray]:
    if key not in data:
        if required:
            raise OccFileError(f'{path}: missing required key {key!r} (keys found: {sorted(data)}); '
                               f'expected {key!r} with shape {grid.shape}')
        return None
    a = data[key]
    if a.shape != grid.shape:
        raise OccFileError(f'{path}: {key!r} has shape {a.shape}, expected {grid.shape} (x, y, z) from the '
                           f'GridSpec; check the grid or the axis order of the file')
    if mask:
        if a.dtype != np.bool_:
            if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() > 1)):
                raise OccFileError(f'{path}: {key!r} must be bool or 0/1 integers, got dtype {a.dtype}')
            a = a.astype(bool)
        return a
    if not np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        raise OccFileError(f'{path}: {key!r} must hold integer ids, got dtype {a.dtype}')
    if a.size and a.min() < 0:
        raise OccFileError(f'{path}: {key!r} holds negative values (min {a.min()})')
    return a


def load_ground_truth(path: PathLike, grid: GridSpec = OCC3D_GRID) -> Occupancy:
    """Read an Occ3D `labels.npz` (see the module docstring for keys); raises OccFileError."""
    data = _open(path)
    sem = _volume(data, 'semantics', path, grid, required=True)
    assert sem is not None
    if sem.max(initial=0) > 255:
        raise OccFileError(f'{path}: semantics values must fit uint8 (0..17, 255 = ignore), max {sem.max()}')
    cam = _volume(data, 'mask_camera', path, grid, required=True, mask=True)
    lidar = _volume(data, 'mask_lidar', path, grid, required=False, mask=True)
    inst = _volume(data, 'instances', path, grid, required=False)
    origins = None
    if 'origins' in data:
        origins = np.asarray(data['origins'], dtype=np.float64)
        if origins.ndim == 1 and origins.size == 3:
            origins = origins[None]
        if origins.ndim != 2 or origins.shape[1] != 3 or origins.shape[0] == 0:
            raise OccFileError(f'{path}: origins must be (K, 3) ego-frame metres, got {origins.shape}')
    pose = None
    if 'ego_pose' in data:
        pose = np.asarray(data['ego_pose'], dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise OccFileError(f'{path}: ego_pose must be a finite (4, 4) matrix, got {pose.shape}')
    assert cam is not None
    return Occupancy(sem.astype(np.uint8, copy=False), inst, mask_camera=cam, mask_lidar=lidar, origins=origins,
                     ego_pose=pose)


def load_prediction(path: PathLike, grid: GridSpec = OCC3D_GRID, num_classes: int = NUM_CLASSES) -> Occupancy:
    """Read a prediction .npz (`semantics`, optional `instances` or official `pano_inst`)."""
    data = _open(path)
    sem = _volume(data, 'semantics', path, grid, required=True)
    assert sem is not None
    if sem.max(initial=0) >= num_classes:
        raise OccFileError(f'{path}: predicted semantics must be class ids 0..{num_classes - 1}, '
                           f'max is {sem.max()}; write unknown voxels as free ({num_classes - 1})')
    inst = _volume(data, 'instances', path, grid, required=False)
    if inst is None:
        pano = _volume(data, 'pano_inst', path, grid, required=False)
        inst = None if pano is None else instances_from_official_pano(pano, num_classes)
    return Occupancy(sem, inst)


def save_ground_truth(path: PathLike, gt: Occupancy) -> None:
    """Write `gt` as an Occ3D `labels.npz` (compressed; masks as uint8 0/1, semantics uint8)."""
    if gt.mask_camera is None:
        raise OccFileError(f'{path}: ground truth needs mask_camera (the Occ3D mIoU mask)')
    arrays: dict[str, np.ndarray] = {
        'semantics': np.asarray(as_numpy(gt.semantics)).astype(np.uint8),
        'mask_camera': np.asarray(as_numpy(gt.mask_camera)).astype(np.uint8),
    }
    if gt.mask_lidar is not None:
        arrays['mask_lidar'] = np.asarray(as_numpy(gt.mask_lidar)).astype(np.uint8)
    if gt.instances is not None:
        arrays['instances'] = _id_array(gt.instances)
    if gt.origins is not None:
        arrays['origins'] = np.asarray(as_numpy(gt.origins), dtype=np.float64).reshape(-1, 3)
    if gt.ego_pose is not None:
        arrays['ego_pose'] = np.asarray(gt.ego_pose, dtype=np.float64).reshape(4, 4)
    _write(path, arrays)


def save_prediction(path: PathLike, pred: Occupancy) -> None:
    """Write `pred` in the prediction format (`semantics` uint8, optional `instances`)."""
    arrays = {'semantics': np.asarray(as_numpy(pred.semantics)).astype(np.uint8)}
    if pred.instances is not None:
        arrays['instances'] = _id_array(pred.instances)
    _write(path, arrays)


def _id_array(a: Any) -> np.ndarray:
    a = np.asarray(as_numpy(a))
    if a.size and a.min() < 0:
        raise OccFileError('instance ids must be non-negative')
    top = int(a.max(initial=0))
    return a.astype(np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32)


def _write(path: PathLike, arrays: dict[str, np.ndarray]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, 'wb') as f:          # a file object keeps numpy from appending a second '.npz'
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]


