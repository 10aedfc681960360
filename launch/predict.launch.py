"""Feedforward torques from /joint_states: the predictor, optionally with the online trainer,
the GP baseline and the simulated KUKA LWR 4+.

    ros2 launch invdyn predict.launch.py                       # predictor, shipped model
    ros2 launch invdyn predict.launch.py sim:=true trainer:=true gp:=true gp_model:=/path/gp.npz
    ros2 launch invdyn predict.launch.py model:=/path/model.npz joint_states:=/lbr/joint_states
    ros2 launch invdyn predict.launch.py model:=/path/residual.npz trainer:=true adapt:=payload

Without a ROS install, `invdyn up predict sim:=true ...` starts the same processes
(invdyn_ros/graph.py; test/test_launch.py keeps the two in step).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare('invdyn'), 'config'])
    joint_states = LaunchConfiguration('joint_states')
    model = LaunchConfiguration('model')

    arguments = [
        DeclareLaunchArgument(
            'sim', default_value='false',
            description='start the simulated KUKA LWR 4+ (lwr_sim) publishing joint_states'),
        DeclareLaunchArgument(
            'trainer', default_value='false',
            description='start the online trainer, which publishes improved models'),
        DeclareLaunchArgument(
            'gp', default_value='false',
            description='start the GP baseline beside the LSTM (needs gp_model)'),
        DeclareLaunchArgument(
            'model', default_value='',
            description='LSTM checkpoint for predictor and trainer; empty: the shipped default'),
        DeclareLaunchArgument(
            'gp_model', default_value='',
            description='GP checkpoint for the GP baseline'),
        DeclareLaunchArgument(
            'joint_states', default_value='/joint_states',
            description='topic of the robot joint states'),
        DeclareLaunchArgument(
            'adapt', default_value='network',
            description='what the trainer adapts: network (the LSTM weights) or payload (the '
                        'load at the flange; residual_rbd models)'),
    ]

    lwr_sim = Node(
        package='invdyn', executable='lwr_sim', name='lwr_sim', output='screen',
        parameters=[PathJoinSubstitution([config, 'lwr_sim.yaml'])],
        remappings=[('/joint_states', joint_states)],
        condition=IfCondition(LaunchConfiguration('sim')))
    predictor = Node(
        package='invdyn', executable='predictor', name='predictor', output='screen',
        parameters=[PathJoinSubstitution([config, 'predictor.yaml']), {'model_path': model}],
        remappings=[('/joint_states', joint_states)])
    trainer = Node(
        package='invdyn', executable='trainer', name='trainer', output='screen',
        parameters=[PathJoinSubstitution([config, 'trainer.yaml']),
                    {'model_path': model, 'adapt': LaunchConfiguration('adapt')}],
        remappings=[('/joint_states', joint_states)],
        condition=IfCondition(LaunchConfiguration('trainer')))
    gp_baseline = Node(
        package='invdyn', executable='gp_baseline', name='gp_baseline', output='screen',
        parameters=[PathJoinSubstitution([config, 'gp_baseline.yaml']),
                    {'model_path': LaunchConfiguration('gp_model')}],
        remappings=[('/joint_states', joint_states)],
        condition=IfCondition(LaunchConfiguration('gp')))

    return LaunchDescription(arguments + [lwr_sim, predictor, trainer, gp_baseline])
