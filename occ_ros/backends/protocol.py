"""One interface over three runtimes: the `InferenceBackend` protocol and the `BackendBase` helper.

Every backend takes the named input tensors of `io_spec` and returns the named outputs as torch
tensors **on the backend's device** (a CUDA backend returns CUDA tensors, so post-processing runs
where the data already is). Buffers that a runtime needs are allocated once, at construction.

    with create_backend('auto', model=model) as backend:
        outputs = backend.infer({'img': img, 'cam_vec': cam_vec, ...})

The choice between the runtimes (`create_backend`, 'auto') is `occ_ros.backends.factory`; this
module imports no implementation, and every implementation imports it.
"""
from __future__ import annotations

import logging
from types import TracebackType
from typing import Mapping, Optional, Protocol, TypeVar, runtime_checkable

import torch

from occ_ros.backends.io_spec import IOSpec, TensorSpec
from occ_ros.core.errors import BackendError

LOG = logging.getLogger('occ_ros.backends')

TENSORRT_INSTALL_HINT = (
    'install TensorRT >= 8.5 (>= 10 for strongly typed fp16 engines) for your CUDA version (x86_64: '
    '`pip install tensorrt-cu12` or `tensorrt-cu13`; Jetson: JetPack >= 5.1 provides python3-libnvinfer), '
    'then check with '
    "`python -c 'import tensorrt; print(tensorrt.__version__)'`")
_B = TypeVar('_B', bound='BackendBase')
ORT_INSTALL_HINT = '`pip install onnxruntime` (CPU) or `pip install onnxruntime-gpu` (CUDA)'


@runtime_checkable
class InferenceBackend(Protocol):
    """What the pipeline calls; implemented by TorchBackend, OrtBackend and TensorRTBackend."""

    kind: str

    @property
    def device(self) -> torch.device:
        """Where `infer` returns its outputs."""
        ...

    @property
    def output_names(self) -> tuple[str, ...]:
        ...

    def input_spec(self) -> tuple[TensorSpec, ...]:
        """Name, static shape and dtype of every input, in order."""
        ...

    def output_spec(self) -> tuple[TensorSpec, ...]:
        ...

    def infer(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one frame; `inputs` may live on any device (they are copied as needed)."""
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> 'InferenceBackend':
        ...

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        ...


class BackendBase:
    """Shared plumbing: spec accessors, closed-state guard and the context-manager protocol."""

    kind = 'base'

    def __init__(self, spec: IOSpec, device: torch.device) -> None:
        self._spec = spec
        self._device = torch.device(device)
        self._closed = False

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def io_spec(self) -> IOSpec:
        return self._spec

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._spec.output_names

    def input_spec(self) -> tuple[TensorSpec, ...]:
        return self._spec.inputs

    def output_spec(self) -> tuple[TensorSpec, ...]:
        return self._spec.outputs

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f'the {self.kind} backend is closed')

    def close(self) -> None:
        self._closed = True

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        state = 'closed' if self._closed else 'open'
        return f'<{type(self).__name__} {self.kind} on {self._device} ({state})>'


