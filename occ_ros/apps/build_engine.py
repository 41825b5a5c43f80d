"""`occ-ros build-engine`: build (or verify) the cached TensorRT engine of an exported graph."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from occ_ros.backends.engine_cache import DEFAULT_CACHE_ENV, default_cache_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--onnx', type=Path, required=True, help='graph from `occ-ros export`')
    parser.add_argument('--out', type=Path, default=None,
                        help=f'engine cache directory (default: ${DEFAULT_CACHE_ENV} or '
                             '~/.cache/occ_ros/engines)')
    parser.add_argument('--device', default='cuda:0', help='CUDA device to build for (default cuda:0)')
    parser.add_argument('--workspace-mib', type=int, default=2048,
                        help='builder workspace limit in MiB (default 2048)')
    parser.add_argument('--force', action='store_true', help='rebuild even if a valid engine exists')
    parser.add_argument('--tf32', action='store_true',
                        help='allow TF32 for float32 tensors (default off: the fp32 parts of the graph stay fp32)')
    parser.add_argument('--precision', choices=('fp32', 'fp16'), default=None,
                        help="engine precision (default: the graph's). TensorRT 8.5/8.6 (JetPack 5.1 / 6.0): "
                             'fp16 from an fp32 graph exported with --fp32-islands')
    parser.add_argument('--check', action='store_true',
                        help='only report whether a valid engine exists here; never build')


def run(args: argparse.Namespace) -> int:
    """Build (or verify) the engine of --onnx for this GPU; prints where it is."""
    from occ_ros.backends.tensorrt_backend import open_engine_cache

    def say(line: str) -> None:
        print(f'[build-engine] {line}', flush=True)

    directory = args.out if args.out is not None else default_cache_dir()
    cache = open_engine_cache(directory, device=args.device,
                              workspace_bytes=int(args.workspace_mib) << 20, progress=say,
                              allow_build=not args.check, tf32=bool(args.tf32))
    if args.check:
        ok, reason, paths = cache.status(args.onnx, args.precision)
        say(f'{"valid" if ok else "unusable"}: {paths.engine} ({reason})')
        return 0 if ok else 1
    t0 = time.monotonic()
    loaded = cache.load(args.onnx, precision=args.precision, force_rebuild=bool(args.force))
    verb = 'built' if loaded.built else 'already cached'
    say(f'{verb}: {loaded.paths.engine} ({len(loaded.engine) / 2**20:.1f} MiB, '
        f'{time.monotonic() - t0:.1f} s); timing cache {loaded.paths.timing_cache}')
    return 0
