"""Console-script entry points of the two node executables, light to import.

`occupancy_node` and `occupancy_lifecycle_node` spend their first seconds importing torch, ONNX
Runtime and rclpy. A Ctrl-C in that time (under `ros2 launch`: the terminal's SIGINT plus launch's
own) used to raise KeyboardInterrupt inside some import, print its traceback and end the process
by SIGINT (exit -2, an ERROR line in launch and `ros2 launch` exiting 1). Here the first SIGINT
during the imports ends the process with 0 and no traceback, and later ones are ignored; once the
imports are done, Python's default handler is back and `main` handles the signals as documented in
`occ_ros.ros.main`.
"""
from __future__ import annotations

import importlib
import signal
import sys
from types import FrameType
from typing import Optional


def _interrupted(signum: int, frame: Optional[FrameType]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # a second SIGINT changes nothing
    raise KeyboardInterrupt


def run(module: str) -> int:
    """Import `module` (Ctrl-C during the import: exit 0, quietly), then return `module.main()`."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        sys.stderr.write(f'{module.rsplit(".", 1)[-1]}: interrupted while starting\n')
        return 0
    signal.signal(signal.SIGINT, previous)
    return int(main())


def occupancy_node() -> int:
    return run('occ_ros.ros.main')


def occupancy_lifecycle_node() -> int:
    return run('occ_ros.ros.lifecycle')


if __name__ == '__main__':
    sys.exit(run(sys.argv.pop(1)))
