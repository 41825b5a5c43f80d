"""The node's glue in one process, with a stand-in pipeline implementing the pipeline contract.

Messages are handed to the node's callbacks directly (no DDS traffic); publishers are replaced by
recorders. What is tested here is the node's own logic: conversion → FrameSet, blanking of
unusable cameras, the latest-only slot and its drop count, error containment in the worker,
odometry at the set stamp, temporal resets on missing odometry, diagnostics.
The real pipeline runs in test_ros_node.py (separate processes, real DDS).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the ROS 2 Python wheels')
pytest.importorskip('occ_ros.msg', reason='interfaces not built (scripts/build_interfaces.sh)')

from rclpy.parameter import Parameter  # noqa: E402

from occ_ros.core.config import NUSCENES_CAMERAS  # noqa: E402
from occ_ros.core.errors import ImageError  # noqa: E402
from occ_ros.geometry import nuscenes_rig  # noqa: E402
from occ_ros.ros import convert as cv  # noqa: E402
from occ_ros.ros.node import OccupancyNode  # noqa: E402

from fakes import FakePipeline  # noqa: E402
from occ_ros.ros.sync import SyncedSet  # noqa: E402

HW = (45, 80)
MS = 1_000_000


class Recorder:
    def __init__(self) -> None:
        self.msgs: list = []

    def publish(self, msg: Any) -> None:
        self.msgs.append(msg)

    def get_subscription_count(self) -> int:
        return 1


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def ctx():
    c = rclpy.Context()
    rclpy.init(context=c)
    yield c
    rclpy.try_shutdown(context=c)


def make_node(ctx, pipeline: FakePipeline, **params: Any) -> OccupancyNode:
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = OccupancyNode(pipeline_factory=lambda p, rig, progress: pipeline, context=ctx,
                         parameter_overrides=overrides)
    node.load()
    node.start()
    for name in ('voxels', 'instances', 'cloud', 'grid_pub', 'panoptic'):
        setattr(node._out, name, Recorder())
    for name in ('pub_proc', 'pub_lat'):
        setattr(node._stats, name, Recorder())
    return node


@pytest.fixture
def rig():
    return nuscenes_rig(HW)


def rgb(cam_index: int) -> np.ndarray:
    img = np.zeros(HW + (3,), np.uint8)
    img[..., 0] = cam_index
    img[..., 1] = np.arange(HW[1], dtype=np.uint8)[None, :]
    return img


def feed_set(node: OccupancyNode, rig: Any, stamp: int, skip: tuple = (), bad: tuple = (),
             infos: bool = True) -> None:
    for i, cam in enumerate(NUSCENES_CAMERAS):
        if cam in skip:
            continue
        if infos:
            node._on_camera_info(cam, cv.camera_info_msg(rig.camera(cam).K, HW, stamp, f'{cam}_optical'))
        msg = cv.rgb_to_image_msg(rgb(i), stamp, f'{cam}_optical', 'bgr8' if i % 2 else 'rgb8')
        if cam in bad:
            msg.encoding = 'mono16'
        node._on_image(cam, msg)


def wait(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def close(node: OccupancyNode) -> None:
    node.close()
    node.destroy_node()


# ------------------------------------------------------------------ tests
def test_a_complete_set_reaches_the_pipeline_as_rgb_frames(ctx, rig) -> None:
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none')
    try:
        feed_set(node, rig, 1_000 * MS)
        assert wait(lambda: node.outputs == 1)
        fs = pipe.calls[0]
        assert fs.stamp_ns == 1_000 * MS and fs.missing == () and fs.ego_pose is None
        assert fs.names == tuple(NUSCENES_CAMERAS)
        for i, f in enumerate(fs.frames):
            np.testing.assert_array_equal(f.image, rgb(i))          # rgb8 and bgr8 both arrive as RGB
            np.testing.assert_allclose(f.K, rig.camera(f.name).K)
        panoptic = node._out.panoptic.msgs[0]
        assert panoptic.header.frame_id == 'base_footprint' and cv.stamp_to_ns(panoptic.header.stamp) == 1_000 * MS
        grid = node._out.grid_pub.msgs[0]
        data = np.asarray(grid.data, np.int8).reshape(200, 200)
        assert (data[100:102, 100:104] == 100).all() and (data == 100).sum() == 8
        voxels = node._out.voxels.msgs[0]
        assert [m.ns for m in voxels.markers] == ['car'] and len(voxels.markers[0].points) == 8
        assert node._stats.pub_proc.msgs[0].data > 0
        assert cv.stamp_to_ns(node._stats.pub_lat.msgs[0].header.stamp) == 1_000 * MS
        assert set(node._stats.stage_pubs) == {'preprocess', 'inference', 'pipeline', 'decode', 'publish',
                                               'input_delay', 'queue_wait'}
    finally:
        close(node)
    assert pipe.closed


def test_bad_encoding_blanks_only_that_camera(ctx, rig) -> None:
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none')
    try:
        feed_set(node, rig, 1_000 * MS, bad=('CAM_FRONT_RIGHT',))
        assert wait(lambda: node.outputs == 1)
        fs = pipe.calls[0]
        assert fs.missing == ('CAM_FRONT_RIGHT',)
        assert [f.name for f in fs.frames if f.image is None] == ['CAM_FRONT_RIGHT']
        assert list(node._out.panoptic.msgs[0].missing_cameras) == ['CAM_FRONT_RIGHT']
        snap = node.snapshot()
        assert snap.pipeline_errors == {'ImageError': 1} and 'mono16' in snap.last_error
        assert snap.cameras['CAM_FRONT_RIGHT'].bad == 1
    finally:
        close(node)


def test_a_frame_the_pipeline_refuses_blanks_only_that_camera(ctx, rig) -> None:
    """A decoded image the pipeline cannot use (an implausible size: pipeline.check_frame) blanks
    its camera; before, the pipeline refused the whole set and one hostile camera starved the
    other five (found by test_faults.py through DDS)."""
    pipe = FakePipeline(rig)
    pipe.fail_frames_of = {'CAM_BACK_LEFT'}
    node = make_node(ctx, pipe, odom_source='none')
    try:
        feed_set(node, rig, 1_000 * MS)
        assert wait(lambda: node.outputs == 1)
        fs = pipe.calls[0]
        assert fs.missing == ('CAM_BACK_LEFT',)
        assert [f.name for f in fs.frames if f.image is None] == ['CAM_BACK_LEFT']
        assert node.snapshot().pipeline_errors == {'ImageError': 1}
    finally:
        close(node)


def test_cameras_without_calibration_are_blanked(ctx, rig) -> None:
    """Zero K → CalibrationError kept as the reason; the camera is blanked, the others run."""
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none')
    try:
        for i, cam in enumerate(NUSCENES_CAMERAS):
            if cam != 'CAM_BACK':
                node._on_camera_info(cam, cv.camera_info_msg(rig.camera(cam).K, HW, 0, f'{cam}_optical'))
        node._on_camera_info('CAM_BACK', cv.camera_info_msg(np.zeros((3, 3)), HW, 0, 'x'))   # zero K
        feed_set(node, rig, 7 * MS, infos=False)
        assert wait(lambda: node.outputs == 1)
        assert pipe.calls[0].missing == ('CAM_BACK',)
        snap = node.snapshot()
        assert 'all zeros' in snap.missing_calibration['CAM_BACK']
        assert snap.cameras['CAM_BACK'].bad == 1
        # a set where no camera has CameraInfo is skipped (counted), not sent to the pipeline
        node._calib.intrinsics.clear()
        feed_set(node, rig, 8 * MS, infos=False)
        assert wait(lambda: node.snapshot().pipeline_errors.get('no_usable_camera') == 1)
        assert len(pipe.calls) == 1
    finally:
        close(node)


def test_a_busy_worker_drops_sets_instead_of_queueing(ctx, rig) -> None:
    """Throughput-first (max_set_wait_ms -1): the newest waiting set is always processed."""
    pipe = FakePipeline(rig, delay_s=0.25)
    node = make_node(ctx, pipe, odom_source='none', max_set_wait_ms=-1.0)
    try:
        for k in range(20):
            feed_set(node, rig, (k + 1) * 100 * MS)
            assert node.slot.waiting <= 1
        # every set was either processed (and published) or dropped
        assert wait(lambda: node.slot.puts - node.slot.dropped == len(pipe.calls) == node.outputs, 5.0)
        processed = len(pipe.calls)
        assert node.slot.puts == 20 and node.slot.dropped == 20 - processed
        assert processed <= 3                               # first set + whatever was waiting
        assert pipe.calls[-1].stamp_ns == 2_000 * MS        # the newest set always wins
        assert node.snapshot().dropped_sets == node.slot.dropped
    finally:
        close(node)


def test_latency_first_worker_starts_sets_fresh_and_never_loses_the_last_one(ctx, rig) -> None:
    """Default policy at 10 Hz input and 150 ms processing: every set the worker starts had waited
    at most max_set_wait_ms, except sets taken late because nothing newer came (the stream's last
    set) — and every set is accounted for exactly once."""
    pipe = FakePipeline(rig, delay_s=0.15)
    node = make_node(ctx, pipe, odom_source='none', max_set_wait_ms=20.0)
    waits: list[float] = []
    process = node.process

    def spy(s, complete_ns=None, queue_ms=None):
        waits.append(queue_ms)
        return process(s, complete_ns=complete_ns, queue_ms=queue_ms)
    node.process = spy                                     # type: ignore[method-assign]
    try:
        t0 = time.monotonic()
        n = 12
        for k in range(n):
            time.sleep(max(0.0, t0 + 0.1 * k - time.monotonic()))
            feed_set(node, rig, (k + 1) * 100 * MS)
        assert wait(lambda: node.outputs + node.slot.dropped + node.slot.stale == n, 5.0)
        snap = node.snapshot()
        assert snap.sets_received == n == snap.outputs + snap.dropped_sets_busy + snap.dropped_sets_stale
        assert snap.dropped_sets_stale >= 2                # the worker is slower than the input
        assert pipe.calls[-1].stamp_ns == n * 100 * MS     # the last set is processed
        assert sum(w > 20.0 for w in waits) == node.slot.late >= 1
        assert [f.stamp_ns for f in pipe.calls] == sorted(f.stamp_ns for f in pipe.calls)
        assert snap.stage_p50_ms['queue_wait'] <= 20.0
    finally:
        close(node)


def test_per_camera_arrival_lag_is_measured_and_reported(ctx, rig) -> None:
    """ROS now − stamp when each image reaches its callback: a set stamped 300 ms in the past
    shows ≈ 300 ms for every camera, in the snapshot and in the camera diagnostics."""
    from occ_ros.ros.diagnostics import diagnostic_entries
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none')
    try:
        stamp = node.get_clock().now().nanoseconds - 300 * MS
        feed_set(node, rig, stamp)
        assert wait(lambda: node.outputs == 1)
        lag = node.snapshot().arrival_lag_ms
        assert set(lag) == set(NUSCENES_CAMERAS)
        for p50, mx in lag.values():
            assert 300.0 <= p50 <= 1000.0 and mx >= p50
        entries = {name: values for _, name, _, values in diagnostic_entries(node.snapshot())}
        assert 300.0 <= float(entries['camera CAM_BACK']['arrival_lag_p50_ms']) <= 1000.0
    finally:
        close(node)


@pytest.mark.parametrize('error, kind', [(ImageError('bad pixels'), 'ImageError'),
                                         (RuntimeError('backend exploded'), 'internal')])
def test_pipeline_errors_are_contained(ctx, rig, error: BaseException, kind: str) -> None:
    pipe = FakePipeline(rig, fail_with=error)
    node = make_node(ctx, pipe, odom_source='none')
    try:
        feed_set(node, rig, 100 * MS)
        assert wait(lambda: node.snapshot().pipeline_errors.get(kind) == 1)
        pipe.fail_with = None
        feed_set(node, rig, 200 * MS)                        # the worker is still alive
        assert wait(lambda: node.outputs == 1)
    finally:
        close(node)


def test_odometry_is_interpolated_at_the_set_stamp(ctx, rig) -> None:
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='odometry')
    try:
        for k in range(5):
            T = np.eye(4)
            T[0, 3] = k * 1.0
            node._on_odom(cv.odometry_msg(T, k * 100 * MS))
        feed_set(node, rig, 250 * MS)
        assert wait(lambda: node.outputs == 1)
        assert pipe.calls[0].ego_pose.matrix[0, 3] == pytest.approx(2.5)
    finally:
        close(node)


def test_missing_odometry_reaches_the_pipeline_as_no_pose(ctx, rig) -> None:
    """The node passes the pose it has (None without odometry); the pipeline owns the temporal
    policy (test_pipeline.py) and the node counts the resets the pipeline reports."""
    pipe = FakePipeline(rig, temporal=True)
    node = make_node(ctx, pipe, odom_source='odometry')
    try:
        feed_set(node, rig, 100 * MS)                        # no odometry at all
        assert wait(lambda: node.outputs == 1)
        assert pipe.calls[0].ego_pose is None
        node._on_odom(cv.odometry_msg(np.eye(4), 200 * MS))
        feed_set(node, rig, 200 * MS)                        # odometry is back: the real pose
        assert wait(lambda: node.outputs == 2)
        assert pipe.calls[1].ego_pose is not None
        np.testing.assert_allclose(pipe.calls[1].ego_pose.matrix, np.eye(4))
        snap = node.snapshot()
        assert snap.temporal_resets == {'missing_pose': 1}
        assert snap.odom_misses == 1
    finally:
        close(node)


def test_diagnostics_snapshot(ctx, rig) -> None:
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none', processing_budget_ms=1000.0)
    try:
        feed_set(node, rig, 100 * MS)
        assert wait(lambda: node.outputs == 1)
        from occ_ros.ros.diagnostics import diagnostic_entries
        entries = {name: (lvl, msg) for lvl, name, msg, _ in diagnostic_entries(node.snapshot())}
        assert entries['backend'][0] == 0 and entries['processing'][0] == 0
        assert {f'camera {c}' for c in NUSCENES_CAMERAS} <= set(entries)
        assert entries['synchronizer'][0] == 0
    finally:
        close(node)


def test_camera_names_must_match_the_model(ctx, rig) -> None:
    from occ_ros.core.errors import ConfigError
    pipe = FakePipeline(rig)
    node = OccupancyNode(pipeline_factory=lambda p, r, progress: pipe, context=ctx,
                         parameter_overrides=[Parameter('camera_names', value=['A', 'B'])])
    try:
        with pytest.raises(ConfigError, match='camera_names'):
            node.load()
    finally:
        node.destroy_node()


def test_sets_are_built_from_real_synced_sets(ctx, rig) -> None:
    """`process` is what the worker calls: it can be driven directly with a SyncedSet."""
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none')
    try:
        for cam in NUSCENES_CAMERAS:
            node._on_camera_info(cam, cv.camera_info_msg(rig.camera(cam).K, HW, 0, 'f'))
        items = {cam: cv.rgb_to_image_msg(rgb(i), 9, 'f') for i, cam in enumerate(NUSCENES_CAMERAS[:4])}
        s = SyncedSet(stamp_ns=9, items=items, stamps_ns={c: 9 for c in items},
                      missing=tuple(NUSCENES_CAMERAS[4:]), generation=0)
        result = node.process(s)
        assert result is not None and pipe.calls[-1].missing == tuple(NUSCENES_CAMERAS[4:])
        assert list(node._out.panoptic.msgs[-1].missing_cameras) == list(NUSCENES_CAMERAS[4:])
    finally:
        close(node)


def test_official_compat_parameter_reaches_the_post_processing(ctx, rig) -> None:
    """`official_compat:=true` builds the real pipeline with the official tables (a node that
    ignored the parameter would leave PostprocessConfig.official_compat False); the backend is
    built with the node's ONNX Runtime thread-spinning choice."""
    from occ_ros.ros.bringup import default_pipeline_factory
    seen: list[Any] = []
    node = OccupancyNode(pipeline_factory=lambda p, r, progress: seen.append(p) or FakePipeline(r), context=ctx,
                         parameter_overrides=[Parameter('official_compat', value=True)])
    try:
        node.load()
        assert seen[0].official_compat is True
        real = default_pipeline_factory(seen[0], rig, lambda line: None)
        try:
            assert real.postprocessor.cfg.official_compat is True
            # the node's default: idle threads sleep (core.config.DEFAULT_ORT_SPINNING; README, Benchmarks)
            assert seen[0].ort_thread_spinning is False
            if real.backend.kind == 'onnxruntime':
                opts = real.backend._session.get_session_options()       # type: ignore[attr-defined]
                assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '0'
        finally:
            real.close()
    finally:
        node.destroy_node()


