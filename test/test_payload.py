"""Payload adaptation: a spec's payload is a body added to the URDF (checked against Pinocchio
building the same body independently), the estimator identifies a load from what a model
misses and follows a change, and the online learner in 'adapt: payload' publishes it."""

import numpy as np
import pinocchio as pin
import pytest
import torch

from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer
from invdyn_ros.core.lwr_sim import ARMATURE, DEFAULT_URDF, HOME_Q
from invdyn_ros.core.nominal import lwr4plus_spec, NominalModel, with_payload
from invdyn_ros.core.online import OnlinePredictor
from invdyn_ros.core.online_learning import OnlineConfig, OnlineLearner
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J
from invdyn_ros.core.payload import PayloadConfig, PayloadEstimator
from invdyn_ros.core.targets import NominalSpec, payload_mass, spec_from_meta

RATE_HZ = 1000.0
#: A 0.5 kg flask 7 cm in front of and 5 cm below the flange axis (link-7 frame).
FLASK = pin.Inertia(0.5, np.array([0.07, 0.0, -0.05]), np.diag([1e-3, 1e-3, 5e-4]))
#: Twice the liquid, a little further out.
BIG_FLASK = pin.Inertia(1.0, np.array([0.08, 0.0, -0.06]), np.diag([2e-3, 2e-3, 1e-3]))


def _states(n, seed=0):
    rng = np.random.default_rng(seed)
    q = HOME_Q[:5] + rng.uniform(-0.6, 0.6, (n, 5))
    return q, rng.normal(0, 1.0, (n, 5)), rng.normal(0, 3.0, (n, 5))


def test_a_spec_payload_is_a_body_at_the_flange():
    spec = lwr4plus_spec(J)
    base = NominalModel(spec)
    assert base.payload_joint == 'lwr_a6_joint' and payload_mass(spec) == 0.0
    p = FLASK.toDynamicParameters()
    loaded = with_payload(spec, p)
    nm = NominalModel(loaded)
    assert payload_mass(loaded) == pytest.approx(0.5)
    assert nm.body_mass() == pytest.approx(base.body_mass() + 0.5)
    # Independent reference: Pinocchio appends the same body to the last joint itself.
    ref = pin.buildModelFromUrdf(DEFAULT_URDF)
    ref.armature[:] = ARMATURE
    ref.appendBodyToJoint(ref.njoints - 1, FLASK, pin.SE3.Identity())
    data = ref.createData()
    q, qd, qdd = _states(20)
    for k in range(len(q)):
        q7, qd7, qdd7 = HOME_Q.copy(), np.zeros(7), np.zeros(7)
        q7[:5], qd7[:5], qdd7[:5] = q[k], qd[k], qdd[k]
        want = pin.rnea(ref, data, q7, qd7, qdd7)[:5]
        np.testing.assert_allclose(nm.rnea(q[k], qd[k], qdd[k]), want, atol=1e-9)
        # ... and the regressor gives the payload's share of it (RNEA is linear in it).
        np.testing.assert_allclose(
            base.rnea(q[k], qd[k], qdd[k]) + base.payload_regressor(q[k], qd[k], qdd[k]) @ p,
            want, atol=1e-9)
    # Round trip through the checkpoint's JSON; the same robot with another load.
    back = spec_from_meta({'target': 'residual_rbd', 'nominal': loaded.to_dict(),
                           'joint_names': list(J)})
    assert back == loaded and not back.same_model(spec) and back.same_model(spec, payload=False)
    assert 'payload' not in spec.to_dict()                     # older files stay as they were
    assert with_payload(loaded, np.zeros(10)) == spec          # all zero: no payload


def test_a_payload_that_is_not_a_body_is_refused():
    spec = lwr4plus_spec(J)
    with pytest.raises(ValueError, match='leaves the body'):
        with_payload(spec, [-5.0] + [0.0] * 9)                  # below zero mass
    with pytest.raises(ValueError, match='payload must be empty or 10'):
        NominalSpec(spec.urdf_text, spec.joint_names, spec.urdf_joints, payload=(1.0, 2.0),
                    payload_joint='lwr_a6_joint').validate()
    with pytest.raises(ValueError, match='payload must be empty or 10'):
        NominalSpec(spec.urdf_text, spec.joint_names, spec.urdf_joints,
                    payload=(float('nan'),) * 10, payload_joint='lwr_a6_joint').validate()
    with pytest.raises(ValueError, match='go together'):
        NominalSpec(spec.urdf_text, spec.joint_names, spec.urdf_joints,
                    payload=(1.0,) * 10).validate()
    with pytest.raises(ValueError, match='not a movable joint'):
        with_payload(spec, FLASK.toDynamicParameters(), joint='lwr_flange_joint')
    d = with_payload(spec, FLASK.toDynamicParameters()).to_dict()
    d['payload'] = 'heavy'
    with pytest.raises(ValueError, match='payload must be a list'):
        NominalSpec.from_dict(d)
    with pytest.raises(ValueError, match='forgetting'):
        PayloadConfig(forgetting=1.5).validate()


def _missed(base, true, seed, n=128, noise=0.05):
    """A window of states and what a model without the load misses there [Nm]."""
    q, qd, qdd = _states(n, seed)
    rng = np.random.default_rng(seed + 1000)
    miss = np.array([true.rnea(q[k], qd[k], qdd[k]) - base.rnea(q[k], qd[k], qdd[k])
                     for k in range(n)]) + rng.normal(0, noise, (n, 5))
    return np.hstack((q, qd, qdd)), miss


