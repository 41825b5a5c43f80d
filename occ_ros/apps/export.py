"""`occ-ros export`: a model (shipped, official or random weights) to an ONNX graph."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from occ_ros.backends import io_spec as ios
from occ_ros.backends.export import MAX_TENSORRT_OPSET, OPSET, export_onnx
from occ_ros.core.config import PRECISIONS
from occ_ros.model.loading import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', required=True, help='model name (e.g. pano-tiny, lite)')
    parser.add_argument('--checkpoint', type=Path, default=None,
                        help='weights: an official FlashOcc checkpoint or an occ_ros checkpoint '
                             '(default: random initialisation)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='fp32, or fp16 = strongly typed graph for TensorRT (default fp32)')
    parser.add_argument('--out', type=Path, required=True, help='output .onnx file')
    parser.add_argument('--opset', type=int, default=OPSET, help=f'ONNX opset (default {OPSET}, max '
                                                                  f'{MAX_TENSORRT_OPSET})')


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f'[export] {line}', flush=True)

    t0 = time.monotonic()
    model = load_model(args.model, args.checkpoint, say)
    path = export_onnx(model, args.out, args.precision, progress=say, opset=args.opset)
    spec = ios.onnx_io_spec(path)
    say(f'done in {time.monotonic() - t0:.1f} s: {path}\n' + spec.describe())
    return 0
