"""The renderer's colour pass (numba): one camera's uint8 RGB image from its rasterisation, row by
row and run by run.

A row of pixels is cut into runs — pixels of one face, ground pixels, sky pixels — and each run goes
through short loops over contiguous memory that LLVM vectorises: a face run's texture coordinates
(l1, l2) from the pixel's ray and depth, its texel indices, the texel look-ups (scalar), the window
or stripe pattern, colour × texture and haze; a ground run's world point, ground-raster cell and
texels likewise. Their float32 values land in a row buffer (in cache); one loop per row then adds
the sensor grain and rounds to uint8 as `cv2.convertScaleAbs` does (|x| to the nearest integer, ties
to even, saturated to 0..255; NaN and ±inf give 255, as cv2's do). The pass used to go pixel by pixel
with a branch per kind (≈ 10 ns a pixel: instruction-bound) and write float32 values that
`cv2.convertScaleAbs` turned into uint8 (16 bytes a pixel to memory and back).

Every value goes through the float32 operations the numpy composition performed, in the same order
(float32 constants, no fused multiply-add, truncating texel indices, numpy's floored `mod`), so the
images are bit-identical to it: `test/test_render_pinned.py` holds them to its digests. The window
and stripe remainders run in float64 arithmetic that is exact while |a| < 2²⁴·b (`fmod_f32`'s
proof); a run with a coordinate beyond that — none in any world — is redone with `fmod_f32`, which
falls back to C's fmodf. The haze factor exp(−depth / FOG) is computed by numpy before the pass
(numpy's SIMD expf and libm's may differ in the last bit).

Compiled on first use (cached in __pycache__ when the folder is writable); `warm_up()` compiles it
in the parent before rendering workers fork, so they share the compiled code.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from occ_ros.bag.world_mix import MAT_BARK, MAT_CLOTH, MAT_FACADE, MAT_FOLIAGE, MAT_STRIPES

_F = np.float32
_U = np.uint64                      # unsigned indices: no negative-index fix-up, so loads stay contiguous
_EXACT_QUOTIENT = 16777216.0        # 2**24: below this many b's the float64 remainder is exact
_WINDOW_Y = 3.299999952316284       # float32(3.3), float32(3.2), float32(1.0): the patterns' periods
_WINDOW_X = 3.200000047683716
_STRIPE = 1.0


@njit(cache=True, inline='always')
def _remainder(x: float, y: float) -> float:
    """x − ⌊x / y⌋·y for float64 x ≥ 0 and y > 0, the quotient's off-by-one corrected (selects, not
    branches, so that a loop of it vectorises); exact while x < 2²⁴·y (`fmod_f32`'s proof)."""
    r = x - np.floor(x / y) * y
    r = r + y if r < 0.0 else r
    return r - y if r >= y else r


@njit(cache=True, inline='always')
def _floored(r: np.float32, b: np.float32) -> np.float32:
    """A truncated float32 remainder r (the sign of the dividend) made floored, numpy's `mod`: the
    sign of b."""
    return _F(r + b) if (r != 0) & ((b < 0) != (r < 0)) else r


@njit(cache=True, inline='always')
def fmod_f32(a: np.float32, b: np.float32) -> np.float32:
    """C's fmodf(a, b) (the remainder with the sign of a, always exact) for float32 a and b > 0,
    without the libm call.

    In float64: n = ⌊|a| / b⌋ is off by at most one and corrected below; with |a| < 2²⁴·b,
    n < 2²⁴ so n·b (≤ 48 significant bits) is exact, and |a| − n·b, a multiple of b's float32
    ulp smaller than 3·b, is exact too, as is the correction by ±b; the result, smaller than b
    and on that ulp grid, is a float32. Beyond 2²⁴·b, b ≤ 0 or a non-finite a: fmodf itself.
    `test/test_render_pinned.py` compares it with numpy's fmod on float32 edge cases."""
    x = np.float64(abs(a))
    y = np.float64(b)
    if not (y > 0.0 and x < _EXACT_QUOTIENT * y):
        return _F(np.fmod(a, b))
    return _F(np.copysign(_remainder(x, y), np.float64(a)))       # the sign of a, −0.0 included


@njit(cache=True, inline='always')
def _fmod(a: np.float32, b: np.float32) -> np.float32:
    """numpy's float32 `mod` (floored: the result has the sign of b)."""
    return _floored(fmod_f32(a, b), b)


@njit(cache=True, inline='always')
def _mod_in_range(a: np.float32, b: float) -> np.float32:
    """`_fmod(a, float32(b))` for b > 0 (a float32 value given as float64) and |a| < 2²⁴·b: the
    same float64 operations without the range test and the libm branch, so a loop of it vectorises
    (the caller checks the range and redoes the run with `_fmod` when it fails)."""
    return _floored(_F(np.copysign(_remainder(np.float64(abs(a)), b), np.float64(a))), _F(b))


@njit(cache=True, inline='always')
def _texel(row: np.float32, col: np.float32) -> np.uint32:
    """Index of texel (⌊row⌋ mod 256, ⌊col⌋ mod 256) in a flat 256 × 256 texture, truncating
    toward zero as the int32 cast does."""
    return np.uint32(((np.int32(row) & 255) << 8) | (np.int32(col) & 255))


@njit(cache=True, inline='always')
def _round_saturate(x: np.float32) -> np.uint8:
    """cv2.convertScaleAbs of one float32 value: |x| rounded to the nearest integer (ties to even),
    saturated to 0..255 — NaN and ±inf too give 255, as cv2's do."""
    r = np.rint(abs(x))
    return np.uint8(np.int32(r if r <= _F(255.0) else _F(255.0)))


@njit(cache=True)
def round_saturate(values: np.ndarray) -> np.ndarray:
    """`_round_saturate` of each value of a float32 array (what the pass does to its row buffer)."""
    flat = values.ravel()
    out = np.empty(flat.shape[0], np.uint8)
    for i in range(flat.shape[0]):
        out[i] = _round_saturate(flat[i])
    return out.reshape(values.shape)


@njit(cache=True, inline='always')
def _in_window(b_: np.float32, a_: np.float32, l2: np.float32) -> bool:
    """A facade's window, from the remainders b_ = mod(l2, 3.3) and a_ = mod(l1, 3.2): b_ ∈ (1, 2.5),
    l2 > 0.5 and a_ ∈ (0.9, 2.4)."""
    return (b_ > _F(1.0)) & (b_ < _F(2.5)) & (l2 > _F(0.5)) & (a_ > _F(0.9)) & (a_ < _F(2.4))


@njit(cache=True, inline='always')
def _window(l1: np.float32, l2: np.float32) -> bool:
    """A facade's window at face coordinates (l1, l2), the remainders by `_mod_in_range`: exact where
    `_window_in_range`."""
    return _in_window(_mod_in_range(l2, _WINDOW_Y), _mod_in_range(l1, _WINDOW_X), l2)


@njit(cache=True, inline='always')
def _window_in_range(l1: np.float32, l2: np.float32) -> bool:
    return (abs(l1) < _EXACT_QUOTIENT * _WINDOW_X) & (abs(l2) < _EXACT_QUOTIENT * _WINDOW_Y)


@njit(cache=True, inline='always')
def _stripe_coord(l1: np.float32, l2: np.float32) -> np.float32:
    """The coordinate across a striped face's stripes: 0.7·l1 + 1.4·l2 (float32)."""
    return l1 * _F(0.7) + l2 * _F(1.4)


@njit(cache=True, inline='always')
def _stripe(l1: np.float32, l2: np.float32) -> bool:
    """A striped face's light stripe: mod(`_stripe_coord`, 1) < 0.5 — exact where `_stripe_in_range`."""
    return _mod_in_range(_stripe_coord(l1, l2), _STRIPE) < _F(0.5)


@njit(cache=True, inline='always')
def _stripe_in_range(l1: np.float32, l2: np.float32) -> bool:
    return abs(_stripe_coord(l1, l2)) < _EXACT_QUOTIENT * _STRIPE


@njit(cache=True, inline='always')
def _pattern_flags(win: np.ndarray, L1: np.ndarray, L2: np.ndarray, n: int, mat: int) -> None:
    """win[k] = 1 where pixel k of a face run shows its alternative colour: a window of a facade,
    the light stripe of a striped face (else 0). L1, L2: the pixels' face coordinates (metres).
    Coordinates beyond the float64 remainder's exact range go through `_fmod` (libm's fmodf)."""
    if mat == MAT_FACADE:
        for k in range(n):
            l1, l2 = L1[k], L2[k]
            if _window_in_range(l1, l2):
                win[k] = _window(l1, l2)
            else:
                win[k] = _in_window(_fmod(l2, _F(_WINDOW_Y)), _fmod(l1, _F(_WINDOW_X)), l2)
    elif mat == MAT_STRIPES:
        for k in range(n):
            l1, l2 = L1[k], L2[k]
            if _stripe_in_range(l1, l2):
                win[k] = _stripe(l1, l2)
            else:
                win[k] = _fmod(_stripe_coord(l1, l2), _F(_STRIPE)) < _F(0.5)
    else:
        for k in range(n):
            win[k] = False


@njit(cache=True)
def pattern_flags(l1: np.ndarray, l2: np.ndarray, mat: int) -> np.ndarray:
    """The pass's window / stripe flags for face coordinates `l1`, `l2` (float32) of material `mat`."""
    win = np.empty(l1.shape[0], np.bool_)
    _pattern_flags(win, l1, l2, l1.shape[0], mat)
    return win


@njit(cache=True, inline='always')
def _plain_texture(n1: np.float32, n2: np.float32) -> np.float32:
    """The texture of a face that is not foliage, bark or cloth: 0.9 + 0.12·coarse + 0.08·fine noise."""
    return _F(0.9) + _F(0.12) * n1 + _F(0.08) * n2


@njit(cache=True, inline='always')
def _face_colour(X: np.ndarray, u: int, m: np.float32, fp: np.float32, alt: bool, c: tuple, h0: np.float32,
                 h1: np.float32, h2: np.float32) -> None:
    """X[3u..3u + 3] = colour·m·fp − (fp − 1)·haze, the colour c[0:3] (the face's LUT row) or, with
    `alt`, c[3:6] (its window / stripe row) — texture m, haze weight fp."""
    mod = m * fp
    f1 = fp - _F(1.0)
    q = _U(3 * u)
    X[q] = (c[3] if alt else c[0]) * mod - f1 * h0
    X[q + _U(1)] = (c[4] if alt else c[1]) * mod - f1 * h1
    X[q + _U(2)] = (c[5] if alt else c[2]) * mod - f1 * h2


@njit(cache=True, inline='always')
def _face_run(X: np.ndarray, n: int, u: int, vf: np.float32, p: int, depth: np.ndarray, f: np.ndarray,
              a00: np.float32, a01: np.float32, a02: np.float32, a11: np.float32, a12: np.float32,
              axes: np.ndarray, fi: int, noise: np.ndarray, noise_fine: np.ndarray, mat: int, lut: np.ndarray,
              alt: int, h0: np.float32, h1: np.float32, h2: np.float32, L1: np.ndarray, L2: np.ndarray,
              I1: np.ndarray, I2: np.ndarray, N1: np.ndarray, N2: np.ndarray, win: np.ndarray) -> None:
    """Colours (before grain) of the n pixels of face fi from column u of the row (flat pixel p)
    into X[3u..]: the face coordinates from the ray A·(u, v, 1) at the pixel's depth, texture
    (material's mix of the coarse and fine noise), window / stripe colour, haze."""
    x0, x1, x2, x3 = axes[fi, 0], axes[fi, 1], axes[fi, 2], axes[fi, 3]
    y0, y1, y2, y3 = axes[fi, 4], axes[fi, 5], axes[fi, 6], axes[fi, 7]
    for k in range(n):
        uf = _F(u + k)
        z = depth[_U(p + k)]
        px = (a00 * uf + a01 * vf + a02) * z
        py = (a11 * vf + a12) * z
        l1 = px * x0 + py * x1 + z * x2 + x3
        l2 = px * y0 + py * y1 + z * y2 + y3
        L1[k] = l1
        L2[k] = l2
        I1[k] = _texel(l2 * _F(4.0), l1 * _F(4.0))
        I2[k] = _texel(l2 * _F(20.0), l1 * _F(20.0))
    for k in range(n):
        N1[k] = noise[I1[k]]
        N2[k] = noise_fine[I2[k]]
    # texture × colour (the face's or its window / stripe colour) and haze, one loop per material
    cc = (lut[fi, 0], lut[fi, 1], lut[fi, 2], lut[alt, 0], lut[alt, 1], lut[alt, 2])
    if mat == MAT_FOLIAGE:
        for k in range(n):
            _face_colour(X, u + k, _F(0.55) + _F(0.55) * N2[k] + _F(0.25) * N1[k], f[_U(p + k)], False, cc,
                         h0, h1, h2)
    elif mat == MAT_BARK or mat == MAT_CLOTH:
        for k in range(n):
            _face_colour(X, u + k, _F(0.78) + _F(0.4) * N2[k], f[_U(p + k)], False, cc,
                         h0, h1, h2)
    elif mat == MAT_FACADE or mat == MAT_STRIPES:
        exact = True
        if mat == MAT_FACADE:
            for k in range(n):
                exact &= _window_in_range(L1[k], L2[k])
                _face_colour(X, u + k, _plain_texture(N1[k], N2[k]), f[_U(p + k)],
                             _window(L1[k], L2[k]), cc, h0, h1, h2)
        else:
            for k in range(n):
                exact &= _stripe_in_range(L1[k], L2[k])
                _face_colour(X, u + k, _plain_texture(N1[k], N2[k]), f[_U(p + k)],
                             _stripe(L1[k], L2[k]), cc, h0, h1, h2)
        if not exact:                       # a coordinate past 2²⁴ periods: the run again, libm's way
            _pattern_flags(win, L1, L2, n, mat)
            for k in range(n):
                _face_colour(X, u + k, _plain_texture(N1[k], N2[k]), f[_U(p + k)], win[k],
                             cc, h0, h1, h2)
    else:
        for k in range(n):
            _face_colour(X, u + k, _plain_texture(N1[k], N2[k]), f[_U(p + k)], False, cc,
                         h0, h1, h2)


@njit(cache=True, inline='always')
def _ground_run(X: np.ndarray, n: int, u: int, kg: int, p: int, ground_x: np.ndarray, ground_y: np.ndarray,
                f: np.ndarray, c: float, s: float, tx: float, ty: float, raster: np.ndarray, raster_x0: float,
                raster_y0: float, inv_res: float, outside: int, lut_ground: np.ndarray, noise: np.ndarray,
                noise_fine: np.ndarray, h0: np.float32, h1: np.float32, h2: np.float32, C: np.ndarray,
                I1: np.ndarray, I2: np.ndarray, N1: np.ndarray, N2: np.ndarray) -> None:
    """Colours (before grain) of the n ground pixels ground_idx[kg..] from column u (flat pixel p)
    into X[3u..]: the ground point in the world, its raster cell's colour (`outside` beyond the
    raster), the world-anchored coarse × fine noise, haze."""
    rh, rw = raster.shape
    for k in range(n):
        gx = ground_x[_U(kg + k)]
        gy = ground_y[_U(kg + k)]
        wx = tx + c * gx - s * gy
        wy = ty + s * gx + c * gy
        ix = np.int64(np.floor((wx - raster_x0) * inv_res))
        iy = np.int64(np.floor((wy - raster_y0) * inv_res))
        C[k] = iy * rw + ix if (ix >= 0) & (ix < rw) & (iy >= 0) & (iy < rh) else -1
        wxf = _F(wx)
        wyf = _F(wy)
        I1[k] = _texel(wyf * _F(2.0), wxf * _F(2.0))
        I2[k] = _texel(wyf * _F(12.0), wxf * _F(12.0))
    cells = raster.reshape(-1)
    for k in range(n):
        N1[k] = noise[I1[k]]
        N2[k] = noise_fine[I2[k]]
        ck = C[k]
        C[k] = np.int64(cells[_U(ck)]) if ck >= 0 else outside
    for k in range(n):
        fp = f[_U(p + k)]
        m = (_F(0.82) + _F(0.3) * N1[k]) * (_F(0.88) + _F(0.24) * N2[k])
        mod = m * fp
        f1 = fp - _F(1.0)
        row = _U(C[k])
        q = _U(3 * (u + k))
        X[q] = lut_ground[row, 0] * mod - f1 * h0
        X[q + _U(1)] = lut_ground[row, 1] * mod - f1 * h1
        X[q + _U(2)] = lut_ground[row, 2] * mod - f1 * h2


@njit(cache=True)
def ground_runs(ground_idx: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """A camera's ground pixels `ground_idx` (ascending flat indices) as runs along its rows: runs
    (R, 3) int64 of (first column, column past the last, index in ground_idx of the first), row v's
    being runs[row_runs[v]:row_runs[v + 1]] (a pinhole camera has at most one a row)."""
    n = ground_idx.shape[0]
    runs = np.empty((max(n, 1), 3), np.int64)
    row_runs = np.zeros(H + 1, np.int64)
    nr = 0
    k = 0
    while k < n:
        p = ground_idx[k]
        v = p // W
        u0 = p - v * W
        k1 = k + 1
        while k1 < n and ground_idx[k1] == p + (k1 - k) and u0 + (k1 - k) < W:
            k1 += 1
        runs[nr, 0] = u0
        runs[nr, 1] = u0 + (k1 - k)
        runs[nr, 2] = k
        row_runs[v + 1] += 1
        nr += 1
        k = k1
    for v in range(H):
        row_runs[v + 1] += row_runs[v]
    return row_runs, runs[:nr].copy()


@njit(cache=True)
def compose_image(out: np.ndarray, W: int, f: np.ndarray, sky: np.ndarray, grain: np.ndarray, oy: int, ox: int,
                  lut: np.ndarray, haze: np.ndarray, noise: np.ndarray, noise_fine: np.ndarray,
                  fid: np.ndarray, row_runs: np.ndarray, runs: np.ndarray, ground_x: np.ndarray,
                  ground_y: np.ndarray, pose: np.ndarray, raster: np.ndarray, raster_x0: float, raster_y0: float,
                  inv_res: float, outside: int, g0: int, depth: np.ndarray, A: np.ndarray, axes: np.ndarray,
                  face_mat: np.ndarray, nface: int) -> None:
    """Write one camera's image into `out`, its H·W·3 uint8 RGB values (flat, C order).

    A pixel shows face fid[p] when fid[p] ≥ 0; else the ground when it is in one of the camera's
    ground runs (`ground_runs`: row v's are runs[row_runs[v]:row_runs[v + 1]]; ground_x / ground_y:
    the ego-frame ground point of each ground pixel, in raster order); else the sky.
    f: exp(−depth / FOG) per pixel. sky: (H·W·3) sky colours. grain: (≥ H + oy, ≥ W + ox, 3) sensor
    grain, read at (oy + v, ox + u). lut: colour rows — faces [0, nface), the faces' window / stripe
    colours [nface, 2·nface), ground raster values [g0, g0 + 128). pose: (4, 4) ego → world.
    raster: the world's ground raster (class | paint bits; `outside` beyond it), cell
    ⌊(x − x0)·inv_res⌋. A: float32 inverse intrinsics; axes: (F, 8) face texture axes in the
    optical frame; face_mat: each face's material.
    """
    H = fid.shape[0] // W
    h0, h1, h2 = haze[0], haze[1], haze[2]
    c, s, tx, ty = pose[0, 0], pose[1, 0], pose[0, 3], pose[1, 3]
    a00, a01, a02, a11, a12 = A[0, 0], A[0, 1], A[0, 2], A[1, 1], A[1, 2]
    lut_ground = lut[g0:]
    sky_flat = sky.reshape(-1)
    grain_flat = grain.reshape(-1)
    grain_w = grain.shape[1]
    X = np.empty(3 * W, np.float32)                     # the row's colours before grain
    L1 = np.empty(W, np.float32)
    L2 = np.empty(W, np.float32)
    N1 = np.empty(W, np.float32)
    N2 = np.empty(W, np.float32)
    I1 = np.empty(W, np.uint32)
    I2 = np.empty(W, np.uint32)
    C = np.empty(W, np.int64)
    win = np.empty(W, np.bool_)
    for v in range(H):
        vf = _F(v)
        p0 = v * W
        r, r_end = row_runs[v], row_runs[v + 1]         # the row's ground runs
        u = 0
        while u < W:
            p = p0 + u
            fi = fid[_U(p)]
            u1 = u + 1
            if fi >= 0:
                while u1 < W and fid[_U(p0 + u1)] == fi:
                    u1 += 1
                _face_run(X, u1 - u, u, vf, p, depth, f, a00, a01, a02, a11, a12, axes, fi, noise, noise_fine,
                          face_mat[fi], lut, fi + nface, h0, h1, h2, L1, L2, I1, I2, N1, N2, win)
                u = u1
                continue
            while r < r_end and runs[r, 1] <= u:
                r += 1
            if r < r_end and runs[r, 0] <= u:                       # ground
                end = runs[r, 1]
                while u1 < end and fid[_U(p0 + u1)] < 0:
                    u1 += 1
                _ground_run(X, u1 - u, u, runs[r, 2] + u - runs[r, 0], p, ground_x, ground_y, f, c, s, tx, ty,
                            raster, raster_x0, raster_y0, inv_res, outside, lut_ground, noise, noise_fine, h0, h1,
                            h2, C, I1, I2, N1, N2)
            else:                                                   # sky: its colour, then the grain
                end = runs[r, 0] if r < r_end else W
                while u1 < end and fid[_U(p0 + u1)] < 0:
                    u1 += 1
                for k in range(3 * (u1 - u)):
                    X[_U(3 * u + k)] = sky_flat[_U(3 * p + k)]
            u = u1
        g = (oy + v) * grain_w + ox
        for j in range(3 * W):
            out[_U(3 * p0 + j)] = _round_saturate(X[j] + grain_flat[_U(3 * g + j)])


def warm_up() -> None:
    """Compile `compose_image` (or load it from numba's cache) for the argument types the renderer
    passes, on a one-pixel image: call it before forking rendering workers so that they share the
    compiled code instead of each compiling it."""
    f32, one = np.float32, np.ones
    compose_image(np.zeros(3, np.uint8), 1, one(1, f32), one((1, 3), f32), one((1, 1, 3), f32), 0, 0,
                  one((1, 3), f32), one(3, f32), one(65536, f32), one(65536, f32), np.full(1, -1, np.int32),
                  *ground_runs(np.zeros(0, np.int64), 1, 1), np.zeros(1), np.zeros(1), np.eye(4),
                  np.zeros((1, 1), np.uint8), 0.0, 0.0, 5.0, 0, 0, one(1, f32), np.eye(3, dtype=f32),
                  np.zeros((0, 8), f32), np.zeros(0, np.uint8), 0)
