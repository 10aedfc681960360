"""The trainer node over DDS: records what it sees into rotating rosbag2 folders that
`invdyn train --data` reads back, and stops cleanly with its recording complete."""

import time

import numpy as np

from ros_harness import Harness, RELIABLE, start_node, stop_node

from sensor_msgs.msg import JointState  # noqa: I100 - after the env is set

from invdyn_ros.core.datasets import load_trajectories
from invdyn_ros.core.lwr_sim import simulate
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5

SEND_RATE_HZ = 400.0
#: Samples before the acceleration estimate has settled, left out of torque comparisons.
SETTLE = 200


def _send(pub, traj, sec0):
    """Publish ``traj`` as JointState messages at SEND_RATE_HZ, stamped from ``sec0`` [s]."""
    for k in range(len(traj)):
        m = JointState()
        ns = int(round(traj.t[k] * 1e9))
        m.header.stamp.sec, m.header.stamp.nanosec = sec0 + ns // 10**9, ns % 10**9
        m.name = list(traj.joint_names)
        m.position, m.velocity = traj.q[k].tolist(), traj.qd[k].tolist()
        m.effort = traj.tau[k].tolist()
        pub.publish(m)
        time.sleep(1.0 / SEND_RATE_HZ)


def _zero_residual_start(tmp_path, normalizer):
    """A residual_rbd LSTM of joints 1-5 whose output is zero (the nominal model alone), its
    nominal spec and its checkpoint."""
    import torch
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics
    from invdyn_ros.core.nominal import lwr4plus_spec
    from invdyn_ros.core.training import target_meta
    spec = lwr4plus_spec(LWR_JOINTS_1_TO_5)
    torch.manual_seed(0)
    start = LstmInverseDynamics(LstmConfig(joint_names=LWR_JOINTS_1_TO_5, rate_hz=1000.0,
                                           hidden_size=8), normalizer)
    with torch.no_grad():
        start.head.weight.zero_()
        start.head.bias.zero_()
    path = save_checkpoint(tmp_path / 'start.npz', start, target_meta('residual_rbd', spec))
    return start, spec, path


def test_trainer_records_what_it_sees(tmp_path):
    rec = tmp_path / 'rec'
    traj = simulate(1.5, payload_ml=200.0, seed=3)
    p = start_node('trainer', {'input': 'joint_states', 'record_bag': str(rec),
                               'record_storage': 'sqlite3',
                               'record_max_seconds': 0.5})
    h = Harness('trainer_test')
    try:
        pub = h.node.create_publisher(JointState, '/joint_states', RELIABLE)
        h.wait_for(lambda: pub.get_subscription_count() > 0, 30, 'the trainer to subscribe')
        time.sleep(1.0)
        sec0 = 2000
        _send(pub, traj, sec0)
        time.sleep(1.0)
    finally:
        h.close()
        out = stop_node(p)
    assert p.returncode == 0, out
    assert 'Traceback' not in out, out
    bags = sorted(d for d in rec.iterdir() if (d / 'metadata.yaml').is_file())
    assert len(bags) >= 2, f'rotation by time made several bags: {bags}'
    got = load_trajectories([rec], LWR_JOINTS_1_TO_5)
    q = np.concatenate([t.q for t in got])
    assert len(q) == len(traj), 'every message recorded, none lost across rotations'
    np.testing.assert_allclose(q, traj.select(LWR_JOINTS_1_TO_5).q, atol=1e-12)


def test_trainer_learns_and_publishes_the_target_of_its_model(tmp_path):
    """A residual_rbd start model: the trainer learns the residual and every model it publishes
    carries the same target and nominal model (so the predictor keeps adding it)."""
    from std_msgs.msg import UInt8MultiArray
    from ros_harness import LATCHED
    from invdyn_ros.core.checkpoint import checkpoint_from_bytes
    from invdyn_ros.core.lstm import Normalizer
    from invdyn_ros.core.targets import spec_from_meta
    j = LWR_JOINTS_1_TO_5
    _, spec, path = _zero_residual_start(tmp_path, Normalizer.identity(15, 5))
    traj = simulate(1.5, payload_ml=400.0, seed=4)
    p = start_node('trainer', {'input': 'joint_states', 'model_path': str(path),
                               'batch_size': 32, 'context': 16,
                               'holdout_every': 2, 'publish_period_s': 0.3})
    h = Harness('trainer_target_test')
    models = []
    try:
        h.node.create_subscription(UInt8MultiArray, '/invdyn/model', models.append, LATCHED)
        pub = h.node.create_publisher(JointState, '/joint_states', RELIABLE)
        h.wait_for(lambda: pub.get_subscription_count() > 0, 30, 'the trainer to subscribe')
        time.sleep(1.0)
        _send(pub, traj, 3000)
        h.wait_for(lambda: len(models) > 0, 20, 'a published model')
    finally:
        h.close()
        out = stop_node(p)
    assert 'Traceback' not in out, out
    _, meta = checkpoint_from_bytes(bytes(models[-1].data), joint_names=list(j))
    assert meta['target'] == 'residual_rbd' and spec_from_meta(meta) == spec
    assert meta['model_version'] >= 2
    # Every model names the trainer run that published it (the predictor takes a restarted
    # trainer's models by it), one run here.
    from invdyn_ros.core.checkpoint import session_of
    runs = {session_of(checkpoint_from_bytes(bytes(m.data), joint_names=list(j))[1])
            for m in models}
    assert len(runs) == 1 and len(runs.pop()) == 16


