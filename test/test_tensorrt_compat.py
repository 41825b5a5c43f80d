"""TensorRT 8.5/8.6 (JetPack 5.1 / 6.0): fp16 engines from the fp32 graph with precision constraints.

There is no GPU and no TensorRT here. `FakeTensorRT` below is a stand-in for the `tensorrt`
module — a mock of the library, installed in `sys.modules` only for these tests — that records
every call the builder makes. Its ONNX parser imitates what onnx-tensorrt release/8.6-GA does
(ModelImporter.cpp parseGraph, ImporterContext::registerLayer, onnx2trt_utils.cpp convertToTensor
and convertDtype): one registered layer per node named after the node, output tensors named after
the ONNX outputs, an unnamed Constant layer per initializer the node reads (shared between
nodes), an unnamed helper Shuffle before binary nodes, INT64 tensors imported as INT32.

What is real: the `lite` model, its fp32 and strongly typed fp16 exports, ONNX type inference on
the fp16 graph (the outside reference for "where the strongly typed graph keeps float32"), and the
builder code path that a TensorRT 8.6 machine runs. The GPU test at the end builds real engines
and skips without CUDA + TensorRT.
"""
from __future__ import annotations

import contextlib
import json
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Optional

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from occ_ros.backends import precision_islands as pi
from occ_ros.backends import tensorrt_backend as trt_backend
from occ_ros.backends.engine_cache import EngineKey, PlatformInfo, make_key, onnx_facts
from occ_ros.backends.io_spec import IOSpec, TensorSpec
from occ_ros.core.errors import BackendError, EngineCacheError

ORIN_JP6 = PlatformInfo('8.6.2.3', 'Orin', (8, 7), 'weak')
ORIN_JP61 = PlatformInfo('10.3.0.30', 'Orin', (8, 7), 'strong')


# ---- the stand-in for the tensorrt module -------------------------------------------------------
class _Enum:
    def __init__(self, kind: str, name: str, value: int) -> None:
        self.kind, self.name, self.value = kind, name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f'{self.kind}.{self.name}'


def _enum(kind: str, names: list[str]) -> type:
    return type(kind, (), {n: _Enum(kind, n, i) for i, n in enumerate(names)})


class FakeTensor:
    def __init__(self, name: str, dtype: _Enum, shape: tuple[int, ...] = ()) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape


class FakeLayer:
    def __init__(self, name: str, kind: str, inputs: list[FakeTensor], outputs: list[FakeTensor]) -> None:
        self.name, self.kind = name, kind
        self._inputs, self._outputs = inputs, outputs
        self.precision_set: Optional[_Enum] = None
        self.output_types: dict[int, _Enum] = {}

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, i: int) -> FakeTensor:
        return self._inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self._outputs[i]

    @property
    def precision(self) -> Optional[_Enum]:
        return self.precision_set

    @precision.setter
    def precision(self, value: _Enum) -> None:
        self.precision_set = value

    def set_output_type(self, index: int, dtype: _Enum) -> None:
        assert self._outputs[index].dtype.name == dtype.name, 'output type changed away from its float type'
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.layers: list[FakeLayer] = []
        self.inputs: list[FakeTensor] = []

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]

    def get_input(self, i: int) -> FakeTensor:
        return self.inputs[i]


