"""Leaving a process at once: `exit_now`, for the two places that skip the interpreter's teardown
(the node with inference still running, `occ_ros.ros.main`; the demo command, `occ_ros.apps.cli`)."""
from __future__ import annotations

import logging
import os
import sys


def exit_now(code: int) -> None:
    """End the process with `code`: logging shut down and the output streams flushed first, then
    `os._exit` — no atexit handlers, no finalizers, no module teardown. Only for a process whose
    files, ROS contexts and child processes its own code has already closed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):            # a closed or broken pipe: nothing more to write
            pass
    os._exit(code)
