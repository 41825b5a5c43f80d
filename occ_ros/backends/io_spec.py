"""The engine's I/O contract: tensor names, static shapes and dtypes.

Every backend (torch eager, ONNX Runtime, TensorRT) takes and returns the same named tensors, so
the pipeline never needs to know which one runs. The contract is derived in two independent ways
that tests compare against each other:

* `engine_io_spec(cfg)` — from the model configuration (what the exporter must produce);
* `onnx_io_spec(model)` — from an exported ONNX graph (what the file actually declares).

Names and shapes (B = 1, N cameras, C = context channels, F frames, P = pool slots):

inputs
    img             (1, N, 3, H, W)        float32  normalised B,G,R planes (cast in-graph for fp16)
    cam_vec         (1, N, 27)             float32  DepthNet camera vectors — BEVDepth depth nets only
                                                    (pano-*, tiny, depth); plain-LSS models (m0, m1,
                                                    lite) see calibration only through the pool tables
    pool_depth_idx  (P,)                   int64    bucketed BEV-pool tables, P = PoolBounds.total_slots
    pool_feat_idx   (P,)                   int64
    pool_cell_row   (ny·nx,)               int64
    bev_history     (1, C·(F−1), ny, nx)   float32  multi-frame models, temporal_mode 'warp': ego-aligned
                                                    past BEV features
    hist_img_feat   (F−1, N, Cn, fH, fW)   float32  multi-frame models, temporal_mode 'lift' (their default):
                                                    each history frame's cached neck features
    hist_cam_vec    (F−1, N, 27)           float32  'lift', BEVDepth depth nets: each history frame's
                                                    DepthNet camera vector (the current key frame's pose)
    hist_pool_depth_idx (F−1, P)           int64    'lift': each history frame's pool tables, its
    hist_pool_feat_idx  (F−1, P)           int64    cameras posed relative to the current key ego
    hist_pool_cell_row  (F−1, ny·nx)       int64
    history_valid   (F−1,)                 float32  multi-frame models only: 1 = that past frame is real
outputs
    occ_label       (1, nx, ny, nz)        int32    argmax class per voxel (Occ3D index order)
    heatmap         (1, K, ny, nx)         float32  centre heatmap logits, K = num_det_classes (panoptic)
    reg             (1, 2, ny, nx)         float32  sub-cell centre offset (panoptic)
    height          (1, 1, ny, nx)         float32  centre height (panoptic)
    bev_feat        (1, C, ny, nx)         float32  this frame's BEV features for the history ('warp')
    img_feat        (1, N, Cn, fH, fW)     float32  this frame's neck features for the history ('lift')

Float outputs are float32 in both the fp32 and the fp16 graph, so a consumer never branches on
precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Union

import numpy as np
import torch

from occ_ros.core.config import DEFAULT_TEMPORAL_MODE, check_temporal_mode
from occ_ros.core.errors import BackendError

if TYPE_CHECKING:
    import onnx

    from occ_ros.core.config import ModelConfig

# ---- names -----------------------------------------------------------------------------------
IMG = 'img'
CAM_VEC = 'cam_vec'
POOL_DEPTH_IDX = 'pool_depth_idx'
POOL_FEAT_IDX = 'pool_feat_idx'
POOL_CELL_ROW = 'pool_cell_row'
BEV_HISTORY = 'bev_history'
HISTORY_VALID = 'history_valid'
HIST_IMG_FEAT = 'hist_img_feat'
HIST_CAM_VEC = 'hist_cam_vec'
HIST_POOL_DEPTH_IDX = 'hist_pool_depth_idx'
HIST_POOL_FEAT_IDX = 'hist_pool_feat_idx'
HIST_POOL_CELL_ROW = 'hist_pool_cell_row'
LIFT_INPUT_NAMES = (HIST_IMG_FEAT, HIST_CAM_VEC, HIST_POOL_DEPTH_IDX, HIST_POOL_FEAT_IDX,
                    HIST_POOL_CELL_ROW)

OCC_LABEL = 'occ_label'
HEATMAP = 'heatmap'
REG = 'reg'
HEIGHT = 'height'
BEV_FEAT = 'bev_feat'
IMG_FEAT = 'img_feat'

ALL_INPUT_NAMES = (IMG, CAM_VEC, POOL_DEPTH_IDX, POOL_FEAT_IDX, POOL_CELL_ROW, BEV_HISTORY,
                   HISTORY_VALID) + LIFT_INPUT_NAMES
CAM_VEC_DIM = 27                 # the DepthNet camera vector (flashocc.md §2.2)
LABEL_DTYPE = torch.int32        # TensorRT-native index type; ArgMax(int64) is cast in-graph


@dataclass(frozen=True)
class TensorSpec:
    """One named, statically shaped tensor of the engine interface."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()

    def check(self, tensor: torch.Tensor) -> None:
        """Raise BackendError unless `tensor` has exactly this shape and dtype."""
        if tuple(tensor.shape) != self.shape:
            raise BackendError(
                f'input {self.name!r} has shape {tuple(tensor.shape)} but the engine expects '
                f'{self.shape}')
        if tensor.dtype != self.dtype:
            raise BackendError(
                f'input {self.name!r} has dtype {tensor.dtype} but the engine expects {self.dtype}')

    def describe(self) -> str:
        return f'{self.name} {self.shape} {str(self.dtype).replace("torch.", "")}'


