"""Decodes in parallel with libjpeg's complaints still caught and attributed (`core/native_stderr.py`).

The node decodes each camera's image as it arrives, on two threads (`ros/early.py`), while
descriptor 2 — where libjpeg writes "Corrupt JPEG data …" — is one per process. These tests check
the shared capture window: decodes do not wait for each other, a complaint is always returned to
the decode that caused it (never to one that merely overlapped it), and what other threads write
meanwhile still reaches stderr. The outside reference for what libjpeg does with the damaged image
(decodes it, partly garbage, and writes the complaint to descriptor 2) is
test_ros_convert.py::test_libjpeg_complaints_refuse_the_image_and_never_reach_the_terminal.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from occ_ros.core.errors import ImageError
from occ_ros.core.native_stderr import imdecode_refusing_damage, run_capturing

COMPLAINT = b'Corrupt JPEG data: 2 extraneous bytes before marker 0xd0\n'


def test_a_decode_does_not_wait_for_another_in_progress() -> None:
    """While one decode is inside its capture (blocked), a second one enters, finishes and returns
    — the capture no longer serialises decodes (it did with one lock a capture)."""
    inside, finish = threading.Event(), threading.Event()

    def slow() -> str:
        inside.set()
        assert finish.wait(10)
        return 'slow'

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_capturing, slow)
        assert inside.wait(10)
        assert run_capturing(lambda: 'quick') == ('quick', [])     # while `slow` is still inside
        assert not first.done()
        finish.set()
        assert first.result(10) == ('slow', [])


def test_a_complaint_written_while_another_decode_overlaps_goes_to_its_author(capfd: pytest.CaptureFixture) -> None:
    """Two overlapping decodes, one of which writes a decoder line: the line cannot be attributed
    from the shared window, so both run again alone — the author gets its line back, the other
    decode none; each function's second run sees no other decode."""
    capfd.readouterr()
    b_in, written = threading.Event(), threading.Event()
    runs = {'a': 0, 'b': 0}

    def author() -> str:
        runs['a'] += 1
        if runs['a'] == 1:
            assert b_in.wait(10)                  # the bystander is inside the window
        os.write(2, COMPLAINT)
        written.set()
        return 'a'

    def bystander() -> str:
        runs['b'] += 1
        if runs['b'] == 1:
            b_in.set()
            assert written.wait(10)               # the complaint lands while it is inside too
        return 'b'

    with ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(run_capturing, author), pool.submit(run_capturing, bystander)
        assert fa.result(10) == ('a', [COMPLAINT.decode().strip()])
        assert fb.result(10) == ('b', [])
    assert runs == {'a': 2, 'b': 2}               # the ambiguous first runs were repeated alone
    assert capfd.readouterr().err == ''            # decoder lines never reach the terminal


def test_a_decode_alone_in_the_window_keeps_its_complaint_without_a_second_run() -> None:
    runs = []

    def alone() -> int:
        runs.append(1)
        os.write(2, COMPLAINT)
        return 7

    assert run_capturing(alone) == (7, [COMPLAINT.decode().strip()])
    assert len(runs) == 1


def test_other_writers_reach_stderr_once_the_shared_window_closes(capfd: pytest.CaptureFixture) -> None:
    """A log line written by another thread while two decodes share the window is passed on (once)."""
    capfd.readouterr()
    a_in, release = threading.Event(), threading.Event()

    def waits() -> None:
        a_in.set()
        assert release.wait(10)

    with ThreadPoolExecutor(1) as pool:
        f = pool.submit(run_capturing, waits)
        assert a_in.wait(10)
        run_capturing(lambda: os.write(2, b'[WARN] [2.0] [node]: a log line\n'))
        release.set()
        f.result(10)
    assert capfd.readouterr().err == '[WARN] [2.0] [node]: a log line\n'


def test_damaged_and_sound_jpegs_decoded_in_parallel_are_each_judged_on_their_own(capfd: pytest.CaptureFixture) -> None:
    """Real libjpeg, two threads, 40 decodes each of a damaged and a sound JPEG interleaved: every
    damaged one is refused with libjpeg's complaint, every sound one decodes to the image a lone
    OpenCV decode gives, and nothing reaches the terminal."""
    import cv2

    from test_ros_convert import _damaged_jpeg

    rng = np.random.default_rng(5)
    sound = np.frombuffer(cv2.imencode('.jpg', rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                                       [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(), np.uint8)
    damaged = np.frombuffer(_damaged_jpeg(), np.uint8)
    expected = cv2.imdecode(sound, cv2.IMREAD_COLOR)
    capfd.readouterr()

    def decode(data: np.ndarray) -> object:
        try:
            return imdecode_refusing_damage(data, cv2.IMREAD_COLOR, cannot='cannot', damaged='damaged')
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(decode, [sound, damaged] * 40))
    for i, r in enumerate(results):
        if i % 2:
            assert isinstance(r, ImageError) and 'damaged, not used: Corrupt JPEG data' in str(r), r
        else:
            assert isinstance(r, np.ndarray) and np.array_equal(r, expected)
    assert capfd.readouterr().err == ''
