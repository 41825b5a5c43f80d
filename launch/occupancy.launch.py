"""Launch the occupancy node (and optionally RViz) with the package's parameter file.

    ros2 launch occ_ros occupancy.launch.py
    ros2 launch occ_ros occupancy.launch.py backend:=tensorrt device:=cuda engine_dir:=/var/cache/occ
    ros2 launch occ_ros occupancy.launch.py build_only:=true          # build the engine and exit
    ros2 launch occ_ros occupancy.launch.py use_sim_time:=true image_transport:=compressed rviz:=true
        # with `ros2 bag play --clock` of a bag holding CompressedImage (the demo bag does)
    ros2 launch occ_ros occupancy.launch.py CAM_FRONT_image:=/front/image_rect  # remap one camera
    ros2 launch occ_ros occupancy.launch.py lifecycle:=true             # managed node; it configures
        # and activates itself (autostart); autostart:=false leaves it unconfigured for a lifecycle
        # manager (Nav2's lifecycle_manager) or `ros2 lifecycle set /occupancy_node configure`

Every parameter not given here comes from `params_file` (config/occupancy.yaml by default).
The Fast DDS shared-memory profile for large images (config/fastdds_shm_large.xml) is set for the
processes started here unless `fastdds_profile:=none`; camera drivers and bag players of the same
graph should use it too (FASTDDS_DEFAULT_PROFILES_FILE).

RViz starts only when `rviz:=true` and rviz2 is installed (a warning otherwise: headless robots
need not install it). When the node exits with an error (a bad parameter, a checkpoint or engine
that does not load, `build_only:=true` failing), the launch shuts down with that reason.
"""
from __future__ import annotations

import os

import launch.logging
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from occ_ros.core.config import NUSCENES_CAMERAS
from occ_ros.ros.launch_contract import launch_verdict

PACKAGE = 'occ_ros'
CAMERAS = NUSCENES_CAMERAS          # the one definition of the camera names (occ_ros.core.config)
# launch argument → node parameter (passed only when the argument is not empty)
PARAM_ARGS = {
    'model': ('', 'Model name (lite, pano-tiny, …); empty = params_file.'),
    'checkpoint': ('', 'Checkpoint file; empty = params_file.'),
    'backend': ('', 'auto | torch | onnxruntime | tensorrt; empty = params_file.'),
    'device': ('', 'cpu | cuda | cuda:N; empty = params_file.'),
    'engine_dir': ('', 'TensorRT engine cache directory; empty = params_file.'),
    'precision': ('', 'auto | fp16 | fp32 (auto: fp16 for TensorRT, else fp32); empty = params_file.'),
    'rig_file': ('', 'Rig YAML; empty = params_file.'),
    'image_transport': ('', 'raw | compressed (CompressedImage on <image topic>/compressed); empty = '
                        'params_file.'),
    'frame_id': ('', 'Body frame of the extrinsics and odometry (base_link); empty = params_file.'),
    'model_frame': ('', 'Ground-level frame of the network (base_footprint); empty = params_file.'),
    'output_frame': ('', 'model | odom: frame of the markers, cloud and grid; empty = params_file.'),
}


