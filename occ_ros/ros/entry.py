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
import logging
import os
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


def exit_now(code: int) -> None:
    """End the process with `code` at once: logging and the output streams flushed, the
    interpreter's teardown skipped (`os._exit`). The node's `main` has closed the node, its DDS
    participant and the context by then; what the interpreter would still do is tear down torch,
    ONNX Runtime, numpy and rclpy (≈ 0.3 s of CPU, which on a slow machine delays whatever waits for
    the process to end)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):            # a closed or broken pipe: nothing more to write
            pass
    os._exit(code)


def occupancy_node() -> int:
    exit_now(run('occ_ros.ros.main'))
    return 0                                     # (not reached)


def occupancy_lifecycle_node() -> int:
    exit_now(run('occ_ros.ros.lifecycle'))
    return 0                                     # (not reached)


if __name__ == '__main__':
    exit_now(run(sys.argv.pop(1)))
