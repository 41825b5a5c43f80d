"""Checkpoints: official FlashOcc files (read-only) and this project's own format.

Every file is read with `torch.load(..., weights_only=True)`: tensors, containers, strings and
numbers only, so a file cannot run code when opened. A pickle that needs arbitrary globals is
refused with `CheckpointError`. The only extra globals allowed are numpy scalar/dtype
reconstructors (mmcv `meta` blocks sometimes hold numpy scalars); they build plain values.

Official formats (state_dict keys are the module names of `FlashOcc`):
  mmcv:  {'meta': {...}, 'state_dict': {...}, ['optimizer': ...]}
  EMA:   {'epoch': int, 'state_dict': {...}, 'updates': int}   (MEGVIIEMAHook `epoch_N_ema.pth`)
  bare:  {key: tensor}
Keys may carry a `module.` prefix (DataParallel), which is stripped.

Own format (`save_checkpoint` / `load_checkpoint`):
  {'format': 'occ_ros-checkpoint', 'format_version': 1,
   'config': ModelConfig as nested plain dicts/lists/str/numbers,
   'state_dict': {key: tensor}, 'meta': {..., 'storage_dtype': 'float32' | 'float16'}}
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import pickletools
import tempfile
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch
from torch import nn

from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import CheckpointError, ConfigError

FORMAT = 'occ_ros-checkpoint'
FORMAT_VERSION = 1
LIST_LIMIT = 20                      # keys shown per group in a mismatch error
PathLike = Union[str, 'os.PathLike[str]']


# ---------------------------------------------------------------------------------- reading
def _numpy_safe_globals() -> list[Any]:
    """numpy scalar / dtype reconstructors under both numpy-1 and numpy-2 module names."""
    core = getattr(np, '_core', None) or np.core
    scalar = core.multiarray.scalar
    allowed: list[Any] = [(scalar, 'numpy.core.multiarray.scalar'),
                          (scalar, 'numpy._core.multiarray.scalar'), np.dtype]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return allowed


def _allowed_global_names() -> set[str]:
    """Names the weights-only unpickler accepts (torch's allowlist + our numpy additions)."""
    names = {'numpy.core.multiarray.scalar', 'numpy._core.multiarray.scalar', 'numpy.dtype'}
    try:
        from torch import _weights_only_unpickler as wou     # private: fall back if it moves
        names |= set(wou._get_allowed_globals())
    except Exception:
        names |= {'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2',
                  'torch._utils._rebuild_parameter', '_codecs.encode'}
    return names


def _scan_pickle_globals(path: Path) -> list[str]:
    """Globals named in a plain (non-zip) pickle stream, found by parsing opcodes — nothing is
    executed. Legacy torch files are several pickles in a row followed by raw tensor bytes."""
    names: list[str] = []
    with open(path, 'rb') as f:
        while True:
            strings: list[str] = []
            try:
                for op, arg, _ in pickletools.genops(f):
                    if isinstance(arg, str) and ('UNICODE' in op.name or 'STRING' in op.name):
                        strings.append(str(arg))
                    elif op.name == 'GLOBAL':
                        names.append(str(arg).replace(' ', '.'))
                    elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                        names.append(f'{strings[-2]}.{strings[-1]}')
            except Exception:          # raw tensor bytes or garbage: stop scanning
                break
            if not f.read(1):
                break
            f.seek(-1, os.SEEK_CUR)
    return list(dict.fromkeys(names))


def _needed_globals(path: Path) -> list[str]:
    """Globals of a refused file that are not plain-data reconstructors (they could run code)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:          # not a zip checkpoint
        names = _scan_pickle_globals(path)
    allowed = _allowed_global_names()
    return [n for n in names if n not in allowed and not n.startswith('numpy.dtypes.')]


def read_checkpoint_file(path: PathLike) -> Any:
    """torch.load(path, map_location='cpu', weights_only=True) with named errors."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f'checkpoint not found: {p}')
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(p, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = _needed_globals(p)
        if needed:
            raise CheckpointError(
                f'refusing to load {p}: unpickling it would need code execution (it references '
                f'{", ".join(needed)}). Only tensors, containers, strings and numbers are '
                'accepted. If the file comes from a source you trust, re-save just its '
                'state_dict (torch.save({"state_dict": ckpt["state_dict"]}, new_path)) in a '
                'separate environment and load that') from None
        boiler = ('Weights only', 'Please file', 'Check the')
        reason = [ln.strip() for ln in str(exc).splitlines()
                  if ln.strip() and not ln.startswith(boiler)]
        raise CheckpointError(
            f'{p} cannot be read safely (weights-only unpickler: '
            f'{reason[-1] if reason else exc}): it is not a torch.save checkpoint, is corrupt, '
            'or needs full unpickling') from None
    except Exception as exc:
        raise CheckpointError(f'{p} is not a PyTorch checkpoint (torch.save zip or pickle): '
                              f'{type(exc).__name__}: {exc}') from None


def _strip_module_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    prefix = 'module.'
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}


def extract_state_dict(obj: Any, source: str = 'checkpoint'
                       ) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict inside an mmcv / EMA / bare checkpoint and the detected format name."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{source}: expected a dict at top level, got {type(obj).__name__}')
    if 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
        sd, fmt = obj['state_dict'], ('ema' if {'epoch', 'updates'} <= set(obj) else 'mmcv')
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, fmt = obj, 'bare'
    else:
        keys = ', '.join(sorted(map(str, obj))[:LIST_LIMIT])
        raise CheckpointError(f'{source}: no state_dict found (top-level keys: {keys})')
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f'{source}: state_dict entries that are not tensors: '
                              f'{_fmt_list(bad)}')
    return _strip_module_prefix(sd), fmt


