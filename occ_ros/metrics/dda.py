"""The ray caster's voxel walk, compiled (numba): one ray at a time, every ray of a frame in parallel.

`RayCaster` prepares each ray's start (entry voxel, next boundary per axis, metres per voxel,
index step per axis; `metrics.raycast`) and hands the walk to `walk`, which follows each ray with
the same float64 operations, in the same order, as the vectorised numpy walk
(`raycast._walk_numpy`): at every voxel it reads the voxel's code (0 free, 1 occupied, 2 the
sentinel layer around the grid), chooses the axis crossed next in the official `dvr.cu` order
(x only when strictly first, y before x on an x/y tie, z on any tie with the smallest), and either
records the ray (hit: this voxel and where the ray leaves it; left the grid: the voxel before and
where the ray entered the sentinel) or steps. The numbers are the numpy walk's bit for bit
(`test/test_raycast.py` compares the two on random and real grids); this one costs a few
nanoseconds a voxel instead of a numpy pass over every live ray per step.

Rays are independent, so the loop runs on every core (`prange`); the results do not depend on
the thread count. numba is optional: without it `HAVE_NUMBA` is False and the caster walks in
numpy. Compiled on first use and cached in `__pycache__` where the folder is writable.
"""
from __future__ import annotations

from typing import Any

import numpy as np

try:
    from numba import njit, prange
    HAVE_NUMBA = True
except ImportError:                                   # pragma: no cover (numba is in setup.sh)
    HAVE_NUMBA = False


def _walk(code: np.ndarray, ray: np.ndarray, lin0: np.ndarray, tmax0: np.ndarray, tdl0: np.ndarray,
          lstep0: np.ndarray, t_enter: np.ndarray, rec_voxel: np.ndarray, rec_depth: np.ndarray,
          rec_hit: np.ndarray) -> None:
    """Walk rays k = 0..len(ray)−1 and write their results at output index ray[k].

    code: flat uint8 padded volumes; lin0[k]: padded linear index of ray k's first
    voxel (its volume's offset included); tmax0 (K, 3): metres to the next boundary per axis;
    tdl0 (K, 3): metres per voxel per axis; lstep0 (K, 3): linear index step per axis;
    t_enter[k]: where the ray entered its first voxel. Writes rec_voxel (padded index),
    rec_depth (metres) and rec_hit for every walked ray.
    """
    for k in prange(ray.shape[0]):
        lin = lin0[k]
        prev = lin
        t_in = t_enter[k]
        tx, ty, tz = tmax0[k, 0], tmax0[k, 1], tmax0[k, 2]
        while True:
            c = code[lin]
            if tx < ty and tx < tz:
                axis, t_out = 0, tx
            elif not (tx < ty) and ty < tz:
                axis, t_out = 1, ty
            else:
                axis, t_out = 2, tz
            if c == 1:
                out = ray[k]
                rec_hit[out] = True
                rec_voxel[out] = lin
                rec_depth[out] = t_out
                break
            if c == 2:
                out = ray[k]
                rec_voxel[out] = prev
                rec_depth[out] = t_in
                break
            t_in = t_out
            prev = lin
            lin += lstep0[k, axis]
            if axis == 0:
                tx = t_out + tdl0[k, 0]
            elif axis == 1:
                ty = t_out + tdl0[k, 1]
            else:
                tz = t_out + tdl0[k, 2]


walk: Any = njit(cache=True, parallel=True, nogil=True)(_walk) if HAVE_NUMBA else None
