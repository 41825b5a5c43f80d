"""What `launch/occupancy.launch.py` and the node executables agree on (no rclpy here: the launch
file imports it, and the tests run it without launch installed): the exit codes, what the launch
does when the node exits.

Exit codes:
    0  finished (Ctrl-C, SIGTERM, `build_only:=true` done)
    1  other error (a bug or an unexpected library error; the log has the traceback)
    2  configuration (a bad parameter, rig or calibration)
    3  backend (a checkpoint or TensorRT engine that does not load or build)
    <0 killed by that signal (launch reports −N for a process ended by signal N)
"""
from __future__ import annotations

import signal
from typing import Optional

EXIT_OTHER = 1
EXIT_CONFIG = 2
EXIT_BACKEND = 3
_MEANING = {EXIT_OTHER: 'other error', EXIT_CONFIG: 'configuration: a bad parameter, rig or calibration',
            EXIT_BACKEND: 'backend: the checkpoint or engine does not load'}


def exit_meaning(returncode: int) -> str:
    """What an exit code of `occupancy_node` / `occupancy_lifecycle_node` means, in words."""
    if returncode == 0:
        return 'finished'
    if returncode < 0:
        try:
            return f'killed by {signal.Signals(-returncode).name}'
        except ValueError:
            return f'killed by signal {-returncode}'
    return _MEANING.get(returncode, 'unknown exit code')


def launch_verdict(returncode: int, launch_shutting_down: bool) -> Optional[str]:
    """What the launch file does when the node's process exits: None = nothing (the launch is
    already shutting down, after Ctrl-C: a second Shutdown event would make launch_ros shut its
    ROS adapter down twice, which raises 'Cannot shutdown a ROS adapter that is not running' and
    ends `ros2 launch lifecycle:=true` with exit code 1), 'shutdown' = end the launch (the node
    finished, e.g. build_only), or the failure text the launch raises, so that `ros2 launch` exits
    non-zero (launch does not pass a child's exit code on)."""
    if returncode == 0:
        return None if launch_shutting_down else 'shutdown'
    return (f'occupancy_node exited with code {returncode} ({exit_meaning(returncode)}); '
            'see its log above')
