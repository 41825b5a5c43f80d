"""Inference backends behind one protocol, the ONNX exporter and the TensorRT engine cache.

    from occ_ros.backends import create_backend
    backend = create_backend('auto', model=model)      # tensorrt → onnxruntime → torch
    outputs = backend.infer(inputs)                     # names/shapes: occ_ros.backends.io_spec

Modules: `protocol` (the backend protocol), `factory` (selection, precision), `io_spec` (the I/O
contract), `deploy` (the model behind that contract, in torch), `export` (ONNX export,
`occ-ros export`), `export_checks` (what every exported graph must pass), `torch_backend`,
`ort_backend`, `tensorrt_backend`, `engine_cache` (`occ-ros build-engine`). The runtime-specific
classes are imported lazily so that importing this package never imports onnxruntime or tensorrt.
"""
from __future__ import annotations

from typing import Any

from occ_ros.backends.factory import (BACKEND_KINDS, Availability, create_backend, probe_availability,
                                      resolve_precision, select_backend_kind)
from occ_ros.backends.protocol import InferenceBackend
from occ_ros.backends.io_spec import IOSpec, TensorSpec, engine_io_spec, onnx_io_spec

_LAZY = {
    'TorchBackend': 'occ_ros.backends.torch_backend',
    'OrtBackend': 'occ_ros.backends.ort_backend',
    'TensorRTBackend': 'occ_ros.backends.tensorrt_backend',
    'EngineCache': 'occ_ros.backends.engine_cache',
    'export_onnx': 'occ_ros.backends.export',
    'DeployModule': 'occ_ros.backends.deploy',
}

__all__ = ['BACKEND_KINDS', 'Availability', 'InferenceBackend', 'create_backend', 'probe_availability',
           'select_backend_kind', 'resolve_precision', 'IOSpec', 'TensorSpec', 'engine_io_spec', 'onnx_io_spec', *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
