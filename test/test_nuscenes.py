"""`occ-ros nuscenes-to-bag` on a tiny nuScenes-format dataset that the test writes itself.

The fixture: v1.0-mini-style JSON tables (all 13, so the devkit can load them too), one log, one
scene of three keyframe samples, six cameras with a keyframe and one sweep per sample each (own
timestamps, staggered like the real rig, own ego poses, small JPEGs of two sizes), a LIDAR_TOP
keyframe per sample, random camera rotations (so a w,x,y,z ↔ x,y,z,w mix-up shows), and an
Occ3D labels.npz per sample (one with Occ3D-panoptic `instances`).
The bag is read back with rosbags (the project's BagReader) and with the mcap library.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from occ_ros.bag import nuscenes as nu
from occ_ros.bag.reader import BagReader
from occ_ros.core.occupancy import stamp_ns_of
from occ_ros.bag.writer import GT_TOPIC, RIG_FILE, camera_frame_id, camera_info_topic, image_topic
from occ_ros.core.classes import FREE, THING_CLASSES
from occ_ros.core.config import NUSCENES_CAMERAS, GridSpec
from occ_ros.core.errors import BagError, OccRosError
from occ_ros.geometry import load_rig, quaternion_to_matrix
from occ_ros.core.occ3d import save_ground_truth
from occ_ros.core.occupancy import Occupancy

SCENE = 'scene-0061'
OTHER_SCENE = 'scene-0103'
VERSION = 'v1.0-mini'
N_SAMPLES = 3
SWEEPS = 1                          # sweeps per camera after each keyframe
KEY_PERIOD_US = 500_000             # 2 Hz keyframes
T0_US = 1_532_402_927_612_460
SMALL_HW = (36, 64)
BACK_HW = (40, 72)                  # CAM_BACK gets another size
VEL = np.array([5.0, 2.0, 0.01])    # global m/s of the ego
YAW_RATE = 0.1                      # rad/s

READERS = [pytest.param('json', id='json'),
           pytest.param('devkit', id='devkit', marks=pytest.mark.skipif(
               not nu.devkit_available(), reason='nuscenes-devkit is not importable here (install: pip '
                                                 'install --no-deps nuscenes-devkit; pip install matplotlib '
                                                 'scikit-learn pyquaternion tqdm cachetools)'))]


def tok(kind: str, *ix: int) -> str:
    body = ''.join(f'{i:06d}' for i in ix)
    return (kind + body).ljust(32, '0')[:32]


def quat_wxyz(rng: np.random.Generator) -> list[float]:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return [float(v) for v in q]


def ego_pose_at(us: int) -> tuple[list[float], list[float]]:
    """(translation, rotation wxyz) of the ego in the global frame at `us`: constant global velocity,
    yaw turning at YAW_RATE."""
    t = (us - T0_US) * 1e-6
    yaw = 0.3 + YAW_RATE * t
    pos = np.array([600.0, 1600.0, 0.0]) + VEL * t
    return [float(v) for v in pos], [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def make_dataset(root: Path, seed: int = 0, scale: int = 1) -> dict[str, Any]:
    """Write the fixture; returns what the checks need (tables by name, file bytes, GT arrays).
    scale: image sizes and intrinsics × scale (the node refuses images too small for the model)."""
    rng = np.random.default_rng(seed)
    small_hw = (SMALL_HW[0] * scale, SMALL_HW[1] * scale)
    back_hw = (BACK_HW[0] * scale, BACK_HW[1] * scale)
    tdir = root / VERSION
    tdir.mkdir(parents=True)
    log = {'token': tok('log', 0), 'logfile': 'n015-2018-07-24-11-22-45+0800', 'vehicle': 'n015',
           'date_captured': '2018-07-24', 'location': 'singapore-onenorth'}
    sensors, calibs = [], []
    for i, ch in enumerate(NUSCENES_CAMERAS + ('LIDAR_TOP',)):
        cam = ch != 'LIDAR_TOP'
        sensors.append({'token': tok('sen', i), 'channel': ch, 'modality': 'camera' if cam else 'lidar'})
        hw = back_hw if ch == 'CAM_BACK' else small_hw
        fx = float(rng.uniform(40, 80)) * scale
        K = [[fx, 0.0, hw[1] / 2 + float(rng.uniform(-2, 2))], [0.0, fx * 1.01, hw[0] / 2 + 0.5], [0.0, 0.0, 1.0]]
        calibs.append({'token': tok('cs', i), 'sensor_token': tok('sen', i),
                       'translation': [float(v) for v in rng.uniform(-2, 2, 3)], 'rotation': quat_wxyz(rng),
                       'camera_intrinsic': K if cam else []})
    cs_of = {s['channel']: c for s, c in zip(sensors, calibs)}
    samples: list[dict[str, Any]] = []
    sample_data: list[dict[str, Any]] = []
    ego_poses: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    # camera stamps relative to the LIDAR_TOP keyframe, roughly as in v1.0-mini scene-0061 (the
    # cameras fire as the lidar sweeps past them: ≈ 43 ms spread)
    cam_offsets_us = dict(zip(NUSCENES_CAMERAS, (-43_107, -35_491, -27_612, -528, -10_426, -20_058)))
    prev_of: dict[str, str] = {}

    def add_sd(ch: str, k: int, j: int, us: int, key: bool) -> None:
        sd_tok = tok('sd', NUSCENES_CAMERAS.index(ch) if ch in NUSCENES_CAMERAS else 9, k, j)
        ep_tok = tok('ep', NUSCENES_CAMERAS.index(ch) if ch in NUSCENES_CAMERAS else 9, k, j)
        trans, rot = ego_pose_at(us)
        ego_poses.append({'token': ep_tok, 'timestamp': us, 'rotation': rot, 'translation': trans})
        if ch == 'LIDAR_TOP':
            fname, h, w, fmt = f'samples/LIDAR_TOP/{log["logfile"]}__LIDAR_TOP__{us}.pcd.bin', 0, 0, 'pcd'
        else:
            h, w = back_hw if ch == 'CAM_BACK' else small_hw
            fname = f'{"samples" if key else "sweeps"}/{ch}/{log["logfile"]}__{ch}__{us}.jpg'
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            ok, buf = cv2.imencode('.jpg', img, [int(cv2.IMWRITE_JPEG_QUALITY), 80])
            assert ok
            (root / fname).parent.mkdir(parents=True, exist_ok=True)
            (root / fname).write_bytes(buf.tobytes())
            files[fname] = buf.tobytes()
            fmt = 'jpg'
        rec = {'token': sd_tok, 'sample_token': tok('smp', k), 'ego_pose_token': ep_tok,
               'calibrated_sensor_token': cs_of[ch]['token'], 'timestamp': us, 'fileformat': fmt,
               'is_key_frame': key, 'height': h, 'width': w, 'filename': fname,
               'prev': prev_of.get(ch, ''), 'next': ''}
        if ch in prev_of:
            next(r for r in sample_data if r['token'] == prev_of[ch])['next'] = sd_tok
        prev_of[ch] = sd_tok
        sample_data.append(rec)

    for k in range(N_SAMPLES):
        key_us = T0_US + k * KEY_PERIOD_US
        samples.append({'token': tok('smp', k), 'timestamp': key_us, 'scene_token': tok('scn', 0),
                        'prev': tok('smp', k - 1) if k else '', 'next': tok('smp', k + 1) if k + 1 < N_SAMPLES else ''})
        add_sd('LIDAR_TOP', k, 0, key_us, True)
        for ch in NUSCENES_CAMERAS:
            add_sd(ch, k, 0, key_us + cam_offsets_us[ch], True)
            for j in range(1, SWEEPS + 1):
                add_sd(ch, k, j, key_us + cam_offsets_us[ch] + j * 83_333, False)
    scenes = [{'token': tok('scn', 0), 'log_token': log['token'], 'nbr_samples': N_SAMPLES,
               'first_sample_token': samples[0]['token'], 'last_sample_token': samples[-1]['token'],
               'name': SCENE, 'description': 'tiny fixture'},
              # a second scene without samples in the tables' scene list: only its name matters here
              {'token': tok('scn', 1), 'log_token': log['token'], 'nbr_samples': 0, 'first_sample_token': '',
               'last_sample_token': '', 'name': OTHER_SCENE, 'description': 'empty'}]
    tables: dict[str, list[dict[str, Any]]] = {
        'log': [log], 'sensor': sensors, 'calibrated_sensor': calibs, 'scene': scenes, 'sample': samples,
        'sample_data': sample_data, 'ego_pose': ego_poses,
        'category': [], 'attribute': [], 'visibility': [], 'instance': [], 'sample_annotation': [],
        'map': [{'token': tok('map', 0), 'log_tokens': [log['token']], 'category': 'semantic_prior',
                 'filename': 'maps/fixture.png'}],
    }
    for name, recs in tables.items():
        (tdir / f'{name}.json').write_text(json.dumps(recs, indent=0))
    (root / 'maps').mkdir()
    cv2.imwrite(str(root / 'maps' / 'fixture.png'), np.zeros((4, 4), np.uint8))   # the devkit checks it exists

    grid = GridSpec()
    gts: dict[str, Occupancy] = {}
    for k, s in enumerate(samples):
        sem = rng.integers(0, FREE + 1, grid.shape).astype(np.uint8)
        inst = None
        if k == 1:                         # Occ3D-panoptic: ids on a block, partly over stuff voxels
            inst = np.zeros(grid.shape, np.uint8)
            sem[100:103, 50:52, 3:5] = 4       # a car, 12 voxels
            inst[100:103, 50:52, 3:5] = 7
            sem[10:12, 10:12, 0] = 13          # sidewalk carrying an id: must be dropped
            inst[10:12, 10:12, 0] = 9
            sem[20, 20, 2] = 10                # a one-voxel truck
            inst[20, 20, 2] = 3
        gt = Occupancy(sem, inst, mask_camera=rng.random(grid.shape) < 0.3, mask_lidar=rng.random(grid.shape) < 0.5)
        save_ground_truth(root / 'gts' / SCENE / s['token'] / 'labels.npz', gt)
        gts[s['token']] = gt
    return {'tables': tables, 'files': files, 'gts': gts, 'root': root}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_dataset(tmp_path_factory.mktemp('nuscenes') / 'nuscenes')


def fresh_copy(dataset: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the dataset (for tests that break it)."""
    dst = tmp_path / 'nuscenes'
    shutil.copytree(dataset['root'], dst)
    return dst


