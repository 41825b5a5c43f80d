"""The ROS package itself: package.xml, CMakeLists.txt, msg/, config files, and the venv interfaces."""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def test_package_xml() -> None:
    catkin_pkg = pytest.importorskip('catkin_pkg.package', reason='catkin_pkg validates package.xml')
    pkg = catkin_pkg.parse_package(str(REPO / 'package.xml'))
    assert pkg.name == 'occ_ros' and pkg.package_format == 3
    assert pkg.get_build_type() == 'ament_cmake'
    assert 'rosidl_interface_packages' in [g.name for g in pkg.member_of_groups]
    exec_deps = {d.name for d in pkg.exec_depends} | {d.name for d in pkg.build_export_depends}
    for dep in ('rclpy', 'sensor_msgs', 'nav_msgs', 'visualization_msgs', 'diagnostic_msgs', 'std_msgs',
                'geometry_msgs', 'rosidl_default_runtime', 'message_filters', 'tf2_ros_py', 'cv_bridge',
                'launch_ros', 'python3-numpy', 'python3-opencv'):
        assert dep in exec_deps, dep
    buildtool = {d.name for d in pkg.buildtool_depends}
    assert {'ament_cmake', 'ament_cmake_python', 'rosidl_default_generators'} <= buildtool
    assert pkg.version == _setup_version()


def _setup_version() -> str:
    m = re.search(r"version='([^']+)'", (REPO / 'setup.py').read_text())
    assert m
    return m.group(1)


def test_cmakelists_generates_every_msg_file() -> None:
    text = (REPO / 'CMakeLists.txt').read_text()
    msgs = sorted(p.name for p in (REPO / 'msg').glob('*.msg'))
    listed = sorted(re.findall(r'"msg/([A-Za-z0-9]+\.msg)"', text))
    assert listed == msgs
    assert 'DEPENDENCIES std_msgs geometry_msgs' in text
    assert 'OCC_ROS_INTERFACES_ONLY' in text


def test_params_file_is_complete_and_valid() -> None:
    from occ_ros.ros.params import PARAMETERS, NodeParams
    doc = yaml.safe_load((REPO / 'config' / 'occupancy.yaml').read_text())
    values = doc['/**']['ros__parameters']
    assert set(values) == {p.name for p in PARAMETERS} - {'build_only', 'autostart'}   # launch-only switches
    p = NodeParams.from_mapping(values)
    defaults = {s.name: s.default for s in PARAMETERS}
    for k, v in values.items():                   # the file documents the defaults
        assert v == defaults[k] or list(getattr(p, k)) == defaults[k], k


def test_fastdds_profile() -> None:
    root = ET.parse(REPO / 'config' / 'fastdds_shm_large.xml').getroot()
    ns = {'d': 'http://www.eprosima.com'}
    seg = root.find('.//d:transport_descriptor[d:type="SHM"]/d:segment_size', ns)
    assert seg is not None and int(seg.text) >= 32 * 2 ** 20
    assert root.find('.//d:participant[@is_default_profile="true"]', ns) is not None


def test_rviz_config_shows_every_marker_and_grid_output() -> None:
    doc = yaml.safe_load((REPO / 'config' / 'occupancy.rviz').read_text())
    topics = {d['Topic']['Value'] for d in doc['Visualization Manager']['Displays'] if 'Topic' in d}
    assert {'/occupancy_node/voxels', '/occupancy_node/instances', '/occupancy_node/occupancy_grid'} <= topics
    assert doc['Visualization Manager']['Global Options']['Fixed Frame'] == 'base_link'


