"""Content-addressed cache of TensorRT engines, safe to share between runs, tools and machines.

An engine is only valid for the exact ONNX bytes, TensorRT version, GPU model and compute
capability, precision and input shapes it was built for. All of these form the `EngineKey`; its
SHA-256 names the engine file, so a different GPU or TensorRT simply looks up a different file:

    <dir>/<onnx-stem>.<precision>.<key-digest[:20]>.engine        the serialized engine
    <dir>/<onnx-stem>.<precision>.<key-digest[:20]>.engine.json   sidecar: key fields, engine sha256/size
    <dir>/timing-trt<version>-<gpu>-sm<cc>.cache                   TensorRT timing cache (per device)

Nothing is ever deserialized blindly: `EngineCache.load` reads the sidecar, checks every key field
against this machine and this ONNX, then checks the engine's size (a truncated copy) and SHA-256
(corruption) before handing the bytes to TensorRT. A missing, foreign, stale or corrupt engine is
rebuilt, or refused with `EngineCacheError` when building is disabled.

Files are written atomically (temp file in the same directory, fsync, `os.replace`, directory
fsync); the sidecar is written after the engine and acts as the commit record. Concurrent builders
of the same engine serialise on a lock file. The cache holds no TensorRT code: the builder, the
TensorRT version and the GPU identity are injected (`EngineBuilder`, `PlatformInfo`), so every
path here is tested without a GPU; `occ_ros.backends.tensorrt_backend` supplies the real ones.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Protocol, Union

from occ_ros.core.config import PRECISIONS
from occ_ros.core.errors import BackendError, EngineCacheError

if TYPE_CHECKING:
    pass

LOG = logging.getLogger('occ_ros.engine_cache')

CACHE_FORMAT = 1
ENGINE_SUFFIX = '.engine'
SIDECAR_SUFFIX = '.engine.json'
DEFAULT_CACHE_ENV = 'OCC_ROS_ENGINE_DIR'

Shape = tuple[int, ...]
ShapeBounds = Mapping[str, tuple[Shape, Shape, Shape]]      # name → (min, opt, max)
ProgressFn = Callable[[str], None]
NETWORK_TYPINGS = ('strong', 'weak')


def default_cache_dir() -> Path:
    """$OCC_ROS_ENGINE_DIR, else $XDG_CACHE_HOME/occ_ros/engines (~/.cache/occ_ros/engines)."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'occ_ros' / 'engines'


