"""The kernel's thread names (occ_ros.core.threads): what /proc shows for a named thread —
the documented Linux interface (proc(5): /proc/<pid>/task/<tid>/comm), read independently."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from occ_ros.core.threads import name_this_thread


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='prctl(PR_SET_NAME) is Linux only')
def test_a_named_thread_shows_its_name_in_proc() -> None:
    seen: dict[str, object] = {}

    def run() -> None:
        seen['set'] = name_this_thread('occ_worker_with_a_long_name')
        seen['comm'] = Path(f'/proc/self/task/{threading.get_native_id()}/comm').read_text().strip()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == {'set': True, 'comm': 'occ_worker_with'}        # cut to 15 bytes (TASK_COMM_LEN)
    # the calling (main) thread kept its name
    assert Path(f'/proc/self/task/{threading.get_native_id()}/comm').read_text().strip() != 'occ_worker_with'
