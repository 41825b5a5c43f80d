"""The camera-set synchroniser, tested the way message_filters tests its own: stamps fed directly.

A fake clock drives liveness, so dead-camera timeouts are exact and instant.
"""
from __future__ import annotations

import itertools
import random
import sys
import types
from typing import Any

import pytest

from occ_ros.core.errors import ConfigError
from occ_ros.ros.sync import CameraSetSynchronizer, SyncConfig, feed
from occ_ros.ros.sync_match import ApproximateTimeMatcher, MessageFiltersMatcher

MS = 1_000_000
CAMS = ('A', 'B', 'C')
SIX = ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT')


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(cams=CAMS, clock=None, **kw: Any) -> CameraSetSynchronizer:
    kw.setdefault('slop_s', 0.01)
    return CameraSetSynchronizer(SyncConfig(cameras=tuple(cams), **kw), clock=clock or Clock(),
                                 matcher='internal')


def stamps(sets) -> list[int]:
    return [s.stamp_ns for s in sets]


# ------------------------------------------------------------------ message_filters-style
def test_exact_pairs_are_combined_one_by_one() -> None:
    sync = make(('m0', 'm1'), slop_s=0.1, queue_size=1)
    got = []
    sync.register_callback(got.append)
    for t in range(10):
        got.clear()
        assert sync.add('m0', t * 1000 * MS, ('m0', t)) == []
        assert got == []
        out = sync.add('m1', t * 1000 * MS, ('m1', t))
        assert len(got) == 1 and got == out
        assert dict(got[0].items) == {'m0': ('m0', t), 'm1': ('m1', t)}


@pytest.mark.parametrize('n', range(1, 10))
def test_scrambled_sequences_recombine(n: int) -> None:
    # As message_filters' test_approx: input 0 gets N messages in random order, then input 1;
    # every pair is found. Our synchroniser emits sets in time order, so input 1 arrives sorted.
    rnd = random.Random(n)
    sync = make(('m0', 'm1'), slop_s=0.1, queue_size=n, time_jump_reset_s=100.0)
    seq0 = [(t * 1000 * MS, rnd.random()) for t in range(n)]
    seq1 = [(t * 1000 * MS, rnd.random()) for t in range(n)]
    out = feed(sync, [('m0', t, v) for t, v in rnd.sample(seq0, n)])
    assert out == []
    out = feed(sync, [('m1', t, v) for t, v in seq1])
    assert {(s.items['m0'], s.items['m1']) for s in out} == {(a[1], b[1]) for a, b in zip(seq0, seq1)}


def test_slop_is_respected_inclusive() -> None:
    sync = make(slop_s=0.010)
    assert feed(sync, [('A', 0, 'a'), ('B', 10 * MS, 'b'), ('C', 5 * MS, 'c')])[0].skew_ns == 10 * MS
    sync = make(slop_s=0.010)
    assert feed(sync, [('A', 0, 'a'), ('B', 11 * MS, 'b'), ('C', 5 * MS, 'c')]) == []


def test_out_of_order_arrival_picks_the_tightest_set() -> None:
    # 12 Hz cameras, skewed; C arrives last and late. Each set must take one frame per camera.
    sync = make(slop_s=0.03, queue_size=6)
    period = 83 * MS
    events = []
    for k in range(6):
        base = k * period
        events += [('B', base + 4 * MS, ('B', k)), ('A', base, ('A', k))]
    for k in range(6):
        events.append(('C', k * period + 20 * MS, ('C', k)))
    out = feed(sync, events)
    assert [s.items['C'][1] for s in out] == list(range(6))
    for s in out:
        assert s.items['A'][1] == s.items['B'][1] == s.items['C'][1]
        assert s.stamp_ns == s.stamps_ns['A']            # reference = first camera in rig order


def test_prefers_the_smallest_spread() -> None:
    sync = make(slop_s=0.05, queue_size=5)
    feed(sync, [('A', 0, 'a0'), ('A', 30 * MS, 'a1'), ('B', 28 * MS, 'b')])
    (s,) = sync.add('C', 32 * MS, 'c')
    assert s.items == {'A': 'a1', 'B': 'b', 'C': 'c'}


