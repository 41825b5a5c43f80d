"""The float32 islands of the strongly typed fp16 graph, named in the fp32 graph (for TensorRT 8.x).

TensorRT >= 10 builds the fp16 export as a strongly typed network: its Cast nodes decide where
float32 is kept (softmaxes, the DepthNet camera path, the BEV-pool products and sums, the
occupancy head's Softplus, the final ArgMax — `export` module docstring). TensorRT 8.5/8.6 have
no strongly typed networks; there an fp16 engine is built from the **fp32** graph with the FP16
builder flag, and the same float32 islands must be pinned as per-layer precision constraints.

The islands are not restated here: they are read off the strongly typed graph itself. ONNX type
inference gives every tensor of the fp16 graph its element type; a node that is not a Cast and
whose floating-point inputs and outputs are all float32 computes in float32 there. The fp32 and
fp16 exports are the same torch.export trace apart from the casts, so every ONNX node is matched
to its twin by the traced operation it came from (the exporter's `pkg.torch.onnx.fx_node`
metadata: `%new_zeros_1`, `%softmax`, …), its op type and its rank among that operation's nodes —
not by node name: names the exporter generates (`node_ConstantOfShape_796`) carry a graph-wide
counter that the extra casts shift. Every island node must find a twin of the same op type; the
fp32 names are stored in the fp32 graph's metadata under `ISLANDS_KEY`
(`export_model_proto(..., fp32_islands=True)`).
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Optional

from occ_ros.core.errors import BackendError

if TYPE_CHECKING:
    import onnx

ISLANDS_KEY = 'occ_ros.fp32_islands'
FX_NODE_KEY = 'pkg.torch.onnx.fx_node'          # the torch.export node an ONNX node came from
_FX_NAME = re.compile(r'%([\w.]+)')


def _elem_types(model: 'onnx.ModelProto') -> dict[str, int]:
    """ONNX element type of every named tensor (graph inputs/outputs, initializers, inferred)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    return types


def strongly_typed_fp32_nodes(fp16_model: 'onnx.ModelProto') -> list[str]:
    """Names of the nodes the strongly typed graph computes in float32 (graph order).

    A node counts when it is not a Cast, has at least one floating-point input or output, and
    all of those are float32. Raises BackendError if a tensor's type cannot be inferred.
    """
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
              onnx.TensorProto.DOUBLE}
    types = _elem_types(fp16_model)
    names: list[str] = []
    for node in fp16_model.graph.node:
        if node.op_type == 'Cast':
            continue
        tensors = [t for t in list(node.input) + list(node.output) if t]
        missing = [t for t in tensors if t not in types]
        if missing:
            raise BackendError(f'ONNX type inference gives no type for {missing[:3]} of node {node.name!r}')
        float_types = {types[t] for t in tensors if types[t] in floats}
        if float_types == {onnx.TensorProto.FLOAT}:
            names.append(node.name)
    return names


def trace_keys(model: 'onnx.ModelProto') -> dict[str, tuple[str, str, int]]:
    """node name → (traced operation, op type, rank among that operation's nodes of that type).

    Nodes without exporter metadata (made by the graph optimiser) are keyed by their own name.
    """
    keys: dict[str, tuple[str, str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        m = _FX_NAME.match(meta.get(FX_NODE_KEY, ''))
        origin = m.group(1) if m else '#' + node.name
        rank = seen.get((origin, node.op_type), 0)
        seen[(origin, node.op_type)] = rank + 1
        keys[node.name] = (origin, node.op_type, rank)
    return keys


def mark_islands(fp32_model: 'onnx.ModelProto', fp16_model: 'onnx.ModelProto') -> list[str]:
    """Record in `fp32_model`'s metadata which of its nodes the strongly typed `fp16_model`
    keeps in float32; returns their fp32 names. BackendError if an island node has no twin."""
    fp16_keys = trace_keys(fp16_model)
    fp32_by_key = {key: name for name, key in trace_keys(fp32_model).items()}
    islands: list[str] = []
    missing: list[str] = []
    for name in strongly_typed_fp32_nodes(fp16_model):
        twin = fp32_by_key.get(fp16_keys[name])
        if twin is None:
            missing.append(f'{name} ({fp16_keys[name][1]} from %{fp16_keys[name][0]})')
        else:
            islands.append(twin)
    if missing:
        raise BackendError('float32 island nodes of the fp16 graph without a twin in the fp32 graph: '
                           + '; '.join(missing[:5]))
    for entry in list(fp32_model.metadata_props):
        if entry.key == ISLANDS_KEY:
            fp32_model.metadata_props.remove(entry)
    entry = fp32_model.metadata_props.add()
    entry.key, entry.value = ISLANDS_KEY, json.dumps(islands)
    return islands


def read_islands(model: 'onnx.ModelProto') -> Optional[frozenset[str]]:
    """The island node names recorded in an fp32 graph, or None when it has none recorded."""
    for entry in model.metadata_props:
        if entry.key == ISLANDS_KEY:
            names = json.loads(entry.value)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BackendError(f'metadata {ISLANDS_KEY} is not a list of node names')
            return frozenset(names)
    return None


def island_tensors(model: 'onnx.ModelProto', islands: frozenset[str]) -> frozenset[str]:
    """Output tensor names of the island nodes (what the TensorRT layers are matched by)."""
    return frozenset(o for n in model.graph.node if n.name in islands for o in n.output if o)


def onnx_tensor_names(model: 'onnx.ModelProto') -> frozenset[str]:
    """Every tensor name the graph defines: inputs, initializers and node outputs."""
    names = {vi.name for vi in model.graph.input} | {t.name for t in model.graph.initializer}
    names |= {o for n in model.graph.node for o in n.output if o}
    return frozenset(names)
