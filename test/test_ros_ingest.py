"""The held ingest's clock and its count of images never taken (plain Python, no ROS graph);
the gate itself runs through real DDS in test_ros_outputs_dds.py."""
from __future__ import annotations

import pytest

from occ_ros.ros.ingest import GapCounter, HeldClock
from occ_ros.ros.sync import CameraSetSynchronizer, SyncConfig

MS = 1_000_000


def test_held_clock_stands_still_while_held() -> None:
    t = [10.0]
    c = HeldClock(lambda: t[0])
    assert c() == 10.0 and not c.held
    c.hold()
    t[0] = 10.7
    assert c() == pytest.approx(10.0) and c.held              # 0.7 s held: no time passed
    assert c.release() == pytest.approx(0.7)
    t[0] = 11.0
    assert c() == pytest.approx(10.3) and c.held_total_s == pytest.approx(0.7)
    assert c.release() == 0.0                                 # not held: nothing


def test_gap_counter_counts_the_images_never_taken() -> None:
    """12 Hz stamps (83.3 ms) with ±3 ms jitter: the period is the median of the steps near the
    smallest one, so steps over skipped images do not inflate it; a step of n periods counts
    n − 1 images; a stamp going back counts nothing."""
    g = GapCounter()
    period = 83_333_333
    jitter = [0, 3, -2, 1, -3, 2, 0, -1]
    stamps = [i * period + jitter[i % 8] * MS for i in range(8)]
    for s in stamps:
        assert g.note('A', s) == 0
    assert g.period_s == pytest.approx(period / 1e9, abs=2e-3)
    assert g.note('A', 11 * period) == 3                      # 8, 9, 10 never taken
    assert g.note('A', 12 * period + 2 * MS) == 0
    assert g.note('A', 15 * period - 3 * MS) == 2             # 13, 14
    assert g.period_s == pytest.approx(period / 1e9, abs=2e-3)   # the long steps did not move it
    assert g.note('A', 2 * period) == 0                       # back in time: counts nothing
    for s in stamps:
        g.note('B', s)
    g.note('B', 9 * period)                                   # B: one image skipped
    assert g.not_taken == {'A': 5, 'B': 1} and g.sets_not_taken == 5


def test_gap_counter_counts_nothing_before_it_knows_the_period() -> None:
    g = GapCounter()
    g.note('A', 0)
    assert g.note('A', 500 * MS) == 0 and g.sets_not_taken == 0


def test_the_synchroniser_on_the_held_clock_declares_no_camera_silent_during_a_hold() -> None:
    """The node's synchroniser runs on the gate's clock: a hold of 0.8 s (the worker busy; no
    image taken) against a camera timeout of 0.25 s declares no camera silent, and the first set
    after the release completes normally. On the plain clock the same hold declares both silent."""
    for held in (True, False):
        t = [0.0]
        clock = HeldClock(lambda: t[0])
        sync = CameraSetSynchronizer(SyncConfig(cameras=('A', 'B'), camera_timeout_s=0.25),
                                     clock=clock if held else (lambda: t[0]))
        stamp = 1_000 * MS
        assert sync.add('A', stamp, 'a0') == [] and len(sync.add('B', stamp, 'b0')) == 1
        clock.hold()
        t[0] = 0.8                                             # 0.8 s busy, nothing taken
        sync.poll()                                           # the node's timer polls meanwhile
        clock.release()
        t[0] = 0.81
        sync.add('A', stamp + 800 * MS, 'a1')
        sets = sync.add('B', stamp + 800 * MS, 'b1')
        timeouts = {c: h.timeouts for c, h in sync.health().items()}
        if held:
            assert timeouts == {'A': 0, 'B': 0} and len(sets) == 1 and not sets[0].missing
        else:
            assert timeouts == {'A': 1, 'B': 1}


