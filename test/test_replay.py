"""Rosbag replay scoring end to end: synthetic bag → real node process over DDS → metrics → report.

The node runs with a test-only ground-truth backend (test/ros_helpers/gt_node.py), so every
metric must be 100: anything less is a fault in the node, the messages, the stamp matching or the
metrics (one test moves its answer by 2 voxels to compare figures computed two ways). Real rclpy,
real Fast DDS on loopback, real rosbag2 files.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy', reason='needs the ROS 2 Python wheels (scripts/setup.sh installs them)')

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope='module')
def small_bag(tmp_path_factory):
    from occ_ros.bag.writer import write_synthetic_bag
    bag = tmp_path_factory.mktemp('replay') / 'bag'
    write_synthetic_bag(bag, seconds=1.0, seed=77, rate=6.0, image_hw=(450, 800), compressed=True)
    return bag


@pytest.mark.ros
def test_replay_with_ground_truth_backend_scores_perfectly(small_bag, tmp_path, monkeypatch):
    from occ_ros.bag.reader import read_ground_truth
    from occ_ros.apps.replay import run_replay

    monkeypatch.setenv('OCC_ROS_TEST_GT_BAG', str(small_bag))
    out = tmp_path / 'report'
    lines: list[str] = []
    # played at 1/4 speed so the node keeps up even on a loaded 2-core machine: this test is about
    # wiring and metrics, not throughput (dropped sets are a test of their own in test_ros_node)
    # the player's publishers made before the bag is opened, from the layout the synthetic writer
    # gives its bags (the demo makes them while it renders, so that discovery overlaps rendering)
    from occ_ros.bag.writer import rig_topics
    from occ_ros.geometry import nuscenes_rig
    from occ_ros.ros.player import PlayerEndpoints, TopicLayout
    player = PlayerEndpoints({t: TopicLayout(m) for t, m, _ in rig_topics(nuscenes_rig((450, 800)), True, True)})
    report = run_replay(small_bag, out, model='lite', backend='torch', rate=0.25,
                        node_executable=[sys.executable, str(HERE / 'ros_helpers' / 'gt_node.py')],
                        startup_timeout_s=60.0, max_pictures=2, progress=lines.append, player=player)
    assert player.used and player.node is None           # played through, then closed
    gt = read_ground_truth(small_bag)
    assert report.frames_in_bag == len(gt) == 6          # 1 s at 6 Hz
    # the node is interrupted once drained and shuts down while the outputs are scored; its exit
    # is awaited after that, and it is a clean one
    said = [next((i for i, line in enumerate(lines) if line.startswith(w)), -1) for w in ('scoring', 'node stopped')]
    assert 0 <= said[0] < said[1], lines
    assert lines[said[1]] == 'node stopped (exit code 0)', lines
    # every camera set is either scored or counted as dropped by the node (latest-only slot)
    assert report.matched >= 3
    assert report.matched + (report.dropped_sets or 0) >= len(gt) - 1
    s = report.scores
    assert s.semantic.miou == pytest.approx(100.0)
    assert s.ray_iou.rayiou == pytest.approx(100.0)
    assert s.ray_pq.raypq == pytest.approx(100.0, abs=0.5)
    assert report.latency_p50_ms is not None and report.latency_p50_ms > 0
    data = json.loads((out / 'report.json').read_text())
    assert data['scores']['miou'] == pytest.approx(100.0)
    assert data['matched'] == report.matched
    md = (out / 'report.md').read_text()
    assert 'mIoU' in md and 'frame_00.png' in md
    assert len(report.pictures) == 2 and all(os.path.getsize(p) > 10_000 for p in report.pictures)


@pytest.mark.ros
def test_saved_predictions_of_a_replay_rescore_to_its_figures(small_bag, tmp_path, monkeypatch):
    """Issue #15: `occ-ros eval --bag B --save-pred D` (run_replay, what it calls) followed by
    `occ-ros eval --pred D/pred --gt D/gt` gives the replay's mIoU, RayIoU and RayPQ to 0.01.
    The node answers with the ground truth moved 2 voxels along x, so the figures are neither 0
    nor 100; re-scoring from one origin gives other figures, so the official origins written
    with the ground truth were really read back."""
    from occ_ros.apps.cli import main as cli_main
    from occ_ros.apps.replay import run_replay

    monkeypatch.setenv('OCC_ROS_TEST_GT_BAG', str(small_bag))
    monkeypatch.setenv('OCC_ROS_TEST_GT_SHIFT', '2')
    saved = tmp_path / 'saved'
    report = run_replay(small_bag, tmp_path / 'report', model='lite', backend='torch', rate=0.25,
                        node_executable=[sys.executable, str(HERE / 'ros_helpers' / 'gt_node.py')],
                        startup_timeout_s=60.0, max_pictures=0, save_pred=saved)
    s = report.scores
    assert report.matched >= 3
    assert 5 < s.semantic.miou < 95 and 5 < s.ray_iou.rayiou < 95
    assert len(list((saved / 'pred').rglob('*.npz'))) == report.matched
    for origins, out in (('auto', tmp_path / 'again.json'), ('single', tmp_path / 'single.json')):
        assert cli_main(['eval', '--pred', str(saved / 'pred'), '--gt', str(saved / 'gt'), '--json', str(out),
                         '--origins-from', origins, '--quiet']) == 0
    again = json.loads((tmp_path / 'again.json').read_text())
    single = json.loads((tmp_path / 'single.json').read_text())
    assert again['num_frames'] == report.matched
    assert again['miou'] == pytest.approx(s.semantic.miou, abs=0.01)
    assert again['rayiou'] == pytest.approx(s.ray_iou.rayiou, abs=0.01)
    assert again['raypq'] == pytest.approx(s.ray_pq.raypq, abs=0.01)
    assert abs(single['rayiou'] - s.ray_iou.rayiou) > 0.01


@pytest.mark.ros
def test_replay_names_the_failure_when_the_node_cannot_start(small_bag, tmp_path):
    from occ_ros.apps.replay import ReplayError, run_replay

    with pytest.raises(ReplayError, match='exited with code'):
        run_replay(small_bag, tmp_path / 'r', model='no-such-model', backend='torch', startup_timeout_s=60.0)


def test_a_picture_tile_decodes_a_jpeg_at_the_dct_scale_of_the_tile():
    """The pictures' camera tiles decode a JPEG at libjpeg's scaled IDCT (1/2, 1/4, 1/8) when the
    tile is narrower: the reference is the full decode shrunk by pixel-area averaging (OpenCV's
    INTER_AREA), which a scaled IDCT approximates — within two grey levels on average here."""
    import cv2
    import numpy as np
    from sensor_msgs.msg import CompressedImage

    from occ_ros.apps.replay import tile_image

    rng = np.random.default_rng(5)
    for w, h, expect_w in ((1600, 900, 400), (640, 480, 320), (300, 200, 300)):
        # smooth content (as a camera's): a low-resolution random field upscaled
        small = rng.integers(0, 256, (h // 20 + 1, w // 20 + 1, 3), dtype=np.uint8)
        rgb = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        msg = CompressedImage(format='rgb8; jpeg compressed bgr8', data=buf.tobytes())
        tile = tile_image(msg, tile_width=320)
        assert tile.shape == (h * expect_w // w, expect_w, 3)
        full = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        ref = cv2.resize(full, (tile.shape[1], tile.shape[0]), interpolation=cv2.INTER_AREA)
        assert np.abs(tile.astype(np.int16) - ref.astype(np.int16)).mean() < 2.0
    # an unreadable header: decoded in full, so the decoder names the damage
    from occ_ros.core.errors import ImageError
    with pytest.raises(ImageError):
        tile_image(CompressedImage(format='jpeg', data=b'\xff\xd8garbage'))


def test_pictures_drawn_on_two_threads_are_the_pictures_drawn_on_one(small_bag, tmp_path, monkeypatch):
    """The pages are drawn in parallel (`PICTURE_THREADS`): every PNG is byte for byte the one a
    single thread draws, in the same order (the pages share the read messages, nothing else). The
    camera images are read in a window around each picture's stamp; when a window misses them (a
    recorder lagging more than `RECORD_LAG_NS`; here: windows that end before the stamp), the whole
    bag is read and the pictures are the same."""
    from types import SimpleNamespace

    from occ_ros.apps import replay
    from occ_ros.apps.replay import write_pictures
    from occ_ros.bag.reader import BagReader
    from occ_ros.core.occupancy import Occupancy
    from occ_ros.metrics.evaluate import EvalSample

    with BagReader(small_bag) as reader:
        gt = reader.ground_truth()
        stamps = sorted(gt)[:3]
        outputs = SimpleNamespace(
            panoptic={s: SimpleNamespace(semantics=gt[s].semantics, mask_camera=None) for s in stamps},
            processing_ms={s: 10.0 * i for i, s in enumerate(stamps)}, missing_cameras={stamps[1]: ('CAM_BACK',)})
        samples = [EvalSample(str(s), Occupancy(gt[s].semantics, gt[s].instances), gt[s], None) for s in stamps]
        reads: list = []
        real = reader.messages
        monkeypatch.setattr(reader, 'messages', lambda topics, *window: reads.append(window) or real(topics, *window))
        pages, full_scans = {}, {}
        for run, threads in (('one', 1), ('two', 2), ('lagging', 2)):
            if run == 'lagging':
                monkeypatch.setattr(replay, 'RECORD_LAG_NS', -10**9)
            (tmp_path / run).mkdir()
            reads.clear()
            paths = write_pictures(reader, tmp_path / run, outputs, gt, sorted(gt), samples, 3, threads=threads)
            pages[run] = [Path(p).read_bytes() for p in paths]
            full_scans[run] = reads.count(())
    assert full_scans == {'one': 0, 'two': 0, 'lagging': 1}
    assert len(pages['one']) == 3 and pages['one'] == pages['two'] == pages['lagging']
    assert len(set(pages['one'])) == 3
