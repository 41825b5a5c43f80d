"""The held ingest's clock and its count of images never taken (plain Python, no ROS graph);
the gate itself runs through real DDS in test_ros_outputs_dds.py."""
from __future__ import annotations

import pytest

from occ_ros.ros.ingest import GapCounter, HeldClock

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


def test_gap_counter_counts_the_images_a_hold_skipped() -> None:
    """12 Hz stamps (83.3 ms): within an epoch the period is learned; across a hold a gap of n
    periods is n − 1 images never taken; a stamp going back counts nothing."""
    g = GapCounter()
    period = 83_333_333
    stamps = [i * period for i in range(5)]
    for s in stamps:
        assert g.note('A', s, epoch=0) == 0
    assert g.period_s == pytest.approx(period / 1e9, rel=1e-6)
    assert g.note('A', 8 * period, epoch=1) == 3              # 5, 6, 7 never taken
    assert g.note('A', 9 * period, epoch=1) == 0
    assert g.note('A', 12 * period + 5 * MS, epoch=2) == 2    # jitter rounds: 10, 11
    assert g.note('A', 2 * period, epoch=3) == 0              # back in time: restarts, counts nothing
    for s in stamps:
        g.note('B', s, epoch=0)
    g.note('B', 6 * period, epoch=1)                          # B: one image skipped
    assert g.not_taken == {'A': 5, 'B': 1} and g.sets_not_taken == 5


def test_gap_counter_counts_nothing_before_it_knows_the_period() -> None:
    g = GapCounter()
    g.note('A', 0, epoch=0)
    assert g.note('A', 500 * MS, epoch=1) == 0 and g.sets_not_taken == 0
