"""TensorRT backend and engine builder (TensorRT 8.5 … 11; version differences in `tensorrt_compat`).

Build: on TensorRT >= 10 a **strongly typed** network is parsed from the exported ONNX (fp16
graphs carry their own fp16/fp32 types; no precision builder flags, no calibrators — TensorRT 11
removed them). TensorRT 8.5/8.6 (JetPack 5.1 / 6.0) have no strong typing: there an fp16 engine
is built from the fp32 graph with precision constraints (`tensorrt_compat.apply_precision`). The
workspace is capped with a memory-pool limit, a timing cache is loaded from beside the engines and
saved back (merged with anything another build saved meanwhile), and an `IProgressMonitor` reports
progress and elapsed time. Engines live in the content-addressed `EngineCache`, which verifies
every engine before it reaches `Runtime.deserialize_cuda_engine`.

Run: one execution context, I/O buffers allocated once as torch CUDA tensors whose `data_ptr()`
are bound with `set_tensor_address`, and `execute_async_v3` on the backend's own CUDA stream
(`torch.cuda.Stream`). Outputs are returned as CUDA tensors ordered after the engine on the
caller's current stream. TensorRT's log goes to the `occ_ros.tensorrt` Python logger.

This module imports `tensorrt` only when a TensorRT object is created, so it can be imported,
type-checked (`tensorrt-stubs`) and partly tested on machines without a GPU.

API followed (TensorRT Python API reference and guides, docs.nvidia.com/deeplearning/tensorrt):
  - Builder, NetworkDefinitionCreationFlag (STRONGLY_TYPED; EXPLICIT_BATCH is ignored since 10.0
    and gone in 11): .../latest/_static/python-api/infer/Core/Builder.html and
    .../11.0.0/_static/python-api/infer/Core/Builder.html (STRONGLY_TYPED always on in 11)
  - IBuilderConfig (set_memory_pool_limit, create_timing_cache, set_timing_cache,
    get_timing_cache, progress_monitor): .../latest/_static/python-api/infer/Core/BuilderConfig.html
  - ITimingCache (combine, serialize): .../latest/_static/python-api/infer/Core/TimingCache.html;
    "Optimizing Builder Performance — Timing Cache": .../10.16.1/performance/builder-performance.html
  - IProgressMonitor (phase_start, step_complete, phase_finish; thread-safe; must outlive the
    build): .../latest/_static/python-api/infer/Core/ProgressMonitor.html
  - ILogger subclassing (call ILogger.__init__, override log): .../api/python_api/infer/Core/Logger.html
  - OnnxParser (parse(model, path), num_errors, get_error): .../api/python_api/parsers/Onnx/pyOnnx.html
  - Runtime.deserialize_cuda_engine ("returns None if it could not be deserialized"):
    .../api/python_api/infer/Core/Runtime.html
  - ICudaEngine (num_io_tensors, get_tensor_name/mode/dtype/shape): .../api/python_api/infer/Core/Engine.html
  - IExecutionContext (set_tensor_address, execute_async_v3 — use a non-default stream):
    .../latest/_static/python-api/infer/Core/ExecutionContext.html
  - 8.x → 10.x migration (name-based tensor API, execute_async_v3, build_serialized_network):
    .../11.0.0/api/migration/tensorrt-8x-to-10x-python-api.html
  - 10.x → 11.x migration, removed Python APIs (BuilderFlag.FP16/INT8/BF16/…, int8_calibrator,
    calibration profile, quantization flags, platform_has_fast_fp16/int8, …):
    .../latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Union

import torch

from occ_ros.backends.protocol import TENSORRT_INSTALL_HINT, BackendBase
from occ_ros.backends.engine_cache import (BuildResult, EngineCache, EngineKey, LoadedEngine,
                                           PlatformInfo, ProgressFn, default_cache_dir)
from occ_ros.backends.io_spec import IOSpec, TensorSpec, onnx_io_spec, same_contract
from occ_ros.backends.tensorrt_compat import (apply_precision, has_int64, has_progress_monitor,
                                              network_creation_flags, network_typing, unsupported_reason)
from occ_ros.core.errors import BackendError, ConfigError, EngineCacheError

if TYPE_CHECKING:
    import tensorrt as trt

TRT_LOG = logging.getLogger('occ_ros.tensorrt')
LOG = logging.getLogger('occ_ros.backends.tensorrt')

DEFAULT_WORKSPACE_BYTES = 2 << 30          # 2 GiB cap on builder scratch memory


def require_tensorrt() -> None:
    """Raise BackendError unless a working TensorRT runtime is importable."""
    try:
        import tensorrt as trt
    except Exception as e:             # ImportError, or OSError from a missing libnvinfer
        raise BackendError(f'the tensorrt module is not importable ({e}): {TENSORRT_INSTALL_HINT}') from e
    if not hasattr(trt, 'Builder'):
        raise BackendError('the tensorrt module has no runtime (only type stubs are installed): '
                           + TENSORRT_INSTALL_HINT)
    reason = unsupported_reason()
    if reason:
        raise BackendError(reason)


def detect_platform(device: torch.device) -> PlatformInfo:
    """TensorRT version and GPU identity for the engine cache key."""
    import tensorrt as trt

    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return PlatformInfo(str(trt.__version__), torch.cuda.get_device_name(index), (int(major), int(minor)),
                        network_typing())


# ---- logging bridge --------------------------------------------------------------------------
_SEVERITY_LEVELS: dict[str, int] = {
    'INTERNAL_ERROR': logging.CRITICAL,
    'ERROR': logging.ERROR,
    'WARNING': logging.WARNING,
    'INFO': logging.INFO,
    'VERBOSE': logging.DEBUG,
}


def level_for_severity(severity_name: str) -> int:
    """Python logging level of a TensorRT ILogger.Severity (by its name)."""
    return _SEVERITY_LEVELS.get(severity_name, logging.INFO)


# ---- build progress --------------------------------------------------------------------------
@dataclass
class _Phase:
    name: str
    parent: Optional[str]
    steps: int
    done: int = 0
    started: float = 0.0


@dataclass
class BuildProgress:
    """Bookkeeping behind the TensorRT progress monitor: phases, steps, elapsed time.

    TensorRT may call from several threads; every method takes a lock. Top-level phases are
    reported when they start and finish; step updates at most every `min_interval` seconds.
    `cancel()` makes the next `step_complete` return False, which asks TensorRT to stop.
    """

    emit: ProgressFn
    clock: Callable[[], float] = time.monotonic
    min_interval: float = 2.0
    _t0: float = field(default=-1.0, init=False)
    _last: float = field(default=-1e9, init=False)
    _phases: dict[str, _Phase] = field(default_factory=dict, init=False)
    _cancelled: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _elapsed(self) -> float:
        now = self.clock()
        if self._t0 < 0:
            self._t0 = now
        return now - self._t0

    def _path(self, name: str) -> str:
        parts = [name]
        phase = self._phases.get(name)
        while phase is not None and phase.parent is not None and phase.parent in self._phases:
            parts.append(phase.parent)
            phase = self._phases[phase.parent]
        return ' > '.join(reversed(parts))

    def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
        with self._lock:
            elapsed = self._elapsed()
            self._phases[phase_name] = _Phase(phase_name, parent_phase, max(int(num_steps), 1),
                                              started=self.clock())
            if parent_phase is None:
                self.emit(f'[{elapsed:7.1f} s] {phase_name}: started ({num_steps} steps)')

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            elapsed = self._elapsed()
            phase = self._phases.get(phase_name)
            if phase is not None:
                phase.done = max(phase.done, int(step) + 1)
                if self.clock() - self._last >= self.min_interval:
                    self._last = self.clock()
                    pct = 100.0 * phase.done / phase.steps
                    self.emit(f'[{elapsed:7.1f} s] {self._path(phase_name)}: '
                              f'{phase.done}/{phase.steps} ({pct:.0f} %)')
            return not self._cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            elapsed = self._elapsed()
            phase = self._phases.pop(phase_name, None)
            if phase is not None and phase.parent is None:
                self.emit(f'[{elapsed:7.1f} s] {phase_name}: finished in '
                          f'{self.clock() - phase.started:.1f} s')

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True


@functools.lru_cache(maxsize=None)
def _logger_class() -> Callable[[], 'trt.ILogger']:
    """The ILogger subclass (defined lazily: it subclasses a TensorRT type)."""
    import tensorrt as trt

    class LoggingBridge(trt.ILogger):
        """Forwards TensorRT messages to the `occ_ros.tensorrt` Python logger."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)      # required by the ILogger docs for Python subclasses

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            TRT_LOG.log(level_for_severity(severity.name), '%s', msg)

    return LoggingBridge