def test_estimator_identifies_a_load_and_follows_a_change():
    spec = lwr4plus_spec(J)
    base = NominalModel(spec)
    flask, big = (NominalModel(with_payload(spec, b.toDynamicParameters()))
                  for b in (FLASK, BIG_FLASK))
    est = PayloadEstimator(base, y_std=np.full(5, 10.0))
    for w in range(20):
        est.update(*_missed(base, flask, w))
    x, miss = _missed(base, flask, 999, noise=0.0)
    # The load's torque is predicted in poses the fit never saw (the parameters are physical).
    assert np.sqrt(np.mean((est.torque(x) - miss) ** 2)) < 0.05 * np.sqrt(np.mean(miss ** 2))
    assert est.resets == 0
    # A heavier flask: two windows in a row with a jump in error, the old data is forgotten,
    # and a few windows later the new load is predicted as well.
    for w in range(6):
        est.update(*_missed(base, big, 100 + w))
    assert est.resets == 1
    x, miss = _missed(base, big, 998, noise=0.0)
    assert np.sqrt(np.mean((est.torque(x) - miss) ** 2)) < 0.05 * np.sqrt(np.mean(miss ** 2))
    # A window right after a sequence start neither resets nor sets the error level; a
    # non-finite one is discarded and changes nothing.
    before = est.params.copy()
    x, miss = _missed(base, base, 5)
    miss[3, 2] = np.nan
    assert est.update(x, miss) is False and est.discarded == 1
    np.testing.assert_array_equal(est.params, before)
    est.update(*_missed(base, flask, 7), warm=False)
    assert est.resets == 1


def _trajectory(seconds, seed=0):
    """Smooth motion of joints 1-5 around the home pose: t [s], q, qd, qdd (T, 5)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    w = rng.uniform(1.0, 3.0, 5)
    a = rng.uniform(0.2, 0.5, 5)
    ph = rng.uniform(0, 2 * np.pi, 5)
    q = HOME_Q[:5] + a * np.sin(np.outer(t, w) + ph)
    qd = a * w * np.cos(np.outer(t, w) + ph)
    qdd = -a * w * w * np.sin(np.outer(t, w) + ph)
    return t, q, qd, qdd


def _zero_residual_model():
    """A residual LSTM that outputs zero: the nominal model alone."""
    torch.manual_seed(0)
    m = LstmInverseDynamics(LstmConfig(joint_names=J, rate_hz=RATE_HZ, hidden_size=8),
                            Normalizer(np.zeros(15), np.ones(15), np.zeros(5),
                                       np.full(5, 10.0)))
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.zero_()
    return m.eval()


def test_online_learner_publishes_the_payload_and_the_predictor_serves_it():
    spec = lwr4plus_spec(J)
    base = NominalModel(spec)
    true = NominalModel(with_payload(spec, FLASK.toDynamicParameters()))
    model = _zero_residual_model()
    learner = OnlineLearner(model, config=OnlineConfig(adapt='payload'),
                            target='residual_rbd', nominal=base)
    net = [p.detach().clone() for p in learner.published.parameters()]
    t, q, qd, qdd = _trajectory(6.0)
    tau = np.array([true.rnea(q[k], qd[k], qdd[k]) for k in range(len(t))])
    for k in range(len(t)):
        learner.add_sample(t[k], q[k], qd[k], tau[k])
        learner.train_pending()
    assert learner.stats['payload_updates'] > 20 and learner.stats['updates'] == 0
    published = learner.candidate()
    assert published is not None and learner.model_version == 1
    # The network is the one in operation; the nominal model now carries the load.
    assert all(torch.equal(a, b) for a, b in zip(net, published.parameters()))
    spec2 = learner.published_spec
    assert spec2.same_model(spec, payload=False) and not spec2.same_model(spec)
    assert 0.3 < payload_mass(spec2) < 0.8
    # Served as the predictor does: before the swap it misses the load, after it does not.
    pred = OnlinePredictor(published, target='residual_rbd', nominal=base)
    t2, q2, qd2, qdd2 = _trajectory(2.0, seed=1)
    truth = np.array([true.rnea(q2[k], qd2[k], qdd2[k]) for k in range(len(t2))])
    half = len(t2) // 2
    out = np.array([pred.update(t2[k], q2[k], qd2[k]).tau for k in range(half)])
    pred.swap_model(published, nominal=NominalModel(spec2))
    out = np.vstack((out, [pred.update(t2[k], q2[k], qd2[k]).tau
                           for k in range(half, len(t2))]))
    settle = 200           # the acceleration estimate settles after the start
    err_before = np.sqrt(np.mean((out[settle:half] - truth[settle:half]) ** 2))
    err_after = np.sqrt(np.mean((out[half:] - truth[half:]) ** 2))
    assert err_after < 0.3 * err_before


def test_payload_adaptation_needs_a_residual_rbd_model():
    model = _zero_residual_model()
    base = NominalModel(lwr4plus_spec(J))
    with pytest.raises(ValueError, match="needs a 'residual_rbd' model"):
        OnlineLearner(model, config=OnlineConfig(adapt='payload'))
    with pytest.raises(ValueError, match="needs a 'residual_rbd' model"):
        OnlineLearner(model, config=OnlineConfig(adapt='payload'), target='residual_gravity',
                      nominal=base)
    with pytest.raises(ValueError, match='adapt must be one of'):
        OnlineLearner(model, config=OnlineConfig(adapt='everything'), target='residual_rbd',
                      nominal=base)
