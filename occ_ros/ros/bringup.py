"""What the node builds at start-up from its parameters: the rig and the pipeline."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from occ_ros.geometry import Rig, rig_file
from occ_ros.ros.params import NodeParams

if TYPE_CHECKING:
    from occ_ros.pipeline import FramePipeline


def default_pipeline_factory(params: NodeParams, rig: Rig, progress: Callable[[str], None]) -> FramePipeline:
    """`OccupancyPipeline.from_params` with the node's parameters (may build a TensorRT engine)."""
    from occ_ros.pipeline import OccupancyPipeline
    return OccupancyPipeline.from_params(
        model=params.model, rig=rig, checkpoint=params.checkpoint or None, backend=params.backend,
        device=params.device, engine_dir=params.engine_dir or None,
        precision=None if params.precision == 'auto' else params.precision,
        threads=params.threads or None, official_compat=params.official_compat,
        tensorrt_tf32=params.tensorrt_tf32, progress=progress,
        history={'history_interval_s': params.history_interval_s,
                 'history_tolerance_s': params.history_tolerance_s},
        temporal_mode=params.temporal_mode, ort_spinning=params.ort_thread_spinning)


def load_rig(params: NodeParams) -> Rig:
    """The rig file given, else the default rig (`occ_ros.geometry.default_rig`)."""
    return rig_file.load_rig(params.rig_file) if params.rig_file else rig_file.default_rig()
