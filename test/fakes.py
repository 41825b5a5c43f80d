"""Stand-ins for hardware and heavy parts the node tests do not need, typed against the real seams.

`FakePipeline` implements `occ_ros.pipeline.FramePipeline` (what the ROS node needs of a pipeline)
and returns real `PipelineResult`s; test_typing.py runs mypy over this file, so a fake that drifts
from the protocol fails the suite.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np
import torch

from occ_ros.core.classes import FREE, OCC_INDEX
from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import ImageError
from occ_ros.core.frames import CameraFrame, FrameSet
from occ_ros.core.occupancy import Occupancy
from occ_ros.geometry import Rig
from occ_ros.pipeline import FramePipeline, PipelineResult


class FakePipeline:
    """A pipeline that answers at once with one car ahead-left of the ego.

    temporal: a two-frame model config; like the real pipeline, a frame set without an ego pose
    is reported as temporal_reset='missing_pose'. delay_s: time `run` takes; fail_with: raised
    by `run` (after recording the call).
    """

    def __init__(self, rig: Rig, delay_s: float = 0.0, temporal: bool = False,
                 fail_with: Optional[BaseException] = None) -> None:
        self.model_cfg = ModelConfig(name='fake', num_frames=2 if temporal else 1)
        self._rig = rig
        self.delay_s = delay_s
        self.fail_with = fail_with
        self.fail_frames_of: set[str] = set()
        self.takes_jpeg = False                  # jpeg_input: the node hands it JPEG bytes undecoded
        self.calls: list[FrameSet] = []
        self.prepared: list[str] = []            # cameras whose frames prepare_view was given
        self.closed = False
        self.done = threading.Event()

    @property
    def rig(self) -> Rig:
        return self._rig

    @property
    def device(self) -> torch.device:
        return torch.device('cpu')

    @property
    def backend_kind(self) -> str:
        return 'fake'

    @property
    def input_warnings(self) -> dict[str, str]:
        return {}

    @property
    def jpeg_input(self) -> bool:
        return self.takes_jpeg

    def set_calibration(self, rig: Rig) -> None:
        self._rig = rig

    def check_frame(self, frame: CameraFrame) -> None:
        """Accepts every size (the glue tests use small images); `fail_frames_of` names cameras
        whose frames it refuses, as the real check refuses an implausible one (test_faults.py runs
        the real pipeline's check through DDS)."""
        if frame.name in self.fail_frames_of:
            raise ImageError(f'{frame.name}: refused by check_frame')

    def prepare_view(self, frame: CameraFrame) -> CameraFrame:
        """Checks the frame and records its camera (`prepared`); the image stays as it is (the
        node tests read the images the pipeline was given)."""
        self.check_frame(frame)
        self.prepared.append(frame.name)
        return frame

    def run(self, frames: FrameSet) -> PipelineResult:
        self.calls.append(frames)
        if self.delay_s:
            time.sleep(self.delay_s)
        self.done.set()
        if self.fail_with is not None:
            raise self.fail_with
        g = self.model_cfg.grid
        sem = np.full(g.shape, FREE, np.uint8)
        sem[100:104, 100:102, 3] = OCC_INDEX['car']          # one car ahead-left of the ego
        occ = Occupancy(sem, np.zeros(g.shape, np.uint16), mask_camera=np.ones(g.shape, bool),
                        stamp_ns=frames.stamp_ns)
        reset = 'missing_pose' if self.model_cfg.num_frames > 1 and frames.ego_pose is None else None
        return PipelineResult(frames.stamp_ns, occ, {'preprocess': 1.0, 'inference': 2.0, 'total': 3.0},
                              reset, frames.missing)

    def close(self) -> None:
        self.closed = True


def _conforms(rig: Rig) -> FramePipeline:
    return FakePipeline(rig)              # mypy: FakePipeline must implement FramePipeline
