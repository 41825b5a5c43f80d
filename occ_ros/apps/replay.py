"""Rosbag replay scoring: start (or attach to) the occupancy node, play a bag, score what it published.

    report = run_replay('demo.bag', 'out/', model='lite')

1. the node runs in its own process with the bag's rig file and image transport;
2. an in-process collector subscribes to its `~/panoptic`, debug timings and `/diagnostics`;
3. the bag plays through rclpy with its own timing (`occ_ros.apps.play`);
4. results are matched to the bag's ground truth by stamp and scored (mIoU with the camera mask,
   RayIoU, RayPQ), with output rate, stamp-to-output latency and dropped sets;
5. `report.json`, `report.md` and pictures (BEV prediction beside ground truth, a 3-D voxel view,
   the six input images with the frame's timing) are written to the output folder.

Several bags (`run_replay_set`, `occ-ros eval --bag A B C`) are replayed one after the other
(each into its own sub-folder with its own report) and also scored *pooled*: one confusion matrix
and one set of ray statistics over every scored frame of every bag, as Occ3D scores a whole
validation split. A class that a single short sequence never shows then still counts once the
set shows it, instead of scoring 0 (any false positive) or being left out of that bag's mean.
"""
from __future__ import annotations

import json
import logging
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np

from occ_ros.core.errors import BagError, OccRosError
from occ_ros.apps.node_process import (replay_node_params, ros_environment, start_node,
                                       interrupt_node, stop_node, tail)

if TYPE_CHECKING:
    from occ_ros.ros.collector import OutputCollector
    from occ_ros.ros.player import PlayerEndpoints

LOG = logging.getLogger(__name__)


class ReplayError(OccRosError):
    """The replay could not run: the node did not start, died, or published nothing."""


@dataclass
class FrameRecord:
    stamp_ns: int
    latency_ms: Optional[float]
    processing_ms: Optional[float]
    missing_cameras: tuple[str, ...] = ()


@dataclass
class ReplayReport:
    """Scores and timing of one replay (see `to_dict`)."""

    bag: str
    model: str
    backend: str
    scores: Any                                   # occ_ros.metrics.evaluate.EvalReport
    frames_in_bag: int
    outputs: int
    matched: int
    dropped_sets: Optional[int]
    output_rate_hz: float
    input_rate_hz: float
    latency_p50_ms: Optional[float]
    latency_p99_ms: Optional[float]
    processing_p50_ms: Optional[float]
    records: list[FrameRecord] = field(default_factory=list)
    pictures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    # the scored (prediction, ground truth) pairs, kept for pooled scoring of several bags
    samples: list[Any] = field(default_factory=list, repr=False)
    keyframes: Optional[tuple[int, int]] = None   # nuScenes bags: (key frames scored, key frames with GT)

    def to_dict(self) -> dict[str, Any]:
        return {
            'bag': self.bag, 'model': self.model, 'backend': self.backend,
            'frames_in_bag': self.frames_in_bag, 'outputs': self.outputs, 'matched': self.matched,
            'dropped_sets': self.dropped_sets, 'output_rate_hz': round(self.output_rate_hz, 3),
            'input_rate_hz': round(self.input_rate_hz, 3),
            'latency_ms': {'p50': _r(self.latency_p50_ms), 'p99': _r(self.latency_p99_ms)},
            'processing_ms_p50': _r(self.processing_p50_ms),
            'keyframes_scored': None if self.keyframes is None else {'scored': self.keyframes[0],
                                                                     'with_ground_truth': self.keyframes[1]},
            'scores': self.scores.to_dict() if self.scores is not None else None,
            'pictures': self.pictures, 'notes': self.notes,
            'frames': [{'stamp_ns': r.stamp_ns, 'latency_ms': _r(r.latency_ms),
                        'processing_ms': _r(r.processing_ms), 'missing_cameras': list(r.missing_cameras)}
                       for r in self.records],
        }

    def to_markdown(self) -> str:
        s = self.scores
        lines = ['# occ_ros replay report', '',
                 f'- bag: `{self.bag}`', f'- model: `{self.model}`, backend: `{self.backend}`',
                 f'- frames in bag: {self.frames_in_bag}; node outputs: {self.outputs}; '
                 f'scored (matched to ground truth): {self.matched}',
                 f'- input rate {self.input_rate_hz:.1f} Hz → output rate {self.output_rate_hz:.2f} Hz; '
                 f'dropped camera sets (node): {self.dropped_sets if self.dropped_sets is not None else "n/a"}',
                 f'- stamp-to-output latency p50 {_fmt(self.latency_p50_ms)} ms, p99 {_fmt(self.latency_p99_ms)} ms; '
                 f'processing p50 {_fmt(self.processing_p50_ms)} ms',
                 *([f'- key frames scored: {self.keyframes[0]} of {self.keyframes[1]} (paired by sample)']
                   if self.keyframes is not None else []),
                 f'- ray origins: {s.origins}' if s is not None else '- ray origins: n/a', '']
        if s is not None:
            lines += ['## Scores', '',
                      '| mIoU (camera mask) | RayIoU | RayPQ |', '|---|---|---|',
                      f'| {_fmt(s.semantic.miou)} | {_fmt(s.ray_iou.rayiou if s.ray_iou else None)} | '
                      f'{_fmt(s.ray_pq.raypq if s.ray_pq else None)} |', '', s.to_markdown(), '']
        if self.notes:
            lines += ['## Notes', ''] + [f'- {n}' for n in self.notes] + ['']
        if self.pictures:
            lines += ['## Pictures', ''] + [f'![{Path(p).stem}]({Path(p).name})' for p in self.pictures]
        return '\n'.join(lines) + '\n'


