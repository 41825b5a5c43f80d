"""Build a model by name and fill it from a checkpoint file (occ_ros or official FlashOcc)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

import torch
from torch import nn

from occ_ros.core.errors import ConfigError
from occ_ros.model.builders import build_model
from occ_ros.model.checkpoint import FORMAT, load_official_payload, model_from_payload, read_checkpoint_file


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread, restored afterwards. Building and filling a model is some
    five hundred small tensor operations (initialisation, fp16 → fp32, copies); with two threads
    each opens a parallel region, which made loading `lite` ~5× slower here (0.13 vs 0.03 s for
    the dtype conversions alone) with nothing to gain from the second thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_model(name: str, checkpoint: Optional[Path], say: Callable[[str], None]) -> nn.Module:
    """Build `name` and fill it from `checkpoint`, in eval mode.

    An occ_ros checkpoint carries its own config, which wins (its model name must be `name`);
    anything else is read as an official FlashOcc checkpoint (mmcv / EMA / bare state_dict).
    The file is read once, and the model built once.
    """
    say(f'building model {name} …')
    with _one_torch_thread():
        if checkpoint is None:
            return build_model(name).eval()
        say(f'loading checkpoint {checkpoint} …')
        obj = read_checkpoint_file(checkpoint)
        if isinstance(obj, Mapping) and obj.get('format') == FORMAT:
            model, _meta = model_from_payload(obj, str(checkpoint))
            if model.cfg.name != name:
                raise ConfigError(f'{checkpoint} holds a {model.cfg.name!r} model, not {name!r}')
            say(f'loaded occ_ros checkpoint ({model.cfg.name}, config from the file)')
        else:
            model = build_model(name)
            info = load_official_payload(model, obj, str(checkpoint))
            say(f'loaded {info["num_tensors"]} tensors ({info["format"]} checkpoint)')
        del obj
    return model.eval()
