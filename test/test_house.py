"""The house keeps its shape: layers without upward imports or circles (import-linter, contracts
in .importlinter), rclpy only under occ_ros/ros, modules of one idea (≤ 600 lines), ruff clean.

These run the real tools on the real tree, so a change that breaks the plan fails the suite."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 600


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f'{name} is not installed: scripts/setup.sh installs it')
    return found


def test_import_contracts_hold() -> None:
    """Layers (apps > train > ros | bag | metrics > pipeline > backends > geometry | preprocess |
    postprocess | temporal > model | weights > core), rclpy forbidden outside ros/, metrics pure,
    no circle between sibling modules."""
    result = subprocess.run([_tool('lint-imports'), '--no-cache'], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert 'broken' in result.stdout and ' 0 broken' in result.stdout


def test_contracts_fail_on_an_upward_import(tmp_path: Path) -> None:
    """The contracts are not vacuous: a copy of the package with core importing the pipeline and
    the bag code importing rclpy breaks both."""
    root = tmp_path / 'tree'
    shutil.copytree(REPO / 'occ_ros', root / 'occ_ros', ignore=shutil.ignore_patterns('__pycache__', '*.ckpt'))
    shutil.copy(REPO / '.importlinter', root / '.importlinter')
    with open(root / 'occ_ros' / 'core' / 'errors.py', 'a') as f:
        f.write('\nimport occ_ros.pipeline  # noqa: E402,F401\n')
    with open(root / 'occ_ros' / 'bag' / 'reader.py', 'a') as f:
        f.write('\nimport rclpy  # noqa: E402,F401\n')
    result = subprocess.run([_tool('lint-imports'), '--no-cache'], cwd=root, capture_output=True, text=True,
                            timeout=300, env={'PYTHONPATH': str(root), 'PATH': '/usr/bin:/bin'})
    assert result.returncode != 0, result.stdout[-3000:]
    assert 'occ_ros.core.errors -> occ_ros.pipeline' in result.stdout
    assert 'occ_ros.bag.reader -> rclpy' in result.stdout


def test_modules_are_of_one_idea() -> None:
    too_long = {str(p.relative_to(REPO)): n for p in sorted((REPO / 'occ_ros').rglob('*.py'))
                if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f'modules over {MAX_MODULE_LINES} lines: {too_long}'


def test_rclpy_only_under_ros() -> None:
    """A plain text check beside the contract (it also sees modules import-linter cannot import)."""
    offenders = []
    for p in sorted((REPO / 'occ_ros').rglob('*.py')):
        rel = p.relative_to(REPO / 'occ_ros').parts
        if rel[0] in ('ros', 'apps'):
            continue
        for line in p.read_text().splitlines():
            s = line.strip()
            if s.startswith(('import rclpy', 'from rclpy')):
                offenders.append(f'{p.relative_to(REPO)}: {s}')
    assert not offenders, offenders


def test_ruff_is_clean() -> None:
    result = subprocess.run([_tool('ruff'), 'check', '--no-cache', '.'], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_data_files_are_found_from_every_room() -> None:
    """The modules that moved one level deeper still find the source tree's data: the default
    rig file (not the built-in fallback), the config directory the replay starts the node with,
    and the message definitions the bag writer registers."""
    from occ_ros.apps.node_process import REPO_CONFIG
    from occ_ros.bag.writer import find_msg_dir
    from occ_ros.geometry import default_rig_path

    assert default_rig_path() == REPO / 'config' / 'nuscenes_rig.yaml'
    assert REPO_CONFIG == REPO / 'config' and (REPO_CONFIG / 'occupancy.yaml').is_file()
    assert find_msg_dir() == REPO / 'msg'


def test_renderer_bag_tools_and_metrics_do_not_import_torch() -> None:
    """The synthetic renderer, the bag writer and reader, the metrics, the report pictures and
    the demo's own modules run without torch (≈1 s of import before the rendering workers fork,
    and again before scoring): only the pool tables of `occ_ros.geometry` and the network of
    `occ_ros.model` need it, and they load on first use; a model's named config does not. A fresh interpreter, so that
    nothing else in the test session has imported torch already."""
    code = ('import sys\n'
            'import occ_ros.apps.demo, occ_ros.apps.replay, occ_ros.bag.writer, occ_ros.bag.synth\n'
            'import occ_ros.bag.reader, occ_ros.metrics.evaluate, occ_ros.metrics.origins, occ_ros.apps.viz\n'
            'from occ_ros.model import model_config, MODEL_NAMES\n'
            'assert model_config("lite").grid.shape == (200, 200, 16)\n'
            'from occ_ros.geometry import nuscenes_rig, save_rig, Rig, load_rig\n'
            'assert "torch" not in sys.modules, "torch imported"\n'
            'from occ_ros.geometry import compute_bev_geometry, FrameTableBuilder\n'
            'from occ_ros.model import build_model, load_checkpoint\n'
            'assert "torch" in sys.modules and callable(compute_bev_geometry)\n')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
