"""What differs between the TensorRT versions occ_ros runs on — decided by feature detection here.

    TensorRT    JetPack        network typing           an fp16 engine is built from
    8.5.2       5.1.x          weak (EXPLICIT_BATCH)    the fp32 graph + BuilderFlag.FP16 + fp32 islands
    8.6.2       6.0            weak (EXPLICIT_BATCH)    the fp32 graph + BuilderFlag.FP16 + fp32 islands
    10.3        6.1, 6.2       strong                   the strongly typed fp16 graph
    >= 10, 11   (desktop)      strong (always on in 11) the strongly typed fp16 graph

Detected, not read off the version string: `NetworkDefinitionCreationFlag.STRONGLY_TYPED`
(TensorRT >= 9/10) selects strong typing; without it the network needs EXPLICIT_BATCH (the 8.x
ONNX parser refuses implicit-batch networks). `IProgressMonitor` exists from 10.0 (older builds
report only start and end). `DataType.INT64` exists from 10.0: the 8.x ONNX parser imports int64
graph inputs as INT32 (onnx-tensorrt release/8.6-GA, onnx2trt_utils.cpp `convertDtype`), so the
engine binds int32 there and the backend narrows the pool tables on the copy into the engine.

The runtime needs no second path: the name-based API (`num_io_tensors`, `get_tensor_*`,
`set_tensor_address`, `execute_async_v3`) arrived in TensorRT 8.5 (enqueueV3; TensorRT 8.5.1 API
changes) and is the only one TensorRT 10 kept (the binding-index API and execute_async_v2 were
removed, 8.x → 10.x migration guide). TensorRT < 8.5 lacks it and is refused with the reason.

**Weak typing, fp16 (TensorRT 8.x).** Where the strongly typed graph keeps float32 is recorded in
the fp32 graph (`precision_islands`, `occ-ros export --fp32-islands`). Each island node's TensorRT
layers get `layer.precision = float32` and `set_output_type(i, float32)` on their float outputs,
and BuilderFlag.OBEY_PRECISION_CONSTRAINTS makes the build fail rather than drop a constraint
(PREFER_PRECISION_CONSTRAINTS would drop it silently; see the API list below). The 8.x ONNX
parser names only some of a node's layers after the node (onnx-tensorrt 8.6-GA
ImporterContext::registerLayer; helper constants and reshapes stay "(Unnamed Layer* N)"), so
layers are matched through tensors instead: the parser names each node's output tensors after the
ONNX outputs, and a layer belongs to the node(s) whose named tensors its unnamed outputs flow into.

API followed (docs.nvidia.com/deeplearning/tensorrt/archives/…):
  - ILayer setPrecision / setOutputType / precisionIsSet (8.6.0):
    tensorrt-860-ea/api/c_api/classnvinfer1_1_1_i_layer.html
    (Python: `layer.precision`, `layer.set_output_type`); BuilderFlag FP16, OBEY_PRECISION_CONSTRAINTS (8.2+)
  - OnnxParser.parse(model, path=None) (8.0 … 8.6): tensorrt-861/api/python_api/parsers/Onnx/pyOnnx.html
  - enqueueV3 / setTensorAddress / the I/O tensor API (8.5.1 API changes):
    tensorrt-851/pdf/TensorRT-API.pdf; TensorRT 8.5.2 IExecutionContext:
    tensorrt-852/api/c_api/classnvinfer1_1_1_i_execution_context.html
  - onnx-tensorrt release/8.6-GA: ImporterContext.cpp registerLayer, onnx2trt_utils.cpp convertToTensor
    and convertDtype (INT64 → INT32), builtin_op_importers.cpp Cast (an ICastLayer)
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from occ_ros.core.errors import BackendError, EngineCacheError

if TYPE_CHECKING:
    import tensorrt as trt

    from occ_ros.backends.engine_cache import EngineKey

MIN_TENSORRT = (8, 5)
REQUIRED_RUNTIME_API = ('set_tensor_address', 'execute_async_v3')


def version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as '8.6.2.3' or '10.13.0.35'."""
    m = re.match(r'(\d+)\.(\d+)', version)
    if m is None:
        raise BackendError(f'unrecognised TensorRT version {version!r}')
    return int(m.group(1)), int(m.group(2))


def unsupported_reason() -> str:
    """Why the importable TensorRT cannot run occ_ros ('' when it can)."""
    import tensorrt as trt

    version = str(trt.__version__)
    if version_tuple(version) < MIN_TENSORRT:
        return (f'TensorRT {version} is too old: occ_ros needs TensorRT >= '
                f'{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} (JetPack >= 5.1)')
    missing = [name for name in REQUIRED_RUNTIME_API if not hasattr(trt.IExecutionContext, name)]
    if missing:
        return f'TensorRT {version} lacks the name-based runtime API ({", ".join(missing)})'
    return ''


