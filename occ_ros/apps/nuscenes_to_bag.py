"""`occ-ros nuscenes-to-bag`: convert a nuScenes scene into a rosbag2 bag."""
from __future__ import annotations

import argparse

from occ_ros.bag.nuscenes.convert import SCENE_FILE, convert_scene, print_progress
from occ_ros.bag.nuscenes.tables import LOG, READERS
from occ_ros.bag.writer import RIG_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--dataroot', required=True, help='nuScenes root (holds samples/, sweeps/, v1.0-*/)')
    parser.add_argument('--version', default='v1.0-mini', help='table folder under the dataroot (default v1.0-mini)')
    parser.add_argument('--scene', required=True, help='scene name, e.g. scene-0061')
    parser.add_argument('--out', required=True, help='bag directory to create (must not exist)')
    parser.add_argument('--occ-gts', default=None, metavar='DIR',
                        help='Occ3D gts/ (or occ3d_panoptic/) tree: <scene>/<sample_token>/labels.npz; '
                             'adds /ground_truth/panoptic at each keyframe\'s LIDAR_TOP stamp')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='storage plugin')
    parser.add_argument('--keyframes-only', action='store_true',
                        help='only the 2 Hz keyframe images (default: keyframes and sweeps, ≈12 Hz)')
    parser.add_argument('--reader', choices=READERS, default='auto',
                        help='auto: nuscenes-devkit when importable, else the built-in JSON reader')
    parser.add_argument('--skip-missing-gt', action='store_true',
                        help='convert keyframes without labels.npz (default: error listing them)')
    parser.add_argument('--progress-every', type=int, default=500, metavar='N',
                        help='progress line every N messages (default 500)')
    parser.add_argument('--quiet', action='store_true', help='no progress line')


def run(args: argparse.Namespace) -> int:
    s = convert_scene(args.dataroot, args.version, args.scene, args.out, occ_gts=args.occ_gts,
                      storage=args.storage, keyframes_only=args.keyframes_only, reader=args.reader,
                      skip_missing_gt=args.skip_missing_gt,
                      progress=None if args.quiet else print_progress, progress_every=args.progress_every)
    LOG.info('wrote %s (%s reader): scene %s, %d images, %d keyframes, %d ground-truth frames, %d ego poses, '
             '%d messages over %.1f s of data in %.1f s; rig in %s/%s, scene index in %s/%s',
             s.path, s.reader, s.scene, s.images, s.keyframes, s.gt_frames, s.odometry, s.messages,
             (s.end_ns - s.start_ns) * 1e-9, s.seconds, s.path, RIG_FILE, s.path, SCENE_FILE)
    return 0
