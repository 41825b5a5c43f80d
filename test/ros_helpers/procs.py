"""Start and stop ROS helper processes for tests: SIGINT first, never leaving anything behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class RosProcess:
    """A child process (the venv interpreter) with its output in a log file.

    stop(): SIGINT, then SIGTERM, then SIGKILL (+ `fastdds shm clean`, since a killed Fast DDS
    participant leaves its shared-memory segment behind). Safe to call twice.
    """

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: Optional[dict] = None) -> None:
        self.name = name
        self.log_path = Path(log_dir) / f'{name}.log'
        self._log = open(self.log_path, 'wb')
        e = dict(os.environ)
        e.update(env or {})
        e.setdefault('PYTHONUNBUFFERED', '1')
        e['RCUTILS_COLORIZED_OUTPUT'] = '0'
        self.proc = subprocess.Popen(list(argv), stdout=self._log, stderr=subprocess.STDOUT, env=e,
                                     cwd=str(REPO), start_new_session=True)
        self.killed = False

    @classmethod
    def python(cls, name: str, args: Sequence[str], log_dir: Path, env: Optional[dict] = None) -> 'RosProcess':
        return cls(name, [sys.executable, *args], log_dir, env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        if self.proc.poll() is None:
            for sig, t in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0)):
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    break
                if self.wait(t) is not None:
                    break
            else:
                self.proc.kill()
                self.proc.wait(10)
                self.killed = True
                _shm_clean()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors='replace')
        except OSError:
            return ''


def _shm_clean() -> None:
    env = dict(os.environ)
    env['PATH'] = str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', '')
    subprocess.run(['fastdds', 'shm', 'clean'], env=env, capture_output=True, timeout=30, check=False)


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def play_to_listener(listener_argv: list, play_args: list, env: Optional[dict] = None,
                     play_timeout: float = 60.0, listen_timeout: float = 40.0):
    """Start a listener process (prints READY, then one JSON line when done), play a bag to it with
    `occ-ros play <play_args>`; returns (play CompletedProcess, listener's last JSON line parsed,
    listener stderr). The listener is terminated if it outlives the call."""
    import json
    import subprocess
    import sys
    sub = subprocess.Popen([sys.executable, *listener_argv], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert sub.stdout is not None and sub.stdout.readline().strip() == 'READY'
        play = subprocess.run([sys.executable, '-m', 'occ_ros.cli', 'play', *play_args],
                              capture_output=True, text=True, timeout=play_timeout, env=env)
        assert play.returncode == 0, play.stderr
        out, err = sub.communicate(timeout=listen_timeout)
    finally:
        if sub.poll() is None:
            sub.terminate()
            sub.wait(10)
    return play, json.loads(out.strip().splitlines()[-1]), err
