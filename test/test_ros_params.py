"""Node parameters (one table, validated once) and the diagnostics they drive."""
from __future__ import annotations

import pytest

from occ_ros.core.config import GridSpec
from occ_ros.core.errors import ConfigError
from occ_ros.ros.diagnostics import ERROR, OK, WARN, NodeSnapshot, RollingStats, diagnostic_entries
from occ_ros.ros.params import PARAMETERS, NodeParams
from occ_ros.ros.sync import CameraHealth, SyncStats


def test_defaults_are_valid_and_complete() -> None:
    p = NodeParams.from_mapping({})
    assert p.model == 'lite' and p.frame_id == 'base_link' and len(p.camera_names) == 6
    assert {s.name for s in PARAMETERS} == set(NodeParams.__dataclass_fields__)
    assert all(s.description for s in PARAMETERS)
    assert p.image_topic('CAM_FRONT') == '/CAM_FRONT/image_raw'
    assert p.camera_info_topic('CAM_FRONT') == '/CAM_FRONT/camera_info'
    c = NodeParams.from_mapping({'image_transport': 'compressed'})
    assert c.image_topic('CAM_BACK') == '/CAM_BACK/image_raw/compressed'
    t = NodeParams.from_mapping({'image_transport': 'compressed',
                                 'image_topic_template': '/{camera}/image_rect_compressed'})
    assert t.image_topic('CAM_BACK') == '/CAM_BACK/image_rect_compressed'