@dataclass(frozen=True)
class PlatformInfo:
    """What an engine is tied to besides its ONNX: the TensorRT build and the GPU."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    # TensorRT >= 10 builds strongly typed networks; 8.5/8.6 (JetPack 5.1 / 6.0) have no
    # STRONGLY_TYPED flag and build weakly typed ones (`tensorrt_compat.network_typing`)
    network_typing: str = 'strong'

    @property
    def cc(self) -> str:
        return f'{self.compute_capability[0]}.{self.compute_capability[1]}'


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on. `digest()` addresses the engine file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    shape_bounds: tuple[tuple[str, tuple[Shape, Shape, Shape]], ...]
    # TF32 for float32 tensors (10-bit mantissas in their matmuls/convs on Ampere and later): off
    # unless asked for, so the fp32 parts of the graph really run in fp32. An engine built before
    # this field existed had TensorRT's default (on) and no longer matches.
    tf32: bool = False
    # 'strong' (the graph's own types) or 'weak' (TensorRT 8.x: builder precision flags and
    # per-layer fp32 constraints). The same fp32 graph gives an fp32 engine either way, but an
    # fp16 engine only on the weak path; the field keeps the two kinds of plan apart.
    network_typing: str = 'strong'

    FIELDS = ('onnx_sha256', 'tensorrt_version', 'gpu_name', 'compute_capability', 'precision',
              'shape_bounds', 'tf32', 'network_typing')

    def fields(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return {
            'onnx_sha256': self.onnx_sha256,
            'tensorrt_version': self.tensorrt_version,
            'gpu_name': self.gpu_name,
            'compute_capability': self.compute_capability,
            'precision': self.precision,
            'shape_bounds': {name: [list(s) for s in b] for name, b in self.shape_bounds},
            'tf32': self.tf32,
            'network_typing': self.network_typing,
        }

    @classmethod
    def from_fields(cls, d: Mapping[str, Any]) -> 'EngineKey':
        """Inverse of `fields()`; raises ValueError on anything malformed."""
        try:
            bounds: list[tuple[str, tuple[Shape, Shape, Shape]]] = []
            for name, b in dict(d['shape_bounds']).items():
                lo, opt, hi = (tuple(int(v) for v in s) for s in b)
                bounds.append((str(name), (lo, opt, hi)))
            tf32 = d.get('tf32', True)             # sidecars from before the field: TensorRT's default
            if not isinstance(tf32, bool):
                raise ValueError(f'tf32 must be a boolean, got {tf32!r}')
            typing = d.get('network_typing', 'strong')      # sidecars from before the field: TensorRT >= 10
            if typing not in NETWORK_TYPINGS:
                raise ValueError(f'typing must be one of {NETWORK_TYPINGS}, got {typing!r}')
            return cls(str(d['onnx_sha256']), str(d['tensorrt_version']), str(d['gpu_name']),
                       str(d['compute_capability']), str(d['precision']), tuple(sorted(bounds)), tf32,
                       str(typing))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f'malformed engine key: {e!r}') from e

    def digest(self) -> str:
        blob = json.dumps(self.fields(), sort_keys=True, separators=(',', ':')).encode()
        return hashlib.sha256(blob).hexdigest()

    def mismatches(self, cached: 'EngineKey') -> list[str]:
        """Human-readable differences `cached` → `self` (empty when identical)."""
        mine, theirs = self.fields(), cached.fields()
        return [f'{f}: engine has {theirs[f]!r}, this machine/ONNX needs {mine[f]!r}'
                for f in self.FIELDS if mine[f] != theirs[f]]


def make_key(onnx_bytes: bytes, platform: PlatformInfo, precision: str,
             shape_bounds: ShapeBounds, tf32: bool = False) -> EngineKey:
    if precision not in PRECISIONS:
        raise EngineCacheError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    bounds = tuple(sorted((name, (tuple(b[0]), tuple(b[1]), tuple(b[2])))
                          for name, b in shape_bounds.items()))
    if platform.network_typing not in NETWORK_TYPINGS:
        raise EngineCacheError(f'network typing must be one of {NETWORK_TYPINGS}, got {platform.network_typing!r}')
    return EngineKey(hashlib.sha256(onnx_bytes).hexdigest(), platform.tensorrt_version,
                     platform.gpu_name, platform.cc, precision, bounds, bool(tf32), platform.network_typing)


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '-', text).strip('-').lower() or 'x'


@dataclass(frozen=True)
class EnginePaths:
    engine: Path
    sidecar: Path
    lock: Path
    timing_cache: Path


@dataclass(frozen=True)
class BuildResult:
    """What an `EngineBuilder` returns: the plan bytes and the (possibly grown) timing cache."""

    engine: bytes
    timing_cache: Optional[bytes]


class EngineBuilder(Protocol):
    """Builds serialized engines; the TensorRT implementation is `TensorRTEngineBuilder`."""

    def build(self, onnx_path: Path, onnx_bytes: bytes, key: EngineKey,
              timing_cache: Optional[bytes], progress: ProgressFn) -> BuildResult:
        """Parse + build. `timing_cache` is the cache file's content (None = start empty)."""
        ...

    def merge_timing_caches(self, on_disk: bytes, ours: bytes) -> bytes:
        """Combine the timing cache another build saved meanwhile with ours."""
        ...


@dataclass(frozen=True)
class LoadedEngine:
    """A verified serialized engine, ready for `Runtime.deserialize_cuda_engine`."""

    engine: bytes
    key: EngineKey
    paths: EnginePaths
    built: bool                 # True when this call built it (False = cache hit)


