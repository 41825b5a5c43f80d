"""Message conversion without a ROS graph: every encoding path, padding, errors, K, poses."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 message wheels')

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from occ_ros.core.config import ImageGeometry  # noqa: E402
from occ_ros.core.errors import CalibrationError, ImageError  # noqa: E402
from occ_ros.core import cdr  # noqa: E402
from occ_ros.ros import convert as cv  # noqa: E402

K_FULL = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])


def _rgb(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _image(rgb: np.ndarray, encoding: str = 'rgb8', pad: int = 0) -> Image:
    h, w, _ = rgb.shape
    data = rgb if encoding == 'rgb8' else rgb[..., ::-1]
    rows = np.zeros((h, w * 3 + pad), np.uint8)
    rows[:, :w * 3] = np.ascontiguousarray(data).reshape(h, w * 3)
    rows[:, w * 3:] = 77                                      # padding must never leak into pixels
    msg = Image(height=h, width=w, encoding=encoding, step=w * 3 + pad)
    msg.header.stamp = Time(sec=12, nanosec=345)
    msg.data = rows.tobytes()
    return msg


def _info(K: np.ndarray, hw: tuple[int, int]) -> CameraInfo:
    return cv.camera_info_msg(K, hw, 0, 'cam_optical')


# ------------------------------------------------------------------ time
def test_stamp_round_trip() -> None:
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_123_456_789):
        assert cv.stamp_to_ns(cv.ns_to_stamp(ns)) == ns


# ------------------------------------------------------------------ raw images
def test_rgb8_is_a_zero_copy_view() -> None:
    rgb = _rgb()
    msg = _image(rgb)
    out = cv.image_to_rgb(msg, expected_hw=(6, 5))
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('pad', [1, 3, 16])
def test_rgb8_with_row_padding_respects_step(pad: int) -> None:
    rgb = _rgb(7, 9, seed=pad)
    msg = _image(rgb, pad=pad)
    out = cv.image_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))   # still no copy
    assert out.strides[0] == 9 * 3 + pad


@pytest.mark.parametrize('pad', [0, 4])
def test_bgr8_is_converted_to_rgb(pad: int) -> None:
    rgb = _rgb(8, 6, seed=3)
    out = cv.image_to_rgb(_image(rgb, 'bgr8', pad=pad))
    np.testing.assert_array_equal(out, rgb)
    assert out.flags['C_CONTIGUOUS']


def test_unsupported_encoding_names_it() -> None:
    msg = _image(_rgb())
    msg.encoding = 'yuv422'
    if cv._bridge() is None:
        with pytest.raises(ImageError, match="'yuv422'"):
            cv.image_to_rgb(msg, camera='CAM_FRONT')


def test_size_mismatch_with_camera_info() -> None:
    with pytest.raises(ImageError, match='5×6 but its CameraInfo says 10×6'):
        cv.image_to_rgb(_image(_rgb()), expected_hw=(6, 10))


def test_truncated_buffer_and_bad_step() -> None:
    msg = _image(_rgb())
    msg.data = msg.data[:-1]
    with pytest.raises(ImageError, match='needs at least'):
        cv.image_to_rgb(msg)
    msg = _image(_rgb())
    msg.step = 10
    with pytest.raises(ImageError, match='step 10 is smaller'):
        cv.image_to_rgb(msg)


# ------------------------------------------------------------------ compressed
def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)


def test_png_is_lossless_and_rgb() -> None:
    rgb = _rgb(20, 30, seed=5)
    msg = cv.rgb_to_compressed_msg(rgb, 1, 'f', 'png')
    np.testing.assert_array_equal(cv.compressed_to_rgb(msg), rgb)


def test_jpeg_decodes_close_to_the_source() -> None:
    rgb = _smooth(64, 96)
    msg = cv.rgb_to_compressed_msg(rgb, 1, 'f', 'jpeg', quality=95)
    out = cv.compressed_to_rgb(msg)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3.0          # colour order is right (RGB)


@pytest.mark.parametrize('factor', [2, 4, 8])
def test_jpeg_reduced_decode_matches_downsampled_source(factor: int) -> None:
    rgb = _smooth(96, 160)
    out = cv.compressed_to_rgb(cv.rgb_to_compressed_msg(rgb, 1, 'f', 'jpeg', 95), reduce=factor)
    assert out.shape == (96 // factor, 160 // factor, 3)
    ref = rgb.reshape(96 // factor, factor, 160 // factor, factor, 3).mean((1, 3))
    assert np.abs(out - ref).mean() < 4.0


def test_image_transport_format_string_and_bad_data() -> None:
    msg = cv.rgb_to_compressed_msg(_rgb(8, 8), 1, 'f', 'jpeg')
    msg.format = 'bgr8; jpeg compressed bgr8'
    assert cv.compressed_to_rgb(msg).shape == (8, 8, 3)
    msg.format = 'theora'
    with pytest.raises(ImageError, match="'theora'"):
        cv.compressed_to_rgb(msg)
    bad = CompressedImage(format='jpeg')
    bad.data = b'\xff\xd8not a jpeg at all'
    with pytest.raises(ImageError, match='cannot read the jpeg image header'):
        cv.compressed_to_rgb(bad)
    with pytest.raises(ImageError, match='no data'):
        cv.compressed_to_rgb(CompressedImage(format='jpeg'))


def _damaged_jpeg() -> bytes:
    """A JPEG whose entropy-coded data is overwritten mid-stream (a bad link): decodable, partly garbage."""
    data = bytearray(cv.rgb_to_compressed_msg(_rgb(64, 96, seed=3), 1, 'f', 'jpeg', 90).data)
    mid = len(data) // 2
    data[mid:mid + 40] = b'\xff\x00' * 20
    data[mid + 48:mid + 50] = b'\xff\xd0'                   # a restart marker where none belongs
    return bytes(data)


def test_libjpeg_complaints_refuse_the_image_and_never_reach_the_terminal(capfd: pytest.CaptureFixture) -> None:
    """Outside reference: libjpeg itself. Decoded directly by OpenCV in a child process, the damaged
    JPEG *is* returned as an image while libjpeg writes `Corrupt JPEG data…` to descriptor 2; through
    `compressed_to_rgb` it is refused with libjpeg's words and nothing is written to the terminal."""
    import subprocess
    import sys
    damaged = _damaged_jpeg()
    child = subprocess.run([sys.executable, '-c', 'import sys, cv2, numpy as np; '
                            'im = cv2.imdecode(np.frombuffer(sys.stdin.buffer.read(), np.uint8), 1); '
                            'print(im is not None)'], input=damaged, capture_output=True, timeout=60)
    assert child.stdout.strip() == b'True' and b'Corrupt JPEG data' in child.stderr
    msg = CompressedImage(format='jpeg')
    msg.data = damaged
    capfd.readouterr()
    with pytest.raises(ImageError, match='damaged jpeg image, not used: Corrupt JPEG data'):
        cv.compressed_to_rgb(msg, camera='CAM_FRONT')
    assert capfd.readouterr().err == ''