def test_an_oversized_message_is_dropped_at_the_callback_and_counted(ctx, rig) -> None:
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none', max_image_bytes=1 << 20, camera_timeout_s=8.0)
    try:
        big = cv.rgb_to_image_msg(np.zeros((700, 800, 3), np.uint8), 1_000 * MS, 'CAM_FRONT')   # 1.6 MiB
        node._on_image('CAM_FRONT', big)
        snap = node.snapshot()
        assert snap.pipeline_errors.get('oversized_message') == 1
        assert 'max_image_bytes' in snap.cameras['CAM_FRONT'].last_bad
        # its data is never queued: a placeholder holding the reason stands in for it, so the set
        # of its stamp completes at once without the camera (no wait for camera_timeout_s)
        feed_set(node, rig, 1_000 * MS, skip=('CAM_FRONT',))
        assert wait(lambda: node.outputs == 1, timeout=4.0), 'the set waited for the refused camera'
        assert pipe.calls[0].missing == ('CAM_FRONT',)
    finally:
        close(node)


def test_an_incompatible_qos_publisher_is_named_in_diagnostics(ctx, rig) -> None:
    """input_qos:=reliable and a best-effort camera driver (what REP-2003 asks drivers to do):
    nothing can be received, and /diagnostics says why instead of 'waiting'."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from occ_ros.ros.diagnostics import ERROR, diagnostic_entries
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none', input_qos='reliable')
    other = rclpy.create_node('best_effort_driver', context=ctx)
    other.create_publisher(Image, '/CAM_BACK/image_raw', QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(other)
    try:
        assert wait(lambda: (ex.spin_once(timeout_sec=0.05), 'CAM_BACK' in node._stats.qos_incompatible)[1], 10.0)
        entries = {name: (lvl, msg) for lvl, name, msg, _ in diagnostic_entries(node.snapshot())}
        lvl, msg = entries['camera CAM_BACK']
        assert lvl == ERROR and 'incompatible QoS' in msg and 'RELIABILITY' in msg.upper()
    finally:
        ex.shutdown()
        other.destroy_node()
        close(node)


def test_a_refused_camera_info_keeps_the_last_good_one_and_says_so(ctx, rig) -> None:
    """After a good CameraInfo, a bad one (zero K) is refused: the camera keeps running on its last
    good calibration, and /diagnostics says exactly that (WARN), not 'blanked' (ERROR)."""
    from occ_ros.ros.diagnostics import WARN, diagnostic_entries
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none')
    try:
        feed_set(node, rig, 5 * MS)
        assert wait(lambda: node.outputs == 1)
        node._on_camera_info('CAM_BACK', cv.camera_info_msg(np.zeros((3, 3)), HW, 0, 'x'))   # refused
        feed_set(node, rig, 6 * MS, infos=False)
        assert wait(lambda: node.outputs == 2)
        assert pipe.calls[1].missing == ()                                  # still used
        snap = node.snapshot()
        assert 'CAM_BACK' not in snap.missing_calibration and 'all zeros' in snap.stale_calibration['CAM_BACK']
        entries = {name: (lvl, msg) for lvl, name, msg, _ in diagnostic_entries(snap)}
        lvl, msg = entries['camera CAM_BACK']
        assert lvl == WARN and 'last good calibration' in msg
    finally:
        close(node)


def test_random_weights_are_announced_by_the_ros_logger(ctx, rig, capfd) -> None:
    """A model without shipped weights: the warning reaches the node's ROS logger (the console and
    /rosout), not only Python logging."""
    from occ_ros.ros.bringup import default_pipeline_factory
    node = OccupancyNode(pipeline_factory=lambda p, r, progress: FakePipeline(r), context=ctx)
    try:
        pipe = default_pipeline_factory(node.params.__class__.from_mapping({'model': 'm0', 'backend': 'torch'}),
                                        rig, node._progress)
        pipe.close()
        err = capfd.readouterr().err
        assert 'WARN' in err and 'RANDOM weights' in err, err[-2000:]
    finally:
        node.destroy_node()


def feed_staggered(node: OccupancyNode, rig: Any, stamp: int, offsets_ms: dict) -> None:
    for i, cam in enumerate(NUSCENES_CAMERAS):
        st = stamp + offsets_ms[cam] * MS
        node._on_camera_info(cam, cv.camera_info_msg(rig.camera(cam).K, HW, st, f'{cam}_optical'))
        node._on_image(cam, cv.rgb_to_image_msg(rgb(i), st, f'{cam}_optical', 'rgb8'))


@pytest.mark.parametrize('compensate', [True, False])
def test_each_camera_reaches_the_pipeline_with_its_capture_time_pose(ctx, rig, compensate) -> None:
    """Cameras fired over 40 ms, odometry at 50 Hz driving 10 m/s along x; CAM_BACK's driver stamps
    10 ms late (camera_stamp_offsets_s). Each frame carries the ego pose at its capture time, the set
    the one at view 0's; a camera past the odometry (and its 50 ms extrapolation) takes the set pose
    and is counted. ego_motion_compensation false: only the set pose."""
    offsets = {'CAM_FRONT_LEFT': 0, 'CAM_FRONT': 8, 'CAM_FRONT_RIGHT': 16, 'CAM_BACK_LEFT': 40,
               'CAM_BACK': 33 + 10, 'CAM_BACK_RIGHT': 25}
    late = [0.0, 0.0, 0.0, 0.0, 0.01, 0.0]                  # camera_names order = NUSCENES_CAMERAS
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='odometry', camera_stamp_offsets_s=late,
                     ego_motion_compensation=compensate)
    try:
        for k in range(0, 16):                                # 0 … 300 ms
            T = np.eye(4)
            T[0, 3] = 10.0 * k * 0.02
            node._on_odom(cv.odometry_msg(T, k * 20 * MS))
        feed_staggered(node, rig, 100 * MS, offsets)
        assert wait(lambda: node.outputs == 1)
        fs = pipe.calls[0]
        assert fs.ego_pose is not None and fs.ego_pose.matrix[0, 3] == pytest.approx(1.0)
        for f in fs.frames:
            if not compensate:
                assert f.ego_pose is None
                continue
            capture = 100 + offsets[f.name] - (10 if f.name == 'CAM_BACK' else 0)
            assert f.ego_pose is not None and f.ego_pose.stamp_ns == capture * MS
            assert f.ego_pose.matrix[0, 3] == pytest.approx(10.0 * capture / 1000)
        # a set past the odometry: capture times up to 300 + 50 ms are extrapolated (view 0 included),
        # later ones fall back to the set pose
        feed_staggered(node, rig, 330 * MS, offsets)
        assert wait(lambda: node.outputs == 2)
        fs = pipe.calls[1]
        assert fs.ego_pose is not None and fs.ego_pose.matrix[0, 3] == pytest.approx(3.3)
        own = {f.name for f in fs.frames if f.ego_pose is not None}
        snap = node.snapshot()
        if compensate:
            assert own == {'CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT'}
            assert snap.camera_pose_fallbacks == 3          # CAM_BACK_RIGHT 355, CAM_BACK 363, CAM_BACK_LEFT 370 ms
        else:
            assert own == set() and snap.camera_pose_fallbacks == 0
    finally:
        close(node)


@pytest.mark.parametrize('mode', ['raw', 'none'])
def test_distorted_cameras_are_rectified_by_the_rectification_parameter(ctx, rig, mode: str) -> None:
    """A plumb_bob CameraInfo on CAM_FRONT: with rectification:=raw (the default) the frame that
    reaches the pipeline is OpenCV's own undistortion of the image to P (cv2.initUndistortRectifyMap
    + cv2.remap, the reference) and carries K = P; with rectification:=none it is the image as sent
    with K. An unsupported distortion model is refused by name (the camera keeps its last good
    calibration, as for any bad CameraInfo)."""
    import cv2
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none', rectification=mode, camera_timeout_s=30.0)
    D = [-0.3, 0.09, 1e-3, -1e-3, 0.0]
    K = rig.camera('CAM_FRONT').K
    P = K * [[0.9], [0.9], [1.0]]
    try:
        feed_set(node, rig, 1_000 * MS)
        assert wait(lambda: node.outputs == 1)
        node._on_camera_info('CAM_FRONT', cv.camera_info_msg(K, HW, 0, 'CAM_FRONT_optical', D=D, P=P))
        node._on_camera_info('CAM_BACK', cv.camera_info_msg(rig.camera('CAM_BACK').K, HW, 0, 'x', D=[0.1] * 4,
                                                            distortion_model='fisheye'))
        feed_set(node, rig, 1_100 * MS, infos=False)
        assert wait(lambda: node.outputs == 2)
        fs = pipe.calls[1]
        front = fs.frames[NUSCENES_CAMERAS.index('CAM_FRONT')]
        img = rgb(NUSCENES_CAMERAS.index('CAM_FRONT'))
        if mode == 'raw':
            m1, m2 = cv2.initUndistortRectifyMap(K, np.asarray(D), np.eye(3), P, (HW[1], HW[0]), cv2.CV_16SC2)
            np.testing.assert_array_equal(front.image, cv2.remap(img, m1, m2, cv2.INTER_LINEAR))
            np.testing.assert_allclose(front.K, P)
        else:
            np.testing.assert_array_equal(front.image, img)
            np.testing.assert_allclose(front.K, K)
        assert fs.missing == ()
        assert "'fisheye' is not supported" in node._calib.problem['CAM_BACK']
    finally:
        close(node)


def test_a_rig_unlike_the_checkpoints_is_warned_once_per_calibration_change(ctx, rig, capfd) -> None:
    """The node states the rig's differences from the training rig (geometry.rig_check) once at
    start-up and once per calibration change, here a CameraInfo with a wide-angle K."""
    pipe = FakePipeline(rig)
    node = make_node(ctx, pipe, odom_source='none', diagnostics_period_s=100.0)
    try:
        feed_set(node, rig, 5 * MS)
        node._on_diagnostics_timer()
        assert 'differs from the nuScenes rig' not in capfd.readouterr().err     # nuScenes lenses: quiet
        K = np.array([[20.0, 0.0, 40.0], [0.0, 20.0, 22.5], [0.0, 0.0, 1.0]])    # 127° on 80 px
        for _ in range(3):
            node._on_camera_info('CAM_FRONT', cv.camera_info_msg(K, HW, 0, 'CAM_FRONT_optical'))
            node._on_diagnostics_timer()
        err = capfd.readouterr().err
        assert err.count('differs from the nuScenes rig') == 1, err[-2000:]
        assert 'CAM_FRONT: horizontal field of view 126.9°, the checkpoint\'s 64.6°' in err
        node._on_camera_info('CAM_FRONT', cv.camera_info_msg(rig.camera('CAM_FRONT').K, HW, 0, 'x'))
        node._on_diagnostics_timer()
        assert 'now agrees' in capfd.readouterr().err
    finally:
        close(node)


def test_model_frame_offset_and_odom_outputs(ctx, rig) -> None:
    """REP-105 frames: the rig file is relative to base_link, base_link sits 0.3 m above
    base_footprint (model_frame_offset): the network gets the cameras 0.3 m higher and the ego
    pose of base_footprint; with output_frame odom the cloud and the grid go out in odom,
    transformed with the pose at the set's stamp (checked against plain trigonometry)."""
    import math
    made: list = []
    overrides = [Parameter('odom_source', value='odometry'), Parameter('output_frame', value='odom'),
                 Parameter('model_frame_offset', value=[0.0, 0.0, -0.3, 0.0])]
    node = OccupancyNode(pipeline_factory=lambda p, r, progress: made.append(FakePipeline(r)) or made[-1],
                         context=ctx, parameter_overrides=overrides)
    node.load()
    node.start()
    for name in ('voxels', 'instances', 'cloud', 'grid_pub', 'panoptic'):
        setattr(node._out, name, Recorder())
    try:
        pipe = made[0]
        for cam in pipe.rig:                                     # cameras 0.3 m higher over the ground
            base = node.rig_base.camera(cam.name).sensor2ego
            assert cam.sensor2ego[2, 3] == pytest.approx(base[2, 3] + 0.3)
            np.testing.assert_allclose(cam.sensor2ego[:3, :3], base[:3, :3])
        yaw, tx, ty = 0.7, 12.0, -3.0
        c, s = math.cos(yaw), math.sin(yaw)
        T = np.array([[c, -s, 0, tx], [s, c, 0, ty], [0, 0, 1, 0.3], [0, 0, 0, 1.0]])   # base_link in odom
        node._on_odom(cv.odometry_msg(T, 500 * MS))
        feed_set(node, rig, 500 * MS)
        assert wait(lambda: node.outputs == 1)
        np.testing.assert_allclose(pipe.calls[0].ego_pose.matrix[:3, 3], (tx, ty, 0.0), atol=1e-9)   # footprint
        cloud = node._out.cloud.msgs[0]
        assert cloud.header.frame_id == 'odom'
        pts = np.frombuffer(bytes(cloud.data), dtype=np.dtype({'names': ['x', 'y', 'z'], 'formats': ['<f4'] * 3,
                                                                'offsets': [0, 4, 8], 'itemsize': cloud.point_step}))
        # FakePipeline's car: voxels x 100..103, y 100..101, z 3 of the 0.4 m grid (lower -40, -40, -1)
        cx = -40 + (np.arange(100, 104) + 0.5) * 0.4
        cy = -40 + (np.arange(100, 102) + 0.5) * 0.4
        expect = sorted((round(c * x - s * y + tx, 3), round(s * x + c * y + ty, 3), round(-1 + 3.5 * 0.4, 3))
                        for x in cx for y in cy)
        got = sorted((round(float(p['x']), 3), round(float(p['y']), 3), round(float(p['z']), 3)) for p in pts)
        assert got == expect
        grid = node._out.grid_pub.msgs[0]
        assert grid.header.frame_id == 'odom'
        o = grid.info.origin
        assert (o.position.x, o.position.y) == pytest.approx((c * -40 - s * -40 + tx, s * -40 + c * -40 + ty))
        assert (o.orientation.z, o.orientation.w) == pytest.approx((math.sin(yaw / 2), math.cos(yaw / 2)))
        assert node._out.panoptic.msgs[0].header.frame_id == 'base_footprint'    # always the model frame
        # no pose at the next set: only ~/panoptic, counted
        feed_set(node, rig, 900 * MS)
        assert wait(lambda: node.outputs == 2)
        assert len(node._out.cloud.msgs) == 1 and len(node._out.panoptic.msgs) == 2
        assert node.snapshot().pipeline_errors.get('no_pose_for_output') == 1
    finally:
        close(node)


