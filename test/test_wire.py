"""The predictor's pre-serialized feedforward: patched bytes decode, through rclpy's own
deserializer, to exactly the messages the node used to build field by field."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from invdyn_ros.core.params import LWR_JOINTS_1_TO_5
from invdyn_ros.nodes.wire import SerializedFeedforward


@pytest.mark.parametrize('names', [LWR_JOINTS_1_TO_5, ('j',),
                                   tuple(f'joint_{i}' for i in range(7))])
def test_patched_bytes_decode_to_the_message(names):
    wire = SerializedFeedforward(names)
    rng = np.random.default_rng(len(names))
    for k in range(200):
        sec = int(rng.integers(0, 2**31 - 1)) if k else 0
        nanosec = int(rng.integers(0, 10**9))
        tau = rng.normal(0, 50, len(names))
        if k == 1:
            tau[:] = 0.0
        js_bytes, cmd_bytes = wire.fill(sec, nanosec, tau)
        js = deserialize_message(js_bytes, JointState)
        cmd = deserialize_message(cmd_bytes, Float64MultiArray)
        assert (js.header.stamp.sec, js.header.stamp.nanosec) == (sec, nanosec)
        assert js.header.frame_id == '' and list(js.name) == list(names)
        assert len(js.position) == 0 and len(js.velocity) == 0
        assert list(js.effort) == tau.tolist() and list(cmd.data) == tau.tolist()
        assert not cmd.layout.dim and cmd.layout.data_offset == 0


def test_fill_returns_independent_bytes():
    wire = SerializedFeedforward(('a', 'b'))
    first, _ = wire.fill(1, 2, np.array([1.0, 2.0]))
    wire.fill(3, 4, np.array([5.0, 6.0]))
    assert list(deserialize_message(first, JointState).effort) == [1.0, 2.0]
