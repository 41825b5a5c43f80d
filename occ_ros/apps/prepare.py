"""`occ-ros prepare`: a fresh install's first-run work, done ahead of time (`scripts/setup.sh` runs it).

Without it, the first start of the node on ONNX Runtime exports the model to ONNX (≈11 s of CPU
for `lite` on this 2-core machine) and the first demo, synthetic bag or RayIoU evaluation compiles
the project's numba kernels (≈4 s): work that lands on the first thing a new user runs. This
command does both, into the same caches those would use:

- for each `--model` (default: `lite`, the node's default), builds the pipeline exactly as the
  node does (`OccupancyPipeline.from_params`, shipped weights, backend `auto` → ONNX Runtime on a
  CPU machine), which exports the graph into the node's cache (`~/.cache/occ_ros/engines`, or
  `$OCC_ROS_ENGINE_DIR` / `--engine-dir`); an existing export with the same fingerprint (config,
  weights, precision, exporter) is reused, so running it again costs seconds;
- compiles the renderer's kernels (`bag.colour`, `bag.compose`, `bag.raster`, `bag.road`) and the ray
  caster (`metrics.dda`) into their `__pycache__` caches (numba; skipped with a note when numba is missing).

TensorRT engines are GPU-specific and built by `occ-ros build-engine` / `occ-ros doctor` instead.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', action='append', default=None,
                        help='model whose ONNX graph to export (repeatable; default lite)')
    parser.add_argument('--backend', default='auto', help='the backend the node will run (default auto)')
    parser.add_argument('--engine-dir', default=None, help='the node\'s engine_dir (default: its cache)')
    parser.add_argument('--no-kernels', action='store_true', help='skip compiling the numba kernels')


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()

    def say(line: str) -> None:
        print(f'[prepare {time.monotonic() - t0:5.1f} s] {line}', flush=True)

    if not args.no_kernels:
        compile_kernels(say)
    from occ_ros.geometry import default_rig
    from occ_ros.pipeline import OccupancyPipeline
    for model in args.model or ['lite']:
        say(f'{model}: building the pipeline as the node does (backend {args.backend})')
        pipe = OccupancyPipeline.from_params(model, rig=default_rig(), backend=args.backend, threads=1,
                                             engine_dir=args.engine_dir, progress=say)
        say(f'{model}: ready ({pipe.backend.kind})')
        pipe.backend.close()
    say('done')
    return 0


def compile_kernels(say: Callable[[str], None]) -> None:
    """Compile (or load) the numba kernels of the renderer and of the ray caster."""
    try:
        from occ_ros.bag.raster import warm_up
    except ImportError as exc:
        say(f'numba kernels skipped: {exc} (the synthetic renderer needs numba)')
        return
    warm_up()
    from occ_ros.bag import road
    road.warm_up()
    import numpy as np

    from occ_ros.core.classes import FREE
    from occ_ros.core.config import OCC3D_GRID
    from occ_ros.metrics.raycast import RayCaster
    RayCaster(OCC3D_GRID, np.array([[1.0, 0.0, 0.0]]), compiled=True).cast(np.full(OCC3D_GRID.shape, FREE, np.uint8))
    say('numba kernels compiled (renderer colour pass, face rasteriser, z-test, ground-truth boxes and visibility, '
        'ground raster, RayIoU caster)')
