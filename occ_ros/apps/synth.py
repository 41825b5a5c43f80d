"""`occ-ros synth`: render a synthetic driving sequence with ground truth into a rosbag2 bag.

    occ-ros synth --out BAG --seconds S --seed N [--compressed] [--storage mcap|sqlite3]
                  [--size HxW] [--rate HZ] [--jpeg-quality Q] [--odom-per-frame K] [--workers N]
                  [--distortion plumb_bob|rational_polynomial|equidistant]
"""
from __future__ import annotations

import argparse
import logging
import re

from occ_ros.core.config import DISTORTION_MODELS
from occ_ros.core.errors import ConfigError

LOG = logging.getLogger('occ_ros.synth')


def parse_size(text: str) -> tuple[int, int]:
    """'900x1600' → (900, 1600) (height × width)."""
    m = re.fullmatch(r'\s*(\d+)\s*[xX×]\s*(\d+)\s*', text)
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise argparse.ArgumentTypeError(f'--size must be HxW with both ≥ 16, e.g. 900x1600; got {text!r}')
    return int(m.group(1)), int(m.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, help='bag directory to create (must not exist)')
    parser.add_argument('--seconds', type=float, default=10.0, help='sequence length (default 10)')
    parser.add_argument('--seed', type=int, default=0, help='world seed (default 0)')
    parser.add_argument('--compressed', action='store_true',
                        help='write sensor_msgs/CompressedImage JPEG on /<CAM>/image_raw/compressed')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='storage plugin')
    parser.add_argument('--size', type=parse_size, default=(900, 1600), metavar='HxW',
                        help='image size, height x width (default 900x1600)')
    parser.add_argument('--rate', type=float, default=12.0, help='camera frame rate, Hz (default 12)')
    parser.add_argument('--jpeg-quality', type=int, default=90, help='JPEG quality with --compressed')
    parser.add_argument('--odom-per-frame', type=int, default=4,
                        help='odometry and /tf messages per camera frame (default 4)')
    parser.add_argument('--staggered', action='store_true',
                        help='render and stamp each camera at its own capture time (nuScenes firing order, '
                             '42 ms spread) instead of all at the frame stamp')
    parser.add_argument('--fast-forward', type=float, default=1.0, metavar='F',
                        help='run the world F times faster: a fast drive (ego 5-11 m/s × F; default 1)')
    parser.add_argument('--workers', type=int, default=0,
                        help='rendering processes (default 0 = every core; the bag is the same for any count)')
    parser.add_argument('--distortion', choices=tuple(DISTORTION_MODELS), default=None,
                        help='render the raw images of a distorted lens of this model (occ_ros.bag.lens) and '
                             'write its D in CameraInfo (default: pinhole images, zero D)')
    parser.add_argument('--quiet', action='store_true', help='no progress line')


def run(args: argparse.Namespace) -> int:
    from occ_ros.bag.writer import print_progress, write_synthetic_bag
    if args.seconds <= 0 or args.rate <= 0:
        raise ConfigError(f'--seconds and --rate must be positive, got {args.seconds} and {args.rate}')
    s = write_synthetic_bag(args.out, args.seconds, args.seed, rate=args.rate, image_hw=args.size,
                            compressed=args.compressed, storage=args.storage,
                            jpeg_quality=args.jpeg_quality, odom_per_frame=args.odom_per_frame,
                            progress=None if args.quiet else print_progress, staggered=args.staggered,
                            time_scale=args.fast_forward, workers=args.workers, distortion=args.distortion)
    LOG.info('wrote %s: %d frames, %d messages in %.1f s (rendering + ground truth %.1f s); rig in %s/rig.yaml',
             s.path, s.frames, s.messages, s.seconds_total, s.seconds_rendering, s.path)
    return 0