def matrix(rec: dict[str, Any]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rec['rotation'])
    T[:3, 3] = rec['translation']
    return T


def tf_matrix(tr: Any) -> np.ndarray:
    q = tr.transform.rotation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix([q.w, q.x, q.y, q.z])
    T[:3, 3] = [tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z]
    return T


def pose_matrix(p: Any) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix([p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z])
    T[:3, 3] = [p.position.x, p.position.y, p.position.z]
    return T


# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module', params=READERS)
def converted(request: pytest.FixtureRequest, dataset: dict[str, Any],
              tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], nu.NuScenesBagSummary]:
    out = tmp_path_factory.mktemp(f'bag_{request.param}') / 'bag'
    progress: list[tuple[int, int]] = []
    summary = nu.convert_scene(dataset['root'], VERSION, SCENE, out, occ_gts=dataset['root'] / 'gts',
                               reader=request.param, progress=lambda d, t, e: progress.append((d, t)),
                               progress_every=50)
    assert summary.reader == request.param
    assert progress[-1][0] == progress[-1][1] == summary.messages
    assert all(b - a == 50 for (a, _), (b, _) in zip(progress[:-2], progress[1:-1]))
    return dataset, summary


def test_topics_counts_and_order(converted: tuple[dict[str, Any], nu.NuScenesBagSummary]) -> None:
    ds, s = converted
    per_cam = N_SAMPLES * (1 + SWEEPS)
    sd = ds['tables']['sample_data']
    n_poses = len({r['timestamp'] for r in sd})            # every sample_data has its own stamp here
    with BagReader(s.path) as r:
        topics = {t: v.count for t, v in r.topics.items()}
        expected = {'/tf_static': 1, '/tf': n_poses, '/odom': n_poses, GT_TOPIC: N_SAMPLES}
        for c in NUSCENES_CAMERAS:
            expected[image_topic(c, True)] = per_cam
            expected[camera_info_topic(c)] = per_cam
        assert topics == expected
        assert s.topics == expected and s.messages == sum(expected.values())
        stamps = [m.stamp_ns for m in r.raw_messages()]
        assert stamps == sorted(stamps)
        assert stamps[0] == r.start_ns == min(x['timestamp'] for x in sd) * 1000
        assert stamps[-1] == max(x['timestamp'] for x in sd) * 1000      # (rosbags' end_ns is last + 1)
        for raw, msg in r.messages():                       # every message decodes, header = bag stamp
            if raw.topic in ('/tf', '/tf_static'):
                assert all(stamp_ns_of(t) == raw.stamp_ns for t in msg.transforms)
            else:
                assert stamp_ns_of(msg) == raw.stamp_ns


