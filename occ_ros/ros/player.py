"""Play recorded messages through rclpy with their timing (raw CDR): the DDS half of `occ-ros play`.

A minimal `ros2 bag play` for machines without rosbag2: `play` takes any `MessageSource` (the
bag reader of `occ_ros.bag.reader` is one; `occ_ros.apps.play` opens it) and publishes the stored
CDR bytes (`Publisher.publish(bytes)`), so nothing is decoded and re-encoded. The bag code itself
stays free of ROS; this module knows nothing of bag files.

- QoS: reliable, keep_last 10, volatile for data topics; /tf_static (and any `<ns>/tf_static`)
  reliable, transient_local (latched like tf2's static broadcaster), keep_last = the number of
  messages the bag holds on it (at most 1000), so a late subscriber gets every static transform
  even when the bag recorded several static broadcasters.
- Before the first message it waits (bounded by --wait-subscribers seconds) until every image
  topic has a subscriber, since volatile messages sent before discovery are lost; then, for a
  short settling time, until every subscriber the ROS graph already knows on any played topic
  (e.g. the node's /tf) is matched too.
- --clock publishes rosgraph_msgs/Clock on /clock with the bag time, before the first message
  of each new timestamp.
- Topics whose message type has no Python module here are skipped with a warning: occ_ros/msg
  when the interfaces are not built, tf2_msgs (/tf, /tf_static) when neither a ROS install nor
  scripts/build_interfaces.sh (which builds tf2_msgs/msg/TFMessage into the venv when it has no
  tf2_msgs, since there is no PyPI wheel) provides it.
- SIGINT/SIGTERM stop playback cleanly: `play` installs handlers that raise a flag (rclpy
  installs none for a non-default context), the loop checks it between messages and every
  50 ms while sleeping, then destroys the node and shuts its context down (exit code 130).
"""
from __future__ import annotations

import importlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

from occ_ros.core.errors import BagError

LOG = logging.getLogger('occ_ros.play')
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
_SLEEP_SLICE = 0.05
_SETTLE_S = 0.3                 # after the image topics matched: time for the other endpoints
_SETTLE_MAX_S = 2.0             # … and at most this long for subscribers the graph knows
_MAX_STATIC_DEPTH = 1000


def _static_depth(count: int) -> int:
    """The latched depth of a /tf_static publisher for `count` recorded messages."""
    return max(1, min(count, _MAX_STATIC_DEPTH))


def is_static_tf_topic(topic: str) -> bool:
    """/tf_static or a namespaced `<ns>/tf_static`: played latched (transient_local)."""
    return topic == '/tf_static' or topic.endswith('/tf_static')


class TopicInfo(Protocol):
    """What `play` needs to know of a recorded topic."""

    @property
    def msgtype(self) -> str: ...            # 'pkg/msg/Name'
    @property
    def count(self) -> int: ...              # messages recorded on it


class RawRecord(Protocol):
    """One recorded message: topic, record stamp and CDR bytes."""

    @property
    def topic(self) -> str: ...
    @property
    def stamp_ns(self) -> int: ...
    @property
    def data(self) -> bytes: ...


class MessageSource(Protocol):
    """Recorded messages in stamp order (e.g. `occ_ros.bag.reader.BagReader`)."""

    @property
    def path(self) -> Any: ...
    @property
    def topics(self) -> Mapping[str, TopicInfo]: ...
    def raw_messages(self, topics: Optional[Sequence[str]] = None) -> Iterable[RawRecord]: ...
    def close(self) -> None: ...


@dataclass
class PlayStats:
    """What a playback did."""

    published: int = 0
    loops: int = 0
    skipped_topics: dict[str, str] = field(default_factory=dict)
    waited_s: float = 0.0
    duration_s: float = 0.0
    interrupted: bool = False
    per_topic: dict[str, int] = field(default_factory=dict)


def message_class(msgtype: str) -> Any:
    """The rclpy message class of 'pkg/msg/Name' (ImportError / AttributeError if unavailable)."""
    parts = msgtype.split('/')
    if len(parts) != 3:
        raise ImportError(f'not a pkg/msg/Name type: {msgtype!r}')
    pkg, sub, name = parts
    return getattr(importlib.import_module(f'{pkg}.{sub}'), name)