def test_a_release_waits_for_the_next_set_only_when_the_held_one_would_be_stale() -> None:
    """The worker's latency-first rule (LatestSlot, max_set_wait_ms 10 ms) drops a set that has
    waited longer than the limit and waits up to 1.5 periods for the next: the release then takes
    nothing until every live camera's next CameraInfo came, so the held (stale) images are
    replaced in the readers, never copied; a held set still fresh is taken at once."""
    from occ_ros.ros.ingest import NextSetWait
    period, cams = 1 / 12, [f'C{i}' for i in range(6)]
    w = NextSetWait()
    for i, c in enumerate(cams):
        w.info(c, 1.000 + 0.003 * i)                 # a set arriving over 15 ms, complete at 1.015
    w.info('DEAD', 0.5)                              # silent for 6 periods: not waited for
    assert w.plan(1.020, period, 0.010) is None      # waited 5 ms: fresh, take it
    assert w.plan(1.040, None, 0.010) is None        # period unknown
    assert w.plan(1.040, period, None) is None       # throughput-first: every set is taken
    plan = w.plan(1.040, period, 0.010)              # waited 25 ms: stale
    assert plan is not None
    since, deadline, live = plan
    assert since == 1.040 and deadline == pytest.approx(1.040 + 1.5 * period) and live == frozenset(cams)
    for i, c in enumerate(cams[:5]):
        w.info(c, 1.083 + 0.003 * i)
        assert not w.ready(since, live)
    w.info(cams[5], 1.098)
    assert w.ready(since, live)
    w2 = NextSetWait()
    assert w2.plan(1.0, period, 0.010) is None       # no camera seen yet


def test_a_release_after_a_hold_that_no_set_came_in_takes_images_as_they_arrive() -> None:
    """The worker finished before the next set began (faster processing than the cameras' period):
    no CameraInfo came during the hold, so the readers hold no image it has not seen, and the
    release takes the next set's images as they arrive instead of waiting for the last camera's
    CameraInfo — which would hand the six over in one burst and leave nothing to prepare while the
    others are still arriving (prepare_early, ros/early.py)."""
    from occ_ros.ros.ingest import NextSetWait
    period, cams = 1 / 12, [f'C{i}' for i in range(6)]
    w = NextSetWait()
    for i, c in enumerate(cams):
        w.info(c, 1.000 + 0.003 * i)                 # the set processed: complete at 1.015
    assert w.plan(1.060, period, 0.010, held_since=1.016) is None     # held 1.016 → 1.060: nothing came
    assert w.plan(1.060, period, 0.010) is not None                   # (not knowing the hold: waits)
    w.info(cams[0], 1.030)                           # the next set's first camera came while held
    assert w.plan(1.060, period, 0.010, held_since=1.016) is not None  # and its images are stale now


def test_a_release_waits_by_the_period_the_infos_arrive_at_not_their_stamps() -> None:
    """A bag played at rate 0.2: stamps 83 ms apart, arrivals 417 ms apart, with a 2 s pause (a
    bag loop): the wall-time period is the median arrival step of the slowest camera."""
    from occ_ros.ros.ingest import arrival_period_s
    steady = [i * 0.4167 for i in range(10)]
    paused = steady[:5] + [t + 2.0 for t in steady[5:]]
    assert arrival_period_s([steady, paused]) == pytest.approx(0.4167)
    assert arrival_period_s([[i / 12 for i in range(10)], steady]) == pytest.approx(0.4167)   # the slowest
    assert arrival_period_s([[1.0, 2.0]]) is None and arrival_period_s([]) is None         # too few


def test_a_set_waits_once_for_a_first_camera_info_its_image_overtook() -> None:
    """With ingest_hold the images and the CameraInfos are taken on different threads, so a set
    can be complete before its cameras' first CameraInfos are in. The worker waits for them
    (CameraCalibration.wait_for_first) instead of blanking the cameras as uncalibrated; a camera
    whose CameraInfo never comes is waited for once, then never again."""
    import logging
    import threading
    import time

    import numpy as np
    pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 message wheels')
    from occ_ros.ros import convert as cv
    from occ_ros.ros.calibration import CameraCalibration

    calib = CameraCalibration(threading.Lock(), logging.getLogger('test'))
    K = np.array([[500.0, 0, 400], [0, 500.0, 225], [0, 0, 1]])
    later = threading.Timer(0.05, lambda: calib.on_camera_info('A', cv.camera_info_msg(K, (450, 800), 0, 'a'), 'raw'))
    later.start()
    t = time.monotonic()
    assert calib.wait_for_first(['A'], 5.0) == [] and 'A' in calib.intrinsics   # woken by the CameraInfo
    assert time.monotonic() - t < 2.0
    t = time.monotonic()
    assert calib.wait_for_first(['A', 'B'], 0.2) == ['B']                        # B never sends one
    assert time.monotonic() - t >= 0.2
    t = time.monotonic()
    assert calib.wait_for_first(['A', 'B'], 5.0) == [] and time.monotonic() - t < 0.1   # not again