def network_typing() -> str:
    """'strong' when this TensorRT builds strongly typed networks, else 'weak' (8.5/8.6)."""
    import tensorrt as trt

    return 'strong' if hasattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED') else 'weak'


def network_creation_flags() -> int:
    """`Builder.create_network` flags: STRONGLY_TYPED where it exists, else EXPLICIT_BATCH."""
    import tensorrt as trt

    if network_typing() == 'strong':
        # in TensorRT >= 10 every network is explicit-batch (EXPLICIT_BATCH is ignored, gone in 11)
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 1 << int(getattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH'))


def has_progress_monitor() -> bool:
    import tensorrt as trt

    return hasattr(trt, 'IProgressMonitor')


def has_int64() -> bool:
    import tensorrt as trt

    return hasattr(trt.DataType, 'INT64')


# ---- precision of the build ------------------------------------------------------------------------
def apply_precision(network: 'trt.INetworkDefinition', config: 'trt.IBuilderConfig', key: 'EngineKey',
                    onnx_bytes: bytes) -> list[str]:
    """Set the builder's precision for `key` on a parsed network; returns the layers pinned to fp32.

    Strong typing: the graph's own types decide, so the graph must be of the key's precision.
    Weak typing: fp32 → nothing to set (TF32 is handled by the caller); fp16 → the fp32 graph with
    FP16 + OBEY_PRECISION_CONSTRAINTS and its recorded float32 islands pinned.
    """
    import onnx

    from occ_ros.backends.precision_islands import island_tensors, onnx_tensor_names, read_islands

    proto = onnx.load_from_string(onnx_bytes)
    meta = {p.key: p.value for p in proto.metadata_props}
    graph_precision = meta.get('occ_ros.precision', key.precision)
    if key.network_typing == 'strong':
        if graph_precision != key.precision:
            raise EngineCacheError(
                f'a {key.precision} engine on TensorRT {key.tensorrt_version} is built from the '
                f'{key.precision} graph (strong typing), not from this {graph_precision} one: export it '
                f'with `occ-ros export --precision {key.precision}`')
        return []
    if graph_precision == 'fp16':
        raise EngineCacheError(
            f'TensorRT {key.tensorrt_version} has no strongly typed networks and cannot build the fp16 '
            'graph as typed: export the fp32 graph with `occ-ros export --precision fp32 --fp32-islands` '
            'and build it with `--precision fp16`')
    if key.precision == 'fp32':
        return []
    islands = read_islands(proto)
    if islands is None:
        raise EngineCacheError(
            'an fp16 engine on TensorRT 8.x needs the fp32 graph to say which nodes stay float32; '
            're-export it with `occ-ros export --precision fp32 --fp32-islands`')
    import tensorrt as trt

    config.set_flag(getattr(trt.BuilderFlag, 'FP16'))
    config.set_flag(getattr(trt.BuilderFlag, 'OBEY_PRECISION_CONSTRAINTS'))
    pinned = pin_fp32_layers(network, island_tensors(proto, islands), onnx_tensor_names(proto))
    if islands and not pinned:
        raise EngineCacheError(f'none of the {len(islands)} float32 island nodes matched a TensorRT layer')
    return pinned


def layer_owners(network: 'trt.INetworkDefinition', named: frozenset[str]) -> list[frozenset[str]]:
    """For each layer (network order), the ONNX tensor names its outputs flow into.

    A named output (an ONNX tensor) is its own owner; an unnamed one (a helper tensor the parser
    made) belongs to whatever its consumers belong to. Layers are in creation order, so every
    consumer comes after its producer and one backward sweep suffices.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    consumers: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            if tensor is not None:                 # optional inputs that are not set
                consumers.setdefault(tensor.name, []).append(i)
    owners: list[frozenset[str]] = [frozenset()] * len(layers)
    for i in reversed(range(len(layers))):
        own: set[str] = set()
        for j in range(layers[i].num_outputs):
            name = layers[i].get_output(j).name
            if name in named:
                own.add(name)
            else:
                for c in consumers.get(name, ()):
                    own |= owners[c]
        owners[i] = frozenset(own)
    return owners


def pin_fp32_layers(network: 'trt.INetworkDefinition', island_outputs: frozenset[str],
                    named: frozenset[str]) -> list[str]:
    """Constrain every float layer of the islands to compute and output float32; their names."""
    import tensorrt as trt

    pinned: list[str] = []
    for i, owners in enumerate(layer_owners(network, named)):
        if not owners & island_outputs:
            continue
        layer = network.get_layer(i)
        float_outputs = [j for j in range(layer.num_outputs)
                         if layer.get_output(j).dtype == trt.float32]
        float_inputs = [j for j in range(layer.num_inputs)
                        if layer.get_input(j) is not None and layer.get_input(j).dtype == trt.float32]
        if not float_outputs and not float_inputs:
            continue                               # index / shape arithmetic: no float precision
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned
