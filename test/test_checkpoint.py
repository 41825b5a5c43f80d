"""Checkpoints: official formats (strict, weights-only, safe) and the occ_ros format."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import CheckpointError
from occ_ros.model import (
    FORMAT, MODEL_NAMES, build_model, config_from_dict, config_to_dict, load_checkpoint,
    load_official_checkpoint, load_weights, model_config, save_checkpoint)

REFERENCE = Path(__file__).resolve().parent / 'data' / 'flashocc_pano_tiny_keys.json'


def tiny_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def random_like(sd: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point()
                else torch.randint(0, 1000, v.shape, generator=g, dtype=v.dtype))
            for k, v in sd.items()}


def assert_state_equal(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert torch.equal(own[k], v.to(own[k].dtype)), k


class _RunsCode:
    """Unpickling this calls os.mkdir(target): proof that code would have run."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


# ------------------------------------------------------------------------------ official formats
def test_official_key_list_checkpoint_fills_pano_tiny(tmp_path):
    entries = json.loads(REFERENCE.read_text())
    g = torch.Generator().manual_seed(0)
    sd = {}
    for e in entries:
        if e['key'].endswith('num_batches_tracked'):
            sd[e['key']] = torch.randint(1, 10**6, tuple(e['shape']), generator=g)
        else:
            sd[e['key']] = torch.randn(tuple(e['shape']), generator=g)
    path = tmp_path / 'panoptic-flashocc-r50-depth-tiny-pano.pth'
    torch.save({'meta': {'mmcv_version': '1.5.3', 'epoch': 24, 'seed': np.int64(0),
                         'lr': np.float64(1e-4), 'CLASSES': ('car', 'truck')},
                'state_dict': sd}, path)
    model = build_model('pano-tiny')
    info = load_official_checkpoint(model, path)
    assert info['format'] == 'mmcv' and info['num_tensors'] == 586 == len(entries)
    assert info['meta']['epoch'] == 24
    assert_state_equal(model, sd)                     # every parameter and buffer was filled
    for name, p in model.named_parameters():
        assert torch.equal(p, sd[name]), name


def test_ema_bare_and_module_prefix_formats(tmp_path):
    src = random_like(tiny_module().state_dict())
    cases = {
        'ema': {'epoch': 24, 'state_dict': src, 'updates': 12345},
        'mmcv': {'meta': {'epoch': 3}, 'state_dict': {'module.' + k: v for k, v in src.items()},
                 'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1}]}},
        'bare': dict(src),
    }
    for fmt, obj in cases.items():
        path = tmp_path / f'{fmt}.pth'
        torch.save(obj, path)
        model = tiny_module()
        info = load_official_checkpoint(model, path)
        assert info['format'] == fmt
        assert_state_equal(model, src)
    assert load_official_checkpoint(tiny_module(), tmp_path / 'ema.pth')['meta'] == {
        'epoch': 24, 'updates': 12345}


def test_code_executing_pickles_are_refused(tmp_path):
    marker = tmp_path / 'code_ran'
    zipped = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'payload': _RunsCode(str(marker))}, zipped)
    legacy = tmp_path / 'evil_legacy.pth'                          # pre-1.6 torch.save format
    torch.save({'payload': _RunsCode(str(marker))}, legacy, _use_new_zipfile_serialization=False)
    plain = []
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        plain.append(tmp_path / f'evil_p{protocol}.pkl')
        with open(plain[-1], 'wb') as f:
            pickle.dump({'state_dict': {}, 'payload': _RunsCode(str(marker))}, f,
                        protocol=protocol)
    for path in (zipped, legacy, *plain):
        with pytest.raises(CheckpointError, match='code execution'):
            load_official_checkpoint(tiny_module(), path)
        with pytest.raises(CheckpointError, match='code execution'):
            load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match='posix.mkdir|os.mkdir|mkdir'):
        load_official_checkpoint(tiny_module(), zipped)


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_official_checkpoint(tiny_module(), tmp_path / 'nope.pth')
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'definitely not a checkpoint')
    with pytest.raises(CheckpointError, match='not a (PyTorch|torch.save) checkpoint'):
        load_official_checkpoint(tiny_module(), junk)
    with pytest.raises(CheckpointError, match='not found'):
        load_official_checkpoint(tiny_module(), tmp_path)          # a directory
    listed = tmp_path / 'list.pth'
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match='top level'):
        load_official_checkpoint(tiny_module(), listed)
    mixed = tmp_path / 'mixed.pth'
    torch.save({'state_dict': {'0.weight': torch.zeros(1), 'note': 'hello'}}, mixed)
    with pytest.raises(CheckpointError, match='not tensors'):
        load_official_checkpoint(tiny_module(), mixed)