def test_brute_force_agreement_on_random_streams() -> None:
    """Whenever a set is emitted, no tighter set containing the newest message existed."""
    rnd = random.Random(7)
    m = ApproximateTimeMatcher(3, queue_size=4, slop_ns=20 * MS)
    queues: list[dict[int, str]] = [{}, {}, {}]
    for _ in range(400):
        i = rnd.randrange(3)
        t = rnd.randrange(0, 2000) * MS
        q = queues[i]
        q[t] = f'{i}:{t}'
        while len(q) > 4:
            del q[min(q)]
        best = None
        others = [j for j in range(3) if j != i]
        for combo in itertools.product(*[list(queues[j]) for j in others]):
            vals = [t, *combo]
            spread = max(vals) - min(vals)
            if spread <= 20 * MS and (best is None or spread < best):
                best = spread
        got = m.add(i, t, f'{i}:{t}', [0, 1, 2])
        if best is None:
            assert got is None
        else:
            assert got is not None
            vals = [st for st, _ in got.values()]
            assert max(vals) - min(vals) == best
            for j, (st, _) in got.items():
                del queues[j][st]
        assert [set(q) for q in queues] == [set(q) for q in m.queues]


# ------------------------------------------------------------------ bounded memory
def test_queues_are_bounded_and_evictions_counted() -> None:
    sync = make(queue_size=3)
    feed(sync, [('A', k * 100 * MS, k) for k in range(50)])
    assert sync.stats().pending == 3
    assert sync.health()['A'].evicted == 47


def test_emitted_sets_prune_older_messages() -> None:
    sync = make(queue_size=5)
    feed(sync, [('A', 0, 0), ('A', 100 * MS, 1), ('B', 100 * MS, 1)])
    out = sync.add('C', 100 * MS, 1)
    assert stamps(out) == [100 * MS]
    assert sync.stats().pending == 0 and sync.stats().superseded == 1
    # the old A(0) can never form a set any more
    assert feed(sync, [('B', 0, 0), ('C', 0, 0)]) == []


# ------------------------------------------------------------------ duplicates and time jumps
def test_duplicate_stamps_are_dropped_and_counted() -> None:
    sync = make()
    out = feed(sync, [('A', 0, 'a'), ('A', 0, 'a-again'), ('B', 0, 'b'), ('C', 0, 'c'), ('C', 0, 'c2')])
    assert len(out) == 1 and out[0].items['A'] == 'a'
    h = sync.health()
    assert h['A'].duplicates == 1 and h['C'].duplicates == 1


def test_backwards_stamps_reset_and_sets_continue() -> None:
    sync = make()
    loop1 = [(c, k * 100 * MS, (c, 1, k)) for k in range(10) for c in CAMS]
    out1 = feed(sync, loop1)
    assert stamps(out1) == [k * 100 * MS for k in range(10)]
    assert {s.generation for s in out1} == {0}
    out2 = feed(sync, [(c, k * 100 * MS, (c, 2, k)) for k in range(3) for c in CAMS])   # bag loop
    assert stamps(out2) == [0, 100 * MS, 200 * MS]
    assert all(s.items['A'][1] == 2 for s in out2)
    st = sync.stats()
    assert st.resets == 1 and st.reset_reasons == {'time_backwards': 1} and st.generation == 1
    assert {s.generation for s in out2} == {1}
    assert sync.health()['A'].backwards == 1


def test_late_out_of_order_set_is_not_emitted_after_a_newer_one() -> None:
    sync = make(slop_s=0.01, queue_size=5)
    out = feed(sync, [('A', 100 * MS, 1), ('B', 100 * MS, 1), ('C', 100 * MS, 1),
                      ('A', 60 * MS, 0), ('B', 60 * MS, 0), ('C', 60 * MS, 0)])
    # 40 ms back is out-of-order arrival (below time_jump_reset_s), not a time jump: the older set
    # is never emitted after the newer one, and nothing resets.
    assert stamps(out) == [100 * MS]
    assert sync.stats().resets == 0 and sync.stats().pending == 0


