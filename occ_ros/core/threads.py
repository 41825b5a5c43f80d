"""The operating system's name of the calling thread, so that `top -H`, `ps -L` and
`/proc/<pid>/task/*/comm` (the node benchmark's per-thread CPU) tell the node's threads apart.

Python (before 3.14) names only its `threading.Thread` objects; the kernel sees every thread
under the process name. `name_this_thread` sets the kernel's name with `prctl(PR_SET_NAME)` on
Linux (at most 15 bytes: longer names are cut) and does nothing elsewhere or when libc is not
found. `yield_this_thread` lowers the calling thread's priority below its process's other threads
(the node's early-view pool, `ros/early.py`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from functools import lru_cache
from typing import Any, Optional

PR_SET_NAME = 15          # linux/prctl.h
MAX_BYTES = 15            # TASK_COMM_LEN − 1


@lru_cache(maxsize=1)
def _libc() -> Optional[Any]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    except OSError:
        return None


def name_this_thread(name: str) -> bool:
    """Give the calling thread the kernel name `name` (cut to 15 bytes); True when it was set."""
    libc = _libc()
    if libc is None:
        return False
    raw = name.encode('utf-8', errors='replace')[:MAX_BYTES]
    return libc.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0


def yield_this_thread(steps: int) -> bool:
    """Lower the calling thread's scheduling priority by `steps` nice levels (Linux: `setpriority`
    on the thread's id is per thread; raising niceness needs no privilege), so that the other
    threads of the process — at the same nice level — are served first when they want the CPU.
    True when it was set; nothing elsewhere."""
    if not sys.platform.startswith('linux') or steps <= 0:
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError:
        return False
    return True
