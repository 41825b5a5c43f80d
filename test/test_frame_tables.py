"""The per-frame table builder of a moving car (`occ_ros.geometry.frame_tables`): equal to the
calibration builder `compute_bev_geometry` table for table (itself checked against the official
formulas in test_ego_motion.py and test_geometry.py), and the derived pool bounds hold the worst
relative camera motion the project designs for (`core.config.MOTION_MAX_*`), so a fast turn never
raises CalibrationError mid-drive."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occ_ros.core.config import MOTION_MAX_SPEED_MPS, MOTION_MAX_SPREAD_S, MOTION_MAX_YAW_RATE, PoolBounds
from occ_ros.core.errors import CalibrationError
from occ_ros.geometry import FrameTableBuilder, compute_bev_geometry, nuscenes_rig, rigid_transform
from occ_ros.model.builders import model_config


def pose(t: float, speed: float, yaw_rate: float) -> np.ndarray:
    yaw = yaw_rate * t
    if abs(yaw_rate) < 1e-12:
        x, y = speed * t, 0.0
    else:
        x, y = speed / yaw_rate * math.sin(yaw), speed / yaw_rate * (1 - math.cos(yaw))
    c, s = math.cos(yaw), math.sin(yaw)
    return rigid_transform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), (x + 812.0, y - 95.0, 0.2))


def fired(spread: float, speed: float, yaw_rate: float, reverse: bool = False, t0: float = 0.0) -> np.ndarray:
    """Per-camera ego poses of six cameras fired evenly over `spread` seconds (view order or reversed)."""
    dts = [spread * i / 5 for i in range(6)]
    return np.stack([pose(t0 + (dts[5 - i] if reverse else dts[i]), speed, yaw_rate) for i in range(6)])


@pytest.fixture(scope='module')
def rig():
    return nuscenes_rig((900, 1600))


@pytest.mark.parametrize('model', ['lite', 'pano-tiny'])
def test_equal_to_the_calibration_builder(rig, model) -> None:
    cfg = model_config(model)
    builder = FrameTableBuilder(cfg, rig, 'cpu', fast_path=True)
    for e2g in (None, fired(0.042, 20.0, 0.6, t0=0.3), fired(0.08, 35.0, -0.9, reverse=True, t0=2.0)):
        want = compute_bev_geometry(cfg, rig, e2g)
        got = builder.build(e2g)
        for a, b in zip(want.pool_index.tensors(), got.pool_index.tensors()):
            assert torch.equal(a, b)
        assert want.pool_index.fast is not None and got.pool_index.fast is not None
        assert torch.equal(want.pool_index.fast.value_idx, got.pool_index.fast.value_idx)
        assert torch.equal(want.pool_index.fast.col, got.pool_index.fast.col)
        assert torch.equal(want.cam_vec, got.cam_vec)
        np.testing.assert_array_equal(want.sensor2keyego, got.sensor2keyego)
        assert want.required_capacities == got.required_capacities
        assert got.pool_index.num_points == want.pool_index.num_points


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device here')
def test_built_on_the_backend_device(rig) -> None:
    cfg = model_config('pano-tiny')
    e2g = fired(0.042, 20.0, 0.6)
    got = FrameTableBuilder(cfg, rig, 'cuda', fast_path=False).build(e2g)
    want = compute_bev_geometry(cfg, rig, e2g, fast_path=False)
    assert got.pool_index.device.type == 'cuda'
    for a, b in zip(want.pool_index.tensors(), got.pool_index.tensors()):
        assert torch.equal(a, b.cpu())


@pytest.mark.parametrize('model', ['lite', 'pano-tiny', 'pano-longterm8f'])
def test_derived_bounds_hold_a_fast_turn(rig, model) -> None:
    """Cameras fired over MOTION_MAX_SPREAD_S at MOTION_MAX_SPEED_MPS, turning at ±MOTION_MAX_YAW_RATE,
    in either firing order: every frame fits the derived bounds with room to spare."""
    cfg = model_config(model)
    assert cfg.pool_bounds.derived
    builder = FrameTableBuilder(cfg, rig, 'cpu', fast_path=False)
    caps = cfg.pool_bounds.capacities
    worst = 0.0
    for speed, yaw_rate, reverse in ((MOTION_MAX_SPEED_MPS, 0.0, False),
                                     (MOTION_MAX_SPEED_MPS, MOTION_MAX_YAW_RATE, False),
                                     (MOTION_MAX_SPEED_MPS, -MOTION_MAX_YAW_RATE, True),
                                     (-MOTION_MAX_SPEED_MPS, MOTION_MAX_YAW_RATE, True)):
        need = builder.build(fired(MOTION_MAX_SPREAD_S, speed, yaw_rate, reverse)).required_capacities
        worst = max(worst, max(sum(need[k:]) / sum(caps[k:]) for k in range(len(need))))
    assert worst < 0.95, worst


def test_a_frame_beyond_the_bounds_runs_uncompensated() -> None:
    """Bounds sized exactly for the standing rig: a moving frame overflows them, and the pipeline
    runs it with the rig's tables (counted) instead of losing it."""
    from occ_ros.core.frames import CameraFrame, EgoPose, FrameSet
    from occ_ros.pipeline import OccupancyPipeline
    rig = nuscenes_rig((450, 800))
    base = model_config('lite')
    need = FrameTableBuilder(base, rig, fast_path=False).build(None).required_capacities
    tight = base.with_(pool_bounds=PoolBounds(tuple(need) + (0,)))
    e2g = fired(MOTION_MAX_SPREAD_S, MOTION_MAX_SPEED_MPS, MOTION_MAX_YAW_RATE)
    with pytest.raises(CalibrationError, match='per-camera ego poses'):
        FrameTableBuilder(tight, rig, fast_path=False).build(e2g)
    pipe = OccupancyPipeline.from_params('lite', rig=rig, backend='torch', threads=2)
    try:
        pipe.model_cfg = tight
        frames = tuple(CameraFrame(c.name, 10 + i, np.zeros((450, 800, 3), np.uint8), c.K,
                                   ego_pose=EgoPose(10 + i, e2g[i])) for i, c in enumerate(rig))
        inputs, _ = pipe.network_inputs(FrameSet(10, frames, EgoPose(10, e2g[0])))
        assert pipe.moving_frames == 1 and pipe.moving_overflows == 1
        assert torch.equal(inputs['pool_cell_row'], pipe._geometry.pool_index.cell_row)
    finally:
        pipe.close()
