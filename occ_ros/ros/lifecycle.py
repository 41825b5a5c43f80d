"""`occupancy_lifecycle_node`: the occupancy node as a managed (lifecycle) node.

The same node code (`OccupancyNode`), driven by the lifecycle transitions instead of start-up:

    unconfigured ──configure──▶ inactive ──activate──▶ active
         ▲  load the rig and the       publishers, camera subscriptions,
         │  backend (TensorRT engine   timers, worker (`OccupancyNode.start`)
         │  built here, GPU memory     ◀──deactivate── the worker stops (the set in progress
         │  taken here)                                finishes) and every subscription,
         └──────cleanup── the backend is freed          timer and publisher of `start` is gone
    shutdown (any state): deactivate + cleanup as needed.

A failed configure (bad parameter, checkpoint, engine) logs the named error and returns FAILURE:
the node stays unconfigured and a lifecycle manager (Nav2's lifecycle_manager, launch) sees it.
Parameters are declared in the constructor as for the plain node (runtime ones stay settable in
every state). /diagnostics is published while active (and during configure's progress).
"""
from __future__ import annotations

import sys
import traceback
from typing import Any, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from occ_ros.core.errors import OccRosError
from occ_ros.ros.main import (SHUTDOWN_WAIT_S, failure_exit_code, make_executor, record_signals, shut_down,
                              spin_until_shutdown)
from occ_ros.ros.node import OccupancyNode, PipelineFactory


class OccupancyLifecycleNode(OccupancyNode, LifecycleNode):
    """`OccupancyNode` with the lifecycle transitions of the module doc."""

    def __init__(self, pipeline_factory: Optional[PipelineFactory] = None, node_name: str = 'occupancy_node',
                 **node_kwargs: Any) -> None:
        super().__init__(pipeline_factory=pipeline_factory, node_name=node_name, **node_kwargs)
        self._baseline: Optional[set[Any]] = None     # entities that exist before activate

    def autostart_when_spinning(self) -> None:
        """Configure, then activate, from a one-shot timer once the executor spins (the `autostart`
        parameter). In the node rather than in the launch file: launch_ros's ChangeState waits for
        the change_state service on a client of its ROS adapter, and a Ctrl-C during that wait
        raised from the destroyed adapter ('cannot use Destroyable…', `ros2 launch` exiting 1)."""
        timer: Any = None

        def once() -> None:
            timer.cancel()
            self.get_logger().info('autostart: configure, then activate')
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
            else:
                self.get_logger().error('autostart: configure failed; the node stays unconfigured')
        timer = self.create_timer(0.0, once)

    def _entities(self) -> set[Any]:
        return set(self.publishers) | set(self.subscriptions) | set(self.timers)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.load()
        except KeyboardInterrupt:         # Ctrl-C during the load: rclpy is shutting the context down
            self.get_logger().info('configure interrupted by shutdown')
            self._free_backend()
            # the process is going down: rclpy's lifecycle then cannot publish this transition on
            # the shut-down context and logs an ERROR about it ('Failed to complete transition 1')
            # — true, and nothing to act on, so the node's logger is quiet from here on
            self.get_logger().set_level(rclpy.logging.LoggingSeverity.FATAL)
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:          # named errors and library errors alike: stay unconfigured
            detail = '' if isinstance(exc, OccRosError) else '\n' + traceback.format_exc()
            self.get_logger().error(f'configure failed: {type(exc).__name__}: {exc}{detail}')
            self._free_backend()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._baseline = self._entities()
        self.start()
        self.get_logger().info('active: subscribed to the cameras, publishing')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._release_inputs():
            return TransitionCallbackReturn.ERROR
        self.get_logger().info('inactive: camera subscriptions and result publishers released')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_backend()
        self.get_logger().info('unconfigured: backend freed')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        ok = self._release_inputs()
        if ok:
            self._free_backend()
        return TransitionCallbackReturn.SUCCESS if ok else TransitionCallbackReturn.ERROR

    def close(self, timeout_s: float = 30.0) -> bool:
        """Process shutdown in any state (`main.shut_down`): the worker stopped (False when it is
        still inside inference after `timeout_s`: the backend is left alone), the backend freed."""
        if not self.stop(timeout_s):
            return False
        self._free_backend()
        return True

    def _release_inputs(self) -> bool:
        """Stop the worker, then destroy what `start` created (subscriptions, timers, publishers)."""
        if self._baseline is None:
            return True
        if not self.stop(timeout_s=SHUTDOWN_WAIT_S * 10):
            self.get_logger().error('deactivate: the camera set in progress did not finish')
            return False
        for entity in self._entities() - self._baseline:
            if entity in set(self.subscriptions):
                self.destroy_subscription(entity)
            elif entity in set(self.timers):
                self.destroy_timer(entity)
            else:
                self.destroy_publisher(entity)
        self._baseline = None
        self._out = None
        self._started = False
        return True

    def _free_backend(self) -> None:
        if self.pipeline is not None:
            try:
                self.pipeline.close()
            except Exception as exc:
                self.get_logger().warning(f'closing the pipeline: {exc}')
        self.pipeline = None
        self.model_cfg = None
        self._snap.backend_state = 'unconfigured'


def main(argv: Optional[Sequence[str]] = None, pipeline_factory: Optional[PipelineFactory] = None) -> int:
    """Console script `occupancy_lifecycle_node`: the node in the unconfigured state, spun until
    shutdown; a lifecycle manager (or `ros2 lifecycle set`) drives it, or itself with `autostart`.
    Exit 0, or 2 (a bad parameter at start-up), or 1; configure's failures keep it running.

    Shutdown as `occupancy_node`'s (`main.shut_down`): the first SIGINT/SIGTERM ends the spin and
    further ones are ignored — `ros2 launch` adds its own SIGINT to a terminal's Ctrl-C, and a
    second SIGINT during the teardown used to kill the process (exit -2, an ERROR in launch)."""
    record_signals()
    rclpy.init(args=list(sys.argv if argv is None else argv))
    node: Optional[OccupancyLifecycleNode] = None
    executor: Any = None
    code = 0
    spinning = False
    log: Any = rclpy.logging.get_logger('occupancy_node')
    try:
        node = OccupancyLifecycleNode(pipeline_factory=pipeline_factory)
        log = node.get_logger()
        executor = make_executor(node.params.executor)
        executor.add_node(node)
        if node.params.autostart:
            node.autostart_when_spinning()
        else:
            log.info('unconfigured: waiting for configure (ros2 lifecycle set, a lifecycle manager)')
        spinning = True
        spin_until_shutdown(executor, node.context)
    except (KeyboardInterrupt, ExternalShutdownException):
        if not spinning:
            log.info('interrupted while starting')
    except Exception as exc:          # at construction: a bad parameter (2), or 1; 0 after a Ctrl-C
        code = failure_exit_code(exc, log)
    finally:
        shut_down(node, executor, code, log)
    return code

if __name__ == '__main__':
    sys.exit(main())
