"""Camera image → network input, identical to the official FlashOcc test pipeline.

Per camera (flashocc.md §1.2): PIL resize to `ImageGeometry.resized_hw` with BICUBIC (Pillow's
convolution resampler, antialiased when downscaling), keep rows crop_top .. crop_top + H_in,
then normalise the planes in **B, G, R** order with mean (123.675, 116.28, 103.53) and std
(58.395, 57.12, 57.375) applied position-wise — plane 0 holds blue and is normalised with
123.675 / 58.395. This is the official quirk (mmcv `imnormalize(to_rgb=True)` swaps the PIL RGB
image to BGR); the official checkpoints were trained on it.

Resizing only the kept band (PIL's `box=`) is not used: it is ~35 % faster but not identical —
Pillow derives the kernel positions from the box in floating point, which moves a few dozen
pixels of a 900×1600 frame by one grey level and shifts upscaled images by whole pixels.

Cameras are processed in parallel threads (Pillow's resampler and numpy's ufuncs release the
GIL); see `test_preprocess.py` and the report for timings.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from occ_ros.core.config import ImageGeometry
from occ_ros.core.errors import ImageError
from occ_ros.core.frames import JpegImage, PreparedImage
from occ_ros.core.native_stderr import imdecode_refusing_damage

# Position-wise normalisation of the (B, G, R) planes — official values, official order.
PLANE_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
PLANE_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)
RESAMPLE = Image.Resampling.BICUBIC


def check_image(rgb: object, what: str = 'image') -> np.ndarray:
    """Validate an (H, W, 3) uint8 RGB array; raises ImageError saying what is wrong."""
    if not isinstance(rgb, np.ndarray):
        raise ImageError(f'{what}: expected an (H, W, 3) uint8 numpy array, '
                         f'got {type(rgb).__name__}')
    if rgb.dtype != np.uint8:
        raise ImageError(f'{what}: expected dtype uint8 (8-bit RGB), got {rgb.dtype}; convert '
                         f'16-bit or float images to 8-bit RGB first')
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f'{what}: expected shape (H, W, 3) RGB, got {rgb.shape}; convert mono, '
                         f'RGBA or planar images to interleaved RGB first')
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f'{what}: empty image {rgb.shape}')
    return rgb


# How far a camera image may be from the model's input before it is refused (named ImageError)
# rather than resized: the official transform scales the width to the input width and keeps the
# bottom rows, so a thin tall image would be scaled up to a huge band (4000×8 → 320 × 160 000) and a
# 2×2 image is no view at all.
MAX_UPSCALE = 4.0           # input width / image width
MAX_BAND = 4.0              # resized height / input height (the band the resize must produce)


def check_prepared(view: PreparedImage, input_hw: tuple[int, int], what: str = 'view') -> np.ndarray:
    """The planes of a `PreparedImage`, or ImageError unless they are (3, H_in, W_in) float32 — a
    view prepared for another model's input cannot enter this one's batch."""
    planes = view.planes
    want = (3, int(input_hw[0]), int(input_hw[1]))
    if not isinstance(planes, np.ndarray) or planes.dtype != np.float32 or tuple(planes.shape) != want:
        got = (getattr(planes, 'dtype', type(planes).__name__), tuple(getattr(planes, 'shape', ())))
        raise ImageError(f'{what}: a prepared view must be {want} float32 planes, got {got[1]} {got[0]}')
    return planes


def check_plausible(source_hw: tuple[int, int], input_hw: tuple[int, int], what: str = 'image') -> None:
    """ImageError unless an image of `source_hw` can become a network input of `input_hw` without
    an absurd allocation: width upscaled at most MAX_UPSCALE×, the resized band at most MAX_BAND×
    the input height, and tall enough to fill the input after the resize."""
    h, w = int(source_hw[0]), int(source_hw[1])
    h_in, w_in = int(input_hw[0]), int(input_hw[1])
    if h < 1 or w < 1:
        raise ImageError(f'{what}: empty image {w}×{h}')
    if w_in / w > MAX_UPSCALE:
        raise ImageError(f'{what}: {w}×{h} is too small for the model\'s {w_in}×{h_in} input (it would be '
                         f'upscaled {w_in / w:.1f}×, limit {MAX_UPSCALE:.0f}×)')
    band = h * w_in // w
    if band > MAX_BAND * h_in:
        raise ImageError(f'{what}: {w}×{h} is implausibly tall for the model\'s {w_in}×{h_in} input (the '
                         f'resize would make a {w_in}×{band} band, limit {MAX_BAND:.0f}× the input height)')
    if band < h_in:
        raise ImageError(f'{what}: {w}×{h} is too wide for the model\'s {w_in}×{h_in} input (its resized '
                         f'height {band} < {h_in})')


def check_reduction(image_hw: tuple[int, ...], source_hw: Optional[tuple[int, int]]) -> tuple[int, int]:
    """The calibrated size an image stands for: `source_hw` when the image is a uniform reduction of
    it (each side within one pixel of source / f for one factor f ≥ 1, as a reduced JPEG decode
    (ceil) or binning / an upstream resize (floor) give), else ImageError. None → the image's size.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if source_hw is None or (int(source_hw[0]), int(source_hw[1])) == (h, w):
        return h, w
    sh, sw = int(source_hw[0]), int(source_hw[1])
    if h > sh or w > sw:
        raise ImageError(f'image {w}×{h} is larger than its calibration {sw}×{sh}: publish the '
                         'CameraInfo of the resolution actually sent')
    f = sw / w                                             # the reduction along the width …
    if abs(sh / f - h) > 1.0:                              # … must also explain the height
        raise ImageError(f'image {w}×{h} is not a uniform reduction of its calibration {sw}×{sh} '
                         f'(width ÷ {f:.3f} but height ÷ {sh / h:.3f}): the aspect ratio differs')
    return sh, sw


