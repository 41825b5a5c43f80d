"""`occupancy_node`: six synchronised cameras in; panoptic voxels, markers, a grid and diagnostics out.

Start-up (in this order, each failure a named error and a non-zero exit):
    1. parameters declared and validated (`params.py`);
    2. the rig loaded (rig file, or the built-in nuScenes rig);
    3. the backend loaded / the TensorRT engine built (progress in the log and in /diagnostics);
       `build_only:=true` exits 0 here;
    4. publishers, then subscriptions, timers and the worker thread.

Data path:
    image callbacks  → CameraSetSynchronizer.add (cheap dict work, no decode); while the worker is
                       free each image is also decoded and preprocessed on the early-view pool
                       (`early.py`, prepare_early), so a complete set waits only for views in progress
    complete set     → LatestSlot.put (a set waiting there is replaced and counted as dropped;
                       one that waited longer than max_set_wait_ms gives way to the next set
                       and is counted as stale, or is processed late if no next set comes)
    worker thread    → decode/convert → ego pose at the set stamp → pipeline.run → publish
Publishing from the worker thread is safe (rclpy publishers are thread-safe). The worker catches
ImageError / CalibrationError (bad input: counted, throttled log, node keeps running) and any
other exception (counted as an internal error with a traceback, node keeps running).

Outputs (set's stamp; `outputs.py`, frames in `frames.py`): ~/voxels, ~/instances, ~/cloud (built
only when subscribed), ~/occupancy_grid, ~/panoptic, /diagnostics, ~/debug/processing_time_ms,
~/debug/pipeline_latency_ms (ROS now − stamp at publish), ~/debug/<stage>_ms. `lifecycle.py`: managed.

The node wires these together; the parts live beside it: `calibration.py` (CameraInfo intrinsics,
camera frame ids, extrinsics and model_frame offset from TF, the pending rig, the rig check),
`decode.py` (the worker's decode step: a set's messages → CameraFrames, unusable cameras blanked),
`early.py` (views prepared as their images arrive) and `node_stats.py` (counters, rolling timings,
the ~/debug timing topics, the snapshot's figures).
"""
from __future__ import annotations

import functools
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, cast

import numpy as np

from occ_ros.core.errors import (CalibrationError, ConfigError, ImageError)
from occ_ros.core.frames import CameraFrame, EgoPose, FrameSet
from occ_ros.core.parallel import available_cores
from occ_ros.core.threads import name_this_thread
from occ_ros.geometry import Rig
from occ_ros.core.cdr import cdr_header
from occ_ros.ros.calibration import CameraCalibration
from occ_ros.ros.convert import Intrinsics, RefusedImage, odometry_to_pose, stamp_to_ns
from occ_ros.ros.decode import decode_set, decode_view
from occ_ros.ros.early import EarlyViews
from occ_ros.ros.ego_poses import CameraPoseResolver, pose_lookups
from occ_ros.ros.frames import ModelFrame, offset_matrix, output_placement, publish_model_frame_tf
from occ_ros.ros.ingest import IngestGate
from occ_ros.ros.diagnostics import NodeSnapshot, diagnostic_array, diagnostic_array_type
from occ_ros.ros.params import NodeParams, declare_parameters, set_parameters_callback
from occ_ros.ros.node_stats import NodeStats
from occ_ros.ros.outputs import OutputPublishers
from occ_ros.ros.bringup import default_pipeline_factory, load_rig
from occ_ros.ros.qos import best_effort as _best_effort, qos_events as _qos_events, reliable as _reliable
from occ_ros.ros.slot import LatestSlot
from occ_ros.ros.sync import CameraSetSynchronizer, SyncConfig, SyncedSet
from occ_ros.ros.tf import PoseBuffer
from occ_ros.ros.tf_lookup import make_tf_lookup

import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

if TYPE_CHECKING:
    from occ_ros.pipeline import FramePipeline, PipelineResult


PipelineFactory = Callable[[NodeParams, Rig, Callable[[str], None]], 'FramePipeline']


