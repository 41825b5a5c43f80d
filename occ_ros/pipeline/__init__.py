"""The occupancy pipeline: FrameSet in, panoptic occupancy out. No ROS below this line.

    rig/geometry   calibration → BEV-pool tables + camera vectors (cached until calibration changes;
                   rebuilt per frame when the cameras' capture-time ego poses differ: a moving car)
    preprocess     resize/crop, B,G,R planes, normalise → tensor on the backend's device
    temporal       multi-frame models: key-frame history, either lifted from each history frame's
                   cached neck features into the current ego frame (temporal_mode 'lift', the official
                   evaluation, default) or its cached BEV warped there ('warp')
    backend        torch | onnxruntime | tensorrt, one protocol
    postprocess    labels + centres → semantic grid, instance grid, instance table, visibility

The same object serves the node, the benchmark, the evaluator and the tests.

Modules: `occupancy_pipeline` (`OccupancyPipeline`, the stages above per frame),
`rig_geometry` (its calibration: rig and BEV geometry), `protocol` (`PipelineResult` and
`FramePipeline`, what the node needs of a pipeline).
"""
from occ_ros.pipeline.occupancy_pipeline import OccupancyPipeline
from occ_ros.pipeline.protocol import FramePipeline, PipelineResult

__all__ = ['FramePipeline', 'OccupancyPipeline', 'PipelineResult']
