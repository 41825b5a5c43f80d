"""The occupancy node end to end over real DDS: node, camera publisher and output subscriber are
three processes (real rclpy, Fast DDS with config/fastdds_shm_large.xml, loopback discovery, this
run's ROS_DOMAIN_ID — set by conftest.py and inherited by the children).

The node runs the real pipeline with the `lite` model on CPU. Scenarios, against one node:
normal, one dead camera (and its return), a wrong image encoding, stamps jumping back (bag loop).
Start-up failures (unknown backend, missing file, bad grid band, corrupt checkpoint) must exit
non-zero with a named error; build_only must exit 0; SIGINT must stop the node cleanly.
"""
from __future__ import annotations

import json
import re
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip('rclpy', reason='needs the ROS 2 Python wheels')
pytest.importorskip('occ_ros.msg', reason='interfaces not built (scripts/build_interfaces.sh)')

from ros_helpers.procs import (BAD_SHUTDOWN_LINES, HERE as HELPERS, REPO, RosProcess, double_sigint,  # noqa: E402
                               wait_for)

from occ_ros.core.config import NUSCENES_CAMERAS  # noqa: E402

pytestmark = pytest.mark.ros

PARAMS = REPO / 'config' / 'occupancy.yaml'
NODE = '/occupancy_node'
CAMS = NUSCENES_CAMERAS
NODE_ENTRY = ['-m', 'occ_ros.ros.entry', 'occ_ros.ros.main']      # what the console script runs
# the scenarios are about stamps, cameras and encodings, not transport: lossless (reliable) camera QoS,
# as the README advises for large raw images over shared memory (the default, best effort, may drop)
NODE_PARAMS = ['-p', 'camera_timeout_s:=0.5', '-p', 'processing_budget_ms:=100.0', '-p', 'input_qos:=reliable']



def node_argv(*extra: str) -> list[str]:
    return [*NODE_ENTRY, '--ros-args', '--params-file', str(PARAMS), *NODE_PARAMS, *extra]


@pytest.fixture(scope='module')
def node(tmp_path_factory: pytest.TempPathFactory):
    log_dir = tmp_path_factory.mktemp('node')
    proc = RosProcess.python('occupancy_node', node_argv(), log_dir)
    try:
        if not wait_for(lambda: 'camera sync:' in proc.log() or not proc.alive(), timeout=180):
            pytest.fail(f'the node did not start within 180 s:\n{proc.log()[-3000:]}')
        if not proc.alive():
            pytest.fail(f'the node exited with {proc.proc.returncode}:\n{proc.log()[-3000:]}')
        yield proc
    finally:
        proc.stop()


def scenario(node: RosProcess, tmp_path: Path, name: str, duration: float = 4.0, **pub_args: Any) -> tuple:
    """Publisher + subscriber processes for one scenario; returns (published, received) reports."""
    pub_json, sub_json = tmp_path / 'published.json', tmp_path / 'received.json'
    extra = [a for k, v in pub_args.items() for a in (f'--{k.replace("_", "-")}', str(v))]
    first = tmp_path / 'first_output'       # the fault starts once the recorder itself has an output
    sub = RosProcess.python('subscriber', [str(HELPERS / 'output_subscriber.py'), '--node', NODE,
                                           '--out', str(sub_json), '--publisher-report', str(pub_json),
                                           '--idle', '15', '--first-output-file', str(first)], tmp_path)
    pub = RosProcess.python('publisher', [str(HELPERS / 'camera_publisher.py'), '--out', str(pub_json),
                                          '--duration', str(duration), '--scenario', name,
                                          '--await-output', f'{NODE}/panoptic', '--await-file', str(first),
                                          *extra], tmp_path)
    try:
        assert pub.wait(duration + 90) == 0, f'publisher failed:\n{pub.log()[-2000:]}'
        assert sub.wait(60) == 0, f'subscriber failed:\n{sub.log()[-2000:]}'
        assert node.alive(), f'the node died:\n{node.log()[-3000:]}'
    finally:
        pub.stop()
        sub.stop()
    return json.loads(pub_json.read_text()), json.loads(sub_json.read_text())


