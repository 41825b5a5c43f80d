"""TF over real DDS in the venv: the tf2_msgs/msg/TFMessage interface built from interfaces/tf2_msgs,
`occ-ros play` replaying /tf and a latched /tf_static, and the occupancy node taking its camera
extrinsics and its ego motion from TF (extrinsics_source:=tf, odom_source:=tf, the built-in
TransformTree since tf2_ros is not installable here).

Processes get this run's ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the SHM Fast DDS
profile from conftest.py (inherited through RosProcess / subprocess).
"""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ros_helpers.procs import HERE as HELPERS, LISTENER_PRELUDE, REPO, RosProcess, play_to_listener, wait_for

pytestmark = pytest.mark.ros

TF2_SRC = REPO / 'interfaces' / 'tf2_msgs'
PARAMS = REPO / 'config' / 'occupancy.yaml'
NODE = '/occupancy_node'
CAMS = ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT')

# The type hash of the real tf2_msgs/msg/TFMessage (ros2/geometry2) as a full ROS 2 install
# generates it: found as tf2_msgs__msg__TFMessage__EXPECTED_HASH in rosidl-generated C code that two
# unrelated projects built against their ROS 2 installs, and equal to what rosbags computes from
# its Kilted type store (checked below too).
UPSTREAM_TFMESSAGE_HASH = 'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087'


def _tf2_msgs_missing() -> str:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return 'needs the ROS 2 Python wheels (rclpy)'
    try:
        from tf2_msgs.msg import TFMessage  # noqa: F401
    except ImportError:
        return ('tf2_msgs is not importable: run scripts/build_interfaces.sh (it builds '
                'tf2_msgs/msg/TFMessage from interfaces/tf2_msgs into the venv) or source a ROS 2 install')
    return ''


needs_tf2_msgs = pytest.mark.skipif(bool(_tf2_msgs_missing()), reason=_tf2_msgs_missing() or 'ok')


def _node_missing() -> str:
    try:
        import occ_ros.msg  # noqa: F401
    except ImportError:
        return 'occ_ros interfaces not built (scripts/build_interfaces.sh)'
    return ''


needs_node = pytest.mark.skipif(bool(_node_missing()), reason=_node_missing() or 'ok')


# ------------------------------------------------------------------ the interface itself
def test_tf2_msgs_sources_are_the_upstream_definition_and_hidden_from_workspaces() -> None:
    """Only the venv build may use interfaces/tf2_msgs: colcon / catkin_pkg / rosdep never see it."""
    lines = [ln.split('#', 1)[0].strip() for ln in (TF2_SRC / 'msg' / 'TFMessage.msg').read_text().splitlines()]
    assert [ln for ln in lines if ln] == ['geometry_msgs/TransformStamped[] transforms']
    assert (TF2_SRC / 'COLCON_IGNORE').is_file()
    packages = pytest.importorskip('catkin_pkg.packages', reason='catkin_pkg finds packages like rosdep does')
    found = {p.name for p in packages.find_packages(str(REPO)).values()}
    assert found == {'occ_ros'}
    assert packages.find_packages(str(TF2_SRC.parent)) == {}      # even when pointed at interfaces/


@needs_tf2_msgs
def test_tfmessage_type_hash_and_cdr_match_upstream() -> None:
    """The hash DDS announces for /tf and the CDR bytes are those of the real tf2_msgs."""
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.typesys import Stores, get_typestore
    from tf2_msgs.msg import TFMessage

    ts = get_typestore(Stores.ROS2_KILTED)             # an independent implementation of the hash
    assert ts.hash_rihs01('tf2_msgs/msg/TFMessage') == UPSTREAM_TFMESSAGE_HASH

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node('tf2_msgs_hash_probe', context=ctx)
        node.create_publisher(TFMessage, '/tf_hash_probe', 1)
        (info,) = node.get_publishers_info_by_topic('/tf_hash_probe')
        assert info.topic_type == 'tf2_msgs/msg/TFMessage'
        assert str(info.topic_type_hash) == UPSTREAM_TFMESSAGE_HASH
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)

    # CDR both ways against rosbags' upstream definition
    t = TransformStamped(child_frame_id='cam_front_optical')
    t.header.frame_id, t.header.stamp.sec, t.header.stamp.nanosec = 'base_link', 17, 42
    t.transform.translation.x, t.transform.translation.z = 1.5, -0.25
    t.transform.rotation.z, t.transform.rotation.w = 0.6, 0.8
    raw = serialize_message(TFMessage(transforms=[t, TransformStamped(child_frame_id='b')]))
    decoded = ts.deserialize_cdr(raw, 'tf2_msgs/msg/TFMessage')
    a, b = decoded.transforms
    assert (a.header.frame_id, a.child_frame_id, a.header.stamp.sec, a.header.stamp.nanosec) == \
        ('base_link', 'cam_front_optical', 17, 42)
    assert (a.transform.translation.x, a.transform.translation.z, a.transform.rotation.z) == (1.5, -0.25, 0.6)
    assert b.child_frame_id == 'b' and b.transform.rotation.w == 1.0
    back = deserialize_message(bytes(ts.serialize_cdr(decoded, 'tf2_msgs/msg/TFMessage')), TFMessage)
    assert back.transforms[0].transform.rotation.w == 0.8 and back.transforms[1].child_frame_id == 'b'