def test_decoder_capture_gives_back_what_others_write_meanwhile(capfd: pytest.CaptureFixture) -> None:
    """A line another thread writes to descriptor 2 during a capture is not swallowed: it is written
    to the real stderr when the capture ends; decoder lines are returned instead."""
    import os

    from occ_ros.core.native_stderr import capture_decoder_messages
    capfd.readouterr()
    with capture_decoder_messages() as got:
        os.write(2, b'[INFO] [1.0] [node]: a log line\nCorrupt JPEG data: 3 extraneous bytes before marker 0xd9\n')
    assert got == ['Corrupt JPEG data: 3 extraneous bytes before marker 0xd9']
    assert capfd.readouterr().err == '[INFO] [1.0] [node]: a log line\n'


def test_reduced_decode_factor_follows_the_model_input() -> None:
    nus = ImageGeometry(src_hw=(900, 1600), input_hw=(256, 704))
    assert cv.reduced_decode_factor((900, 1600), nus) == 2          # 800 >= 704, 400 < 704
    lite = ImageGeometry(src_hw=(900, 1600), input_hw=(112, 320))
    assert cv.reduced_decode_factor((900, 1600), lite) == 4         # 400 >= 320, 200 < 320
    assert cv.reduced_decode_factor((450, 800), nus) == 1
    assert cv.reduced_decode_factor((900, 1600), None) == 1
    tiny = ImageGeometry(src_hw=(900, 1600), input_hw=(96, 192))
    assert cv.reduced_decode_factor((900, 1600), tiny) == 8