@functools.lru_cache(maxsize=None)
def _progress_class() -> Callable[[BuildProgress], 'trt.IProgressMonitor']:
    """The IProgressMonitor subclass (TensorRT >= 10 only: `has_progress_monitor()`)."""
    import tensorrt as trt

    class ProgressBridge(trt.IProgressMonitor):
        """Forwards builder progress to a `BuildProgress`."""

        def __init__(self, tracker: BuildProgress) -> None:
            trt.IProgressMonitor.__init__(self)
            self.tracker = tracker

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            self.tracker.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return self.tracker.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            self.tracker.phase_finish(phase_name)

    return ProgressBridge


@functools.lru_cache(maxsize=None)
def trt_logger() -> 'trt.ILogger':
    """One process-wide logger: TensorRT wants the same logger for every builder/runtime."""
    return _logger_class()()


def _dtype_table() -> dict['trt.DataType', torch.dtype]:
    import tensorrt as trt

    table = {
        trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8,
        trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool,
    }
    for name, dtype in (('BF16', torch.bfloat16), ('INT64', torch.int64)):   # TensorRT >= 9 / 10
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = dtype
    return table


def _dims(dims: 'trt.Dims') -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints (-1 = dynamic)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def torch_dtype(dtype: 'trt.DataType') -> torch.dtype:
    table = _dtype_table()
    if dtype not in table:
        raise BackendError(f'TensorRT tensor type {dtype} has no torch equivalent')
    return table[dtype]


