"""The content-addressed TensorRT engine cache, tested without a GPU.

The cache takes the builder and the platform identity (TensorRT version, GPU name, compute
capability) as injected objects. `FakeBuilder` below is a stand-in for the TensorRT builder — a
mock for hardware this machine does not have — so every cache path (keys, atomic writes, stale /
foreign / corrupt detection, timing-cache handling, locking) runs here against real files.
The real builder (`TensorRTEngineBuilder`) is type-checked against the TensorRT stubs in
test_tensorrt_code.py and needs a GPU to run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import pytest
from onnx import TensorProto, helper

from occ_ros.apps import build_engine
from occ_ros.backends import engine_cache as ec
from occ_ros.backends.engine_cache import (BuildResult, EngineCache, EngineKey, PlatformInfo,
                                           atomic_write, make_key, onnx_facts)
from occ_ros.core.errors import BackendError, EngineCacheError

RTX3090 = PlatformInfo('10.13.0.35', 'NVIDIA GeForce RTX 3090', (8, 6))
ORIN = PlatformInfo('10.3.0.30', 'Orin', (8, 7))


def tiny_onnx(path: Path, *, scale: float = 2.0, precision: Optional[str] = None,
              dynamic: bool = False) -> Path:
    """A one-node graph y = x * scale with a static (1, 3, 4) input (or a dynamic batch)."""
    dims = ['batch' if dynamic else 1, 3, 4]
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, dims)
    s = helper.make_tensor('s', TensorProto.FLOAT, [], [scale])
    graph = helper.make_graph([helper.make_node('Mul', ['x', 's'], ['y'])], 'g', [x], [y], [s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    if precision:
        model.metadata_props.add(key='occ_ros.precision', value=precision)
    path.write_bytes(model.SerializeToString())
    return path


class FakeBuilder:
    """Stand-in for the TensorRT builder (no GPU here): the 'engine' is derived from the key,
    the 'timing cache' grows by one line per build, and every call is recorded."""

    def __init__(self) -> None:
        self.builds: list[tuple[EngineKey, Optional[bytes]]] = []
        self.merges: list[tuple[bytes, bytes]] = []
        self.during_build = None          # optional hook run inside build()
        self.fail: Optional[Exception] = None

    def build(self, onnx_path, onnx_bytes, key, timing_cache, progress):
        if self.fail is not None:
            raise self.fail
        progress(f'fake build of {onnx_path.name}')
        self.builds.append((key, timing_cache))
        if self.during_build is not None:
            self.during_build()
        engine = b'PLAN' + key.digest().encode() + onnx_bytes[:16]
        timing = (timing_cache or b'') + f'{key.onnx_sha256[:8]}\n'.encode()
        return BuildResult(engine=engine, timing_cache=timing)

    def merge_timing_caches(self, on_disk, ours):
        self.merges.append((on_disk, ours))
        return b'MERGED\n' + on_disk + ours


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / 'model.onnx')


def cache_for(directory: Path, platform: PlatformInfo = RTX3090, builder=None, **kw) -> EngineCache:
    return EngineCache(directory, platform, builder if builder is not None else FakeBuilder(),
                       progress=lambda line: None, **kw)


# ---- keys --------------------------------------------------------------------------------------
def test_every_key_field_changes_the_digest_and_the_file_name(tmp_path: Path):
    bounds = {'x': ((1, 3, 4),) * 3}
    base = make_key(b'onnx-bytes', RTX3090, 'fp16', bounds)
    variants = {
        'onnx bytes': make_key(b'onnx-bytes!', RTX3090, 'fp16', bounds),
        'tensorrt version': make_key(b'onnx-bytes', replace(RTX3090, tensorrt_version='10.14.1.48'), 'fp16', bounds),
        'gpu name': make_key(b'onnx-bytes', replace(RTX3090, gpu_name='NVIDIA A100'), 'fp16', bounds),
        'compute capability': make_key(b'onnx-bytes', replace(RTX3090, compute_capability=(8, 9)), 'fp16', bounds),
        'precision': make_key(b'onnx-bytes', RTX3090, 'fp32', bounds),
        'shape bounds': make_key(b'onnx-bytes', RTX3090, 'fp16', {'x': ((1, 3, 4), (1, 3, 4), (2, 3, 4))}),
        'input name': make_key(b'onnx-bytes', RTX3090, 'fp16', {'z': ((1, 3, 4),) * 3}),
        'tf32': make_key(b'onnx-bytes', RTX3090, 'fp16', bounds, tf32=True),
    }
    cache = cache_for(tmp_path)
    digests = {base.digest()} | {k.digest() for k in variants.values()}
    assert len(digests) == len(variants) + 1
    names = {cache.paths_for('m.onnx', k).engine.name for k in [base, *variants.values()]}
    assert len(names) == len(variants) + 1
    for what, key in variants.items():
        assert base.mismatches(key), what                      # and the sidecar check sees it
    assert base.mismatches(base) == []
    # field order / dict order do not matter; the key round-trips through its JSON fields
    assert EngineKey.from_fields(json.loads(json.dumps(base.fields()))) == base
    assert make_key(b'onnx-bytes', RTX3090, 'fp16', dict(reversed(list({**bounds, 'a': ((1,),) * 3}.items())))) \
        == make_key(b'onnx-bytes', RTX3090, 'fp16', {'a': ((1,),) * 3, **bounds})


def test_key_rejects_unknown_precision():
    with pytest.raises(EngineCacheError, match='precision'):
        make_key(b'x', RTX3090, 'int8', {})


def test_onnx_facts_static_bounds_precision_and_dynamic_refusal(tmp_path: Path):
    prec, bounds = onnx_facts(tiny_onnx(tmp_path / 'a.onnx').read_bytes())
    assert prec == 'fp32' and bounds == {'x': ((1, 3, 4), (1, 3, 4), (1, 3, 4))}
    prec, _ = onnx_facts(tiny_onnx(tmp_path / 'b.onnx', precision='fp16').read_bytes())
    assert prec == 'fp16'
    with pytest.raises(EngineCacheError, match='dynamic'):
        onnx_facts(tiny_onnx(tmp_path / 'c.onnx', dynamic=True).read_bytes())


def test_paths_engine_sidecar_and_timing_cache_live_side_by_side(tmp_path: Path, onnx_file: Path):
    cache = cache_for(tmp_path / 'engines')
    key = cache.key_for(onnx_file.read_bytes())
    p = cache.paths_for(onnx_file, key)
    assert p.engine.parent == p.sidecar.parent == p.timing_cache.parent == tmp_path / 'engines'
    assert p.engine.name == f'model.fp32.{key.digest()[:20]}.engine'
    assert p.sidecar.name == p.engine.name + '.json'
    # one timing cache per TensorRT version and device, shared by every model on it
    assert p.timing_cache.name == 'timing-trt10-13-0-35-nvidia-geforce-rtx-3090-sm86.cache'
    other = cache_for(tmp_path / 'engines', ORIN)
    q = other.paths_for(onnx_file, other.key_for(onnx_file.read_bytes()))
    assert q.timing_cache != p.timing_cache and q.engine != p.engine


# ---- load / build ------------------------------------------------------------------------------
def test_build_once_then_hit_and_sidecar_records_the_key(tmp_path: Path, onnx_file: Path):
    builder = FakeBuilder()
    cache = cache_for(tmp_path, builder=builder)
    first = cache.load(onnx_file)
    assert first.built and len(builder.builds) == 1
    side = json.loads(first.paths.sidecar.read_text())
    assert side['key'] == first.key.fields()
    assert side['engine_size'] == len(first.engine) == first.paths.engine.stat().st_size
    assert side['engine_sha256'] == ec.hashlib.sha256(first.engine).hexdigest()
    second = cache_for(tmp_path, builder=builder).load(onnx_file)
    assert not second.built and second.engine == first.engine and len(builder.builds) == 1
    assert cache.status(onnx_file)[:2] == (True, 'valid')


def test_changed_onnx_gets_its_own_engine(tmp_path: Path):
    builder = FakeBuilder()
    cache = cache_for(tmp_path / 'e', builder=builder)
    a = cache.load(tiny_onnx(tmp_path / 'm.onnx', scale=2.0))
    b = cache.load(tiny_onnx(tmp_path / 'm.onnx', scale=3.0))     # same file name, new bytes
    assert b.built and a.paths.engine != b.paths.engine and len(builder.builds) == 2
    assert a.paths.engine.exists() and b.paths.engine.exists()


def _plant_foreign_engine(tmp_path: Path, onnx_file: Path, built_on: PlatformInfo,
                          used_on: PlatformInfo) -> tuple[EngineCache, Path]:
    """Build on one platform, then put that engine where another platform looks for its own."""
    src = cache_for(tmp_path / 'src', built_on).load(onnx_file)
    dst_cache = cache_for(tmp_path / 'dst', used_on)
    dst = dst_cache.paths_for(onnx_file, dst_cache.key_for(onnx_file.read_bytes()))
    dst.engine.parent.mkdir(parents=True, exist_ok=True)
    dst.engine.write_bytes(src.paths.engine.read_bytes())
    dst.sidecar.write_bytes(src.paths.sidecar.read_bytes())
    return dst_cache, dst.engine


@pytest.mark.parametrize('field,other', [
    ('gpu_name', replace(RTX3090, gpu_name='NVIDIA RTX A6000')),
    ('tensorrt_version', replace(RTX3090, tensorrt_version='10.14.1.48')),
    ('compute_capability', replace(RTX3090, compute_capability=(8, 9))),
])
def test_foreign_engine_is_detected_then_rebuilt_or_refused(tmp_path: Path, onnx_file: Path, field, other):
    cache, engine = _plant_foreign_engine(tmp_path, onnx_file, RTX3090, other)
    ok, reason, _ = cache.status(onnx_file)
    assert not ok and field in reason
    refuse = EngineCache(cache.directory, other, FakeBuilder(), allow_build=False)
    with pytest.raises(EngineCacheError, match=field) as err:
        refuse.load(onnx_file)
    assert 'occ-ros build-engine' in str(err.value)
    planted_key = json.loads(engine.with_name(engine.name + '.json').read_text())['key']
    loaded = cache.load(onnx_file)                                   # allow_build: rebuilt
    assert loaded.built and loaded.key.fields()[field] != planted_key[field]
    assert cache.status(onnx_file)[:2] == (True, 'valid')


@pytest.mark.parametrize('damage,expect', [
    ('truncate', 'truncated'),
    ('flip', 'sha256'),
    ('no-sidecar', 'sidecar'),
    ('bad-sidecar', 'unreadable'),
    ('sidecar-format', 'format'),
    ('no-engine', 'no engine file'),
])
def test_corrupt_or_incomplete_engine_is_never_returned(tmp_path: Path, onnx_file: Path, damage, expect):
    builder = FakeBuilder()
    good = cache_for(tmp_path, builder=builder).load(onnx_file)
    p = good.paths
    if damage == 'truncate':
        p.engine.write_bytes(good.engine[:-7])
    elif damage == 'flip':
        data = bytearray(good.engine)
        data[5] ^= 0xFF
        p.engine.write_bytes(bytes(data))
    elif damage == 'no-sidecar':
        p.sidecar.unlink()
    elif damage == 'bad-sidecar':
        p.sidecar.write_text('{"format": 1, "key": ')
    elif damage == 'sidecar-format':
        side = json.loads(p.sidecar.read_text())
        side['format'] = 99
        p.sidecar.write_text(json.dumps(side))
    elif damage == 'no-engine':
        p.engine.unlink()
    ok, reason, _ = cache_for(tmp_path).status(onnx_file)
    assert not ok and expect in reason
    with pytest.raises(EngineCacheError, match=expect):
        EngineCache(tmp_path, RTX3090, builder, allow_build=False).load(onnx_file)
    with pytest.raises(EngineCacheError, match=expect):
        EngineCache(tmp_path, RTX3090, None).load(onnx_file)          # no builder = no building
    rebuilt = cache_for(tmp_path, builder=builder).load(onnx_file)
    assert rebuilt.built and rebuilt.engine == good.engine and len(builder.builds) == 2


def test_force_rebuild_and_invalidate(tmp_path: Path, onnx_file: Path):
    builder = FakeBuilder()
    cache = cache_for(tmp_path, builder=builder)
    first = cache.load(onnx_file)
    assert cache.load(onnx_file, force_rebuild=True).built and len(builder.builds) == 2
    cache.invalidate(first.paths)
    assert not first.paths.engine.exists() and not first.paths.sidecar.exists()
    with pytest.raises(EngineCacheError, match='disabled'):
        EngineCache(tmp_path, RTX3090, builder, allow_build=False).load(onnx_file, force_rebuild=True)


def test_builder_failures_become_engine_cache_errors(tmp_path: Path, onnx_file: Path):
    builder = FakeBuilder()
    builder.fail = RuntimeError('parser: unsupported node ScatterND')
    with pytest.raises(EngineCacheError, match='ScatterND'):
        cache_for(tmp_path, builder=builder).load(onnx_file)
    assert not list(tmp_path.glob('*.engine'))
    builder.fail = BackendError('already actionable')
    with pytest.raises(BackendError, match='already actionable'):
        cache_for(tmp_path, builder=builder).load(onnx_file)


def test_missing_onnx_is_a_clear_error(tmp_path: Path):
    with pytest.raises(EngineCacheError, match='cannot read ONNX'):
        cache_for(tmp_path).load(tmp_path / 'nope.onnx')


# ---- atomic writes -------------------------------------------------------------------------------
def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch):
    target = tmp_path / 'x.engine'
    atomic_write(target, b'old contents')

    def broken_fsync(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(ec.os, 'fsync', broken_fsync)
    with pytest.raises(OSError, match='No space'):
        atomic_write(target, b'new contents that never land')
    assert target.read_bytes() == b'old contents'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['x.engine']


def test_hard_crash_mid_write_never_exposes_a_partial_engine(tmp_path: Path, onnx_file: Path):
    """A process killed between writing and renaming (os._exit: no cleanup runs) leaves only a
    hidden temp file; the cache treats the engine as absent and can purge the leftover."""
    cache = cache_for(tmp_path)
    p = cache.paths_for(onnx_file, cache.key_for(onnx_file.read_bytes()))
    script = textwrap.dedent(f'''
        import os
        from occ_ros.backends import engine_cache as ec
        ec.os.replace = lambda *a: os._exit(9)          # die right before the rename
        ec.atomic_write(ec.Path({str(p.engine)!r}), b'x' * 100000)
    ''')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    assert not p.engine.exists()
    leftovers = list(tmp_path.glob('.*.tmp'))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 100000
    ok, reason, _ = cache.status(onnx_file)
    assert not ok and 'no engine file' in reason
    assert cache.purge_temp_files() == 1 and not list(tmp_path.glob('.*.tmp'))


def test_crash_between_engine_and_sidecar_is_detected(tmp_path: Path, onnx_file: Path, monkeypatch):
    builder = FakeBuilder()
    cache = cache_for(tmp_path, builder=builder)
    real = ec.atomic_write

    def die_on_sidecar(path, data):
        if str(path).endswith('.json'):
            raise KeyboardInterrupt('killed')
        real(path, data)

    monkeypatch.setattr(ec, 'atomic_write', die_on_sidecar)
    with pytest.raises(KeyboardInterrupt):
        cache.load(onnx_file)
    monkeypatch.setattr(ec, 'atomic_write', real)
    ok, reason, paths = cache.status(onnx_file)
    assert paths.engine.exists() and not ok and 'sidecar' in reason
    assert cache.load(onnx_file).built and len(builder.builds) == 2


# ---- timing cache --------------------------------------------------------------------------------
def test_timing_cache_is_loaded_saved_and_merged(tmp_path: Path):
    builder = FakeBuilder()
    cache = cache_for(tmp_path / 'e', builder=builder)
    a = cache.load(tiny_onnx(tmp_path / 'a.onnx', scale=2.0))
    assert builder.builds[0][1] is None                                 # first build: empty cache
    saved = a.paths.timing_cache.read_bytes()
    assert saved.endswith(f'{a.key.onnx_sha256[:8]}\n'.encode())
    b = cache.load(tiny_onnx(tmp_path / 'b.onnx', scale=3.0))
    assert builder.builds[1][1] == saved                                # second build reuses it
    assert b.paths.timing_cache.read_bytes().startswith(saved) and not builder.merges
    # another process saves the timing cache while we build → merged, not overwritten
    builder.during_build = lambda: atomic_write(b.paths.timing_cache, b'OTHER\n')
    cache.load(tiny_onnx(tmp_path / 'c.onnx', scale=4.0))
    assert len(builder.merges) == 1 and builder.merges[0][0] == b'OTHER\n'
    assert b.paths.timing_cache.read_bytes().startswith(b'MERGED\nOTHER\n')


def test_timing_cache_merge_failure_keeps_ours(tmp_path: Path, onnx_file: Path):
    builder = FakeBuilder()
    builder.merge_timing_caches = lambda on_disk, ours: (_ for _ in ()).throw(RuntimeError('version'))
    cache = cache_for(tmp_path, builder=builder)
    key = cache.key_for(onnx_file.read_bytes())
    timing = cache.paths_for(onnx_file, key).timing_cache
    builder.during_build = lambda: atomic_write(timing, b'FOREIGN\n')
    cache.load(onnx_file)
    assert timing.read_bytes() == f'{key.onnx_sha256[:8]}\n'.encode()


# ---- concurrency -------------------------------------------------------------------------------
def test_concurrent_loads_build_once(tmp_path: Path, onnx_file: Path):
    builder = FakeBuilder()
    builder.during_build = lambda: time.sleep(0.3)
    results = []

    def worker():
        results.append(cache_for(tmp_path, builder=builder).load(onnx_file))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 3 and len(builder.builds) == 1
    assert sum(r.built for r in results) == 1
    assert len({r.engine for r in results}) == 1


# ---- CLI -------------------------------------------------------------------------------------------
def test_build_engine_cli_parses_and_explains_missing_tensorrt(tmp_path: Path, onnx_file: Path):
    parser = argparse.ArgumentParser()
    build_engine.add_arguments(parser)
    args = parser.parse_args(['--onnx', str(onnx_file), '--out', str(tmp_path / 'e'),
                              '--workspace-mib', '512'])
    assert args.onnx == onnx_file and args.workspace_mib == 512 and not args.force
    from occ_ros.backends.factory import probe_availability
    if probe_availability().tensorrt:
        pytest.skip('tensorrt is installed here; the no-TensorRT message cannot be exercised')
    with pytest.raises(BackendError, match='tensorrt'):
        build_engine.run(args)


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv('OCC_ROS_ENGINE_DIR', str(tmp_path / 'x'))
    assert ec.default_cache_dir() == tmp_path / 'x'
    monkeypatch.delenv('OCC_ROS_ENGINE_DIR')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert ec.default_cache_dir() == tmp_path / 'xdg' / 'occ_ros' / 'engines'


def test_read_sidecar(tmp_path: Path, onnx_file: Path):
    loaded = cache_for(tmp_path).load(onnx_file)
    assert ec.read_sidecar(loaded.paths.engine)['engine_size'] == len(loaded.engine)
    with pytest.raises(EngineCacheError):
        ec.read_sidecar(loaded.paths.sidecar)
    assert os.path.basename(loaded.paths.sidecar) == loaded.paths.engine.name + '.json'


def test_tf32_is_off_by_default_and_older_engines_do_not_match() -> None:
    """TensorRT enables TF32 by default (BuilderFlag.TF32 docs: 'Enabled by default'); our keys
    default to off, and a sidecar written before the field existed (so built with the default)
    is reported as a mismatch instead of being reused."""
    bounds = {'x': ((1, 3, 4),) * 3}
    key = make_key(b'onnx-bytes', RTX3090, 'fp16', bounds)
    assert key.tf32 is False
    old = {k: v for k, v in key.fields().items() if k != 'tf32'}
    legacy = EngineKey.from_fields(old)
    assert legacy.tf32 is True
    assert any(m.startswith('tf32') for m in key.mismatches(legacy))
    with pytest.raises(ValueError, match='tf32'):
        EngineKey.from_fields({**key.fields(), 'tf32': 'yes'})
