"""The whole package type-checks (mypy, config in mypy.ini): a cheap guard against API drift
between the rooms (pipeline ↔ backends ↔ node ↔ replay), and the test fakes are checked
against the protocols they stand in for (test/fakes.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_package_type_checks():
    pytest.importorskip('mypy', reason='mypy is installed by scripts/setup.sh')
    checked = ['occ_ros', 'test/fakes.py', 'test/ros_helpers/gt_node.py']
    result = subprocess.run([sys.executable, '-m', 'mypy', *checked], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
