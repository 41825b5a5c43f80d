"""rosbag2 bags of the synthetic world: written with rosbags, read back by rosbags AND mcap, replayed
through rclpy to a real subscriber process; corrupt / truncated / foreign bags raise BagError."""
from __future__ import annotations

import argparse
import shutil
import textwrap

import cv2
import numpy as np
import pytest
import yaml

from occ_ros.apps import synth as synth_cli
from occ_ros.bag.reader import BagReader, read_ground_truth
from occ_ros.core.occupancy import stamp_ns_of
from occ_ros.bag.synth import SyntheticSequence
from occ_ros.bag.writer import (GT_TOPIC, GT_TYPE, camera_frame_id, matrix_to_quaternion,
                                write_synthetic_bag)
from occ_ros.core.classes import FREE, OCC_CLASSES
from occ_ros.core.errors import BagError
from occ_ros.geometry import load_rig, nuscenes_rig, quaternion_to_matrix
from ros_helpers.procs import LISTENER_PRELUDE, play_to_listener

HW = (90, 160)
SEED = 11
SECONDS = 0.25            # 3 frames at 12 Hz
CAMS = nuscenes_rig(HW).names


@pytest.fixture(scope='module')
def mcap_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp('bags') / 'raw_mcap'
    summary = write_synthetic_bag(out, SECONDS, SEED, image_hw=HW)
    return out, summary


@pytest.fixture(scope='module')
def sqlite_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp('bags') / 'jpeg_sqlite'
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    args = parser.parse_args(['--out', str(out), '--seconds', str(SECONDS), '--seed', str(SEED), '--size',
                              f'{HW[0]}x{HW[1]}', '--storage', 'sqlite3', '--compressed', '--quiet'])
    assert synth_cli.run(args) == 0
    return out


@pytest.fixture(scope='module')
def reference():
    """The same frames rendered directly (what the bags must hold)."""
    seq = SyntheticSequence(SEED, SECONDS, 12.0, nuscenes_rig(HW), HW)
    return seq, [seq.frame(i) for i in range(len(seq))]


def _expected_counts(compressed: bool) -> dict[str, int]:
    n = 3
    c = {'/tf_static': 1, '/tf': n + 3 * (n - 1), '/odom': n + 3 * (n - 1), GT_TOPIC: n}
    for cam in CAMS:
        c[f'/{cam}/camera_info'] = n
        c[f'/{cam}/image_raw' + ('/compressed' if compressed else '')] = n
    return c


def _assert_gt_equal(a, b):
    np.testing.assert_array_equal(a.semantics, b.semantics)
    np.testing.assert_array_equal(a.instances, b.instances)
    np.testing.assert_array_equal(a.mask_camera, b.mask_camera)
    assert [(i.id, i.label, i.voxel_count) for i in a.instance_table] == \
        [(i.id, i.label, i.voxel_count) for i in b.instance_table]
    for x, y in zip(a.instance_table, b.instance_table):
        np.testing.assert_allclose(x.center, y.center, rtol=0, atol=1e-5)     # float32 on the wire