class FakeTensorRT(types.ModuleType):
    """`tensorrt` as TensorRT 8.6 (or, with strong=True, 10.x) presents it to the builder."""

    def __init__(self, version: str = '8.6.2.3', strong: bool = False) -> None:
        super().__init__('tensorrt')
        self.__version__ = version
        self.calls: list[tuple[Any, ...]] = []
        self.networks: list[FakeNetwork] = []
        self.NetworkDefinitionCreationFlag = _enum(
            'NetworkDefinitionCreationFlag', ['EXPLICIT_BATCH', 'STRONGLY_TYPED'] if strong else ['EXPLICIT_BATCH'])
        self.BuilderFlag = _enum('BuilderFlag', ['FP16', 'INT8', 'TF32', 'OBEY_PRECISION_CONSTRAINTS'])
        dtypes = ['FLOAT', 'HALF', 'INT8', 'INT32', 'BOOL', 'UINT8'] + (['INT64', 'BF16'] if strong else [])
        self.DataType = _enum('DataType', dtypes)
        self.float32, self.float16, self.int32 = self.DataType.FLOAT, self.DataType.HALF, self.DataType.INT32
        self.MemoryPoolType = _enum('MemoryPoolType', ['WORKSPACE'])
        self.IExecutionContext = type('IExecutionContext', (), {'set_tensor_address': None,
                                                               'execute_async_v3': None})
        if strong:
            self.IProgressMonitor = type('IProgressMonitor', (), {'__init__': lambda self: None})
        fake = self

        class ILogger:
            Severity = _enum('Severity', ['INTERNAL_ERROR', 'ERROR', 'WARNING', 'INFO', 'VERBOSE'])

            def __init__(self) -> None:
                pass

        class TimingCache:
            def serialize(self) -> bytes:
                return b'timing'

            def combine(self, other: Any, ignore_mismatch: bool) -> bool:
                return True

        class Config:
            def __init__(self) -> None:
                self.flags: set[str] = set()
                self.cleared: set[str] = set()

            def set_flag(self, flag: _Enum) -> None:
                fake.calls.append(('set_flag', flag.name))
                self.flags.add(flag.name)

            def clear_flag(self, flag: _Enum) -> None:
                fake.calls.append(('clear_flag', flag.name))
                self.cleared.add(flag.name)
                self.flags.discard(flag.name)

            def set_memory_pool_limit(self, pool: _Enum, size: int) -> None:
                fake.calls.append(('set_memory_pool_limit', pool.name, size))

            def create_timing_cache(self, data: bytes) -> TimingCache:
                return TimingCache()

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                return True

            def get_timing_cache(self) -> TimingCache:
                return TimingCache()

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> FakeNetwork:
                fake.calls.append(('create_network', flags))
                net = FakeNetwork(flags)
                fake.networks.append(net)
                return net

            def create_builder_config(self) -> Config:
                config = Config()
                fake.config = config
                return config

            def build_serialized_network(self, network: FakeNetwork, config: Config) -> bytes:
                fake.calls.append(('build_serialized_network', sorted(config.flags)))
                return b'PLAN'

        self.ILogger, self.Builder = ILogger, Builder
        self.OnnxParser = lambda network, logger: FakeOnnxParser86(fake, network)


class FakeOnnxParser86:
    """Imitates how the onnx-tensorrt 8.6 parser lays out a network (see the module docstring)."""

    def __init__(self, trt: FakeTensorRT, network: FakeNetwork) -> None:
        self.trt, self.network = trt, network
        self.num_errors = 0

    def parse(self, data: bytes, path: Optional[str] = None) -> bool:
        model = onnx.load_from_string(data)
        typed = onnx.shape_inference.infer_shapes(model)
        elem = {vi.name: vi.type.tensor_type.elem_type
                for vi in list(typed.graph.input) + list(typed.graph.value_info) + list(typed.graph.output)}
        dt = self.trt.DataType

        def trt_type(onnx_type: int) -> _Enum:
            return {TensorProto.FLOAT: dt.FLOAT, TensorProto.FLOAT16: dt.HALF, TensorProto.BOOL: dt.BOOL,
                    TensorProto.UINT8: dt.UINT8}.get(onnx_type, dt.INT32)       # INT64 → INT32 (8.x)

        tensors = {vi.name: FakeTensor(vi.name, trt_type(vi.type.tensor_type.elem_type),
                                       tuple(d.dim_value for d in vi.type.tensor_type.shape.dim))
                   for vi in model.graph.input}
        self.network.inputs = list(tensors.values())
        weights = {t.name: t.data_type for t in model.graph.initializer}
        constants: dict[str, FakeTensor] = {}
        net = self.network

        def unnamed(kind: str, dtype: _Enum) -> FakeTensor:
            return FakeTensor(f'(Unnamed Layer* {len(net.layers)}) [{kind}]_output', dtype)

        for node in model.graph.node:
            if node.op_type == 'Constant':           # no layer: the value becomes weights
                weights[node.output[0]] = elem.get(node.output[0], TensorProto.FLOAT)
                continue
            ins: list[FakeTensor] = []
            for name in node.input:
                if name in tensors:
                    ins.append(tensors[name])
                elif name in weights:                  # convertToTensor: one constant layer per weight
                    if name not in constants:
                        out = unnamed('Constant', trt_type(weights[name]))
                        net.layers.append(FakeLayer(name, 'Constant', [], [out]))
                        constants[name] = out
                    ins.append(constants[name])
            if len(ins) >= 2:                          # broadcast helper before binary layers
                out = unnamed('Shuffle', ins[0].dtype)
                net.layers.append(FakeLayer(f'(Unnamed Layer* {len(net.layers)}) [Shuffle]', 'Shuffle',
                                            [ins[0]], [out]))
                ins[0] = out
            outs = [FakeTensor(o, trt_type(elem.get(o, TensorProto.FLOAT))) for o in node.output]
            net.layers.append(FakeLayer(node.name, node.op_type, ins, outs))
            tensors.update({o.name: o for o in outs})
        return True


