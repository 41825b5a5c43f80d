"""`occ-ros export`: a model (shipped, official or random weights) to an ONNX graph."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from occ_ros.backends import io_spec as ios
from occ_ros.backends.export import OPSET, export_onnx
from occ_ros.backends.export_checks import MAX_TENSORRT_OPSET
from occ_ros.core.config import DEFAULT_TEMPORAL_MODE, PRECISIONS, TEMPORAL_MODES
from occ_ros.core.errors import ConfigError
from occ_ros.model.loading import load_model
from occ_ros.weights import default_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', required=True, help='model name (e.g. pano-tiny, lite)')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--checkpoint', type=Path, default=None,
                         help='weights: an official FlashOcc checkpoint or an occ_ros checkpoint (default: '
                              'the weights shipped for the model, as the node serves them)')
    weights.add_argument('--random-weights', action='store_true',
                         help='random initialisation (benchmarks and tests only; the outputs mean nothing)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='fp32, or fp16 = strongly typed graph for TensorRT (default fp32)')
    parser.add_argument('--fp32-islands', action='store_true',
                        help='fp32 only: record the nodes the fp16 graph keeps in float32, so TensorRT 8.5/8.6 '
                             '(JetPack 5.1 / 6.0) can build an fp16 engine from this graph '
                             '(`occ-ros build-engine --precision fp16`)')
    parser.add_argument('--temporal-mode', choices=TEMPORAL_MODES, default=DEFAULT_TEMPORAL_MODE,
                        help='multi-frame models: lift = history neck features + tables in (the official '
                             'evaluation), warp = ego-aligned BEV history in (default %(default)s)')
    parser.add_argument('--out', type=Path, required=True, help='output .onnx file')
    parser.add_argument('--opset', type=int, default=OPSET, help=f'ONNX opset (default {OPSET}, max '
                                                                  f'{MAX_TENSORRT_OPSET})')


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f'[export] {line}', flush=True)

    t0 = time.monotonic()
    checkpoint = args.checkpoint
    if checkpoint is None and not args.random_weights:
        checkpoint = default_checkpoint(args.model)
        if checkpoint is None:
            raise ConfigError(f'model {args.model!r} has no shipped weights: pass --checkpoint FILE (an '
                              'official FlashOcc or occ_ros checkpoint) or --random-weights')
        say(f'weights: the shipped {checkpoint.name} (what the node serves for --model {args.model})')
    elif args.random_weights:
        say('weights: RANDOM initialisation (--random-weights): the outputs mean nothing')
    model = load_model(args.model, checkpoint, say)
    path = export_onnx(model, args.out, args.precision, progress=say, opset=args.opset,
                       fp32_islands=bool(args.fp32_islands), temporal_mode=args.temporal_mode)
    spec = ios.onnx_io_spec(path)
    say(f'done in {time.monotonic() - t0:.1f} s: {path}\n' + spec.describe())
    return 0
