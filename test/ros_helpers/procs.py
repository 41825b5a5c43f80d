"""Start and stop ROS helper processes for tests: SIGINT first, never leaving anything behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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
        self.killed = stop_process(self.proc, timeout) or self.killed
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors='replace')
        except OSError:
            return ''


def stop_process(proc: subprocess.Popen, sigint_timeout: float = 15.0, grace: float = 0.0) -> bool:
    """Stop `proc`: let it exit on its own for `grace` s, then SIGINT (`sigint_timeout` s), SIGTERM
    (5 s), SIGKILL + `fastdds shm clean` (a killed Fast DDS participant leaves its shared-memory
    segment behind). Returns whether it had to be killed. Safe on a process that already exited."""
    for sig, t in ((None, grace), (signal.SIGINT, sigint_timeout), (signal.SIGTERM, 5.0)):
        if proc.poll() is not None:
            return False
        if sig is not None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                return False
        try:
            proc.wait(t)
            return False
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.wait(10)
    _shm_clean()
    return True


def _shm_clean() -> None:
    env = dict(os.environ)
    env['PATH'] = str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', '')
    subprocess.run(['fastdds', 'shm', 'clean'], env=env, capture_output=True, timeout=30, check=False)


def double_sigint(proc: 'RosProcess', gap_s: float = 0.1, timeout: float = 20.0) -> tuple[Optional[int], float]:
    """SIGINT, and `gap_s` later a second one (a terminal's Ctrl-C to the process group plus
    `ros2 launch`'s own SIGINT to its child); returns the exit code (None: still running after
    `timeout` s) and the seconds from the first signal."""
    t0 = time.monotonic()
    proc.proc.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    if proc.alive():
        proc.proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout)
    return rc, time.monotonic() - t0


# what must not appear in a node's log when it is stopped by signals
BAD_SHUTDOWN_LINES = ('Traceback', 'terminate called', 'Fatal Python error', '[ERROR]', 'KeyboardInterrupt')


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# For the `-c` listener scripts play_to_listener starts (prepend it): the executor spins in a
# daemon thread and the main thread only polls `done()` against a monotonic deadline, so a stalled
# DDS call cannot swallow the listener's verdict; the JSON line is printed before any teardown.
LISTENER_PRELUDE = textwrap.dedent('''
    import threading, time
    def start_spinning(node):
        from rclpy.executors import SingleThreadedExecutor
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        threading.Thread(target=ex.spin, daemon=True).start()
        return ex
    def wait_until(done, deadline):
        while time.monotonic() < deadline and not done():
            time.sleep(0.02)
''')


def play_to_listener(listener_argv: list, play_args: list, env: Optional[dict] = None,
                     play_timeout: float = 60.0, listen_timeout: float = 40.0):
    """Start a listener process (prints READY, then one JSON line when done), play a bag to it with
    `occ-ros play <play_args>`; returns (play CompletedProcess, listener's JSON line parsed,
    listener stderr so far).

    The JSON line is taken as soon as it is printed: a listener that then hangs in DDS teardown
    is stopped (SIGINT, SIGTERM, SIGKILL + shm clean) without failing the call. A listener that
    never prints it fails the call with its stderr and the player's."""
    import json
    import queue
    import threading
    lines: 'queue.Queue[Optional[str]]' = queue.Queue()
    err_chunks: list = []
    sub = subprocess.Popen([sys.executable, *listener_argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env, start_new_session=True)

    def pump_out() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            lines.put(line.strip())
        lines.put(None)

    def pump_err() -> None:
        assert sub.stderr is not None
        for line in sub.stderr:
            err_chunks.append(line)

    for target in (pump_out, pump_err):
        threading.Thread(target=target, daemon=True).start()

    def next_line(timeout: float, what: str) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f'listener: no {what} within {timeout:.0f} s (exit code {sub.poll()});'
                                     f' stderr:\n{"".join(err_chunks)[-4000:]}')
            if line:
                return line

    try:
        assert next_line(60.0, 'READY line') == 'READY'
        play = subprocess.run([sys.executable, '-m', 'occ_ros.apps.cli', 'play', *play_args],
                              capture_output=True, text=True, timeout=play_timeout, env=env)
        assert play.returncode == 0, play.stderr
        try:
            result = json.loads(next_line(listen_timeout, 'JSON line'))
        except AssertionError as exc:
            raise AssertionError(f'{exc}\nplayer stderr:\n{play.stderr[-4000:]}') from None
    finally:
        stop_process(sub, sigint_timeout=5.0, grace=10.0)
    return play, result, ''.join(err_chunks)