@contextlib.contextmanager
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Iterator[FakeTensorRT]:
    """Install the stand-in as `tensorrt`; `torch.cuda.device` becomes a no-op (no GPU here)."""
    fake = FakeTensorRT(**kwargs)
    monkeypatch.setitem(sys.modules, 'tensorrt', fake)
    monkeypatch.setattr(torch.cuda, 'device', lambda device: contextlib.nullcontext())
    trt_backend._logger_class.cache_clear()
    trt_backend.trt_logger.cache_clear()
    try:
        yield fake
    finally:
        trt_backend._logger_class.cache_clear()
        trt_backend.trt_logger.cache_clear()


def build_with(fake: FakeTensorRT, onnx_path: Path, platform: PlatformInfo, precision: str
               ) -> tuple[FakeNetwork, list[str]]:
    data = onnx_path.read_bytes()
    key = make_key(data, platform, precision, onnx_facts(data)[1])
    lines: list[str] = []
    builder = trt_backend.TensorRTEngineBuilder(torch.device('cpu'))
    result = builder.build(onnx_path, data, key, None, lines.append)
    assert result.engine == b'PLAN'
    return fake.networks[-1], lines


# ---- the real graphs -------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def lite_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shipped `lite` exported fp32 with islands (which traces the fp16 graph too) and fp16."""
    from occ_ros.backends.export import export_model_proto
    from occ_ros.model.loading import load_model
    from occ_ros.weights import default_checkpoint

    model = load_model('lite', default_checkpoint('lite'), lambda line: None)
    d = tmp_path_factory.mktemp('lite')
    fp32 = export_model_proto(model, 'fp32', fp32_islands=True, progress=lambda line: None)
    fp16 = export_model_proto(model, 'fp16', progress=lambda line: None)
    path = d / 'lite.fp32-islands.onnx'
    path.write_bytes(fp32.SerializeToString())
    return {'fp32': fp32, 'fp16': fp16, 'fp32_path': path}


def _fp16_float32_nodes_by_type_inference(fp16: onnx.ModelProto) -> dict[str, str]:
    """Reference, straight from ONNX's own type inference on the strongly typed graph: the non-Cast
    nodes all of whose floating-point tensors are float32 (name → op type)."""
    typed = onnx.shape_inference.infer_shapes(fp16)
    elem = {vi.name: vi.type.tensor_type.elem_type
            for vi in list(typed.graph.input) + list(typed.graph.value_info) + list(typed.graph.output)}
    elem.update({t.name: t.data_type for t in typed.graph.initializer})
    out = {}
    for node in fp16.graph.node:
        kinds = {elem[t] for t in list(node.input) + list(node.output)
                 if t and elem[t] in (TensorProto.FLOAT, TensorProto.FLOAT16)}
        if node.op_type != 'Cast' and kinds == {TensorProto.FLOAT}:
            out[node.name] = node.op_type
    return out