def test_mcap_bag_reads_back_with_rosbags(mcap_bag, reference):
    path, summary = mcap_bag
    seq, frames = reference
    assert summary.frames == 3
    with BagReader(path) as r:
        assert r.storage == 'mcap'
        assert {t: s.count for t, s in r.topics.items()} == _expected_counts(False)
        assert r.topics[GT_TOPIC].msgtype == GT_TYPE
        assert r.topics['/CAM_FRONT/image_raw'].msgtype == 'sensor_msgs/msg/Image'
        stamps = [f.stamp_ns for f in frames]
        n = 0
        for raw, msg in r.messages():
            n += 1
            stamp = stamp_ns_of(msg) if hasattr(msg, 'header') else stamp_ns_of(msg.transforms[0])
            assert stamp == raw.stamp_ns                       # bag time = header stamp
            if raw.msgtype == 'sensor_msgs/msg/Image':
                cam = raw.topic.split('/')[1]
                f = frames[stamps.index(raw.stamp_ns)]
                img = np.asarray(msg.data).reshape(msg.height, msg.width, 3)
                assert msg.encoding == 'rgb8' and msg.header.frame_id == camera_frame_id(cam)
                np.testing.assert_array_equal(img, f.views[CAMS.index(cam)].image)
            elif raw.msgtype == 'sensor_msgs/msg/CameraInfo':
                cam = seq.rig.camera(raw.topic.split('/')[1])
                np.testing.assert_allclose(np.asarray(msg.k).reshape(3, 3), cam.K)
                assert (msg.height, msg.width) == HW
            elif raw.topic == '/odom':
                p = msg.pose.pose
                T = seq.world.ego_pose((raw.stamp_ns - seq.start_ns) * 1e-9)
                q = p.orientation
                np.testing.assert_allclose(quaternion_to_matrix((q.w, q.x, q.y, q.z)), T[:3, :3], atol=1e-9)
                np.testing.assert_allclose((p.position.x, p.position.y), T[:2, 3], atol=1e-9)
                assert msg.header.frame_id == 'odom' and msg.child_frame_id == 'base_link'
            elif raw.topic == '/tf_static':
                assert len(msg.transforms) == 6
                for tr in msg.transforms:
                    cam = seq.rig.cameras[[camera_frame_id(c) for c in CAMS].index(tr.child_frame_id)]
                    q = tr.transform.rotation
                    np.testing.assert_allclose(quaternion_to_matrix((q.w, q.x, q.y, q.z)),
                                               cam.sensor2ego[:3, :3], atol=1e-9)
                    t = tr.transform.translation
                    np.testing.assert_allclose((t.x, t.y, t.z), cam.sensor2ego[:3, 3])
        assert n == sum(_expected_counts(False).values()) == r.message_count
        gts = r.ground_truth()
    assert sorted(gts) == [f.stamp_ns for f in frames]
    for f in frames:                                            # the GT round-trips exactly
        _assert_gt_equal(gts[f.stamp_ns], f.gt)
    assert load_rig(path / 'rig.yaml').same_as(nuscenes_rig(HW))


def test_ground_truth_frames_decode_only_the_frames_read(mcap_bag, reference, monkeypatch):
    """`BagReader.ground_truth_frames` (what a replay scores from) keys each frame by the stamp of
    its header, read from the serialized bytes; the reference is the rendered frames themselves
    and their stamps. A frame is decoded (rosbags' deserialiser) when it is read, once, and only
    then; a message whose header cannot be read is a BagError."""
    out, _ = mcap_bag
    _, frames = reference
    with BagReader(out) as r:
        decoded = []
        real = r.decode
        monkeypatch.setattr(r, 'decode', lambda raw: decoded.append(raw.stamp_ns) or real(raw))
        gt = r.ground_truth_frames()
        assert list(gt) == [f.stamp_ns for f in frames] and len(gt) == len(frames)
        assert decoded == [] and frames[1].stamp_ns in gt and 1 not in gt
        _assert_gt_equal(gt[frames[1].stamp_ns], frames[1].gt)
        _assert_gt_equal(gt[frames[1].stamp_ns], frames[1].gt)
        assert decoded == [frames[1].stamp_ns]
        assert list(gt) == [f.stamp_ns for f in frames]              # the decoded frame keeps its place
        with pytest.raises(KeyError):
            gt[12345]
        from concurrent.futures import ThreadPoolExecutor      # frames read from several threads at once
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(gt.__getitem__, [frames[2].stamp_ns] * 8))
        assert all(g is got[0] for g in got) and decoded.count(frames[2].stamp_ns) == 1
        monkeypatch.setattr(r, 'raw_messages', lambda topics: iter([
            type('Raw', (), {'data': b'\x00\x01\x00\x00\x01', 'stamp_ns': 7})()]))
        with pytest.raises(BagError, match='no readable header'):
            r.ground_truth_frames()