def test_images_bytes_stamps_and_camera_info(converted: tuple[dict[str, Any], nu.NuScenesBagSummary]) -> None:
    ds, s = converted
    cs = {c['token']: c for c in ds['tables']['calibrated_sensor']}
    sd_by_cam: dict[str, list[dict[str, Any]]] = {c: [] for c in NUSCENES_CAMERAS}
    for r in ds['tables']['sample_data']:
        ch = r['filename'].split('/')[1]
        if ch in sd_by_cam:
            sd_by_cam[ch].append(r)
    with BagReader(s.path) as r:
        for c in NUSCENES_CAMERAS:
            recs = sorted(sd_by_cam[c], key=lambda x: x['timestamp'])
            imgs = [(raw, m) for raw, m in r.messages([image_topic(c, True)])]
            infos = [m for _, m in r.messages([camera_info_topic(c)])]
            assert [raw.stamp_ns for raw, _ in imgs] == [x['timestamp'] * 1000 for x in recs]   # µs → ns
            for (raw, m), rec, info in zip(imgs, recs, infos):
                assert m.format == 'jpeg'
                assert m.header.frame_id == camera_frame_id(c) == info.header.frame_id
                assert bytes(np.asarray(m.data, dtype=np.uint8)) == ds['files'][rec['filename']]
                assert stamp_ns_of(info) == raw.stamp_ns
                K = np.array(cs[rec['calibrated_sensor_token']]['camera_intrinsic'])
                np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), K)
                np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4)[:, :3], K)
                assert (info.height, info.width) == (BACK_HW if c == 'CAM_BACK' else SMALL_HW)
                assert not np.any(np.asarray(info.d))
            # the bytes decode to an image of the advertised size
            dec = cv2.imdecode(np.asarray(imgs[0][1].data, dtype=np.uint8), cv2.IMREAD_COLOR)
            assert dec is not None and dec.shape[:2] == (infos[0].height, infos[0].width)


