"""ROS messages ↔ the pipeline's plain types (`CameraFrame`, `EgoPose`, K matrices).

Images
    `sensor_msgs/Image` rgb8 → a zero-copy (H, W, 3) view of `msg.data` (row padding of `step`
    respected: the view is strided, no copy); bgr8 → one colour-swapping pass (cv2, ≈1 ms for
    900×1600); other encodings through cv_bridge when it is importable, otherwise `ImageError`
    naming the encoding. `sensor_msgs/CompressedImage` JPEG/PNG → OpenCV decode, at 1/2, 1/4 or
    1/8 resolution when the model's input is small enough (`reduced_decode_factor`), with K scaled
    to the decoded size.

Calibration and motion
    `CameraInfo` → `CameraModel` (K, D and its distortion model, R, P, size, binning, ROI:
    occ_ros.geometry.camera_model) → `Intrinsics`, the K of the image the network sees for the
    node's `rectification` mode; bad calibration raises `CalibrationError` or a named subclass.
    A distorted raw image is rectified in `frame_from_image` with cached OpenCV remap tables
    (occ_ros.geometry.rectify). `Odometry` / `TransformStamped` → 4×4 float64 matrices.

The message *builders* at the bottom (`rgb_to_image_msg`, `camera_info_msg`, …) are used by the
test publishers, the benchmark and the bag tools; they assign `bytes` to `uint8[]` fields
(assigning a numpy array is ~400× slower, ros_env.md §1).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from occ_ros.core.config import ImageGeometry
from occ_ros.core.errors import CalibrationError, ImageError
from occ_ros.core.frames import CameraFrame, EgoPose, JpegImage
from occ_ros.core.lru import BoundedLRU
from occ_ros.core.occupancy import stamp_to_ns  # noqa: F401  (re-exported: the ROS glue's name for it)
from occ_ros.geometry import matrix_to_quaternion_xyzw, quaternion_to_matrix
from occ_ros.geometry.camera_model import CameraModel
from occ_ros.geometry.rectify import RemapCache, default_remap_cache
from occ_ros.core.native_stderr import imdecode_refusing_damage

try:                                   # OpenCV is a hard dependency of the node, optional here
    import cv2
except ImportError:                    # pragma: no cover - exercised only without OpenCV
    cv2 = None  # type: ignore[assignment]

NATIVE_ENCODINGS: tuple[str, ...] = ('rgb8', 'bgr8')
COMPRESSED_FORMATS: tuple[str, ...] = ('jpeg', 'jpg', 'png')
REDUCED_FACTORS: tuple[int, ...] = (8, 4, 2)
# The largest image decoded (pixels, at the decode size): a 4K camera is 8.3 MP, a 12 MP industrial
# camera 12; 20 MP as RGB is 60 MB. A compressed image whose header promises more is refused before
# decoding (a 10 000 × 10 000 PNG of a few kB would otherwise allocate 300 MB).
MAX_IMAGE_PIXELS = 20_000_000

_cv_bridge: Any = None
_cv_bridge_checked = False


def _bridge() -> Any:
    """A cv_bridge.CvBridge when cv_bridge is importable, else None (checked once)."""
    global _cv_bridge, _cv_bridge_checked
    if not _cv_bridge_checked:
        _cv_bridge_checked = True
        try:
            from cv_bridge import CvBridge
            _cv_bridge = CvBridge()
        except Exception:              # ImportError, or a broken binary build of cv_bridge
            _cv_bridge = None
    return _cv_bridge


# --------------------------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------------------------

def ns_to_stamp(ns: int) -> Any:
    """Integer nanoseconds → builtin_interfaces/Time (negative stamps are clamped to 0)."""
    from builtin_interfaces.msg import Time
    ns = max(0, int(ns))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Intrinsics:
    """One CameraInfo, as REP-104 defines it, and what the network is given for its images.

    K: (3, 3) float64 of the image the network sees, at the full resolution of the view: the raw
        image's K (ROI offset out of the principal point), or P's when the image is rectified
        (here, `remap`, or upstream with rectification 'image_rect').
    image_hw: (height, width) of that view: the ROI size if set, else the CameraInfo size.
    binning: (binning_y, binning_x) ≥ 1: the published image is the view reduced by these.
    model: the whole calibration (`CameraModel`); remap: True when each raw image is rectified
        here before the network (a distorted camera with rectification 'raw').
    """

    K: np.ndarray
    image_hw: tuple[int, int]
    frame_id: str = ''
    binning: tuple[int, int] = (1, 1)
    model: Optional[CameraModel] = None
    remap: bool = False

    @property
    def published_hw(self) -> tuple[int, int]:
        """The size of the images this CameraInfo describes (the view after binning)."""
        return (self.image_hw[0] // self.binning[0], self.image_hw[1] // self.binning[1])

    @functools.cached_property
    def view_key(self) -> tuple:
        """Every value a camera's network view depends on (what `frame_from_image` reads of this
        calibration): equal keys give the same frame from the same image (`ros/early.py`)."""
        lens = self.model.key if (self.remap and self.model is not None) else None
        return (np.ascontiguousarray(self.K, dtype=np.float64).tobytes(), tuple(self.image_hw),
                tuple(self.binning), bool(self.remap), lens)

    @functools.cached_property
    def summary(self) -> str:
        """One log line: the lens and what is done with it (changes only with the calibration)."""
        lens = self.model.describe() if self.model is not None else 'pinhole'
        what = 'rectified here' if self.remap else 'used as received'
        return (f'{lens}; {self.published_hw[1]}×{self.published_hw[0]} images {what}, network '
                f'fx {self.K[0, 0]:.1f} fy {self.K[1, 1]:.1f} cx {self.K[0, 2]:.1f} cy {self.K[1, 2]:.1f}')


def camera_info_to_model(msg: Any, camera: str = '') -> CameraModel:
    """sensor_msgs/CameraInfo → `CameraModel` (K, D, distortion_model, R, P, size, binning, ROI),
    validated. Raises CalibrationError or one of its named subclasses (DistortionModelError,
    DistortionCoefficientsError, ProjectionMatrixError, RegionOfInterestError)."""
    who = camera or msg.header.frame_id or 'camera'
    roi = getattr(msg, 'roi', None)
    return CameraModel.create(
        K=np.asarray(msg.k, dtype=np.float64), D=np.asarray(msg.d, dtype=np.float64),
        distortion_model=str(msg.distortion_model), size_hw=(int(msg.height), int(msg.width)),
        R=np.asarray(msg.r, dtype=np.float64), P=np.asarray(msg.p, dtype=np.float64),
        binning=(int(getattr(msg, 'binning_y', 0)), int(getattr(msg, 'binning_x', 0))),
        roi=None if roi is None else (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
        who=who)


def camera_info_to_intrinsics(msg: Any, camera: str = '', rectification: str = 'raw') -> Intrinsics:
    """sensor_msgs/CameraInfo → `Intrinsics` for the node's `rectification` mode
    (occ_ros.core.config.RECTIFICATION_MODES; see `CameraModel.network_K`).

    Drivers repeat the same CameraInfo with every image: a message whose fields equal a recent
    one's gets that one's `Intrinsics` back (the same object) without a new validation, as
    image_geometry's `fromCameraInfo` skips unchanged parameters.
    Raises CalibrationError (or a named subclass) when K is all zeros (an uncalibrated driver),
    non-finite, has non-positive focal lengths or a last row other than [0, 0, 1], the size is
    zero, the distortion model or D is unusable, P or R is malformed, or the ROI does not lie
    inside the calibrated image.
    """
    roi = getattr(msg, 'roi', None)
    key = (camera, rectification, str(msg.header.frame_id), int(msg.height), int(msg.width),
           str(msg.distortion_model), int(getattr(msg, 'binning_x', 0)), int(getattr(msg, 'binning_y', 0)),
           None if roi is None else (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
           *(np.asarray(v, dtype=np.float64).tobytes() for v in (msg.k, msg.d, msg.r, msg.p)))
    found = _INTRINSICS.get(key)
    if found is not None:
        return found
    model = camera_info_to_model(msg, camera)
    try:
        K, remap = model.network_K(rectification)
    except CalibrationError as exc:
        raise type(exc)(f'{camera or msg.header.frame_id or "camera"}: {exc}') from None
    intr = Intrinsics(K=K, image_hw=model.view_hw, frame_id=str(msg.header.frame_id), binning=model.binning,
                      model=model, remap=remap)
    _INTRINSICS.put(key, intr)
    return intr


_INTRINSICS: BoundedLRU[Intrinsics] = BoundedLRU(64)   # recent distinct CameraInfos (a few per camera)


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------

def _rgb_view(msg: Any, channels: int) -> np.ndarray:
    """(H, W, channels) uint8 view of `msg.data` honouring `step` (no copy)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels
    if h <= 0 or w <= 0:
        raise ImageError(f'image has no pixels ({w}×{h})')
    if step < row:
        raise ImageError(f'{msg.encoding} image step {step} is smaller than width × {channels} = {row}')
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * (h - 1) + row:
        raise ImageError(f'{msg.encoding} {w}×{h} image (step {step}) needs at least '
                         f'{step * (h - 1) + row} bytes, got {buf.size}')
    if step == row:
        return buf[:h * row].reshape(h, w, channels)
    # Padded rows: a strided view over (h, step) cut to the visible bytes of each row.
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1), writeable=False)
    return rows.reshape(h, w, channels)          # splitting a unit-stride axis: still a view