def test_failure_exit_code_is_0_once_a_signal_shut_the_context_down() -> None:
    """A Ctrl-C between rclpy.init and the end of start-up shuts the context down, and the next
    rclpy call fails with RCLError 'the given context is not valid' (seen under the real `ros2
    launch`: exit 1, '[FATAL] unexpected RCLError'). That failure is the shutdown: exit 0, nothing
    logged. With the context alive the codes are the documented ones (launch_contract)."""
    from occ_ros.core.errors import BackendError, CheckpointError, ConfigError
    from occ_ros.ros.launch_contract import EXIT_BACKEND, EXIT_CONFIG, EXIT_OTHER
    from occ_ros.ros.main import failure_exit_code

    class Log:
        def __init__(self) -> None:
            self.fatal_lines: list[str] = []

        def fatal(self, text: str) -> None:
            self.fatal_lines.append(text)

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        for exc, code in ((ConfigError('x'), EXIT_CONFIG), (CheckpointError('x'), EXIT_BACKEND),
                          (BackendError('x'), EXIT_BACKEND), (RuntimeError('x'), EXIT_OTHER)):
            log = Log()
            assert failure_exit_code(exc, log, context=ctx) == code
            assert len(log.fatal_lines) == 1
    finally:
        rclpy.shutdown(context=ctx)                 # what rclpy's SIGINT handler does
    with pytest.raises(Exception) as raised:        # the real failure a late node creation meets
        rclpy.create_node('after_shutdown', context=ctx)
    log = Log()
    assert failure_exit_code(raised.value, log, context=ctx) == 0
    assert log.fatal_lines == []