# ---------------------------------------------------------------------------------- matching
def _fmt_list(items: list[str]) -> str:
    shown = ', '.join(items[:LIST_LIMIT])
    more = len(items) - LIST_LIMIT
    return shown + (f', … and {more} more' if more > 0 else '')


def _hints(missing: list[str], unexpected: list[str], shapes: list[str]) -> list[str]:
    hints = []
    if any(k.startswith('aux_centerness_head.') for k in unexpected):
        hints.append('the checkpoint has a centerness head: build the panoptic (pano-…) model')
    if any(k.startswith('aux_centerness_head.') for k in missing):
        hints.append('the checkpoint has no centerness head: build the non-panoptic model')
    if any(k.startswith('pre_process_net.') for k in unexpected + missing):
        hints.append('single-frame vs multi-frame (pre_process_net) mismatch: check num_frames')
    if any('depth_net.' in k for k in shapes):
        hints.append('depth net / context widths differ: check depth bins (44 vs 88) and '
                     'context_channels (64 vs 80; the released Panoptic-FlashOcc-Depth checkpoint '
                     'may use 64, see occ_ros.model.builders)')
    return hints


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
                    for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape))
    if not (missing or unexpected or shapes):
        return
    name = getattr(getattr(model, 'cfg', None), 'name', type(model).__name__)
    lines = [f'{source} does not fit model {name!r}: {len(missing)} missing keys, '
             f'{len(unexpected)} unexpected keys, {len(shapes)} shape mismatches',
             f'  missing keys ({len(missing)}): {_fmt_list(missing) or "-"}',
             f'  unexpected keys ({len(unexpected)}): {_fmt_list(unexpected) or "-"}',
             f'  shape mismatches ({len(shapes)}): {_fmt_list(shapes) or "-"}']
    lines += [f'  hint: {h}' for h in _hints(missing, unexpected, shapes)]
    raise CheckpointError('\n'.join(lines))


def _load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    check_state_dict(model, sd, source)
    with torch.no_grad():
        model.load_state_dict(dict(sd), strict=True)   # copies, casting to the model's dtypes


def load_official_payload(model: nn.Module, obj: Any, source: str) -> dict[str, Any]:
    """`load_official_checkpoint` of an already read file (`read_checkpoint_file`); `source`
    names it in errors."""
    sd, fmt = extract_state_dict(obj, source)
    _load_strict(model, sd, source)
    raw_meta = obj.get('meta') if fmt == 'mmcv' else None
    meta: dict[str, Any] = dict(raw_meta) if isinstance(raw_meta, Mapping) else {}
    if fmt == 'ema':
        meta.update(epoch=obj.get('epoch'), updates=obj.get('updates'))
    return {'format': fmt, 'num_tensors': len(sd), 'meta': meta}


def load_official_checkpoint(model: nn.Module, path: PathLike) -> dict[str, Any]:
    """Load an official FlashOcc checkpoint (mmcv, EMA or bare) into `model`, strictly.

    Returns {'format': 'mmcv'|'ema'|'bare', 'num_tensors': int, 'meta': dict} (meta = the
    checkpoint's 'meta' block, or epoch/updates for EMA files). Raises CheckpointError for an
    unreadable or unsafe file and for any missing / unexpected / mis-shaped tensor.
    """
    return load_official_payload(model, read_checkpoint_file(path), str(path))


