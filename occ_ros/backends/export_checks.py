"""The checks every exported graph passes (`check_exported`, run by `export` on each export):
`onnx.checker` (full), opset <= 20, every node in the default domain and in `TENSORRT_NATIVE_OPS`
with supported Resize/ArgMax attributes (`tensorrt_op_violations`), and the I/O names, shapes and
dtypes equal `engine_io_spec(cfg)`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from occ_ros.backends import io_spec as ios
from occ_ros.core.errors import BackendError

if TYPE_CHECKING:
    import onnx

    from occ_ros.core.config import ModelConfig

MAX_TENSORRT_OPSET = 20          # TensorRT 10.0 parses opsets 9…20 (onnx-tensorrt operators.md)

# Operators the TensorRT >= 10 ONNX parser imports as native layers (onnx-tensorrt
# docs/operators.md, 10.x branches) and that this model family can produce. Deliberately absent:
# ScatterND / ScatterElements / Scatter (a reduction needs a plugin or is unsupported), CumSum
# (a loop, unsafe in fp16), control flow (Loop / If / Scan) and NonZero / Unique (data-dependent
# shapes).
TENSORRT_NATIVE_OPS = frozenset({
    'Abs', 'Add', 'And', 'ArgMax', 'ArgMin', 'AveragePool', 'BatchNormalization', 'Cast', 'Ceil',
    'Clip', 'Concat', 'Constant', 'ConstantOfShape', 'Conv', 'ConvTranspose', 'Div', 'Equal',
    'Erf', 'Exp', 'Expand', 'Flatten', 'Floor', 'Gather', 'GatherElements', 'GatherND', 'Gemm',
    'GlobalAveragePool', 'GlobalMaxPool', 'Greater', 'GreaterOrEqual', 'HardSigmoid', 'Identity',
    'LeakyRelu', 'Less', 'LessOrEqual', 'Log', 'LogSoftmax', 'MatMul', 'Max', 'MaxPool', 'Min',
    'Mul', 'Neg', 'Not', 'Or', 'Pad', 'Pow', 'PRelu', 'Range', 'ReduceL2', 'ReduceMax',
    'ReduceMean', 'ReduceMin', 'ReduceProd', 'ReduceSum', 'Relu', 'Reshape', 'Resize', 'Shape',
    'Sigmoid', 'Sign', 'Slice', 'Softmax', 'Softplus', 'Split', 'Sqrt', 'Squeeze', 'Sub', 'Sum',
    'Tanh', 'Tile', 'TopK', 'Transpose', 'Unsqueeze', 'Where',
})
FORBIDDEN_OPS = {
    'ScatterND': 'reduction unsupported by the TensorRT parser',
    'ScatterElements': 'reduction needs the ScatterElements plugin',
    'Scatter': 'deprecated scatter, needs a plugin for reductions',
    'CumSum': 'lowered to a loop; catastrophic cancellation in fp16',
    'Loop': 'control flow', 'If': 'control flow', 'Scan': 'control flow',
    'NonZero': 'data-dependent shape', 'Unique': 'data-dependent shape',
}
_RESIZE_MODES = {'nearest', 'linear'}
_RESIZE_COORDS = {'half_pixel', 'pytorch_half_pixel', 'tf_half_pixel_for_nn', 'asymmetric', 'align_corners'}
_RESIZE_NEAREST = {'floor', 'ceil', 'round_prefer_floor', 'round_prefer_ceil'}


def tensorrt_op_violations(model: 'onnx.ModelProto') -> list[str]:
    """Why a graph would not parse into native TensorRT >= 10 layers (empty list = fine)."""
    from onnx import helper

    problems: list[str] = []
    for imp in model.opset_import:
        if imp.domain in ('', 'ai.onnx') and imp.version > MAX_TENSORRT_OPSET:
            problems.append(f'opset {imp.version} > {MAX_TENSORRT_OPSET} (TensorRT 10.0 limit)')
        elif imp.domain not in ('', 'ai.onnx'):
            problems.append(f'custom opset domain {imp.domain!r}')
    for node in model.graph.node:
        where = f'{node.op_type} node {node.name!r}'
        if node.domain not in ('', 'ai.onnx'):
            problems.append(f'{where} is in custom domain {node.domain!r} (a plugin)')
            continue
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f'{where}: {FORBIDDEN_OPS[node.op_type]}')
            continue
        if node.op_type not in TENSORRT_NATIVE_OPS:
            problems.append(f'{where} is not in the TensorRT-native whitelist')
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == 'Resize':
            if attrs.get('mode', 'nearest') not in _RESIZE_MODES:
                problems.append(f'{where}: mode {attrs.get("mode")!r}')
            if attrs.get('coordinate_transformation_mode', 'half_pixel') not in _RESIZE_COORDS:
                problems.append(f'{where}: coordinate mode {attrs.get("coordinate_transformation_mode")!r}')
            if attrs.get('nearest_mode', 'round_prefer_floor') not in _RESIZE_NEAREST:
                problems.append(f'{where}: nearest mode {attrs.get("nearest_mode")!r}')
        if node.op_type in ('ArgMax', 'ArgMin') and attrs.get('select_last_index', 0) != 0:
            problems.append(f'{where}: select_last_index=1 is not supported')
    return problems


def check_exported(model: 'onnx.ModelProto', cfg: 'ModelConfig',
                   temporal_mode: Optional[str] = None) -> None:
    """onnx.checker + TensorRT op/opset whitelist + I/O contract; raises BackendError."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise BackendError(f'exported graph fails onnx.checker: {e}') from e
    problems = tensorrt_op_violations(model)
    if problems:
        raise BackendError('exported graph is not TensorRT-native: ' + '; '.join(problems[:10]))
    diffs = ios.same_contract(ios.onnx_io_spec(model), ios.engine_io_spec(cfg, temporal_mode))
    if diffs:
        raise BackendError('exported graph breaks the engine I/O contract: ' + '; '.join(diffs))