@pytest.mark.parametrize('values, match', [
    ({'backend': 'cuda-magic'}, 'backend'),
    ({'model': 'no-such-model'}, 'unknown model'),
    ({'checkpoint': '/nonexistent/ckpt.pt'}, 'checkpoint: file'),
    ({'rig_file': '/nonexistent/rig.yaml'}, 'rig_file: file'),
    ({'camera_names': []}, 'camera_names'),
    ({'camera_names': ['A', 'A']}, 'unique'),
    ({'image_topic_template': '/cam/image'}, r'\{camera\}'),
    ({'sync_slop_s': -0.1}, 'sync_slop_s'),
    ({'min_cameras': 7}, 'min_cameras'),
    ({'grid_z_min': 2.0, 'grid_z_max': 1.0}, 'grid_z_min'),
    ({'grid_ground_classes': ['lava']}, 'lava'),
    ({'threads': 1.5}, 'threads'),
    ({'build_only': 'yes'}, 'build_only'),
    ({'no_such_param': 1}, 'unknown parameter'),
])
def test_invalid_values_are_named_config_errors(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NodeParams.from_mapping(values)


def test_engine_dir_that_is_a_file(tmp_path) -> None:
    f = tmp_path / 'x'
    f.write_text('')
    with pytest.raises(ConfigError, match='engine_dir'):
        NodeParams.from_mapping({'engine_dir': str(f)})


def test_integers_are_accepted_for_floats() -> None:
    assert NodeParams.from_mapping({'processing_budget_ms': 100}).processing_budget_ms == 100.0


def test_grid_band_must_meet_the_model_grid() -> None:
    NodeParams.from_mapping({}).check_grid(GridSpec())
    with pytest.raises(ConfigError, match='no voxel centre'):
        NodeParams.from_mapping({'grid_z_min': 10.0, 'grid_z_max': 12.0}).check_grid(GridSpec())


def test_declare_on_a_node_with_overrides() -> None:
    rclpy = pytest.importorskip('rclpy', reason='needs rclpy')
    from rclpy.parameter import Parameter
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        from occ_ros.ros.params import declare_parameters
        node = rclpy.create_node('params_probe', context=ctx, parameter_overrides=[
            Parameter('sync_slop_s', value=0.02), Parameter('processing_budget_ms', value=250),
            Parameter('camera_names', value=['L', 'R'])])
        p = declare_parameters(node)
        assert p.sync_slop_s == 0.02 and p.processing_budget_ms == 250.0 and p.camera_names == ('L', 'R')
        desc = node.describe_parameter('sync_slop_s')
        assert desc.read_only and 'spread' in desc.description
        assert 'one of' in node.describe_parameter('backend').additional_constraints
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


# ------------------------------------------------------------------ diagnostics
def _levels(s: NodeSnapshot) -> dict[str, int]:
    return {name: lvl for lvl, name, _msg, _v in diagnostic_entries(s)}


def test_processing_budget_levels() -> None:
    s = NodeSnapshot(node='/occ', backend_state='ready', budget_ms=100.0, error_factor=3.0)
    assert _levels(s)['processing'] == OK
    s.processing_p50_ms = 90.0
    assert _levels(s)['processing'] == OK
    s.processing_p50_ms = 150.0
    assert _levels(s)['processing'] == WARN
    s.processing_p50_ms = 301.0
    assert _levels(s)['processing'] == ERROR
    s.processing_p50_ms = 50.0
    s.pipeline_errors = {'ImageError': 2}
    s.last_error = 'CAM_BACK: unsupported image encoding'
    lvl, _, msg, values = next(e for e in diagnostic_entries(s) if e[1] == 'processing')
    assert lvl == WARN and 'CAM_BACK' in msg and values['errors.ImageError'] == '2'


def test_backend_camera_and_odometry_statuses() -> None:
    s = NodeSnapshot(node='/occ', backend_state='building_engine', temporal_model=True, odom_source='odometry')
    s.sync = SyncStats(sets=10, partial_sets=3, live=('A', 'B'))
    s.cameras = {'A': CameraHealth('A', state='ok', rate_hz=12.0),
                 'B': CameraHealth('B', state='ok', rate_hz=12.0, bad=1, last_bad='bgr16'),
                 'C': CameraHealth('C', state='silent', age_s=2.0)}
    s.odom_recent_misses = 3
    lv = _levels(s)
    assert lv['backend'] == WARN and lv['camera A'] == OK and lv['camera B'] == WARN
    assert lv['camera C'] == ERROR and lv['synchronizer'] == WARN and lv['odometry'] == WARN
    msgs = {name: msg for _l, name, msg, _v in diagnostic_entries(s)}
    assert 'blanked' in msgs['camera C'] and 'reset' in msgs['odometry']
    s.temporal_model = False
    assert _levels(s)['odometry'] == OK
    s.backend_state = 'failed'
    assert _levels(s)['backend'] == ERROR
    s.missing_calibration = {'A': 'CameraInfo K is all zeros'}
    assert _levels(s)['camera A'] == ERROR


def test_an_incompatible_qos_explains_a_camera_that_never_delivered() -> None:
    """A camera with an incompatible publisher can receive nothing: whether it is still within its
    timeout ('waiting') or past it ('never'), the status names the QoS policy, not just 'never
    received' (with ingest_hold the image subscriptions' events are taken on the ingest thread,
    which may report them after the camera timeout)."""
    s = NodeSnapshot(node='/occ')
    for state in ('waiting', 'never'):
        s.cameras = {'A': CameraHealth('A', state=state)}
        s.qos_incompatible = {'A': (1, 'RELIABILITY')}
        lvl, _, msg, _v = next(e for e in diagnostic_entries(s) if e[1] == 'camera A')
        assert lvl == ERROR and 'incompatible QoS (RELIABILITY)' in msg, (state, msg)
    s.cameras = {'A': CameraHealth('A', state='silent', age_s=2.0)}   # it did deliver, then stopped
    lvl, _, msg, _v = next(e for e in diagnostic_entries(s) if e[1] == 'camera A')
    assert lvl == ERROR and 'silent' in msg


def test_diagnostic_array_message() -> None:
    pytest.importorskip('diagnostic_msgs.msg', reason='needs the ROS 2 message wheels')
    from occ_ros.ros.diagnostics import diagnostic_array
    s = NodeSnapshot(node='/occ', backend_state='ready', processing_p50_ms=500.0)
    arr = diagnostic_array(s, 1_000_000_005)
    names = [st.name for st in arr.status]
    assert names[:2] == ['/occ: backend', '/occ: processing'] and arr.header.stamp.nanosec == 5
    proc = arr.status[1]
    assert proc.level == bytes([ERROR]) and proc.hardware_id == '/occ'
    assert {kv.key: kv.value for kv in proc.values}['processing_p50_ms'] == '500.0'


def test_rolling_stats() -> None:
    r = RollingStats(4)
    assert r.percentile(50) is None and r.rate_hz(0.0) == 0.0
    for k, v in enumerate([10, 20, 30, 40, 50]):
        r.add(v, t=k * 0.5)
    assert r.last == 50 and r.percentile(50) == 35.0          # the first sample fell out
    assert r.rate_hz(now=2.0) == pytest.approx(2.0)


def test_every_parameter_is_dynamic_or_says_why_it_is_read_only() -> None:
    from occ_ros.ros.params import FIXED_BECAUSE, PARAMETERS, read_only_reason
    grouped = [n for names in FIXED_BECAUSE.values() for n in names]
    assert len(grouped) == len(set(grouped))                                   # one group each
    for p in PARAMETERS:       # a new start-up parameter joins a FIXED_BECAUSE group (else 'it is read')
        assert (p.name in grouped) != p.dynamic, p.name
        assert read_only_reason(p.name).startswith('Read-only: ') != p.dynamic, p.name


def test_updated_validates_like_start_up() -> None:
    from occ_ros.core.errors import ConfigError
    from occ_ros.ros.params import NodeParams, updated
    p = NodeParams.from_mapping({})
    q = updated(p, {'markers_max_voxels': 7, 'grid_ground_classes': ['terrain'], 'processing_budget_ms': 50})
    assert q.markers_max_voxels == 7 and q.grid_ground_classes == ('terrain',) and q.processing_budget_ms == 50.0
    assert p.markers_max_voxels == 20000                                       # the old values stay
    for change, match in (({'markers_max_voxels': -1}, 'below the minimum'),
                          ({'grid_z_max': -5.0}, 'must be below grid_z_max'),
                          ({'backend': 'torch'}, 'Read-only: the backend'),
                          ({'nope': 1}, 'unknown parameter nope')):
        with pytest.raises(ConfigError, match=match):
            updated(p, change)