def test_strict_mismatch_lists_all_three_groups(tmp_path):
    model = tiny_module()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = random_like(model.state_dict())
    del sd['1.running_var']                                         # missing
    sd['2.extra.weight'] = torch.zeros(3)                           # unexpected
    sd['3.weight'] = torch.zeros(5, 4)                              # wrong shape (2, 4)
    path = tmp_path / 'bad.pth'
    torch.save({'meta': {}, 'state_dict': sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(model, path)
    msg = str(err.value)
    assert '1 missing keys, 1 unexpected keys, 1 shape mismatches' in msg
    assert 'missing keys (1): 1.running_var' in msg
    assert 'unexpected keys (1): 2.extra.weight' in msg
    assert '3.weight: checkpoint (5, 4) vs model (2, 4)' in msg
    for k, v in model.state_dict().items():                        # nothing half-loaded
        assert torch.equal(v, before[k]), k


def test_long_mismatch_lists_are_truncated_with_counts(tmp_path):
    sd = random_like(tiny_module().state_dict())
    sd.update({f'extra.{i:02d}': torch.zeros(1) for i in range(50)})
    path = tmp_path / 'many.pth'
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(tiny_module(), path)
    msg = str(err.value)
    assert 'unexpected keys (50)' in msg and '… and 30 more' in msg
    assert 'extra.19' in msg and 'extra.20' not in msg


def test_panoptic_checkpoint_into_semantic_model_hints(tmp_path):
    small = dict(backbone_out_indices=(2,))
    path = tmp_path / 'pano.pth'
    torch.save({'state_dict': build_model('lite', **small).state_dict()}, path)
    with pytest.raises(CheckpointError, match='centerness head: build the panoptic'):
        load_official_checkpoint(build_model('lite', centerness=False, **small), path)


# ------------------------------------------------------------------------------ own format
def _perturbed_lite() -> nn.Module:
    model = build_model('lite', backbone_out_indices=(2,))
    sd = random_like(model.state_dict(), seed=5)
    model.load_state_dict(sd)
    return model


def _walk_plain(value) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            _walk_plain(v)
    elif isinstance(value, list):
        for v in value:
            _walk_plain(v)
    else:
        assert value is None or isinstance(value, (bool, int, float, str)), repr(value)


def test_own_format_round_trip(tmp_path):
    model = _perturbed_lite()
    path = save_checkpoint(model, tmp_path / 'sub' / 'lite.pt',
                           extra={'epoch': 7, 'miou': 12.5, 'tags': ['a', 'b'],
                                  'ema_scale': torch.tensor(0.5)})
    raw = torch.load(path, map_location='cpu', weights_only=True)          # plain weights-only
    assert raw['format'] == FORMAT and raw['format_version'] == 1
    _walk_plain(raw['config'])
    loaded, meta = load_checkpoint(path)
    assert loaded.cfg == model.cfg and not loaded.training
    assert_state_equal(loaded, model.state_dict())
    assert meta['epoch'] == 7 and meta['tags'] == ['a', 'b'] and meta['model_name'] == 'lite'
    assert meta['storage_dtype'] == 'float32' and float(meta['ema_scale']) == 0.5
    fresh = build_model('lite', backbone_out_indices=(2,))
    assert load_weights(fresh, path)['format'] == 'occ_ros'
    assert_state_equal(fresh, model.state_dict())
    assert not list(path.parent.glob('*.tmp'))


def test_own_format_fp16_storage(tmp_path):
    model = _perturbed_lite()
    full = save_checkpoint(model, tmp_path / 'fp32.pt')
    half = save_checkpoint(model, tmp_path / 'fp16.pt', fp16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = torch.load(half, map_location='cpu', weights_only=True)['state_dict']
    assert stored['occ_head.predicter.0.weight'].dtype == torch.float16
    loaded, meta = load_checkpoint(half)
    assert meta['storage_dtype'] == 'float16'
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == v.dtype, k
        want = v.half().to(v.dtype) if v.is_floating_point() else v
        assert torch.equal(got, want), k


def test_own_format_rejections(tmp_path):
    official = tmp_path / 'official.pth'
    torch.save({'meta': {}, 'state_dict': tiny_module().state_dict()}, official)
    with pytest.raises(CheckpointError, match='load_official_checkpoint'):
        load_checkpoint(official)
    model = build_model('lite', backbone_out_indices=(2,))
    path = save_checkpoint(model, tmp_path / 'ok.pt')
    obj = torch.load(path, weights_only=True)
    obj['format_version'] = 99
    torch.save(obj, tmp_path / 'future.pt')
    with pytest.raises(CheckpointError, match='format_version 99'):
        load_checkpoint(tmp_path / 'future.pt')
    obj['format_version'] = 1
    obj['config']['warp_drive'] = True
    torch.save(obj, tmp_path / 'unknown.pt')
    with pytest.raises(CheckpointError, match='warp_drive'):
        load_checkpoint(tmp_path / 'unknown.pt')
    with pytest.raises(CheckpointError, match='cannot be stored'):
        save_checkpoint(model, tmp_path / 'bad.pt', extra={'where': Path('/tmp')})
    with pytest.raises(CheckpointError, match='cannot be stored'):
        save_checkpoint(model, tmp_path / 'bad.pt', extra={'arr': np.zeros(3)})
    with pytest.raises(CheckpointError, match='ModelConfig'):
        save_checkpoint(tiny_module(), tmp_path / 'bad.pt')


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_config_round_trip(name):
    cfg = model_config(name)
    data = config_to_dict(cfg)
    assert json.loads(json.dumps(data)) == data                     # plain data only
    back = config_from_dict(ModelConfig, data)
    assert back == cfg and hash(back) == hash(cfg)
    with pytest.raises(CheckpointError):
        config_from_dict(ModelConfig, {**data, 'backbone_depth': 'fifty'})
