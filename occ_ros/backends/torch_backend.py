"""PyTorch eager backend: the model itself behind the engine contract (CPU or CUDA).

It runs `deploy.DeployModule` — the very module that is exported — so its outputs have the same
names, shapes, dtypes and meaning as the ONNX Runtime and TensorRT backends.

Options:
* precision 'fp16': the half-precision model with the fp32 softmax policy (meant for CUDA; it
  runs on CPU too, slowly).
* autocast_bf16 (CPU only): `torch.autocast('cpu', dtype=torch.bfloat16)` around the network.
  On CPUs with AMX/avx512_bf16 the image backbone runs ~3–5× faster (cpu_inference.md §1: ResNet-50
  2.6 s → 0.47 s for six 256×704 images) at ~0.7 % relative error on the features; argmax labels
  differ on a small fraction of voxels. Without AMX/avx512_bf16 it is usually slower: check
  `lscpu` for amx_bf16 first.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Mapping, Optional, Union

import torch
from torch import nn

from occ_ros.backends.protocol import BackendBase
from occ_ros.backends.deploy import DeployModule, deploy_module
from occ_ros.core.errors import ConfigError

LOG = logging.getLogger('occ_ros.backends.torch')


class TorchBackend(BackendBase):
    """Eager FlashOcc on `device`. The model is moved there and put in eval mode. temporal_mode:
    multi-frame models — 'lift' (default) or 'warp' (`core.config.TEMPORAL_MODES`)."""

    kind = 'torch'

    def __init__(self, model: nn.Module, *, device: Union[str, torch.device] = 'cpu',
                 precision: str = 'fp32', autocast_bf16: bool = False,
                 temporal_mode: Optional[str] = None) -> None:
        dev = torch.device(device)
        if autocast_bf16 and dev.type != 'cpu':
            raise ConfigError('autocast_bf16 is a CPU option; on CUDA use precision="fp16"')
        if autocast_bf16 and precision != 'fp32':
            raise ConfigError('autocast_bf16 applies to the fp32 model; use precision="fp32"')
        self._deploy = deploy_module(model.to(dev), precision, temporal_mode).eval()
        super().__init__(self._deploy.spec, dev)
        self.precision = precision
        self.autocast_bf16 = autocast_bf16
        LOG.info('torch eager %s (%s%s) on %s', self._deploy.cfg.name, precision,
                 ', bf16 autocast' if autocast_bf16 else '', dev)

    @property
    def module(self) -> DeployModule:
        return self._deploy

    def infer(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check_open()
        self._spec.check_inputs(inputs)
        moved = {name: inputs[name].to(self._device, non_blocking=True) for name in self._spec.input_names}
        amp = torch.autocast('cpu', dtype=torch.bfloat16) if self.autocast_bf16 else nullcontext()
        with torch.inference_mode(), amp:
            return self._deploy.run(moved)

    def close(self) -> None:
        if not self._closed:
            del self._deploy
        super().close()
