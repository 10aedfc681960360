"""invdyn: learn a robot arm's inverse dynamics with a stateful LSTM and serve it over ROS 2."""

__version__ = '0.1.0'