@dataclass(frozen=True)
class TopicLayout:
    """A topic's type and message count known before any message exists (a `TopicInfo`)."""

    msgtype: str
    count: int = 1


class PlayerEndpoints:
    """The player's DDS side — its own context, node and one publisher per topic — made before
    the messages are at hand, so that discovery can run meanwhile (the demo makes them while it
    renders its bag). `topics`: topic → TopicInfo (type, and for /tf_static the message count, its
    latched depth). Handed to `play`, which uses them once and closes them."""

    def __init__(self, topics: Mapping[str, TopicInfo], node_name: str = 'occ_ros_player') -> None:
        import rclpy
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.topics = dict(topics)
        self.used = False                     # set by `play` when it plays through them
        self.skipped_topics: dict[str, str] = {}
        self.pubs: dict[str, Any] = {}
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node: Any = None
        try:
            self.node = rclpy.create_node(node_name, context=self.context)
            data_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                  reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
            for t, info in self.topics.items():
                try:
                    cls = message_class(info.msgtype)
                except (ImportError, AttributeError) as exc:
                    self.skipped_topics[t] = info.msgtype
                    LOG.warning('skipping %s: no Python message module for %s here (%s)', t, info.msgtype, exc)
                    continue
                if is_static_tf_topic(t):
                    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=_static_depth(info.count),
                                     reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
                else:
                    qos = data_qos
                self.pubs[t] = self.node.create_publisher(cls, t, qos)
        except BaseException:
            self.close()
            raise

    def serves(self, available: Mapping[str, TopicInfo], wanted: Sequence[str]) -> bool:
        """True when these endpoints publish every wanted topic with the bag's type (and a latched
        depth that holds every static transform the bag has)."""
        for t in wanted:
            mine = self.topics.get(t)
            if mine is None or mine.msgtype != available[t].msgtype:
                return False
            if is_static_tf_topic(t) and _static_depth(available[t].count) > _static_depth(mine.count):
                return False
        return True

    def close(self) -> None:
        import rclpy
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
        rclpy.try_shutdown(context=self.context)