def test_mcap_bag_decodes_with_mcap_ros2(mcap_bag, reference):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    path, _ = mcap_bag
    _, frames = reference
    files = list(path.glob('*.mcap'))
    assert len(files) == 1
    counts: dict[str, int] = {}
    gts = {}
    with open(files[0], 'rb') as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == GT_TOPIC:
                assert schema.name == GT_TYPE and schema.encoding == 'ros2msg'
                st = decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec
                assert st == message.log_time
                gts[st] = decoded
            elif hasattr(decoded, 'header'):
                assert decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec == message.log_time
    assert counts == _expected_counts(False)
    for f in frames:
        m = gts[f.stamp_ns]
        assert (m.size_x, m.size_y, m.size_z) == f.gt.semantics.shape
        assert list(m.class_names) == list(OCC_CLASSES) and m.free_label == FREE
        assert m.header.frame_id == 'base_link'
        np.testing.assert_array_equal(np.frombuffer(bytes(m.semantics), np.uint8), f.gt.semantics.ravel())
        np.testing.assert_array_equal(np.asarray(m.instances, np.uint16), f.gt.instances.ravel())
        np.testing.assert_array_equal(np.frombuffer(bytes(m.visible), np.uint8), f.gt.mask_camera.ravel())
        assert [(i.id, i.label, i.voxel_count) for i in m.instance_table] == \
            [(i.id, i.label, i.voxel_count) for i in f.gt.instance_table]
        assert (m.origin.x, m.origin.y, m.origin.z) == (-40.0, -40.0, -1.0)
        assert m.voxel_size.x == pytest.approx(0.4)


def test_metadata_is_version_8_with_latched_tf_static(mcap_bag):
    path, _ = mcap_bag
    info = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 8 and info['storage_identifier'] == 'mcap'
    topics = {t['topic_metadata']['name']: t['topic_metadata'] for t in info['topics_with_message_count']}
    static = topics['/tf_static']['offered_qos_profiles']
    assert isinstance(static, str)                   # v8 layout: a YAML string (Humble/Iron readers)
    prof = yaml.safe_load(static)[0]
    assert prof['durability'] == 1 and prof['reliability'] == 1 and prof['depth'] == 1   # transient_local
    img = yaml.safe_load(topics['/CAM_FRONT/image_raw']['offered_qos_profiles'])[0]
    assert img['durability'] == 2 and img['reliability'] == 1 and img['depth'] == 10     # volatile


def test_sqlite3_compressed_bag(sqlite_bag, reference):
    _, frames = reference
    assert (sqlite_bag / 'metadata.yaml').exists() and list(sqlite_bag.glob('*.db3'))
    with BagReader(sqlite_bag) as r:
        assert r.storage == 'sqlite3'
        assert {t: s.count for t, s in r.topics.items()} == _expected_counts(True)
        stamps = [f.stamp_ns for f in frames]
        for raw, msg in r.messages([f'/{c}/image_raw/compressed' for c in CAMS]):
            assert 'jpeg' in msg.format
            img = cv2.cvtColor(cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            ref = frames[stamps.index(raw.stamp_ns)].views[CAMS.index(raw.topic.split('/')[1])].image
            mse = np.mean((img.astype(float) - ref) ** 2)
            assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 28          # PSNR of q90 JPEG
    gts = read_ground_truth(sqlite_bag)
    for f in frames:
        _assert_gt_equal(gts[f.stamp_ns], f.gt)


def test_writer_refuses_existing_output(mcap_bag):
    with pytest.raises(BagError, match='exists already'):
        write_synthetic_bag(mcap_bag[0], SECONDS, SEED, image_hw=HW)
    with pytest.raises(BagError, match='unknown storage'):
        write_synthetic_bag(mcap_bag[0].parent / 'x', SECONDS, SEED, image_hw=HW, storage='rosbag1')


def test_missing_bag_and_metadata(tmp_path):
    with pytest.raises(BagError, match='does not exist'):
        BagReader(tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match='no metadata.yaml'):
        BagReader(tmp_path / 'empty')


def _read_all(path):
    with BagReader(path) as r:
        for raw, _ in r.messages():
            pass


def test_truncated_mcap_raises_bag_error(mcap_bag, tmp_path):
    src, _ = mcap_bag
    dst = tmp_path / 'trunc'
    shutil.copytree(src, dst)
    f = next(dst.glob('*.mcap'))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match='corrupt|truncated'):
        _read_all(dst)