def _swap_rb(view: np.ndarray) -> np.ndarray:
    """BGR ↔ RGB in one pass into a new contiguous array."""
    if cv2 is not None:
        return cv2.cvtColor(view, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(view[..., ::-1])


def image_to_rgb(msg: Any, expected_hw: Optional[tuple[int, int]] = None, camera: str = '') -> np.ndarray:
    """sensor_msgs/Image → (H, W, 3) uint8 RGB.

    rgb8: a zero-copy view that keeps `msg.data` alive. bgr8: a converted copy. Other encodings:
    cv_bridge (`imgmsg_to_cv2(msg, 'rgb8')`) when importable.
    Raises ImageError for an unsupported encoding, a size other than `expected_hw` (the
    CameraInfo size), or a buffer shorter than height × step.
    """
    who = f'{camera}: ' if camera else ''
    h, w = int(msg.height), int(msg.width)
    if expected_hw is not None and (h, w) != tuple(expected_hw):
        raise ImageError(f'{who}image is {w}×{h} but its CameraInfo says '
                         f'{expected_hw[1]}×{expected_hw[0]}; publish matching image and CameraInfo')
    enc = str(msg.encoding).lower()
    try:
        if enc == 'rgb8':
            return _rgb_view(msg, 3)
        if enc == 'bgr8':
            return _swap_rb(_rgb_view(msg, 3))
    except ImageError as exc:
        raise ImageError(f'{who}{exc}') from None
    bridge = _bridge()
    if bridge is not None:
        try:
            out = bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8')
        except Exception as exc:     # CvBridgeError and cv2 errors
            raise ImageError(f'{who}cv_bridge cannot convert encoding {msg.encoding!r} to rgb8: {exc}') from exc
        return np.asarray(out, dtype=np.uint8)
    raise ImageError(f'{who}unsupported image encoding {msg.encoding!r}: publish one of '
                     f'{list(NATIVE_ENCODINGS)} (or install cv_bridge for other encodings)')


def reduced_decode_factor(src_hw: tuple[int, int], geometry: Optional[ImageGeometry]) -> int:
    """Largest JPEG reduction (8, 4, 2 or 1) that still leaves at least the model's input width.

    The test-time transform scales the source by input_w / src_w and keeps the bottom rows, so a
    source reduced by f needs src_w / f >= input_w (then it is still only downsampled, and the
    crop is unchanged because the aspect ratio is).
    """
    if geometry is None:
        return 1
    need_w = geometry.input_hw[1]
    need_h = math.ceil(src_hw[0] * need_w / src_hw[1])
    for f in REDUCED_FACTORS:
        if src_hw[1] // f >= need_w and src_hw[0] // f >= need_h:
            return f
    return 1


_REDUCED_FLAGS = {2: 'IMREAD_REDUCED_COLOR_2', 4: 'IMREAD_REDUCED_COLOR_4', 8: 'IMREAD_REDUCED_COLOR_8'}


def compressed_size(data: bytes) -> Optional[tuple[int, int]]:
    """(height, width) from a JPEG / PNG header, without decoding (None when unreadable)."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)   # nothing is decoded here
            with Image.open(io.BytesIO(data)) as im:      # reads the header only
                w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return int(h), int(w)


def compressed_to_rgb(msg: Any, reduce: int = 1, camera: str = '',
                      expected_hw: Optional[tuple[int, int]] = None,
                      max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) → (H', W', 3) uint8 RGB.

    `reduce` in {1, 2, 4, 8}: decode at 1/reduce resolution (libjpeg DCT scaling for JPEG;
    OpenCV decodes then resamples PNG). H', W' are what OpenCV returns (ceil for JPEG).
    The `format` field may be 'jpeg', 'png' or image_transport's 'bgr8; jpeg compressed bgr8'.
    expected_hw: the full-resolution size the image must have (its CameraInfo): checked from the
    header before anything is decoded, so a decompression bomb costs a header read.
    max_pixels: the largest decode accepted (at the JPEG's reduced size; a PNG decodes in full),
    also checked from the header.
    Raises ImageError for another format, a size other than `expected_hw`, undecodable data, or
    data the decoder reports as damaged (libjpeg's `Corrupt JPEG data: …`, caught from descriptor 2
    by `native_stderr`: such an image decodes, partly garbage, and is refused with libjpeg's words).
    """
    who = f'{camera}: ' if camera else ''
    if cv2 is None:                    # pragma: no cover
        raise ImageError(f'{who}OpenCV is not installed: pip install opencv-python-headless')
    data, _ = _checked_compressed(msg, reduce, who, expected_hw, max_pixels)
    flag = cv2.IMREAD_COLOR if reduce <= 1 else getattr(cv2, _REDUCED_FLAGS[int(reduce)])
    fmt = msg.format or 'compressed'
    bgr = imdecode_refusing_damage(data, flag, cannot=f'{who}cannot decode the {fmt} image ({data.size} bytes)',
                                   damaged=f'{who}damaged {fmt} image')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _checked_compressed(msg: Any, reduce: int, who: str, expected_hw: Optional[tuple[int, int]],
                        max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(the compressed bytes as a uint8 array — a view of msg.data —, (height, width) from the
    header) once the format, the size against `expected_hw` and the pixels the decode at 1/`reduce`
    would make against `max_pixels` are checked, all from the header. Raises ImageError."""
    fmt = str(msg.format).lower()
    if fmt and not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ImageError(f'{who}unsupported CompressedImage format {msg.format!r}: publish JPEG or PNG')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f'{who}CompressedImage has no data')
    raw = msg.data if isinstance(msg.data, bytes) else data.tobytes()    # bytes: BytesIO shares it
    hw = compressed_size(raw)
    if hw is None:
        raise ImageError(f'{who}cannot read the {msg.format or "compressed"} image header '
                         f'({data.size} bytes): corrupt or not JPEG/PNG')
    if expected_hw is not None and hw != tuple(expected_hw):
        raise ImageError(f'{who}compressed image is {hw[1]}×{hw[0]} but its CameraInfo says '
                         f'{expected_hw[1]}×{expected_hw[0]}: not decoded')
    f = 1 if raw[:4] == b'\x89PNG' else max(1, int(reduce))          # OpenCV decodes a PNG in full
    decoded = math.ceil(hw[0] / f) * math.ceil(hw[1] / f)
    if decoded > max_pixels:
        raise ImageError(f'{who}compressed image of {hw[1]}×{hw[0]} would decode to {decoded / 1e6:.1f} MP '
                         f'> max_image_pixels ({max_pixels / 1e6:.1f} MP): not decoded')
    return data, hw


def jpeg_frame(camera: str, msg: Any, intrinsics: Intrinsics,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Optional[CameraFrame]:
    """A JPEG CompressedImage → `CameraFrame` whose image is the undecoded `JpegImage` (its bytes a
    view of `msg.data`: read in place from the CDR, no copy), for a pipeline that decodes on its
    device (`FramePipeline.jpeg_input`).

    The bounds of `compressed_to_rgb` hold, from the header and before anything is decoded: the
    format, the size against the CameraInfo, `max_pixels` at the full size (the device decodes in
    full, no DCT reduction); the pipeline's `check_frame` then checks the size is plausible, and
    the device preprocessor refuses data that does not decode (nvJPEG's error, or libjpeg's words
    caught from descriptor 2 where OpenCV decodes). None when the data is not a JPEG (a PNG) or the
    camera is rectified on the CPU (`intrinsics.remap`): those take `frame_from_image`.
    """
    if intrinsics.remap:
        return None
    if bytes(msg.data[:3]) != b'\xff\xd8\xff':                      # JPEG's SOI marker
        return None
    published = intrinsics.published_hw
    data, hw = _checked_compressed(msg, 1, f'{camera}: ', published, max_pixels)
    calib = None if hw == intrinsics.image_hw else intrinsics.image_hw
    return CameraFrame(name=camera, stamp_ns=stamp_to_ns(msg.header.stamp), image=JpegImage(data, hw),
                       K=np.array(intrinsics.K), calib_hw=calib)


@dataclass(frozen=True)
class RefusedImage:
    """Stands in for a camera message refused at ingest (too large): it holds the reason, not the
    data, and lets the synchroniser complete the set on the message's stamp without the camera."""
    reason: str


def frame_from_image(camera: str, msg: Any, intrinsics: Intrinsics,
                     geometry: Optional[ImageGeometry] = None, reduced_decode: bool = True,
                     max_pixels: int = MAX_IMAGE_PIXELS,
                     remap_cache: Optional[RemapCache] = None) -> CameraFrame:
    """An Image or CompressedImage + its camera's intrinsics → `CameraFrame`.

    The frame carries the calibrated K and size (`calib_hw`) whatever the image's own size: a JPEG
    decoded at 1/f (`reduced_decode`, f from the CameraInfo size and the model's `geometry`) or a
    binned image is a reduction of the calibrated view, and the pipeline folds the reduction into
    the resize, so the network gets the official camera vector and pool tables for the camera.
    A distorted raw image (`intrinsics.remap`) is rectified with the tables of `remap_cache`
    (default: the process-wide one), so its K is P's, at the resolution it was decoded at; a raw
    Image to be rectified is first reduced by the same factor a JPEG would be decoded at (f × f
    block means, `reduced_decode`), so the remap touches 1/f² of the pixels.
    Raises ImageError / CalibrationError.
    """
    stamp = stamp_to_ns(msg.header.stamp)
    published = intrinsics.published_hw
    if hasattr(msg, 'format'):        # CompressedImage
        f = reduced_decode_factor(published, geometry) if reduced_decode else 1
        rgb = compressed_to_rgb(msg, reduce=f, camera=camera, expected_hw=published, max_pixels=max_pixels)
        hw = (int(rgb.shape[0]), int(rgb.shape[1]))
        expect = (math.ceil(published[0] / f), math.ceil(published[1] / f))
        if hw != expect and hw != (published[0] // f, published[1] // f):
            raise ImageError(f'{camera}: decoded image is {hw[1]}×{hw[0]} but its CameraInfo says '
                             f'{published[1]}×{published[0]} (decode factor {f})')
    else:
        rgb = image_to_rgb(msg, expected_hw=published, camera=camera)
        hw = published
        f = reduced_decode_factor(published, geometry) if reduced_decode and intrinsics.remap else 1
        if f > 1:                      # block means of f × f pixels, like the reduced JPEG decode
            hw = (published[0] // f, published[1] // f)
            rgb = cv2.resize(rgb[:hw[0] * f, :hw[1] * f], (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    if intrinsics.remap and intrinsics.model is not None:
        by, bx = intrinsics.binning
        rgb = (remap_cache or default_remap_cache()).rectify(intrinsics.model, rgb, (by * f, bx * f))
    calib = None if hw == intrinsics.image_hw else intrinsics.image_hw
    return CameraFrame(name=camera, stamp_ns=stamp, image=rgb, K=np.array(intrinsics.K), calib_hw=calib)


# --------------------------------------------------------------------------------------------
# poses
# --------------------------------------------------------------------------------------------

def quaternion_xyzw_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (ROS order x, y, z, w) → (3, 3) rotation. Normalises; rejects zero/non-finite."""
    return quaternion_to_matrix((w, x, y, z))


def pose_to_matrix(position: Any, orientation: Any) -> np.ndarray:
    """geometry_msgs Point/Vector3 + Quaternion → (4, 4) float64 rigid transform."""
    T = np.eye(4)
    T[:3, :3] = quaternion_xyzw_to_matrix(orientation.x, orientation.y, orientation.z, orientation.w)
    T[:3, 3] = (position.x, position.y, position.z)
    if not np.all(np.isfinite(T)):
        raise CalibrationError(f'pose has non-finite translation {T[:3, 3].tolist()}')
    return T


def transform_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs/TransformStamped or Transform → (4, 4) T_parent_child (maps child → parent)."""
    tf = msg.transform if hasattr(msg, 'transform') else msg
    return pose_to_matrix(tf.translation, tf.rotation)


def odometry_to_pose(msg: Any) -> EgoPose:
    """nav_msgs/Odometry → `EgoPose` (T_odom_base at the message stamp)."""
    return EgoPose(stamp_ns=stamp_to_ns(msg.header.stamp),
                   matrix=pose_to_matrix(msg.pose.pose.position, msg.pose.pose.orientation))


# --------------------------------------------------------------------------------------------
# builders (publishers, tests, bags)
# --------------------------------------------------------------------------------------------

def header(stamp_ns: int, frame_id: str) -> Any:
    from std_msgs.msg import Header
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = 'rgb8') -> Any:
    """(H, W, 3) uint8 RGB → sensor_msgs/Image in `encoding` (rgb8 or bgr8), data assigned as bytes."""
    from sensor_msgs.msg import Image
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f'expected (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}')
    if encoding == 'bgr8':
        data = np.ascontiguousarray(rgb[..., ::-1]).tobytes()
    elif encoding == 'rgb8':
        data = np.ascontiguousarray(rgb).tobytes()
    else:
        raise ImageError(f'rgb_to_image_msg writes rgb8 or bgr8, not {encoding!r}')
    msg = Image(header=header(stamp_ns, frame_id), height=int(rgb.shape[0]), width=int(rgb.shape[1]),
                encoding=encoding, is_bigendian=0, step=int(rgb.shape[1]) * 3)
    msg.data = data
    return msg


def rgb_to_compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = 'jpeg',
                          quality: int = 90) -> Any:
    """(H, W, 3) uint8 RGB → sensor_msgs/CompressedImage (JPEG or PNG)."""
    from sensor_msgs.msg import CompressedImage
    if cv2 is None:                    # pragma: no cover
        raise ImageError('OpenCV is not installed: pip install opencv-python-headless')
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    if fmt == 'jpeg':
        ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == 'png':
        ok, buf = cv2.imencode('.png', bgr)
    else:
        raise ImageError(f'rgb_to_compressed_msg writes jpeg or png, not {fmt!r}')
    if not ok:
        raise ImageError(f'OpenCV could not encode a {rgb.shape} image as {fmt}')
    msg = CompressedImage(header=header(stamp_ns, frame_id), format=fmt)
    msg.data = buf.tobytes()
    return msg


def camera_info_msg(K: np.ndarray, image_hw: tuple[int, int], stamp_ns: int, frame_id: str,
                    D: Sequence[float] = (0.0,) * 5, distortion_model: str = 'plumb_bob',
                    P: Optional[np.ndarray] = None) -> Any:
    """sensor_msgs/CameraInfo: K, D in `distortion_model` (default plumb_bob, zero distortion),
    R = I and P = [P or K | 0]."""
    from sensor_msgs.msg import CameraInfo
    K = np.asarray(K, dtype=np.float64)
    Pm = np.zeros((3, 4))
    Pm[:, :3] = K if P is None else np.asarray(P, dtype=np.float64)[:3, :3]
    msg = CameraInfo(header=header(stamp_ns, frame_id), height=int(image_hw[0]), width=int(image_hw[1]),
                     distortion_model=distortion_model)
    msg.d = [float(v) for v in D]
    msg.k = K.ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    msg.p = Pm.ravel().tolist()
    return msg


def matrix_to_transform_msg(T: np.ndarray, stamp_ns: int, parent: str, child: str) -> Any:
    """(4, 4) T_parent_child → geometry_msgs/TransformStamped."""
    from geometry_msgs.msg import TransformStamped
    msg = TransformStamped(header=header(stamp_ns, parent), child_frame_id=child)
    x, y, z, w = matrix_to_quaternion_xyzw(np.asarray(T)[:3, :3])
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in np.asarray(T)[:3, 3])
    msg.transform.rotation.x, msg.transform.rotation.y = x, y
    msg.transform.rotation.z, msg.transform.rotation.w = z, w
    return msg


def odometry_msg(T: np.ndarray, stamp_ns: int, odom_frame: str = 'odom', child: str = 'base_link',
                 twist: Optional[Sequence[float]] = None) -> Any:
    """(4, 4) T_odom_base → nav_msgs/Odometry (twist = (vx, vy, vz, wx, wy, wz) if given)."""
    from nav_msgs.msg import Odometry
    msg = Odometry(header=header(stamp_ns, odom_frame), child_frame_id=child)
    T = np.asarray(T, dtype=np.float64)
    p = msg.pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in T[:3, 3])
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = matrix_to_quaternion_xyzw(T[:3, :3])
    if twist is not None:
        t = msg.twist.twist
        t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z = (float(v) for v in twist)
    return msg