# ------------------------------------------------------------------------------ config <-> dict
def config_to_dict(obj: Any) -> Any:
    """A (nested) frozen config dataclass as plain dicts / lists / str / numbers / None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [config_to_dict(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f'cannot store config value {obj!r} ({type(obj).__name__}) '
                          'as plain data')


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where)
    if origin is Union or (hasattr(types, 'UnionType') and origin is getattr(types, 'UnionType')):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise CheckpointError(f'config {where}: expected a list, got {value!r}')
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f'{where}[{i}]') for i, v in enumerate(value))
        if len(args) != len(value):
            raise CheckpointError(f'config {where}: expected {len(args)} items, got {len(value)}')
        return tuple(_convert(a, v, f'{where}[{i}]') for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise CheckpointError(f'config {where}: expected a bool, got {value!r}')
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(f'config {where}: expected a number, got {value!r}')
        if tp is int and value != int(value):
            raise CheckpointError(f'config {where}: expected an integer, got {value!r}')
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise CheckpointError(f'config {where}: expected a string, got {value!r}')
        return value
    raise CheckpointError(f'config {where}: unsupported field type {tp!r}')


def config_from_dict(cls: type, data: Any, where: str = '') -> Any:
    """Rebuild frozen dataclass `cls` from `config_to_dict` output (missing fields → defaults)."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f'config {where or cls.__name__}: expected a dict, got {data!r}')
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(f'config {where or cls.__name__}: unknown fields {unknown} '
                              '(written by a newer occ_ros?)')
    kwargs = {k: _convert(hints[k], v, f'{where}.{k}' if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f'config {where or cls.__name__} is invalid: {exc}') from None


# ---------------------------------------------------------------------------------- own format
def _check_plain(value: Any, where: str = 'meta') -> None:
    # exact types: subclasses (numpy float64, torch's TorchVersion str) pickle as their class
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f'{where}[{i}]')
        return
    if type(value) is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise CheckpointError(f'{where}: keys must be strings, got {k!r}')
            _check_plain(v, f'{where}.{k}')
        return
    raise CheckpointError(f'{where}: {type(value).__name__} cannot be stored (plain data and '
                          'tensors only, so the file loads with weights_only=True)')


def save_checkpoint(model: nn.Module, path: PathLike, extra: Mapping[str, Any] | None = None,
                    fp16: bool = False) -> Path:
    """Write `model` (a FlashOcc with `.cfg`) in the occ_ros format; atomic (temp file + rename).

    extra: plain data stored under 'meta' (e.g. epoch, metrics). fp16: store floating tensors
    as float16 (half the size); `load_checkpoint` restores them to the model's float32.
    """
    cfg = getattr(model, 'cfg', None)
    if not isinstance(cfg, ModelConfig):
        raise CheckpointError('save_checkpoint needs a model with a ModelConfig in .cfg')
    meta = dict(extra or {})
    _check_plain(meta)
    meta.update(model_name=cfg.name, storage_dtype='float16' if fp16 else 'float32',
                torch_version=str(torch.__version__))
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        sd[k] = (v.half() if fp16 and v.is_floating_point() else v).clone()
    payload = {'format': FORMAT, 'format_version': FORMAT_VERSION,
               'config': config_to_dict(cfg), 'state_dict': sd, 'meta': meta}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + '.', suffix='.tmp', dir=out.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _own_payload(obj: Any, source: str) -> Mapping[str, Any]:
    if not (isinstance(obj, Mapping) and obj.get('format') == FORMAT):
        raise CheckpointError(f'{source} is not an {FORMAT} file; official FlashOcc checkpoints '
                              'load with load_official_checkpoint(model, path)')
    version = obj.get('format_version')
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(f'{source}: format_version {version!r} is not supported by this '
                              f'occ_ros (reads 1..{FORMAT_VERSION}); update occ_ros')
    for key in ('config', 'state_dict', 'meta'):
        if key not in obj:
            raise CheckpointError(f'{source}: {FORMAT} file without {key!r}')
    return obj


def _restore_dtypes(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    return {k: (v.to(own[k].dtype) if k in own and v.is_floating_point() else v)
            for k, v in sd.items()}


def load_checkpoint(path: PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Read an occ_ros checkpoint → (FlashOcc built from its config with its weights, in eval
    mode, float32; meta dict)."""
    return model_from_payload(read_checkpoint_file(path), str(path))


def model_from_payload(obj: Any, source: str) -> tuple[nn.Module, dict[str, Any]]:
    """`load_checkpoint` of an already read file (`read_checkpoint_file`); `source` names it in
    errors."""
    from occ_ros.model.builders import build_from_config

    obj = _own_payload(obj, source)
    cfg = config_from_dict(ModelConfig, obj['config'])
    model = build_from_config(cfg)
    sd, _ = extract_state_dict(obj['state_dict'], source)
    _load_strict(model, _restore_dtypes(model, sd), source)
    return model.eval(), dict(obj['meta'])


def load_weights(model: nn.Module, path: PathLike) -> dict[str, Any]:
    """Load weights from either format into an existing model (strict). Returns the info dict
    of `load_official_checkpoint`, with format 'occ_ros' for this project's files."""
    obj = read_checkpoint_file(path)
    if isinstance(obj, Mapping) and obj.get('format') == FORMAT:
        obj = _own_payload(obj, str(path))
        sd, _ = extract_state_dict(obj['state_dict'], str(path))
        _load_strict(model, _restore_dtypes(model, sd), str(path))
        return {'format': 'occ_ros', 'num_tensors': len(sd), 'meta': dict(obj['meta'])}
    return load_official_payload(model, obj, str(path))