def check_outputs(published: dict, received: dict) -> None:
    """Type, frame, stamp and content of every output (see output_subscriber.py for the checks)."""
    stamps = {s for s, _ in published['sets']}
    pano = received['panoptic']
    assert pano, 'no ~/panoptic output'
    for p in pano:
        assert p['type'] == 'PanopticOccupancy' and p['frame'] == 'base_footprint'      # model_frame
        assert p['stamp'] in stamps, 'output stamp is not the stamp of a published camera set'
        assert p['shape'] == [200, 200, 16] and p['len_ok'] and p['class_names_ok'] and p['table_ids_ok']
    assert received['grid']
    for g in received['grid']:
        assert g['type'] == 'OccupancyGrid' and g['frame'] == 'base_footprint' and g['stamp'] in stamps
        assert g['size'] == [200, 200] and g['resolution'] == pytest.approx(0.4)
        assert g['origin'] == [-40.0, -40.0] and set(g['values']) <= {-1, 0, 100}
        assert g['matches_panoptic'] in (True, None)
    assert any(g['matches_panoptic'] for g in received['grid'])
    assert received['voxels']
    for v in received['voxels']:
        assert v['type'] == 'MarkerArray' and v['frames'] == ['base_footprint'] and v['stamp'] in stamps
        assert v['types_ok'] and v['ids_ok'] and v['consistent'] in (True, None) and v['points'] <= 20000
    assert any(v['consistent'] for v in received['voxels'])
    for i in received['instances']:
        assert i['first_is_deleteall'] and i['consistent'] in (True, None)
    for key in ('processing', 'latency'):
        assert received[key], f'no ~/debug/{key} output'
        for d in received[key]:
            assert d['frame'] == 'base_link' and d['stamp'] in stamps and d['value'] > 0


def after(published: dict, received: list, margin_s: float = 0.0) -> list:
    """Outputs whose stamp is at least `margin_s` after the first faulty set."""
    fault = [s for s, phase in published['sets'] if phase == 'fault']
    t0 = min(fault) + int(margin_s * 1e9)
    return [r for r in received if r['stamp'] >= t0]


def diag(received: dict, name: str) -> dict:
    """The last status `name` of the node's /diagnostics."""
    return received['diagnostics'][f'{NODE}: {name}']


def history(received: dict, name: str) -> list:
    """Every status `name` received during the scenario."""
    return received['diagnostics_history'][f'{NODE}: {name}']


# ------------------------------------------------------------------ scenarios
def test_normal(node: RosProcess, tmp_path: Path) -> None:
    published, received = scenario(node, tmp_path, 'normal', duration=4.0)
    assert len(published['sets']) >= 40                       # 12 Hz for 4 s
    check_outputs(published, received)
    assert all(p['missing'] == [] for p in received['panoptic'])
    assert diag(received, 'backend')['level'] == 0
    for cam in CAMS:                     # while the cameras streamed, each one was healthy at ~12 Hz
        assert any(d['level'] == 0 and d['values']['state'] == 'ok' and float(d['values']['rate_hz']) > 6.0
                   for d in history(received, f'camera {cam}'))
    proc = diag(received, 'processing')['values']
    sets, dropped, outputs = int(proc['sets_received']), int(proc['dropped_sets']), int(proc['outputs'])
    held = int(proc['dropped_sets_held'])        # ingest_hold (default): sets never taken, so never formed
    assert held > 0 and outputs <= sets and dropped - held <= sets
    # prepare_early (default): views decoded and preprocessed as their images came, then used by the sets
    assert int(proc['views_prepared_early']) > 0 and int(proc['views_discarded']) >= 0


