"""ONNX export of FlashOcc with the engine I/O contract (`occ-ros export`).

The exported graph is what every backend runs (`io_spec` documents it):

inputs   img (1, N, 3, H, W) float32 · [cam_vec (1, N, 27) float32 — BEVDepth depth nets only] ·
         pool_depth_idx (P,) int64 · pool_feat_idx (P,) int64 · pool_cell_row (ny·nx,) int64
         [+ bev_history (1, C·(F−1), ny, nx) float32, history_valid (F−1,) float32 for F > 1 frames]
outputs  occ_label (1, nx, ny, nz) int32
         [+ heatmap (1, K, ny, nx), reg (1, 2, ny, nx), height (1, 1, ny, nx) float32 — panoptic]
         [+ bev_feat (1, C, ny, nx) float32 — multi-frame models, for the BEV history buffer]

Design choices:
* Shapes are static (P = PoolBounds.total_slots, fixed by the config), so TensorRT needs no
  optimisation profile. Calibration enters as the three pool tables and `cam_vec`: a new rig
  never needs a new engine while it fits the pool bounds.
* The argmax is in the graph: the engine hands out 2.6 MB of int32 labels instead of the 46 MB
  (fp32) logits. `occ_label` is int32 because that is TensorRT's native index type (uint8 would
  save 1.9 MB but leans on Cast-to-UINT8 support). No per-voxel score is exported: nothing
  downstream consumes one, and a softmax over all nx·ny·nz·K logits costs more per frame than the
  whole post-processing.
* Exporter: torch.export-based (`dynamo=True`, torch's default) at its native opset 18, inside
  TensorRT 10.0's supported range (opsets 9…20). It traces symbolically, so a half-precision
  export takes seconds on a CPU (the TorchScript exporter must execute the fp16 network, which
  takes minutes there), and `index_select` becomes `Gather`. Graph inputs the model never reads
  (`cam_vec` of plain-LSS models) are removed, so the graph, ONNX Runtime and TensorRT agree on
  the input list.
* **fp16 = a strongly typed graph.** The model runs in half precision (weights and activations
  fp16) while four things stay fp32: every softmax (the depth distribution —
  `float32_softmax` reroutes softmax calls to fp32 inputs), the camera-vector path of the
  DepthNet (BatchNorm1d + the two MLPs: intrinsics of ~560 px lose 0.25 px steps in fp16), the
  BEV-pool products and sums (`bev_pool` computes in fp32), and the final argmax.
  `img`, `cam_vec`, `bev_history` stay float32 engine inputs (cast in the graph where the fp16
  part starts); all float outputs are fp32.
  TensorRT builds this graph as a strongly typed network (no BuilderFlag.FP16, which TensorRT 11
  removed); ONNX Runtime runs it on CPU as is.

Every export is checked: `onnx.checker` (full), opset <= 20, every node in the default domain and
in `TENSORRT_NATIVE_OPS` with supported Resize/ArgMax attributes, and the I/O names, shapes and
dtypes equal `engine_io_spec(cfg)`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Union

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from occ_ros.backends import io_spec as ios
from occ_ros.backends.engine_cache import atomic_write, sha256_file
from occ_ros.backends.io_record import recorded_io_spec, write_io_record
from occ_ros.core.config import PRECISIONS
from occ_ros.core.errors import BackendError, ConfigError

if TYPE_CHECKING:
    import onnx

    from occ_ros.core.config import ModelConfig

LOG = logging.getLogger('occ_ros.export')

OPSET = 18                       # the dynamo exporter's native opset
MAX_TENSORRT_OPSET = 20          # TensorRT 10.0 parses opsets 9…20 (onnx-tensorrt operators.md)
EXPORT_FORMAT = '1'
ProgressFn = Callable[[str], None]

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


# ---- precision policy --------------------------------------------------------------------------
_SOFTMAX_FUNCS = {torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax, torch.special.softmax,
                  torch.log_softmax, torch.nn.functional.log_softmax, torch.Tensor.log_softmax}


class _Fp32Softmax(TorchFunctionMode):
    """Run every (log-)softmax on a float32 copy of its input and cast the result back."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        if func in _SOFTMAX_FUNCS and args and isinstance(args[0], torch.Tensor) \
                and args[0].dtype in (torch.float16, torch.bfloat16):
            x = args[0]
            return func(x.float(), *args[1:], **kwargs).to(x.dtype)
        return func(*args, **kwargs)