_SIGINT_INSIDE_THE_BINDING = r"""
import os, signal, sys, time
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
import rclpy
from rclpy.signals import SignalHandlerOptions
from occ_ros.ros import main as m
if sys.argv[1] == 'record':
    m.record_signals()
rclpy.init(signal_handler_options=SignalHandlerOptions.ALL if sys.argv[2] == 'rclpy' else SignalHandlerOptions.NO)

class Executor:
    # spin_once as rclpy's EventsExecutor behaves when the Ctrl-C lands while pybind11 converts a
    # callback's argument: the KeyboardInterrupt comes out as this RuntimeError
    def spin_once(self, timeout_sec):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):                    # the Python handler runs within a moment
                time.sleep(0.001)
        except KeyboardInterrupt:
            raise RuntimeError("Unable to convert call argument '0' to Python object") from None
        raise SystemExit('no KeyboardInterrupt')

try:
    m.spin_until_shutdown(Executor(), None)
except RuntimeError as exc:
    print('raised', m.failure_exit_code(exc, rclpy.logging.get_logger('t')), m.SIGNALLED.is_set())
else:
    print('spin ended', m.failure_exit_code(RuntimeError('late'), rclpy.logging.get_logger('t')), m.SIGNALLED.is_set())
"""


def test_a_ctrl_c_that_lands_inside_the_executor_binding_is_the_shutdown() -> None:
    """CI saw `occupancy_node` exit 1 on the double SIGINT of `ros2 launch`: '[FATAL] unexpected
    RuntimeError: Unable to convert call argument '0' to Python object' from
    `EventsExecutor.spin_once`. The Ctrl-C's KeyboardInterrupt had landed while pybind11 converted
    a callback's argument (pybind11 reports any failure there as that RuntimeError), and rclpy's
    signal handler shuts the context down only a moment later, on its own thread. The race cannot
    be forced with the real executor, so a stand-in executor raises what pybind11 raises after a
    real SIGINT. With rclpy's real handler installed, it chains to the handler `record_signals`
    installs before `rclpy.init`: the signal is recorded. Without rclpy's handler (so that the
    context stays valid, as it does for that moment), the record alone ends the spin with exit 0,
    and without the record (the old code) the error escapes as exit 1."""
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1]), 'ROS_DOMAIN_ID': '97'}
    outs = {}
    for mode, handlers in (('record', 'rclpy'), ('record', 'none'), ('plain', 'none')):
        proc = subprocess.run([sys.executable, '-c', _SIGINT_INSIDE_THE_BINDING, mode, handlers], env=env,
                              capture_output=True, text=True, timeout=60)
        outs[mode, handlers] = (proc.stdout.strip().splitlines() or [''])[-1:] + [proc.stderr[-500:]]
    assert outs['record', 'rclpy'][0] == 'spin ended 0 True', outs['record', 'rclpy']
    assert outs['record', 'none'][0] == 'spin ended 0 True', outs['record', 'none']
    assert outs['plain', 'none'][0] == 'raised 1 False', outs['plain', 'none']