def test_one_dead_camera(node: RosProcess, tmp_path: Path) -> None:
    published, received = scenario(node, tmp_path, 'dead_camera', duration=5.0, fault_camera='CAM_BACK',
                                   fault_after=1.5)
    check_outputs(published, received)
    late = after(published, received['panoptic'], margin_s=0.6)        # > camera_timeout_s after it stopped
    assert late, 'no output after the camera died: the node must keep running without it'
    assert all(p['missing'] == ['CAM_BACK'] for p in late)
    late_grid = after(published, received['grid'], margin_s=0.6)
    assert late_grid and all(g['behind_value'] == -1 for g in late_grid)   # its frustum is unknown
    assert any(d['level'] == 2 and d['values']['state'] == 'silent' and 'blanked' in d['message']
               for d in history(received, 'camera CAM_BACK'))
    assert any(d['level'] == 0 for d in history(received, 'camera CAM_FRONT'))


def test_wrong_encoding(node: RosProcess, tmp_path: Path) -> None:
    published, received = scenario(node, tmp_path, 'wrong_encoding', duration=4.0,
                                   fault_camera='CAM_FRONT_RIGHT', fault_after=1.5)
    check_outputs(published, received)
    late = after(published, received['panoptic'])
    assert late and all(p['missing'] == ['CAM_FRONT_RIGHT'] for p in late)
    assert any(d['level'] >= 1 and 'mono8' in d['values']['last_bad']
               for d in history(received, 'camera CAM_FRONT_RIGHT'))
    assert int(diag(received, 'processing')['values']['errors.ImageError']) >= 1


def test_stamps_jumping_back(node: RosProcess, tmp_path: Path) -> None:
    published, received = scenario(node, tmp_path, 'time_jump', duration=4.0, fault_after=1.5,
                                   jump_back=30.0)
    check_outputs(published, received)
    phase = {s: ph for s, ph in published['sets']}
    before = [p['stamp'] for p in received['panoptic'] if phase[p['stamp']] == 'before']
    jumped = [p['stamp'] for p in received['panoptic'] if phase[p['stamp']] == 'fault']
    assert before and jumped, 'outputs are expected before and after the jump'
    assert max(jumped) < min(before)                           # the bag looped 30 s back
    assert received['panoptic'][-1]['stamp'] in jumped         # and the node followed it
    sync = diag(received, 'synchronizer')['values']
    assert int(sync['resets.time_backwards']) >= 1


def shm_files_of(pid: int) -> set[str]:
    """The /dev/shm files (Fast DDS segments) mapped by process `pid`."""
    try:
        lines = Path(f'/proc/{pid}/maps').read_text().splitlines()
    except OSError:
        return set()
    return {ln.split(maxsplit=5)[-1] for ln in lines if '/dev/shm/' in ln}


def shm_files_of_all() -> list[set[str]]:
    return [shm_files_of(int(p.name)) for p in Path('/proc').iterdir() if p.name.isdigit()]