def test_interfaces_import_from_outside_the_source_tree() -> None:
    """The sources and the generated occ_ros.msg import as ONE package, the way users get it: from
    outside the source tree, with the source tree taken off PYTHONPATH (the rest of it stays: on a
    ROS install, and under `colcon test`, PYTHONPATH is how rclpy and the install space are found).

    Venv: the sources come from the editable install and occ_ros.msg from a namespace portion in
    site-packages (no __init__.py of its own). colcon: both from the install space, in one
    directory (CMakeLists.txt's install rules put the source __init__.py over the generator's)."""
    pytest.importorskip('occ_ros.msg', reason='interfaces not built (scripts/build_interfaces.sh)')
    code = ('import occ_ros, occ_ros.core.config, os\n'
            'from occ_ros.msg import PanopticOccupancy, PanopticInstance, Float64Stamped\n'
            'from rclpy.serialization import serialize_message, deserialize_message\n'
            'm = PanopticOccupancy(size_x=2); m.semantics = bytes([1, 17])\n'
            'b = deserialize_message(serialize_message(m), PanopticOccupancy)\n'
            'assert list(b.semantics) == [1, 17] and b.size_x == 2\n'
            'print(occ_ros.__file__)\n'
            'import occ_ros.msg as generated\n'
            'print(os.path.dirname(generated.__file__))\n')
    env = dict(os.environ)
    kept = [e for e in env.pop('PYTHONPATH', '').split(os.pathsep)
            if e and Path(e).resolve() != REPO.resolve()]
    if kept:
        env['PYTHONPATH'] = os.pathsep.join(kept)
    out = subprocess.run([sys.executable, '-c', code], cwd='/', env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    init_file, msg_dir = (Path(s) for s in out.stdout.split())
    # The sources win: occ_ros is this project's __init__.py (with its extend_path), not the
    # generator's empty one nor a bare namespace package.
    assert init_file.read_text() == (REPO / 'occ_ros' / '__init__.py').read_text(), init_file
    generated = msg_dir.parent
    if generated.resolve() != init_file.parent.resolve():
        assert not (generated / '__init__.py').exists(), \
            'the generated occ_ros/ in site-packages must stay a namespace portion (no __init__.py)'


# The keywords ament_add_pytest_test() takes on every supported distro: Humble's, the oldest
# (ament/ament_cmake branch humble, 1.3.11, ament_cmake_pytest/cmake/ament_add_pytest_test.cmake:50,
# its cmake_parse_arguments). NOCAPTURE came in Jazzy: using it would break the configure on Humble.
_PYTEST_TEST_KEYWORDS = {'SKIP_TEST', 'PYTHON_EXECUTABLE', 'RUNNER', 'TIMEOUT', 'WERROR',
                         'WORKING_DIRECTORY', 'APPEND_ENV', 'APPEND_LIBRARY_DIRS', 'ENV'}


def test_colcon_test_runs_the_suite() -> None:
    """What `colcon test` runs, checked without colcon (the colcon run itself is in the README):
    one ament_add_pytest_test over test/ (pytest.ini's testpaths) from the source tree, only with
    arguments every distro accepts, a configure-time error instead of a silent 0-test run when
    the interpreter has no pytest, and nothing specific to this venv."""
    text = (REPO / 'CMakeLists.txt').read_text()
    code = re.sub(r'#[^\n]*', '', text)                                   # comments off
    block = re.search(r'if\(BUILD_TESTING AND NOT OCC_ROS_INTERFACES_ONLY\)(.*?)\nendif\(\)', code, re.S)
    assert block, 'the test block must be under BUILD_TESTING'
    body = block.group(1)
    assert 'find_package(ament_cmake_pytest REQUIRED)' in body
    has = re.search(r'ament_has_pytest\((\w+) QUIET\)\s*if\(NOT (\w+)\)\s*message\(FATAL_ERROR', body)
    assert has and has.group(1) == has.group(2), 'no pytest must fail the configure, not add 0 tests'
    calls = re.findall(r'ament_add_pytest_test\(([^)]*)\)', body)
    assert len(calls) == 1, calls
    args = re.findall(r'"[^"]*"|\S+', calls[0])
    name, path, rest = args[0], args[1], args[2:]
    assert name == 'occ_ros_tests'
    ini = configparser.ConfigParser()
    ini.read(REPO / 'pytest.ini')
    assert path == ini['pytest']['testpaths'] == 'test' and (REPO / path).is_dir()
    keywords = [a for a in rest if re.fullmatch(r'[A-Z_]+', a)]
    assert set(keywords) <= _PYTEST_TEST_KEYWORDS, keywords
    opts = dict(zip(rest[::2], rest[1::2]))
    assert opts.get('WORKING_DIRECTORY') == '"${CMAKE_CURRENT_SOURCE_DIR}"'
    assert int(opts['TIMEOUT']) >= 30 * 60                     # the whole suite, on a slow machine
    for venv_only in ('.venv', '/opt/python', 'site-packages', 'colcon_venv'):
        assert venv_only not in code, venv_only


def test_package_xml_test_depends() -> None:
    """package.xml names what `colcon test` needs from rosdep: ament_cmake_pytest and pytest."""
    catkin_pkg = pytest.importorskip('catkin_pkg.package', reason='catkin_pkg validates package.xml')
    pkg = catkin_pkg.parse_package(str(REPO / 'package.xml'))
    assert {'ament_cmake_pytest', 'python3-pytest'} <= {d.name for d in pkg.test_depends}
