"""ONNX Runtime backend: the exported graph on the CPU (here) or CUDA / TensorRT execution providers.

On CPU the inputs are handed over as numpy views of the (contiguous) torch tensors and the
outputs come back as torch tensors sharing ONNX Runtime's result arrays — no extra copies.
On CUDA, I/O goes through an `IOBinding` onto device buffers that are allocated once at start;
each call copies the inputs into them, runs, and returns clones of the output buffers, so results
stay on the GPU and a later call never overwrites tensors the caller still holds.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from occ_ros.backends.protocol import ORT_INSTALL_HINT, BackendBase
from occ_ros.backends.io_spec import IOSpec, TensorSpec, numpy_dtype, torch_dtype_from_ort
from occ_ros.core.config import DEFAULT_ORT_SPINNING
from occ_ros.core.errors import BackendError, ConfigError

LOG = logging.getLogger('occ_ros.backends.onnxruntime')

CPU_EP = 'CPUExecutionProvider'
CUDA_EP = 'CUDAExecutionProvider'
TRT_EP = 'TensorrtExecutionProvider'


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendError(f'onnxruntime is not importable ({e}): {ORT_INSTALL_HINT}') from e
    return onnxruntime


def default_providers(device: torch.device, available: Sequence[str],
                      use_tensorrt_ep: bool = False) -> list[str]:
    """Execution providers for `device`, best first, always ending with the CPU provider."""
    if device.type == 'cpu':
        return [CPU_EP]
    if device.type != 'cuda':
        raise ConfigError(f'onnxruntime backend runs on cpu or cuda, not {device}')
    if CUDA_EP not in available:
        raise BackendError(
            f'onnxruntime on {device} needs the CUDA execution provider, but this onnxruntime only '
            f'has {list(available)}: install onnxruntime-gpu (and remove the CPU-only onnxruntime)')
    providers = [CUDA_EP, CPU_EP]
    if use_tensorrt_ep:
        if TRT_EP not in available:
            raise BackendError(f'the TensorRT execution provider is not in {list(available)}')
        providers.insert(0, TRT_EP)
    return providers


class OrtBackend(BackendBase):
    """Run an exported graph with ONNX Runtime.

    onnx_path: the `occ-ros export` file.
    device: 'cpu' (default) or 'cuda[:i]' (needs onnxruntime-gpu).
    intra_op_num_threads / inter_op_num_threads: CPU thread pools (None = ONNX Runtime default,
        which uses every core).
    use_tensorrt_ep: put ONNX Runtime's TensorRT execution provider first (CUDA only).
    allow_spinning: whether idle pool threads spin (busy-wait) for the next parallel section before
        sleeping (`session.intra_op.allow_spinning` / `session.inter_op.allow_spinning`); None =
        occ_ros's default, `core.config.DEFAULT_ORT_SPINNING` (off; ONNX Runtime's own is on).
        Spinning takes the CPU that the process's other threads need right after inference.
    """

    kind = 'onnxruntime'

    def __init__(self, onnx_path: Union[str, Path], *, device: Union[str, torch.device, None] = None,
                 intra_op_num_threads: Optional[int] = None, inter_op_num_threads: Optional[int] = 1,
                 use_tensorrt_ep: bool = False, allow_spinning: Optional[bool] = None) -> None:
        ort = _import_ort()
        dev = torch.device(device if device is not None else 'cpu')
        if dev.type == 'cuda' and dev.index is None:
            dev = torch.device('cuda', 0)
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendError(f'ONNX model {path} does not exist: create it with `occ-ros export`')
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_num_threads is not None:
            opts.intra_op_num_threads = int(intra_op_num_threads)
        if inter_op_num_threads is not None:
            opts.inter_op_num_threads = int(inter_op_num_threads)
        spin = DEFAULT_ORT_SPINNING if allow_spinning is None else bool(allow_spinning)
        for pool in ('intra_op', 'inter_op'):
            opts.add_session_config_entry(f'session.{pool}.allow_spinning', '1' if spin else '0')
        self.allow_spinning = spin
        providers = default_providers(dev, ort.get_available_providers(), use_tensorrt_ep)
        provider_options: list[dict[str, Any]] = [
            {'device_id': dev.index} if p in (CUDA_EP, TRT_EP) else {} for p in providers]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers,
                                                 provider_options=provider_options)
        except Exception as e:
            raise BackendError(f'onnxruntime cannot load {path}: {e}') from e
        spec = IOSpec(
            tuple(TensorSpec(i.name, tuple(int(d) for d in i.shape), torch_dtype_from_ort(i.type))
                  for i in self._session.get_inputs()),
            tuple(TensorSpec(o.name, tuple(int(d) for d in o.shape), torch_dtype_from_ort(o.type))
                  for o in self._session.get_outputs()))
        super().__init__(spec, dev)
        self.providers = tuple(self._session.get_providers())
        LOG.info('onnxruntime %s on %s with %s\n%s', ort.__version__, dev, self.providers, spec.describe())
        self._binding: Any = None
        self._buffers: dict[str, torch.Tensor] = {}
        if dev.type == 'cuda':
            self._setup_binding()

    # -- CUDA: fixed device buffers bound once ------------------------------------------------------
    def _setup_binding(self) -> None:
        self._binding = self._session.io_binding()
        for s in self._spec.inputs + self._spec.outputs:
            buf = torch.empty(s.shape, dtype=s.dtype, device=self._device)
            self._buffers[s.name] = buf
        for s in self._spec.inputs:
            self._binding.bind_input(s.name, 'cuda', self._device.index, numpy_dtype(s.dtype),
                                     list(s.shape), self._buffers[s.name].data_ptr())
        for s in self._spec.outputs:
            self._binding.bind_output(s.name, 'cuda', self._device.index, numpy_dtype(s.dtype),
                                      list(s.shape), self._buffers[s.name].data_ptr())

    def infer(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check_open()
        self._spec.check_inputs(inputs)
        if self._binding is not None:
            for s in self._spec.inputs:
                self._buffers[s.name].copy_(inputs[s.name])
            torch.cuda.synchronize(self._device)        # ORT's stream is not torch's
            self._session.run_with_iobinding(self._binding)
            return {s.name: self._buffers[s.name].clone() for s in self._spec.outputs}
        feeds = {s.name: inputs[s.name].detach().to('cpu').contiguous().numpy() for s in self._spec.inputs}
        try:
            results = self._session.run(list(self.output_names), feeds)
        except Exception as e:
            raise BackendError(f'onnxruntime inference failed: {e}') from e
        return {name: torch.from_numpy(arr) for name, arr in zip(self.output_names, results)}

    def close(self) -> None:
        if not self._closed:
            self._binding = None
            self._buffers.clear()
            self._session = None
        super().close()