def play(reader: MessageSource, *, rate: float = 1.0, loop: bool = False, clock: bool = False,
         topics: Optional[Sequence[str]] = None, wait_subscribers: float = 5.0,
         max_loops: Optional[int] = None, node_name: str = 'occ_ros_player',
         on_ready: Optional[Callable[[], None]] = None, close: bool = True,
         endpoints: Optional[PlayerEndpoints] = None) -> PlayStats:
    """Publish what `reader` holds (and close it, unless `close` is False: a caller that reads the
    bag again keeps it open). rate: speed factor (> 0). topics: only these (default all).

    wait_subscribers: seconds to wait for a subscriber on every image topic (0 = do not wait).
    max_loops: with `loop`, stop after this many passes (None = until interrupted).
    endpoints: made ahead (`PlayerEndpoints`); used when they serve the bag's topics, else new
        ones are made here. Closed at the end either way.
    """
    available = reader.topics
    wanted = list(available) if topics is None else list(topics)
    missing = [t for t in wanted if t not in available]
    if rate <= 0 or missing:
        if close:
            reader.close()
        if endpoints is not None:
            endpoints.close()
        raise BagError(f'--rate must be positive, got {rate}' if rate <= 0 else
                       f'bag {reader.path} has no topic(s) {missing}; it has {sorted(available)}')
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile

    stats = PlayStats()
    if endpoints is not None and not endpoints.serves(available, wanted):
        LOG.info('the endpoints made ahead do not serve this bag\'s topics: making new ones')
        endpoints.close()
        endpoints = None
    # our own SIGINT/SIGTERM handlers (rclpy installs none for a non-default context): they only
    # raise a flag, the loop below stops at the next message or sleep slice and cleans up
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())

    ep: Optional[PlayerEndpoints] = endpoints
    try:
        if ep is None:
            ep = PlayerEndpoints({t: available[t] for t in wanted}, node_name)
        ep.used = True
        ctx, node = ep.context, ep.node

        def running() -> bool:
            return ctx.ok() and not stop.is_set()

        pubs = {t: ep.pubs[t] for t in wanted if t in ep.pubs}
        stats.skipped_topics = {t: ep.skipped_topics[t] for t in wanted if t in ep.skipped_topics}
        for t in pubs:
            stats.per_topic[t] = 0
        if not pubs:
            raise BagError(f'nothing to play from {reader.path}: no selected topic has an importable '
                           f'message type (skipped: {stats.skipped_topics})')
        clock_pub = None
        Clock: Any = None
        if clock:
            try:
                Clock = message_class('rosgraph_msgs/msg/Clock')
            except (ImportError, AttributeError) as exc:
                raise BagError('--clock needs rosgraph_msgs (pip install ros-rosgraph-msgs)') from exc
            clock_pub = node.create_publisher(Clock, '/clock', QoSProfile(depth=10))
        # ---- wait for subscribers on the image topics --------------------------------------------
        image_topics = [t for t in pubs if available[t].msgtype in IMAGE_TYPES]
        t_wait = time.monotonic()
        if wait_subscribers > 0 and image_topics:
            matched_at: Optional[float] = None
            while running():
                now = time.monotonic()
                lacking = [t for t in image_topics if pubs[t].get_subscription_count() == 0]
                if not lacking:
                    matched_at = now if matched_at is None else matched_at
                    # subscribers the graph already reports that this publisher has not matched yet
                    # (e.g. the node's /tf); one with incompatible QoS never matches: bounded wait
                    unmatched = [t for t in pubs if not is_static_tf_topic(t)
                                 and node.count_subscribers(t) > pubs[t].get_subscription_count()]
                    settled = now - matched_at >= _SETTLE_S
                    if settled and (not unmatched or now - matched_at >= _SETTLE_MAX_S):
                        if unmatched:
                            LOG.warning('subscribers on %s did not match (incompatible QoS?); playing anyway',
                                        unmatched)
                        break
                if now - t_wait > wait_subscribers:
                    if lacking:
                        LOG.warning('no subscriber after %.1f s on %s; playing anyway', wait_subscribers, lacking)
                    break
                time.sleep(_SLEEP_SLICE)
        stats.waited_s = time.monotonic() - t_wait
        if on_ready is not None:
            on_ready()
        # ---- play ----------------------------------------------------------------------------------
        t_play = time.monotonic()
        sel = list(pubs)
        while running():
            wall0 = time.monotonic()
            bag0: Optional[int] = None
            last_clock = -1
            for raw in reader.raw_messages(sel):
                if bag0 is None:
                    bag0 = raw.stamp_ns
                due = wall0 + (raw.stamp_ns - bag0) * 1e-9 / rate
                while running():
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    time.sleep(min(left, _SLEEP_SLICE))
                if not running():
                    break
                if clock_pub is not None and raw.stamp_ns != last_clock:
                    last_clock = raw.stamp_ns
                    m = Clock()
                    m.clock.sec = raw.stamp_ns // 1_000_000_000
                    m.clock.nanosec = raw.stamp_ns % 1_000_000_000
                    clock_pub.publish(m)
                pubs[raw.topic].publish(raw.data)
                stats.published += 1
                stats.per_topic[raw.topic] += 1
            stats.loops += 1
            if not loop or (max_loops is not None and stats.loops >= max_loops):
                break
        stats.interrupted = not running()
        stats.duration_s = time.monotonic() - t_play
        # let reliable samples reach the subscribers before the publishers go away
        from rclpy.duration import Duration
        deadline = time.monotonic() + 2.0
        for p in pubs.values():
            if not running():
                break
            left = max(0.0, deadline - time.monotonic())
            try:
                p.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
            except Exception:                  # not supported by every RMW; best effort
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        stats.interrupted = True
    finally:
        if close:
            reader.close()
        if ep is not None:
            ep.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return stats