@dataclass
class ReplaySetReport:
    """Several replays and their pooled scores (`run_replay_set`)."""

    reports: list[ReplayReport]
    scores: Any                                   # pooled occ_ros.metrics.evaluate.EvalReport

    def to_dict(self) -> dict[str, Any]:
        return {'bags': [r.to_dict() for r in self.reports],
                'pooled': {'frames_scored': sum(r.matched for r in self.reports),
                           'scores': self.scores.to_dict() if self.scores is not None else None}}

    def to_markdown(self) -> str:
        lines = ['# occ_ros replay report: several bags', '',
                 '| bag | frames scored | output Hz | latency p50 ms | mIoU | RayIoU | RayPQ |',
                 '|---|---|---|---|---|---|---|']
        for r in self.reports:
            lines.append(f'| `{Path(r.bag).name}` | {r.matched} | {r.output_rate_hz:.2f} | '
                         f'{_fmt(r.latency_p50_ms)} | {_score_cells(r.scores)} |')
        total = sum(r.matched for r in self.reports)
        lines.append(f'| **pooled** | {total} | | | {_score_cells(self.scores)} |')
        lines += ['', 'Pooled: one confusion matrix and one set of ray statistics over every scored frame '
                  'of every bag (per-bag reports are in the numbered sub-folders).', '']
        if self.scores is not None:
            lines += [self.scores.to_markdown(), '']
        return '\n'.join(lines) + '\n'


def _score_cells(s: Any) -> str:
    if s is None:
        return 'n/a | n/a | n/a'
    return (f'{_fmt(s.semantic.miou)} | {_fmt(s.ray_iou.rayiou if s.ray_iou else None)} | '
            f'{_fmt(s.ray_pq.raypq if s.ray_pq else None)}')


def pool_scores(reports: Sequence[ReplayReport], **score_options: Any) -> Any:
    """One EvalReport over the scored frames of every report (None when nothing was scored);
    `score_options` go to `score_pairs` (the replay defaults: camera mask, rays, RayPQ). The
    protocol label is the reports' own (their samples carry their origins)."""
    from occ_ros.metrics.evaluate import score_pairs
    samples = [s for r in reports for s in r.samples]
    labels = {r.scores.origins for r in reports if r.scores is not None}
    if len(labels) == 1 and 'origins_label' not in score_options:
        score_options['origins_label'] = labels.pop()
    return score_pairs(samples, **score_options) if samples else None


ORIGIN_PROTOCOLS = ('official', 'single')


