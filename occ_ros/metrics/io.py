"""Occ3D-format files: ground-truth `labels.npz`, prediction files, and pairing the two sets.

Ground truth (`labels.npz`, Occ3D-nuScenes layout, arrays indexed [x, y, z] = GridSpec.shape):
    semantics    uint8  class ids 0..17 (17 = free; values ≥ 18 such as 255 are ignored by mIoU)
    mask_camera  bool / uint8 0-1, voxels visible from the cameras (the mIoU mask)
    mask_lidar   optional, bool / uint8 0-1
    instances    optional, integer instance ids (Occ3D-panoptic GT: ≥ 1 for boxes)
    origins      optional, (K, 3) float ray origins in ego-frame metres (an occ_ros extension,
                 used by `occ-ros eval --origins-from gt`)
Prediction (same format):
    semantics    integer class ids 0..17
    instances    optional, occ_ros instance grid (0 = stuff/free, ≥ 1 things)
    pano_inst    optional alternative: the official FlashOcc panoptic grid, converted with
                 `instances_from_official_pano` (ignored when `instances` is present)

Every problem raises `OccFileError` naming the file, the key and what was expected.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Union

import numpy as np

from occ_ros.classes import NUM_CLASSES
from occ_ros.config import GridSpec
from occ_ros.errors import OccFileError
from occ_ros.metrics._util import as_numpy
from occ_ros.metrics.raypq import instances_from_official_pano

PathLike = Union[str, Path]
GT_FILENAME = 'labels.npz'
# File stems that name the content, not the sample: the sample is then the parent directory.
GENERIC_STEMS: frozenset[str] = frozenset({'labels', 'pred', 'prediction', 'occ', 'occupancy'})


@dataclass(frozen=True)
class OccGroundTruth:
    """One Occ3D ground-truth frame; volumes are (nx, ny, nz)."""

    semantics: np.ndarray
    mask_camera: np.ndarray
    mask_lidar: Optional[np.ndarray] = None
    instances: Optional[np.ndarray] = None
    origins: Optional[np.ndarray] = None


@dataclass(frozen=True)
class OccPrediction:
    """One predicted frame; volumes are (nx, ny, nz). `instances`: 0 = stuff/free, ≥ 1 things."""

    semantics: np.ndarray
    instances: Optional[np.ndarray] = None

    @classmethod
    def empty(cls, grid: GridSpec = GridSpec(), free: int = NUM_CLASSES - 1) -> 'OccPrediction':
        """An all-free prediction (what a missing prediction counts as with `--missing empty`)."""
        return cls(np.full(grid.shape, free, dtype=np.uint8), np.zeros(grid.shape, dtype=np.uint16))


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


def load_ground_truth(path: PathLike, grid: GridSpec = GridSpec()) -> OccGroundTruth:
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
    assert cam is not None
    return OccGroundTruth(sem.astype(np.uint8, copy=False), cam, lidar, inst, origins)


def load_prediction(path: PathLike, grid: GridSpec = GridSpec(), num_classes: int = NUM_CLASSES) -> OccPrediction:
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
    return OccPrediction(sem, inst)


def save_ground_truth(path: PathLike, gt: OccGroundTruth) -> None:
    """Write `gt` as an Occ3D `labels.npz` (compressed; masks as uint8 0/1, semantics uint8)."""
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
    _write(path, arrays)


def save_prediction(path: PathLike, pred: OccPrediction) -> None:
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


# ---------------------------------------------------------------------------------------------
# Pairing prediction files with ground-truth files


def sample_key(path: PathLike, root: PathLike) -> str:
    """The sample a file stands for: its path relative to `root` without '.npz', and without a
    generic file name (labels.npz, pred.npz, …), e.g. 'scene-0003/<token>' or '<name>'."""
    rel = PurePosixPath(Path(path).relative_to(root).as_posix())
    stem = rel.name[:-len('.npz')] if rel.name.endswith('.npz') else rel.name
    if stem in GENERIC_STEMS and str(rel.parent) != '.':
        return str(rel.parent)
    return str(rel.parent / stem) if str(rel.parent) != '.' else stem


@dataclass(frozen=True)
class FilePairing:
    """Prediction ↔ GT files. pairs: (key, prediction path, GT path), sorted by key;
    missing_predictions: GT keys with no prediction (their GT files in `missing_gt_files`);
    unmatched_predictions: prediction keys with no GT."""

    pairs: tuple[tuple[str, Path, Path], ...]
    missing_predictions: tuple[str, ...]
    unmatched_predictions: tuple[str, ...]
    missing_gt_files: tuple[Path, ...] = ()


def _index(root: Path, what: str) -> dict[str, Path]:
    if not root.is_dir():
        raise OccFileError(f'{what} directory {root} does not exist')
    out: dict[str, Path] = {}
    for f in sorted(root.rglob('*.npz')):
        k = sample_key(f, root)
        if k in out:
            raise OccFileError(f'{what} files {out[k]} and {f} both stand for sample {k!r}; keep one')
        out[k] = f
    return out


def pair_files(pred_dir: PathLike, gt_dir: PathLike) -> FilePairing:
    """Pair every .npz under `gt_dir` with one under `pred_dir`.

    First by identical relative key (see `sample_key`), then, for what is left, by the last
    key component (the token or name) when it is unique on both sides — so
    `gt/scene-1/<token>/labels.npz` pairs with `pred/<token>.npz` or `pred/<token>/labels.npz`.
    """
    gt = _index(Path(gt_dir), 'ground-truth')
    pred = _index(Path(pred_dir), 'prediction')
    if not gt:
        raise OccFileError(f'no .npz ground-truth files under {gt_dir}')
    pairs: dict[str, tuple[Path, Path]] = {k: (pred[k], gt[k]) for k in gt if k in pred}
    gt_left = [k for k in gt if k not in pairs]
    pred_left = [k for k in pred if k not in pairs]

    def leaves(keys: list[str]) -> dict[str, Optional[str]]:
        seen: dict[str, Optional[str]] = {}
        for k in keys:
            leaf = PurePosixPath(k).name
            seen[leaf] = None if leaf in seen else k      # None marks an ambiguous leaf
        return seen

    g_leaf, p_leaf = leaves(gt_left), leaves(pred_left)
    for leaf, gk in g_leaf.items():
        pk = p_leaf.get(leaf)
        if gk is not None and pk is not None:
            pairs[gk] = (pred[pk], gt[gk])
            pred_left.remove(pk)
    missing = tuple(sorted(k for k in gt if k not in pairs))
    ordered = tuple((k, pairs[k][0], pairs[k][1]) for k in sorted(pairs))
    return FilePairing(ordered, missing, tuple(sorted(pred_left)), tuple(gt[k] for k in missing))
