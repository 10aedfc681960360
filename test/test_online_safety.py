"""A glitch that passes as a number (a position of 50 rad, 1e15, 1e100) is refused by the
online predictor like a NaN, so it never reaches the acceleration filter: without that, one
such sample spoils every torque for up to seconds (measured: up to 40 Nm off for 0.25-2 s)."""

import numpy as np
import pytest

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.checkpoint import load_lstm_weights
from invdyn_ros.core.lwr_sim import simulate
from invdyn_ros.core.online import (input_half_widths, MAX_INPUT_STD, OnlinePredictor,
                                    Rejection)
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J, LWR_TORQUE_LIMITS_1_TO_5 as LIM
from invdyn_ros.nodes.common import default_model_path

GLITCH_AT = 300


@pytest.fixture(scope='module')
def setup():
    w, meta = load_lstm_weights(default_model_path('lwr4plus_j1-5_lstm.npz'))
    accel = AccelConfig.from_dict(meta.get('accel_config', {}))
    return w, accel, simulate(1.0, payload_ml=300.0, seed=1).select(J)


@pytest.mark.parametrize('field', ['q', 'qd'])
@pytest.mark.parametrize('value', [50.0, -1e3, 1e15, 1e100])
def test_a_glitch_is_refused_and_changes_nothing_after_it(setup, field, value):
    w, accel, tr = setup
    pred, ref = OnlinePredictor(w, accel, LIM), OnlinePredictor(w, accel, LIM)
    for k in range(len(tr)):
        t = 1000.0 + tr.t[k]
        if k == GLITCH_AT:
            q, qd = tr.q[k].copy(), tr.qd[k].copy()
            (q if field == 'q' else qd)[1] = value
            r = pred.update(t, q, qd)
            assert r.tau is None and r.rejected is Rejection.OUT_OF_RANGE
            continue            # the reference never sees that sample at all
        r, r0 = pred.update(t, tr.q[k], tr.qd[k]), ref.update(t, tr.q[k], tr.qd[k])
        np.testing.assert_array_equal(r.tau, r0.tau)


def test_every_reachable_pose_and_speed_is_accepted(setup):
    """No false refusals: the LWR's whole joint range (+-170 deg) and speeds well beyond its
    maximum (2 rad/s) lie inside the bounds."""
    w, accel, _ = setup
    pred = OnlinePredictor(w, accel, LIM)
    rng = np.random.default_rng(0)
    for k in range(2000):
        q = rng.uniform(-2.97, 2.97, 5)
        qd = rng.uniform(-6.0, 6.0, 5)
        r = pred.update(1.0 + k * 1e-3, q, qd if k % 2 else None)
        assert r.rejected is not Rejection.OUT_OF_RANGE, (q, qd)
    q_half, qd_half = input_half_widths(w.normalizer, 5)
    assert q_half.min() > 2 * 2.97 and qd_half.min() >= 10.0       # margins
    # A joint that never moved in the training data (its std at the floor) keeps a full turn.
    flat = load_lstm_weights(default_model_path('lwr4plus_j1-5_lstm.npz'))[0]
    flat.normalizer.x_std[:10] = 1e-3
    pred = OnlinePredictor(flat, accel, LIM)
    assert pred.update(1.0, flat.normalizer.x_mean[:5] + 6.0, None).rejected is None
    assert pred.update(1.001, flat.normalizer.x_mean[:5] + 6.5, None).rejected is \
        Rejection.OUT_OF_RANGE


def test_bounds_follow_a_swapped_model(setup):
    w, accel, tr = setup
    pred = OnlinePredictor(w, accel, LIM)
    q = tr.q[0].copy()
    q[0] = w.normalizer.x_mean[0] + 0.5 * MAX_INPUT_STD * w.normalizer.x_std[0]
    assert pred.update(1.0, q, tr.qd[0]).rejected is not Rejection.OUT_OF_RANGE
    narrow = load_lstm_weights(default_model_path('lwr4plus_j1-5_lstm.npz'))[0]
    narrow.normalizer.x_std[:5] *= 0.1       # a model trained on a tenth of the motion
    pred.swap_model(narrow)
    assert pred.update(1.001, q, tr.qd[0]).rejected is Rejection.OUT_OF_RANGE