class StaleEngine(EngineCacheError):
    """A cached engine that must not be deserialized; `.reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f'cached engine {path} is unusable: {reason}')
        self.path = path
        self.reason = reason


# ---- file primitives ---------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or all of the new one.

    The bytes go to a hidden temp file in the same directory (same filesystem), are flushed and
    fsynced, then renamed over `path` with `os.replace`; the directory is fsynced so the rename is
    durable. On any error the temp file is removed; after a hard crash it stays behind under a
    hidden `.tmp` name that no lookup ever reads (`EngineCache.purge_temp_files` removes them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive advisory lock (flock) held for the duration of the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, 'a+b') as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of the file at `path`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


# ---- ONNX facts ----------------------------------------------------------------------------------
def onnx_facts(onnx_bytes: bytes) -> tuple[str, dict[str, tuple[Shape, Shape, Shape]]]:
    """(precision, shape bounds) of an exported graph.

    Precision comes from the `occ_ros.precision` metadata the exporter writes, else fp16 when any
    graph input or initializer is float16. Static inputs give min = opt = max; a dynamic input
    raises EngineCacheError (pass explicit bounds to `EngineCache.load`).
    """
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    meta = {p.key: p.value for p in proto.metadata_props}
    precision = meta.get('occ_ros.precision')
    if precision is None:
        fp16 = onnx.TensorProto.FLOAT16
        precision = 'fp16' if (any(t.data_type == fp16 for t in proto.graph.initializer)
                               or any(i.type.tensor_type.elem_type == fp16 for i in proto.graph.input)) \
            else 'fp32'
    inits = {t.name for t in proto.graph.initializer}
    bounds: dict[str, tuple[Shape, Shape, Shape]] = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not all(d.HasField('dim_value') for d in dims):
            raise EngineCacheError(
                f'ONNX input {vi.name!r} has dynamic dimensions: pass shape_bounds (min, opt, max) '
                'for it, or export with static shapes (`occ-ros export` does)')
        shape = tuple(int(d.dim_value) for d in dims)
        bounds[vi.name] = (shape, shape, shape)
    return precision, bounds


# ---- the cache -------------------------------------------------------------------------------
class EngineCache:
    """Look up, verify, build and store engines for one platform in one directory.

    directory: where engines, sidecars and the timing cache live (created on demand).
    platform: this machine's TensorRT version and GPU (`tensorrt_backend.detect_platform`).
    builder: builds missing/stale engines; None = never build (like allow_build=False).
    allow_build: False → a missing or unusable engine raises EngineCacheError instead of a build.
    tf32: build with TF32 allowed for float32 tensors (part of the key; default off).
    """

    def __init__(self, directory: Union[str, Path], platform: PlatformInfo,
                 builder: Optional[EngineBuilder] = None, *, allow_build: bool = True,
                 progress: Optional[ProgressFn] = None, tf32: bool = False) -> None:
        self.tf32 = bool(tf32)
        self.directory = Path(directory).expanduser()
        self.platform = platform
        self.builder = builder
        self.allow_build = allow_build and builder is not None
        self._progress = progress or (lambda line: LOG.info('%s', line))

    # -- naming --------------------------------------------------------------------------------
    def key_for(self, onnx_bytes: bytes, *, precision: Optional[str] = None,
                shape_bounds: Optional[ShapeBounds] = None) -> EngineKey:
        """The key of `onnx_bytes` on this platform; precision/bounds default to the graph's."""
        if precision is None or shape_bounds is None:
            graph_precision, graph_bounds = onnx_facts(onnx_bytes)
            precision = precision or graph_precision
            shape_bounds = graph_bounds if shape_bounds is None else shape_bounds
        return make_key(onnx_bytes, self.platform, precision, shape_bounds, self.tf32)

    def paths_for(self, onnx_path: Union[str, Path], key: EngineKey) -> EnginePaths:
        stem = f'{_slug(Path(onnx_path).stem)}.{key.precision}.{key.digest()[:20]}'
        p = self.platform
        timing = (f'timing-trt{_slug(p.tensorrt_version)}-{_slug(p.gpu_name)}-'
                  f'sm{p.compute_capability[0]}{p.compute_capability[1]}.cache')
        return EnginePaths(engine=self.directory / (stem + ENGINE_SUFFIX),
                           sidecar=self.directory / (stem + SIDECAR_SUFFIX),
                           lock=self.directory / (stem + '.lock'),
                           timing_cache=self.directory / timing)

    # -- verification ----------------------------------------------------------------------------
    def verify(self, paths: EnginePaths, key: EngineKey) -> bytes:
        """Return the engine bytes if the sidecar and the file prove they are this key's engine.

        Raises StaleEngine (an EngineCacheError) with the reason otherwise. The bytes returned are
        the ones hashed, so nothing can change between the check and the deserialization.
        """
        if not paths.engine.exists():
            raise StaleEngine(paths.engine, 'no engine file (not built yet)')
        if not paths.sidecar.exists():
            raise StaleEngine(paths.engine, f'its sidecar {paths.sidecar.name} is missing (interrupted '
                                            'build or copied without it)')
        try:
            side = json.loads(paths.sidecar.read_text())
            if not isinstance(side, dict):
                raise ValueError('not a JSON object')
            cached_key = EngineKey.from_fields(side['key'])
            size = int(side['engine_size'])
            sha = str(side['engine_sha256'])
            fmt = int(side['format'])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StaleEngine(paths.engine, f'sidecar {paths.sidecar.name} is unreadable: {e}') from None
        if fmt != CACHE_FORMAT:
            raise StaleEngine(paths.engine, f'sidecar format {fmt} != {CACHE_FORMAT}')
        diffs = key.mismatches(cached_key)
        if diffs:
            raise StaleEngine(paths.engine, 'built for something else: ' + '; '.join(diffs))
        data = paths.engine.read_bytes()
        if len(data) != size:
            raise StaleEngine(paths.engine, f'size {len(data)} bytes != {size} recorded at build time '
                                            '(truncated or partial copy)')
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            raise StaleEngine(paths.engine, f'sha256 {digest[:16]}… != {sha[:16]}… recorded at build '
                                            'time (corrupted)')
        return data

    def status(self, onnx_path: Union[str, Path], precision: Optional[str] = None
               ) -> tuple[bool, str, EnginePaths]:
        """(usable, reason, paths) for the engine of `onnx_path` on this platform; never builds."""
        onnx_bytes = Path(onnx_path).read_bytes()
        key = self.key_for(onnx_bytes, precision=precision)
        paths = self.paths_for(onnx_path, key)
        try:
            self.verify(paths, key)
        except StaleEngine as e:
            return False, e.reason, paths
        return True, 'valid', paths

    # -- load / build ----------------------------------------------------------------------------
    def load(self, onnx_path: Union[str, Path], *, precision: Optional[str] = None,
             shape_bounds: Optional[ShapeBounds] = None, force_rebuild: bool = False) -> LoadedEngine:
        """Verified engine bytes for `onnx_path`, building (under a lock) when needed."""
        onnx_path = Path(onnx_path)
        try:
            onnx_bytes = onnx_path.read_bytes()
        except OSError as e:
            raise EngineCacheError(f'cannot read ONNX model {onnx_path}: {e}') from e
        key = self.key_for(onnx_bytes, precision=precision, shape_bounds=shape_bounds)
        paths = self.paths_for(onnx_path, key)
        if not force_rebuild:
            try:
                return LoadedEngine(self.verify(paths, key), key, paths, built=False)
            except StaleEngine as stale:
                if not self.allow_build:
                    raise EngineCacheError(
                        f'{stale}. Building is disabled here: build it with '
                        f'`occ-ros build-engine --onnx {onnx_path} --out {self.directory}` on this '
                        'machine, or allow building') from None
                LOG.warning('%s — building a new engine', stale)
        elif not self.allow_build:
            raise EngineCacheError('force_rebuild requested but building is disabled')
        with _locked(paths.lock):
            if not force_rebuild:
                with contextlib.suppress(StaleEngine):       # another process built it meanwhile
                    return LoadedEngine(self.verify(paths, key), key, paths, built=False)
            engine = self._build_locked(onnx_path, onnx_bytes, key, paths)
        return LoadedEngine(engine, key, paths, built=True)

    def invalidate(self, paths: EnginePaths) -> None:
        """Remove an engine and its sidecar (sidecar first, so no half-state looks valid)."""
        for p in (paths.sidecar, paths.engine):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def purge_temp_files(self) -> int:
        """Delete temp files a crashed writer left behind; returns how many."""
        n = 0
        if self.directory.is_dir():
            for p in self.directory.glob('.*.tmp'):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    n += 1
        return n

    def _build_locked(self, onnx_path: Path, onnx_bytes: bytes, key: EngineKey,
                      paths: EnginePaths) -> bytes:
        assert self.builder is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.invalidate(paths)
        timing_before = paths.timing_cache.read_bytes() if paths.timing_cache.exists() else None
        self._progress(f'building TensorRT engine for {onnx_path.name} ({key.precision}, {key.network_typing}ly typed, '
                       f'TensorRT {key.tensorrt_version}, {key.gpu_name} sm{key.compute_capability}); '
                       f'this takes minutes; cache: {paths.engine}')
        t0 = time.monotonic()
        try:
            result = self.builder.build(onnx_path, onnx_bytes, key, timing_before, self._progress)
        except BackendError:            # includes EngineCacheError: already actionable
            raise
        except Exception as e:        # TensorRT raises plain RuntimeError/TypeError
            raise EngineCacheError(f'building the engine for {onnx_path} failed: {e}') from e
        seconds = time.monotonic() - t0
        if not result.engine:
            raise EngineCacheError(f'the builder returned an empty engine for {onnx_path}')
        atomic_write(paths.engine, result.engine)
        sidecar = {
            'format': CACHE_FORMAT,
            'key': key.fields(),
            'key_digest': key.digest(),
            'engine_sha256': hashlib.sha256(result.engine).hexdigest(),
            'engine_size': len(result.engine),
            'onnx_file': onnx_path.name,
            'built_utc': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'build_seconds': round(seconds, 1),
        }
        atomic_write(paths.sidecar, (json.dumps(sidecar, indent=2, sort_keys=True) + '\n').encode())
        if result.timing_cache:
            self._save_timing_cache(paths.timing_cache, timing_before, result.timing_cache)
        self._progress(f'engine built in {seconds:.1f} s: {paths.engine.name} '
                       f'({len(result.engine) / 2**20:.1f} MiB)')
        return result.engine

    def _save_timing_cache(self, path: Path, loaded: Optional[bytes], ours: bytes) -> None:
        """Save our timing cache; merge first if another build replaced the file meanwhile."""
        assert self.builder is not None
        with _locked(path.with_name(path.name + '.lock')):
            on_disk = path.read_bytes() if path.exists() else None
            data = ours
            if on_disk is not None and on_disk != loaded:
                try:
                    data = self.builder.merge_timing_caches(on_disk, ours)
                except Exception as e:     # a stale/foreign timing cache only costs build time
                    LOG.warning('could not merge timing cache %s (%s); keeping ours', path, e)
            atomic_write(path, data)


def read_sidecar(engine_path: Union[str, Path]) -> dict[str, Any]:
    """The sidecar JSON of an engine file (for tools that list the cache)."""
    p = Path(engine_path)
    if not p.name.endswith(ENGINE_SUFFIX):
        raise EngineCacheError(f'{p} is not an engine file (*{ENGINE_SUFFIX})')
    side = p.with_name(p.name + '.json')
    data = json.loads(side.read_text())
    if not isinstance(data, dict):
        raise EngineCacheError(f'{side} is not an engine sidecar')
    return data