# ------------------------------------------------------------------ JPEG bytes to a device-side preprocessor
def _serialized_jpeg(img: np.ndarray, stamp: int, frame_id: str, fmt: str = 'jpeg') -> bytes:
    from rclpy.serialization import serialize_message
    return serialize_message(cv.rgb_to_compressed_msg(img, stamp, frame_id, fmt))


def test_jpeg_bytes_reach_a_device_decoding_pipeline_undecoded_and_bounded(ctx, rig) -> None:
    """image_transport compressed + a pipeline whose preprocessing decodes on its device
    (`jpeg_input`, a CUDA backend): each JPEG reaches it as a `JpegImage` whose bytes are a view
    of the received CDR message (no copy, no decode on the CPU), with the size its header gives.
    The CPU path's bounds still hold per camera: a JPEG whose size is not its CameraInfo's, or
    whose full-size decode exceeds max_image_pixels, blanks that camera with a named, counted
    ImageError; a PNG (not nvJPEG's) is decoded on the CPU as before."""
    from occ_ros.core.frames import JpegImage
    pipe = FakePipeline(rig)
    pipe.takes_jpeg = True
    node = make_node(ctx, pipe, odom_source='none', image_transport='compressed', max_image_pixels=10_000)
    big_hw = (90, 160)                                    # 14 400 px > max_image_pixels, right CameraInfo
    try:
        raws = {}
        for i, cam in enumerate(NUSCENES_CAMERAS):
            hw = big_hw if cam == 'CAM_BACK' else HW
            node._on_camera_info(cam, cv.camera_info_msg(rig.camera(cam).K, hw, 1_000 * MS, f'{cam}_optical'))
            img = np.ascontiguousarray(np.broadcast_to(rgb(i)[:1, :1], hw + (3,))) if cam == 'CAM_BACK' else rgb(i)
            if cam == 'CAM_FRONT_LEFT':
                img = np.zeros((HW[0] * 2, HW[1] * 2, 3), np.uint8)     # not the CameraInfo's size
            fmt = 'png' if cam == 'CAM_BACK_RIGHT' else 'jpeg'
            raws[cam] = _serialized_jpeg(img, 1_000 * MS, f'{cam}_optical', fmt)
            node._on_image(cam, raws[cam])
        assert wait(lambda: node.outputs == 1)
        fs = pipe.calls[0]
        assert set(fs.missing) == {'CAM_FRONT_LEFT', 'CAM_BACK'}
        by = {f.name: f for f in fs.frames}
        for cam in ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT'):
            im = by[cam].image
            assert isinstance(im, JpegImage) and im.hw == HW and by[cam].image_hw == HW
            assert np.shares_memory(im.data, np.frombuffer(raws[cam], np.uint8))        # read in place
            assert im.data[:3].tobytes() == b'\xff\xd8\xff' and by[cam].calib_hw is None
        np.testing.assert_array_equal(by['CAM_BACK_RIGHT'].image, rgb(NUSCENES_CAMERAS.index('CAM_BACK_RIGHT')))
        snap = node.snapshot()
        assert snap.pipeline_errors == {'ImageError': 2}
        assert snap.cameras['CAM_FRONT_LEFT'].bad == 1 and snap.cameras['CAM_BACK'].bad == 1
        assert 'max_image_pixels' in snap.cameras['CAM_BACK'].last_bad
        assert 'CameraInfo says' in snap.cameras['CAM_FRONT_LEFT'].last_bad
    finally:
        close(node)


