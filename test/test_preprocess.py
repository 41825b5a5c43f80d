"""Image preprocessing against an independent computation of the official test pipeline.

Reference, written out plainly: PIL resize to (W·s, H·s) with BICUBIC, keep rows
crop_top..crop_top+H_in, swap RGB → BGR, subtract (123.675, 116.28, 103.53) and divide by
(58.395, 57.12, 57.375) position-wise, planes first.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from occ_ros.core.config import ImageGeometry
from occ_ros.core.errors import ImageError
from occ_ros.preprocess import ImagePreprocessor

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def reference(rgb: np.ndarray, input_hw=(256, 704)) -> np.ndarray:
    h, w = rgb.shape[:2]
    h_in, w_in = input_hw
    scale = w_in / w
    new_w, new_h = w_in, int(h * w_in // w)               # = (int(W·s), int(H·s)) for 1600×900
    resized = Image.fromarray(rgb).resize((new_w, new_h), Image.BICUBIC)
    top = new_h - h_in
    crop = np.asarray(resized.crop((0, top, w_in, top + h_in)), dtype=np.float64)
    bgr = crop[:, :, ::-1]
    norm = (bgr - MEAN) / STD
    assert abs(scale * w - w_in) < 1e-9
    return norm.transpose(2, 0, 1)


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A fixed test image: smooth colour gradients, hard edges and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 37.0 + yy / 23.0)], -1)
    img[(xx // 97 + yy // 61) % 2 == 0] *= 0.4                             # checkerboard edges
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def pre() -> ImagePreprocessor:
    p = ImagePreprocessor(ImageGeometry(), workers=2)
    yield p
    p.close()


def test_matches_independent_reference(pre: ImagePreprocessor) -> None:
    img = scene(900, 1600)
    out = pre(img)
    assert out.shape == (3, 256, 704) and out.dtype == torch.float32
    assert np.abs(out.numpy() - reference(img)).max() <= 1e-4


def test_non_contiguous_and_read_only_inputs(pre: ImagePreprocessor) -> None:
    img = scene(900, 1600, seed=7)
    flipped = img[..., ::-1]                               # a strided view (e.g. BGR → RGB)
    ro = img.copy()
    ro.setflags(write=False)                               # e.g. np.frombuffer on a message
    assert torch.equal(pre(flipped), pre(np.ascontiguousarray(flipped)))
    assert torch.equal(pre(ro), pre(img))


def test_planes_are_bgr(pre: ImagePreprocessor) -> None:
    red = np.zeros((900, 1600, 3), np.uint8)
    red[..., 0] = 255
    out = pre(red).numpy()
    # plane 0 = blue (0) with the first mean/std, plane 2 = red (255) with the third
    np.testing.assert_allclose(out[0], (0 - 123.675) / 58.395, atol=1e-5)
    np.testing.assert_allclose(out[1], (0 - 116.28) / 57.12, atol=1e-5)
    np.testing.assert_allclose(out[2], (255 - 103.53) / 57.375, atol=1e-5)


def test_keeps_the_bottom_rows(pre: ImagePreprocessor) -> None:
    img = np.zeros((900, 1600, 3), np.uint8)
    img[:300] = 255                           # top third white: cut away (kept rows start ~318)
    out = pre(img).numpy()
    np.testing.assert_allclose(out[:, 5:], ((0 - MEAN) / STD)[:, None, None]
                               * np.ones((3, 251, 704)), atol=1e-5)


@pytest.mark.parametrize('hw', [(1080, 1920), (720, 1280), (1200, 1920), (450, 800),
                                (600, 640), (300, 267)])
def test_other_source_sizes(pre: ImagePreprocessor, hw) -> None:
    img = scene(*hw, seed=hw[0])
    out = pre(img)
    assert out.shape == (3, 256, 704)
    assert np.abs(out.numpy() - reference(img)).max() <= 1e-4
    g = pre.geometry_for(hw)
    assert g.src_hw == hw and g.resized_hw[1] == 704 and g.crop_top == g.resized_hw[0] - 256


def test_other_input_size() -> None:
    img = scene(900, 1600, seed=3)
    with ImagePreprocessor(ImageGeometry(input_hw=(192, 512)), workers=1) as p:
        out = p(img)
    assert out.shape == (3, 192, 512)
    assert np.abs(out.numpy() - reference(img, (192, 512))).max() <= 1e-4


def test_batch_blank_views_and_mixed_sizes(pre: ImagePreprocessor) -> None:
    imgs = [scene(900, 1600, 1), None, scene(1080, 1920, 2), scene(900, 1600, 4), None,
            scene(720, 1280, 5)]
    out = pre.batch(imgs)
    assert out.shape == (6, 3, 256, 704) and out.dtype == torch.float32
    for i, im in enumerate(imgs):
        if im is None:
            assert (out[i] == 0).all()                    # blank view = mean colour
        else:
            assert np.abs(out[i].numpy() - reference(im)).max() <= 1e-4
    with ImagePreprocessor(ImageGeometry(), workers=1) as serial:
        assert torch.equal(serial.batch(imgs), out)      # threads change nothing
    assert (pre.batch([None, None]) == 0).all()


@pytest.mark.parametrize('bad, match', [
    (np.zeros((900, 1600, 3), np.float32), 'uint8'),
    (np.zeros((900, 1600), np.uint8), r'\(H, W, 3\)'),
    (np.zeros((900, 1600, 4), np.uint8), 'RGBA'),
    ([[0, 0, 0]], 'numpy array'),
    (np.zeros((100, 1600, 3), np.uint8), 'cannot become'),   # too flat for a 256-row input
])
def test_errors(pre: ImagePreprocessor, bad, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        pre(bad)
    with pytest.raises(ImageError, match='view 1'):
        pre.batch([np.zeros((900, 1600, 3), np.uint8), bad])


def test_empty_batch_is_an_error(pre: ImagePreprocessor) -> None:
    with pytest.raises(ImageError, match='no images'):
        pre.batch([])


@pytest.mark.parametrize('hw, match', [
    ((4000, 8), 'too small'), ((8000, 4), 'too small'), ((40000, 2), 'too small'), ((2, 2), 'too small'),
    ((4000, 320), 'implausibly tall'), ((100, 1600), 'too wide'),
])
def test_implausible_image_sizes_are_refused_before_any_allocation(hw, match) -> None:
    """The hostile sizes of issue #16 (a thin tall image whose CameraInfo agrees, a 2×2 view):
    a named ImageError, decided from the two numbers alone."""
    from occ_ros.preprocess import check_plausible
    with pytest.raises(ImageError, match=match):
        check_plausible(hw, (256, 704), 'CAM_FRONT')
    check_plausible((900, 1600), (256, 704))
    check_plausible((450, 800), (112, 320))
