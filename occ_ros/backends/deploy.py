"""FlashOcc behind the engine I/O contract, in torch: `DeployModule` (what `export` traces and
what `TorchBackend` runs, so eager and engine outputs mean the same thing), its fp16 precision
policy, and `example_inputs` of the contract's shapes.

The contract (`io_spec` documents it), what every backend runs:

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
* **fp16 = a strongly typed graph.** The model runs in half precision (weights and activations
  fp16) while four things stay fp32: every softmax (the depth distribution —
  `float32_softmax` reroutes softmax calls to fp32 inputs), the camera-vector path of the
  DepthNet (BatchNorm1d + the two MLPs: intrinsics of ~560 px lose 0.25 px steps in fp16), the
  BEV-pool products and sums (`bev_pool` computes in fp32), and the final argmax.
  `img`, `cam_vec`, `bev_history` stay float32 engine inputs (cast in the graph where the fp16
  part starts); all float outputs are fp32.
  TensorRT builds this graph as a strongly typed network (no BuilderFlag.FP16, which TensorRT 11
  removed); ONNX Runtime runs it on CPU as is.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Union

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from occ_ros.backends import io_spec as ios
from occ_ros.core.config import PRECISIONS
from occ_ros.core.errors import ConfigError

if TYPE_CHECKING:
    from occ_ros.core.config import ModelConfig


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
                    raise ConfigError(f'DepthNet has no submodule {name!r}: update deploy._CAMERA_PATH')
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
