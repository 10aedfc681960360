"""ROS-free core of invdyn: data, estimation, models, simulation.

Nothing under this package imports rclpy or ROS message types, so every piece is tested and
usable without a ROS installation (the nodes translate messages to arrays and call in here).
"""
