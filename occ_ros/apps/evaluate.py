"""`occ-ros eval`: score saved predictions against Occ3D ground truth (mIoU, RayIoU, RayPQ).

    occ-ros eval --pred DIR --gt DIR [--json OUT] [--origins-from gt|FILE.json]

Files are paired by sample (see `occ_ros.metrics.io.pair_files`): `gt/<scene>/<token>/labels.npz`
pairs with `pred/<token>.npz`, `pred/<token>/labels.npz` or the same relative path. Ground-truth
frames without a prediction are always listed; `--missing` says what they do to the result:
`error` (default) scores the pairs and exits with status 1, `skip` scores the pairs and exits 0,
`empty` scores them as all-free predictions.

Ray origins: by default each frame is cast from `DEFAULT_LIDAR_ORIGIN` (the nuScenes LiDAR
position in the ego frame). `--origins-from gt` reads an `origins` (K, 3) array from each GT
file; `--origins-from FILE.json` reads {"<sample key or token>": [[x, y, z], …], …}. More than 8
origins per frame are subsampled as the official evaluation does.

Exit status: 0 scored completely, 1 predictions missing (with `--missing error`); named errors
(unreadable or malformed files, bad origins) propagate to the `occ-ros` entry point.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.errors import ConfigError, EvaluationError, OccFileError
from occ_ros.metrics.evaluate import EvalReport, EvalSample, score_pairs
from occ_ros.core.occ3d import load_ground_truth, load_prediction
from occ_ros.core.occupancy import Occupancy
from occ_ros.metrics.io import FilePairing, pair_files
from occ_ros.metrics.origins import PROTOCOL_SINGLE
from occ_ros.metrics.raycast import MAX_ORIGINS
from occ_ros.metrics.rayiou import DEFAULT_THRESHOLDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `eval` options on `parser`."""
    parser.add_argument('--pred', type=Path, metavar='DIR',
                        help='directory of prediction .npz files (semantics, optional instances / pano_inst)')
    parser.add_argument('--gt', type=Path, metavar='DIR',
                        help='directory of Occ3D ground truth (…/<token>/labels.npz: semantics, mask_camera, '
                             'optional instances)')
    parser.add_argument('--json', type=Path, default=None, metavar='OUT', help='write the full report as JSON')
    parser.add_argument('--origins-from', default='auto', metavar='auto|gt|single|FILE.json',
                        help="ray origins per frame: auto (default) = the 'origins' array of each GT file when "
                             'it has one (occ-ros eval --save-pred writes the official ones), else the '
                             "frame's own LiDAR origin; gt = every GT file must have one; single = the nuScenes "
                             'LiDAR origin for every frame (not the official protocol); or a JSON file '
                             '{"<sample key or token>": [[x, y, z], ...]} in ego-frame metres')
    parser.add_argument('--missing', choices=('error', 'skip', 'empty'), default='error',
                        help='GT frames without a prediction: error = report and exit 1 (default), '
                             'skip = report and exit 0, empty = score as all-free predictions')
    parser.add_argument('--thresholds', type=float, nargs='+', default=list(DEFAULT_THRESHOLDS), metavar='M',
                        help='RayIoU/RayPQ depth thresholds in metres (default 1 2 4)')
    parser.add_argument('--max-origins', type=int, default=MAX_ORIGINS,
                        help='origins kept per frame, round(linspace) subsampling (default 8)')
    parser.add_argument('--no-rays', action='store_true', help='mIoU only (skip RayIoU/RayPQ)')
    parser.add_argument('--no-camera-mask', action='store_true',
                        help='mIoU over all voxels instead of mask_camera voxels')
    parser.add_argument('--workers', type=int, default=1,
                        help='processes casting the RayIoU/RayPQ rays of --pred/--gt (0 = every core; default 1: '
                             'their start-up pays off over many frames on an idle machine only)')
    parser.add_argument('--quiet', action='store_true', help='no progress on stderr')
    replay = parser.add_argument_group(
        'replay scoring', 'score the occupancy node on a bag with ground truth instead of --pred/--gt: the '
        'node is started (or attached to), the bag played with its timing, the outputs matched by stamp')
    replay.add_argument('--bag', type=Path, nargs='+', action='extend', metavar='BAG',
                        help='rosbag2 bag(s) with /ground_truth/panoptic; several bags are replayed one '
                             'after the other and also scored pooled (one confusion over all frames)')
    replay.add_argument('--out', type=Path, default=Path('eval_out'), help='report folder (default eval_out)')
    replay.add_argument('--model', default='lite', help='model of the started node (default lite)')
    replay.add_argument('--checkpoint', default=None, help='checkpoint (default: the shipped weights)')
    replay.add_argument('--backend', default='auto', help='auto | torch | onnxruntime | tensorrt')
    replay.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1)')
    replay.add_argument('--attach', action='store_true', help='use a running node instead of starting one')
    replay.add_argument('--node-name', default='occupancy_node', help='name of the node (default occupancy_node)')
    replay.add_argument('--pictures', type=int, default=4, help='frames to draw (default 4)')
    replay.add_argument('--origins', choices=('official', 'single'), default='official',
                        help="ray origins of RayIoU / RayPQ: official = the LiDAR positions of the bag's key "
                             'frames every 0.5 s (the official protocol, default); single = the scored '
                             "frame's own LiDAR origin only (not comparable with official figures)")
    replay.add_argument('--save-pred', type=Path, default=None, metavar='DIR',
                        help='also write every scored frame in the Occ3D layout: DIR/pred/<stamp>.npz '
                             '(semantics, instances) and DIR/gt/<stamp>/labels.npz (semantics, instances, '
                             'mask_camera, the origins used, ego_pose), so `occ-ros eval --pred DIR/pred --gt '
                             'DIR/gt` (or any other tool) re-scores the same frames')
    replay.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                        help='a parameter of the started node (repeatable), e.g. ego_motion_compensation=false')
    replay.add_argument('--official-compat', action='store_true',
                        help='the node reproduces the official instance tables and ids (official_compat), '
                             'for RayPQ comparable with published Panoptic-FlashOcc figures')


