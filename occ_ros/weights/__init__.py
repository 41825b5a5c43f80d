"""Weights shipped with occ_ros (see README "Models").

`lite_synth.ckpt` is the `lite` model trained on the synthetic world (`occ-ros train`); its
training record is `lite_synth.json` beside it. Models without shipped weights start from random
initialisation, which is only useful for benchmarks and tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

WEIGHTS_DIR = Path(__file__).resolve().parent
SHIPPED: dict[str, str] = {'lite': 'lite_synth.ckpt'}


def default_checkpoint(model: str) -> Optional[Path]:
    """The shipped checkpoint of `model`, or None when there is none."""
    name = SHIPPED.get(model)
    path = WEIGHTS_DIR / name if name else None
    return path if path is not None and path.is_file() else None
