"""
Start reconstruct_node with a params file, its inputs remapped to a camera and a detector; RViz optional.

    ros2 launch mesc3d_ros reconstruct.launch.py \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info detections:=/detections

Without ``model:=`` the node runs the package's shipped model (``share/mesc3d_ros/models``). Every parameter comes
from ``params_file`` (default: config/reconstruct.yaml of this package); ``model``, ``backend`` and ``use_depth``
override it only when they are given on the command line. ``rviz:=true`` opens RViz if rviz2 is installed and
otherwise says so and runs the node alone. docs/node.md describes every parameter.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'mesc3d_ros'
OVERRIDES = {  # launch argument -> node parameter; '' (the default) = keep the params file's value
    'model': 'model_path',
    'backend': 'backend',
    'use_depth': 'use_depth',
}
TOPICS = ('image', 'detections', 'camera_info', 'depth')


def _rviz_installed() -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        return False
    return True


def _actions(context: LaunchContext) -> list:
    """Return the node with only the overrides that were given; RViz when asked for and installed."""
    overrides = {}
    for argument, parameter in OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context)
        if value == '':
            continue
        if parameter == 'use_depth':
            if value.lower() not in ('true', 'false'):
                raise ValueError(f'use_depth:={value!r}: expected true or false')
            value = value.lower() == 'true'
        overrides[parameter] = value
    actions = [Node(
        package=PACKAGE, executable='reconstruct_node', name='reconstruct_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=[(topic, LaunchConfiguration(topic)) for topic in TOPICS])]
    if LaunchConfiguration('rviz').perform(context).lower() == 'true':
        if _rviz_installed():
            actions.append(Node(package='rviz2', executable='rviz2', name='mesc3d_rviz', output='screen',
                                arguments=['-d', PathJoinSubstitution([FindPackageShare(PACKAGE), 'config',
                                                                       'mesc3d.rviz'])]))
        else:
            actions.append(LogInfo(msg='rviz:=true but rviz2 is not installed (e.g. apt install ros-jazzy-rviz2): '
                                       'running reconstruct_node without RViz'))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    from_params = 'empty = the value in params_file'
    arguments = [
        DeclareLaunchArgument('model', default_value='', description='Model contract JSON written by `mesc3d '
                              f'export`, or the name of a shipped model; {from_params} (the shipped model)'),
        DeclareLaunchArgument('backend', default_value='',
                              description=f'Inference backend: auto, tensorrt or onnxruntime; {from_params}'),
        DeclareLaunchArgument('use_depth', default_value='',
                              description='true: subscribe to the registered depth image and place objects with '
                              f'it; {from_params}'),
        DeclareLaunchArgument('image', default_value='image', description='Colour image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('detections', default_value='detections',
                              description='2D detections topic (vision_msgs/Detection2DArray), stamped like the image'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='CameraInfo topic of the colour image'),
        DeclareLaunchArgument('depth', default_value='depth',
                              description='Depth image registered to the colour image (16UC1 mm or 32FC1 m)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node and its relative topics (outputs become '
                              '/<namespace>/mesc3d/points, ...)'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution([share, 'config', 'reconstruct.yaml']),
                              description='Parameter YAML of the node; model, backend and use_depth override it only '
                              'when they are given'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='true: also open RViz with config/mesc3d.rviz (skipped with a message '
                              'when rviz2 is not installed)'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_actions)])