class OccupancyNode(Node):
    """The occupancy node. Construct, `load()` the backend, then `start()` (see module doc)."""

    def __init__(self, pipeline_factory: Optional[PipelineFactory] = None, node_name: str = 'occupancy_node',
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self.params = declare_parameters(self)
        p = self.params
        self._factory = pipeline_factory or default_pipeline_factory
        self._log = self.get_logger()
        self._diag_pub = self.create_publisher(diagnostic_array_type(), '/diagnostics', 10)
        self.pipeline: Optional[FramePipeline] = None
        self.model_cfg: Any = None
        self.rig_base: Any = None
        self._snap = NodeSnapshot(node=self.get_fully_qualified_name(), model=p.model, backend=p.backend,
                                  device=p.device, budget_ms=p.processing_budget_ms,
                                  error_factor=p.processing_error_factor, odom_source=p.odom_source,
                                  extrinsics_source=p.extrinsics_source)
        self._lock = threading.Lock()             # guards the calibration and the counters below
        self._calib = CameraCalibration(self._lock, self._log)
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self.slot = LatestSlot(None if p.max_set_wait_ms < 0 else p.max_set_wait_ms / 1e3)
        self._stats = NodeStats(self._lock, self._snap)
        self._ingest: Optional[IngestGate] = None  # ingest_hold: the camera subscriptions' node and thread
        self._early: Optional[EarlyViews] = None   # prepare_early: views prepared as their images arrive
        self.outputs = 0
        self._started = False
        self._out: Optional[OutputPublishers] = None
        self.add_on_set_parameters_callback(set_parameters_callback(lambda: self.params, self._apply_params,
                                                                    self._log))

    # ------------------------------------------------------------------ start-up
    def _progress(self, line: str) -> None:
        if line.startswith('WARNING:'):
            self._log.warning(line[len('WARNING:'):].strip())
        else:
            self._log.info(line)
        if 'building' in line.lower() and self._snap.backend_state == 'loading':
            self._snap.backend_state = 'building_engine'
        self._snap.backend_detail = line
        self._publish_diagnostics()

    def load(self) -> None:
        """Load the rig and the backend (step 2–3 of the module doc). Raises named errors."""
        p = self.params
        self.rig_base = load_rig(p)               # extrinsics relative to frame_id
        self._frame = ModelFrame(self.rig_base, offset_matrix(p.model_frame_offset))
        self._snap.backend_state = 'loading'
        self._publish_diagnostics()
        t0 = time.monotonic()
        try:
            self.pipeline = self._factory(p, self._frame.model_rig, self._progress)
        except Exception:
            self._snap.backend_state = 'failed'
            self._publish_diagnostics()
            raise
        self.model_cfg = self.pipeline.model_cfg
        p.check_grid(self.model_cfg.grid)
        model_cams, node_cams = set(self.model_cfg.cameras), set(p.camera_names)
        if model_cams != node_cams:
            raise ConfigError(f'parameter camera_names {list(p.camera_names)} must name exactly the '
                              f'model\'s cameras {list(self.model_cfg.cameras)}')
        self.camera_poses = CameraPoseResolver(self.model_cfg.cameras, {c: p.stamp_offset_ns(c) for c in
                                                                         p.camera_names}, p.ego_motion_compensation)
        self._snap.backend = self.pipeline.backend_kind
        self._snap.device = str(self.pipeline.device)
        self._snap.temporal_model = self.model_cfg.num_frames > 1
        self._snap.backend_state = 'ready'
        self._snap.backend_detail = f'loaded in {time.monotonic() - t0:.1f} s'
        self._log.info(f'backend ready: model {p.model}, {self._snap.backend} on {self._snap.device} '
                       f'({self._snap.backend_detail})')
        self._calib.check(self.pipeline, self.rig_base)
        self._publish_diagnostics()

    def start(self) -> None:
        """Publishers, subscriptions, timers and the worker (step 4)."""
        if self.pipeline is None:
            raise RuntimeError('OccupancyNode.start() before load()')
        p = self.params
        self._out = OutputPublishers(self, p, self.model_cfg.grid)
        self._stats.create_publishers(self)
        # ingest_hold: images are taken only while the worker is free (ingest.py); the
        # synchroniser's timeouts then run on a clock that stands still while ingest is held
        self._ingest = IngestGate(self, lambda: self.slot.max_wait_s) if p.ingest_hold else None
        # prepare_early: each image decoded and preprocessed as it is taken, while the worker is free
        self._early = EarlyViews(self._prepare_view, lambda cam: self._calib.lookup(cam)[0],
                                 workers=min(2, available_cores())) if p.prepare_early else None

        self.sync = CameraSetSynchronizer(
            SyncConfig(cameras=tuple(p.camera_names), slop_s=p.sync_slop_s, queue_size=p.sync_queue_size,
                       camera_timeout_s=p.camera_timeout_s, min_cameras=p.min_cameras,
                       time_jump_reset_s=p.time_jump_reset_s),
            callback=self._on_set, matcher=p.sync_matcher,
            clock=self._ingest.clock if self._ingest is not None else time.monotonic)
        self._log.info(f'camera sync: {self.sync.matcher_kind} approximate time, slop {p.sync_slop_s} s, '
                       f'timeout {p.camera_timeout_s} s')

        # ego motion and extrinsics sources
        self._odom = PoseBuffer(maxlen=512, tolerance_ns=int(p.odom_tolerance_s * 1e9))
        self._tf_lookup: Optional[Callable[[str, str, Optional[int]], np.ndarray]] = None
        if 'tf' in (p.extrinsics_source, p.odom_source, p.model_frame_offset_source):
            self._tf_lookup = make_tf_lookup(self, int(p.odom_tolerance_s * 1e9))
        if p.odom_source == 'odometry':
            from nav_msgs.msg import Odometry
            self.create_subscription(Odometry, p.odom_topic, self._on_odom, _best_effort(50))

        # cameras
        qos = (qos_profile_sensor_data if p.input_qos == 'sensor_data' else
               _reliable(p.input_depth) if p.input_qos == 'reliable' else _best_effort(p.input_depth))
        image_qos, image_node, held = qos, cast(Node, self), ''
        if self._ingest is not None:             # held readers keep only their newest image
            image_qos, image_node, held = _reliable(1) if p.input_qos == 'reliable' else _best_effort(1), \
                self._ingest.node, f', held while the worker is busy (on {self._ingest.node.get_name()})'
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        image_type = CompressedImage if p.image_transport == 'compressed' else Image
        for cam in p.camera_names:
            events = _qos_events(functools.partial(self._on_incompatible_qos, cam))
            # raw=True: the callback gets the serialized bytes; only the sets the worker takes are
            # deserialised (and decoded), in the worker — a set dropped as busy costs a header read
            image_sub = image_node.create_subscription(image_type, p.image_topic(cam),
                                                       lambda m, c=cam: self._on_image(c, m), image_qos,
                                                       event_callbacks=events, raw=True)
            # best effort matches reliable and best-effort CameraInfo publishers alike
            info_sub = self.create_subscription(CameraInfo, p.camera_info_topic(cam),
                                                lambda m, c=cam: self._on_camera_info(c, m), _best_effort(5))
            # the topics as resolved (namespace and remappings applied), which is what DDS matches
            self._log.info(f'{cam}: {image_type.__name__} on {image_sub.topic_name}, '
                           f'CameraInfo on {info_sub.topic_name} ({p.input_qos}{held})')

        self.create_timer(p.diagnostics_period_s, self._on_diagnostics_timer)
        # flushes a set that a camera timeout completed between arrivals (see CameraSetSynchronizer.poll)
        self.create_timer(max(0.02, min(0.1, p.camera_timeout_s / 3)), self._on_sync_poll_timer)
        if p.extrinsics_source == 'tf' or p.model_frame_offset_source == 'tf':
            self.create_timer(p.tf_refresh_s, self._refresh_extrinsics)
        if p.model_frame_offset_source == 'parameter' and p.model_frame != p.frame_id:
            self._pub_tf_static = publish_model_frame_tf(self, self._frame.T_base_model, p.frame_id, p.model_frame)
        if self._stop.is_set():                    # re-activation after stop() (lifecycle node)
            self._stop, self.slot = threading.Event(), LatestSlot(self.slot.max_wait_s)
        self._worker = threading.Thread(target=self._work, name='occupancy_worker', daemon=True)
        self._worker.start()
        if self._ingest is not None:
            self._ingest.start()
        self._started = True

    # ------------------------------------------------------------------ callbacks (cheap)
    def _apply_params(self, p: NodeParams) -> None:
        """Runtime parameters, already validated (`params.set_parameters_callback`)."""
        self.params = p
        self.slot.max_wait_s = None if p.max_set_wait_ms < 0 else p.max_set_wait_ms / 1e3
        self._snap.budget_ms, self._snap.error_factor = p.processing_budget_ms, p.processing_error_factor
        if self._out is not None:
            self._out.configure(p)

    def _on_incompatible_qos(self, camera: str, info: Any) -> None:
        policy = getattr(getattr(info, 'last_policy_kind', None), 'name', str(getattr(info, 'last_policy_kind', '?')))
        self._stats.note_qos_incompatible(camera, int(getattr(info, 'total_count', 0)), str(policy))
        self._log.warning(f'{camera}: a publisher on {self.params.image_topic(camera)} has an incompatible QoS '
                          f'({policy}); nothing is received from it (input_qos:={self.params.input_qos})',
                          throttle_duration_sec=10.0)

    def _on_image(self, camera: str, msg: Any) -> None:
        """A camera message: serialized bytes (the subscriptions are raw) or a message object."""
        raw = isinstance(msg, (bytes, bytearray, memoryview))
        size = len(msg) if raw else len(msg.data)
        refused: Optional[RefusedImage] = None
        if size > self.params.max_image_bytes:
            # its data is never queued (one camera's huge stream cannot pile up memory), but its
            # stamp is: a placeholder completes the set at once, without waiting camera_timeout_s
            self._stats.count_error('oversized_message', f'{camera}: {size} bytes > max_image_bytes')
            refused = RefusedImage(f'message of {size / 2 ** 20:.1f} MiB > max_image_bytes '
                                   f'({self.params.max_image_bytes / 2 ** 20:.1f} MiB)')
            self.sync.note_bad(camera, refused.reason)
            self._log.warning(f'{camera}: dropped a {size}-byte message (max_image_bytes '
                              f'{self.params.max_image_bytes})', throttle_duration_sec=5.0)
        if raw:
            try:
                stamp_ns, frame_id = cdr_header(msg)
            except ImageError as exc:
                self._stats.count_error('ImageError', f'{camera}: {exc}')
                self.sync.note_bad(camera, str(exc))
                return
        else:
            stamp_ns, frame_id = stamp_to_ns(msg.header.stamp), msg.header.frame_id
        self._calib.note_frame_id(camera, frame_id)
        if self._ingest is not None:
            self._ingest.note(camera, stamp_ns)
        if self._early is not None and refused is None:
            self._early.offer(camera, msg)       # prepared now if the worker is free (early.py)
        lag_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        self._stats.note_arrival_lag(camera, lag_ms)
        self.sync.add(camera, stamp_ns, msg if refused is None else refused)

    def _prepare_view(self, camera: str, msg: Any, intr: Intrinsics) -> CameraFrame:
        """An image's view prepared ahead of its set (the early-view pool): `decode_view`, then the
        pipeline's preprocessing of that one camera."""
        assert self.pipeline is not None
        return self.pipeline.prepare_view(decode_view(camera, msg, intr, self.params, self.pipeline,
                                                      self.model_cfg.image))

    def _on_set(self, s: SyncedSet) -> None:
        # the set is complete now: (set, ROS time of completion) for the latency breakdown
        now_ns = self.get_clock().now().nanoseconds
        waited_s, period_s = 0.0, None
        if self._ingest is not None:             # a set completed from held images has waited already
            waited_s, period_s = self._ingest.set_completed((now_ns - s.stamp_ns) / 1e9), self._ingest.period_s
        if self.slot.put((s, now_ns), waited_s, period_s):
            self._log.debug('camera set dropped: the worker is busy', throttle_duration_sec=5.0)

    def _on_camera_info(self, camera: str, msg: Any) -> None:
        self._calib.on_camera_info(camera, msg, self.params.rectification)
        if self._ingest is not None:
            self._ingest.note_info(camera, stamp_to_ns(msg.header.stamp))

    def _on_odom(self, msg: Any) -> None:
        try:
            pose = odometry_to_pose(msg)
            newest = self._odom.newest_ns
            if self._odom.add(pose.stamp_ns, pose.matrix):
                back = (newest - pose.stamp_ns) / 1e9 if newest is not None else 0.0
                self._log.warning(f'odometry time jumped back by {back:.3f} s (more than the '
                                  f'{self._odom.reorder_window_ns / 1e9:.1f} s reorder window): pose buffer '
                                  'cleared', throttle_duration_sec=5.0)
        except CalibrationError as exc:
            self._log.warning(f'bad odometry: {exc}', throttle_duration_sec=5.0)

    def _refresh_extrinsics(self) -> None:
        tf_lookup = self._tf_lookup
        assert tf_lookup is not None
        self._calib.refresh_from_tf(tf_lookup, self.params, self._frame, self.rig_base, self.pipeline, self._snap)

    def _on_sync_poll_timer(self) -> None:
        self.sync.poll()

    def _on_diagnostics_timer(self) -> None:
        self.sync.poll()
        if self._calib.dirty:
            self._calib.check(self.pipeline, self.rig_base)
        self._publish_diagnostics()

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        name_this_thread('occ_worker')          # top -H / the node benchmark tell the threads apart
        while not self._stop.is_set():
            item = self.slot.get(timeout=0.2)
            if item is None:
                continue
            s, complete_ns = item
            gate, early = self._ingest, self._early
            if gate is not None:
                gate.hold()                     # no image is taken while this set is processed
            if early is not None:
                early.hold(s.items)             # nor prepared: only this set's views are kept
            try:
                self.process(s, complete_ns=complete_ns, queue_ms=self.slot.last_wait_s * 1e3)
            except Exception as exc:            # never let the worker die
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    return                      # shutting down: publishers are gone
                self._stats.count_error('internal', f'{type(exc).__name__}: {exc}')
                self._log.error(f'internal error processing a camera set: {exc}\n{traceback.format_exc()}',
                                throttle_duration_sec=5.0)
            finally:
                if early is not None:
                    early.release()
                if gate is not None:
                    gate.release()

    def process(self, s: SyncedSet, complete_ns: Optional[int] = None,
                queue_ms: Optional[float] = None) -> Optional[PipelineResult]:
        """Run one camera set end to end and publish; returns the pipeline result (None if skipped).

        complete_ns: ROS time the set became complete (its last image arrived); queue_ms: how long
        it then waited for the worker. With them the latency splits into input delay (stamp →
        complete: driver, transport, synchronisation), queue wait and processing.
        """
        t_start = time.perf_counter()
        assert self.pipeline is not None, 'process() before load()'
        rig = self._calib.take_pending_rig()
        if rig is not None:
            self.pipeline.set_calibration(rig)
        frames, missing, decode_ms = decode_set(s, self.params, self.pipeline, self.model_cfg.image, self._calib,
                                                self.rig_base, self.sync, self._stats, self._log, self._early)
        if all(f.image is None for f in frames):
            self._stats.count_error('no_usable_camera', 'every camera of the set is missing or unusable')
            self._log.warning('camera set skipped: no usable camera', throttle_duration_sec=5.0)
            return None
        # the ego pose as known (None when odometry / TF has none; the pipeline owns the temporal policy)
        # and each camera's pose at its capture time (ego_poses.py: the official per-camera ego2global)
        lookups = self._frame.model_lookups(pose_lookups(self.params, self._odom, self._tf_lookup))
        poses = self.camera_poses.resolve({f.name: f.stamp_ns for f in frames if f.image is not None}, *lookups)
        if self.params.odom_source != 'none':
            self._stats.note_odometry(poses.reference is not None)
        fs = FrameSet(stamp_ns=s.stamp_ns, frames=poses.apply(frames), ego_pose=poses.reference,
                      missing=tuple(missing))
        try:
            result = self.pipeline.run(fs)
        except (ImageError, CalibrationError) as exc:
            self._stats.count_error(type(exc).__name__, str(exc))
            self._log.warning(f'camera set rejected: {exc}', throttle_duration_sec=5.0)
            return None
        reset = result.temporal_reset
        if reset and reset not in ('first_frame',):
            self._stats.note_temporal_reset(reset)
        t_pub = time.perf_counter()
        missing_out = tuple(result.missing or missing)
        self._publish(result, s.stamp_ns, missing_out, poses.reference)
        t_end = time.perf_counter()
        stages = dict(result.timings_ms)
        stages['pipeline'] = stages.pop('total', sum(stages.values()))   # pipeline.run as a whole
        stages['decode'] = decode_ms
        stages['publish'] = (t_end - t_pub) * 1e3
        if complete_ns is not None:
            stages['input_delay'] = (complete_ns - s.stamp_ns) / 1e6
        if queue_ms is not None:
            stages['queue_wait'] = queue_ms
        processing_ms = (t_end - t_start) * 1e3
        latency_ms = (self.get_clock().now().nanoseconds - s.stamp_ns) / 1e6
        self._stats.publish_timings(s.stamp_ns, processing_ms, latency_ms, stages, self.params.frame_id)
        with self._lock:
            self.outputs += 1                   # counted once everything of this set is out
        return result

    def _publish(self, result: PipelineResult, stamp_ns: int, missing: Sequence[str], ego: Optional[EgoPose]) -> None:
        p = self.params
        assert self._out is not None, '_publish() before start()'
        place = output_placement(p.output_frame, p.model_frame, p.odom_frame, None if ego is None else ego.matrix)
        if place is None:
            self._stats.count_error('no_pose_for_output', f'no {p.odom_frame} pose at the set stamp')
            self._log.warning('output_frame odom: no pose at the set stamp; only ~/panoptic published',
                              throttle_duration_sec=5.0)
        self._out.publish(result.occupancy, stamp_ns, missing, p.model_frame, place)
        self._snap.voxels_dropped_by_cap = self._out.voxels_dropped_by_cap

    # ------------------------------------------------------------------ diagnostics
    def snapshot(self) -> NodeSnapshot:
        """The current statistics (also what /diagnostics publishes)."""
        s = self._snap
        with self._lock:
            self._stats.fill_locked(s)
            s.outputs = self.outputs
            s.camera_pose_fallbacks = self.camera_poses.fallbacks if self.pipeline is not None else 0
            calib = self._calib
            s.missing_calibration = {c: why for c, why in calib.problem.items() if c not in calib.intrinsics}
            s.stale_calibration = {c: why for c, why in calib.problem.items() if c in calib.intrinsics}
            s.input_warnings = dict(self.pipeline.input_warnings) if self.pipeline is not None else {}
        s.sets_received = self.slot.puts
        gate = self._ingest
        s.dropped_sets_held = gate.sets_not_taken if gate is not None else 0
        s.ingest_images_taken = gate.images_taken if gate is not None else None
        s.ingest_releases_deferred = gate.releases_deferred if gate is not None else 0
        early = self._early
        s.views_prepared_early = early.used if early is not None else None
        s.views_discarded = early.discarded if early is not None else 0
        s.dropped_sets = self.slot.dropped + self.slot.stale + s.dropped_sets_held
        s.dropped_sets_busy = self.slot.dropped
        s.dropped_sets_stale = self.slot.stale
        s.sets_taken = self.slot.taken
        s.sets_taken_late = self.slot.late
        if self._started:
            s.sync = self.sync.stats()
            s.cameras = self.sync.health()
            if gate is not None:                 # held: the cameras' own rates, from their CameraInfos
                for name, health in s.cameras.items():
                    health.rate_hz = gate.camera_rate_hz(name) or health.rate_hz
            with self._lock:
                for cam in self.params.camera_names:
                    if cam not in self._calib.intrinsics and cam not in s.missing_calibration:
                        h = s.cameras.get(cam)
                        if h is not None and h.received:
                            s.missing_calibration[cam] = 'no CameraInfo received'
            newest = self._odom.newest_ns
            s.odom_age_s = None if newest is None else (self.get_clock().now().nanoseconds - newest) / 1e9
            s.odom_reordered, s.odom_resets = self._odom.reordered, self._odom.resets
        return s

    def _publish_diagnostics(self) -> None:
        if not rclpy.ok(context=self.context):
            return                     # shutting down: the publisher's context is gone
        try:
            self._diag_pub.publish(diagnostic_array(self.snapshot(), self.get_clock().now().nanoseconds))
        except Exception as exc:       # diagnostics must never take the node down
            self._log.error(f'diagnostics: {exc}', throttle_duration_sec=10.0)

    # ------------------------------------------------------------------ shutdown
    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the worker (waits at most `timeout_s` for the set in progress; False if it is
        still inside inference then)."""
        self._stop.set()
        self.slot.close()
        if self._ingest is not None:             # its node and subscriptions go with it
            self._ingest.close()
            self._ingest = None
        if self._early is not None:
            self._early.close()
        if self._worker is not None:
            self._worker.join(timeout=timeout_s)
            if self._worker.is_alive():
                return False
            self._worker = None
        return True

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop the worker and release the backend. Returns False when the worker is still inside
        inference after `timeout_s` (the backend is left alone, since the worker still uses it:
        the caller abandons the process)."""
        if not self.stop(timeout_s):
            return False
        if self.pipeline is not None:
            try:
                self.pipeline.close()
            except Exception as exc:
                self._log.warning(f'closing the pipeline: {exc}')
        return True