@contextmanager
def float32_softmax(enabled: bool = True) -> Iterator[None]:
    """Within the block, half-precision softmaxes compute in float32 (exp/normalise are the
    precision-critical part; the probabilities are stored back in the input dtype)."""
    if not enabled:
        yield
        return
    with _Fp32Softmax():
        yield


class _Fp32Island(nn.Module):
    """Run a submodule in float32 inside a half-precision model; cast the result to `out_dtype`."""

    def __init__(self, module: nn.Module, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.float()
        self.out_dtype = out_dtype

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        y = self.module(*[a.float() if a.is_floating_point() else a for a in args])
        return y.to(self.out_dtype)


# The camera vector (27 values: intrinsics ≈ 560 px, rotations, translations, image-aug terms)
# feeds BatchNorm1d and two MLPs in the BEVDepth DepthNet. In fp16 an intrinsic of 557.04 is
# stored as 557.0 and BatchNorm divides such rounding errors by small running variances, so this
# path stays float32; the MLP outputs (SE gates) enter the fp16 image path.
_CAMERA_PATH = (('bn', torch.float32), ('depth_mlp', torch.float16), ('context_mlp', torch.float16))


def _keep_camera_path_fp32(model: nn.Module) -> int:
    """Wrap the camera-vector submodules of every DepthNet in `model` as fp32 islands."""
    from occ_ros.model.depthnet import DepthNet

    n = 0
    for module in model.modules():
        if isinstance(module, DepthNet):
            for name, out_dtype in _CAMERA_PATH:
                child = getattr(module, name, None)
                if not isinstance(child, nn.Module):
                    raise ConfigError(f'DepthNet has no submodule {name!r}: update export._CAMERA_PATH')
                setattr(module, name, _Fp32Island(child, out_dtype))
            n += 1
    return n


# nn.Softplus (the occupancy head's predicter: Linear → Softplus → Linear, official
# bev_occ_head.py l.324) exports as Where(x > 20, x, Softplus(x)). Softplus is log(1 + exp(x)); in
# float16 exp(x) overflows for x > ln(65504) ≈ 11.09, and on real frames 12–18 % of its inputs lie
# in (11.09, 20]. ONNX Runtime hides this (it computes in fp32); a TensorRT fp16 kernel need not.
# So in the fp16 graph the Softplus runs in float32 (and its output, ≤ max(x, 0) + 0.7, fits fp16).
def _keep_softplus_fp32(model: nn.Module) -> int:
    """Wrap every nn.Softplus of `model` as a float32 island returning float16."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Softplus):
                setattr(parent, name, _Fp32Island(child, torch.float16))
                n += 1
    return n


class DeployModule(nn.Module):
    """FlashOcc behind the engine contract: named inputs in, `io_spec` outputs (a tuple) out.

    This is both what gets exported and what `TorchBackend` runs, so eager and engine outputs
    mean the same thing. precision 'fp16' deep-copies the model to half precision (the caller's
    model is untouched) and applies the fp32 softmax policy.
    """

    def __init__(self, model: nn.Module, precision: str = 'fp32',
                 temporal_mode: Optional[str] = None) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f'precision must be one of {PRECISIONS}, got {precision!r}')
        cfg = getattr(model, 'cfg', None)
        if cfg is None:
            raise ConfigError('DeployModule needs a FlashOcc model (with .cfg)')
        self.cfg: 'ModelConfig' = cfg
        self.precision = precision
        self.compute_dtype = torch.float16 if precision == 'fp16' else torch.float32
        if precision == 'fp16':
            self.model = copy.deepcopy(model).half()
            _keep_camera_path_fp32(self.model)
            _keep_softplus_fp32(self.model)
        else:
            self.model = model
        self.temporal_mode = ios.model_temporal_mode(cfg, temporal_mode)
        if type(self) is DeployModule and self.temporal_mode == 'lift':
            raise ConfigError('DeployModule runs the warp history; use deploy_module(…, '
                              "temporal_mode='lift') for the lift")
        self.spec = ios.engine_io_spec(cfg, self.temporal_mode)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.spec.output_names

    def forward(self, img: torch.Tensor, cam_vec: torch.Tensor, pool_depth_idx: torch.Tensor,
                pool_feat_idx: torch.Tensor, pool_cell_row: torch.Tensor,
                bev_history: Optional[torch.Tensor] = None,
                history_valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, ...]:
        """Shapes as in `io_spec.engine_io_spec`; returns outputs in `output_names` order."""
        dt = self.compute_dtype
        history = None if bev_history is None else bev_history.to(dt)
        valid = None if history_valid is None else history_valid.to(dt)
        with float32_softmax(dt != torch.float32):
            out = self.model(img.to(dt), cam_vec.float(), pool_depth_idx, pool_feat_idx,
                             pool_cell_row, history, valid)
            return self._results(out)

    def _results(self, out: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The model's output dict → the engine outputs in `output_names` order."""
        logits = out['occ_logits'].float()                                 # (1, nx, ny, nz, K)
        results = [logits.argmax(-1).to(ios.LABEL_DTYPE)]                   # (1, nx, ny, nz)
        if self.cfg.panoptic:
            results += [out['heatmap'].float(), out['reg'].float(), out['height'].float()]
        if self.temporal_mode == 'warp':
            results.append(out['bev_feat'].float())
        elif self.temporal_mode == 'lift':
            results.append(out['img_feat'].float())
        return tuple(results)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named inputs → named outputs (what TorchBackend calls)."""
        return dict(zip(self.output_names, self(*self.positional(inputs))))

    @property
    def positional_names(self) -> tuple[str, ...]:
        """Names of forward()'s positional arguments (cam_vec included even when unused)."""
        names = (ios.IMG, ios.CAM_VEC, ios.POOL_DEPTH_IDX, ios.POOL_FEAT_IDX, ios.POOL_CELL_ROW)
        if self.temporal_mode == 'lift':
            return names + ios.LIFT_INPUT_NAMES + (ios.HISTORY_VALID,)
        return names + ((ios.BEV_HISTORY, ios.HISTORY_VALID) if self.temporal_mode == 'warp' else ())

    def positional(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """forward()'s positional arguments from named inputs.

        Models without a camera-aware depth net take no `cam_vec`; a zero placeholder is passed
        (they never read it, and the exporter drops the unused input).
        """
        img = inputs[ios.IMG]
        cam_vec = inputs.get(ios.CAM_VEC)
        if cam_vec is None:
            cam_vec = img.new_zeros(img.shape[0], img.shape[1], ios.CAM_VEC_DIM)
        args = [img, cam_vec, inputs[ios.POOL_DEPTH_IDX], inputs[ios.POOL_FEAT_IDX],
                inputs[ios.POOL_CELL_ROW]]
        if self.temporal_mode == 'lift':
            feat = inputs[ios.HIST_IMG_FEAT]
            hist_cam = inputs.get(ios.HIST_CAM_VEC)
            if hist_cam is None:
                hist_cam = feat.new_zeros(feat.shape[0], feat.shape[1], ios.CAM_VEC_DIM)
            args += [feat, hist_cam, inputs[ios.HIST_POOL_DEPTH_IDX], inputs[ios.HIST_POOL_FEAT_IDX],
                     inputs[ios.HIST_POOL_CELL_ROW], inputs[ios.HISTORY_VALID]]
        elif self.temporal_mode == 'warp':
            args += [inputs[ios.BEV_HISTORY], inputs[ios.HISTORY_VALID]]
        return tuple(args)


class LiftDeployModule(DeployModule):
    """`DeployModule` of a multi-frame model in temporal_mode 'lift' (`FlashOcc.forward_lift`):
    the history arrives as each history frame's neck features, camera vectors and pool tables
    (io_spec `hist_*`), and the frame's own neck features come out (`img_feat`)."""

    def forward(self, img: torch.Tensor, cam_vec: torch.Tensor,  # type: ignore[override]
                pool_depth_idx: torch.Tensor, pool_feat_idx: torch.Tensor,
                pool_cell_row: torch.Tensor, hist_img_feat: torch.Tensor,
                hist_cam_vec: torch.Tensor, hist_pool_depth_idx: torch.Tensor,
                hist_pool_feat_idx: torch.Tensor, hist_pool_cell_row: torch.Tensor,
                history_valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dt = self.compute_dtype
        with float32_softmax(dt != torch.float32):
            out = self.model.forward_lift(img.to(dt), cam_vec.float(), pool_depth_idx, pool_feat_idx,
                                          pool_cell_row, hist_img_feat.to(dt), hist_cam_vec.float(),
                                          hist_pool_depth_idx, hist_pool_feat_idx, hist_pool_cell_row,
                                          history_valid.to(dt))
            return self._results(out)


def deploy_module(model: nn.Module, precision: str = 'fp32',
                  temporal_mode: Optional[str] = None) -> DeployModule:
    """The engine-contract module of `model`: `LiftDeployModule` for a multi-frame model in
    temporal_mode 'lift' (the default), `DeployModule` otherwise."""
    cfg = getattr(model, 'cfg', None)
    if cfg is not None and ios.model_temporal_mode(cfg, temporal_mode) == 'lift':
        return LiftDeployModule(model, precision, 'lift')
    return DeployModule(model, precision, temporal_mode)


def example_inputs(cfg: 'ModelConfig', seed: int = 0, device: Union[str, torch.device] = 'cpu',
                   temporal_mode: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Valid inputs of the right shapes: random image/camera vector, an all-empty pool.

    The empty pool tables point every slot at the appended zero and every cell at the zero row,
    which is a legal calibration for tracing (shapes, not values, define the graph).
    """
    g = torch.Generator().manual_seed(seed)
    spec = ios.engine_io_spec(cfg, temporal_mode)
    n, (fh, fw), d = cfg.num_cameras, cfg.feature_hw, cfg.depth.n
    out: dict[str, torch.Tensor] = {}
    for s in spec.inputs:
        if s.name in (ios.POOL_DEPTH_IDX, ios.HIST_POOL_DEPTH_IDX):
            t = torch.full(s.shape, n * d * fh * fw, dtype=s.dtype)
        elif s.name in (ios.POOL_FEAT_IDX, ios.HIST_POOL_FEAT_IDX):
            t = torch.full(s.shape, n * fh * fw, dtype=s.dtype)
        elif s.name in (ios.POOL_CELL_ROW, ios.HIST_POOL_CELL_ROW):
            t = torch.zeros(s.shape, dtype=s.dtype)
        elif s.name == ios.HISTORY_VALID:
            t = torch.ones(s.shape, dtype=s.dtype)
        else:
            t = torch.randn(s.shape, generator=g, dtype=s.dtype)
        out[s.name] = t.to(device)
    return out


# ---- checks ------------------------------------------------------------------------------------
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


# ---- export ----------------------------------------------------------------------------------
@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (torchvision-not-installed notices, progress prints)."""
    loggers = [logging.getLogger(n) for n in ('torch.onnx', 'torch.export', 'torch._dynamo',
                                               'torch.fx.experimental.symbolic_shapes',
                                               'onnxscript', 'onnx_ir')]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _drop_unused_inputs(model: 'onnx.ModelProto') -> None:
    """Remove graph inputs that no node reads (they would be dropped by TensorRT anyway)."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [vi for vi in model.graph.input if vi.name in used]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)


def _config_json(cfg: 'ModelConfig') -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def export_model_proto(model: nn.Module, precision: str = 'fp32', *,
                       progress: Optional[ProgressFn] = None, opset: int = OPSET,
                       fp32_islands: bool = False,
                       temporal_mode: Optional[str] = None) -> 'onnx.ModelProto':
    """Trace `model` (a FlashOcc) into a checked, static-shape ONNX ModelProto (not saved).

    precision: 'fp32' or 'fp16' (strongly typed; see the module docstring).
    progress: called with one line per step (tracing, checking).
    fp32_islands: fp32 only — also trace the fp16 graph and record which nodes it keeps in
        float32 (`precision_islands`), so TensorRT 8.x can build an fp16 engine from this graph.
    temporal_mode: multi-frame models — 'lift' (default) or 'warp' graph (io_spec).
    Metadata records the model name, precision, temporal mode and config. Raises BackendError when the graph
    fails onnx.checker, the TensorRT-native whitelist or the I/O contract.
    """
    say = progress or (lambda line: LOG.info('%s', line))
    if fp32_islands and precision != 'fp32':
        raise ConfigError('fp32_islands marks an fp32 graph; the fp16 graph carries its own types')
    if opset > MAX_TENSORRT_OPSET:
        raise ConfigError(f'opset {opset} is newer than TensorRT 10.0 parses (<= {MAX_TENSORRT_OPSET})')
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise ConfigError('export needs a FlashOcc model (with .cfg)')
    was_training = model.training
    model.eval()
    try:
        deploy = deploy_module(model, precision, temporal_mode).eval()
        mode = deploy.temporal_mode
        inputs = example_inputs(cfg, temporal_mode=mode)
        say(f'tracing {cfg.name} ({precision}, opset {opset}) …')
        t0 = time.monotonic()
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                deploy, deploy.positional(inputs), None, input_names=list(deploy.positional_names),
                output_names=list(deploy.output_names), opset_version=opset, dynamo=True,
                optimize=True, verbose=False, external_data=False)
        proto = program.model_proto
        del program, deploy
        _drop_unused_inputs(proto)
        say(f'traced in {time.monotonic() - t0:.1f} s: {len(proto.graph.node)} nodes')
    finally:
        model.train(was_training)
    for key, value in (('occ_ros.format', EXPORT_FORMAT), ('occ_ros.model', cfg.name),
                       ('occ_ros.precision', precision), ('occ_ros.config', _config_json(cfg)),
                       ('occ_ros.temporal_mode', str(mode))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = 'occ_ros'
    say('checking (onnx.checker, TensorRT operator whitelist, I/O contract) …')
    check_exported(proto, cfg, mode)
    if fp32_islands:
        from occ_ros.backends.precision_islands import mark_islands

        say('tracing the fp16 graph to find its float32 islands …')
        names = mark_islands(proto, export_model_proto(model, 'fp16', progress=say, opset=opset,
                                                       temporal_mode=mode))
        say(f'{len(names)} nodes stay float32 in an fp16 engine (recorded for TensorRT 8.x)')
    return proto


def export_onnx(model: nn.Module, path: Union[str, Path], precision: str = 'fp32', *,
                progress: Optional[ProgressFn] = None, opset: int = OPSET,
                fp32_islands: bool = False, temporal_mode: Optional[str] = None) -> Path:
    """Export `model` to `path` (written atomically) via `export_model_proto`; returns the path."""
    say = progress or (lambda line: LOG.info('%s', line))
    proto = export_model_proto(model, precision, progress=say, opset=opset, fp32_islands=fp32_islands,
                               temporal_mode=temporal_mode)
    spec = ios.onnx_io_spec(proto)
    data = proto.SerializeToString()
    del proto
    path = Path(path)
    say(f'saving {path} ({len(data) / 2**20:.1f} MiB) …')
    atomic_write(path, data)
    write_io_record(path, spec, hashlib.sha256(data).hexdigest(), len(data))
    return path


def read_metadata(path: Union[str, Path]) -> dict[str, str]:
    """The `occ_ros.*` metadata of an exported graph (model name, precision, config JSON)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith('occ_ros.')}


def model_fingerprint(model: nn.Module, precision: str, opset: int = OPSET) -> str:
    """SHA-256 over everything an export depends on: config, weights, precision, opset, torch."""
    h = hashlib.sha256()
    cfg = getattr(model, 'cfg', None)
    h.update(_config_json(cfg).encode() if cfg is not None else b'')
    h.update(f'{precision}|{opset}|{EXPORT_FORMAT}|{torch.__version__}'.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def ensure_onnx(model: nn.Module, *, precision: str = 'fp32', directory: Union[str, Path],
                progress: Optional[ProgressFn] = None, fp32_islands: bool = False,
                temporal_mode: Optional[str] = None) -> Path:
    """An exported graph of `model` in `directory`, exported only if not there yet.

    The file name carries a fingerprint of config + weights + precision + exporter, so a model
    with other weights never reuses a stale export. An existing file's I/O contract is checked
    against its I/O record (`recorded_io_spec`) when the record matches its bytes, else by
    parsing the graph (and the record is written then). `fp32_islands`: see `export_model_proto`.
    """
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise ConfigError('ensure_onnx needs a FlashOcc model (with .cfg)')
    digest = model_fingerprint(model, precision)
    mode = ios.model_temporal_mode(cfg, temporal_mode)
    flavour = precision + ('-islands' if fp32_islands else '') + (f'-{mode}' if mode else '')
    path = Path(directory).expanduser() / f'{cfg.name}.{flavour}.{digest[:16]}.onnx'
    if path.is_file():
        try:
            spec = recorded_io_spec(path)
            recorded = spec is not None
            if spec is None:                 # no record of these bytes: read the graph itself
                spec = ios.onnx_io_spec(path)
            if not ios.same_contract(spec, ios.engine_io_spec(cfg, mode)):
                if not recorded:
                    write_io_record(path, spec, sha256_file(path), path.stat().st_size)
                LOG.info('reusing exported graph %s', path)
                return path
        except Exception as e:           # unreadable leftovers are simply re-exported
            LOG.warning('re-exporting: %s is unreadable (%s)', path, e)
    return export_onnx(model, path, precision, progress=progress, fp32_islands=fp32_islands,
                       temporal_mode=mode)
