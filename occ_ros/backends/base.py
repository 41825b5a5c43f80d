"""One interface over three runtimes, and the choice between them.

Every backend takes the named input tensors of `io_spec` and returns the named outputs as torch
tensors **on the backend's device** (a CUDA backend returns CUDA tensors, so post-processing runs
where the data already is). Buffers that a runtime needs are allocated once, at construction.

    with create_backend('auto', model=model) as backend:
        outputs = backend.infer({'img': img, 'cam_vec': cam_vec, ...})

`create_backend('auto')` picks TensorRT when the `tensorrt` module imports and CUDA is present,
else ONNX Runtime when it imports, else PyTorch eager.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Mapping, Optional, Protocol, TypeVar, Union, runtime_checkable

import torch

from occ_ros.backends.io_spec import IOSpec, TensorSpec
from occ_ros.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from torch import nn

LOG = logging.getLogger('occ_ros.backends')

BACKEND_KINDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
PRECISIONS = ('fp32', 'fp16')

TENSORRT_INSTALL_HINT = (
    'install TensorRT >= 10 for your CUDA version (x86_64: `pip install tensorrt-cu12` or '
    '`tensorrt-cu13`; Jetson: JetPack provides python3-libnvinfer), then check with '
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


# ---- availability and selection -----------------------------------------------------------------
@dataclass(frozen=True)
class Availability:
    """Whether each runtime can be used here, with the reason when it cannot."""

    tensorrt: bool
    tensorrt_reason: str
    cuda: bool
    cuda_reason: str
    onnxruntime: bool
    onnxruntime_reason: str


def _probe_tensorrt() -> tuple[bool, str]:
    if importlib.util.find_spec('tensorrt') is None:
        return False, f'the tensorrt module is not importable: {TENSORRT_INSTALL_HINT}'
    try:
        trt = importlib.import_module('tensorrt')
    except Exception as e:      # broken install: missing libnvinfer.so etc.
        return False, f'importing tensorrt failed ({e}): {TENSORRT_INSTALL_HINT}'
    if not hasattr(trt, 'Builder'):
        # `pip install tensorrt-stubs` alone leaves a namespace package with only .pyi files
        return False, ('the tensorrt module has no runtime (only type stubs such as tensorrt-stubs are '
                       f'installed): {TENSORRT_INSTALL_HINT}')
    return True, f'tensorrt {getattr(trt, "__version__", "?")}'


def _probe_cuda() -> tuple[bool, str]:
    if torch.cuda.is_available():
        return True, torch.cuda.get_device_name(0)
    return False, ('no CUDA device: torch.cuda.is_available() is False (CPU-only torch build or no '
                   'NVIDIA driver)')


def _probe_onnxruntime() -> tuple[bool, str]:
    if importlib.util.find_spec('onnxruntime') is None:
        return False, f'the onnxruntime module is not importable: {ORT_INSTALL_HINT}'
    try:
        ort = importlib.import_module('onnxruntime')
    except Exception as e:
        return False, f'importing onnxruntime failed ({e}): {ORT_INSTALL_HINT}'
    return True, f'onnxruntime {ort.__version__}'


def probe_availability() -> Availability:
    trt_ok, trt_why = _probe_tensorrt()
    cuda_ok, cuda_why = _probe_cuda()
    ort_ok, ort_why = _probe_onnxruntime()
    return Availability(trt_ok, trt_why, cuda_ok, cuda_why, ort_ok, ort_why)


def select_backend_kind(requested: str, avail: Availability) -> str:
    """Resolve 'auto' and check that an explicit choice can run here.

    auto → 'tensorrt' if tensorrt imports and CUDA is present, else 'onnxruntime' if it imports,
    else 'torch'. An explicit kind that cannot run raises BackendError saying what to install;
    an unknown kind raises ConfigError.
    """
    if requested not in BACKEND_KINDS:
        raise ConfigError(f'unknown backend {requested!r}: choose one of {", ".join(BACKEND_KINDS)}')
    if requested == 'auto':
        if avail.tensorrt and avail.cuda:
            return 'tensorrt'
        return 'onnxruntime' if avail.onnxruntime else 'torch'
    if requested == 'tensorrt':
        if not avail.tensorrt:
            raise BackendError(f'tensorrt backend requested but {avail.tensorrt_reason}')
        if not avail.cuda:
            raise BackendError(f'tensorrt backend requested but there is {avail.cuda_reason}; use '
                               '--backend onnxruntime or torch on this machine')
    if requested == 'onnxruntime' and not avail.onnxruntime:
        raise BackendError(f'onnxruntime backend requested but {avail.onnxruntime_reason}')
    return requested


def create_backend(kind: str = 'auto', *, model: Optional['nn.Module'] = None,
                   onnx_path: Union[str, Path, None] = None, device: Union[str, torch.device, None] = None,
                   precision: str = 'fp32', threads: Optional[int] = None,
                   engine_dir: Union[str, Path, None] = None, allow_build: bool = True,
                   autocast_bf16: bool = False,
                   availability: Optional[Availability] = None) -> InferenceBackend:
    """Create the backend of `kind` ('auto' | 'torch' | 'onnxruntime' | 'tensorrt').

    model: the FlashOcc network (needed by 'torch'; for the others it is exported to ONNX once
        and cached in `engine_dir` when `onnx_path` is not given).
    onnx_path: an exported graph (`occ-ros export`) for 'onnxruntime' / 'tensorrt'.
    device: default — cuda:0 for tensorrt; cuda when available for onnxruntime (if its CUDA
        provider exists) and torch; else cpu.
    precision: 'fp32' | 'fp16' — for the graph exported from `model` and for the torch backend.
    threads: intra-op threads for ONNX Runtime (None = its default) and torch (None = unchanged).
    engine_dir: TensorRT engine cache / exported-ONNX directory (default `default_cache_dir()`).
    allow_build: TensorRT may build a missing or stale engine (False → EngineCacheError).
    autocast_bf16: torch backend on CPU only: bf16 autocast (see TorchBackend).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    resolved = select_backend_kind(kind, availability or probe_availability())
    LOG.info('inference backend: %s (requested %s)', resolved, kind)
    if resolved == 'torch':
        if model is None:
            raise ConfigError('the torch backend runs the PyTorch model: pass model=build_model(name)')
        from occ_ros.backends.torch_backend import TorchBackend
        dev = torch.device(device) if device is not None else \
            torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        if threads is not None:
            torch.set_num_threads(threads)
        return TorchBackend(model, device=dev, precision=precision, autocast_bf16=autocast_bf16)

    from occ_ros.backends.engine_cache import default_cache_dir
    cache_dir = Path(engine_dir) if engine_dir is not None else default_cache_dir()
    if onnx_path is None:
        if model is None:
            raise ConfigError(f'the {resolved} backend needs onnx_path (an `occ-ros export` file) or model')
        from occ_ros.backends.export import ensure_onnx
        onnx_path = ensure_onnx(model, precision=precision, directory=cache_dir)
    if resolved == 'onnxruntime':
        from occ_ros.backends.ort_backend import OrtBackend
        return OrtBackend(onnx_path, device=device, intra_op_num_threads=threads)
    from occ_ros.backends.tensorrt_backend import TensorRTBackend
    return TensorRTBackend(onnx_path, device=device or 'cuda:0', engine_dir=cache_dir,
                           allow_build=allow_build)