def test_frame_from_compressed_keeps_the_calibrated_K_at_any_decode_size() -> None:
    """A reduced decode is part of the resize: the frame keeps the CameraInfo's K and size, so the
    network gets the official camera vector (test_camera_inputs.py pins that end to end)."""
    rgb = _smooth(900, 1600)
    msg = cv.rgb_to_compressed_msg(rgb, 5_000, 'f', 'jpeg')
    intr = cv.camera_info_to_intrinsics(_info(K_FULL, (900, 1600)))
    geom = ImageGeometry(src_hw=(900, 1600), input_hw=(256, 704))
    frame = cv.frame_from_image('CAM_FRONT', msg, intr, geom, reduced_decode=True)
    assert frame.image.shape == (450, 800, 3) and frame.stamp_ns == 5_000
    np.testing.assert_array_equal(frame.K, K_FULL)
    assert frame.calib_hw == (900, 1600) and frame.source_hw == (900, 1600)
    full = cv.frame_from_image('CAM_FRONT', msg, intr, geom, reduced_decode=False)
    assert full.image.shape == (900, 1600, 3) and full.calib_hw is None and full.source_hw == (900, 1600)
    np.testing.assert_array_equal(full.K, K_FULL)


def test_frame_from_raw_image_checks_size_and_keeps_K() -> None:
    intr = cv.camera_info_to_intrinsics(_info(K_FULL, (6, 5)))
    frame = cv.frame_from_image('CAM_BACK', _image(_rgb()), intr)
    assert frame.name == 'CAM_BACK' and frame.stamp_ns == 12_000_000_345
    np.testing.assert_allclose(frame.K, K_FULL)
    with pytest.raises(ImageError, match='CameraInfo says'):
        cv.frame_from_image('CAM_BACK', _image(_rgb(7, 5)), intr)


# ------------------------------------------------------------------ CameraInfo
def test_camera_info_to_intrinsics() -> None:
    intr = cv.camera_info_to_intrinsics(_info(K_FULL, (900, 1600)))
    np.testing.assert_array_equal(intr.K, K_FULL)
    assert intr.image_hw == (900, 1600) and intr.frame_id == 'cam_optical'
    assert intr.binning == (1, 1) and intr.published_hw == (900, 1600)


def test_camera_info_binning_and_roi_follow_rep_104() -> None:
    """REP-104: K, width and height are the full-resolution calibration; the published image is
    the ROI (full-resolution pixels) binned by binning_x/y. Golden values by hand from K_FULL."""
    msg = _info(K_FULL, (900, 1600))
    msg.binning_x = msg.binning_y = 2
    intr = cv.camera_info_to_intrinsics(msg)
    np.testing.assert_array_equal(intr.K, K_FULL)
    assert intr.image_hw == (900, 1600) and intr.published_hw == (450, 800)
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 50, 1200, 600
    intr = cv.camera_info_to_intrinsics(msg)
    assert intr.K[0, 2] == pytest.approx(K_FULL[0, 2] - 100) and intr.K[1, 2] == pytest.approx(K_FULL[1, 2] - 50)
    assert intr.K[0, 0] == K_FULL[0, 0] and intr.image_hw == (600, 1200) and intr.published_hw == (300, 600)
    frame = cv.frame_from_image('CAM_FRONT', _image(np.zeros((300, 600, 3), np.uint8)), intr)
    assert frame.calib_hw == (600, 1200)
    msg.roi.width = 1600                                   # 100 + 1600 > 1600
    with pytest.raises(CalibrationError, match='ROI'):
        cv.camera_info_to_intrinsics(msg)


