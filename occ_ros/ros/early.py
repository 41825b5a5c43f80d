"""Each camera's view prepared as its image arrives (parameter `prepare_early`).

The images of one set do not arrive together: a driver publishes its cameras one after another
(≈ 20 ms for six raw 900×1600 images here), and a rig whose cameras are triggered as a lidar
sweeps past them (nuScenes) stamps them up to ≈ 40 ms apart. Without this, nothing happens until
the set's last image is in; then the worker decodes and preprocesses all six (≈ 26 ms for six raw
images on two cores, a JPEG decode more). With it, while the worker is free, each image is decoded
and turned into its network view (`FramePipeline.prepare_view`: resize, crop, normalise — the
very planes the set's batch would make) on a small pool as soon as it is taken, so when the set is
complete only the views still in progress are waited for.

- Only while the worker is free (`open`, between sets): an image taken while a set is processed is
  not prepared (with `ingest_hold` none is taken then anyway) — the early work never competes with
  inference.
- A prepared view is used only for the very message the set holds (identity) and the same
  calibration (`Intrinsics.view_key`); otherwise the set's image is decoded as before. A view that
  failed (a hostile size, a broken image) hands its error to the set, which counts and reports it
  exactly as if it had decoded the image itself — never twice, never silently.
- Bounded: at most `per_camera` views per camera (the newest), all dropped when the worker takes a
  set (the set's own kept) or finishes it; jobs not started are cancelled.

Counters (`/diagnostics`, processing): `views_prepared_early` (views a set used), `views_discarded`
(prepared or started but not used: the set that would have used them was dropped or blanked).
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol

from occ_ros.core.frames import CameraFrame
from occ_ros.core.threads import name_this_thread, yield_this_thread


class ViewCalibration(Protocol):
    """What a prepared view depends on of its camera's calibration (`convert.Intrinsics`)."""

    @property
    def view_key(self) -> tuple: ...


# Prepares one camera's view: (camera, message, its calibration) → the frame for the pipeline.
# Raises the ImageError / CalibrationError the set's own decode would raise.
PrepareFn = Callable[[str, Any, Any], CameraFrame]
# The camera's current calibration, None when it has none yet.
LookupFn = Callable[[str], Optional[ViewCalibration]]


@dataclass
class _Entry:
    msg: Any
    calib: ViewCalibration
    future: 'Future[CameraFrame]'


class EarlyViews:
    """Camera views prepared ahead of their set on `workers` threads (see module doc)."""

    def __init__(self, prepare: PrepareFn, lookup: LookupFn, workers: int = 2, per_camera: int = 2) -> None:
        self._prepare = prepare
        self._lookup = lookup
        self._pool = ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix='occ_early',
                                        initializer=self._init_thread)
        self._per_camera = max(1, int(per_camera))
        self._lock = threading.Lock()
        self._entries: dict[str, deque[_Entry]] = {}
        self._open = True
        self._closed = False
        self.submitted = 0          # views whose preparation was started or queued
        self.used = 0               # views a set took
        self.discarded = 0          # views dropped unused (or cancelled before they started)

    NICE_STEPS = 5

    @staticmethod
    def _init_thread() -> None:
        """A pool thread: named for `top -H`, and below the process's other threads — taking the
        next images (ingest, DDS) must not wait for a view being prepared."""
        name_this_thread('occ_early')
        yield_this_thread(EarlyViews.NICE_STEPS)

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._entries.values())

    def offer(self, camera: str, msg: Any) -> bool:
        """An image just taken (any thread): prepare its view now if the worker is free and the
        camera has a calibration. True when a preparation was queued."""
        with self._lock:
            if not self._open or self._closed:
                return False
            calib = self._lookup(camera)
            if calib is None:
                return False                      # the set waits for its CameraInfo and decodes itself
            q = self._entries.setdefault(camera, deque())
            while len(q) >= self._per_camera:
                self._drop(q.popleft())
            q.append(_Entry(msg, calib, self._pool.submit(self._prepare, camera, msg, calib)))
            self.submitted += 1
            return True

    def take(self, camera: str, msg: Any, calib: ViewCalibration) -> Optional[CameraFrame]:
        """The view prepared for exactly `msg` with a calibration equal to `calib`, waiting for it
        if it is still in progress; None when there is none (the caller decodes the image itself).
        Re-raises the preparation's ImageError / CalibrationError for the caller to count."""
        with self._lock:
            q = self._entries.get(camera, deque())
            entry = next((e for e in q if e.msg is msg), None)
            if entry is not None:
                q.remove(entry)
        if entry is None:
            return None
        if entry.calib is not calib and entry.calib.view_key != calib.view_key:
            with self._lock:
                self._drop(entry)                 # the CameraInfo changed meanwhile
            return None
        try:
            frame = entry.future.result()
        except CancelledError:
            return None
        with self._lock:
            self.used += 1
        return frame

    def hold(self, keep: Mapping[str, Any]) -> None:
        """The worker took a set (whose message per camera is `keep`): prepare nothing more until
        `release`, and drop every view but the set's own."""
        with self._lock:
            self._open = False
            for camera, q in self._entries.items():
                for e in [e for e in q if e.msg is not keep.get(camera)]:
                    q.remove(e)
                    self._drop(e)

    def release(self) -> None:
        """The set is done: whatever it did not take is dropped; arrivals are prepared again."""
        with self._lock:
            for q in self._entries.values():
                while q:
                    self._drop(q.popleft())
            self._open = not self._closed

    def _drop(self, e: _Entry) -> None:
        """Under the lock: an entry leaves unused; its job is cancelled if it has not started."""
        e.future.cancel()
        self.discarded += 1

    def close(self) -> None:
        """Stop preparing (idempotent): queued jobs are cancelled, running ones finish on their own."""
        with self._lock:
            self._closed, self._open = True, False
            for q in self._entries.values():
                while q:
                    self._drop(q.popleft())
        self._pool.shutdown(wait=False, cancel_futures=True)