def save_samples(samples: Sequence[Any], out_dir: Path, prefix: str = '') -> None:
    """Every scored frame in the Occ3D layout, under one token (its stamp) per frame:
    out_dir/pred/<token>.npz (semantics, instances) and out_dir/gt/<token>/labels.npz (semantics,
    instances, mask_camera, the ray origins used — None → the default LiDAR origin is written —,
    ego_pose). `occ-ros eval --pred out_dir/pred --gt out_dir/gt` reproduces the scores. `prefix`
    (a sub-folder on both sides, e.g. the bag's name) keeps several bags' stamps apart."""
    import dataclasses

    from occ_ros.core.occ3d import save_ground_truth, save_prediction
    from occ_ros.metrics.raycast import DEFAULT_LIDAR_ORIGIN
    for s in samples:
        save_prediction(out_dir / 'pred' / prefix / f'{s.key}.npz', s.pred)
        origins = s.origins if s.origins is not None else np.asarray([DEFAULT_LIDAR_ORIGIN])
        save_ground_truth(out_dir / 'gt' / prefix / s.key / 'labels.npz', dataclasses.replace(s.gt, origins=origins))


def ego_track(reader: Any, topic: str = '/odom') -> Any:
    """The ego poses of a bag (nav_msgs/Odometry on `topic`) as an `EgoTrack`; BagError when the
    bag has none (the official ray origins need the ego motion; `origins='single'` does not)."""
    from occ_ros.metrics.origins import EgoTrack
    from occ_ros.ros.convert import pose_to_matrix
    if topic not in reader.topics:
        raise BagError(f'{reader.path} has no {topic}: the official RayIoU origins need the ego motion of '
                       f'the sequence; record odometry or score with --origins single')
    samples = []
    for raw, msg in reader.messages([topic]):
        st = msg.header.stamp
        samples.append((int(st.sec) * 1_000_000_000 + int(st.nanosec),
                        pose_to_matrix(msg.pose.pose.position, msg.pose.pose.orientation)))
    return EgoTrack.from_samples(samples)


def run_replay_set(bags: Sequence[str | Path], out_dir: str | Path, *,
                   progress: Optional[Callable[[str], None]] = None, **kwargs: Any) -> ReplaySetReport:
    """Replay every bag of `bags` (`run_replay` with `kwargs`, report in `out_dir/NN_<bag name>`)
    and score all their frames pooled; `out_dir/report.json|md` hold both."""
    say = progress or (lambda line: LOG.info('%s', line))
    if not bags:
        raise ReplayError('no bags to replay')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for i, bag in enumerate(bags):
        say(f'bag {i + 1}/{len(bags)}: {bag}')
        name = f'{i:02d}_{Path(bag).name}'
        per_bag = dict(kwargs, save_prefix=name) if kwargs.get('save_pred') is not None else kwargs
        reports.append(run_replay(bag, out / name, progress=progress, **per_bag))
    say(f'scoring {sum(r.matched for r in reports)} frames of {len(reports)} bags pooled')
    result = ReplaySetReport(reports, pool_scores(reports))
    (out / 'report.json').write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + '\n')
    (out / 'report.md').write_text(result.to_markdown())
    return result


def _r(x: Optional[float]) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else round(float(x), 2)


def _fmt(x: Optional[float]) -> str:
    return 'n/a' if x is None or not np.isfinite(x) else f'{x:.1f}'