def test_node_stops_at_once_on_the_double_sigint_of_ros2_launch(node: RosProcess, tmp_path: Path) -> None:
    """Mid-inference (cameras streaming at 12 Hz, the worker busy), SIGINT and 0.1 s later a second
    SIGINT — what a terminal's Ctrl-C plus `ros2 launch`'s own signal deliver: the node exits 0
    without waiting for the inference in progress, with no traceback, abort or ERROR line, and
    leaves none of its Fast DDS shared-memory segments behind (a SIGKILLed participant leaves both
    of its segments: checked by hand against this test's criterion)."""
    import time
    pub = RosProcess.python('publisher', [str(HELPERS / 'camera_publisher.py'), '--out', str(tmp_path / 'p.json'),
                                          '--duration', '40', '--scenario', 'normal'], tmp_path)
    try:
        assert wait_for(lambda: 'publishing' in pub.log().lower() or not pub.alive(), timeout=90), pub.log()[-2000:]
        time.sleep(4.0)                                    # sets flowing, the worker busy with inference
        before = len(node.log())
        segments = shm_files_of(node.proc.pid)
        rc, elapsed = double_sigint(node)
    finally:
        pub.stop()
    tail = node.log()[before:]
    # Fast DDS shared memory: every data segment the node had mapped is gone, or still mapped by a
    # live process (another participant's own segment); none is left orphaned by the node's exit.
    # (The fastdds_port<N> files are per-port mailboxes that Fast DDS shares between participants
    # and keeps for the next one to listen on that port: not a process's own memory.)
    segments = {f for f in segments if re.match(r'fastdds_(?!port)', Path(f).name)}
    assert segments, 'the node mapped no Fast DDS shared memory (is the SHM transport on?)'
    orphans = [f for f in segments if os.path.exists(f) and not any(f in m for m in shm_files_of_all())]
    assert not orphans, f'shared-memory segments left behind by the node: {orphans}'
    assert rc == 0, f'exit code {rc} after {elapsed:.1f} s:\n{tail[-3000:]}'
    for bad in BAD_SHUTDOWN_LINES:
        assert bad not in tail, f'{bad!r} in the shutdown log:\n{tail[-3000:]}'
    assert elapsed < 5.0, f'shutdown took {elapsed:.1f} s:\n{tail[-2000:]}'      # the goal is 2 s; CI load
    print(f'shutdown after the first SIGINT: {elapsed:.2f} s')
    node.stop()


@pytest.mark.parametrize('module,loading', [('occ_ros.ros.main', '/torch/lib/'),
                                            ('occ_ros.ros.lifecycle', '_rclpy_pybind11')])
def test_ctrl_c_while_the_executable_is_still_starting(module: str, loading: str, tmp_path: Path) -> None:
    """Ctrl-C under `ros2 launch` in the first seconds, while the executable is still starting
    (SIGINT, and 0.1 s later launch's own): it exits 0 at once with no traceback and says it was
    interrupted while starting — before occ_ros.ros.entry the import raised KeyboardInterrupt,
    printed its traceback and the process died by SIGINT (exit -2: `[ERROR] process has died` and
    `ros2 launch` exiting 1, seen with the real `ros2 launch ... lifecycle:=true` and Ctrl-C 3.5 s
    after the start). The signal lands while `occupancy_node` loads torch (now inside `main`, the
    network being imported on first use) and while the lifecycle node is still importing rclpy
    (it loads torch only at configure)."""
    proc = RosProcess.python('starting', ['-m', 'occ_ros.ros.entry', module, '--ros-args', '--params-file',
                                          str(PARAMS)], tmp_path)
    try:
        maps = Path(f'/proc/{proc.proc.pid}/maps')
        importing = wait_for(lambda: not proc.alive() or loading in maps.read_text(errors='replace'),
                             timeout=60, interval=0.01)
        assert importing and proc.alive(), proc.log()[-2000:]
        rc, elapsed = double_sigint(proc)
    finally:
        proc.stop()
    log = proc.log()
    assert rc == 0, f'exit code {rc}:\n{log[-3000:]}'
    for bad in BAD_SHUTDOWN_LINES:
        assert bad not in log, f'{bad!r} in the log:\n{log[-3000:]}'
    assert 'interrupted while starting' in log, log[-2000:]
    assert elapsed < 5.0, f'exit took {elapsed:.1f} s'


