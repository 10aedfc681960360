"""The GP baseline node over DDS: decimated mean and std equal the offline GP's on the same
causal inputs."""

import time

import numpy as np

from ros_harness import Harness, RELIABLE, start_node, stop_node

from sensor_msgs.msg import JointState  # noqa: I100 - after the env is set
from std_msgs.msg import Float64MultiArray

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.checkpoint import save_checkpoint
from invdyn_ros.core.gp import GpConfig, train_gp
from invdyn_ros.core.lwr_sim import simulate
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J
from invdyn_ros.core.training import prepare
from invdyn_ros.core.trajectory import Trajectory

DECIMATION = 5
SEND_RATE_HZ = 300.0


def test_gp_node_publishes_decimated_mean_and_std(tmp_path):
    train = simulate(1.0, payload_ml=300.0, seed=1)
    gp, _ = train_gp([train], GpConfig(joint_names=J, rate_hz=1000.0, max_exact_points=80,
                                       subsample=True, optimizer='adam', training_iters=15,
                                       threads=1))
    path = save_checkpoint(tmp_path / 'gp.npz', gp, {'accel_config': AccelConfig().to_dict()})
    test = simulate(0.4, payload_ml=300.0, seed=2)
    p = start_node('gp_baseline', {'model_path': str(path), 'decimation': DECIMATION})
    h = Harness('gp_test')
    means, stds = [], []
    try:
        h.node.create_subscription(JointState, '/invdyn/gp/feedforward', means.append,
                                   RELIABLE)
        h.node.create_subscription(Float64MultiArray, '/invdyn/gp/std', stds.append, RELIABLE)
        pub = h.node.create_publisher(JointState, '/joint_states', RELIABLE)
        h.wait_for(lambda: pub.get_subscription_count() > 0, 60, 'the GP node to subscribe')
        time.sleep(1.0)
        # Malformed input first: refused, counted, never answered (the count below is exact).
        for fields in (dict(position=[float('nan')] * 5), dict(name=[], position=[]),
                       dict(name=[J[0]] * 5), dict(velocity=[1.0]), dict(name=['x'] + list(J[1:])),
                       dict(sec=0)):
            m = JointState(name=list(J), position=[0.1] * 5, velocity=[0.0] * 5)
            m.header.stamp.sec = fields.pop('sec', 2999)
            for f, v in fields.items():
                setattr(m, f, v)
            for _ in range(DECIMATION):
                pub.publish(m)
        t = 3000 + test.t
        for k in range(len(test)):
            m = JointState()
            ns = int(round(t[k] * 1e9))
            m.header.stamp.sec, m.header.stamp.nanosec = ns // 10**9, ns % 10**9
            m.name = list(test.joint_names)
            m.position, m.velocity = test.q[k].tolist(), test.qd[k].tolist()
            m.effort = test.tau[k].tolist()
            pub.publish(m)
            time.sleep(1.0 / SEND_RATE_HZ)
        n = len(test) // DECIMATION
        h.wait_for(lambda: len(means) >= n and len(stds) >= n, 20, 'all GP outputs')
    finally:
        h.close()
        out = stop_node(p)
    assert 'Traceback' not in out, out
    assert len(means) == n
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in means])
    k = np.arange(DECIMATION - 1, len(test), DECIMATION)
    np.testing.assert_allclose(stamps, t[k], atol=1e-6)
    tr = test.select(J)
    x = prepare([Trajectory(q=tr.q, qd=tr.qd, tau=tr.tau, t=t, joint_names=J)], J)[0].x
    mean, std = gp.predict(x[k])
    np.testing.assert_allclose(np.array([m.effort for m in means]), mean, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(np.array([s.data for s in stds]), std, rtol=1e-5, atol=1e-6)
    assert np.all(std > 0)