def _percentile(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if len(values) else None


def run_replay(bag: str | Path, out_dir: str | Path, *, model: str = 'lite', checkpoint: Optional[str] = None,
               backend: str = 'auto', rate: float = 1.0, attach: bool = False,
               node_executable: Optional[Sequence[str]] = None, node_params: Optional[dict[str, Any]] = None,
               node_name: str = 'occupancy_node', startup_timeout_s: float = 180.0,
               max_pictures: int = 4, progress: Optional[Callable[[str], None]] = None,
               origins: str = 'official', save_pred: Optional[Path] = None,
               save_prefix: str = '', started_node: Optional[subprocess.Popen] = None,
               collector: Optional['OutputCollector'] = None,
               player: Optional['PlayerEndpoints'] = None) -> ReplayReport:
    """Replay `bag` through the occupancy node and score its outputs (see module docstring).

    origins: 'official' — RayIoU / RayPQ rays from the LiDAR positions of the bag's key frames
        (every 0.5 s, from its odometry; `occ_ros.metrics.origins`), as the official protocol;
        'single' — from the scored frame's own LiDAR origin only (labelled as such).
    save_pred: write every scored frame in the Occ3D layout there (`save_samples`).

    attach: use an already running node named `node_name` instead of starting one.
    started_node: a node process already started with `start_node(replay_node_params(...))` (the
        demo starts it while the bag renders, so its start-up overlaps the rendering); it is
        waited for and stopped like one started here.
    collector: an `OutputCollector` of `node_name` already created (the demo creates it with the
        node, so that DDS discovery also overlaps the rendering); closed here like one created here.
    player: the player's publishers made ahead (`PlayerEndpoints`, the demo's, for the same
        reason); used for playing (if they serve the bag's topics) and closed.
    node_executable: command that starts the node (tests start a node with a ground-truth
        backend this way); default `python -m occ_ros.ros.main`.
    """
    say = progress or (lambda line: LOG.info('%s', line))
    bag = Path(bag)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = ros_environment()

    from occ_ros.bag.reader import BagReader
    if origins not in ORIGIN_PROTOCOLS:
        raise ReplayError(f'origins must be one of {ORIGIN_PROTOCOLS}, got {origins!r}')
    # one open reader serves the ground truth, the player and the pictures (opening a bag parses
    # its metadata: ≈ 0.3 s of CPU for the demo's bag)
    with BagReader(bag) as reader:
        gt = reader.ground_truth_frames()      # decoded when scored: only the frames the node answered
        track = ego_track(reader) if origins == 'official' else None
        type_by_topic = {t: s.msgtype for t, s in reader.topics.items()}
        bag_start_ns = int(reader.start_ns)
        bag_end_ns = int(reader.end_ns)
        if not gt:
            raise BagError(f'{bag} has no ground truth on /ground_truth/panoptic: nothing to score against')
        compressed = any(v.endswith('CompressedImage') for v in type_by_topic.values())
        rig_file = bag / 'rig.yaml'
        params = replay_node_params(model, backend, compressed, checkpoint,
                                    rig_file if rig_file.is_file() else None, node_params)

        from occ_ros.ros.collector import OutputCollector, wait_for
        proc: Optional[subprocess.Popen] = started_node
        log_path = out / 'node.log'
        if collector is None:
            collector = OutputCollector(f'/{node_name}')
        try:
            if not attach and proc is None:
                proc = start_node(params, log_path, node_executable, node_name, say, env)
            t0 = time.monotonic()
            ready = wait_for(lambda: collector.node_ready() or (proc is not None and proc.poll() is not None),
                             startup_timeout_s)
            if proc is not None and proc.poll() is not None:
                raise ReplayError(f'the node exited with code {proc.returncode} before it was ready; '
                                  f'last lines of {log_path}:\n{tail(log_path)}')
            if not ready:
                raise ReplayError(f'the node was not ready after {startup_timeout_s:.0f} s; see {log_path}')
            say(f'node ready after {time.monotonic() - t0:.1f} s; playing {bag.name} at rate {rate}')

            from occ_ros.apps.play import play_bag
            started: dict[str, int] = {}

            def mark_start() -> None:
                started['wall_ns'] = time.time_ns()

            stats = play_bag(reader, rate=rate, wait_subscribers=30.0, on_ready=mark_start, endpoints=player)
            player = None                 # closed by the player
            say(f'played {stats.published} messages in {stats.duration_s:.1f} s (after {stats.waited_s:.1f} s '
                'waiting for subscribers); waiting for the node to finish')
            # done at the output of the bag's last instant (a camera set there: nothing can follow it),
            # else when the node has been quiet for 3 s
            collector.wait_until_quiet(quiet_s=3.0, timeout_s=60.0, last_stamp_ns=bag_end_ns - 1)
            if proc is not None:
                interrupt_node(proc)      # it shuts down (≈1 s) while the outputs are scored
        except BaseException:
            if proc is not None:
                say(f'node stopped (exit code {stop_node(proc)})')
            raise
        finally:
            collector.close()
            if player is not None:        # not played (an error before): still closed
                player.close()

        outputs = collector.outputs
        try:
            if not outputs.panoptic:
                raise ReplayError(f'the node published no ~/panoptic result; see {log_path}\n{tail(log_path)}')
            report = _score_and_report(bag, out, model, backend, gt, outputs, started.get('wall_ns'), rate,
                                       max_pictures, say, track, save_pred, save_prefix, bag_start_ns, reader=reader)
            say(f'report written ({out / "report.md"}, {len(report.pictures)} pictures)')
            return report
        finally:
            if proc is not None:
                say(f'node stopped (exit code {stop_node(proc, interrupted=True)})')


def _rate_hz(stamps: Sequence[int], rate: float) -> float:
    """Frames per wall second at playback `rate`: (n − 1) intervals over the stamps' span."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return 0.0
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9) * rate


def keyframe_aliases(bag: Path) -> dict[int, int]:
    """{camera stamp ns: ground-truth stamp ns} of every key frame of a `nuscenes-to-bag` bag (its
    nuscenes.json), else {}. A nuScenes key frame's ground truth is stamped at LIDAR_TOP, its
    camera set at the cameras' own stamps tens of milliseconds away: outputs are paired by sample."""
    meta = bag / 'nuscenes.json'
    if not meta.is_file():
        return {}
    try:
        doc = json.loads(meta.read_text())
        return {int(cam_ns): int(k['stamp_ns']) for k in doc.get('keyframes', [])
                for cam_ns in dict(k.get('camera_stamps_ns', {})).values()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BagError(f'{meta}: not a readable nuscenes-to-bag scene file ({exc})') from exc


def _match(gt_stamps: Sequence[int], stamp: int, tolerance_ns: int = 5_000_000,
           aliases: Optional[dict[int, int]] = None) -> Optional[int]:
    """The ground-truth stamp of an output stamped `stamp`: through the key-frame aliases (a
    nuScenes bag) when the stamp is one of a sample's camera stamps, else the nearest within
    `tolerance_ns`."""
    if aliases:
        for cam_ns, gt_ns in aliases.items():
            if abs(cam_ns - stamp) <= tolerance_ns:
                return gt_ns
    i = int(np.searchsorted(gt_stamps, stamp))
    best = None
    for j in (i - 1, i):
        if 0 <= j < len(gt_stamps) and abs(gt_stamps[j] - stamp) <= tolerance_ns:
            if best is None or abs(gt_stamps[j] - stamp) < abs(best - stamp):
                best = gt_stamps[j]
    return best


def _score_and_report(bag: Path, out: Path, model: str, backend: str, gt: Mapping[int, Any], outputs: Any,
                      play_start_wall_ns: Optional[int], rate: float,
                      max_pictures: int, say: Callable[[str], None], track: Any = None,
                      save_pred: Optional[Path] = None, save_prefix: str = '',
                      bag_start_ns: Optional[int] = None, *, reader: Any) -> ReplayReport:
    from occ_ros.core.occupancy import Occupancy
    from occ_ros.metrics.evaluate import EvalSample, score_pairs
    from occ_ros.metrics.origins import PROTOCOL_OFFICIAL, PROTOCOL_SINGLE, keyframe_stamps, official_origins

    from occ_ros.model import model_config
    grid = model_config(model).grid
    gt_stamps = sorted(gt)
    aliases = keyframe_aliases(bag)
    keyframes: Optional[list[int]] = None
    if aliases and track is not None:            # nuScenes: the key frames are the samples themselves
        keyframes = sorted(set(aliases.values()))
    elif track is not None:
        keyframes = keyframe_stamps(gt_stamps[0], gt_stamps[-1])
    # the player's first message (at play_start_wall_ns) is the bag's first message, not its first
    # ground truth: latency is measured from where each stamp was due in wall time
    bag_start = bag_start_ns if bag_start_ns is not None else gt_stamps[0]
    samples, records, latencies = [], [], []
    scored_gt: set[int] = set()
    for stamp in sorted(outputs.panoptic):
        pred = outputs.panoptic[stamp]
        lat = None
        if play_start_wall_ns is not None and stamp in outputs.received_wall_ns:
            published = play_start_wall_ns + (stamp - bag_start) / rate
            lat = (outputs.received_wall_ns[stamp] - published) * 1e-6
            latencies.append(lat)
        records.append(FrameRecord(stamp, lat, outputs.processing_ms.get(stamp),
                                   outputs.missing_cameras.get(stamp, ())))
        g = _match(gt_stamps, stamp, aliases=aliases)
        if g is None:
            continue
        truth = gt[g]
        o = (official_origins(track, g, keyframes, grid=grid) if track is not None and keyframes is not None
             else None)
        pose = track.pose_at(g) if track is not None else None
        scored_gt.add(g)
        samples.append(EvalSample(str(stamp), Occupancy(pred.semantics, pred.instances),
                                  Occupancy(truth.semantics, truth.instances, mask_camera=truth.mask_camera,
                                            origins=o, ego_pose=pose), o))
    protocol = PROTOCOL_OFFICIAL if track is not None else PROTOCOL_SINGLE
    if save_pred is not None:
        save_samples(samples, Path(save_pred), save_prefix)
        say(f'saved {len(samples)} frames (prediction + ground truth, Occ3D layout) under {save_pred}')
    say(f'scoring {len(samples)} frames (mIoU, RayIoU, RayPQ; origins: {protocol})')
    # the pictures are drawn on a second thread while the rays are cast (the caster releases the
    # GIL, and so do PNG compression, resizing and numpy's bulk operations): two cores, not one
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix='report-pictures') as pool:
        pictures = pool.submit(write_pictures, reader, out, outputs, gt, gt_stamps, samples, max_pictures, aliases)
        scores = score_pairs(samples, grid=grid, origins_label=protocol) if samples else None
        picture_paths = pictures.result()
    drops = None
    for name, values in outputs.diagnostics.items():
        for key, value in values.items():
            if 'dropped' in key.lower() and value.strip().isdigit():
                drops = max(drops or 0, int(value))
    processing = [v for v in outputs.processing_ms.values()]
    report = ReplayReport(
        bag=str(bag), model=model, backend=backend, scores=scores, frames_in_bag=len(gt),
        outputs=len(outputs.panoptic), matched=len(samples), dropped_sets=drops,
        output_rate_hz=_rate_hz(sorted(outputs.panoptic), rate), input_rate_hz=_rate_hz(gt_stamps, rate),
        latency_p50_ms=_percentile(latencies, 50), latency_p99_ms=_percentile(latencies, 99),
        processing_p50_ms=_percentile(processing, 50), records=records,
        diagnostics=dict(outputs.diagnostics), samples=samples,
        keyframes=(len(scored_gt), len(set(aliases.values()) & set(gt))) if aliases else None)
    if len(samples) < len(gt):
        missing = len(gt) - len(scored_gt)
        unmatched = len(outputs.panoptic) - len(samples)
        why = []
        if drops:
            why.append(f'the node dropped {drops} camera sets (it processes the newest set when it is slower '
                       'than the input)')
        if unmatched:
            why.append(f'{unmatched} outputs matched no ground-truth frame (stamps more than 5 ms apart and '
                       'no key-frame pairing)')
        if not why:
            why.append('no dropped set and no unmatched output was counted: the camera sets of these frames '
                       'never reached the node (see the node log)')
        report.notes.append(f'{missing} of {len(gt)} ground-truth frames have no output: ' + '; '.join(why))
    report.pictures = picture_paths
    (out / 'report.json').write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + '\n')
    (out / 'report.md').write_text(report.to_markdown())
    return report


