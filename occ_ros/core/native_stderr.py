"""What native decoders print, caught instead of written to the terminal.

libjpeg (inside OpenCV's `imdecode`) reports damaged data — `Corrupt JPEG data: bad Huffman code`,
`Premature end of JPEG file` — by writing to the process's file descriptor 2 and then returning an
image anyway, part of it garbage. Nothing reaches Python: the node would log nothing, count nothing,
and feed the garbage to the network, while the terminal fills with lines no ROS tool sees.

`run_capturing(fn)` points descriptor 2 at an anonymous in-memory file while `fn` (one decode)
runs, then puts it back and sorts what was written: decoder lines (libjpeg's and libpng's) are
returned to the caller, which names them in an `ImageError`; anything else another thread wrote to
the descriptor meanwhile (an rcutils log line, say) is written back to the real stderr, late by at
most the capture's length but never lost.

Decodes run in parallel (the node decodes each camera as its image arrives, `ros/early.py`), and
descriptor 2 is one per process, so concurrent decodes share one capture window: it opens with
the first and closes with the last. Each decode reads only what was written while it ran. When it
ran alone, every decoder line in that stretch is its own; when another decode overlapped it and a
decoder line appeared, the line cannot be attributed — the decode is then run again alone (a solo
window that no other decode shares), so a damaged image is always refused with its own complaint
and a sound one never with another's. The common case (no complaint) costs a lock and a few system
calls per decode, and decodes never wait for each other.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import numpy as np

# Prefixes of what libjpeg (emit_message / output_message) and libpng (png_warning) print.
DECODER_PREFIXES: tuple[str, ...] = ('Corrupt JPEG data', 'Premature end of JPEG file', 'Invalid JPEG',
                                     'Unsupported JPEG', 'Bogus ', 'Warning: ', 'libpng warning', 'libpng error',
                                     'JPEG datastream')
MAX_CAPTURE_BYTES = 1 << 16             # read back at most this much a decode (a decoder prints a line or two)
MAX_WRITEBACK_BYTES = 1 << 22           # what other threads wrote during one window, passed on to stderr
T = TypeVar('T')


def _is_decoder_line(line: str) -> bool:
    return line.startswith(DECODER_PREFIXES)


def _anonymous_file() -> int:
    if hasattr(os, 'memfd_create'):
        return os.memfd_create('occ_ros-decoder-stderr', 0)
    import tempfile                     # pragma: no cover - non-Linux
    f = tempfile.TemporaryFile()        # pragma: no cover
    return os.dup(f.fileno())           # pragma: no cover


class _Window:
    """The shared capture of descriptor 2 (one per process; see the module doc). Its state is
    guarded by `cond`; `solo` is a window one decode holds alone."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0                 # decodes inside the window
        self.entries = 0                # decodes that ever entered (tells a decode whether another overlapped it)
        self.solo = False
        self.solo_waiting = 0
        self.saved = -1                 # the real stderr while the window is open
        self.sink = -1

    def enter(self, solo: bool) -> tuple[int, bool, int]:
        """(entry number, whether another decode is inside, the sink's size) at this decode's start."""
        with self.cond:
            if solo:
                self.solo_waiting += 1
                while self.active or self.solo:
                    self.cond.wait()
                self.solo_waiting -= 1
                self.solo = True
            else:
                while self.solo or self.solo_waiting:
                    self.cond.wait()
            if self.active == 0:
                self._open()
            overlapped = self.active > 0
            self.active += 1
            self.entries += 1
            return self.entries, overlapped, os.fstat(self.sink).st_size

    def leave(self, entry: int, overlapped: bool, start: int) -> tuple[list[str], bool]:
        """The decoder lines written since `start`, and whether they are ambiguous (another decode
        overlapped this one)."""
        with self.cond:
            end = os.fstat(self.sink).st_size
            overlapped = overlapped or self.entries != entry
            text = os.pread(self.sink, min(end - start, MAX_CAPTURE_BYTES), start) if end > start else b''
            self.active -= 1
            self.solo = False
            if self.active == 0:
                self._close()
            self.cond.notify_all()
        lines = [line for line in text.decode('utf-8', errors='replace').splitlines() if _is_decoder_line(line)]
        return lines, overlapped and bool(lines)

    def _open(self) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):   # pragma: no cover - a closed sys.stderr
            pass
        self.saved = os.dup(2)
        self.sink = _anonymous_file()
        os.dup2(self.sink, 2)

    def _close(self) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        data = os.pread(self.sink, MAX_WRITEBACK_BYTES, 0)
        os.close(self.sink)
        self.saved = self.sink = -1
        other = [line for line in data.decode('utf-8', errors='replace').splitlines() if not _is_decoder_line(line)]
        if other:
            os.write(2, ('\n'.join(other) + '\n').encode())


_window = _Window()


def _run(fn: Callable[[], T], solo: bool) -> tuple[T, list[str], bool]:
    entry, overlapped, start = _window.enter(solo)
    try:
        result = fn()
    finally:
        lines, ambiguous = _window.leave(entry, overlapped, start)
    return result, lines, ambiguous


def run_capturing(fn: Callable[[], T]) -> tuple[T, list[str]]:
    """`fn()` (one decode) with descriptor 2 captured: its result and the decoder lines it wrote.
    Runs beside other decodes; when a decoder line appeared while another decode overlapped this
    one, `fn` runs once more alone, so the lines returned are always its own."""
    result, lines, ambiguous = _run(fn, solo=False)
    if ambiguous:
        result, lines, _ = _run(fn, solo=True)
    return result, lines


@contextmanager
def capture_decoder_messages() -> Iterator[list[str]]:
    """Within the block (which no other capture shares), descriptor 2 is captured; the list
    yielded receives the decoder lines written in it when the block ends."""
    messages: list[str] = []
    entry, overlapped, start = _window.enter(solo=True)
    try:
        yield messages
    finally:
        messages.extend(_window.leave(entry, overlapped, start)[0])


def imdecode_refusing_damage(data: np.ndarray, flag: int, cannot: str, damaged: str) -> np.ndarray:
    """`cv2.imdecode(data, flag)` → a (H, W, 3) BGR image, with libjpeg's complaints caught: an
    `ImageError` "<cannot>: corrupt or truncated data[: first complaint]" when nothing (or no colour
    image) decodes, "<damaged>, not used: <complaints>" when it decoded but said part of it is
    garbage — never fed to the network. The one decode behind the node's CPU path
    (`ros.convert.compressed_to_rgb`) and the device preprocessor's OpenCV fallback."""
    import cv2                                          # the caller's dependency, not core's

    from occ_ros.core.errors import ImageError
    bgr, complaints = run_capturing(lambda: cv2.imdecode(data, flag))
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        said = f': {complaints[0]}' if complaints else ''
        raise ImageError(f'{cannot}: corrupt or truncated data{said}')
    if complaints:
        raise ImageError(f'{damaged}, not used: ' + '; '.join(complaints[:3]))
    return np.asarray(bgr)