def test_fp32_graph_records_the_float32_islands_of_the_strongly_typed_graph(lite_graphs):
    islands = pi.read_islands(lite_graphs['fp32'])
    reference = _fp16_float32_nodes_by_type_inference(lite_graphs['fp16'])
    assert islands == frozenset(reference)
    ops = {n.name: n.op_type for n in lite_graphs['fp32'].graph.node}
    assert all(ops[name] == op for name, op in reference.items())      # same node, same op, both graphs
    kinds = [ops[name] for name in islands]
    # the policy of export.py, seen from the graph: every softmax, the occupancy head's Softplus
    # (and its Where), the BEV-pool products, the final ArgMax — and no convolution
    all_ops = list(ops.values())
    assert kinds.count('Softmax') == all_ops.count('Softmax') >= 1
    assert kinds.count('Softplus') == all_ops.count('Softplus') >= 1
    assert kinds.count('ArgMax') == 1 and 'MatMul' in kinds and 'Where' in kinds
    assert 'Conv' not in kinds and len(islands) < len(all_ops) // 2
    assert pi.read_islands(lite_graphs['fp16']) is None


def test_tensorrt_86_builds_fp16_from_the_fp32_graph_and_pins_exactly_the_islands(lite_graphs, monkeypatch):
    path = lite_graphs['fp32_path']
    with fake_tensorrt(monkeypatch) as fake:
        network, lines = build_with(fake, path, ORIN_JP6, 'fp16')
        config = fake.config
    assert network.flags == 1 << 0                                   # EXPLICIT_BATCH, no STRONGLY_TYPED
    assert config.flags == {'FP16', 'OBEY_PRECISION_CONSTRAINTS'}
    assert 'TF32' in config.cleared
    islands = pi.read_islands(lite_graphs['fp32'])
    assert islands is not None
    node_layers = {layer.name: layer for layer in network.layers if layer.kind not in ('Constant', 'Shuffle')}
    pinned_nodes = {name for name, layer in node_layers.items() if layer.precision_set is not None}
    assert pinned_nodes == set(islands)                              # exactly the strongly typed fp32 nodes
    for layer in network.layers:
        if layer.precision_set is not None:
            assert layer.precision_set.name == 'FLOAT'
            floats = {j for j in range(layer.num_outputs) if layer.get_output(j).dtype.name == 'FLOAT'}
            assert set(layer.output_types) == floats                  # ints (ArgMax indices) untouched
    argmax = next(layer for layer in node_layers.values() if layer.kind == 'ArgMax')
    assert argmax.precision_set is not None and argmax.output_types == {}
    # unnamed helper layers follow the node they feed: pinned inside an island, free outside it
    helpers = [layer for layer in network.layers if layer.kind == 'Shuffle']
    island_outputs = pi.island_tensors(lite_graphs['fp32'], islands)

    def feeds_island(helper: FakeLayer) -> bool:
        out = helper.get_output(0).name
        return any(layer.get_output(0).name in island_outputs for layer in network.layers
                   if layer.num_inputs and any(layer.get_input(j).name == out for j in range(layer.num_inputs)))

    in_island = [h for h in helpers if feeds_island(h)]
    outside = [h for h in helpers if not feeds_island(h)]
    assert in_island and outside
    assert all(h.precision_set is not None for h in in_island if h.get_output(0).dtype.name == 'FLOAT')
    assert all(h.precision_set is None for h in outside)
    assert any('constrained to float32' in line for line in lines)
    assert any('no progress monitor' in line for line in lines)


def test_tensorrt_86_fp32_engine_sets_no_precision_flag(lite_graphs, monkeypatch):
    with fake_tensorrt(monkeypatch) as fake:
        network, _ = build_with(fake, lite_graphs['fp32_path'], ORIN_JP6, 'fp32')
        assert fake.config.flags == set()
    assert all(layer.precision_set is None for layer in network.layers)


