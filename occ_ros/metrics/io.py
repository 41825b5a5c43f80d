"""Pairing Occ3D prediction files with ground-truth files (the file formats: `occ_ros.core.occ3d`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from occ_ros.core.errors import OccFileError

PathLike = Union[str, Path]
# File stems that name the content, not the sample: the sample is then the parent directory.
GENERIC_STEMS: frozenset[str] = frozenset({'labels', 'pred', 'prediction', 'occ', 'occupancy'})



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
