"""The occupancy node as a child process of the tools that replay bags through it (`occ-ros eval
--bag`, the demo): its environment (loopback DDS, one domain, the shared-memory profile), its
command line and parameters, starting it with its log in a file, and stopping it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from occ_ros.core.paths import data_path

REPO_CONFIG = data_path('config')


def ros_environment(domain_id: Optional[int] = None) -> dict[str, str]:
    """Environment for every ROS process of a replay: loopback DDS, one domain, the SHM profile.

    Sets the variables in this process too (before rclpy is imported here) and returns them for
    child processes.
    """
    env = {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
           # OpenMP threads sleep instead of spinning while waiting: on a small CPU shared with DDS
           # and image decoding, spinning made inference up to 10× slower (measured, 2 cores)
           'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}
    env['ROS_DOMAIN_ID'] = str(domain_id if domain_id is not None else
                               os.environ.get('ROS_DOMAIN_ID', 1 + os.getpid() % 100))
    profile = REPO_CONFIG / 'fastdds_shm_large.xml'
    if 'FASTDDS_DEFAULT_PROFILES_FILE' not in os.environ and profile.is_file():
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    os.environ.update(env)
    return dict(os.environ)


def node_command(params: dict[str, Any], params_file: Optional[Path] = None,
                 executable: Optional[Sequence[str]] = None, node_name: str = 'occupancy_node') -> list[str]:
    """The command line of an occupancy node process with parameter overrides."""
    cmd = list(executable or [sys.executable, '-m', 'occ_ros.ros.main'])
    cmd += ['--ros-args', '-r', f'__node:={node_name}']
    if params_file is not None:
        cmd += ['--params-file', str(params_file)]
    for k, v in params.items():
        if isinstance(v, bool):
            v = 'true' if v else 'false'
        cmd += ['-p', f'{k}:={v}']
    return cmd


def replay_node_params(model: str, backend: str, compressed: bool, checkpoint: Optional[str] = None,
                       rig_file: Optional[Path] = None, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The node parameters of a replay: model, backend, the bag's image transport, checkpoint, rig."""
    params: dict[str, Any] = {'model': model, 'backend': backend,
                              'image_transport': 'compressed' if compressed else 'raw'}
    if checkpoint:
        params['checkpoint'] = str(checkpoint)
    if rig_file is not None:
        params['rig_file'] = str(Path(rig_file).resolve())
    params.update(extra or {})
    return params


def start_node(params: dict[str, Any], log_path: Path, executable: Optional[Sequence[str]] = None,
               node_name: str = 'occupancy_node', say: Optional[Callable[[str], None]] = None,
               env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start an occupancy node process (output to `log_path`) with `params` over the repo's defaults."""
    cmd = node_command(params, REPO_CONFIG / 'occupancy.yaml', executable, node_name)
    if say is not None:
        say('starting the node: ' + ' '.join(cmd))
    with open(log_path, 'wb') as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or ros_environment())


def interrupt_node(proc: subprocess.Popen) -> None:
    """SIGINT to the node, without waiting for it to exit (`stop_node(..., interrupted=True)` then
    waits): a replay scores while the node shuts down."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)


def stop_node(proc: subprocess.Popen, timeout: float = 15.0, *, interrupted: bool = False) -> int:
    """SIGINT (unless `interrupt_node` sent it already), then terminate, then kill: the node's exit
    code."""
    if proc.poll() is None:
        if not interrupted:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return int(proc.returncode)


def tail(path: Path, n: int = 30) -> str:
    """The last `n` lines of a log file ('' when it cannot be read)."""
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-n:])
    except OSError:
        return ''