def _tiny(path: Path, precision: str) -> Path:
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node('Relu', ['x'], ['y'], name='relu')], 'g', [x], [y]))
    entry = model.metadata_props.add()
    entry.key, entry.value = 'occ_ros.precision', precision
    path.write_bytes(model.SerializeToString())
    return path


def test_each_typing_refuses_the_graph_it_cannot_build(tmp_path, monkeypatch):
    fp16, fp32 = _tiny(tmp_path / 'a.onnx', 'fp16'), _tiny(tmp_path / 'b.onnx', 'fp32')
    with fake_tensorrt(monkeypatch) as fake:                         # TensorRT 8.6
        with pytest.raises(EngineCacheError, match='--fp32-islands'):
            build_with(fake, fp16, ORIN_JP6, 'fp16')                  # strongly typed graph, weak TensorRT
        with pytest.raises(EngineCacheError, match='--fp32-islands'):
            build_with(fake, fp32, ORIN_JP6, 'fp16')                  # fp32 graph without islands
    with fake_tensorrt(monkeypatch, version='10.3.0.30', strong=True) as fake:
        with pytest.raises(EngineCacheError, match='--precision fp16'):
            build_with(fake, fp32, ORIN_JP61, 'fp16')                 # TensorRT 10: fp16 = the fp16 graph
        network, _ = build_with(fake, fp16, ORIN_JP61, 'fp16')
        assert network.flags == 1 << 1                                # STRONGLY_TYPED only
        assert fake.config.flags == set()                             # no precision flag at all


def test_version_detection_and_minimum(monkeypatch):
    with fake_tensorrt(monkeypatch, version='8.4.3.1'):
        with pytest.raises(BackendError, match='>= 8.5'):
            trt_backend.require_tensorrt()
    with fake_tensorrt(monkeypatch):
        trt_backend.require_tensorrt()
        from occ_ros.backends import tensorrt_compat as tc
        assert tc.network_typing() == 'weak' and not tc.has_int64() and not tc.has_progress_monitor()
        table = trt_backend._dtype_table()                            # no BF16 / INT64 in 8.6
        assert torch.int64 not in table.values() and torch.float16 in table.values()
    with fake_tensorrt(monkeypatch, version='10.13.0.35', strong=True):
        from occ_ros.backends import tensorrt_compat as tc
        assert tc.network_typing() == 'strong' and tc.has_int64() and tc.has_progress_monitor()


def test_engine_key_keeps_weak_and_strong_plans_apart():
    bounds = {'x': ((1, 4), (1, 4), (1, 4))}
    weak = make_key(b'graph', ORIN_JP6, 'fp16', bounds)
    strong = make_key(b'graph', PlatformInfo('8.6.2.3', 'Orin', (8, 7), 'strong'), 'fp16', bounds)
    assert weak.network_typing == 'weak' and weak.digest() != strong.digest()
    assert any(m.startswith('network_typing') for m in weak.mismatches(strong))
    old_sidecar = {k: v for k, v in weak.fields().items() if k != 'network_typing'}
    assert EngineKey.from_fields(old_sidecar).network_typing == 'strong'   # engines from before: TRT 10
    with pytest.raises(ValueError, match='typing'):
        EngineKey.from_fields({**weak.fields(), 'network_typing': 'loose'})
    assert json.loads(json.dumps(weak.fields())) == weak.fields()


def test_int64_inputs_bound_as_int32_on_tensorrt_8_keep_the_graph_contract():
    expected = IOSpec((TensorSpec('img', (1, 6, 3, 4, 4), torch.float32), TensorSpec('idx', (5,), torch.int64)),
                      (TensorSpec('occ_label', (1, 2), torch.int32),))
    bound = IOSpec((TensorSpec('img', (1, 6, 3, 4, 4), torch.float32), TensorSpec('idx', (5,), torch.int32)),
                   expected.outputs)
    assert trt_backend.narrowed_inputs(bound, expected, int64_native=False) == expected
    assert trt_backend.narrowed_inputs(bound, expected, int64_native=True) == bound   # TRT 10: a real mismatch
    wrong_shape = IOSpec((bound.inputs[0], TensorSpec('idx', (6,), torch.int32)), expected.outputs)
    assert trt_backend.narrowed_inputs(wrong_shape, expected, int64_native=False) == wrong_shape