def test_tf_static_and_rig_equal_calibrated_sensor(converted: tuple[dict[str, Any], nu.NuScenesBagSummary]) -> None:
    ds, s = converted
    cs = {sen['channel']: c for sen, c in zip(ds['tables']['sensor'], ds['tables']['calibrated_sensor'])}
    with BagReader(s.path) as r:
        (_, msg), = list(r.messages(['/tf_static']))
    by_child = {t.child_frame_id: t for t in msg.transforms}
    assert set(by_child) == {camera_frame_id(c) for c in NUSCENES_CAMERAS} | {'odom'}
    rig = load_rig(s.path / RIG_FILE)
    assert rig.names == NUSCENES_CAMERAS
    for c in NUSCENES_CAMERAS:
        t = by_child[camera_frame_id(c)]
        assert t.header.frame_id == 'base_link'
        rec = cs[c]
        tr = t.transform.translation
        np.testing.assert_allclose([tr.x, tr.y, tr.z], rec['translation'], rtol=0, atol=1e-12)
        w, x, y, z = rec['rotation']                          # nuScenes order is w, x, y, z
        q = t.transform.rotation
        sign = 1.0 if q.w * w + q.x * x + q.y * y + q.z * z > 0 else -1.0
        np.testing.assert_allclose([q.x, q.y, q.z, q.w], [sign * x, sign * y, sign * z, sign * w], atol=1e-9)
        cam = rig.camera(c)
        np.testing.assert_allclose(cam.sensor2ego, matrix(rec), atol=1e-12)
        np.testing.assert_array_equal(cam.K, np.array(rec['camera_intrinsic']))
        assert cam.image_hw == (BACK_HW if c == 'CAM_BACK' else SMALL_HW)
    # map → odom is the first ego pose of the scene
    first = min(ds['tables']['ego_pose'], key=lambda e: e['timestamp'])
    assert by_child['odom'].header.frame_id == 'map'
    np.testing.assert_allclose(tf_matrix(by_child['odom']), matrix(first), atol=1e-9)