def test_out_of_order_within_one_camera_still_matches() -> None:
    sync = make(slop_s=0.01, queue_size=5)
    out = feed(sync, [('A', 200 * MS, 2), ('A', 100 * MS, 1), ('B', 100 * MS, 1), ('C', 100 * MS, 1),
                      ('B', 200 * MS, 2), ('C', 200 * MS, 2)])
    assert stamps(out) == [100 * MS, 200 * MS]


# ------------------------------------------------------------------ dead cameras
def test_dead_camera_partial_sets_and_rejoin() -> None:
    clock = Clock()
    sync = make(clock=clock, camera_timeout_s=0.35)
    period = 0.1
    out = []
    for k in range(30):
        clock.t = k * period
        for c in CAMS:
            if c == 'B' and 5 <= k < 20:
                continue                          # B silent for 1.5 s
            out += sync.add(c, int(k * period * 1e9), (c, k))
    by_k = {s.items['A'][1]: s for s in out}
    assert set(range(5)) <= set(by_k) and all(not by_k[k].missing for k in range(5))
    # silent for <= 0.35 s (k = 5..7): sets wait (B is still presumed alive)
    assert not any(k in by_k for k in range(5, 8))
    # after the timeout: partial sets without B, in order
    partial = [k for k in range(8, 20) if k in by_k]
    assert partial == list(range(8, 20))
    assert all(by_k[k].missing == ('B',) and 'B' not in by_k[k].items for k in partial)
    # rejoined: complete sets again
    assert all(k in by_k and not by_k[k].missing for k in range(20, 30))
    h = sync.health()['B']
    assert h.timeouts == 1 and h.rejoins == 1 and h.state == 'ok'
    assert sync.stats().partial_sets == len(partial)


def test_camera_that_never_publishes_is_waited_for_then_skipped() -> None:
    clock = Clock()
    sync = make(SIX, clock=clock, camera_timeout_s=0.5)
    out = []
    for k in range(12):
        clock.t = k / 12
        for c in SIX[:-1]:
            out += sync.add(c, int(k / 12 * 1e9), k)
    assert out and min(s.items['CAM_FRONT'] for s in out) >= 6     # after 0.5 s of grace
    assert all(s.missing == ('CAM_BACK_RIGHT',) for s in out)
    assert sync.health()['CAM_BACK_RIGHT'].state == 'never'
    sync.poll()
    assert sync.stats().live == SIX[:-1]


def test_min_cameras() -> None:
    clock = Clock()
    sync = make(clock=clock, camera_timeout_s=0.1, min_cameras=3)
    out = []
    for k in range(6):
        clock.t = k * 0.05
        for c in CAMS if k == 0 else ('A', 'B'):              # C stops after the first set
            out += sync.add(c, k * 50 * MS, k)
    assert stamps(out) == [0]                                 # sets of 2 < min_cameras are not emitted
    assert sync.stats().too_few_cameras >= 1


def test_streams_restarting_after_global_silence_wait_for_every_camera() -> None:
    clock = Clock()
    sync = make(clock=clock, camera_timeout_s=0.5)
    assert stamps(feed(sync, [(c, 0, 0) for c in CAMS])) == [0]
    clock.t = 10.0                                            # everything paused (bag paused, node idle)
    assert sync.add('A', 10_000 * MS, 1) == []                # A alone is not a set: B, C are waited for
    assert sync.health()['B'].state == 'waiting'
    clock.t = 10.02
    sync.add('B', 10_000 * MS, 1)
    (s,) = sync.add('C', 10_000 * MS, 1)
    assert s.missing == () and sync.stats().partial_sets == 0


