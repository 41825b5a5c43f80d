"""The latest-only slot between the synchroniser and the worker: plain Python, runs without ROS."""
from __future__ import annotations

import threading
import time

import pytest

from occ_ros.ros.slot import LatestSlot


def test_latest_slot_replaces_and_counts() -> None:
    s = LatestSlot()
    assert s.get(timeout=0.01) is None
    assert s.put(1) is False and s.put(2) is True and s.put(3) is True
    assert s.get() == 3 and s.dropped == 2 and s.waiting == 0
    t = threading.Thread(target=lambda: (time.sleep(0.05), s.put(4)))
    t.start()
    assert s.get(timeout=2.0) == 4
    t.join()
    s.close()
    assert s.get(timeout=5.0) is None           # closed: returns at once


def test_latest_slot_holds_a_stale_set_back_until_a_fresher_one_is_overdue() -> None:
    clock = [0.0]
    s = LatestSlot(max_wait_s=0.010, clock=lambda: clock[0])
    s.put('a')
    clock[0] = 0.009
    assert s.get(timeout=0) == 'a' and s.last_wait_s == pytest.approx(0.009)
    clock[0] = 0.100
    s.put('b')                                  # period estimate: 100 ms
    assert s.period_s == pytest.approx(0.100)
    clock[0] = 0.130                            # 'b' waited 30 ms > 10 ms: stale, a fresher one is due
    assert s.get(timeout=0) is None and s.waiting == 1
    clock[0] = 0.249                            # still within 1.5 periods of its arrival
    assert s.get(timeout=0) is None
    clock[0] = 0.251                            # nothing newer came (stream ended): taken after all
    assert s.get(timeout=0) == 'b' and s.late == 1 and s.last_wait_s == pytest.approx(0.151)
    assert (s.puts, s.taken, s.dropped, s.stale) == (2, 2, 0, 0)


def test_latest_slot_waits_for_the_fresher_set_instead_of_a_stale_one() -> None:
    """Real time: sets every 200 ms; the worker comes 100 ms after set 1 arrived (stale for a
    10 ms bound) and gets set 2 as soon as it arrives; set 1 is counted stale."""
    s = LatestSlot(max_wait_s=0.010)
    t0 = time.monotonic()

    def feed() -> None:
        for k in range(3):
            time.sleep(max(0.0, t0 + 0.2 * k - time.monotonic()))
            s.put(k)
    th = threading.Thread(target=feed)
    th.start()
    try:
        assert s.get(timeout=2.0) == 0
        time.sleep(max(0.0, t0 + 0.3 - time.monotonic()))
        assert s.get(timeout=2.0) == 2
        assert time.monotonic() - t0 >= 0.39     # it waited for set 2 rather than take set 1
        assert s.stale == 1 and s.late == 0 and s.dropped == 0 and s.last_wait_s < 0.010 + 0.05
    finally:
        th.join()
        s.close()
    assert s.get(timeout=5.0) is None           # closed: returns at once


def test_a_set_that_waited_in_held_readers_counts_as_waiting_and_the_stamp_period_is_used() -> None:
    """`put(item, waited_s, period_s)`: a set completed from images the ingest held back has
    already waited (it is stale at once when that exceeds max_wait), and the input period comes
    from the stamps, since put intervals across a hold do not measure it."""
    clock = [0.0]
    s = LatestSlot(max_wait_s=0.010, clock=lambda: clock[0])
    s.put('held', waited_s=0.040, period_s=0.083)
    assert s.period_s == pytest.approx(0.083)
    assert s.get(timeout=0) is None and s.waiting == 1        # waited 40 ms > 10 ms: a fresher one is due
    clock[0] = 0.020
    s.put('live', period_s=0.083)                             # the fresher set replaces it
    assert s.get(timeout=0) == 'live' and s.dropped + s.stale == 1 and s.last_wait_s == pytest.approx(0.0)
    clock[0] = 0.400                                          # a put 380 ms later with the stamp period:
    s.put('after a hold', period_s=0.083)                     # the interval does not enter the estimate
    assert s.period_s == pytest.approx(0.083)