def _jpeg_set_through_node(ctx, pipe: Any, rig: Any, hw: tuple[int, int]) -> tuple[Any, Any, Any]:
    """Six smooth random JPEGs of size `hw` as serialized CDR into a node holding the real pipeline
    `pipe`: (the FrameSet the pipeline got, its result, and the pipeline's result for the same set
    with each JPEG decoded by OpenCV's cv2.imdecode — the reference decoder)."""
    import cv2
    import dataclasses
    from occ_ros.core.frames import FrameSet
    results: list = []
    real_run = pipe.run

    def run(fs):
        results.append((fs, real_run(fs)))
        return results[-1][1]
    pipe.run = run
    node = make_node(ctx, pipe, odom_source='none', image_transport='compressed')
    rng = np.random.default_rng(5)
    try:
        for cam in NUSCENES_CAMERAS:
            img = cv2.resize(rng.integers(0, 256, (18, 32, 3), dtype=np.uint8), (hw[1], hw[0]),
                             interpolation=cv2.INTER_CUBIC)
            node._on_camera_info(cam, cv.camera_info_msg(rig.camera(cam).K, hw, 1_000 * MS, f'{cam}_optical'))
            node._on_image(cam, _serialized_jpeg(img, 1_000 * MS, f'{cam}_optical'))
        assert wait(lambda: node.outputs == 1, 60.0)
        fs, got = results[0]
        decoded = tuple(dataclasses.replace(f, image=cv2.cvtColor(cv2.imdecode(f.image.data, cv2.IMREAD_COLOR),
                                                                   cv2.COLOR_BGR2RGB)) for f in fs.frames)
        ref = real_run(FrameSet(fs.stamp_ns, decoded, fs.ego_pose, fs.missing))
    finally:
        close(node)                                  # closes the pipeline too
    return fs, got, ref


