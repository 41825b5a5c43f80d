"""What native decoders print, caught instead of written to the terminal.

libjpeg (inside OpenCV's `imdecode`) reports damaged data — `Corrupt JPEG data: bad Huffman code`,
`Premature end of JPEG file` — by writing to the process's file descriptor 2 and then returning an
image anyway, part of it garbage. Nothing reaches Python: the node would log nothing, count nothing,
and feed the garbage to the network, while the terminal fills with lines no ROS tool sees.

`capture_decoder_messages()` points descriptor 2 at an anonymous in-memory file for the duration of
one decode, then puts it back and sorts what was written: decoder lines (libjpeg's and libpng's) are
returned to the caller, which names them in an `ImageError`; anything else another thread wrote to
the descriptor in that window (an rcutils log line, say) is written back to the real stderr, late
by at most one decode but never lost. One capture at a time (a lock): the node decodes in one
worker thread, so the lock is uncontended there. Cost: four system calls per decode (a few µs).
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np

# Prefixes of what libjpeg (emit_message / output_message) and libpng (png_warning) print.
DECODER_PREFIXES: tuple[str, ...] = ('Corrupt JPEG data', 'Premature end of JPEG file', 'Invalid JPEG',
                                     'Unsupported JPEG', 'Bogus ', 'Warning: ', 'libpng warning', 'libpng error',
                                     'JPEG datastream')
MAX_CAPTURE_BYTES = 1 << 16             # read back at most this much (a decoder prints a line or two)
_lock = threading.Lock()


def _is_decoder_line(line: str) -> bool:
    return line.startswith(DECODER_PREFIXES)


def _anonymous_file() -> int:
    if hasattr(os, 'memfd_create'):
        return os.memfd_create('occ_ros-decoder-stderr', 0)
    import tempfile                     # pragma: no cover - non-Linux
    f = tempfile.TemporaryFile()        # pragma: no cover
    return os.dup(f.fileno())           # pragma: no cover


@contextmanager
def capture_decoder_messages() -> Iterator[list[str]]:
    """Within the block, descriptor 2 is captured; the list yielded receives the decoder's lines."""
    messages: list[str] = []
    with _lock:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):   # pragma: no cover - a closed sys.stderr
            pass
        saved = os.dup(2)
        sink = _anonymous_file()
        os.dup2(sink, 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.lseek(sink, 0, os.SEEK_SET)
            data = os.read(sink, MAX_CAPTURE_BYTES)
            os.close(sink)
            other: list[str] = []
            for line in data.decode('utf-8', errors='replace').splitlines():
                (messages if _is_decoder_line(line) else other).append(line)
            if other:
                os.write(2, ('\n'.join(other) + '\n').encode())


def imdecode_refusing_damage(data: np.ndarray, flag: int, cannot: str, damaged: str) -> np.ndarray:
    """`cv2.imdecode(data, flag)` → a (H, W, 3) BGR image, with libjpeg's complaints caught: an
    `ImageError` "<cannot>: corrupt or truncated data[: first complaint]" when nothing (or no colour
    image) decodes, "<damaged>, not used: <complaints>" when it decoded but said part of it is
    garbage — never fed to the network. The one decode behind the node's CPU path
    (`ros.convert.compressed_to_rgb`) and the device preprocessor's OpenCV fallback."""
    import cv2                                          # the caller's dependency, not core's

    from occ_ros.core.errors import ImageError
    with capture_decoder_messages() as complaints:
        bgr = cv2.imdecode(data, flag)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        said = f': {complaints[0]}' if complaints else ''
        raise ImageError(f'{cannot}: corrupt or truncated data{said}')
    if complaints:
        raise ImageError(f'{damaged}, not used: ' + '; '.join(complaints[:3]))
    return np.asarray(bgr)
