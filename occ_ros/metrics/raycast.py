"""LiDAR-like ray casting through an occupancy grid, as RayIoU / RayPQ define it (flashocc.md §5.2).

Rays
    39 pitch angles × 360 azimuths (1° steps) = 14 040 unit rays per origin. The pitches are
    −(π/2 − atan(k+1)) for k = 0..9 (−45° … −5.7°), continued with the last spacing
    (≈ 0.0110 rad) until one reaches 0.21 rad (the last is ≈ 0.219 rad). Ray order is
    pitch-major, azimuth-minor; azimuth 0 is +x (forward), 90° is +y (left).

Casting
    A voxel is occupied when its label is not `free` (17), so `others` counts as occupied.
    Each ray walks the grid voxel by voxel (3-D DDA, Amanatides–Woo); the first occupied voxel
    gives the hit label, and the depth is the ray parameter where the ray *leaves* that voxel.
    A ray that hits nothing reports label `free` and the depth where it leaves the grid (its
    last voxel is recorded too). Rays are parameterised in metres in the ego frame, so the depth
    is in metres (for the cubic 0.4 m Occ3D voxels this equals the official "parameter in voxel
    units × 0.4"). Origins may lie outside the grid: rays then start where they enter it, and a
    ray that never enters reports label `free`, depth 0 and voxel −1.

Origins
    The official evaluation casts from the LiDAR origin of every key-frame of the scene expressed
    in the reference ego frame, keeps those with |x| < 39 m and |y| < 39 m, and samples 8 of them
    with round(linspace(0, n−1, 8)) when there are more (`select_origins`). Without scene
    context, a single frame uses `DEFAULT_LIDAR_ORIGIN` = (0.943713, 0.0, 1.84023) m: the
    nuScenes LIDAR_TOP → ego translation (the reference frame's own origin in the official
    evaluation, up to the per-scene calibration).

`RayCaster.cast` casts every ray of every origin through one or several label grids with the
compiled `dda.cast_rays` (numba, one ray at a time: ~5x faster), or — without
numba — in numpy, all rays together, one numpy step per voxel crossing; the two give the same
results bit for bit.
`cast_ray_bruteforce` is a deliberately different, scalar reference (sorted plane crossings, one
voxel per interval) used by the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from occ_ros.core.classes import FREE
from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import EvaluationError
from occ_ros.metrics import dda
from occ_ros.metrics._util import as_numpy, as_volume

DEFAULT_LIDAR_ORIGIN: tuple[float, float, float] = (0.943713, 0.0, 1.84023)
MAX_ORIGINS = 8            # origins per frame in the official evaluation
ORIGIN_MARGIN_M = 1.0      # origins must lie this far inside the grid's x/y bounds (|x|, |y| < 39 m)
NUM_BASE_PITCHES = 10      # pitches −(π/2 − atan(k+1)), k = 0..9
PITCH_LIMIT_RAD = 0.21     # continue the pitch ladder until it reaches this
AZIMUTH_STEP_DEG = 1.0


def lidar_pitches() -> np.ndarray:
    """The 39 pitch angles (rad, ascending) of the official virtual LiDAR: shape (39,)."""
    pitches = [-(math.pi / 2 - math.atan(k + 1)) for k in range(NUM_BASE_PITCHES)]
    while pitches[-1] < PITCH_LIMIT_RAD:
        pitches.append(pitches[-1] + (pitches[-1] - pitches[-2]))
    return np.asarray(pitches, dtype=np.float64)


def lidar_rays(azimuth_step_deg: float = AZIMUTH_STEP_DEG) -> np.ndarray:
    """Unit ray directions in the ego frame, pitch-major: shape (39 · 360/step, 3) float64.

    With the default 1° azimuth step this is the official 14 040-ray pattern.
    """
    pitch = lidar_pitches()[:, None]
    az = np.deg2rad(np.arange(0.0, 360.0, azimuth_step_deg))[None, :]
    rays = np.stack([np.cos(pitch) * np.cos(az),
                     np.cos(pitch) * np.sin(az),
                     np.broadcast_to(np.sin(pitch), (pitch.shape[0], az.shape[1]))], axis=-1)
    return rays.reshape(-1, 3)


def select_origins(origins: Any, grid: GridSpec = OCC3D_GRID, max_origins: int = MAX_ORIGINS,
                   margin: float = ORIGIN_MARGIN_M) -> np.ndarray:
    """Filter and subsample ray origins (ego-frame metres) the way the official evaluation does.

    origins: (3,) or (N, 3). Keeps those strictly inside the grid's x/y range shrunk by `margin`
    (|x| < 39 m, |y| < 39 m on the Occ3D grid); if more than `max_origins` remain, keeps
    indices round(linspace(0, n−1, max_origins)) (numpy rounding, half to even).
    Returns (K, 3) float64 with 1 ≤ K ≤ max_origins; raises EvaluationError if none remain.
    """
    o = np.asarray(as_numpy(origins), dtype=np.float64)
    if o.ndim == 1:
        o = o[None]
    if o.ndim != 2 or o.shape[1] != 3 or not np.all(np.isfinite(o)):
        raise EvaluationError(f'ray origins must be finite (N, 3) ego-frame metres, got shape {o.shape}')
    if max_origins < 1:
        raise EvaluationError(f'max_origins must be >= 1, got {max_origins}')
    keep = ((o[:, 0] > grid.x.lo + margin) & (o[:, 0] < grid.x.hi - margin)
            & (o[:, 1] > grid.y.lo + margin) & (o[:, 1] < grid.y.hi - margin))
    o = o[keep]
    if o.shape[0] == 0:
        raise EvaluationError(
            f'no ray origin lies inside x ∈ ({grid.x.lo + margin}, {grid.x.hi - margin}), '
            f'y ∈ ({grid.y.lo + margin}, {grid.y.hi - margin}) m; origins are ego-frame metres '
            f'of the reference frame (pass at least the frame\'s own LiDAR origin)')
    if o.shape[0] > max_origins:
        idx = np.round(np.linspace(0, o.shape[0] - 1, max_origins)).astype(np.int64)
        o = o[idx]
    return o


def prepare_origins(origins: Any, grid: GridSpec, max_origins: int = MAX_ORIGINS) -> np.ndarray:
    """`origins` → (K, 3) via `select_origins`; None → the single `DEFAULT_LIDAR_ORIGIN`."""
    if origins is None:
        return np.asarray([DEFAULT_LIDAR_ORIGIN], dtype=np.float64)
    return select_origins(origins, grid, max_origins)


@dataclass(frozen=True)
class RayHits:
    """Result of casting rays: arrays share the leading shape (..., R) (e.g. (G, O, R)).

    labels: int64 label of the first occupied voxel, `free` when the ray hits nothing.
    depth:  float64 metres along the ray to where it leaves the hit voxel (or the grid).
    voxel:  int64 flat C-order index into grid.shape of the hit voxel (of the last voxel crossed
            when nothing is hit); −1 when the ray never enters the grid.
    """

    labels: np.ndarray
    depth: np.ndarray
    voxel: np.ndarray

    def __getitem__(self, key: Any) -> 'RayHits':
        return RayHits(self.labels[key], self.depth[key], self.voxel[key])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape)

    def flatten(self) -> 'RayHits':
        """All rays in one axis: shape (N,)."""
        return RayHits(self.labels.reshape(-1), self.depth.reshape(-1), self.voxel.reshape(-1))

    def sample(self, volume: Any, fill: int = 0) -> np.ndarray:
        """Values of `volume` (grid-shaped, e.g. an instance grid) at the recorded voxels.

        Returns an array shaped like `labels`; rays that never entered the grid get `fill`.
        """
        v = as_numpy(volume).reshape(-1)
        idx = self.voxel
        out = v[np.clip(idx, 0, None)]
        if np.any(idx < 0):
            out = np.where(idx < 0, np.asarray(fill, dtype=out.dtype), out)
        return out


class RayCaster:
    """3-D DDA caster over one GridSpec with a fixed ray pattern.

    grid: geometry of the label volumes (lower corner, voxel size and shape all come from it).
    rays: (R, 3) ray directions in the ego frame (normalised here); default `lidar_rays()`.
    free: the label that means empty space.
    compiled: cast with the compiled `dda.cast_rays` (None: when numba is installed) or in numpy
        (False); both give the same results bit for bit.
    """

    def __init__(self, grid: GridSpec = OCC3D_GRID, rays: Any = None, free: int = FREE,
                 compiled: Optional[bool] = None) -> None:
        if compiled and not dda.HAVE_NUMBA:
            raise EvaluationError('compiled=True needs numba (pip install numba); compiled=None uses it '
                                  'when it is installed')
        self.compiled = dda.HAVE_NUMBA if compiled is None else bool(compiled)
        self.grid = grid
        self.free = int(free)
        r = lidar_rays() if rays is None else np.asarray(as_numpy(rays), dtype=np.float64)
        if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] == 0:
            raise EvaluationError(f'rays must be (R, 3) directions, got shape {r.shape}')
        norm = np.linalg.norm(r, axis=1, keepdims=True)
        if not np.all(np.isfinite(r)) or np.any(norm == 0):
            raise EvaluationError('ray directions must be finite and non-zero')
        self.rays: np.ndarray = r / norm
        self._lower = np.asarray(grid.lower, dtype=np.float64)
        self._size = np.asarray(grid.voxel, dtype=np.float64)
        self._dims = np.asarray(grid.shape, dtype=np.int64)

    @property
    def num_rays(self) -> int:
        return int(self.rays.shape[0])

    def cast(self, labels: Any, origins: Any = None) -> RayHits:
        """Cast every ray from every origin through every label volume.

        labels: (nx, ny, nz) or (G, nx, ny, nz) integer labels (numpy or torch).
        origins: (3,) or (O, 3) ego-frame metres, used as given (see `select_origins` for the
            official filtering); None → `DEFAULT_LIDAR_ORIGIN`.
        Returns RayHits shaped (O, R) for one volume or (G, O, R) for a stack.
        """
        single = as_numpy(labels).ndim == 3
        lab = as_volume(labels, self.grid, 'labels to cast', leading=True)
        o = np.asarray(DEFAULT_LIDAR_ORIGIN if origins is None else as_numpy(origins), dtype=np.float64)
        if o.ndim == 1:
            o = o[None]
        if o.ndim != 2 or o.shape[1] != 3 or not np.all(np.isfinite(o)):
            raise EvaluationError(f'ray origins must be finite (O, 3) metres, got shape {o.shape}')
        hits = self._cast(lab, o)
        return hits[0] if single else hits

    def _cast(self, lab: np.ndarray, origins: np.ndarray) -> RayHits:
        G = lab.shape[0]
        n_orig, R = origins.shape[0], self.num_rays
        dims, free = self._dims, self.free
        nvox = int(np.prod(dims))
        p0 = (origins - self._lower) / self._size                      # (n_orig, 3) voxel units
        v = self.rays / self._size                                     # (R, 3) voxels per metre
        with np.errstate(divide='ignore'):
            inv = np.where(v != 0, 1.0 / np.where(v != 0, v, 1.0), np.inf)   # (R, 3)
        # Padded volumes: one sentinel layer around the grid, so that stepping out of the grid is
        # found by the same lookup as a hit. code: 0 free, 1 occupied, 2 outside.
        pdims = dims + 2
        pstride = np.asarray([pdims[1] * pdims[2], pdims[2], 1], dtype=np.int64)
        npad = int(np.prod(pdims))
        code = np.full((G, *pdims), 2, dtype=np.uint8)
        code[:, 1:-1, 1:-1, 1:-1] = lab != free
        code = code.reshape(-1)
        rec_voxel = np.full(G * n_orig * R, -1, dtype=np.int64)        # padded index of the answer
        rec_depth = np.zeros(G * n_orig * R, dtype=np.float64)
        rec_hit = np.zeros(G * n_orig * R, dtype=bool)
        if self.compiled:
            dda.cast_rays(code, npad, dims, pstride, p0, v, inv, G, rec_voxel, rec_depth, rec_hit)
        else:
            _cast_numpy(code, npad, dims, pstride, p0, v, inv, G, rec_voxel, rec_depth, rec_hit)

        # padded indices → grid voxels and labels
        out_label = np.full(G * n_orig * R, free, dtype=np.int64)
        out_voxel = np.full(G * n_orig * R, -1, dtype=np.int64)
        got = rec_voxel >= 0
        g_of, local = np.divmod(rec_voxel[got], npad)
        ijk = np.stack(np.unravel_index(local, tuple(pdims)), axis=0) - 1
        vox = np.ravel_multi_index(tuple(ijk), tuple(dims))
        out_voxel[got] = vox
        flat_lab = lab.reshape(-1)
        h = rec_hit[got]
        out_label[np.flatnonzero(got)[h]] = flat_lab[g_of[h] * nvox + vox[h]]
        out_depth = rec_depth
        shape = (G, n_orig, R)
        return RayHits(out_label.reshape(shape), out_depth.reshape(shape), out_voxel.reshape(shape))


def _cast_numpy(code: np.ndarray, npad: int, dims: np.ndarray, pstride: np.ndarray, p0: np.ndarray, v: np.ndarray,
                inv: np.ndarray, G: int, rec_voxel: np.ndarray, rec_depth: np.ndarray, rec_hit: np.ndarray) -> None:
    """`dda.cast_rays` in numpy (without numba), same arguments and results bit for bit: the slab
    test, first voxels and steps of all rays at once, then `_walk_numpy`."""
    n_orig, R = p0.shape[0], v.shape[0]
    # Slab test: parameter interval [t_enter, t_leave) of each ray inside the grid box.
    pp = np.broadcast_to(p0[:, None, :], (n_orig, R, 3))
    zero = np.broadcast_to(v[None] == 0, (n_orig, R, 3))
    with np.errstate(invalid='ignore'):
        ta = (0.0 - pp) * inv[None]
        tb = (dims - pp) * inv[None]
    t_lo = np.minimum(ta, tb)
    t_hi = np.maximum(ta, tb)
    inside_axis = (pp >= 0) & (pp < dims)
    t_lo = np.where(zero, np.where(inside_axis, -np.inf, np.inf), t_lo)
    t_hi = np.where(zero, np.where(inside_axis, np.inf, -np.inf), t_hi)
    t_enter = np.maximum(t_lo.max(axis=2), 0.0)                    # (n_orig, R)
    enters = t_enter < t_hi.min(axis=2)

    step = np.sign(v).astype(np.int64)                             # (R, 3)
    tdelta = np.abs(inv)                                           # (R, 3) metres per voxel
    start = pp + np.where(enters, t_enter, 0.0)[..., None] * v[None]
    idx0 = np.clip(np.floor(start), 0, dims - 1).astype(np.int64)  # (n_orig, R, 3)
    with np.errstate(invalid='ignore'):
        tmax0 = (idx0 + (step[None] > 0) - pp) * inv[None]         # next boundary per axis
    tmax0 = np.where(zero, np.inf, tmax0)

    sel = np.flatnonzero(enters.reshape(-1))                       # geometry index o·R + r
    geo = np.tile(sel, G)
    gg = np.repeat(np.arange(G, dtype=np.int64), sel.size)
    ray = gg * (n_orig * R) + geo                                  # output index g·n_orig·R + o·R + r
    lin = gg * npad + (idx0.reshape(-1, 3)[geo] + 1) @ pstride     # padded linear voxel index
    r_of = geo % R
    t_in = t_enter.reshape(-1)[geo]                                # where the ray entered its voxel
    tmax, tdl, lstep = tmax0.reshape(-1, 3)[geo], tdelta[r_of], (step * pstride)[r_of]
    _walk_numpy(code, ray, lin, tmax.T, tdl.T, lstep.T, t_in, rec_voxel, rec_depth, rec_hit)


def _walk_numpy(code: np.ndarray, ray: np.ndarray, lin: np.ndarray, tmax_t: np.ndarray, tdl_t: np.ndarray,
                lstep_t: np.ndarray, t_in: np.ndarray, rec_voxel: np.ndarray, rec_depth: np.ndarray,
                rec_hit: np.ndarray) -> None:
    """The voxel walk in numpy: all rays advance together, one numpy step per voxel crossing.
    ray: output index per ray; lin: padded start voxel; tmax_t, tdl_t, lstep_t: (3, A) next
    boundary, metres per voxel and index step per axis; t_in: where each ray entered."""
    tmax = np.ascontiguousarray(tmax_t)                                # next boundary per axis
    tdl = np.ascontiguousarray(tdl_t)                                  # metres per voxel per axis
    lstep = np.ascontiguousarray(lstep_t)                              # linear index step per axis
    prev = lin.copy()                                                  # the voxel before (inside)
    # Finished rays are parked (their steps zeroed, `live` cleared) and only compacted away
    # once a quarter of the state is dead: compacting ~10 arrays on every step, as soon as any
    # ray finished, cost more than stepping the parked rays. A parked ray stays on its last
    # voxel and is never recorded again, so every ray's result is the same as with eager
    # compaction.
    live = np.ones(ray.size, dtype=bool)
    n_live = ray.size
    arange = np.arange(ray.size)
    while n_live:
        n = ray.size
        c = code[lin]
        tx, ty, tz = tmax
        # the official dvr.cu order (lib/dvr/dvr.cu l.210-229): x only when strictly first, y
        # before x on an x/y tie, z on any tie with the smallest
        on_x = (tx < ty) & (tx < tz)
        on_y = ~(tx < ty) & (ty < tz)
        axis = on_y + 2 * ~(on_x | on_y)                           # 0, 1, 2: the axis crossed next
        k = arange[:n] + n * axis                                  # flat index into (3, n)
        t_out = tmax.reshape(-1)[k]                                # where the ray leaves this voxel
        c &= live.view(np.uint8) * np.uint8(3)                     # parked rays read as free
        if c.any():
            hit, gone = c == 1, c == 2
            rh, rg = ray[hit], ray[gone]
            rec_hit[rh] = True
            rec_voxel[rh] = lin[hit]
            rec_depth[rh] = t_out[hit]
            rec_voxel[rg] = prev[gone]
            rec_depth[rg] = t_in[gone]                             # left the grid where it entered the pad
            done = np.flatnonzero(c)
            live[done] = False
            n_live -= done.size
            if not n_live:
                break
            if n_live * 4 < n * 3:                                 # compact: keep the live rays
                keep = np.flatnonzero(live)
                n = keep.size
                ray, lin, t_out, axis, t_in = ray[keep], lin[keep], t_out[keep], axis[keep], t_in[keep]
                prev = prev[keep]
                tmax, tdl, lstep = tmax.take(keep, axis=1), tdl.take(keep, axis=1), lstep.take(keep, axis=1)
                live = np.ones(n, dtype=bool)
                k = arange[:n] + n * axis
            else:                                                  # park the finished rays
                lstep[:, done] = 0
                tdl[:, done] = 0.0
        t_in = t_out
        prev = lin
        lin = lin + lstep.reshape(-1)[k]
        tmax.reshape(-1)[k] = t_out + tdl.reshape(-1)[k]


def cast_ray_bruteforce(labels: Any, origin: Sequence[float], direction: Sequence[float],
                        grid: GridSpec = OCC3D_GRID, free: int = FREE) -> tuple[int, float, int]:
    """Reference caster for ONE ray, written for clarity, not speed (tests only).

    Lists every grid-plane crossing t > 0 of the ray (metres), sorts them, and visits the voxel
    containing the midpoint of each interval between consecutive crossings, in order.
    labels: (nx, ny, nz); origin: (3,) metres; direction: (3,) (normalised here).
    Returns (label, depth_m, flat_voxel) with the same meaning as one entry of `RayHits`.
    """
    lab = as_volume(labels, grid, 'labels to cast')
    o = [float(c) for c in origin]
    norm = math.sqrt(sum(float(c) ** 2 for c in direction))
    d = [float(c) / norm for c in direction]
    lower, size, dims = grid.lower, grid.voxel, grid.shape
    crossings = [0.0]
    for a in range(3):
        if d[a] == 0.0:
            continue
        for k in range(dims[a] + 1):
            t = (lower[a] + k * size[a] - o[a]) / d[a]
            if t > 0.0:
                crossings.append(t)
    crossings.sort()
    entered, last = False, -1
    for t0, t1 in zip(crossings[:-1], crossings[1:]):
        if t1 <= t0:
            continue
        tm = 0.5 * (t0 + t1)
        cell = [math.floor((o[a] + tm * d[a] - lower[a]) / size[a]) for a in range(3)]
        if not all(0 <= cell[a] < dims[a] for a in range(3)):
            if entered:                       # left the grid at t0
                return free, t0, last
            continue
        entered = True
        last = (cell[0] * dims[1] + cell[1]) * dims[2] + cell[2]
        value = int(lab[cell[0], cell[1], cell[2]])
        if value != free:
            return value, t1, last
    if entered:                               # the last crossing is the grid exit
        return free, crossings[-1], last
    return free, 0.0, -1


def cast_origins_bruteforce(labels: Any, origins: Any, rays: Any, grid: GridSpec = OCC3D_GRID,
                            free: int = FREE) -> RayHits:
    """`cast_ray_bruteforce` over (n_orig, 3) origins × (R, 3) rays → RayHits shaped (n_orig, R)."""
    o = np.atleast_2d(np.asarray(as_numpy(origins), dtype=np.float64))
    r = np.asarray(as_numpy(rays), dtype=np.float64)
    lab = np.empty((o.shape[0], r.shape[0]), dtype=np.int64)
    dep = np.empty(lab.shape, dtype=np.float64)
    vox = np.empty(lab.shape, dtype=np.int64)
    for i, org in enumerate(o):
        for j, d in enumerate(r):
            lab[i, j], dep[i, j], vox[i, j] = cast_ray_bruteforce(labels, org, d, grid, free)
    return RayHits(lab, dep, vox)


def default_caster(grid: GridSpec, caster: Optional[RayCaster]) -> RayCaster:
    """`caster` if given (checking it uses `grid`), else the official-pattern caster for `grid`."""
    if caster is None:
        return RayCaster(grid)
    if caster.grid != grid:
        raise EvaluationError(f'the RayCaster grid {caster.grid} differs from the metric grid {grid}')
    return caster