def test_odometry_equals_ego_pose(converted: tuple[dict[str, Any], nu.NuScenesBagSummary]) -> None:
    ds, s = converted
    ep = {e['timestamp'] * 1000: e for e in ds['tables']['ego_pose']}
    with BagReader(s.path) as r:
        (_, st), = list(r.messages(['/tf_static']))
        T_map_odom = tf_matrix(next(t for t in st.transforms if t.child_frame_id == 'odom'))
        odo = list(r.messages(['/odom']))
        tfs = list(r.messages(['/tf']))
    assert sorted(ep) == [raw.stamp_ns for raw, _ in odo] == [raw.stamp_ns for raw, _ in tfs]
    np.testing.assert_allclose(pose_matrix(odo[0][1].pose.pose), np.eye(4), atol=1e-12)
    speed = float(np.linalg.norm(VEL))
    for (raw, m), (_, tf) in zip(odo, tfs):
        assert (m.header.frame_id, m.child_frame_id) == ('odom', 'base_link')
        G = matrix(ep[raw.stamp_ns])                             # T_global_ego from the table
        np.testing.assert_allclose(T_map_odom @ pose_matrix(m.pose.pose), G, atol=1e-9)
        (t,), = [tf.transforms]
        assert (t.header.frame_id, t.child_frame_id) == ('odom', 'base_link')
        np.testing.assert_allclose(T_map_odom @ tf_matrix(t), G, atol=1e-9)
        # constant global velocity and yaw rate: exact under central differences
        lin = m.twist.twist.linear
        assert math.isclose(math.hypot(lin.x, lin.y, lin.z), speed, rel_tol=1e-6)
        R = G[:3, :3]
        np.testing.assert_allclose([lin.x, lin.y, lin.z], R.T @ VEL, atol=1e-6)
        assert math.isclose(m.twist.twist.angular.z, YAW_RATE, rel_tol=1e-6)


def test_ground_truth_round_trip_and_stamps(converted: tuple[dict[str, Any], nu.NuScenesBagSummary]) -> None:
    ds, s = converted
    lidar = {r['sample_token']: r['timestamp'] * 1000 for r in ds['tables']['sample_data']
             if r['filename'].startswith('samples/LIDAR_TOP')}
    with BagReader(s.path) as r:
        gts = r.ground_truth()
        msgs = [m for _, m in r.messages([GT_TOPIC])]
    assert sorted(gts) == sorted(lidar.values())              # stamped at the LIDAR_TOP keyframe
    assert all(m.header.frame_id == 'base_link' for m in msgs)
    things = np.fromiter(THING_CLASSES, dtype=np.int64)
    for token, stamp in lidar.items():
        ref, got = ds['gts'][token], gts[stamp]
        np.testing.assert_array_equal(got.semantics, ref.semantics)
        np.testing.assert_array_equal(got.mask_camera, ref.mask_camera)
        if ref.instances is None:
            assert not got.instances.any() and not got.instance_table
        else:
            keep = np.isin(ref.semantics, things)
            np.testing.assert_array_equal(got.instances, np.where(keep, ref.instances, 0))
            table = {i.id: i for i in got.instance_table}
            assert set(table) == {3, 7}                        # id 9 sat on sidewalk voxels only
            car = table[7]
            assert (car.label, car.voxel_count) == (4, 12)
            grid = GridSpec()
            expect = [grid.lower[a] + (c + 0.5) * grid.voxel[a] for a, c in enumerate((101.0, 50.5, 3.5))]
            np.testing.assert_allclose(car.center, expect, atol=1e-9)
            assert (table[3].label, table[3].voxel_count) == (10, 1)
    meta = json.loads((s.path / nu.SCENE_FILE).read_text())
    assert [k['stamp_ns'] for k in meta['keyframes']] == [lidar[k['sample_token']] for k in meta['keyframes']]
    assert all(k['ground_truth'] for k in meta['keyframes'])
    for k in meta['keyframes']:                                # the keyframe camera stamps, for pairing
        assert len(k['camera_stamps_ns']) == len(NUSCENES_CAMERAS)
        assert all(abs(v - k['stamp_ns']) <= 50_000_000 for v in k['camera_stamps_ns'].values())


