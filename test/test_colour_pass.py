"""The renderer's colour pass (`occ_ros.bag.colour`), held to outside references: its rounding to
uint8 to OpenCV's `cv2.convertScaleAbs` (the numpy composition's last step), its window and stripe
patterns to numpy's float32 floored `mod` (the numpy composition's operation), and a full-size demo
frame to the digest the renderer before it (commit f8af487, the per-pixel pass) gave.
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from occ_ros.bag.colour import pattern_flags, round_saturate
from occ_ros.bag.world_mix import MAT_FACADE, MAT_FOLIAGE, MAT_PLAIN, MAT_STRIPES

f32 = np.float32


def test_rounding_to_uint8_is_cv2_convertScaleAbs() -> None:
    """Every value the pass rounds goes through `_round_saturate`; cv2.convertScaleAbs (|x| rounded
    to nearest, ties to even, saturated) is what the images were made with, so the two must agree
    on: random values over the image's range and far beyond it, every half-integer tie from −300 to
    600 and its float32 neighbours, ±0, subnormals, 2³¹ and past it, ±inf and NaN."""
    rng = np.random.default_rng(3)
    ties = np.arange(-300.5, 600.5, 1.0, dtype=f32)
    x = np.concatenate([
        rng.uniform(-400, 700, 20000).astype(f32), ties, np.nextafter(ties, f32(np.inf)),
        np.nextafter(ties, f32(-np.inf)), (rng.standard_normal(2000) * 1e6).astype(f32),
        np.array([0.0, -0.0, 1e-45, -1e-45, 254.5, 255.5, 255.49998, 2147483520.0, 2147483648.0, 3e9, -3e9, 1e38,
                  np.inf, -np.inf, np.nan], dtype=f32)]).astype(f32)
    want = cv2.convertScaleAbs(x.reshape(1, -1)).ravel()
    got = round_saturate(x)
    assert got.dtype == np.uint8
    assert np.array_equal(got, want), x[got != want][:8]


def _numpy_flags(l1: np.ndarray, l2: np.ndarray, mat: int) -> np.ndarray:
    """The numpy composition's pattern: windows where mod(l2, 3.3) ∈ (1, 2.5), l2 > 0.5 and
    mod(l1, 3.2) ∈ (0.9, 2.4) on a facade; the light stripe where mod(0.7·l1 + 1.4·l2, 1) < 0.5."""
    with np.errstate(invalid='ignore'):
        if mat == MAT_FACADE:
            b = np.mod(l2, f32(3.3))
            a = np.mod(l1, f32(3.2))
            return (b > 1.0) & (b < 2.5) & (l2 > 0.5) & (a > 0.9) & (a < 2.4)
        if mat == MAT_STRIPES:
            return np.mod(l1 * f32(0.7) + l2 * f32(1.4), f32(1.0)) < 0.5
    return np.zeros(len(l1), bool)


@pytest.mark.parametrize('mat', [MAT_FACADE, MAT_STRIPES, MAT_FOLIAGE, MAT_PLAIN])
def test_window_and_stripe_patterns_are_numpys_floored_mod(mat: int) -> None:
    """The pass computes the remainders in float64 in a loop that vectorises, and redoes a run whose
    coordinates reach 2²⁴ periods with the libm path; both must flag the same pixels as numpy's
    float32 `mod`: random coordinates over ten decades, the periods' multiples and their float32
    neighbours (where a rounded quotient is off by one), the thresholds' neighbours, ±0, values
    past 2²⁴·b, ±inf and NaN — alone in a run and mixed into a run of ordinary ones."""
    rng = np.random.default_rng(11)
    k = np.arange(-200, 200, dtype=f32)
    edges = np.concatenate([k * f32(3.3), k * f32(3.2), k * f32(1.0), k * f32(0.5),
                            f32([0.5, 0.9, 1.0, 2.4, 2.5])]).astype(f32)
    edges = np.concatenate([edges, np.nextafter(edges, f32(np.inf)), np.nextafter(edges, f32(-np.inf))])
    plain = np.concatenate([(rng.standard_normal(6000) * 10.0 ** rng.integers(-3, 4, 6000)).astype(f32), edges])
    huge = (10.0 ** rng.uniform(7.5, 30, 400) * rng.choice([-1, 1], 400)).astype(f32)     # past 2²⁴·b
    wild = np.concatenate([huge, f32([0.0, -0.0, 6e7, -6e7, np.inf, -np.inf, np.nan])])
    for run in (plain, np.concatenate([plain, wild])):
        l1 = rng.permutation(run).astype(f32)
        l2 = rng.permutation(run).astype(f32)
        got = pattern_flags(l1, l2, mat)
        want = _numpy_flags(l1, l2, mat)
        assert np.array_equal(got, want), (l1[got != want][:4], l2[got != want][:4])
    if mat == MAT_FACADE:
        assert 0.02 < _numpy_flags(l1, l2, mat).mean() < 0.98            # the case is not trivial


def test_a_full_size_demo_frame_is_the_per_pixel_pass_frame() -> None:
    """Two frame sets of the demo world at the demo's size (six 900×1600 cameras, frames 0 and 41):
    sha256 of their images as the per-pixel pass of commit f8af487 rendered them (the pinned test
    renders at 225×400; this one covers the size the demo and the trainer use)."""
    from occ_ros.bag.synth import SyntheticSequence
    seq = SyntheticSequence(4242, 6.0, 12.0, None, (900, 1600), ground_truth=False)
    h = hashlib.sha256()
    for i in (0, 41):
        for view in seq.frame(i).views:
            assert view.image is not None and view.image.dtype == np.uint8
            h.update(np.ascontiguousarray(view.image).tobytes())
    assert h.hexdigest()[:16] == 'e51f9379bcbe5f6b'


def _numpy_face_row(W: int, v: int, depth: np.ndarray, f: np.ndarray, A: np.ndarray, ax: np.ndarray,
                    lut: np.ndarray, haze: np.ndarray, noise: np.ndarray, noise_fine: np.ndarray,
                    grain: np.ndarray) -> np.ndarray:
    """One row of facade pixels composed with numpy's float32 array operations, in the order the
    numpy composition used (the renderer before its compiled passes)."""
    u = np.arange(W, dtype=f32)
    vf = f32(v)
    px = (A[0, 0] * u + A[0, 1] * vf + A[0, 2]) * depth
    py = (A[1, 1] * vf + A[1, 2]) * depth
    l1 = px * ax[0] + py * ax[1] + depth * ax[2] + ax[3]
    l2 = px * ax[4] + py * ax[5] + depth * ax[6] + ax[7]

    def tex(t: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        with np.errstate(invalid='ignore'):
            return t[((row.astype(np.int32) & 255) << 8) | (col.astype(np.int32) & 255)]
    m = f32(0.9) + f32(0.12) * tex(noise, l2 * f32(4.0), l1 * f32(4.0)) + f32(0.08) * tex(noise_fine, l2 * f32(20.0),
                                                                                          l1 * f32(20.0))
    win = _numpy_flags(l1, l2, MAT_FACADE)
    colour = np.where(win[:, None], lut[1], lut[0])
    mod = m * f
    f1 = f - f32(1.0)
    values = (colour * mod[:, None] - f1[:, None] * haze[None, :]) + grain[0, :W]
    return cv2.convertScaleAbs(values.astype(f32))


def test_a_facade_run_past_the_exact_remainder_range_is_composed_as_numpy_did() -> None:
    """The compose pass computes a facade run's windows in a loop without libm and redoes the run
    with libm's fmodf when a coordinate reaches 2²⁴ periods (beyond which the float64 remainder is
    no longer exact). A one-row image whose single facade has coordinates around 10⁸ m and beyond — and, for
    contrast, one around 10 m — must come out as numpy's float32 composition makes it. (The float64
    remainder happens to stay exact up to about 2²⁹ periods; at the two largest offsets, ≈ 10¹⁷ m,
    it is not, and is wrong enough to move the window flag.)"""
    from occ_ros.bag.colour import compose_image, ground_runs
    rng = np.random.default_rng(5)
    W = 64
    A = np.array([[0.01, 0.0, -0.3], [0.0, 0.01, -0.2], [0.0, 0.0, 1.0]], f32)
    depth = rng.uniform(5, 30, W).astype(f32)
    f = np.exp(depth * f32(-1 / 60.0)).astype(f32)
    lut = rng.uniform(20, 230, (2, 3)).astype(f32)             # the face's colour, its window colour
    haze = f32([180.0, 190.0, 200.0])
    noise, noise_fine = (rng.random(65536).astype(f32) for _ in range(2))
    grain = (rng.standard_normal((1, W, 3)) * 3).astype(f32)
    for offset in (10.0, 1.0e8, 1.5457740199139738e17, 4.076552403518751e17):
        ax = np.array([1.0, 0.0, 0.3, offset, 0.0, 1.0, 0.2, 1.7], f32)
        want = _numpy_face_row(W, 0, depth, f, A, ax, lut, haze, noise, noise_fine, grain)
        out = np.zeros(W * 3, np.uint8)
        compose_image(out, W, f, np.zeros((W, 3), f32), grain, 0, 0, lut, haze, noise, noise_fine,
                      np.zeros(W, np.int32), *ground_runs(np.zeros(0, np.int64), 1, W), np.zeros(0), np.zeros(0),
                      np.eye(4),
                      np.zeros((1, 1), np.uint8), 0.0, 0.0, 5.0, 0, 2, depth, A, ax[None, :],
                      np.array([MAT_FACADE], np.uint8), 1)
        assert np.array_equal(out.reshape(W, 3), want), offset
        if offset == 10.0:
            assert 0 < _numpy_flags(*_face_coords(W, depth, A, ax), MAT_FACADE).sum() < W


def _face_coords(W: int, depth: np.ndarray, A: np.ndarray, ax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.arange(W, dtype=f32)
    px = (A[0, 0] * u + A[0, 1] * f32(0) + A[0, 2]) * depth
    py = (A[1, 1] * f32(0) + A[1, 2]) * depth
    return (px * ax[0] + py * ax[1] + depth * ax[2] + ax[3]), (px * ax[4] + py * ax[5] + depth * ax[6] + ax[7])


def test_ground_runs_cover_the_ground_pixels_row_by_row() -> None:
    """`ground_runs` cuts a camera's ground pixels into runs along its rows: expanded, the runs give
    back every ground pixel once, in order, each run inside one row, maximal (two runs of a row never
    touch), with its index into the ground pixels — also for rows with several runs, a run ending at
    the row's last column and continuing at the next row's first, and no ground at all."""
    from occ_ros.bag.colour import ground_runs
    rng = np.random.default_rng(2)
    H, W = 7, 13
    for mask in [rng.random(H * W) < 0.5, np.zeros(H * W, bool), np.ones(H * W, bool),
                 np.arange(H * W) % W >= 9]:
        idx = np.flatnonzero(mask).astype(np.int64)
        row_runs, runs = ground_runs(idx, H, W)
        assert row_runs[0] == 0 and row_runs[-1] == len(runs) and np.all(np.diff(row_runs) >= 0)
        expanded = []
        for v in range(H):
            mine = runs[row_runs[v]:row_runs[v + 1]]
            for a, b in zip(mine[:-1], mine[1:]):
                assert a[1] < b[0]                                   # maximal: a gap between runs
            for u0, u1, k in mine:
                assert 0 <= u0 < u1 <= W
                assert np.array_equal(idx[k:k + u1 - u0], v * W + np.arange(u0, u1))
                expanded.extend(range(v * W + u0, v * W + u1))
        assert expanded == idx.tolist()
