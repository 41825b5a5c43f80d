"""The ray caster compiled (numba): one ray at a time.

`cast_rays` does, one ray at a time, what the vectorised numpy caster (`raycast._cast_numpy`)
does for all rays together, with the same float64 operations in the same order: the slab test
(where the ray enters the grid box), its first voxel, next boundary per axis and steps, then the
walk: at every voxel it reads the voxel's code (0 free, 1 occupied, 2 the sentinel layer around
the grid), chooses the axis crossed next in the official `dvr.cu` order
(x only when strictly first, y before x on an x/y tie, z on any tie with the smallest), and either
records the ray (hit: this voxel and where the ray leaves it; left the grid: the voxel before and
where the ray entered the sentinel) or steps. The numbers are the numpy caster's bit for bit
(`test/test_raycast.py` compares the two on random and real grids); this one costs a few
nanoseconds a voxel instead of a numpy pass over every live ray per step.

One thread: a frame's rays take ~70 ms here and the kernel compiles in 1.5 s on a fresh clone;
as a parallel `prange` loop it took 3.7 s to compile and gains nothing where the cores are busy
or capped. numba is optional: without it `HAVE_NUMBA` is False and the caster runs in numpy.
Compiled on first use and cached in `__pycache__` where the folder is writable.
"""
from __future__ import annotations

from typing import Any

import numpy as np

try:
    from numba import njit
    HAVE_NUMBA = True
except ImportError:                                   # pragma: no cover (numba is in setup.sh)
    HAVE_NUMBA = False


def _cast_rays(code: np.ndarray, npad: int, dims: np.ndarray, pstride: np.ndarray, p0: np.ndarray, v: np.ndarray,
               inv: np.ndarray, n_vol: int, rec_voxel: np.ndarray, rec_depth: np.ndarray,
               rec_hit: np.ndarray) -> None:
    """Cast ray r from origin o through volume g for every (g, o, r); write the results at output
    index g·O·R + o·R + r.

    code: flat uint8 padded volumes (n_vol · npad; 0 free, 1 occupied, 2 the sentinel layer);
    dims: (3,) int64 grid shape; pstride: (3,) int64 padded strides; p0: (O, 3) origins in voxel
    units; v: (R, 3) ray directions in voxels per metre; inv: (R, 3) 1 / v (inf where v = 0).
    Writes rec_voxel (padded index of the answer), rec_depth (metres) and rec_hit; rays that
    never enter the grid are left as they are.
    """
    n_orig, n_rays = p0.shape[0], v.shape[0]
    for geo in range(n_orig * n_rays):
        o = geo // n_rays
        r = geo - o * n_rays
        # slab test: where the ray enters the grid box and whether it does (raycast._cast_numpy)
        t_lo_max = -np.inf
        t_hi_min = np.inf
        for a in range(3):
            pa = p0[o, a]
            if v[r, a] == 0:
                inside = pa >= 0 and pa < dims[a]
                lo = -np.inf if inside else np.inf
                hi = np.inf if inside else -np.inf
            else:
                ta = (0.0 - pa) * inv[r, a]
                tb = (np.float64(dims[a]) - pa) * inv[r, a]
                lo = min(ta, tb)
                hi = max(ta, tb)
            t_lo_max = max(t_lo_max, lo)
            t_hi_min = min(t_hi_min, hi)
        t_enter = max(t_lo_max, 0.0)
        if not t_enter < t_hi_min:
            continue
        # the first voxel, the next boundary per axis (metres), metres per voxel, index steps
        ix, tx, dx, sx = _axis(p0[o, 0], v[r, 0], inv[r, 0], t_enter, dims[0], pstride[0])
        iy, ty, dy, sy = _axis(p0[o, 1], v[r, 1], inv[r, 1], t_enter, dims[1], pstride[1])
        iz, tz, dz, sz = _axis(p0[o, 2], v[r, 2], inv[r, 2], t_enter, dims[2], pstride[2])
        lin0 = (ix + 1) * pstride[0] + (iy + 1) * pstride[1] + (iz + 1) * pstride[2]
        for g in range(n_vol):
            _walk(code, g * npad + lin0, t_enter, tx, ty, tz, dx, dy, dz, sx, sy, sz,
                  g * n_orig * n_rays + geo, rec_voxel, rec_depth, rec_hit)


def _axis(p: float, v: float, inv: float, t_enter: float, dim: int,
          stride: int) -> tuple[int, float, float, int]:
    """One axis of a ray's start: (first voxel index, next boundary in metres, metres per voxel,
    linear index step)."""
    f = np.floor(p + t_enter * v)
    idx = np.int64(min(max(f, 0.0), np.float64(dim - 1)))
    if v == 0:
        return idx, np.inf, abs(inv), 0
    up = v > 0
    return idx, (np.float64(idx + (1 if up else 0)) - p) * inv, abs(inv), (stride if up else -stride)


def _walk(code: np.ndarray, lin: int, t_in: float, tx: float, ty: float, tz: float, dx: float, dy: float,
          dz: float, sx: int, sy: int, sz: int, out: int, rec_voxel: np.ndarray, rec_depth: np.ndarray,
          rec_hit: np.ndarray) -> None:
    """Walk one ray from padded voxel `lin` (entered at t_in metres; next boundaries tx, ty, tz;
    metres per voxel dx, dy, dz; index steps sx, sy, sz) and record it at output index `out`."""
    prev = lin
    while True:
        c = code[lin]
        if tx < ty and tx < tz:
            axis, t_out = 0, tx
        elif not (tx < ty) and ty < tz:
            axis, t_out = 1, ty
        else:
            axis, t_out = 2, tz
        if c == 1:
            rec_hit[out] = True
            rec_voxel[out] = lin
            rec_depth[out] = t_out
            return
        if c == 2:
            rec_voxel[out] = prev
            rec_depth[out] = t_in
            return
        t_in = t_out
        prev = lin
        if axis == 0:
            lin += sx
            tx = t_out + dx
        elif axis == 1:
            lin += sy
            ty = t_out + dy
        else:
            lin += sz
            tz = t_out + dz


if HAVE_NUMBA:
    _axis = njit(cache=True, inline='always')(_axis)
    _walk = njit(cache=True, inline='always')(_walk)
cast_rays: Any = njit(cache=True, nogil=True)(_cast_rays) if HAVE_NUMBA else None