OriginsFor = Callable[[str, Occupancy, Path], Optional[np.ndarray]]


def origins_source(spec: Optional[str]) -> tuple[OriginsFor, Optional[str]]:
    """Build the per-frame origin lookup for `--origins-from` and a label for the report."""
    if spec is None or spec == 'single':
        return (lambda key, gt, path: None), PROTOCOL_SINGLE
    if spec == 'auto':
        return ((lambda key, gt, path: gt.origins),
                "the GT files' 'origins' arrays where present (official when written by --save-pred), "
                "else the frame's own LiDAR origin")
    if spec == 'gt':
        def from_gt(key: str, gt: Occupancy, path: Path) -> Optional[np.ndarray]:
            if gt.origins is None:
                raise OccFileError(f"{path}: no 'origins' array; add one ((K, 3) ego-frame metres) or drop "
                                   f'--origins-from gt')
            return gt.origins
        return from_gt, "per-frame origins from the GT files' 'origins' arrays"
    path = Path(spec)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvaluationError(f'--origins-from {spec}: cannot read a JSON object ({exc})') from exc
    if not isinstance(table, dict):
        raise EvaluationError(f'--origins-from {spec}: expected a JSON object {{"<key>": [[x, y, z], ...]}}')

    def from_json(key: str, gt: Occupancy, gt_path: Path) -> Optional[np.ndarray]:
        value = table.get(key, table.get(PurePosixPath(key).name))
        if value is None:
            raise EvaluationError(f'--origins-from {spec}: no origins for sample {key!r} '
                                  f'(nor for {PurePosixPath(key).name!r})')
        try:
            return np.asarray(value, dtype=np.float64).reshape(-1, 3)
        except ValueError as exc:
            raise EvaluationError(f'--origins-from {spec}: origins of {key!r} are not [[x, y, z], ...]') from exc
    return from_json, f'per-frame origins from {path}'


def iter_samples(pairing: FilePairing, grid: GridSpec, missing: str, origins_for: OriginsFor) -> Iterator[EvalSample]:
    """Load the paired files lazily (one frame in memory at a time)."""
    for key, pred_path, gt_path in pairing.pairs:
        gt = load_ground_truth(gt_path, grid)
        yield EvalSample(key, load_prediction(pred_path, grid), gt, origins_for(key, gt, gt_path))
    if missing == 'empty':
        for key, gt_path in zip(pairing.missing_predictions, pairing.missing_gt_files):
            gt = load_ground_truth(gt_path, grid)
            yield EvalSample(key, Occupancy.empty(grid), gt, origins_for(key, gt, gt_path))


