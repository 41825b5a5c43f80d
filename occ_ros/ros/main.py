"""The `occupancy_node` executable: start-up order, the executor, signals and exit codes.

Exit codes: 0, or 2 (configuration), 3 (backend), 1 (other) (`occ_ros.ros.launch_contract`). See
`occ_ros.ros.node` for the node.

Shutdown (Ctrl-C, SIGTERM, `ros2 launch` — which adds a second SIGINT of its own): the first signal
ends the spin; from then on SIGINT and SIGTERM are ignored, so a second one changes nothing. The
worker gets `SHUTDOWN_WAIT_S` to finish the set in progress; inference still running then is
abandoned, not awaited: the node, its DDS participant (and so its shared-memory segments) and
the context are torn down, and the process leaves with `os._exit`, because letting the interpreter
finalise under a thread that is inside a native inference call aborts it (SIGABRT).
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback
from typing import Any, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException

from occ_ros.core.errors import BackendError, CalibrationError, CheckpointError, ConfigError, OccRosError
from occ_ros.core.exit import exit_now
from occ_ros.ros.launch_contract import EXIT_BACKEND, EXIT_CONFIG, EXIT_OTHER
from occ_ros.ros.node import OccupancyNode, PipelineFactory


def make_executor(kind: str) -> Any:
    """The rclpy executor named by the `executor` parameter ('auto' → EventsExecutor if available)."""
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    if kind in ('auto', 'events'):
        try:
            from rclpy.experimental import EventsExecutor
            return EventsExecutor()
        except ImportError:
            if kind == 'events':
                raise ConfigError('executor events: rclpy.experimental.EventsExecutor is not available '
                                  'in this ROS distribution (Jazzy or newer); use single') from None
    if kind == 'multi':
        return MultiThreadedExecutor(num_threads=2)
    return SingleThreadedExecutor()


def spin_until_shutdown(executor: Any, context: Any, period_s: float = 0.25) -> None:
    """Spin until the context is shut down (SIGINT/SIGTERM, rclpy.shutdown).

    A `spin_once` loop rather than `spin()`: rclpy's EventsExecutor (Jazzy/Kilted, experimental)
    does not return from `spin()` when the context is shut down by a signal; this loop does, with
    every executor type.
    """
    while rclpy.ok(context=context):
        try:
            executor.spin_once(timeout_sec=period_s)
        except Exception:
            if rclpy.ok(context=context) and not SIGNALLED.is_set():
                raise
            # the signal shut the context down, or its KeyboardInterrupt landed inside the
            # binding while the executor was dispatching (see `record_signals`): that is the
            # shutdown, not an error
            break


SIGNALLED = threading.Event()


def record_signals() -> None:
    """Call before `rclpy.init`: SIGINT sets `SIGNALLED`, then does what it did (Python's default
    raises KeyboardInterrupt). rclpy's own handler, installed by `init`, chains to this one.

    Why: a Ctrl-C's KeyboardInterrupt that lands while rclpy's EventsExecutor converts a callback's
    argument is turned by pybind11 into "RuntimeError: Unable to convert call argument '0' to
    Python object", with the context still valid (seen once in CI, exit code 1 instead of 0); the
    record tells the spin and `failure_exit_code` that this error is the Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if getattr(previous, 'records_sigint', False):
        return                                   # installed by an earlier main() in this process

    def on_sigint(signum: int, frame: Any) -> None:
        SIGNALLED.set()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    on_sigint.records_sigint = True              # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, on_sigint)


SHUTDOWN_WAIT_S = 1.0


def _ignore_further_signals() -> None:
    """SIGINT / SIGTERM → ignored (only the main thread may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def main(argv: Optional[Sequence[str]] = None, pipeline_factory: Optional[PipelineFactory] = None) -> int:
    """Console script `occupancy_node`. Returns 0, or 2 (configuration), 3 (backend), 1 (other)."""
    args = list(sys.argv if argv is None else argv)
    record_signals()
    rclpy.init(args=args)
    node: Optional[OccupancyNode] = None
    executor: Any = None
    code = 0
    started = False
    log = rclpy.logging.get_logger('occupancy_node')
    try:
        node = OccupancyNode(pipeline_factory=pipeline_factory)
        log = node.get_logger()
        node.load()
        if node.params.build_only:
            log.info('build_only: the backend is ready; exiting')
            return 0
        node.start()
        started = True
        executor = make_executor(node.params.executor)
        executor.add_node(node)
        spin_until_shutdown(executor, node.context)
    except (KeyboardInterrupt, ExternalShutdownException):
        if not started:                  # Ctrl-C while loading (torch, the model, the backend)
            log.info('interrupted while starting')
    except Exception as exc:
        code = failure_exit_code(exc, log)
    finally:
        shut_down(node, executor, code, log)
    return code


def failure_exit_code(exc: Exception, log: Any, context: Any = None) -> int:
    """The exit code for an exception that ended start-up or the spin, logged as FATAL with the
    reason: 2 (configuration), 3 (backend), 1 (other; a traceback for the unexpected). 0, and
    nothing logged, when the context is already shut down: a Ctrl-C between `rclpy.init` and the
    end of start-up makes rclpy calls fail ('the given context is not valid'), which is the
    shutdown, not an error (seen as exit 1 under the real `ros2 launch`); the same after a SIGINT
    (`record_signals`)."""
    if not rclpy.ok(context=context) or SIGNALLED.is_set():
        return 0
    if isinstance(exc, (ConfigError, CalibrationError)):
        log.fatal(f'{type(exc).__name__}: {exc}')
        return EXIT_CONFIG
    if isinstance(exc, (BackendError, CheckpointError)):
        log.fatal(f'{type(exc).__name__}: {exc}')
        return EXIT_BACKEND
    if isinstance(exc, OccRosError):
        log.fatal(f'{type(exc).__name__}: {exc}')
        return EXIT_OTHER
    if isinstance(exc, rclpy.exceptions.ParameterException):
        log.fatal(f'invalid parameter: {exc}')
        return EXIT_CONFIG
    # a bug or an unexpected library error: say so, exit 1
    log.fatal(f'unexpected {type(exc).__name__}: {exc}\n{traceback.format_exc()}')
    return EXIT_OTHER


def shut_down(node: Optional[OccupancyNode], executor: Any, code: int, log: Any) -> None:
    """The last step of both executables (`occupancy_node`, `occupancy_lifecycle_node`): further
    SIGINT/SIGTERM ignored, the executor stopped, `node.close` (at most `SHUTDOWN_WAIT_S` for the
    set in progress), the node and the context destroyed; with inference still running, the
    process leaves at once with `os._exit(code)` (see the module doc)."""
    _ignore_further_signals()
    if executor is not None:
        try:
            executor.shutdown(timeout_sec=1.0)
        except Exception:
            pass
    finished = True
    if node is not None:
        finished = node.close(timeout_s=SHUTDOWN_WAIT_S)
        if not finished:
            log.info(f'shutdown: abandoning the camera set in progress (inference still running after '
                     f'{SHUTDOWN_WAIT_S:.1f} s)')
        node.destroy_node()
    rclpy.try_shutdown()
    if not finished:
        exit_now(code)


if __name__ == '__main__':
    sys.exit(main())