# ---- engine builder --------------------------------------------------------------------------
class TensorRTEngineBuilder:
    """`EngineBuilder` for the engine cache: ONNX → network (strongly typed where TensorRT has it)
    → serialized engine."""

    def __init__(self, device: torch.device, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> None:
        if workspace_bytes <= 0:
            raise ConfigError(f'workspace must be positive, got {workspace_bytes} bytes')
        self.device = device
        self.workspace_bytes = int(workspace_bytes)
        # The progress monitor must outlive every TensorRT object that uses it (ProgressMonitor
        # docs); keeping the last one here guarantees that beyond the end of build().
        self._monitor: Optional['trt.IProgressMonitor'] = None

    def build(self, onnx_path: Path, onnx_bytes: bytes, key: EngineKey,
              timing_cache: Optional[bytes], progress: ProgressFn) -> BuildResult:
        import tensorrt as trt

        logger = trt_logger()
        with torch.cuda.device(self.device):
            builder = trt.Builder(logger)
            # Strongly typed where it exists (tensor types come from the ONNX graph); explicit
            # batch on TensorRT 8.x (tensorrt_compat.network_creation_flags)
            network = builder.create_network(network_creation_flags())
            parser = trt.OnnxParser(network, logger)
            # `path` lets the parser resolve external weight files next to the model
            if not parser.parse(onnx_bytes, str(onnx_path)):
                errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
                raise EngineCacheError(f'TensorRT cannot parse {onnx_path}: ' + ' | '.join(errors))
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
            # TF32 is on by default in TensorRT: it would run the graph's float32 islands (camera
            # vector, softmaxes, pool MatMuls, Softplus) with 10-bit mantissas on Ampere and later.
            if key.tf32:
                config.set_flag(trt.BuilderFlag.TF32)
            else:
                config.clear_flag(trt.BuilderFlag.TF32)
            pinned = apply_precision(network, config, key, onnx_bytes)
            if pinned:
                progress(f'TensorRT {key.tensorrt_version} (weak typing): fp16 with {len(pinned)} layers '
                         'constrained to float32 where the strongly typed graph keeps float32')
            cache = config.create_timing_cache(timing_cache or b'')
            if not config.set_timing_cache(cache, False):
                # a cache from another device/version: start a fresh one instead of failing
                progress('timing cache does not match this GPU/TensorRT; starting an empty one')
                cache = config.create_timing_cache(b'')
                config.set_timing_cache(cache, False)
            self._add_profile_if_dynamic(builder, network, config, key)
            if has_progress_monitor():
                self._monitor = _progress_class()(BuildProgress(progress))
                config.progress_monitor = self._monitor
            else:
                progress(f'TensorRT {key.tensorrt_version} has no progress monitor: no progress until '
                         'the build ends')
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise EngineCacheError(f'TensorRT failed to build an engine from {onnx_path}; see the '
                                       'occ_ros.tensorrt log above')
            engine = bytes(memoryview(serialized))
            timing = bytes(memoryview(config.get_timing_cache().serialize()))
        return BuildResult(engine=engine, timing_cache=timing)

    @staticmethod
    def _add_profile_if_dynamic(builder: 'trt.Builder', network: 'trt.INetworkDefinition',
                                config: 'trt.IBuilderConfig', key: EngineKey) -> None:
        """Static graphs need no optimisation profile; dynamic inputs get min/opt/max from the key."""
        import tensorrt as trt

        bounds = dict(key.shape_bounds)
        dynamic = []
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if any(d < 0 for d in _dims(tensor.shape)):
                dynamic.append(tensor.name)
        if not dynamic:
            return
        profile = builder.create_optimization_profile()
        for name in dynamic:
            if name not in bounds:
                raise EngineCacheError(f'ONNX input {name!r} is dynamic but no shape bounds were given')
            lo, opt, hi = bounds[name]
            profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        config.add_optimization_profile(profile)

    def merge_timing_caches(self, on_disk: bytes, ours: bytes) -> bytes:
        import tensorrt as trt

        with torch.cuda.device(self.device):
            config = trt.Builder(trt_logger()).create_builder_config()
            merged = config.create_timing_cache(on_disk)
            if not merged.combine(config.create_timing_cache(ours), False):
                raise EngineCacheError('TensorRT refused to combine the timing caches')
            return bytes(memoryview(merged.serialize()))


def cuda_device(device: Union[str, torch.device], purpose: str) -> torch.device:
    """The concrete CUDA device (with index) for `purpose`; BackendError without a GPU,
    ConfigError for a non-CUDA device."""
    if not torch.cuda.is_available():
        raise BackendError(f'{purpose} needs a CUDA GPU but torch.cuda.is_available() is False; use the '
                           'onnxruntime or torch backend on this machine')
    dev = torch.device(device)
    if dev.type != 'cuda':
        raise ConfigError(f'{purpose} needs a CUDA device, not {dev}')
    if dev.index is None:
        dev = torch.device('cuda', torch.cuda.current_device())
    return dev


def open_engine_cache(directory: Union[str, Path, None] = None, *,
                      device: Union[str, torch.device] = 'cuda:0',
                      workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, allow_build: bool = True,
                      progress: Optional[ProgressFn] = None, tf32: bool = False) -> EngineCache:
    """The engine cache of this machine's GPU `device`, with the TensorRT builder attached."""
    require_tensorrt()
    dev = cuda_device(device, 'building TensorRT engines')
    return EngineCache(directory if directory is not None else default_cache_dir(), detect_platform(dev),
                       TensorRTEngineBuilder(dev, workspace_bytes), allow_build=allow_build,
                       progress=progress, tf32=tf32)


# ---- runtime -----------------------------------------------------------------------------------
def engine_io_spec_of(engine: 'trt.ICudaEngine') -> IOSpec:
    """Names, shapes and dtypes of an engine's I/O tensors (name-based TensorRT 10 API)."""
    import tensorrt as trt

    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = _dims(engine.get_tensor_shape(name))
        spec = TensorSpec(name, shape, torch_dtype(engine.get_tensor_dtype(name)))
        mode = engine.get_tensor_mode(name)
        if mode == trt.TensorIOMode.INPUT:
            inputs.append(spec)
        elif mode == trt.TensorIOMode.OUTPUT:
            outputs.append(spec)
    return IOSpec(tuple(inputs), tuple(outputs))


def narrowed_inputs(engine_spec: IOSpec, expected: IOSpec, int64_native: bool) -> IOSpec:
    """The engine's I/O as the graph's contract: int64 graph inputs that TensorRT 8.x binds as
    int32 (no INT64 before 10.0) are reported as int64; the backend narrows them on the copy.

    Only inputs, only int64 → int32, only without native INT64; anything else stays a mismatch.
    The pool tables hold indices below N·D·fH·fW + 1 (a few million at most), far inside int32.
    """
    if int64_native:
        return engine_spec
    wanted = {s.name: s for s in expected.inputs}
    inputs = tuple(wanted[s.name] if s.name in wanted and s.dtype == torch.int32
                   and wanted[s.name].dtype == torch.int64 and wanted[s.name].shape == s.shape else s
                   for s in engine_spec.inputs)
    return IOSpec(inputs, engine_spec.outputs)


class TensorRTBackend(BackendBase):
    """Run an exported graph as a TensorRT engine on one GPU.

    onnx_path: the `occ-ros export` file (fp16 recommended); its engine is taken from / built
        into the cache in `engine_dir` (default: `default_cache_dir()`).
    device: 'cuda' or 'cuda:i'.
    allow_build: build a missing or stale engine (False → EngineCacheError that says how to build).
    workspace_bytes: builder workspace cap.
    precision: None = the graph's; 'fp16' with an fp32 graph = TensorRT 8.x's weakly typed fp16
        engine (`tensorrt_compat.apply_precision`; refused on TensorRT >= 10).
    """

    kind = 'tensorrt'

    def __init__(self, onnx_path: Union[str, Path], *, device: Union[str, torch.device] = 'cuda:0',
                 engine_dir: Union[str, Path, None] = None, allow_build: bool = True,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, tf32: bool = False,
                 precision: Optional[str] = None) -> None:
        require_tensorrt()
        import tensorrt as trt

        dev = cuda_device(device, 'the tensorrt backend')
        onnx_path = Path(onnx_path)
        expected = onnx_io_spec(onnx_path)
        with torch.cuda.device(dev):
            self._cache = open_engine_cache(engine_dir, device=dev, workspace_bytes=workspace_bytes,
                                            allow_build=allow_build, tf32=tf32)
            self._runtime = trt.Runtime(trt_logger())
            loaded = self._cache.load(onnx_path, precision=precision)
            engine = self._runtime.deserialize_cuda_engine(loaded.engine)
            if engine is None:
                engine, loaded = self._rebuild_after_refusal(onnx_path, loaded, allow_build, precision)
            self._engine = engine
            context = engine.create_execution_context()
            if context is None:
                raise BackendError('TensorRT could not create an execution context (out of GPU memory?)')
            self._context = context
            bound = engine_io_spec_of(engine).ordered_like(expected)     # what the engine binds
            spec = narrowed_inputs(bound, expected, has_int64())
            diffs = same_contract(spec, expected)
            if diffs:
                raise EngineCacheError(f'engine {loaded.paths.engine} does not match {onnx_path}: '
                                       + '; '.join(diffs))
            if any(d < 0 for s in spec.inputs + spec.outputs for d in s.shape):
                raise BackendError('the engine has dynamic shapes; occ_ros runs static-shape engines '
                                   'made by `occ-ros export`')
            super().__init__(spec, dev)
            self.engine_path = loaded.paths.engine
            self._stream = torch.cuda.Stream(device=dev)
            # device buffers: allocated once, their addresses bound once
            self._buffers: dict[str, torch.Tensor] = {}
            for s in bound.inputs + bound.outputs:
                buf = torch.empty(s.shape, dtype=s.dtype, device=dev)
                if not context.set_tensor_address(s.name, buf.data_ptr()):
                    raise BackendError(f'TensorRT refused the address of tensor {s.name!r}')
                self._buffers[s.name] = buf
        LOG.info('TensorRT %s engine %s on %s (%s)', trt.__version__, self.engine_path.name, dev,
                 torch.cuda.get_device_name(dev))
        for s in spec.inputs:
            LOG.info('  binding input  %s', s.describe())
        for s in spec.outputs:
            LOG.info('  binding output %s', s.describe())

    def _rebuild_after_refusal(self, onnx_path: Path, loaded: LoadedEngine, allow_build: bool,
                               precision: Optional[str]) -> tuple['trt.ICudaEngine', LoadedEngine]:
        """The bytes were verified yet TensorRT refused them (e.g. a different TensorRT build with
        the same version string): drop the engine and build once more, or refuse."""
        self._cache.invalidate(loaded.paths)
        if loaded.built or not allow_build:
            raise EngineCacheError(
                f'TensorRT could not deserialize {loaded.paths.engine} '
                + ('right after building it' if loaded.built else
                   f'(removed it; rebuild with `occ-ros build-engine --onnx {onnx_path}`)'))
        LOG.warning('TensorRT refused %s; rebuilding', loaded.paths.engine)
        loaded = self._cache.load(onnx_path, precision=precision, force_rebuild=True)
        engine = self._runtime.deserialize_cuda_engine(loaded.engine)
        if engine is None:
            raise EngineCacheError(f'TensorRT could not deserialize the freshly built {loaded.paths.engine}')
        return engine, loaded

    def infer(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check_open()
        self._spec.check_inputs(inputs)
        producer = torch.cuda.current_stream(self._device)
        stream = self._stream
        stream.wait_stream(producer)                       # inputs made on the caller's stream
        with torch.cuda.stream(stream):
            for s in self._spec.inputs:          # copy_ narrows int64 → int32 on TensorRT 8.x
                self._buffers[s.name].copy_(inputs[s.name], non_blocking=True)
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise BackendError('TensorRT execute_async_v3 failed; see the occ_ros.tensorrt log')
            outputs = {s.name: self._buffers[s.name].clone() for s in self._spec.outputs}
        producer.wait_stream(stream)                       # caller sees finished outputs
        for t in outputs.values():
            t.record_stream(producer)
        for s in self._spec.inputs:
            t = inputs[s.name]
            if t.is_cuda:
                t.record_stream(stream)                    # caller may free it right away
        return outputs

    def close(self) -> None:
        if not self._closed:
            self._stream.synchronize()
            self._buffers.clear()
            del self._context
            del self._engine
            del self._runtime
        super().close()