def test_shutdown_abandons_an_inference_that_does_not_end(tmp_path: Path) -> None:
    """A pipeline stuck for 60 s inside `run` (a long native inference): SIGINT + SIGINT still
    ends the process with 0 after the 1 s grace, saying it abandoned the set in progress."""
    slow = RosProcess.python('slow_node', [str(HELPERS / 'slow_node.py'), '--ros-args', '--params-file', str(PARAMS),
                                           *NODE_PARAMS], tmp_path)
    pub = None
    try:
        assert wait_for(lambda: 'camera sync:' in slow.log() or not slow.alive(), timeout=120), slow.log()[-2000:]
        pub = RosProcess.python('publisher', [str(HELPERS / 'camera_publisher.py'), '--out', str(tmp_path / 'p.json'),
                                              '--duration', '30', '--scenario', 'normal'], tmp_path)
        assert wait_for(lambda: 'inference started' in slow.log() or not slow.alive(), timeout=90), slow.log()[-2000:]
        rc, elapsed = double_sigint(slow)
    finally:
        if pub is not None:
            pub.stop()
        slow.stop()
    log = slow.log()
    assert rc == 0, f'exit code {rc}:\n{log[-3000:]}'
    assert 'abandoning the camera set in progress' in log, log[-2000:]
    for bad in BAD_SHUTDOWN_LINES:
        assert bad not in log, f'{bad!r} in the log:\n{log[-3000:]}'
    assert elapsed < 5.0, f'shutdown took {elapsed:.1f} s'
    print(f'shutdown with inference stuck: {elapsed:.2f} s')


# ------------------------------------------------------------------ start-up
@pytest.mark.parametrize('extra, match', [
    (['-p', 'backend:=warp-drive'], 'backend'),
    (['-p', 'rig_file:=/nonexistent/rig.yaml'], 'rig_file'),
    (['-p', 'grid_z_min:=3.0', '-p', 'grid_z_max:=1.0'], 'grid_z_min'),
])
def test_bad_parameters_exit_with_a_named_error(tmp_path: Path, extra: list, match: str) -> None:
    proc = RosProcess.python('node', node_argv(*extra), tmp_path)
    try:
        rc = proc.wait(60)
    finally:
        proc.stop()
    assert rc == 2, proc.log()[-2000:]
    assert 'ConfigError' in proc.log() and match in proc.log()


def test_corrupt_checkpoint_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / 'corrupt.pt'
    bad.write_bytes(b'PK\x03\x04 this is not a checkpoint' * 10)
    proc = RosProcess.python('node', node_argv('-p', f'checkpoint:={bad}', '-p', 'build_only:=true'), tmp_path)
    try:
        rc = proc.wait(180)
    finally:
        proc.stop()
    assert rc == 3, proc.log()[-2000:]                        # EXIT_BACKEND: checkpoint/engine errors
    assert 'CheckpointError' in proc.log() and 'corrupt.pt' in proc.log()


