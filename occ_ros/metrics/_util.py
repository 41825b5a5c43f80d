"""Small helpers shared by the metric modules (array conversion, NaN-aware means, JSON-safe values)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from occ_ros.core.config import GridSpec
from occ_ros.core.errors import EvaluationError
from occ_ros.core.occ3d import as_numpy


def as_volume(x: Any, grid: GridSpec, what: str, *, leading: bool = False) -> np.ndarray:
    """`x` as an integer numpy volume of shape grid.shape (or (G, *grid.shape) when `leading`).

    Raises EvaluationError naming `what` when the shape or dtype does not fit.
    """
    a = as_numpy(x)
    want = grid.shape
    ok = a.shape[-3:] == want and (a.ndim == 4 if leading else a.ndim == 3)
    if leading and a.ndim == 3 and a.shape == want:
        a, ok = a[None], True
    if not ok:
        raise EvaluationError(
            f'{what}: expected shape {"(G, " if leading else "("}{", ".join(map(str, want))}) '
            f'(x, y, z) from the GridSpec, got {tuple(a.shape)}; check the grid configuration or '
            f'transpose the array to [x, y, z] order')
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise EvaluationError(f'{what}: expected integer labels, got dtype {a.dtype}; '
                              f'take the argmax of logits before scoring')
    return a


def nanmean(a: np.ndarray) -> float:
    """Mean over the finite entries of `a`; NaN (without a RuntimeWarning) when there are none."""
    a = np.asarray(a, dtype=np.float64)
    finite = a[~np.isnan(a)]
    return float(finite.mean()) if finite.size else float('nan')


def json_float(v: float) -> float | None:
    """A float for JSON: NaN becomes None (JSON has no NaN), other values are rounded to 1e-6."""
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def fmt_pct(v: float, width: int = 0) -> str:
    """Percent value for tables: two decimals, 'n/a' for NaN."""
    s = 'n/a' if math.isnan(v) else f'{v:.2f}'
    return s.rjust(width) if width else s
