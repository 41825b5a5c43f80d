"""The choice between the runtimes: what can run here, 'auto', and one resolution of precision.

    with create_backend('auto', model=model) as backend:
        outputs = backend.infer({'img': img, 'cam_vec': cam_vec, ...})

`create_backend('auto')` picks TensorRT when the `tensorrt` module imports and CUDA is present,
else ONNX Runtime when it imports, else PyTorch eager. `resolve_precision` is the one place that
turns 'auto' (or a CPU fp16 request) into the precision a backend runs. Implementations are
imported lazily, inside `create_backend`, so importing this module never imports onnxruntime or
tensorrt.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch

from occ_ros.backends.protocol import ORT_INSTALL_HINT, TENSORRT_INSTALL_HINT, InferenceBackend
from occ_ros.core.config import PRECISIONS
from occ_ros.core.parallel import quota_threads
from occ_ros.core.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from torch import nn

LOG = logging.getLogger('occ_ros.backends')

BACKEND_KINDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
PRECISION_CHOICES = ('auto', *PRECISIONS)


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


def resolve_precision(requested: Optional[str], kind: str, device: Union[str, torch.device, None] = None) -> str:
    """The one resolution of a precision request for a resolved backend `kind`.

    None / '' / 'auto' → 'fp16' for TensorRT (the strongly typed graph), 'fp32' elsewhere;
    'fp16' on a CPU backend has no fast path → 'fp32' (logged); anything else → ConfigError.
    """
    if requested in (None, '', 'auto'):
        return 'fp16' if kind == 'tensorrt' else 'fp32'
    if requested not in PRECISIONS:
        raise ConfigError(f'precision must be one of {PRECISION_CHOICES}, got {requested!r}')
    if requested == 'fp16' and kind != 'tensorrt' and not str(device or 'cpu').startswith('cuda'):
        LOG.info('fp16 has no fast path on the CPU (%s): running fp32', kind)
        return 'fp32'
    return str(requested)


def create_backend(kind: str = 'auto', *, model: Optional['nn.Module'] = None,
                   onnx_path: Union[str, Path, None] = None, device: Union[str, torch.device, None] = None,
                   precision: str = 'fp32', threads: Optional[int] = None,
                   engine_dir: Union[str, Path, None] = None, allow_build: bool = True,
                   autocast_bf16: bool = False, tf32: bool = False,
                   availability: Optional[Availability] = None,
                   temporal_mode: Optional[str] = None,
                   ort_spinning: Optional[bool] = None) -> InferenceBackend:
    """Create the backend of `kind` ('auto' | 'torch' | 'onnxruntime' | 'tensorrt').

    model: the FlashOcc network (needed by 'torch'; for the others it is exported to ONNX once
        and cached in `engine_dir` when `onnx_path` is not given).
    onnx_path: an exported graph (`occ-ros export`) for 'onnxruntime' / 'tensorrt'.
    device: default — cuda:0 for tensorrt; cuda when available for onnxruntime (if its CUDA
        provider exists) and torch; else cpu.
    precision: 'fp32' | 'fp16' — for the graph exported from `model` and for the torch backend.
    threads: intra-op threads for ONNX Runtime and torch; None = their default (every core), or
        where the process's control groups limit its CPU time, the cores that limit allows
        (`occ_ros.core.parallel.quota_threads`).
    engine_dir: TensorRT engine cache / exported-ONNX directory (default `default_cache_dir()`).
    allow_build: TensorRT may build a missing or stale engine (False → EngineCacheError).
    autocast_bf16: torch backend on CPU only: bf16 autocast (see TorchBackend).
    tf32: TensorRT may use TF32 for float32 tensors (default off: the fp32 parts stay fp32).
    temporal_mode: multi-frame models — the 'lift' (default) or 'warp' graph (io_spec); ignored
        with `onnx_path` (the file's graph decides).
    ort_spinning: ONNX Runtime only: whether its idle pool threads spin (OrtBackend's
        allow_spinning; None = `core.config.DEFAULT_ORT_SPINNING`, off).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    resolved = select_backend_kind(kind, availability or probe_availability())
    LOG.info('inference backend: %s (requested %s)', resolved, kind)
    if threads is None:
        threads = quota_threads()
        if threads is not None:
            LOG.info('CPU time limited by the control groups: %d intra-op thread(s)', threads)
    if resolved == 'torch':
        if model is None:
            raise ConfigError('the torch backend runs the PyTorch model: pass model=build_model(name)')
        from occ_ros.backends.torch_backend import TorchBackend
        dev = torch.device(device) if device is not None else \
            torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        if threads is not None:
            torch.set_num_threads(threads)
        return TorchBackend(model, device=dev, precision=precision, autocast_bf16=autocast_bf16,
                            temporal_mode=temporal_mode)

    from occ_ros.backends.engine_cache import default_cache_dir
    cache_dir = Path(engine_dir) if engine_dir is not None else default_cache_dir()
    # TensorRT 8.5/8.6 (no strong typing) build fp16 from the fp32 graph with its float32 islands
    weak_fp16 = resolved == 'tensorrt' and precision == 'fp16' and _tensorrt_typing() == 'weak'
    if onnx_path is None:
        if model is None:
            raise ConfigError(f'the {resolved} backend needs onnx_path (an `occ-ros export` file) or model')
        from occ_ros.backends.export import ensure_onnx
        onnx_path = ensure_onnx(model, precision='fp32' if weak_fp16 else precision, directory=cache_dir,
                                fp32_islands=weak_fp16, temporal_mode=temporal_mode)
    if resolved == 'onnxruntime':
        from occ_ros.backends.ort_backend import OrtBackend
        return OrtBackend(onnx_path, device=device, intra_op_num_threads=threads, allow_spinning=ort_spinning)
    from occ_ros.backends.tensorrt_backend import TensorRTBackend
    return TensorRTBackend(onnx_path, device=device or 'cuda:0', engine_dir=cache_dir,
                           allow_build=allow_build, tf32=tf32, precision='fp16' if weak_fp16 else None)


def _tensorrt_typing() -> str:
    from occ_ros.backends.tensorrt_compat import network_typing

    return network_typing()
