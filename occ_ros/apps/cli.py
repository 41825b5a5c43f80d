"""`occ-ros` command line: thin subcommands over the package.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
modules are imported only when their subcommand runs, so `occ-ros --help` stays fast and a
missing optional dependency only affects the subcommand that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

# name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    'demo': ('occ_ros.apps.demo', 'one command: synthetic bag → node → scores, report and pictures'),
    'bench': ('occ_ros.apps.bench', 'per-stage latency, FPS and memory of a model on a backend'),
    'export': ('occ_ros.apps.export', 'export a model to ONNX (fp32 or strongly typed fp16)'),
    'build-engine': ('occ_ros.apps.build_engine', 'build (or reuse) a cached TensorRT engine'),
    'eval': ('occ_ros.apps.evaluate', 'score predictions against Occ3D ground truth'),
    'synth': ('occ_ros.apps.synth', 'render a synthetic driving sequence with ground truth into a bag'),
    'play': ('occ_ros.apps.play', 'replay a rosbag2 bag through rclpy with its timing'),
    'nuscenes-to-bag': ('occ_ros.apps.nuscenes_to_bag', 'convert a nuScenes scene into a rosbag2 bag'),
    'train': ('occ_ros.apps.train', 'train a model on the synthetic world'),
    'prepare': ('occ_ros.apps.prepare', 'first-run work ahead of time: the node\'s ONNX graph, the compiled '
                                        'kernels (scripts/setup.sh runs it)'),
    'doctor': ('occ_ros.apps.doctor', 'GPU acceptance run in resumable phases: environment, export, '
                                      'engines, accuracy, timing → JSON + Markdown report'),
}


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    """The `occ-ros` parser; only the `selected` subcommand's module is imported (for its options)."""
    parser = argparse.ArgumentParser(
        prog='occ-ros', description='Panoptic 3-D occupancy from six surround cameras.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


# numpy asks the kernel for transparent huge pages on every array of 4 MB or more (madvise
# MADV_HUGEPAGE). Where THP defrag is "madvise" (Ubuntu's default, and this machine's), each such
# allocation may stall in direct compaction — and the renderer, the ground truth and the scoring
# make many short-lived full-image and full-grid arrays. Measured on the emulated slow day: the
# renderer's set-up 9.0–9.5 → 7.8–7.9 s, its system time 1.0 → 0.65 s. So the commands (and the
# processes they start) run without it, unless NUMPY_MADVISE_HUGEPAGE is set; numpy reads the
# variable when it is first imported, which here is after this.
NUMPY_HUGEPAGE_DEFAULT = '0'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the subcommand named in `argv` (default: the process's arguments); its exit code."""
    return _run(argv)[0]


def _run(argv: Optional[Sequence[str]]) -> tuple[int, Optional[str]]:
    """(exit code, the module of the subcommand that ran, or None)."""
    os.environ.setdefault('NUMPY_MADVISE_HUGEPAGE', NUMPY_HUGEPAGE_DEFAULT)
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith('-')), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s', datefmt='%H:%M:%S')
    module = getattr(args, '_module', None)
    if not module:
        parser.print_help()
        return 2, None
    from occ_ros.core.errors import OccRosError
    try:
        return int(importlib.import_module(module).run(args) or 0), module
    except OccRosError as exc:
        logging.getLogger('occ_ros').error('%s: %s', type(exc).__name__, exc)
        return 1, module
    except KeyboardInterrupt:
        return 130, module


def console_main() -> None:
    """The `occ-ros` executable (and `python -m occ_ros.apps.cli`): `main`, then the process's exit.

    A subcommand whose module sets `EXIT_WITHOUT_TEARDOWN = True` (the demo) is left with
    `os._exit` once it has returned and the output streams and logging are flushed: by then its
    files are closed, its ROS contexts shut down seconds earlier and its child processes stopped,
    and what the interpreter would still do is tear down some 1 200 modules (numba, scipy, rclpy,
    cv2, …) — ≈ 0.3 s of CPU on an idle machine, 2.3 s on the emulated slow day after the demo's
    report. Not for every command: a process that shuts a ROS context down just before it ends
    needs the teardown's time for DDS to announce its endpoints' departure (the node leaving that
    way left a service endpoint that a successor with the same name was answered by)."""
    code, module = _run(None)
    if module is not None and getattr(sys.modules.get(module), 'EXIT_WITHOUT_TEARDOWN', False):
        from occ_ros.core.exit import exit_now
        exit_now(code)
    sys.exit(code)


if __name__ == '__main__':
    console_main()
