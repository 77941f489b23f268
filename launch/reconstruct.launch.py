"""Start reconstruct_node with the shipped parameters, its inputs remapped to a camera and a detector; RViz optional.

    ros2 launch mesc3d_ros reconstruct.launch.py model:=/path/to/model.json \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info detections:=/detections

Lists and other parameters belong in a params file (``params_file:=``, default config/reconstruct.yaml of this
package); the arguments here are the few scalars a user changes per run. docs/node.md describes every parameter.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare('mesc3d_ros')
    arguments = [
        DeclareLaunchArgument('model', description='Model contract JSON written by `mesc3d export` (required)'),
        DeclareLaunchArgument('backend', default_value='auto',
                              description='Inference backend: auto, tensorrt or onnxruntime'),
        DeclareLaunchArgument('use_depth', default_value='false',
                              description='Subscribe to the registered depth image and place objects with it'),
        DeclareLaunchArgument('image', default_value='image', description='Colour image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('detections', default_value='detections',
                              description='2D detections topic (vision_msgs/Detection2DArray), stamped like the image'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='CameraInfo topic of the colour image'),
        DeclareLaunchArgument('depth', default_value='depth',
                              description='Depth image registered to the colour image (16UC1 mm or 32FC1 m)'),
        DeclareLaunchArgument('namespace', default_value='', description='Namespace of the node and its topics'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution([share, 'config', 'reconstruct.yaml']),
                              description='Parameter YAML loaded before the arguments above'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='Also open RViz with config/mesc3d.rviz (image and object clouds)'),
    ]
    reconstruct = Node(
        package='mesc3d_ros', executable='reconstruct_node', name='reconstruct_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {
            'model_path': LaunchConfiguration('model'),
            'backend': LaunchConfiguration('backend'),
            'use_depth': ParameterValue(LaunchConfiguration('use_depth'), value_type=bool),
        }],
        remappings=[('image', LaunchConfiguration('image')),
                    ('detections', LaunchConfiguration('detections')),
                    ('camera_info', LaunchConfiguration('camera_info')),
                    ('depth', LaunchConfiguration('depth'))])
    rviz = Node(package='rviz2', executable='rviz2', name='mesc3d_rviz',
                arguments=['-d', PathJoinSubstitution([share, 'config', 'mesc3d.rviz'])],
                condition=IfCondition(LaunchConfiguration('rviz')))
    return LaunchDescription([*arguments, reconstruct, rviz])
