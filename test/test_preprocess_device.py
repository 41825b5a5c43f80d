"""Device-side preprocessing (CUDA backends) against the official transform.

Reference: Pillow itself — the official FlashOCC test pipeline resizes with PIL BICUBIC and crops
(Yzichen/FlashOCC projects/mmdet3d_plugin/datasets/pipelines/loading.py l.81-93, `img_transform_core`:
`img.resize(resize_dims)` then `img.crop(crop)`), which `ImagePreprocessor` calls unchanged. The torch
transform runs here on CPU tensors: the same code the pipeline runs on a CUDA device.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from occ_ros.model import model_config
from occ_ros.preprocess import (PLANE_STD, DeviceImagePreprocessor, ImagePreprocessor, JpegImage,
                                make_preprocessor)

MODELS = ('lite', 'pano-tiny')            # resize 0.2 (320 px wide) and 0.44 (704 px wide)


@pytest.fixture(scope='module')
def frames():
    from occ_ros.bag.synth import SyntheticSequence
    seq = SyntheticSequence(4242, seconds=1.5, rate=2.0, ground_truth=False)     # 3 frame sets, 900×1600
    return seq, [seq.frame(i) for i in range(len(seq))]


@pytest.mark.parametrize('model', MODELS)
def test_torch_resize_is_within_one_grey_level_of_pillow(frames, model):
    """Float32 passes (the CUDA path): ≤ 2 grey levels, more than 1 on ≤ 0.01 % of values (Pillow
    rounds to uint8 between its two passes); uint8 passes (torch's CPU kernel): ≤ 1 grey level,
    identical on ≥ 99 % of values. Normalised planes: ≤ 2 / std."""
    geom = model_config(model).image
    pil = ImagePreprocessor(geom, workers=1)
    dev = DeviceImagePreprocessor(geom, 'cpu', uint8_resize=False)
    dev8 = DeviceImagePreprocessor(geom, 'cpu', uint8_resize=True)
    worst, worst8, differ, differ8, n = 0, 0, 0, 0, 0
    for f in frames[1][:2]:
        for v in f.views:
            ref = pil.resize_crop(v.image).astype(np.int16)                      # (H_in, W_in, 3) RGB
            t = torch.from_numpy(v.image).permute(2, 0, 1)
            got = dev.resize_crop(t).permute(1, 2, 0).numpy().astype(np.int16)
            got8 = dev8.resize_crop(t).permute(1, 2, 0).numpy().astype(np.int16)
            worst = max(worst, int(np.abs(got - ref).max()))
            differ += int(np.count_nonzero(np.abs(got - ref) > 1))
            worst8 = max(worst8, int(np.abs(got8 - ref).max()))
            differ8 += int(np.count_nonzero(got8 != ref))
            n += ref.size
    print(f'{model}: float max |Δ| {worst}, {differ / n:.2e} of values > 1; uint8 max |Δ| {worst8}, '
          f'{differ8 / n:.2e} of values ≠')
    assert worst <= 2 and differ / n <= 1e-4, (worst, differ / n)
    assert worst8 <= 1 and differ8 / n <= 0.01, (worst8, differ8 / n)
    images = [v.image for v in frames[1][0].views]
    a, b = pil.batch(images), dev.batch(images)
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= 2.0 / min(PLANE_STD) + 1e-5


def test_lite_labels_agree_with_pillow_preprocessing(frames):
    """The shipped lite on rendered frames: device-side (float) preprocessing vs Pillow, ≥ 99.5 % of
    voxels get the same label."""
    from occ_ros.pipeline import OccupancyPipeline
    seq, fs = frames
    pipe = OccupancyPipeline.from_params('lite', rig=seq.rig, backend='torch', threads=2)
    try:
        assert isinstance(pipe.preprocessor, ImagePreprocessor)            # CPU backend: Pillow
        assert pipe.temporal is None                                        # lite: one frame, no history
        ref = [pipe.run(f.frame_set(seq.rig)).occupancy.semantics for f in fs]
        pipe.preprocessor = DeviceImagePreprocessor(pipe.model_cfg.image, 'cpu', uint8_resize=False)
        got = [pipe.run(f.frame_set(seq.rig)).occupancy.semantics for f in fs]
    finally:
        pipe.close()
    agree = np.mean([np.mean(a == b) for a, b in zip(ref, got)])
    print(f'lite label agreement, device-side vs Pillow preprocessing: {100 * agree:.3f} %')
    assert agree >= 0.995, agree


def test_jpeg_views_and_missing_cameras(frames):
    """A JpegImage view gives what its decoded RGB gives (CPU decode here), a missing view zeros."""
    import cv2
    geom = model_config('lite').image
    dev = DeviceImagePreprocessor(geom, 'cpu')
    rgb = frames[1][0].views[0].image
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    decoded = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = dev.batch([JpegImage(buf.reshape(-1), rgb.shape[:2]), None, decoded])
    assert torch.equal(out[0], out[2])
    assert not out[1].any()
    assert not dev.decodes_on_device                           # CPU: decoded by OpenCV, uploaded as uint8


def test_pipeline_picks_preprocessing_by_backend_device():
    geom = model_config('lite').image
    assert isinstance(make_preprocessor(geom, 'cpu'), ImagePreprocessor)
    # the meta device stands in for a GPU (no CUDA here): any non-CPU device gets the torch transform
    assert isinstance(make_preprocessor(geom, 'meta'), DeviceImagePreprocessor)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: the nvJPEG / CUDA half of '
                    'device-side preprocessing runs where a GPU is')
def test_cuda_decode_and_resize_match_the_cpu_transform(frames):       # pragma: no cover (GPU)
    import cv2
    geom = model_config('lite').image
    gpu = DeviceImagePreprocessor(geom, 'cuda')
    cpu = DeviceImagePreprocessor(geom, 'cpu', uint8_resize=False)
    views = []
    for v in frames[1][0].views:
        ok, buf = cv2.imencode('.jpg', cv2.cvtColor(v.image, cv2.COLOR_RGB2BGR))
        views.append(JpegImage(buf.reshape(-1), v.image.shape[:2]))
    a, b = gpu.batch(views).cpu(), cpu.batch(views)
    # nvJPEG's IDCT may differ from libjpeg-turbo's by a grey level: 2 levels after the resize
    assert float((a - b).abs().max()) <= 2.0 / min(PLANE_STD) + 1e-5


def test_a_prepared_view_is_uploaded_as_it_is(frames):
    """A `PreparedImage` (the node's early views, CPU-prepared planes) enters the device batch as its
    planes, bit for bit; one of another input size is refused by name. Runs the device path on CPU
    tensors (the same code moves them to CUDA on a GPU)."""
    from occ_ros.core.errors import ImageError
    from occ_ros.core.frames import PreparedImage
    geom = model_config('lite').image
    dev = DeviceImagePreprocessor(geom, 'cpu')
    rgb = frames[1][0].views[0].image
    prepared = ImagePreprocessor(geom, workers=1).prepare(rgb)
    out = dev.batch([prepared, rgb, None])
    assert torch.equal(out[0], torch.from_numpy(prepared.planes))
    assert (out[0] - out[1]).abs().max() <= 1.0 / 57.0       # the device resize: ≤ 1 grey level from Pillow's
    bad = PreparedImage(np.zeros((3, 4, 4), np.float32), rgb.shape[:2])
    with pytest.raises(ImageError, match='view 0: a prepared view must be'):
        dev.batch([bad])
