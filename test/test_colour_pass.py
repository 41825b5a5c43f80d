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