def test_predictor_forwards_sample_blocks_the_trainer_learns_from(tmp_path):
    """The default graph: the predictor forwards accepted samples in blocks, the trainer
    (input samples) learns from them and publishes models; a malformed block is refused and
    counted, and every forwarded sample reaches the trainer."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension, UInt8MultiArray
    from ros_harness import LATCHED
    from invdyn_ros.core.samples import decode_block
    j = LWR_JOINTS_1_TO_5
    rows = 32
    traj = simulate(1.5, payload_ml=300.0, seed=6)
    pred = start_node('predictor', {'samples_per_message': rows, 'qos_depth': 1000})
    p = start_node('trainer', {'batch_size': 32, 'context': 16, 'holdout_every': 2,
                               'publish_period_s': 0.3})
    h = Harness('trainer_samples_test')
    models, blocks, diags = [], [], []
    try:
        h.node.create_subscription(UInt8MultiArray, '/invdyn/model', models.append, LATCHED)
        h.node.create_subscription(Float64MultiArray, '/invdyn/samples', blocks.append, RELIABLE)
        h.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, RELIABLE)
        pub = h.node.create_publisher(JointState, '/joint_states', RELIABLE)
        bad = h.node.create_publisher(Float64MultiArray, '/invdyn/samples', RELIABLE)
        h.wait_for(lambda: pub.get_subscription_count() > 0, 30, 'the predictor to subscribe')
        h.wait_for(lambda: bad.get_subscription_count() >= 2, 30, 'the trainer to subscribe')

        def values(node: str) -> dict:
            for d in reversed(diags):
                for st in d.status:
                    if st.name.endswith(f'invdyn: {node}'):
                        return {kv.key: kv.value for kv in st.values}
            return {}

        # The samples topic is volatile: a block sent before the predictor's publisher has
        # matched the trainer never reaches it, so wait until the predictor says both the
        # trainer and this test hear it (a loaded CI machine once took over a second).
        h.wait_for(lambda: int(values('predictor').get('samples_subscribers', 0)) >= 2, 30,
                   'the predictor to match the trainer and the test on its sample blocks',
                   state=lambda: values('predictor'))
        # Joints in reverse order, two extra ones: matched by name.
        order = list(reversed(traj.joint_names))
        idx = [traj.joint_names.index(n) for n in order]
        for k in range(len(traj)):
            m = JointState()
            ns = int(round(traj.t[k] * 1e9))
            m.header.stamp.sec, m.header.stamp.nanosec = 4000 + ns // 10**9, ns % 10**9
            m.name = order
            m.position = traj.q[k, idx].tolist()
            m.velocity = traj.qd[k, idx].tolist()
            m.effort = traj.tau[k, idx].tolist()
            pub.publish(m)
            time.sleep(1.0 / SEND_RATE_HZ)
        # A block whose layout does not match its data.
        msg = Float64MultiArray(data=[1.0] * 10)
        msg.layout.dim = [MultiArrayDimension(label='samples', size=2, stride=32),
                          MultiArrayDimension(label=','.join(j), size=16, stride=16)]
        bad.publish(msg)
        full = len(traj) // rows

        def trainer_values():
            return values('trainer')

        def scored():
            v = trainer_values()
            return int(v.get('published', 0)) + int(v.get('candidates_rejected', 0))

        # Every sample reaches the trainer and is learned from; candidates are scored. Whether
        # one beats the shipped model on this second and a half of held-back data is the
        # learner's call (core tests cover it); when one did, it reached the predictor's topic.
        h.wait_for(lambda: len(blocks) >= full
                   and trainer_values().get('rejected_bad_samples') == '1'
                   and trainer_values().get('samples') == str(full * rows)
                   and int(trainer_values().get('updates', 0)) > 0 and scored() > 0
                   and (trainer_values().get('published') == '0' or len(models) > 0), 30,
                   'blocks, the bad block counted, every sample learned from, a candidate',
                   state=lambda: {'models': len(models), 'blocks': len(blocks), 'full': full,
                                  'trainer': trainer_values()})
    finally:
        h.close()
        out = stop_node(p)
        out_pred = stop_node(pred)
    assert 'Traceback' not in out + out_pred, out + out_pred
    got = [b for b in blocks if len(b.data) == rows * 16]
    assert len(got) == full
    sel = traj.select(list(j))
    dec = [decode_block(b.data, [(d.label, d.size, d.stride) for d in b.layout.dim], list(j))
           for b in got]
    q = np.concatenate([b.q for b in dec])
    tau = np.concatenate([b.tau for b in dec])
    np.testing.assert_allclose(q, sel.q[:full * rows], atol=1e-12)
    np.testing.assert_allclose(tau, sel.tau[:full * rows], atol=1e-12)
    t = np.concatenate([b.t for b in dec])
    np.testing.assert_allclose(t - t[0], sel.t[:full * rows] - sel.t[0], atol=1e-6)


def test_trainer_adapts_the_payload_and_the_predictor_serves_it(tmp_path):
    """adapt: payload over DDS: a residual_rbd model that knows no load, 1 kg at the flange
    (flask + 800 ml): the trainer publishes the same network on a nominal model carrying the
    estimated load, and the predictor rebuilds that model and serves it."""
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import UInt8MultiArray
    from ros_harness import LATCHED
    from invdyn_ros.core.checkpoint import checkpoint_from_bytes
    from invdyn_ros.core.lstm import Normalizer
    from invdyn_ros.core.nominal import NominalModel
    from invdyn_ros.core.online import OnlinePredictor
    from invdyn_ros.core.targets import payload_mass, spec_from_meta
    j = LWR_JOINTS_1_TO_5
    start, spec, path = _zero_residual_start(tmp_path, Normalizer(
        np.zeros(15), np.ones(15), np.zeros(5), np.full(5, 10.0)))
    traj = simulate(3.0, payload_ml=800.0, seed=7)
    pred = start_node('predictor', {'model_path': str(path), 'qos_depth': 1000})
    p = start_node('trainer', {'model_path': str(path), 'adapt': 'payload',
                               'publish_period_s': 0.3})
    h = Harness('trainer_payload_test')
    models, diags = [], []

    def values(name):
        for d in reversed(diags):
            for st in d.status:
                if st.name.endswith(name):
                    return {kv.key: kv.value for kv in st.values}
        return {}
    try:
        h.node.create_subscription(UInt8MultiArray, '/invdyn/model', models.append, LATCHED)
        h.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, RELIABLE)
        pub = h.node.create_publisher(JointState, '/joint_states', RELIABLE)
        h.wait_for(lambda: pub.get_subscription_count() > 0, 30, 'the predictor to subscribe')
        h.wait_for(lambda: values('invdyn: trainer').get('adapt') == 'payload', 30,
                   'the trainer')
        _send(pub, traj, 5000)
        h.wait_for(lambda: models and values('invdyn: predictor').get('model_version') == str(
            checkpoint_from_bytes(bytes(models[-1].data), joint_names=list(j))[1][
                'model_version']), 30, 'the predictor to serve the newest payload')
    finally:
        h.close()
        out = stop_node(p)
        out_pred = stop_node(pred)
    assert 'Traceback' not in out + out_pred, out + out_pred
    net, meta = checkpoint_from_bytes(bytes(models[-1].data), joint_names=list(j))
    loaded = spec_from_meta(meta)
    assert loaded.same_model(spec, payload=False) and 0.2 < payload_mass(loaded) < 2.0
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), start.parameters()))
    # Which parameters are identified first depends on the motion seen before a publication;
    # what counts is the torque: the served model misses far less of it than without the load.
    sel = traj.select(list(j))

    def miss(nominal_spec):
        online = OnlinePredictor(start, target='residual_rbd', nominal=NominalModel(nominal_spec))
        out = np.array([online.update(sel.t[k], sel.q[k], sel.qd[k]).tau
                        for k in range(len(sel))])
        return np.sqrt(np.mean((out[SETTLE:] - sel.tau[SETTLE:]) ** 2))
    print('torque RMS missed [Nm]: no load', miss(spec), 'estimated load', miss(loaded),
          payload_mass(loaded))
    assert miss(loaded) < 0.5 * miss(spec)
    served = values('invdyn: predictor')
    assert served['payload_mass_kg'] == f'{payload_mass(loaded):.3f}'
    assert float(values('invdyn: trainer')['payload_updates']) >= 5