def _gpu_tensorrt_reason() -> str:
    from occ_ros.backends.factory import probe_availability

    avail = probe_availability()
    if not avail.tensorrt:
        return avail.tensorrt_reason
    if not avail.cuda:
        return avail.cuda_reason
    return ''


@pytest.mark.skipif(bool(_gpu_tensorrt_reason()), reason=f'needs CUDA + TensorRT: {_gpu_tensorrt_reason()}')
def test_gpu_fp16_engine_of_this_tensorrt_matches_onnxruntime(lite_graphs, tmp_path):   # pragma: no cover
    """On a GPU: the fp16 engine of the shipped lite that this TensorRT builds (strong typing, or
    weak typing with the islands pinned) has finite outputs and agrees with ONNX Runtime fp32 on
    ≥ 99.5 % of the labels of a rendered frame set."""
    from occ_ros.apps.doctor import rendered_inputs, agreement
    from occ_ros.backends import tensorrt_compat as tc
    from occ_ros.backends.ort_backend import OrtBackend

    inputs = rendered_inputs('lite', None, 1)[0]
    with OrtBackend(lite_graphs['fp32_path'], device='cpu') as ob:
        ref = ob.infer(inputs)
    if tc.network_typing() == 'weak':
        backend = trt_backend.TensorRTBackend(lite_graphs['fp32_path'], engine_dir=tmp_path, precision='fp16')
    else:
        path = tmp_path / 'lite.fp16.onnx'
        path.write_bytes(lite_graphs['fp16'].SerializeToString())
        backend = trt_backend.TensorRTBackend(path, engine_dir=tmp_path)
    with backend:
        result = agreement(ref, backend.infer({k: v.cuda() for k, v in inputs.items()}))
    assert result['finite'] and result['label_agreement'] >= 0.995, result


@pytest.mark.parametrize('strong,expected', [(False, ('fp32', True, 'fp16')), (True, ('fp16', False, None))])
def test_create_backend_asks_tensorrt_8_for_the_islands_graph(strong, expected, monkeypatch, tmp_path):
    """create_backend('tensorrt', precision='fp16') on TensorRT 8.x exports the fp32 graph with its
    islands and asks for an fp16 engine; on TensorRT >= 10 the strongly typed fp16 graph. The
    TensorRT backend itself is replaced by a recorder (it needs a GPU), as is the export (slow)."""
    from occ_ros.backends import export as ex
    from occ_ros.backends import factory

    calls: dict[str, Any] = {}

    def fake_ensure(model, *, precision, directory, progress=None, fp32_islands=False, temporal_mode=None):
        calls['export'] = (precision, fp32_islands)
        calls['temporal_mode'] = temporal_mode
        return tmp_path / 'graph.onnx'

    class RecordingBackend:
        def __init__(self, onnx_path, **kwargs):
            calls['precision'] = kwargs['precision']

    monkeypatch.setattr(ex, 'ensure_onnx', fake_ensure)
    monkeypatch.setattr(trt_backend, 'TensorRTBackend', RecordingBackend)
    avail = factory.Availability(True, 'tensorrt', True, 'gpu', True, 'ort')
    with fake_tensorrt(monkeypatch, version='10.3.0.30' if strong else '8.6.2.3', strong=strong):
        factory.create_backend('tensorrt', model=object(), precision='fp16',  # type: ignore[arg-type]
                               engine_dir=tmp_path, availability=avail, temporal_mode='warp')
    assert (*calls['export'], calls['precision']) == expected
    assert calls['temporal_mode'] == 'warp'            # a 4D model's graph of the mode asked for