TILE_WIDTH = 320                    # a camera's tile in the pictures' mosaic, pixels
PICTURE_THREADS = 2                 # threads drawing the pictures (beside the scoring's)
RECORD_LAG_NS = 500_000_000         # a picture's camera images are looked for this long after its stamp


def tile_image(msg: Any, tile_width: int = TILE_WIDTH) -> np.ndarray:
    """RGB of an Image or CompressedImage for a mosaic tile `tile_width` wide: a JPEG is decoded at
    the smallest DCT scale still that wide (1/4 for a 1600-wide camera: a sixth of a full decode's
    CPU; the tile is made smaller anyway), anything else in full."""
    from occ_ros.ros.convert import compressed_size, compressed_to_rgb, image_to_rgb

    if not hasattr(msg, 'format'):
        return image_to_rgb(msg)
    hw = compressed_size(bytes(msg.data[:65536]))
    reduce = 1 if hw is None else max((r for r in (1, 2, 4, 8) if hw[1] // r >= tile_width), default=1)
    return compressed_to_rgb(msg, reduce=reduce)


def write_pictures(reader: Any, out: Path, outputs: Any, gt: Mapping[int, Any], gt_stamps: Sequence[int],
                   samples: Sequence[Any], max_pictures: int, aliases: Optional[dict[int, int]] = None,
                   slop_ns: int = 100_000_000, threads: int = PICTURE_THREADS) -> list[str]:
    """Per chosen frame: BEV prediction vs truth, a voxel view, and the six camera images — each
    camera's image nearest to the output's stamp within `slop_ns` (the cameras of a set carry their
    own stamps: a nuScenes set spreads over tens of milliseconds). reader: the replayed bag's open
    `BagReader` (left open). The bag is read once; the pages are drawn and compressed by `threads`
    threads (PNG compression, JPEG decoding, resizing and numpy's bulk operations release the GIL)."""
    from occ_ros.core.occupancy import stamp_ns_of

    if not samples or max_pictures <= 0:
        return []
    picks = [samples[int(i)] for i in np.linspace(0, len(samples) - 1, min(max_pictures, len(samples)))]
    wanted = sorted({int(s.key) for s in picks})
    chosen: dict[int, dict[str, Any]] = {k: {} for k in wanted}   # the message kept, decoded once at the end
    best: dict[tuple[int, str], int] = {}                      # (output stamp, camera) → |Δt| kept
    image_topics = [t for t, s in reader.topics.items() if s.msgtype.endswith('Image')]

    def camera_of(topic: str) -> str:                # /CAM_FRONT/image_raw[/compressed] → CAM_FRONT
        return topic.strip('/').split('/')[0]

    def keep(raw: Any, msg: Any) -> None:
        st = stamp_ns_of(msg)
        cam = camera_of(raw.topic)
        k = int(np.searchsorted(wanted, st))
        for w in wanted[max(0, k - 1):k + 1]:
            d = abs(st - w)
            if d <= slop_ns and d < best.get((w, cam), slop_ns + 1):
                best[(w, cam)] = d
                chosen[w][cam] = msg

    # the bag's timestamps are when the messages were recorded, at or a little after their header
    # stamps: read a window around each picture's stamp; the whole bag only if a camera is missing
    # from one (a recorder that lagged more, or a camera that really is missing)
    for w in wanted:
        for raw, msg in reader.messages(image_topics, w - slop_ns, w + slop_ns + RECORD_LAG_NS + 1):
            keep(raw, msg)
    cameras = {camera_of(t) for t in image_topics}
    if any(set(chosen[w]) != cameras for w in wanted):
        for raw, msg in reader.messages(image_topics):
            keep(raw, msg)

    def page(n: int) -> str:
        stamp = int(picks[n].key)
        matched = _match(gt_stamps, stamp, aliases=aliases)
        assert matched is not None                  # picks are matched samples
        path = out / f'frame_{n:02d}.png'
        draw_page(stamp, outputs, gt[matched], chosen[stamp]).save(path, compress_level=3)  # 2.3x faster than 6
        return str(path)

    if threads <= 1 or len(picks) == 1:
        return [page(n) for n in range(len(picks))]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix='report-page') as pool:
        return list(pool.map(page, range(len(picks))))


def draw_page(stamp: int, outputs: Any, truth: Any, camera_msgs: dict[str, Any]) -> Any:
    """One picture (a PIL image): the cameras of the output at `stamp` (`camera_msgs`: camera name →
    its Image / CompressedImage), the BEV of prediction vs truth, and both as voxel views."""
    from occ_ros.apps import viz
    from occ_ros.core.config import NUSCENES_CAMERAS

    pred = outputs.panoptic[stamp]
    images = {cam: tile_image(msg) for cam, msg in camera_msgs.items()}
    proc = outputs.processing_ms.get(stamp)
    title = f'stamp {stamp * 1e-9:.2f} s'
    bev = viz.prediction_vs_truth(pred.semantics, truth.semantics, truth.mask_camera,
                                  pred.mask_camera, title=title)
    vox = viz.hstack([viz.titled(viz.voxel_rendering(pred.semantics, size=(560, 420)), 'prediction (3-D)'),
                      viz.titled(viz.voxel_rendering(truth.semantics, size=(560, 420)), 'ground truth (3-D)')])
    order = [c for c in NUSCENES_CAMERAS if c in images] or sorted(images)
    timing = f'processing {proc:.0f} ms' if proc is not None else ''
    missing = outputs.missing_cameras.get(stamp, ())
    caption = f'{title}   {timing}' + (f'   missing: {", ".join(missing)}' if missing else '')
    cams = viz.camera_mosaic([images.get(c) for c in order], order, caption, tile_width=TILE_WIDTH)
    return viz.vstack([cams, bev, vox])