def test_build_only_loads_the_backend_and_exits(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / 'occupancy_node'
    argv = [str(script)] if script.exists() else [sys.executable, *NODE_ENTRY]
    proc = RosProcess('node', [*argv, '--ros-args', '--params-file', str(PARAMS), '-p', 'build_only:=true'],
                      tmp_path)
    try:
        rc = proc.wait(180)
    finally:
        proc.stop()
    assert rc == 0, proc.log()[-2000:]
    assert 'build_only' in proc.log()


# ------------------------------------------------------------------ launch file
def test_launch_file_compiles() -> None:
    path = REPO / 'launch' / 'occupancy.launch.py'
    compile(path.read_text(), str(path), 'exec')          # syntax only; writes no .pyc


def test_launch_description() -> None:
    pytest.importorskip('launch_ros', reason='launch_ros is not importable (not on PyPI; needs a ROS 2 '
                                             'install); the venv runs the same executable with the same '
                                             'params file instead')
    ld, ctx, node_function = launch_file_in_context()
    from launch.actions import DeclareLaunchArgument
    names = {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert {'params_file', 'backend', 'model', 'checkpoint', 'engine_dir', 'namespace', 'use_sim_time',
            'build_only', 'CAM_FRONT_image'} <= names
    node, on_exit = node_function.execute(ctx)
    assert type(on_exit).__name__ == 'RegisterEventHandler'        # a failing node ends the launch
    assert node.node_executable == 'occupancy_node' and node.node_package == 'occ_ros'
    assert os.path.exists(LaunchConfigurationValue(ctx, 'params_file'))
    # lifecycle:=true starts the managed node and (autostart) configures, then activates it
    from launch.actions import SetLaunchConfiguration
    SetLaunchConfiguration('lifecycle', 'true').execute(ctx)
    entities = node_function.execute(ctx)
    assert entities[0].node_executable == 'occupancy_lifecycle_node'
    # the node configures and activates itself (its autostart parameter): only the exit handler here
    assert [type(e).__name__ for e in entities[1:]] == ['RegisterEventHandler']


def test_launch_verdict_when_the_node_exits() -> None:
    """What launch/occupancy.launch.py does when the node's process exits (no launch needed):
    a clean exit while the launch is already shutting down (Ctrl-C) does nothing — a second
    Shutdown event made launch_ros shut its ROS adapter down twice ('Cannot shutdown a ROS adapter
    that is not running', exit 1), seen with the real `ros2 launch ... lifecycle:=true`; a clean
    exit otherwise (build_only) ends the launch; any other code is a failure naming its meaning."""
    from occ_ros.ros.launch_contract import EXIT_BACKEND, EXIT_CONFIG, launch_verdict
    assert launch_verdict(0, launch_shutting_down=True) is None
    assert launch_verdict(0, launch_shutting_down=False) == 'shutdown'
    for code, meaning in ((EXIT_CONFIG, 'configuration'), (EXIT_BACKEND, 'backend'), (1, 'other error'),
                          (-2, 'killed by SIGINT'), (-9, 'killed by SIGKILL'), (7, 'unknown')):
        for shutting_down in (False, True):
            verdict = launch_verdict(code, shutting_down)
            assert verdict is not None and verdict != 'shutdown'
            assert f'code {code} ({meaning}' in verdict, verdict


def test_launch_exit_handler_with_real_launch() -> None:
    """The launch file's OnProcessExit handler, run by the real launch on ProcessExited events."""
    pytest.importorskip('launch_ros', reason='launch_ros is not importable (not on PyPI; needs a ROS 2 install)')
    from launch.actions import EmitEvent
    from launch.events.process import ProcessExited
    _, ctx, node_function = launch_file_in_context()
    node, register = node_function.execute(ctx)
    handler = register.event_handler

    def exited(code: int) -> ProcessExited:
        return ProcessExited(action=node, name='occupancy_node-1', cmd=['occupancy_node'], cwd=None, env=None,
                             pid=1, returncode=code)
    assert handler.matches(exited(0))
    out = handler.handle(exited(0), ctx)
    assert [type(e) for e in out] == [EmitEvent]                     # build_only done: end the launch
    with pytest.raises(RuntimeError, match='code 3 .backend'):       # a failure: ros2 launch exits 1
        handler.handle(exited(3), ctx)
    ctx._set_is_shutdown(True)                                       # Ctrl-C: launch already shutting down
    assert not handler.handle(exited(0), ctx)


def launch_file_in_context() -> tuple[Any, Any, Any]:
    """launch/occupancy.launch.py loaded with the real launch: (its LaunchDescription, a
    LaunchContext holding its declared arguments' defaults, the OpaqueFunction that makes the node)."""
    import importlib.util

    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument
    spec = importlib.util.spec_from_file_location('occupancy_launch', REPO / 'launch' / 'occupancy.launch.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    ctx = LaunchContext()
    for a in ld.entities:
        if isinstance(a, DeclareLaunchArgument):
            a.execute(ctx)
    return ld, ctx, next(a for a in ld.entities if type(a).__name__ == 'OpaqueFunction')


def LaunchConfigurationValue(ctx: Any, name: str) -> str:
    from launch.substitutions import LaunchConfiguration
    return LaunchConfiguration(name).perform(ctx)