def test_jpeg_through_the_node_gives_what_the_decoded_images_give(ctx) -> None:
    """The real pipeline behind the node glue, JPEG bytes handed through undecoded and decoded by the
    device preprocessor (OpenCV here, nvJPEG on a GPU): the node's occupancy equals the pipeline's
    own on the same frame set with each JPEG decoded by OpenCV's cv2.imdecode (the reference
    decoder) — so nothing is lost or reordered between the CDR bytes and the network. A damaged
    JPEG is refused with libjpeg's own words (caught from descriptor 2), not fed to the network."""
    from occ_ros.core.frames import JpegImage
    from occ_ros.pipeline import OccupancyPipeline
    from occ_ros.preprocess import DeviceImagePreprocessor
    hw = (450, 800)
    big = nuscenes_rig(hw)
    pipe = OccupancyPipeline.from_params('lite', rig=big, backend='torch', threads=2)
    assert not pipe.jpeg_input                            # CPU backend: Pillow, JPEG decoded by the node
    # the device-side transform a CUDA backend runs, here on device 'cpu': without a device decoder
    # it does not ask for JPEG bytes (the node's reduced CPU decode is cheaper) unless told to
    pipe.preprocessor = DeviceImagePreprocessor(pipe.model_cfg.image, 'cpu', uint8_resize=False)
    assert not pipe.jpeg_input
    pipe.preprocessor = DeviceImagePreprocessor(pipe.model_cfg.image, 'cpu', uint8_resize=False, take_jpeg=True)
    assert pipe.jpeg_input
    fs, got, ref = _jpeg_set_through_node(ctx, pipe, big, hw)
    assert fs.missing == () and all(isinstance(f.image, JpegImage) for f in fs.frames)
    np.testing.assert_array_equal(got.occupancy.semantics, ref.occupancy.semantics)
    np.testing.assert_array_equal(got.occupancy.instances, ref.occupancy.instances)
    # a damaged JPEG (entropy-coded data overwritten mid-stream, as test_ros_convert's) decodes
    # partly as garbage: refused with libjpeg's words; a truncated one does not decode
    jpeg = bytearray(fs.frames[0].image.data.tobytes())
    mid = len(jpeg) // 2
    jpeg[mid:mid + 40] = b'\xff\x00' * 20
    jpeg[mid + 48:mid + 50] = b'\xff\xd0'
    dev = DeviceImagePreprocessor(pipe.model_cfg.image, 'cpu')
    with pytest.raises(ImageError, match='damaged jpeg image, not used: Corrupt JPEG data'):
        dev.batch([JpegImage(np.frombuffer(bytes(jpeg), np.uint8), hw)])
    with pytest.raises(ImageError, match='view 0: .*JPEG'):
        dev.batch([JpegImage(np.frombuffer(bytes(jpeg[:200]), np.uint8), hw)])