def batch_sources(n: int, source_hws: Optional[Sequence[Optional[tuple[int, int]]]]
                  ) -> list[Optional[tuple[int, int]]]:
    """The per-view calibrated sizes of an n-view batch (None = each image's own); ImageError
    for an empty batch or a count that does not match."""
    if n == 0:
        raise ImageError('batch: no images given')
    sources: list[Optional[tuple[int, int]]] = list(source_hws) if source_hws is not None else [None] * n
    if len(sources) != n:
        raise ImageError(f'batch: {n} images but {len(sources)} source sizes')
    return sources


class ImagePreprocessor:
    """Turns RGB camera images into normalised network inputs.

    geom: the model's ImageGeometry (input size; `src_hw` is the default source size — images of
    any other size get resize/crop derived the same way via `ImageGeometry.with_source`, and
    their K must be for that size, see `occ_ros.geometry.image_aug_matrices`).
    device: where the returned tensors live.
    workers: threads used by `batch` across cameras (default: min(6, CPU count)); 1 = serial.
    """

    def __init__(self, geom: ImageGeometry, device: Union[str, torch.device] = 'cpu',
                 workers: Optional[int] = None) -> None:
        self.geom = geom
        self.device = torch.device(device)
        self.workers = max(1, int(workers if workers is not None else min(6, os.cpu_count() or 1)))
        self._geoms: dict[tuple[int, int], ImageGeometry] = {}
        self._pool: Optional[ThreadPoolExecutor] = None
        self._mean = np.asarray(PLANE_MEAN, dtype=np.float32)
        self._inv_std = (1.0 / np.asarray(PLANE_STD, dtype=np.float64)).astype(np.float32)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.geom.input_hw

    def geometry_for(self, src_hw: tuple[int, int]) -> ImageGeometry:
        """The ImageGeometry for a source of `src_hw` (cached)."""
        key = (int(src_hw[0]), int(src_hw[1]))
        g = self._geoms.get(key)
        if g is None:
            try:
                g = self.geom.with_source(key)
            except Exception as exc:            # ConfigError: source too small for the input
                h_in, w_in = self.geom.input_hw
                raise ImageError(f'image of {key[0]}×{key[1]} cannot become a {h_in}×{w_in} '
                                 f'input: {exc}') from exc
            self._geoms[key] = g
        return g

    def resize_crop(self, rgb: np.ndarray, source_hw: Optional[tuple[int, int]] = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB → (H_in, W_in, 3) uint8 RGB: PIL bicubic resize, bottom rows.

        source_hw: the calibrated size of the view when `rgb` is a uniform reduction of it
        (`check_reduction`); the image is then resized straight to the size the official
        transform gives the calibrated view, so the crop and the geometry stay the official ones.
        """
        rgb = check_image(rgb)
        src = check_reduction(rgb.shape[:2], source_hw)
        g = self.geometry_for(src)
        rh, rw = g.resized_hw
        img = Image.fromarray(np.ascontiguousarray(rgb))
        out = np.asarray(img.resize((rw, rh), RESAMPLE))                  # (rh, rw, 3)
        top = g.crop_top
        h_in, w_in = g.input_hw
        return out[top:top + h_in, :w_in]                                  # (H_in, W_in, 3)

    def _fill(self, item: tuple[Optional[Union[np.ndarray, PreparedImage]], Optional[tuple[int, int]]],
              out: np.ndarray) -> None:
        """Write the normalised B, G, R planes of image `item[0]` (calibrated size `item[1]`) into
        out (3, H_in, W_in) float32 (a `PreparedImage`'s planes are copied as they are)."""
        rgb, source_hw = item
        if rgb is None:
            out.fill(0.0)                         # blank view: mean colour → 0 after normalising
            return
        if isinstance(rgb, PreparedImage):
            out[...] = check_prepared(rgb, self.geom.input_hw)
            return
        band = self.resize_crop(rgb, source_hw)
        for c in range(3):                        # plane c ← RGB channel 2 − c (B, G, R)
            np.subtract(band[..., 2 - c], self._mean[c], out=out[c], dtype=np.float32)
            out[c] *= self._inv_std[c]

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB → (3, H_in, W_in) float32 on `device`, planes B, G, R."""
        out = np.empty((3,) + tuple(self.geom.input_hw), dtype=np.float32)
        self._fill((check_image(rgb), None), out)
        return self._to_device(torch.from_numpy(out))

    def prepare(self, rgb: np.ndarray, source_hw: Optional[tuple[int, int]] = None) -> PreparedImage:
        """One camera's network view ahead of its batch: the planes `batch` would make of `rgb`
        (calibrated size `source_hw`), bit for bit, on the CPU (in the calling thread). ImageError
        as `batch` raises it."""
        self._check_view(rgb, source_hw, 'image')
        out = np.empty((3,) + tuple(self.geom.input_hw), dtype=np.float32)
        self._fill((rgb, source_hw), out)
        return PreparedImage(planes=out, hw=(int(rgb.shape[0]), int(rgb.shape[1])))

    def _check_view(self, view: Union[np.ndarray, PreparedImage], source_hw: Optional[tuple[int, int]],
                    what: str) -> None:
        """ImageError unless `view` can enter the batch: a prepared view of this input size, or an
        RGB image whose size has a geometry (a uniform reduction of `source_hw`)."""
        if isinstance(view, PreparedImage):
            check_prepared(view, self.geom.input_hw, what)
            return
        check_image(view, what)
        try:
            self.geometry_for(check_reduction(view.shape[:2], source_hw))
        except ImageError as exc:
            raise ImageError(f'{what}: {exc}') from exc

    def batch(self, images: Sequence[Optional[Union[np.ndarray, PreparedImage]]],
              source_hws: Optional[Sequence[Optional[tuple[int, int]]]] = None) -> torch.Tensor:
        """N images (None = camera missing) → (N, 3, H_in, W_in) float32 on `device`.

        source_hws: per image the calibrated size it is a uniform reduction of (None = its own).
        A view may be a `PreparedImage` (`prepare`): its planes are copied into the batch.

        A missing camera becomes a blank view: all zeros after normalisation (each plane at its
        mean colour), the closest thing to "no information" the network was trained on. Images may
        differ in source size; each gets its own resize/crop. Raises ImageError naming the view.
        """
        n = len(images)
        sources = batch_sources(n, source_hws)
        for i, im in enumerate(images):
            if im is not None:
                self._check_view(im, sources[i], f'view {i}')
        out = np.empty((n, 3) + tuple(self.geom.input_hw), dtype=np.float32)
        busy = sum(isinstance(im, np.ndarray) for im in images)
        if self.workers > 1 and busy > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix='occ_preprocess')
            list(self._pool.map(self._fill, zip(images, sources), out))
        else:
            for item, o in zip(zip(images, sources), out):
                self._fill(item, o)
        return self._to_device(torch.from_numpy(out))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == 'cpu':
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the worker threads (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> 'ImagePreprocessor':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, '_pool', None)
        if pool is not None:
            pool.shutdown(wait=False)


# ------------------------------------------------------------------------------------------------
# Device-side preprocessing (CUDA backends): the same transform as torch ops on the backend's device
# ------------------------------------------------------------------------------------------------

def torchvision_jpeg_decoder(device: torch.device) -> Optional[Callable[[list[torch.Tensor]], list[torch.Tensor]]]:
    """`torchvision.io.decode_jpeg` bound to `device` (nvJPEG on CUDA) when torchvision's image
    extension loads and supports that device, else None (torchvision missing, or a build that
    does not match this torch — e.g. PyPI's CUDA torchvision beside torch+cpu)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:                               # ImportError, or its C++ ops fail to register
        return None

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    return decode


class DeviceImagePreprocessor:
    """The official transform (`ImagePreprocessor`) as torch ops on `device`: bicubic resize
    with Pillow's kernel (a = −0.5, antialiased when downscaling: `F.interpolate(mode='bicubic',
    antialias=True)`, whose CPU/CUDA kernels follow Pillow's), crop to the bottom rows, B, G, R
    planes normalised position-wise. Only uint8 data crosses to the device: RGB images (1/4 of the
    float32 input's bytes) or, with `JpegImage` views and a device JPEG decoder (torchvision's
    nvJPEG), the compressed bytes alone.

    Not bit-identical to Pillow: Pillow rounds to uint8 between its horizontal and vertical passes
    and uses fixed-point weights; here both passes run in float32 and the result is rounded once.
    Measured on rendered frames: at most 1 grey level apart (test_preprocess_device.py).

    uint8_resize: resize the uint8 tensor directly (torch's CPU kernel for uint8 antialiased
    bicubic mimics Pillow's integer passes: identical on > 99 % of pixels); only CPU supports it.
    take_jpeg: whether it asks for `JpegImage` views (`takes_jpeg`). Default: only where it decodes
    them on the device (nvJPEG) — without a device decoder the node's CPU decode at 1/2–1/8
    (`reduced_decode`) is cheaper than a full-size OpenCV decode here, and it blanks one bad camera
    instead of refusing the set. True: always (OpenCV decode + upload where nvJPEG is missing; the
    tests use it to run the JPEG path on CPU tensors).
    """

    def __init__(self, geom: ImageGeometry, device: Union[str, torch.device] = 'cuda',
                 uint8_resize: Optional[bool] = None, take_jpeg: Optional[bool] = None) -> None:
        self.geom = geom
        self.device = torch.device(device)
        self.uint8_resize = self.device.type == 'cpu' if uint8_resize is None else bool(uint8_resize)
        self._cpu = ImagePreprocessor(geom, 'cpu', workers=1)       # geometry and checks, one definition
        mean = torch.tensor(PLANE_MEAN, dtype=torch.float32).view(3, 1, 1)
        inv_std = torch.from_numpy((1.0 / np.asarray(PLANE_STD, dtype=np.float64)).astype(np.float32)).view(3, 1, 1)
        self._mean, self._inv_std = mean.to(self.device), inv_std.to(self.device)
        self._decode = torchvision_jpeg_decoder(self.device) if self.device.type == 'cuda' else None
        self._take_jpeg = self._decode is not None if take_jpeg is None else bool(take_jpeg)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.geom.input_hw

    @property
    def decodes_on_device(self) -> bool:
        """True when `JpegImage` views are decoded on the device (nvJPEG through torchvision)."""
        return self._decode is not None

    @property
    def takes_jpeg(self) -> bool:
        """True when the pipeline should be handed `JpegImage` views undecoded (see `take_jpeg`)."""
        return self._take_jpeg

    def geometry_for(self, src_hw: tuple[int, int]) -> ImageGeometry:
        return self._cpu.geometry_for(src_hw)

    def _upload(self, view: Union[np.ndarray, JpegImage]) -> torch.Tensor:
        """(3, H, W) uint8 RGB on the device. A `JpegImage` is decoded by nvJPEG on the device when
        torchvision's decoder loads, else by OpenCV on the CPU (libjpeg's complaints about damaged
        data caught from descriptor 2, as the CPU path does) and uploaded as uint8. ImageError when
        it does not decode, is damaged, or is not the size its header (`hw`) said."""
        if isinstance(view, JpegImage):
            rgb_dev = self._decode_jpeg(view)
            got = (int(rgb_dev.shape[-2]), int(rgb_dev.shape[-1]))
            if rgb_dev.ndim != 3 or rgb_dev.shape[0] != 3 or got != tuple(view.hw):
                raise ImageError(f'JPEG decoded to {tuple(rgb_dev.shape)}, its header said {view.hw[1]}×{view.hw[0]}')
            return rgb_dev
        rgb = torch.from_numpy(np.ascontiguousarray(check_image(view))).permute(2, 0, 1)
        if self.device.type == 'cpu':
            return rgb
        return rgb.pin_memory().to(self.device, non_blocking=True)

    def _decode_jpeg(self, view: JpegImage) -> torch.Tensor:
        data = np.asarray(view.data, dtype=np.uint8).reshape(-1)
        if self._decode is not None:
            # one copy of the compressed bytes (the message's buffer is read-only) on their way to the GPU
            try:
                return self._decode([torch.from_numpy(data.copy())])[0]
            except RuntimeError as exc:                 # nvJPEG: unsupported or corrupt data
                raise ImageError(f'cannot decode a {data.size}-byte JPEG on {self.device}: {exc}') from exc
        import cv2
        bgr = imdecode_refusing_damage(data, cv2.IMREAD_COLOR, cannot=f'cannot decode a {data.size}-byte JPEG',
                                       damaged='damaged jpeg image')
        rgb = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
        return rgb if self.device.type == 'cpu' else rgb.pin_memory().to(self.device, non_blocking=True)

    def resize_crop(self, img: torch.Tensor, source_hw: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """(3, H, W) uint8 RGB tensor → (3, H_in, W_in) float32 RGB in 0..255 (rounded, as the
        official uint8 image), on the tensor's device."""
        src = check_reduction((int(img.shape[1]), int(img.shape[2])), source_hw)
        g = self.geometry_for(src)
        rh, rw = g.resized_hw
        x = img[None] if self.uint8_resize else img[None].float()
        out = torch.nn.functional.interpolate(x, size=(rh, rw), mode='bicubic', antialias=True, align_corners=False)
        top = g.crop_top
        h_in, w_in = g.input_hw
        out = out[0, :, top:top + h_in, :w_in]
        return out.float() if self.uint8_resize else out.round_().clamp_(0.0, 255.0)

    def batch(self, images: Sequence[Optional[Union[np.ndarray, JpegImage, PreparedImage]]],
              source_hws: Optional[Sequence[Optional[tuple[int, int]]]] = None) -> torch.Tensor:
        """As `ImagePreprocessor.batch` (None = missing camera → zeros), views may be `JpegImage`
        or `PreparedImage` (its planes are uploaded as they are)."""
        n = len(images)
        sources = batch_sources(n, source_hws)
        out = torch.zeros((n, 3) + tuple(self.geom.input_hw), dtype=torch.float32, device=self.device)
        for i, (view, src) in enumerate(zip(images, sources)):
            if view is None:
                continue
            if isinstance(view, PreparedImage):
                out[i].copy_(torch.from_numpy(check_prepared(view, self.geom.input_hw, f'view {i}')))
                continue
            hw = view.hw if isinstance(view, JpegImage) else check_image(view, f'view {i}').shape[:2]
            try:
                self.geometry_for(check_reduction(hw, src))
            except ImageError as exc:
                raise ImageError(f'view {i}: {exc}') from exc
            try:
                img = self._upload(view)
            except ImageError as exc:
                raise ImageError(f'view {i}: {exc}') from exc
            band = self.resize_crop(img, src)
            torch.sub(band.flip(0), self._mean, out=out[i])                 # planes B, G, R
            out[i].mul_(self._inv_std)
        return out

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        return self.batch([rgb])[0]

    def close(self) -> None:
        self._cpu.close()


def make_preprocessor(geom: ImageGeometry, device: Union[str, torch.device]) -> Union[ImagePreprocessor,
                                                                                    DeviceImagePreprocessor]:
    """The preprocessing for a backend on `device`: on a GPU (CUDA) the device-side torch transform
    (only uint8 / JPEG bytes cross to it); on the CPU Pillow, the official resampler itself."""
    dev = torch.device(device)
    if dev.type != 'cpu':
        return DeviceImagePreprocessor(geom, dev)
    return ImagePreprocessor(geom, dev)
