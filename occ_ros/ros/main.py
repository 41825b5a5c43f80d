"""The `occupancy_node` executable: start-up order, the executor, signals and exit codes.

Exit codes: 0, or 2 (configuration), 3 (backend), 1 (other). See `occ_ros.ros.node` for the node.
"""
from __future__ import annotations

import sys
import traceback
from typing import Any, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException

from occ_ros.core.errors import BackendError, CalibrationError, CheckpointError, ConfigError, OccRosError
from occ_ros.ros.node import EXIT_BACKEND, EXIT_CONFIG, EXIT_OTHER, OccupancyNode, PipelineFactory


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
        executor.spin_once(timeout_sec=period_s)


def main(argv: Optional[Sequence[str]] = None, pipeline_factory: Optional[PipelineFactory] = None) -> int:
    """Console script `occupancy_node`. Returns 0, or 2 (configuration), 3 (backend), 1 (other)."""
    args = list(sys.argv if argv is None else argv)
    rclpy.init(args=args)
    node: Optional[OccupancyNode] = None
    executor: Any = None
    code = 0
    log = rclpy.logging.get_logger('occupancy_node')
    try:
        node = OccupancyNode(pipeline_factory=pipeline_factory)
        log = node.get_logger()
        node.load()
        if node.params.build_only:
            log.info('build_only: the backend is ready; exiting')
            return 0
        node.start()
        executor = make_executor(node.params.executor)
        executor.add_node(node)
        spin_until_shutdown(executor, node.context)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, CalibrationError) as exc:
        log.fatal(f'{type(exc).__name__}: {exc}')
        code = EXIT_CONFIG
    except (BackendError, CheckpointError) as exc:
        log.fatal(f'{type(exc).__name__}: {exc}')
        code = EXIT_BACKEND
    except OccRosError as exc:
        log.fatal(f'{type(exc).__name__}: {exc}')
        code = EXIT_OTHER
    except rclpy.exceptions.ParameterException as exc:
        log.fatal(f'invalid parameter: {exc}')
        code = EXIT_CONFIG
    except Exception as exc:                     # a bug or an unexpected library error: say so, exit 1
        log.fatal(f'unexpected {type(exc).__name__}: {exc}\n{traceback.format_exc()}')
        code = EXIT_OTHER
    finally:
        if executor is not None:
            try:
                executor.shutdown(timeout_sec=1.0)
            except Exception:
                pass
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