def _share_dir() -> str:
    """The folder holding launch/ and config/: this file's parent's parent — share/occ_ros when
    installed (colcon), the repository root in the source tree. Not the ament index: the project
    venv registers occ_ros there for its interfaces alone (scripts/build_interfaces.sh), with no
    config/, so the index sent the default params_file to a file that does not exist."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _node(context, *args, **kwargs):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    if not os.path.isfile(get('params_file')):
        # launch_ros would only warn and start the node on built-in defaults
        raise RuntimeError(f"params_file {get('params_file')!r} does not exist")
    overrides = {name: get(name) for name in PARAM_ARGS if get(name)}
    overrides['build_only'] = get('build_only').lower() in ('true', '1', 'yes')
    overrides['use_sim_time'] = get('use_sim_time').lower() in ('true', '1', 'yes')
    lifecycle = get('lifecycle').lower() in ('true', '1', 'yes') and not overrides['build_only']
    if lifecycle:
        overrides['autostart'] = get('autostart').lower() in ('true', '1', 'yes')
    remappings = []
    for cam in CAMERAS:
        for kind in ('image', 'camera_info'):
            target = get(f'{cam}_{kind}')
            if target:
                source = f'/{cam}/image_raw' if kind == 'image' else f'/{cam}/camera_info'
                if kind == 'image' and overrides.get('image_transport') == 'compressed':
                    source += '/compressed'
                remappings.append((source, target))
    common = dict(package=PACKAGE, name=get('node_name'), namespace=get('namespace'), output='screen',
                  emulate_tty=True, parameters=[get('params_file'), overrides], remappings=remappings,
                  arguments=['--ros-args', '--log-level', get('log_level')])
    if lifecycle:
        # with autostart the node configures and then activates itself (its `autostart` parameter),
        # not through launch_ros's ChangeState events: those wait for the node's change_state
        # service on a client of launch_ros's ROS adapter, and a Ctrl-C during that wait raised
        # from the destroyed adapter ('cannot use Destroyable…', `ros2 launch` exiting 1)
        from launch_ros.actions import LifecycleNode
        entities = [LifecycleNode(executable='occupancy_lifecycle_node', **common)]
    else:
        entities = [Node(executable='occupancy_node', **common)]
    node = entities[0]

    def on_exit(event, exit_context):
        # occ_ros.ros.launch_contract.launch_verdict: nothing while the launch is already shutting down
        # (Ctrl-C), Shutdown when the node finished by itself, and for a failure an exception:
        # launch does not pass a child's exit code on, and an exception from this handler ends the
        # launch with a non-zero exit, so a script (build_only:=true in CI) sees the failure
        verdict = launch_verdict(event.returncode, exit_context.is_shutdown)
        if verdict is None:
            return None
        if verdict == 'shutdown':
            return [EmitEvent(event=Shutdown(reason='occupancy_node finished'))]
        raise RuntimeError(verdict)
    return entities + [RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]


def _rviz(context, *args, **kwargs):
    if LaunchConfiguration('rviz').perform(context).lower() not in ('true', '1', 'yes'):
        return []
    if not _package_installed('rviz2'):
        # a real WARNING record (LogInfo logs at INFO; launch's LogWarning is newer than Humble/Jazzy)
        launch.logging.get_logger('launch.user').warning(
            'rviz:=true but rviz2 is not installed here: starting without RViz '
            '(install ros-$ROS_DISTRO-rviz2, or run RViz on another machine)')
        return []
    share = _share_dir()
    return [Node(package='rviz2', executable='rviz2', name='rviz2', output='log',
                 arguments=['-d', os.path.join(share, 'config', 'occupancy.rviz')],
                 parameters=[{'use_sim_time': LaunchConfiguration('use_sim_time')}])]


def _package_installed(name: str) -> bool:
    """In the ament index — what `Node(package=name)` looks up (an executable on PATH alone is not
    enough: launch would fail after the occupancy node had started, leaving it orphaned)."""
    try:
        from ament_index_python.packages import get_package_prefix
        get_package_prefix(name)
        return True
    except Exception:
        return False


def generate_launch_description() -> LaunchDescription:
    share = _share_dir()
    args = [
        DeclareLaunchArgument('params_file', default_value=os.path.join(share, 'config', 'occupancy.yaml'),
                              description='Node parameter file (/**: ros__parameters:).'),
        DeclareLaunchArgument('namespace', default_value='', description='Node namespace.'),
        DeclareLaunchArgument('node_name', default_value='occupancy_node', description='Node name.'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay with --clock).'),
        DeclareLaunchArgument('build_only', default_value='false',
                              description='Build/load the backend (TensorRT engine) and exit.'),
        DeclareLaunchArgument('log_level', default_value='info', description='Node log level.'),
        DeclareLaunchArgument('lifecycle', default_value='false',
                              description='Start occupancy_lifecycle_node (managed) instead of occupancy_node.'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='With lifecycle:=true: the node configures and activates itself '
                                          '(false: leave it unconfigured for a lifecycle manager).'),
        DeclareLaunchArgument('rviz', default_value='false', description='Also start RViz with '
                              'config/occupancy.rviz (only when rviz2 is installed; a warning otherwise).'),
        DeclareLaunchArgument('fastdds_profile',
                              default_value=os.path.join(share, 'config', 'fastdds_shm_large.xml'),
                              description='FASTDDS_DEFAULT_PROFILES_FILE for the processes started '
                                          'here (none: leave the environment alone).'),
    ]
    args += [DeclareLaunchArgument(name, default_value=default, description=desc)
             for name, (default, desc) in PARAM_ARGS.items()]
    for cam in CAMERAS:
        args += [DeclareLaunchArgument(f'{cam}_image', default_value='',
                                       description=f'Remap the {cam} image topic (empty: no remap).'),
                 DeclareLaunchArgument(f'{cam}_camera_info', default_value='',
                                       description=f'Remap the {cam} CameraInfo topic (empty: no remap).')]
    profile = SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profile'),
                                     condition=IfCondition(_profile_set('fastdds_profile')))
    return LaunchDescription(args + [profile, OpaqueFunction(function=_node), OpaqueFunction(function=_rviz)])


def _profile_set(name: str):
    """True unless the argument is 'none' (or empty, for launch front ends that accept it)."""
    from launch.substitutions import PythonExpression
    return PythonExpression(["'", LaunchConfiguration(name), "'.strip().lower() not in ('', 'none')"])
