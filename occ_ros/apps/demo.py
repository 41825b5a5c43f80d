"""`occ-ros demo`: the whole product on a fresh machine, in one command.

Renders a short synthetic six-camera sequence with ground truth into a rosbag2 bag (on every
core, while the occupancy node with the default CPU model starts and is discovered), replays the
bag through DDS, scores the node's panoptic output (mIoU, RayIoU, RayPQ, rate, latency, drops)
and writes `report.md`, `report.json` and pictures into one folder, then prints where they are.
Exits non-zero on failure.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

DEFAULT_OUT = Path('demo_out')
# the `occ-ros` executable ends this command with os._exit (`cli.console_main`): its player and
# collector are shut down seconds before it returns, the node stopped and the files closed
EXIT_WITHOUT_TEARDOWN = True
DEMO_SEED = 4242            # a held-out world: never used for training
DEMO_IMAGE_HW = (900, 1600)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT, help=f'output folder (default {DEFAULT_OUT})')
    parser.add_argument('--seconds', type=float, default=6.0, help='length of the synthetic sequence')
    parser.add_argument('--seed', type=int, default=DEMO_SEED, help='synthetic world seed')
    parser.add_argument('--model', default='lite', help='model name (default lite)')
    parser.add_argument('--checkpoint', default=None, help='checkpoint (default: the shipped weights)')
    parser.add_argument('--backend', default='auto', help='auto | torch | onnxruntime | tensorrt')
    parser.add_argument('--raw', action='store_true', help='raw rgb8 images instead of JPEG')
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
    parser.add_argument('--pictures', type=int, default=4, help='frames to draw')
    parser.add_argument('--workers', type=int, default=0, help='rendering processes (default 0 = every core)')


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's children that have exited."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(args: argparse.Namespace) -> int:
    from occ_ros.apps.node_process import ros_environment
    ros_environment()                        # loopback DDS before anything imports rclpy
    from occ_ros.bag.writer import print_progress, write_synthetic_bag
    from occ_ros.apps.node_process import replay_node_params, start_node, stop_node
    from occ_ros.apps.replay import run_replay
    from occ_ros.geometry import nuscenes_rig, save_rig
    from occ_ros.weights import default_checkpoint

    t0 = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    bag = out / 'synthetic_bag'
    if bag.exists():
        shutil.rmtree(bag)

    def say(line: str) -> None:
        print(f'[demo {time.monotonic() - t0:6.1f} s] {line}', flush=True)

    checkpoint = args.checkpoint or default_checkpoint(args.model)
    if checkpoint is None:
        say(f'NOTE: no trained weights ship for {args.model!r}: the node runs with random weights, '
            'so the scores only prove the wiring')
    # the node starts while the bag renders (its start-up overlaps the rendering), with the rig
    # the bag will hold (the writer's own nuscenes_rig of the default size)
    rig_file = out / 'rig.yaml'
    save_rig(nuscenes_rig(DEMO_IMAGE_HW), rig_file)
    params = replay_node_params(args.model, args.backend, not args.raw, str(checkpoint) if checkpoint else None,
                                rig_file)
    node = start_node(params, out / 'node.log', say=say)
    collector = player = None
    rendering_cpu = 0.0
    try:
        from occ_ros.bag.writer import rig_topics
        from occ_ros.ros.collector import OutputCollector
        from occ_ros.ros.player import PlayerEndpoints, TopicLayout
        collector = OutputCollector('/occupancy_node')  # DDS discovery of the node, while the bag renders
        # … and of the player's publishers, made from the layout the bag will have
        player = PlayerEndpoints({t: TopicLayout(m) for t, m, _ in rig_topics(nuscenes_rig(DEMO_IMAGE_HW),
                                                                                not args.raw, True)})
        # the scoring's modules too, now that the node's start-up keeps the other core busy (after the
        # rendering, nothing runs beside the replay's set-up)
        import occ_ros.metrics.evaluate  # noqa: F401
        import occ_ros.metrics.origins  # noqa: F401
        say(f'rendering {args.seconds:g} s of synthetic world {args.seed} (six 900×1600 cameras, 12 Hz) → {bag}')
        write_synthetic_bag(bag, args.seconds, args.seed, image_hw=DEMO_IMAGE_HW, compressed=not args.raw,
                            progress=print_progress, workers=args.workers)
        rendering_cpu = _children_cpu_s()                 # the rendering processes, reaped by now
        report = run_replay(bag, out, model=args.model, checkpoint=str(checkpoint) if checkpoint else None,
                            backend=args.backend, rate=args.rate, max_pictures=args.pictures, progress=say,
                            started_node=node, collector=collector, player=player)
        player = None                                   # closed by the replay
    finally:
        if collector is not None:
            collector.close()
        if player is not None:
            player.close()
        if node.poll() is None:
            stop_node(node)
    if checkpoint is None:
        report.notes.insert(0, f'No trained weights ship for {args.model!r} yet: random weights; the scores '
                               'only demonstrate the pipeline and the metrics.')
        (out / 'report.md').write_text(report.to_markdown())
    s = report.scores
    say('done')
    print()
    print(f'  mIoU {s.semantic.miou:.1f}   RayIoU {s.ray_iou.rayiou:.1f}   '
          f'RayPQ {s.ray_pq.raypq:.1f}   ({report.matched} frames scored, {report.outputs} outputs)')
    print(f'  output rate {report.output_rate_hz:.2f} Hz for {report.input_rate_hz:.1f} Hz input; '
          f'latency p50 {report.latency_p50_ms or float("nan"):.0f} ms, '
          f'p99 {report.latency_p99_ms or float("nan"):.0f} ms; dropped sets {report.dropped_sets}')
    print(f'  CPU: rendering processes {rendering_cpu:.1f} s, this process {time.process_time():.1f} s, '
          f'node {_children_cpu_s() - rendering_cpu:.1f} s')
    print(f'  report:   {(out / "report.md").resolve()}')
    print(f'  pictures: {", ".join(Path(p).name for p in report.pictures)} in {out.resolve()}')
    return 0
