"""Learn beside a running robot: the online trainer alone, recording what it sees.

    ros2 launch invdyn train.launch.py record_bag:=/data/lwr_session model:=/path/start.npz

Run the predictor elsewhere (predict.launch.py); it picks up every model the trainer publishes
on /invdyn/model, across machines. By default this trainer learns from /joint_states itself, so
it needs no predictor; input:=samples takes the predictor's sample blocks instead (less CPU).
Without a ROS install: `invdyn up train record_bag:=...`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare('invdyn'), 'config'])
    arguments = [
        DeclareLaunchArgument(
            'model', default_value='',
            description='LSTM checkpoint to start from; empty: the shipped default'),
        DeclareLaunchArgument(
            'record_bag', default_value='',
            description='folder to record joint_states into (rosbag2); empty: no recording'),
        DeclareLaunchArgument(
            'joint_states', default_value='/joint_states',
            description='topic of the robot joint states'),
        DeclareLaunchArgument(
            'input', default_value='joint_states',
            description='learn from joint_states (needs no predictor) or from the sample '
                        'blocks of a running predictor (samples, less CPU)'),
        DeclareLaunchArgument(
            'adapt', default_value='network',
            description='what the trainer adapts: network (the LSTM weights) or payload (the '
                        'load at the flange; residual_rbd models)'),
    ]
    trainer = Node(
        package='invdyn', executable='trainer', name='trainer', output='screen',
        parameters=[PathJoinSubstitution([config, 'trainer.yaml']),
                    {'model_path': LaunchConfiguration('model'),
                     'record_bag': LaunchConfiguration('record_bag'),
                     'input': LaunchConfiguration('input'),
                     'adapt': LaunchConfiguration('adapt')}],
        remappings=[('/joint_states', LaunchConfiguration('joint_states'))])
    return LaunchDescription(arguments + [trainer])