def test_corrupt_sqlite_raises_bag_error(sqlite_bag, tmp_path):
    dst = tmp_path / 'corrupt'
    shutil.copytree(sqlite_bag, dst)
    f = next(dst.glob('*.db3'))
    data = bytearray(f.read_bytes())
    data[:100] = b'\x00' * 100                             # destroy the SQLite header
    f.write_bytes(bytes(data))
    with pytest.raises(BagError, match='corrupt|truncated'):
        _read_all(dst)
    # a storage file listed in metadata.yaml but missing
    f.unlink()
    with pytest.raises(BagError):
        _read_all(dst)


def test_unknown_message_type_raises_bag_error(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    ts = get_typestore(Stores.ROS2_KILTED)
    ts.register(get_types_from_msg('float64 speed\nstring note', 'acme_msgs/msg/Widget'))
    out = tmp_path / 'foreign'
    with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection('/widget', 'acme_msgs/msg/Widget', typestore=ts)
        w.write(c, 1, ts.serialize_cdr(ts.types['acme_msgs/msg/Widget'](speed=1.0, note='x'),
                                       'acme_msgs/msg/Widget'))
    with pytest.raises(BagError, match=r'unknown message types: /widget \(acme_msgs/msg/Widget\)'):
        BagReader(out)


def test_quaternion_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.standard_normal(4)
        R = quaternion_to_matrix(q)
        x, y, z, w = matrix_to_quaternion(R)
        np.testing.assert_allclose(quaternion_to_matrix((w, x, y, z)), R, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# replay through rclpy to a real subscriber process
# ------------------------------------------------------------------------------------------------

_SUBSCRIBER = LISTENER_PRELUDE + textwrap.dedent('''
    import json, sys
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
    from sensor_msgs.msg import CompressedImage
    from rosgraph_msgs.msg import Clock
    topics = sys.argv[1].split(','); expect = int(sys.argv[2]); timeout = float(sys.argv[3])
    rclpy.init()
    node = rclpy.create_node('occ_ros_test_listener')
    got = {t: [] for t in topics}
    clocks = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    subs = [node.create_subscription(
        CompressedImage, t,
        lambda m, t=t: got[t].append([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, len(m.data)]), qos)
        for t in topics]
    node.create_subscription(Clock, '/clock', lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec), 10)
    ex = start_spinning(node)
    print('READY', flush=True)
    wait_until(lambda: sum(map(len, got.values())) >= expect, time.monotonic() + timeout)
    time.sleep(0.3)
    print(json.dumps({'got': got, 'clocks': clocks}), flush=True)
    ex.shutdown(timeout_sec=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
''')


@pytest.mark.ros
def test_player_replays_every_image_to_a_subscriber(sqlite_bag, reference):
    pytest.importorskip('rclpy')
    _, frames = reference
    topics = [f'/{c}/image_raw/compressed' for c in CAMS]
    play, result, _ = play_to_listener(
        ['-c', _SUBSCRIBER, ','.join(topics), str(len(topics) * len(frames)), '20'],
        [str(sqlite_bag), '--clock', '--rate', '2.0', '--wait-subscribers', '15'], listen_timeout=30)
    stamps = [f.stamp_ns for f in frames]
    for t in topics:
        assert [s for s, _ in result['got'][t]] == stamps, (t, result['got'][t])
        assert all(n > 100 for _, n in result['got'][t])
    assert set(stamps) <= set(result['clocks'])
    assert 'published' in play.stderr


@pytest.mark.ros
def test_player_endpoints_made_ahead_are_used_only_when_they_serve_the_bag(mcap_bag):
    """`PlayerEndpoints` made from `rig_topics` before the bag exists (the demo's): used for a bag
    of that layout; for a bag of another (raw images, not JPEG) they are closed and the player
    makes its own — every message is still published."""
    pytest.importorskip('rclpy')
    from occ_ros.bag.reader import BagReader
    from occ_ros.bag.writer import rig_topics
    from occ_ros.ros.player import PlayerEndpoints, TopicLayout, play
    out, summary = mcap_bag                                      # raw rgb8 images
    for compressed, used in ((False, True), (True, False)):
        ep = PlayerEndpoints({t: TopicLayout(m) for t, m, _ in rig_topics(nuscenes_rig(HW), compressed, True)})
        stats = play(BagReader(out), rate=20.0, wait_subscribers=0, endpoints=ep)
        assert ep.used is used and ep.node is None and not ep.context.ok()
        assert stats.published == summary.messages, (compressed, stats)
