"""Build a model by name and fill it from a checkpoint file (occ_ros or official FlashOcc)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional

from torch import nn

from occ_ros.core.errors import ConfigError
from occ_ros.model.builders import build_model
from occ_ros.model.checkpoint import FORMAT, load_checkpoint, load_official_checkpoint, read_checkpoint_file


def load_model(name: str, checkpoint: Optional[Path], say: Callable[[str], None]) -> nn.Module:
    """Build `name` and fill it from `checkpoint`, in eval mode.

    An occ_ros checkpoint carries its own config, which wins (its model name must be `name`);
    anything else is read as an official FlashOcc checkpoint (mmcv / EMA / bare state_dict).
    """
    say(f'building model {name} …')
    model = build_model(name)
    if checkpoint is not None:
        say(f'loading checkpoint {checkpoint} …')
        obj = read_checkpoint_file(checkpoint)
        if isinstance(obj, Mapping) and obj.get('format') == FORMAT:
            del obj
            model, _meta = load_checkpoint(checkpoint)
            if model.cfg.name != name:
                raise ConfigError(f'{checkpoint} holds a {model.cfg.name!r} model, not {name!r}')
            say(f'loaded occ_ros checkpoint ({model.cfg.name}, config from the file)')
        else:
            del obj
            info = load_official_checkpoint(model, checkpoint)
            say(f'loaded {info["num_tensors"]} tensors ({info["format"]} checkpoint)')
    return model.eval()
