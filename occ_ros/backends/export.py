"""ONNX export of FlashOcc with the engine I/O contract (`occ-ros export`): `deploy.DeployModule`
traced into a static-shape graph, checked (`export_checks`), with its metadata and I/O record;
`ensure_onnx` keeps exports by a fingerprint of config, weights, precision and exporter.

The graph is what every backend runs: its inputs and outputs, static shapes, in-graph argmax and
fp16 precision policy are `deploy`'s (the contract itself: `io_spec`).

Design choices:
* Exporter: torch.export-based (`dynamo=True`, torch's default) at its native opset 18, inside
  TensorRT 10.0's supported range (opsets 9…20). It traces symbolically, so a half-precision
  export takes seconds on a CPU (the TorchScript exporter must execute the fp16 network, which
  takes minutes there), and `index_select` becomes `Gather`. Graph inputs the model never reads
  (`cam_vec` of plain-LSS models) are removed, so the graph, ONNX Runtime and TensorRT agree on
  the input list.

Every export is checked (`export_checks.check_exported`): onnx.checker, the TensorRT-native
operators and opset, and the I/O contract `engine_io_spec(cfg)`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Union

import torch
from torch import nn

from occ_ros.backends import io_spec as ios
from occ_ros.backends.deploy import deploy_module, example_inputs
from occ_ros.backends.engine_cache import atomic_write, sha256_file
from occ_ros.backends.export_checks import MAX_TENSORRT_OPSET, check_exported
from occ_ros.backends.io_record import recorded_io_spec, write_io_record
from occ_ros.core.errors import ConfigError

if TYPE_CHECKING:
    import onnx

    from occ_ros.core.config import ModelConfig

LOG = logging.getLogger('occ_ros.export')

OPSET = 18                       # the dynamo exporter's native opset
EXPORT_FORMAT = '1'
ProgressFn = Callable[[str], None]


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

    precision: 'fp32' or 'fp16' (strongly typed; see `deploy`).
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
