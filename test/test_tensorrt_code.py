"""The TensorRT code, checked without TensorRT or a GPU.

1. mypy (strict for these modules, see mypy.ini) against `tensorrt-stubs` — the TensorRT 10.13
   Python API as .pyi files. A control file that calls APIs TensorRT 10 removed must fail in the
   same run, which proves the stubs are really consulted.
2. A static scan for APIs that TensorRT 11 removed (and the binding-era APIs TensorRT 10 removed).
   Sources: "Removed Python APIs and Replacements" in the 10.x → 11.x migration guide
   (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html:
   BuilderFlag.FP16/INT8/FP8/BF16/INT4/FP4/OBEY_PRECISION_CONSTRAINTS/PREFER_PRECISION_CONSTRAINTS/
   DIRECT_IO, IBuilderConfig.int8_calibrator, set/get_calibration_profile, set/get/clear_quantization_flag,
   quantization_flags, ICudaEngine.device_memory_size…), its C++ twin (IAlgorithm* selectors,
   platformHasFastFp16/Int8), the deprecation list (IInt8*Calibrator, CalibrationAlgoType,
   platformHasTf32: https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/c-api/deprecated.html),
   the TensorRT 11 Builder page (EXPLICIT_BATCH gone, STRONGLY_TYPED always on), and the 8.x → 10.x
   guide for the binding-index API.
3. Pure helpers of the TensorRT backend: build-progress bookkeeping and log-level mapping.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from occ_ros.backends import tensorrt_backend as trt_backend
from occ_ros.core.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]
TRT_FILES = [ROOT / 'occ_ros' / 'backends' / 'tensorrt_backend.py',
             ROOT / 'occ_ros' / 'backends' / 'engine_cache.py']
# The one module that may name what TensorRT 10/11 removed: the TensorRT 8.5/8.6 weak-typing path,
# reached only by feature detection (test_tensorrt_compat.py runs it against a stand-in TensorRT 8.6)
COMPAT_FILE = ROOT / 'occ_ros' / 'backends' / 'tensorrt_compat.py'

# BuilderFlag members TensorRT 11 removed (weak typing and implicit quantization are gone); the
# same words are legitimate DataType members, so they are only flagged as `BuilderFlag.<name>`
REMOVED_BUILDER_FLAGS = {
    'FP16': 'strongly typed fp16 graphs instead', 'INT8': 'explicit Q/DQ instead',
    'FP8': 'explicit Q/DQ instead', 'BF16': 'strongly typed graphs instead',
    'INT4': 'explicit Q/DQ instead', 'FP4': 'explicit Q/DQ instead',
    'OBEY_PRECISION_CONSTRAINTS': 'strong typing is always enforced',
    'PREFER_PRECISION_CONSTRAINTS': 'strong typing is always enforced', 'DIRECT_IO': 'unneeded',
}
# other names → why they must not appear (attributes, classes, enum members)
REMOVED_APIS = {
    'int8_calibrator': 'IBuilderConfig.int8_calibrator removed in 11',
    'set_calibration_profile': 'removed in 11', 'get_calibration_profile': 'removed in 11',
    'set_quantization_flag': 'removed in 11', 'get_quantization_flag': 'removed in 11',
    'clear_quantization_flag': 'removed in 11', 'quantization_flags': 'removed in 11',
    'QuantizationFlag': 'removed in 11',
    'IInt8Calibrator': 'calibrators removed in 11', 'IInt8EntropyCalibrator': 'removed in 11',
    'IInt8EntropyCalibrator2': 'removed in 11', 'IInt8MinMaxCalibrator': 'removed in 11',
    'IInt8LegacyCalibrator': 'removed in 11', 'CalibrationAlgoType': 'removed in 11',
    'platform_has_fast_fp16': 'removed in 11', 'platform_has_fast_int8': 'removed in 11',
    'platform_has_tf32': 'deprecated in 10.5, gone from the 11 Builder',
    'IAlgorithmSelector': 'removed in 11', 'algorithm_selector': 'removed in 11',
    'device_memory_size': 'ICudaEngine.device_memory_size removed in 11 (use _v2)',
    'get_device_memory_size_for_profile': 'removed in 11 (use _v2)',
    'create_execution_context_without_device_memory': 'removed in 11 (USER_MANAGED strategy)',
    'EXPLICIT_BATCH': 'ignored since 10.0, gone in 11',
    # TensorRT 10: the binding-index API and implicit batch
    'get_binding_shape': 'removed in 10', 'get_binding_dtype': 'removed in 10',
    'get_binding_index': 'removed in 10', 'get_binding_name': 'removed in 10',
    'binding_is_input': 'removed in 10', 'num_bindings': 'removed in 10',
    'set_binding_shape': 'removed in 10', 'execute_async_v2': 'removed in 10',
    'execute_async': 'removed in 10', 'build_engine': 'removed in 10 (build_serialized_network)',
    'build_cuda_engine': 'removed in 8/10', 'max_workspace_size': 'removed in 10 (memory pool limit)',
    'max_batch_size': 'removed in 10', 'has_implicit_batch_dimension': 'deprecated in 10',
}

REQUIRED_APIS = {
    'STRONGLY_TYPED', 'create_network', 'OnnxParser', 'set_memory_pool_limit', 'create_timing_cache',
    'set_timing_cache', 'get_timing_cache', 'combine', 'progress_monitor', 'IProgressMonitor',
    'ILogger', 'build_serialized_network', 'deserialize_cuda_engine', 'num_io_tensors',
    'get_tensor_name', 'get_tensor_mode', 'get_tensor_dtype', 'get_tensor_shape',
    'create_execution_context', 'set_tensor_address', 'execute_async_v3', 'cuda_stream',
}


def _names_used(path: Path) -> dict[str, list[int]]:
    """Attribute names, plain names, imported names and exact string constants in a file;
    BuilderFlag members are recorded as 'BuilderFlag.<member>' (also via getattr)."""
    found: dict[str, list[int]] = {}

    def add(name: str, node: ast.AST) -> None:
        found.setdefault(name, []).append(getattr(node, 'lineno', 0))

    def is_builder_flag(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == 'BuilderFlag') or \
            (isinstance(node, ast.Name) and node.id == 'BuilderFlag')

    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            add(node.attr, node)
            if is_builder_flag(node.value):
                add(f'BuilderFlag.{node.attr}', node)
        elif isinstance(node, ast.Name):
            add(node.id, node)
        elif isinstance(node, ast.alias):
            add(node.name.split('.')[-1], node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            add(node.value, node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'getattr' \
                and len(node.args) >= 2 and is_builder_flag(node.args[0]) \
                and isinstance(node.args[1], ast.Constant):
            add(f'BuilderFlag.{node.args[1].value}', node)
    return found


# ---- 2. static scan ------------------------------------------------------------------------------
@pytest.mark.parametrize('path', TRT_FILES, ids=lambda p: p.name)
def test_no_api_that_tensorrt_10_or_11_removed(path: Path):
    used = _names_used(path)
    removed = {**REMOVED_APIS, **{f'BuilderFlag.{k}': f'removed in 11: {v}' for k, v in REMOVED_BUILDER_FLAGS.items()}}
    hits = [f'{path.name}:{used[n][0]}: {n} — {why}' for n, why in removed.items() if n in used]
    assert not hits, '\n'.join(hits)


def test_scan_catches_removed_apis(tmp_path: Path):
    """The scanner itself: a file in the TensorRT 8 style is flagged on every removed call."""
    bad = tmp_path / 'old_style.py'
    bad.write_text('import tensorrt as trt\n'
                   'def build(builder, network, config, engine, ctx):\n'
                   '    config.set_flag(trt.BuilderFlag.FP16)\n'
                   '    config.int8_calibrator = None\n'
                   '    config.max_workspace_size = 1 << 30\n'
                   '    if builder.platform_has_fast_fp16:\n'
                   '        e = builder.build_engine(network, config)\n'
                   '    shape = engine.get_binding_shape(0)\n'
                   '    ctx.execute_async_v2([], 0)\n'
                   '    flag = getattr(trt.BuilderFlag, "INT8")\n')
    used = set(_names_used(bad))
    assert {'BuilderFlag.FP16', 'BuilderFlag.INT8'} <= used
    assert {'int8_calibrator', 'max_workspace_size', 'platform_has_fast_fp16', 'build_engine',
            'get_binding_shape', 'execute_async_v2'} <= used & set(REMOVED_APIS)
    ok = tmp_path / 'types.py'
    ok.write_text('import tensorrt as trt\nT = {trt.DataType.HALF: 2, trt.DataType.INT8: 1, trt.DataType.BF16: 2}\n')
    assert not {f'BuilderFlag.{k}' for k in REMOVED_BUILDER_FLAGS} & set(_names_used(ok))


def test_required_tensorrt_10_apis_are_used():
    used = set(_names_used(TRT_FILES[0])) | set(_names_used(COMPAT_FILE))
    assert not REQUIRED_APIS - used, f'missing: {sorted(REQUIRED_APIS - used)}'
    src = TRT_FILES[0].read_text()
    assert '1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)' in COMPAT_FILE.read_text()
    # the only builder flag the backend touches is TF32 (kept in TensorRT 11, on by default)
    flags = set(re.findall(r'(?:set|clear)_flag\(trt\.BuilderFlag\.(\w+)\)', src))
    assert flags == {'TF32'}, flags
    assert 'config.clear_flag(trt.BuilderFlag.TF32)' in src


def test_removed_apis_appear_only_on_the_weak_typing_path():
    """tensorrt_compat names FP16 / OBEY_PRECISION_CONSTRAINTS / EXPLICIT_BATCH only through
    getattr, after feature detection chose weak typing (absent STRONGLY_TYPED), and nothing else
    TensorRT 10 or 11 removed."""
    used = _names_used(COMPAT_FILE)
    removed = {**REMOVED_APIS, **{f'BuilderFlag.{k}': v for k, v in REMOVED_BUILDER_FLAGS.items()}}
    allowed = {'BuilderFlag.FP16', 'BuilderFlag.OBEY_PRECISION_CONSTRAINTS', 'EXPLICIT_BATCH'}
    assert {n for n in removed if n in used} == allowed
    src = COMPAT_FILE.read_text()
    assert "getattr(trt.BuilderFlag, 'FP16')" in src and 'trt.BuilderFlag.FP16' not in src
    weak_branch = src[src.index("if key.network_typing == 'strong':"):]
    assert "getattr(trt.BuilderFlag, 'FP16')" in weak_branch


# ---- 1. mypy against tensorrt-stubs ------------------------------------------------------------
OLDEST_STUBS = Path(sys.prefix) / 'share' / 'occ_ros' / 'tensorrt-stubs-10.8'    # scripts/setup.sh


def _repaired_stubs(dest: Path, source: Optional[Path] = None) -> Path:
    """Copy the stubs (installed ones, or the folder `source` holding tensorrt/ and
    tensorrt_bindings/) and fix the two generator bugs that stop mypy from parsing them.

    tensorrt-stubs 10.8–10.13 name four plugin parameters `in` (a keyword) and give
    `add_scale_nd` a non-default parameter after defaulted ones. Neither touches the API used
    here. The installed files may already be patched by the setup script; copying keeps this test
    independent of that.
    """
    if source is None:
        spec = importlib.util.find_spec('tensorrt_bindings')
        assert spec is not None and spec.submodule_search_locations
        bindings = Path(list(spec.submodule_search_locations)[0])
    else:
        bindings = source / 'tensorrt_bindings'
    shutil.copytree(bindings.parent / 'tensorrt', dest / 'tensorrt',
                    ignore=shutil.ignore_patterns('*.py', '__pycache__'))
    shutil.copytree(bindings, dest / 'tensorrt_bindings', ignore=shutil.ignore_patterns('*.py', '__pycache__'))
    pyi = dest / 'tensorrt_bindings' / 'tensorrt.pyi'
    text = re.sub(r'([(,] ?)in: ', r'\1in_: ', pyi.read_text())
    text = text.replace('power: Weights = None, channel_axis: int)', 'power: Weights = None, channel_axis: int = ...)')
    pyi.write_text(text)
    return dest


@pytest.mark.parametrize('which', ['installed', 'oldest'])
def test_mypy_strict_against_tensorrt_stubs(tmp_path: Path, which: str):
    """Against the installed stubs (10.13) and the oldest on PyPI (10.8, kept beside the venv by
    scripts/setup.sh; PyPI has none for TensorRT 8.x)."""
    if which == 'installed':
        try:
            version = importlib.metadata.version('tensorrt-stubs')
        except importlib.metadata.PackageNotFoundError:
            pytest.skip('tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs==10.13.0.35.1)')
        source = None
    else:
        if not (OLDEST_STUBS / 'tensorrt_bindings' / 'tensorrt.pyi').is_file():
            pytest.skip(f'the oldest tensorrt-stubs are not in {OLDEST_STUBS} (scripts/setup.sh puts them there)')
        version, source = '10.8.0.43.1', OLDEST_STUBS
    if importlib.util.find_spec('mypy') is None:
        pytest.skip('mypy is not installed')
    stubs = _repaired_stubs(tmp_path / 'stubs', source)
    control = tmp_path / 'control_trt8_style.py'
    control.write_text('from __future__ import annotations\n'
                       'import tensorrt as trt\n'
                       'def f(b: trt.Builder, n: trt.INetworkDefinition, c: trt.IBuilderConfig,\n'
                       '      e: trt.ICudaEngine, x: trt.IExecutionContext) -> None:\n'
                       '    b.build_engine(n, c)\n'
                       '    c.max_workspace_size = 1\n'
                       '    e.get_binding_shape(0)\n'
                       '    x.execute_async_v2([], 0)\n')
    env = dict(os.environ, MYPYPATH=str(stubs))
    proc = subprocess.run(
        [sys.executable, '-m', 'mypy', '--config-file', str(ROOT / 'mypy.ini'), '--cache-dir',
         str(tmp_path / 'cache'), '--no-error-summary', *map(str, TRT_FILES), str(COMPAT_FILE), str(control)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ': error:' in ln]
    ours = [ln for ln in lines if not ln.startswith(str(control))]
    assert not ours, f'mypy (tensorrt-stubs {version}):\n' + '\n'.join(ours) + proc.stderr
    control_errors = [ln for ln in lines if ln.startswith(str(control))]
    for api in ('build_engine', 'max_workspace_size', 'get_binding_shape', 'execute_async_v2'):
        assert any(api in ln for ln in control_errors), \
            f'the stubs did not reject {api}; mypy output:\n{proc.stdout}{proc.stderr}'


# ---- 3. pure helpers ------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_build_progress_reports_phases_steps_and_elapsed_time():
    lines: list[str] = []
    clock = FakeClock()
    bp = trt_backend.BuildProgress(lines.append, clock=clock, min_interval=2.0)
    bp.phase_start('Building engine', None, 3)
    clock.t += 1.0
    bp.phase_start('Tactic selection', 'Building engine', 10)
    assert bp.step_complete('Tactic selection', 0)                  # first update is shown
    clock.t += 0.5
    assert bp.step_complete('Tactic selection', 1)                  # rate-limited: not shown
    clock.t += 3.0
    assert bp.step_complete('Tactic selection', 4)
    bp.phase_finish('Tactic selection')                             # nested: silent
    clock.t += 10.0
    bp.phase_finish('Building engine')
    assert lines == [
        '[    0.0 s] Building engine: started (3 steps)',
        '[    1.0 s] Building engine > Tactic selection: 1/10 (10 %)',
        '[    4.5 s] Building engine > Tactic selection: 5/10 (50 %)',
        '[   14.5 s] Building engine: finished in 14.5 s',
    ]


def test_build_progress_cancel_asks_tensorrt_to_stop():
    bp = trt_backend.BuildProgress(lambda line: None)
    bp.phase_start('p', None, 2)
    assert bp.step_complete('p', 0) is True
    bp.cancel()
    assert bp.step_complete('p', 1) is False
    assert bp.step_complete('unknown phase', 0) is False            # unknown phases are tolerated


def test_tensorrt_severities_map_onto_python_logging():
    assert trt_backend.level_for_severity('INTERNAL_ERROR') == logging.CRITICAL
    assert trt_backend.level_for_severity('ERROR') == logging.ERROR
    assert trt_backend.level_for_severity('WARNING') == logging.WARNING
    assert trt_backend.level_for_severity('INFO') == logging.INFO
    assert trt_backend.level_for_severity('VERBOSE') == logging.DEBUG


def test_module_imports_without_tensorrt_and_explains_what_is_missing():
    from occ_ros.backends.factory import probe_availability

    if probe_availability().tensorrt:
        pytest.skip('a TensorRT runtime is installed here')
    with pytest.raises(BackendError, match='tensorrt') as err:
        trt_backend.require_tensorrt()
    assert 'pip install tensorrt' in str(err.value)
    with pytest.raises(BackendError):
        trt_backend.TensorRTBackend(ROOT / 'missing.onnx')