def evaluate_dirs(pred_dir: Path, gt_dir: Path, *, grid: GridSpec = OCC3D_GRID, missing: str = 'error',
                  origins_from: Optional[str] = 'auto', thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                  max_origins: int = MAX_ORIGINS, rays: bool = True, camera_mask: bool = True,
                  progress: Optional[Callable[[int, str], None]] = None, workers: int = 1) -> EvalReport:
    """Pair, load and score two directories; the report lists missing/unmatched files. workers:
    processes casting the rays (`score_pairs`; 0 = every core)."""
    pairing = pair_files(pred_dir, gt_dir)
    if not pairing.pairs and missing != 'empty':
        raise EvaluationError(f'no prediction under {pred_dir} pairs with the {len(pairing.missing_predictions)} '
                              f'ground-truth files under {gt_dir} (e.g. {pairing.missing_predictions[:3]}); '
                              'name predictions <token>.npz or mirror the GT layout')
    origins_for, label = origins_source(origins_from)
    report = score_pairs(iter_samples(pairing, grid, missing, origins_for), grid=grid, thresholds=thresholds,
                         rays=rays, camera_mask=camera_mask, max_origins=max_origins, origins_label=label,
                         progress=progress, workers=workers)
    notes = report.notes
    if pairing.missing_predictions and missing == 'empty':
        notes = notes + (f'{len(pairing.missing_predictions)} missing predictions were scored as all free.',)
    return dataclasses.replace(report, missing_predictions=pairing.missing_predictions,
                               unmatched_predictions=pairing.unmatched_predictions, notes=notes)


def run(args: argparse.Namespace) -> int:
    """Entry point of `occ-ros eval`; returns the exit status."""
    if args.bag is not None:
        return run_bag(args)
    if args.pred is None or args.gt is None:
        raise EvaluationError('give --pred DIR and --gt DIR (saved predictions), or --bag BAG (replay through '
                              'the node)')
    def progress(i: int, key: str) -> None:
        if not args.quiet and (i + 1) % 50 == 0:
            print(f'  scored {i + 1} frames (last {key})', file=sys.stderr, flush=True)

    report = evaluate_dirs(args.pred, args.gt, missing=args.missing, origins_from=args.origins_from,
                           thresholds=args.thresholds, max_origins=args.max_origins, rays=not args.no_rays,
                           camera_mask=not args.no_camera_mask, progress=progress, workers=args.workers)
    print(report.to_markdown(), end='')
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=1, allow_nan=False) + '\n')
        print(f'wrote {args.json}')
    if report.missing_predictions and args.missing == 'error':
        print(f'error: {len(report.missing_predictions)} ground-truth frame(s) without a prediction '
              '(use --missing skip or --missing empty to accept that)', file=sys.stderr)
        return 1
    return 0


def node_params(overrides: Sequence[str], official_compat: bool = False) -> Optional[dict[str, Any]]:
    """`--param NAME=VALUE` overrides (values as ROS parses them) and `--official-compat`. Not `:=`:
    rclpy in this process would read that from the command line as a remap rule."""
    out: dict[str, Any] = {'official_compat': True} if official_compat else {}
    for item in overrides:
        name, sep, value = item.partition('=')
        if not sep or not name.strip() or name.endswith(':'):
            raise ConfigError(f'--param expects NAME=VALUE, got {item!r}')
        out[name.strip()] = value.strip()
    return out or None


def run_bag(args: argparse.Namespace) -> int:
    """`occ-ros eval --bag`: replay scoring through the occupancy node (occ_ros.apps.replay)."""
    from occ_ros.apps.node_process import ros_environment
    ros_environment()                       # loopback DDS before rclpy is imported
    from occ_ros.apps.replay import ReplayReport, ReplaySetReport, run_replay, run_replay_set

    options = dict(model=args.model, checkpoint=args.checkpoint, backend=args.backend, rate=args.rate,
                   attach=args.attach, node_name=args.node_name, max_pictures=args.pictures,
                   node_params=node_params(args.param, args.official_compat),
                   origins=args.origins, save_pred=args.save_pred,
                   progress=None if args.quiet else (lambda line: print(f'[eval] {line}', flush=True)))
    report: ReplayReport | ReplaySetReport
    if len(args.bag) == 1:
        report = run_replay(args.bag[0], args.out, **options)
    else:
        report = run_replay_set(args.bag, args.out, **options)
    print(report.to_markdown(), end='')
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=1, allow_nan=False) + '\n')
    print(f'report: {(args.out / "report.md").resolve()}')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone use: python -m occ_ros.apps.evaluate --pred DIR --gt DIR."""
    parser = argparse.ArgumentParser(prog='occ-ros eval', description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
