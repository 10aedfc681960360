"""Property-based tests of the predictor's core over the JointState message space: whatever
arrives, nothing raises, and every torque that comes out is finite and within its limit."""

import numpy as np
from hypothesis import given, HealthCheck, settings, strategies as st
import pytest
import torch

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.joint_map import JointMapper
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer
from invdyn_ros.core.online import OnlinePredictor

J = ('a1', 'a2', 'e1')
LIMITS = np.array([5.0, 3.0, 1.0])
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.floats(-10.0, 10.0))


@pytest.fixture(scope='module')
def predictor_factory():
    torch.manual_seed(0)
    # Large weights: outputs routinely exceed the limits, so clamping is exercised.
    norm = Normalizer(np.zeros(9), np.ones(9), np.zeros(3), np.full(3, 50.0))
    model = LstmInverseDynamics(LstmConfig(joint_names=J, rate_hz=100.0, hidden_size=8), norm)

    def make():
        return OnlinePredictor(model, AccelConfig(max_gap_s=0.05), LIMITS)
    return make


@st.composite
def messages(draw):
    names = draw(st.lists(st.sampled_from(J + ('x', 'y', '')), min_size=0, max_size=6))
    n = len(names)
    lengths = [draw(st.sampled_from([n, 0, max(n - 1, 0), n + 1])) for _ in range(3)]
    pos, vel, eff = (draw(st.lists(VALUES, min_size=k, max_size=k)) for k in lengths)
    dt = draw(st.sampled_from([0.01, 0.01, 0.01, 0.0, -0.02, 3.0, 1e-9]))
    return names, pos, vel, eff, dt


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(messages(), min_size=1, max_size=40))
def test_any_message_sequence_is_safe(predictor_factory, seq):
    pred = predictor_factory()
    mapper = JointMapper(J)
    t = 100.0
    for names, pos, vel, eff, dt in seq:
        t += dt
        mapped, why = mapper.map(names, pos, vel, eff)
        if why is not None:
            assert mapped is None
            continue
        assert np.all(np.isfinite(mapped.q))
        r = pred.update(t, mapped.q, mapped.qd)
        if r.tau is None:
            assert r.rejected is not None
            continue
        assert r.tau.shape == (3,)
        assert np.all(np.isfinite(r.tau))
        assert np.all(np.abs(r.tau) <= LIMITS)


@settings(max_examples=200, deadline=None)
@given(st.permutations(J + ('x', 'y')), st.lists(st.floats(-3, 3), min_size=5, max_size=5))
def test_mapping_is_by_name_whatever_the_order(order, values):
    mapper = JointMapper(J)
    by_name = dict(zip(J + ('x', 'y'), values))
    mapped, why = mapper.map(list(order), [by_name[n] for n in order],
                             [2 * by_name[n] for n in order], [])
    assert why is None and mapped.tau is None
    np.testing.assert_array_equal(mapped.q, [by_name[n] for n in J])
    np.testing.assert_array_equal(mapped.qd, [2 * by_name[n] for n in J])