def test_health_rate_age_and_offsets() -> None:
    clock = Clock()
    sync = make(clock=clock, slop_s=0.02)
    for k in range(13):
        clock.t = k / 12
        for c, off in zip(CAMS, (0, 5, -8)):
            sync.add(c, int(k / 12 * 1e9) + off * MS, k)
    clock.t += 0.25
    h = sync.health()
    assert h['A'].rate_hz == pytest.approx(12.0, rel=1e-6)
    assert h['A'].age_s == pytest.approx(0.25)
    assert h['B'].offset_ms == pytest.approx(5.0) and h['C'].offset_ms == pytest.approx(-8.0)
    st = sync.stats()
    assert st.last_skew_ms == pytest.approx(13.0) and st.max_skew_ms == pytest.approx(13.0)


# ------------------------------------------------------------------ robustness
def test_a_raising_callback_does_not_leave_the_lock_held() -> None:
    sync = make()

    def boom(_s: Any) -> None:
        raise RuntimeError('consumer bug')
    sync.register_callback(boom)
    with pytest.raises(RuntimeError):
        feed(sync, [(c, 0, 0) for c in CAMS])
    # the synchroniser still works (a held lock would deadlock here)
    got = []
    sync._callbacks = [got.append]
    feed(sync, [(c, 100 * MS, 1) for c in CAMS])
    assert stamps(got) == [100 * MS]


def test_unknown_camera_and_bad_config() -> None:
    with pytest.raises(ConfigError, match='unknown camera'):
        make().add('Z', 0, 0)
    for kw in ({'cameras': ()}, {'cameras': ('a', 'a')}, {'cameras': ('a',), 'slop_s': -1},
               {'cameras': ('a',), 'queue_size': 0}, {'cameras': ('a',), 'camera_timeout_s': 0},
               {'cameras': ('a',), 'min_cameras': 2}):
        with pytest.raises(ConfigError):
            SyncConfig(**kw)


# ------------------------------------------------------------------ the message_filters adapter
class _FakeTime:
    def __init__(self, nanoseconds: int) -> None:
        self.nanoseconds = nanoseconds


def _fake_message_filters() -> types.ModuleType:
    """A stand-in with message_filters' Python API (SimpleFilter, ApproximateTimeSynchronizer)."""
    mf = types.ModuleType('message_filters')

    class SimpleFilter:
        def __init__(self) -> None:
            self.callbacks: dict[int, tuple] = {}

        def registerCallback(self, cb: Any, *args: Any) -> int:
            self.callbacks[len(self.callbacks)] = (cb, args)
            return len(self.callbacks) - 1

        def signalMessage(self, *msg: Any) -> None:
            for cb, args in self.callbacks.values():
                cb(*(msg + args))

    class ApproximateTimeSynchronizer(SimpleFilter):
        def __init__(self, fs: list, queue_size: int, slop: float) -> None:
            super().__init__()
            self.matcher = ApproximateTimeMatcher(len(fs), queue_size, int(slop * 1e9))
            self.queues = self.matcher.queues
            for i, f in enumerate(fs):
                f.registerCallback(self.add, i)

        def add(self, msg: Any, i: int) -> None:
            m = self.matcher.add(i, msg.header.stamp.nanoseconds, msg, range(len(self.queues)))
            if m is not None:
                self.signalMessage(*[m[j][1] for j in sorted(m)])

    mf.SimpleFilter = SimpleFilter
    mf.ApproximateTimeSynchronizer = ApproximateTimeSynchronizer
    return mf


def test_message_filters_adapter_rebuilds_on_live_set_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    mf = _fake_message_filters()
    monkeypatch.setitem(sys.modules, 'message_filters', mf)
    clock = Clock()
    sync = CameraSetSynchronizer(SyncConfig(cameras=CAMS, slop_s=0.01, camera_timeout_s=0.35),
                                 clock=clock, matcher='auto')
    assert sync.matcher_kind == 'message_filters'
    sync._matcher = MessageFiltersMatcher(3, 5, 10 * MS, mf=mf, time_cls=_FakeTime)
    out = []
    for k in range(20):
        clock.t = k * 0.1
        for c in CAMS:
            if c == 'C' and k >= 5:
                continue
            out += sync.add(c, k * 100 * MS, (c, k))
    ks = [s.items['A'][1] for s in out]
    assert ks[:5] == list(range(5)) and ks[5:] == list(range(8, 20))
    assert all(s.missing == ('C',) for s in out[5:])


