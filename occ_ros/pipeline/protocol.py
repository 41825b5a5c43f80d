"""What a pipeline hands its users: `PipelineResult` (one processed frame set) and
`FramePipeline`, the protocol of what the ROS node needs of a pipeline (`OccupancyPipeline` is
one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol

import torch

from occ_ros.core.config import ModelConfig
from occ_ros.core.frames import CameraFrame, FrameSet
from occ_ros.core.occupancy import Occupancy
from occ_ros.geometry import Rig


@dataclass
class PipelineResult:
    """One processed frame set.

    occupancy: the frame as `core.occupancy.Occupancy` (semantics uint8 (nx, ny, nz), instances
    uint16, mask_camera = the live cameras' frusta, instance table with scores).
    timings_ms: stage → milliseconds.
    """

    stamp_ns: int
    occupancy: Occupancy
    timings_ms: dict[str, float]
    temporal_reset: Optional[str] = None
    missing: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


class FramePipeline(Protocol):
    """What the ROS node needs of a pipeline (`OccupancyPipeline` is one; the node tests use a
    stand-in that mypy checks against this protocol, test/fakes.py).

    `run` owns the whole per-frame policy, the temporal one included: a frame set without an
    ego pose (`frames.ego_pose is None`) drops the history of a multi-frame model and is reported
    as `temporal_reset='missing_pose'`.
    """

    model_cfg: ModelConfig

    @property
    def rig(self) -> Rig: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def backend_kind(self) -> str: ...

    @property
    def input_warnings(self) -> Mapping[str, str]: ...

    @property
    def jpeg_input(self) -> bool:
        """True when camera frames may carry `JpegImage`s: the preprocessing decodes them itself
        (on the backend's device), so a node hands it the received JPEG bytes undecoded."""
        ...

    def set_calibration(self, rig: Rig) -> None: ...

    def check_frame(self, frame: CameraFrame) -> None: ...

    def prepare_view(self, frame: CameraFrame) -> CameraFrame:
        """`frame` with its image already turned into the network view (`PreparedImage`) where the
        pipeline can do that ahead of `run` (same output), else `frame` unchanged. ImageError as
        `check_frame`."""
        ...

    def run(self, frames: FrameSet) -> PipelineResult: ...

    def close(self) -> None: ...