# ------------------------------------------------------------------ occ-ros play
_TF_LISTENER = LISTENER_PRELUDE + textwrap.dedent('''
    import json, sys
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage
    cams, n_tf, timeout = sys.argv[1].split(','), int(sys.argv[2]), float(sys.argv[3])
    rclpy.init()
    node = rclpy.create_node('occ_ros_tf_listener')
    images, tf, static = [], [], []
    def pose(t):
        tr, q = t.transform.translation, t.transform.rotation
        return [t.header.stamp.sec * 10**9 + t.header.stamp.nanosec, t.header.frame_id, t.child_frame_id,
                [tr.x, tr.y, tr.z], [q.x, q.y, q.z, q.w]]
    for c in cams:
        node.create_subscription(Image, f'/{c}/image_raw',
                                 lambda m: images.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
                                 QoSProfile(depth=10))
    node.create_subscription(TFMessage, '/tf', lambda m: tf.extend(pose(t) for t in m.transforms),
                             QoSProfile(depth=100))
    ex = start_spinning(node)
    print('READY', flush=True)
    deadline = time.monotonic() + timeout
    wait_until(lambda: images, deadline)
    # only now: /tf_static was played before the first image, so only latching can deliver it
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, '/tf_static', lambda m: static.append([pose(t) for t in m.transforms]),
                             latched)
    wait_until(lambda: len(tf) >= n_tf and static, deadline)
    print(json.dumps({'images': images, 'tf': tf, 'static': static}), flush=True)
    ex.shutdown(timeout_sec=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
''')


@needs_tf2_msgs
def test_player_plays_tf_and_a_latched_tf_static(tmp_path: Path) -> None:
    from occ_ros.bag.reader import BagReader
    from occ_ros.bag.writer import camera_frame_id, write_synthetic_bag
    from occ_ros.geometry import load_rig
    from occ_ros.ros.convert import quaternion_xyzw_to_matrix

    bag = tmp_path / 'bag'
    summary = write_synthetic_bag(bag, 0.25, 5, image_hw=(90, 160), odom_per_frame=2)
    n_tf = summary.topics['/tf']
    with BagReader(bag) as r:
        bag_tf = [m.transforms[0] for _, m in r.messages(['/tf'])]
        assert next(iter(r.raw_messages())).topic == '/tf_static'     # played before any image
    cams = load_rig(bag / 'rig.yaml').names
    play, got, err = play_to_listener(['-c', _TF_LISTENER, ','.join(cams), str(n_tf), '25'],
                                      [str(bag), '--wait-subscribers', '15'])
    assert 'skipping /tf' not in play.stderr, play.stderr
    assert got['images'], err
    # /tf: every odom → base_link of the bag, in order, with its pose
    assert [s for s, *_ in got['tf']] == [t.header.stamp.sec * 10**9 + t.header.stamp.nanosec for t in bag_tf]
    for (_, parent, child, xyz, q), t in zip(got['tf'], bag_tf):
        assert (parent, child) == ('odom', 'base_link')
        tr = t.transform.translation
        np.testing.assert_allclose(xyz, [tr.x, tr.y, tr.z], atol=1e-12)
    # /tf_static reached a subscriber created after it was played: latched, with the rig's extrinsics
    assert len(got['static']) == 1, got['static']
    rig = load_rig(bag / 'rig.yaml')
    by_child = {child: (parent, xyz, q) for _, parent, child, xyz, q in got['static'][0]}
    assert set(by_child) == {camera_frame_id(c) for c in cams}
    for cam in rig.cameras:
        parent, xyz, q = by_child[camera_frame_id(cam.name)]
        assert parent == 'base_link'
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = quaternion_xyzw_to_matrix(*q), xyz
        np.testing.assert_allclose(T, cam.sensor2ego, atol=1e-9)


# ------------------------------------------------------------------ the node on TF
def _sees_behind(rig: object) -> bool:
    """Does any camera of `rig` see the grid column 20 m behind the ego (x = -20, y = 0)?"""
    from occ_ros.geometry import camera_frustum_masks
    from occ_ros.model import model_config
    cfg = model_config('lite')
    g = cfg.grid
    ix, iy = int((-20.0 - g.x.lo) / g.x.step), int((0.0 - g.y.lo) / g.y.step)
    masks = camera_frustum_masks(cfg, rig, max_depth=cfg.depth.stop)          # (N, nx, ny, nz)
    return bool(np.asarray(masks)[:, ix, iy, :].any())


def _back_camera_looking_up(rig: Any) -> Any:
    """`rig` with CAM_BACK mounted at its place but looking at the sky (optical z = ego up)."""
    from dataclasses import replace

    from occ_ros.geometry import Rig
    T = rig.camera('CAM_BACK').sensor2ego.copy()
    T[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]    # columns: cam x, y, z in ego
    return Rig(tuple(replace(c, sensor2ego=T) if c.name == 'CAM_BACK' else c for c in rig.cameras))