@pytest.mark.skipif(not __import__('torch').cuda.is_available(),
                    reason='no CUDA device: the nvJPEG half of JPEG-through-the-node runs where a GPU is')
def test_jpeg_through_the_node_on_cuda_decodes_with_nvjpeg(ctx) -> None:                   # pragma: no cover
    """On a GPU: the node hands the JPEG bytes to the CUDA pipeline, nvJPEG (torchvision) decodes them
    on the device, and the labels agree with the same CUDA transform of the OpenCV-decoded images
    (≥ 99.5 % of voxels; nvJPEG's IDCT may differ from libjpeg-turbo's by a grey level)."""
    from occ_ros.pipeline import OccupancyPipeline
    from occ_ros.preprocess import DeviceImagePreprocessor
    hw = (900, 1600)
    big = nuscenes_rig(hw)
    pipe = OccupancyPipeline.from_params('lite', rig=big, backend='torch', device='cuda')
    if not isinstance(pipe.preprocessor, DeviceImagePreprocessor) or not pipe.preprocessor.decodes_on_device:
        pipe.close()
        pytest.skip('torchvision.io.decode_jpeg does not load for this torch build: the CUDA pipeline '
                    'decodes JPEG with OpenCV and uploads (covered on CPU above)')
    _, got, ref = _jpeg_set_through_node(ctx, pipe, big, hw)
    agree = float(np.mean(got.occupancy.semantics == ref.occupancy.semantics))
    assert agree >= 0.995, agree