@dataclass(frozen=True)
class IOSpec:
    """The ordered inputs and outputs of an engine."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def input(self, name: str) -> TensorSpec:
        for s in self.inputs:
            if s.name == name:
                return s
        raise KeyError(name)

    def output(self, name: str) -> TensorSpec:
        for s in self.outputs:
            if s.name == name:
                return s
        raise KeyError(name)

    def ordered_like(self, other: 'IOSpec') -> 'IOSpec':
        """This spec with inputs/outputs in `other`'s order (tensors `other` lacks go last)."""
        def order(specs: tuple[TensorSpec, ...], names: tuple[str, ...]) -> tuple[TensorSpec, ...]:
            rank = {n: i for i, n in enumerate(names)}
            return tuple(sorted(specs, key=lambda s: rank.get(s.name, len(rank))))
        return IOSpec(order(self.inputs, other.input_names), order(self.outputs, other.output_names))

    def check_inputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Raise BackendError naming every missing/unknown input, then check each tensor.

        Inputs of the general contract that this engine does not take (e.g. `cam_vec` for a
        plain-LSS model) are ignored, so one caller can feed every model; unknown names are errors.
        """
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names and n not in ALL_INPUT_NAMES]
        if missing or extra:
            raise BackendError(
                f'engine inputs mismatch: missing {missing}, unexpected {extra}; '
                f'expected {list(self.input_names)}')
        for s in self.inputs:
            s.check(inputs[s.name])

    def describe(self) -> str:
        lines = ['inputs:'] + [f'  {s.describe()}' for s in self.inputs]
        lines += ['outputs:'] + [f'  {s.describe()}' for s in self.outputs]
        return '\n'.join(lines)


def model_temporal_mode(cfg: 'ModelConfig', temporal_mode: Optional[str] = None) -> Optional[str]:
    """The temporal mode a `cfg` engine runs: None for a single-frame model, else `temporal_mode`
    (checked) or the default (`core.config.DEFAULT_TEMPORAL_MODE`)."""
    if cfg.num_frames < 2:
        return None
    return check_temporal_mode(DEFAULT_TEMPORAL_MODE if temporal_mode is None else temporal_mode)


def engine_io_spec(cfg: 'ModelConfig', temporal_mode: Optional[str] = None) -> IOSpec:
    """The I/O contract of an exported `cfg` model (see the module docstring); `temporal_mode`
    ('lift' | 'warp', None = the default) matters for multi-frame models only."""
    mode = model_temporal_mode(cfg, temporal_mode)
    n = cfg.num_cameras
    h, w = cfg.image.input_hw
    ny, nx = cfg.grid.bev_shape
    nz = cfg.grid.nz
    slots = cfg.pool_bounds.total_slots
    inputs = [TensorSpec(IMG, (1, n, 3, h, w), torch.float32)]
    if cfg.depthnet == 'bevdepth':
        inputs.append(TensorSpec(CAM_VEC, (1, n, CAM_VEC_DIM), torch.float32))
    inputs += [
        TensorSpec(POOL_DEPTH_IDX, (slots,), torch.int64),
        TensorSpec(POOL_FEAT_IDX, (slots,), torch.int64),
        TensorSpec(POOL_CELL_ROW, (ny * nx,), torch.int64),
    ]
    h = cfg.num_frames - 1
    if mode == 'warp':
        inputs.append(TensorSpec(BEV_HISTORY, (1, cfg.history_channels, ny, nx), torch.float32))
    elif mode == 'lift':
        fh, fw = cfg.feature_hw
        inputs.append(TensorSpec(HIST_IMG_FEAT, (h, n, cfg.neck_out_channels, fh, fw), torch.float32))
        if cfg.depthnet == 'bevdepth':
            inputs.append(TensorSpec(HIST_CAM_VEC, (h, n, CAM_VEC_DIM), torch.float32))
        inputs += [
            TensorSpec(HIST_POOL_DEPTH_IDX, (h, slots), torch.int64),
            TensorSpec(HIST_POOL_FEAT_IDX, (h, slots), torch.int64),
            TensorSpec(HIST_POOL_CELL_ROW, (h, ny * nx), torch.int64),
        ]
    if mode is not None:
        inputs.append(TensorSpec(HISTORY_VALID, (h,), torch.float32))
    outputs = [
        TensorSpec(OCC_LABEL, (1, nx, ny, nz), LABEL_DTYPE),
    ]
    if cfg.panoptic:
        outputs += [
            TensorSpec(HEATMAP, (1, cfg.num_det_classes, ny, nx), torch.float32),
            TensorSpec(REG, (1, 2, ny, nx), torch.float32),
            TensorSpec(HEIGHT, (1, 1, ny, nx), torch.float32),
        ]
    if mode == 'warp':
        outputs.append(TensorSpec(BEV_FEAT, (1, cfg.context_channels, ny, nx), torch.float32))
    elif mode == 'lift':
        fh, fw = cfg.feature_hw
        outputs.append(TensorSpec(IMG_FEAT, (1, n, cfg.neck_out_channels, fh, fw), torch.float32))
    return IOSpec(tuple(inputs), tuple(outputs))


# ---- dtype tables ----------------------------------------------------------------------------
# ONNX TensorProto.DataType values (onnx.TensorProto.FLOAT == 1, …), kept numeric so this module
# does not import onnx at start-up.
_ONNX_TO_TORCH: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}
_ORT_TO_TORCH: dict[str, torch.dtype] = {
    'tensor(float)': torch.float32, 'tensor(float16)': torch.float16, 'tensor(double)': torch.float64,
    'tensor(bfloat16)': torch.bfloat16, 'tensor(int64)': torch.int64, 'tensor(int32)': torch.int32,
    'tensor(int16)': torch.int16, 'tensor(int8)': torch.int8, 'tensor(uint8)': torch.uint8,
    'tensor(bool)': torch.bool,
}
_TORCH_TO_NUMPY: dict[torch.dtype, type] = {
    torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64,
    torch.int64: np.int64, torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8,
    torch.uint8: np.uint8, torch.bool: np.bool_,
}


def torch_dtype_from_onnx(elem_type: int) -> torch.dtype:
    try:
        return _ONNX_TO_TORCH[elem_type]
    except KeyError:
        raise BackendError(f'ONNX element type {elem_type} is not supported by occ_ros backends') from None


def torch_dtype_from_ort(type_str: str) -> torch.dtype:
    try:
        return _ORT_TO_TORCH[type_str]
    except KeyError:
        raise BackendError(f'ONNX Runtime type {type_str!r} is not supported by occ_ros backends') from None


def numpy_dtype(dtype: torch.dtype) -> type:
    try:
        return _TORCH_TO_NUMPY[dtype]
    except KeyError:
        raise BackendError(f'{dtype} has no numpy equivalent for ONNX Runtime') from None


def _value_info_spec(vi: 'onnx.ValueInfoProto') -> TensorSpec:
    ttype = vi.type.tensor_type
    dims = []
    for d in ttype.shape.dim:
        if d.HasField('dim_value'):
            dims.append(int(d.dim_value))
        else:
            raise BackendError(
                f'ONNX tensor {vi.name!r} has a dynamic dimension {d.dim_param!r}: occ_ros engines '
                'use static shapes; re-export with `occ-ros export`')
    return TensorSpec(vi.name, tuple(dims), torch_dtype_from_onnx(ttype.elem_type))


def onnx_io_spec(model: Union[str, 'onnx.ModelProto', 'PathLike[str]']) -> IOSpec:
    """Read names, static shapes and dtypes of the graph inputs/outputs of an ONNX model.

    Initializers that older exporters list among the graph inputs are skipped. A dynamic
    dimension raises BackendError (occ_ros engines are static).
    """
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = tuple(_value_info_spec(vi) for vi in proto.graph.input if vi.name not in initializers)
    outputs = tuple(_value_info_spec(vi) for vi in proto.graph.output)
    return IOSpec(inputs, outputs)


def spec_to_json(spec: IOSpec) -> dict:
    """`spec` as plain JSON data ({'inputs': [[name, shape, dtype], …], 'outputs': …})."""
    def rows(specs: Iterable[TensorSpec]) -> list:
        return [[s.name, list(s.shape), str(s.dtype).removeprefix('torch.')] for s in specs]
    return {'inputs': rows(spec.inputs), 'outputs': rows(spec.outputs)}


def spec_from_json(data: Mapping) -> IOSpec:
    """The inverse of `spec_to_json`; BackendError when `data` is not such a record."""
    def specs(rows: object) -> tuple[TensorSpec, ...]:
        if not isinstance(rows, list):
            raise BackendError('I/O record: expected a list of [name, shape, dtype]')
        out = []
        for row in rows:
            name, shape, dtype = row
            dt = getattr(torch, str(dtype), None)
            if not isinstance(name, str) or not isinstance(dt, torch.dtype):
                raise BackendError(f'I/O record: bad entry {row!r}')
            out.append(TensorSpec(name, tuple(int(d) for d in shape), dt))
        return tuple(out)
    try:
        return IOSpec(specs(data['inputs']), specs(data['outputs']))
    except (KeyError, TypeError, ValueError) as e:
        raise BackendError(f'I/O record: {e}') from e


def same_contract(a: IOSpec, b: IOSpec) -> list[str]:
    """Differences between two I/O specs (empty list = identical names, order, shapes, dtypes)."""
    diffs: list[str] = []
    for kind, xs, ys in (('input', a.inputs, b.inputs), ('output', a.outputs, b.outputs)):
        if [s.name for s in xs] != [s.name for s in ys]:
            diffs.append(f'{kind} names {[s.name for s in xs]} != {[s.name for s in ys]}')
            continue
        for x, y in zip(xs, ys):
            if x != y:
                diffs.append(f'{kind} {x.describe()} != {y.describe()}')
    return diffs


def names(specs: Iterable[TensorSpec]) -> list[str]:
    return [s.name for s in specs]