def test_message_filters_requested_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'message_filters', None)        # import fails
    with pytest.raises(ConfigError, match='message_filters'):
        CameraSetSynchronizer(SyncConfig(cameras=CAMS), matcher='message_filters')
    assert CameraSetSynchronizer(SyncConfig(cameras=CAMS), matcher='auto').matcher_kind == 'internal'


def test_poll_flushes_sets_completed_by_a_camera_timeout() -> None:
    clock = Clock()
    sync = make(clock=clock, camera_timeout_s=0.3)
    assert stamps(feed(sync, [(c, 0, 0) for c in CAMS])) == [0]
    clock.t = 0.1
    feed(sync, [('A', 100 * MS, 1), ('B', 100 * MS, 1)])     # C never sends its frame 1 ...
    assert sync.poll() == []                                   # ... and is not yet declared silent
    clock.t = 0.35                                             # C silent > 0.3 s, nothing else arrives
    (s,) = sync.poll()
    assert s.stamp_ns == 100 * MS and s.missing == ('C',)
    assert sync.poll() == []                                   # emitted once


# ------------------------------------------------------------------ accounting
def test_every_image_is_in_a_set_pending_or_counted_unmatched() -> None:
    """images_received = images_in_sets + pending + images_unmatched, whatever happens to them:
    duplicates, a camera losing images (its partners are superseded), queue evictions, a reset."""
    sync = make(queue_size=3)
    ev = [(c, k * 100 * MS, k) for k in range(6) for c in CAMS]
    ev = [e for e in ev if not (e[0] == 'B' and e[1] in (200 * MS, 300 * MS))]   # B loses two images
    ev += [('A', 500 * MS, 'dup')]                                                # duplicate
    ev += [('A', (600 + k * 100) * MS, k) for k in range(5)]                      # A runs ahead: evictions
    out = feed(sync, ev)
    assert stamps(out) == [0, 100 * MS, 400 * MS, 500 * MS]
    st = sync.stats()
    assert st.images_received == len(ev) == 22
    assert st.images_in_sets == 4 * 3 == 12
    assert st.pending == 3                                   # A's newest three
    # A and C at 200/300 ms superseded (4), the duplicate (1), A's two oldest evicted (2)
    assert st.images_unmatched == 22 - 12 - 3 == 7
    assert st.superseded == 4 and sync.health()['A'].duplicates == 1 and sync.health()['A'].evicted == 2
    sync.reset('test')                                       # queued images are lost: counted
    st = sync.stats()
    assert st.pending == 0 and st.images_unmatched == 10


def test_a_camera_fault_clears_once_it_has_passed() -> None:
    """Unusable images make the camera WARN while they recur; FAULT_CLEAR_S after the last one the
    camera is OK again (the count stays in the values)."""
    from occ_ros.ros.diagnostics import FAULT_CLEAR_S, OK, WARN, NodeSnapshot, diagnostic_entries
    clock = Clock()
    sync = make(clock=clock)
    for k in range(3):
        clock.t = k * 0.1
        for c in CAMS:
            sync.add(c, k * 100_000_000, object())
    sync.note_bad('A', 'wrong encoding mono8')

    def level() -> int:
        snap = NodeSnapshot(node='/n', backend_state='ready', cameras=sync.health(), sync=sync.stats())
        return {name: lvl for lvl, name, _, _ in diagnostic_entries(snap)}['camera A']
    assert level() == WARN
    for k in range(3, 3 + int(FAULT_CLEAR_S * 10) + 5):                 # the stream goes on, no new fault
        clock.t = k * 0.1
        for c in CAMS:
            sync.add(c, k * 100_000_000, object())
    assert sync.health()['A'].bad == 1 and level() == OK
