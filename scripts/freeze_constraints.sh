#!/usr/bin/env bash
# Rewrite scripts/constraints.txt from a venv that passed the tests (default .venv): every
# installed distribution at its exact version, for the interpreter it was tested on only (other
# Pythons resolve freely, as numpy and others drop old Pythons). setup.sh installs under it, so a
# new release on PyPI cannot change CI under us. Run after an intended upgrade, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
{
  echo "# The set the tests passed with on CPython $PY (scripts/freeze_constraints.sh, $(date -u +%F))."
  echo "# torch is pinned in setup.sh; locally built interfaces (tf2_msgs) and occ_ros are not listed."
  "$VENV/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
    | grep -v -E '^(#|-e |torch==|tf2_msgs==|occ[_-]ros==)' \
    | sed -E "s/\$/; python_version == \"$PY\"/"
} > scripts/constraints.txt
echo "wrote scripts/constraints.txt ($(grep -c '==' scripts/constraints.txt) pins for Python $PY)"
