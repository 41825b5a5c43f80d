"""`EarlyViews` (ros/early.py): camera views prepared as their images arrive, used only for the very
message and calibration the set holds, errors handed to the set, bounded, nothing prepared while a
set is processed. Plain Python (its preparation function stands in for decode + preprocess, which
test_pipeline.py::test_views_prepared_ahead_give_the_same_outputs checks against the official
transform); the node through DDS: test_ros_node.py::test_normal (`views_prepared_early`)."""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from occ_ros.core.errors import ImageError
from occ_ros.core.frames import CameraFrame
from occ_ros.ros.early import EarlyViews


@dataclass
class Calib:
    view_key: tuple


class Recorder:
    """The preparation function: a frame per message, the thread it ran on, optionally blocked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail: dict[bytes, Exception] = {}

    def __call__(self, camera: str, msg: Any, calib: Any) -> CameraFrame:
        assert self.gate.wait(10)
        self.calls.append((camera, msg, threading.current_thread().name))
        self.nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if bytes(msg) in self.fail:
            raise self.fail[bytes(msg)]
        return CameraFrame(camera, 0, np.frombuffer(bytes(msg), np.uint8).reshape(1, -1, 1).repeat(3, 2), np.eye(3))


@pytest.fixture
def setup():
    calibs = {'A': Calib((1,)), 'B': Calib((2,))}
    rec = Recorder()
    early = EarlyViews(rec, calibs.get, workers=2, per_camera=2)
    yield early, rec, calibs
    early.close()


def test_a_view_is_prepared_on_the_pool_and_taken_for_the_same_message(setup) -> None:
    early, rec, calibs = setup
    msg = bytearray(b'abc')
    assert early.offer('A', msg)
    frame = early.take('A', msg, calibs['A'])
    assert frame is not None and bytes(frame.image[0, :, 0]) == b'abc'
    assert rec.calls[0][2].startswith('occ_early')          # not the caller's thread
    if sys.platform.startswith('linux'):                    # below the ingest and DDS threads
        assert rec.nice == min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + EarlyViews.NICE_STEPS)
    assert early.used == 1 and early.take('A', msg, calibs['A']) is None      # taken once


def test_only_the_very_message_and_an_equal_calibration_are_used(setup) -> None:
    early, rec, calibs = setup
    msg, twin = bytearray(b'abc'), bytearray(b'abc')
    early.offer('A', msg)
    assert early.take('A', twin, calibs['A']) is None        # equal bytes, another message
    assert early.take('A', msg, Calib((1,))) is not None     # another object, the same values
    early.offer('A', msg)
    assert early.take('A', msg, Calib((9,))) is None         # the CameraInfo changed meanwhile
    assert early.discarded == 1


def test_an_error_of_the_preparation_is_handed_to_the_set(setup) -> None:
    early, rec, calibs = setup
    rec.fail[b'bad'] = ImageError('A: image 4000×8 is implausibly tall')
    msg = bytearray(b'bad')
    early.offer('A', msg)
    with pytest.raises(ImageError, match='implausibly tall'):
        early.take('A', msg, calibs['A'])
    assert len(rec.calls) == 1                               # the set does not decode it again


def test_nothing_is_prepared_while_a_set_is_processed(setup) -> None:
    early, rec, calibs = setup
    mine, other, later = bytearray(b'1'), bytearray(b'2'), bytearray(b'3')
    early.offer('A', mine)
    early.offer('B', other)
    early.hold({'A': mine})                                  # the worker took the set holding `mine`
    assert early.pending == 1 and early.discarded == 1       # B's view is not the set's: dropped
    assert not early.offer('A', later)                       # taken meanwhile: not prepared
    assert early.take('A', mine, calibs['A']) is not None
    early.release()
    assert early.offer('A', later)


def test_a_camera_without_calibration_is_left_to_the_set(setup) -> None:
    early, rec, _ = setup
    assert not early.offer('C', bytearray(b'x')) and early.pending == 0


def test_bounded_per_camera_and_queued_jobs_cancelled(setup) -> None:
    early, rec, calibs = setup
    rec.gate.clear()                                         # the pool's two threads block
    msgs = [bytearray(bytes([i])) for i in range(5)]
    for m in msgs:
        early.offer('A', m)
    assert early.pending == 2 and early.discarded == 3       # the newest two are kept
    rec.gate.set()
    assert early.take('A', msgs[-1], calibs['A']) is not None
    early.release()
    assert early.pending == 0
    assert len(rec.calls) <= 4                               # at most the two running + the two kept ran


def test_close_stops_preparing(setup) -> None:
    early, rec, calibs = setup
    early.close()
    assert not early.offer('A', bytearray(b'x'))