@needs_tf2_msgs
@needs_node
def test_node_takes_extrinsics_and_odometry_from_tf(tmp_path: Path) -> None:
    """Node with extrinsics_source:=tf and odom_source:=tf, and a rig file whose CAM_BACK looks up.

    The publisher puts the true (nuScenes) extrinsics on /tf_static and odom → base_link on /tf, and no
    /odom. Only if the node uses TF does CAM_BACK see behind the ego, so the grid cell 20 m behind
    must be seen (0 or 100), not unknown (-1) as the rig file alone would make it.
    """
    from occ_ros.geometry import compute_bev_geometry, nuscenes_rig, save_rig
    from occ_ros.model import model_config
    true_rig = nuscenes_rig((450, 800))                 # what camera_publisher.py sends, and its TF
    wrong_rig = _back_camera_looking_up(true_rig)
    rig_file = tmp_path / 'rig_back_camera_looking_up.yaml'
    save_rig(wrong_rig, rig_file, comment='test: CAM_BACK looks at the sky; TF has the true extrinsics')
    assert _sees_behind(true_rig) and not _sees_behind(wrong_rig)     # the check below can fail
    compute_bev_geometry(model_config('lite'), wrong_rig)              # and the rig file is usable as such

    node = RosProcess.python('occupancy_node', [
        '-m', 'occ_ros.ros.main', '--ros-args', '--params-file', str(PARAMS),
        '-p', 'camera_timeout_s:=0.5', '-p', 'processing_budget_ms:=100.0', '-p', f'rig_file:={rig_file}',
        '-p', 'extrinsics_source:=tf', '-p', 'odom_source:=tf', '-p', 'tf_refresh_s:=0.25',
        '-p', 'diagnostics_period_s:=0.5'], tmp_path)
    pub_json, sub_json = tmp_path / 'published.json', tmp_path / 'received.json'
    sub = pub = None
    try:
        assert wait_for(lambda: 'camera sync:' in node.log() or not node.alive(), timeout=120), node.log()[-3000:]
        assert node.alive(), f'the node exited with {node.proc.returncode}:\n{node.log()[-3000:]}'
        sub = RosProcess.python('subscriber', [str(HELPERS / 'output_subscriber.py'), '--node', NODE,
                                               '--out', str(sub_json), '--publisher-report', str(pub_json),
                                               '--idle', '4'], tmp_path)
        pub = RosProcess.python('publisher', [str(HELPERS / 'camera_publisher.py'), '--out', str(pub_json),
                                              '--duration', '3.5', '--tf', '--no-odom', '--wait', '60',
                                              '--await-output', f'{NODE}/panoptic'], tmp_path)
        assert pub.wait(90) == 0, f'publisher failed:\n{pub.log()[-2000:]}'
        assert sub.wait(40) == 0, f'subscriber failed:\n{sub.log()[-2000:]}'
        assert node.alive(), f'the node died:\n{node.log()[-3000:]}'
    finally:
        for p in (pub, sub):
            if p is not None:
                p.stop()
        rc = node.stop(timeout=30)
    log = node.log()
    assert rc == 0 and not node.killed, log[-3000:]
    published, received = json.loads(pub_json.read_text()), json.loads(sub_json.read_text())

    # outputs, stamped with the sets' stamps
    stamps = {s for s, _ in published['sets']}
    assert received['panoptic'] and received['grid'], log[-3000:]
    assert all(p['stamp'] in stamps and p['frame'] == 'base_footprint' and p['missing'] == []
               for p in received['panoptic'])
    assert all(g['stamp'] in stamps and g['frame'] == 'base_footprint' for g in received['grid'])
    assert any(g['matches_panoptic'] for g in received['grid'])

    # the extrinsics came from TF: the node said so, diagnostics agree, and the outputs show it
    assert 'TF: tf2_ros' in log        # which TF client: "tf2_ros", or "tf2_ros not importable; built-in …"
    assert re.search(r'extrinsics from TF for 6 cameras \(0 from the rig file\)', log), log[-3000:]
    diag = received['diagnostics']
    for cam in CAMS:
        assert diag[f'{NODE}: camera {cam}']['values']['extrinsics'] == 'tf', diag[f'{NODE}: camera {cam}']
    behind = [g['behind_value'] for g in sorted(received['grid'], key=lambda g: g['stamp']) if 'behind_value' in g]
    # CAM_BACK sees behind the ego: the TF extrinsics, not the rig file's. Only a set the worker had
    # taken before the first TF refresh (every tf_refresh_s once the cameras' frames are known) may
    # still show the rig file's view.
    assert len(behind) >= 3 and all(v in (0, 100) for v in behind[2:]), behind

    # ego motion from TF at every set's stamp: no set without a pose
    odom = diag[f'{NODE}: odometry']
    assert odom['values']['source'] == 'tf' and odom['values']['misses'] == '0', odom
    assert odom['level'] == 0, odom
    assert 'camera set rejected' not in log and 'errors.CalibrationError' not in diag[f'{NODE}: processing']['values']