@pytest.mark.parametrize('K, match', [
    (np.zeros((3, 3)), 'all zeros'),
    (np.array([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]), 'NaN'),
    (np.array([[-5.0, 0, 1], [0, 5, 1], [0, 0, 1]]), 'positive'),
    (np.array([[5.0, 0, 1], [0, 5, 1], [0, 0, 2]]), r'\[0, 0, 1\]'),
])
def test_bad_K_is_a_calibration_error(K: np.ndarray, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        cv.camera_info_to_intrinsics(_info(K, (900, 1600)), 'CAM_FRONT')


def test_camera_info_without_size() -> None:
    with pytest.raises(CalibrationError, match='size'):
        cv.camera_info_to_intrinsics(_info(K_FULL, (0, 0)))


# ------------------------------------------------------------------ poses
def _rot_z(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def test_quaternion_round_trip_and_known_values() -> None:
    R = cv.quaternion_xyzw_to_matrix(0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4))
    np.testing.assert_allclose(R, _rot_z(math.pi / 2), atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = cv.quaternion_xyzw_to_matrix(*q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(cv.quaternion_xyzw_to_matrix(*cv.matrix_to_quaternion_xyzw(R)), R, atol=1e-12)
    with pytest.raises(CalibrationError):
        cv.quaternion_xyzw_to_matrix(0, 0, 0, 0)


def test_odometry_and_transform_to_matrix() -> None:
    T = np.eye(4)
    T[:3, :3] = _rot_z(0.3)
    T[:3, 3] = (1.5, -2.0, 0.25)
    pose = cv.odometry_to_pose(cv.odometry_msg(T, 42, 'odom', 'base_link'))
    assert pose.stamp_ns == 42
    np.testing.assert_allclose(pose.matrix, T, atol=1e-12)
    tf = cv.matrix_to_transform_msg(T, 7, 'base_link', 'cam')
    assert tf.header.frame_id == 'base_link' and tf.child_frame_id == 'cam'
    np.testing.assert_allclose(cv.transform_to_matrix(tf), T, atol=1e-12)
    np.testing.assert_allclose(cv.transform_to_matrix(tf.transform), T, atol=1e-12)


def _png_header(width: int, height: int) -> bytes:
    """A PNG of `width`×`height` whose data stream is a few bytes (a decompression bomb's header
    and the start of its IDAT)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\x00' * 64))
            + chunk(b'IEND', b''))


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    """A 10000×10000 PNG (≈ 300 MB decoded) on a camera whose CameraInfo says 1600×900 is refused
    after reading its header: nothing is decoded (the message holds no pixel data at all)."""
    from sensor_msgs.msg import CompressedImage
    msg = CompressedImage(format='png')
    msg.data = _png_header(10000, 10000)
    assert cv.compressed_size(bytes(msg.data)) == (10000, 10000)
    intr = cv.camera_info_to_intrinsics(_info(K_FULL, (900, 1600)))
    with pytest.raises(ImageError, match='10000×10000 but its CameraInfo says 1600×900: not decoded'):
        cv.frame_from_image('CAM_FRONT', msg, intr, ImageGeometry())
    msg.data = b'\xff\xd8 not a jpeg at all'
    with pytest.raises(ImageError, match='header'):
        cv.frame_from_image('CAM_FRONT', msg, intr, ImageGeometry())


def test_a_bomb_whose_camera_info_agrees_is_refused_by_the_pixel_bound() -> None:
    """The same bomb with a CameraInfo that agrees (10000×10000): the size check passes, the
    resize would be plausible (a downscale), and only `max_image_pixels` stops a 300 MB decode;
    a JPEG of that size is decoded at 1/8 (1250×1250 = 1.6 MP) and is within the bound."""
    from sensor_msgs.msg import CompressedImage
    msg = CompressedImage(format='png')
    msg.data = _png_header(10000, 10000)
    K = np.array([[5000.0, 0, 5000], [0, 5000, 5000], [0, 0, 1]])
    intr = cv.camera_info_to_intrinsics(_info(K, (10000, 10000)))
    with pytest.raises(ImageError, match=r'would decode to 100\.0 MP > max_image_pixels \(20\.0 MP\): not decoded'):
        cv.frame_from_image('CAM_FRONT', msg, intr, ImageGeometry())
    with pytest.raises(ImageError, match='max_image_pixels'):
        cv.frame_from_image('CAM_FRONT', msg, intr, ImageGeometry(), max_pixels=99_999_999)
    small = cv.rgb_to_compressed_msg(_smooth(80, 160), 1, 'f', 'jpeg')
    assert cv.compressed_to_rgb(small, max_pixels=80 * 160).shape == (80, 160, 3)
    with pytest.raises(ImageError, match='max_image_pixels'):
        cv.compressed_to_rgb(small, max_pixels=80 * 160 - 1)
    assert cv.compressed_to_rgb(small, reduce=2, max_pixels=40 * 80).shape == (40, 80, 3)


@pytest.mark.parametrize('frame_id', ['', 'cam_front_optical', 'ü' * 20])
def test_cdr_header_reads_what_rclpy_serialized(frame_id: str) -> None:
    """The node reads only the header of each camera message; the reference is rclpy's own CDR
    serializer (the bytes a raw subscription delivers)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage
    for msg in (cv.rgb_to_image_msg(np.zeros((4, 6, 3), np.uint8), 1_700_000_123_456_789_012, frame_id),
                CompressedImage(header=cv.header(42_000_000_007, frame_id), format='jpeg', data=b'\xff\xd8')):
        raw = serialize_message(msg)
        assert cdr.cdr_header(raw) == (cv.stamp_to_ns(msg.header.stamp), frame_id)
    with pytest.raises(ImageError, match='CDR'):
        cdr.cdr_header(b'\x00\x01\x00')
    with pytest.raises(ImageError, match='malformed'):
        cdr.cdr_header(b'\x00\x01\x00\x00' + b'\x00' * 8 + b'\xff\xff\x00\x00' + b'x' * 10)


@pytest.mark.parametrize('frame_id, encoding, pad', [('', 'rgb8', 0), ('cam_front_optical', 'bgr8', 3),
                                                      ('ü' * 7, 'rgb8', 5), ('x', 'mono8', 1)])
def test_image_read_in_place_equals_rclpy_deserialisation(frame_id: str, encoding: str, pad: int) -> None:
    """The worker reads a set's images from the received bytes (cdr.image_from_cdr) instead of
    deserialize_message. Reference: rclpy's serializer and deserializer — every field equal, for
    frame_id / encoding lengths that move the alignment of the fields after them, padded rows,
    and the pixels the node then takes from each."""
    from rclpy.serialization import deserialize_message, serialize_message
    rng = np.random.default_rng(len(frame_id) + pad)
    h, w, ch = 5, 7, 1 if encoding == 'mono8' else 3
    msg = Image(header=cv.header(1_700_000_123_456_789_012, frame_id), height=h, width=w, encoding=encoding,
                is_bigendian=0, step=w * ch + pad)
    msg.data = rng.integers(0, 256, h * (w * ch + pad), dtype=np.uint8).tobytes()
    raw = serialize_message(msg)
    ref = deserialize_message(raw, Image)
    view = cdr.image_from_cdr(raw)
    assert (view.header.stamp.sec, view.header.stamp.nanosec) == (ref.header.stamp.sec, ref.header.stamp.nanosec)
    assert view.header.frame_id == ref.header.frame_id
    assert (view.height, view.width, view.encoding, view.is_bigendian, view.step) == \
        (ref.height, ref.width, ref.encoding, ref.is_bigendian, ref.step)
    assert bytes(view.data) == bytes(ref.data)
    if encoding != 'mono8':
        np.testing.assert_array_equal(cv.image_to_rgb(view), cv.image_to_rgb(ref))
        assert np.shares_memory(np.frombuffer(view.data, np.uint8), np.frombuffer(raw, np.uint8))  # no copy
    jpeg = cv.rgb_to_compressed_msg(_smooth(16, 24), 5, frame_id, 'jpeg')
    raw = serialize_message(jpeg)
    cview, cref = cdr.compressed_image_from_cdr(raw), deserialize_message(raw, CompressedImage)
    assert (cview.header.frame_id, cview.format, bytes(cview.data)) == (cref.header.frame_id, cref.format,
                                                                         bytes(cref.data))
    assert np.shares_memory(np.frombuffer(cview.data, np.uint8), np.frombuffer(raw, np.uint8))  # no copy
    np.testing.assert_array_equal(cv.compressed_to_rgb(cview), cv.compressed_to_rgb(cref))


def test_a_malformed_or_truncated_image_is_refused_without_allocating_what_it_claims() -> None:
    from rclpy.serialization import serialize_message
    raw = serialize_message(cv.rgb_to_image_msg(np.zeros((4, 6, 3), np.uint8), 7, 'cam'))
    for cut in (3, 20, 40, len(raw) - 1):
        with pytest.raises(ImageError, match='CDR|malformed'):
            cdr.image_from_cdr(raw[:cut])
    huge = bytearray(raw)
    huge[-(4 * 6 * 3) - 4:-(4 * 6 * 3)] = (2 ** 31).to_bytes(4, 'little')       # data length 2 GiB
    with pytest.raises(ImageError, match='data needs 2147483648 bytes'):
        cdr.image_from_cdr(bytes(huge))