def test_mcap_library_reads_the_bag(converted: tuple[dict[str, Any], nu.NuScenesBagSummary]) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    ds, s = converted
    (path,) = list(s.path.glob('*.mcap'))
    counts: dict[str, int] = {}
    with open(path, 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == GT_TOPIC:
                stamp = decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec
                assert stamp == message.log_time
                assert len(decoded.semantics) == int(np.prod(GridSpec().shape))
            elif channel.topic.endswith('/compressed'):
                assert decoded.format == 'jpeg'
                assert bytes(decoded.data) in ds['files'].values()
    assert counts == s.topics


# ---------------------------------------------------------------------------------------------

def test_sqlite3_keyframes_only_and_cli(dataset: dict[str, Any], tmp_path: Path) -> None:
    from occ_ros.apps.cli import main
    out = tmp_path / 'kf'
    assert main(['nuscenes-to-bag', '--dataroot', str(dataset['root']), '--version', VERSION, '--scene', SCENE,
                 '--out', str(out), '--storage', 'sqlite3', '--keyframes-only', '--reader', 'json',
                 '--quiet']) == 0
    assert list(out.glob('*.db3'))
    with BagReader(out) as r:
        assert r.storage == 'sqlite3'
        topics = {t: v.count for t, v in r.topics.items()}
        for c in NUSCENES_CAMERAS:
            stamps = [m.stamp_ns for m in r.raw_messages([image_topic(c, True)])]
            keys = sorted(x['timestamp'] * 1000 for x in dataset['tables']['sample_data']
                          if x['is_key_frame'] and x['filename'].split('/')[1] == c)
            assert stamps == keys
        assert GT_TOPIC not in topics                  # no --occ-gts: no ground-truth topic
        assert topics['/odom'] == N_SAMPLES * (len(NUSCENES_CAMERAS) + 1)
    # unknown scene through the CLI: exit code 1 and no bag
    assert main(['nuscenes-to-bag', '--dataroot', str(dataset['root']), '--scene', 'scene-9999',
                 '--out', str(tmp_path / 'x'), '--reader', 'json', '--quiet']) == 1
    assert not (tmp_path / 'x').exists()


@pytest.mark.parametrize('reader', READERS)
def test_unknown_scene_lists_the_available_ones(dataset: dict[str, Any], tmp_path: Path, reader: str) -> None:
    with pytest.raises(nu.NuScenesError, match=r"unknown scene 'scene-9999'.*scene-0061, scene-0103"):
        nu.convert_scene(dataset['root'], VERSION, 'scene-9999', tmp_path / 'b', reader=reader)
    assert not (tmp_path / 'b').exists()


@pytest.mark.parametrize('reader', READERS)
def test_missing_images_are_listed_and_no_bag_is_left(dataset: dict[str, Any], tmp_path: Path, reader: str) -> None:
    root = fresh_copy(dataset, tmp_path)
    gone = sorted(f for f in dataset['files'] if f.startswith('sweeps/CAM_BACK_LEFT'))
    for f in gone:
        (root / f).unlink()
    with pytest.raises(nu.NuScenesError) as ei:
        nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', reader=reader)
    msg = str(ei.value)
    assert f'{len(gone)} image file(s)' in msg and all(f in msg for f in gone)
    assert not (tmp_path / 'b').exists()
    # keyframes only needs no sweeps: converts
    s = nu.convert_scene(root, VERSION, SCENE, tmp_path / 'k', reader=reader, keyframes_only=True)
    assert s.images == N_SAMPLES * len(NUSCENES_CAMERAS)


def test_dataroot_version_and_table_errors(dataset: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(nu.NuScenesError, match='dataroot .* does not exist'):
        nu.convert_scene(tmp_path / 'nope', VERSION, SCENE, tmp_path / 'b', reader='json')
    with pytest.raises(nu.NuScenesError, match=r"unknown nuScenes version 'v1.0-trainval'.*\['v1.0-mini'\]"):
        nu.convert_scene(dataset['root'], 'v1.0-trainval', SCENE, tmp_path / 'b', reader='json')
    root = fresh_copy(dataset, tmp_path)
    tdir = root / VERSION
    good = (tdir / 'sample_data.json').read_text()
    (tdir / 'sample_data.json').write_text(good[:-40])               # truncated JSON
    with pytest.raises(nu.NuScenesError, match=r'sample_data.json is not valid JSON \(line'):
        nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', reader='json')
    recs = json.loads(good)
    recs[3]['ego_pose_token'] = 'f' * 32                             # dangling reference
    (tdir / 'sample_data.json').write_text(json.dumps(recs))
    with pytest.raises(nu.NuScenesError, match=r"ego_pose.json has no record with token 'f{32}'"):
        nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', reader='json')
    recs = json.loads(good)
    del recs[5]['timestamp']                                         # missing field
    (tdir / 'sample_data.json').write_text(json.dumps(recs))
    with pytest.raises(nu.NuScenesError, match=r"lacks the field 'timestamp'"):
        nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', reader='json')
    (tdir / 'sample_data.json').write_text(good)
    (tdir / 'ego_pose.json').unlink()
    with pytest.raises(nu.NuScenesError, match='ego_pose.json is missing'):
        nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', reader='json')
    if nu.devkit_available():
        with pytest.raises(nu.NuScenesError, match='needs all v1.0 tables .* ego_pose.json'):
            nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', reader='devkit')
    assert not (tmp_path / 'b').exists()
    assert isinstance(nu.NuScenesError('x'), BagError) and isinstance(nu.NuScenesError('x'), OccRosError)


def test_missing_ground_truth(dataset: dict[str, Any], tmp_path: Path) -> None:
    root = fresh_copy(dataset, tmp_path)
    token = dataset['tables']['sample'][1]['token']
    shutil.rmtree(root / 'gts' / SCENE / token)
    with pytest.raises(nu.NuScenesError, match=f'1 of {N_SAMPLES} keyframe sample.*{token}'):
        nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', occ_gts=root / 'gts', reader='json')
    s = nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', occ_gts=root / 'gts', reader='json',
                         skip_missing_gt=True, keyframes_only=True)
    assert s.gt_frames == N_SAMPLES - 1
    meta = json.loads((s.path / nu.SCENE_FILE).read_text())
    assert [k['ground_truth'] for k in meta['keyframes']] == [True, False, True]


def test_calibration_change_within_scene_is_refused(dataset: dict[str, Any], tmp_path: Path) -> None:
    root = fresh_copy(dataset, tmp_path)
    tdir = root / VERSION
    cs = json.loads((tdir / 'calibrated_sensor.json').read_text())
    moved = dict(cs[1], token='c' * 32, translation=[v + 0.1 for v in cs[1]['translation']])
    (tdir / 'calibrated_sensor.json').write_text(json.dumps(cs + [moved]))
    sd = json.loads((tdir / 'sample_data.json').read_text())
    last = [r for r in sd if r['calibrated_sensor_token'] == cs[1]['token']][-1]
    last['calibrated_sensor_token'] = moved['token']
    (tdir / 'sample_data.json').write_text(json.dumps(sd))
    with pytest.raises(nu.NuScenesError, match='CAM_FRONT has differing calibrated_sensor records'):
        nu.convert_scene(root, VERSION, SCENE, tmp_path / 'b', reader='json')


def test_ego_twists_against_an_analytic_circle() -> None:
    """Central differences on a circle of radius r at angular rate w: speed r·w along body x, yaw rate w."""
    r, w = 10.0, 0.2
    stamps = [int(i * 0.05e9) for i in range(20)]
    poses = []
    for st in stamps:
        a = w * st * 1e-9
        T = np.eye(4)
        T[:3, :3] = quaternion_to_matrix([math.cos(a / 2), 0, 0, math.sin(a / 2)])
        T[:3, 3] = [r * math.sin(a), r * (1 - math.cos(a)), 0.0]
        poses.append(T)
    lin, ang = nu.ego_twists(stamps, poses)
    chord = 2 * r * math.sin(w * 0.05) / 0.1                      # central difference of the arc
    np.testing.assert_allclose(lin[1:-1, 0], chord, rtol=1e-9)
    np.testing.assert_allclose(lin[1:-1, 1:], 0.0, atol=1e-9)
    np.testing.assert_allclose(ang[:, 2], w, rtol=1e-9)
    np.testing.assert_allclose(ang[:, :2], 0.0, atol=1e-12)


@pytest.mark.skipif(not nu.devkit_available(), reason='needs the nuscenes-devkit (scripts/setup.sh installs it)')
def test_auto_reader_falls_back_when_the_devkit_refuses_the_dataset(dataset: dict[str, Any], tmp_path: Path) -> None:
    """The devkit refuses a dataset without maps/*.png, which the converter never uses: `--reader
    auto` reads the JSON tables instead of reporting malformed tables; `--reader devkit` still
    names the devkit's refusal."""
    import shutil
    from occ_ros.bag.nuscenes.tables import JsonTables
    root = tmp_path / 'nomaps'
    shutil.copytree(dataset['root'], root)
    shutil.rmtree(root / 'maps')
    assert isinstance(nu.open_tables(root, VERSION, 'auto'), JsonTables)
    with pytest.raises(nu.NuScenesError):
        nu.open_tables(root, VERSION, 'devkit')


@pytest.mark.ros
@pytest.mark.slow
def test_a_converted_nuscenes_scene_replays_through_the_node_and_scores_every_key_frame(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end on the nuScenes-format fixture (images ×3 so that the node accepts them): convert
    the scene, replay the bag through a real node process over DDS, score. The node's backend
    answers with the bag's ground truth (test/ros_helpers/gt_node.py, test only), so every score
    must be 100 — and every key frame must be scored: the outputs carry the camera set's stamp
    (CAM_FRONT_LEFT fires 43 ms before LIDAR_TOP, where the ground truth is stamped), so pairing by
    stamp alone scored 0 of 3 before replay paired by sample (issue #15)."""
    import sys

    pytest.importorskip('rclpy', reason='needs the ROS 2 Python wheels')
    from occ_ros.apps.replay import run_replay

    data = make_dataset(tmp_path / 'nuscenes', seed=4, scale=3)
    bag = tmp_path / 'bag'
    nu.convert_scene(data['root'], VERSION, SCENE, bag, occ_gts=data['root'] / 'gts', reader='json')
    monkeypatch.setenv('OCC_ROS_TEST_GT_BAG', str(bag))
    helper = Path(__file__).resolve().parent / 'ros_helpers' / 'gt_node.py'
    report = run_replay(bag, tmp_path / 'report', model='lite', backend='torch', rate=0.25,
                        node_executable=[sys.executable, str(helper)], startup_timeout_s=120.0, max_pictures=1)
    assert report.keyframes == (N_SAMPLES, N_SAMPLES), report.notes
    assert report.scores.semantic.miou == pytest.approx(100.0)
    assert report.scores.ray_iou.rayiou == pytest.approx(100.0)
    doc = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert doc['keyframes_scored'] == {'scored': N_SAMPLES, 'with_ground_truth': N_SAMPLES}
