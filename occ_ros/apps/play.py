"""`occ-ros play BAG`: replay a rosbag2 bag through rclpy with the bag's timing (raw CDR).

The bag is read by `occ_ros.bag.reader` and published by `occ_ros.ros.player` (see there for QoS,
the wait for subscribers, --clock and signals).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from occ_ros.bag.reader import BagReader
from occ_ros.ros.player import PlayStats, play

LOG = logging.getLogger('occ_ros.play')


def play_bag(bag: str | Path | BagReader, **kwargs: Any) -> PlayStats:
    """Play `bag` (a path, opened here, or an open `BagReader`, which stays open) — keyword
    arguments: those of `occ_ros.ros.player.play`."""
    if isinstance(bag, BagReader):
        return play(bag, close=False, **kwargs)
    return play(BagReader(bag), **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', help='rosbag2 directory (MCAP or sqlite3)')
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1.0)')
    parser.add_argument('--loop', action='store_true', help='play again from the start until interrupted')
    parser.add_argument('--clock', action='store_true', help='publish /clock (rosgraph_msgs/Clock) with bag time')
    parser.add_argument('--topics', nargs='+', default=None, metavar='TOPIC', help='play only these topics')
    parser.add_argument('--wait-subscribers', type=float, default=5.0, metavar='S',
                        help='seconds to wait for subscribers on the image topics before playing '
                             '(0 = do not wait; default 5)')


def run(args: argparse.Namespace) -> int:
    st = play_bag(args.bag, rate=args.rate, loop=args.loop, clock=args.clock, topics=args.topics,
              wait_subscribers=args.wait_subscribers)
    LOG.info('published %d messages in %.2f s (%d pass%s)%s%s', st.published, st.duration_s, st.loops,
             '' if st.loops == 1 else 'es', ', interrupted' if st.interrupted else '',
             f'; skipped {sorted(st.skipped_topics)}' if st.skipped_topics else '')
    return 130 if st.interrupted else 0
