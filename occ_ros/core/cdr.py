"""ROS 2 messages read in place from their serialized (CDR) bytes — pure Python, no ROS client
library: the node's camera subscriptions and the bag reader (a ground-truth frame's stamp) share it.

The camera subscriptions are raw (`raw=True`): the callback gets the serialized bytes and reads
only the header (`cdr_header`, ~1 µs), and the worker reads the image of a set it actually
processes. `deserialize_message` would copy a 900×1600 rgb8 image into a new Python message
(≈1.2 ms each, 4.3 MB); `image_from_cdr` instead returns a view whose `data` is a memoryview of the
received bytes, so an rgb8 image reaches the preprocessing without any copy; likewise
`compressed_image_from_cdr`'s JPEG bytes, which a device-side preprocessor gets as they arrived.

Layout (XCDR1 — the encoding rmw_fastrtps, rmw_cyclonedds and rmw_connextdds use for ROS 2 messages):
a 4-byte encapsulation header (`00 01` little endian, `00 00` big endian), then the fields in
order, each primitive aligned to its own size relative to the end of the encapsulation header; a
string is a uint32 length (counting its NUL) and the bytes; a `uint8[]` is a uint32 count and
the bytes.
    std_msgs/Header          int32 sec, uint32 nanosec, string frame_id
    sensor_msgs/Image        Header, uint32 height, uint32 width, string encoding,
                             uint8 is_bigendian, uint32 step, uint8[] data
    sensor_msgs/CompressedImage  Header, string format, uint8[] data
Every length is checked against the bytes received: a malformed message is an `ImageError`, never
an out-of-bounds read or an allocation of the size it claims.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Union

from occ_ros.core.errors import ImageError

MAX_FRAME_ID_BYTES = 256
MAX_STRING_BYTES = 256              # encoding / format strings ('rgb8', 'jpeg', 'bgr8; jpeg compressed bgr8')


@dataclass(frozen=True)
class Stamp:
    sec: int
    nanosec: int


@dataclass(frozen=True)
class Header:
    stamp: Stamp
    frame_id: str


@dataclass(frozen=True)
class ImageView:
    """The fields of a sensor_msgs/Image; `data` is a view of the serialized bytes (no copy)."""
    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass(frozen=True)
class CompressedImageView:
    """The fields of a sensor_msgs/CompressedImage; `data` is a view of the serialized bytes (no copy)."""
    header: Header
    format: str
    data: memoryview


class _Reader:
    def __init__(self, raw: Union[bytes, bytearray, memoryview]) -> None:
        self.raw = memoryview(raw).cast('B')
        if len(self.raw) < 4 or self.raw[0] != 0 or self.raw[1] not in (0, 1):
            raise ImageError(f'not a CDR message ({len(self.raw)} bytes)')
        self.endian = '<' if self.raw[1] == 1 else '>'
        self.pos = 4

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.raw):
            raise ImageError(f'malformed message: {what} needs {n} bytes at offset {self.pos}, '
                             f'the message has {len(self.raw)}')

    def u32(self, what: str, signed: bool = False) -> int:
        self.pos += -(self.pos - 4) % 4
        self._need(4, what)
        (v,) = struct.unpack_from(self.endian + ('i' if signed else 'I'), self.raw, self.pos)
        self.pos += 4
        return int(v)

    def u8(self, what: str) -> int:
        self._need(1, what)
        v = int(self.raw[self.pos])
        self.pos += 1
        return v

    def string(self, what: str, limit: int) -> str:
        n = self.u32(what)
        if n > limit:
            raise ImageError(f'malformed message: {what} of {n} bytes (limit {limit})')
        self._need(n, what)
        s = bytes(self.raw[self.pos:self.pos + max(0, n - 1)]).decode('utf-8', errors='replace')
        self.pos += n
        return s

    def octets(self, what: str) -> memoryview:
        n = self.u32(what)
        self._need(n, what)
        view = self.raw[self.pos:self.pos + n]
        self.pos += n
        return view

    def header(self) -> Header:
        sec = self.u32('header stamp', signed=True)
        nanosec = self.u32('header stamp')
        if nanosec >= 1_000_000_000:
            raise ImageError(f'malformed message header (nanosec {nanosec})')
        return Header(Stamp(sec, nanosec), self.string('header frame_id', MAX_FRAME_ID_BYTES))


def cdr_header(raw: Union[bytes, bytearray, memoryview]) -> tuple[int, str]:
    """(stamp ns, frame_id) of a serialized message that starts with a std_msgs/Header (Image,
    CompressedImage, CameraInfo …), without deserialising the message. Raises ImageError."""
    h = _Reader(raw).header()
    return h.stamp.sec * 1_000_000_000 + h.stamp.nanosec, h.frame_id


def image_from_cdr(raw: Union[bytes, bytearray, memoryview]) -> ImageView:
    """A serialized sensor_msgs/Image as an `ImageView` (data not copied). Raises ImageError."""
    r = _Reader(raw)
    header = r.header()
    height, width = r.u32('height'), r.u32('width')
    encoding = r.string('encoding', MAX_STRING_BYTES)
    big = r.u8('is_bigendian')
    step = r.u32('step')
    return ImageView(header, height, width, encoding, big, step, r.octets('data'))


def compressed_image_from_cdr(raw: Union[bytes, bytearray, memoryview]) -> CompressedImageView:
    """A serialized sensor_msgs/CompressedImage as a `CompressedImageView`. Raises ImageError."""
    r = _Reader(raw)
    header = r.header()
    fmt = r.string('format', MAX_STRING_BYTES)
    return CompressedImageView(header, fmt, r.octets('data'))
