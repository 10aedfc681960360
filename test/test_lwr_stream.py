"""The endless simulated-arm stream (lwr_sim node's core) produces what simulate() records."""

import numpy as np
import pytest

from invdyn_ros.core.lwr_sim import LwrSimConfig, simulate
from invdyn_ros.core.lwr_stream import LwrStream


def _run(stream, n, ff=None):
    rows = []
    for _ in range(n):
        stream.step(ff)
        rows.append(stream.measurement())
    t = np.array([r[0] for r in rows])
    return t, *(np.array([r[i] for r in rows]) for i in (1, 2, 3))


def test_stream_rows_equal_simulate_rows():
    ref = simulate(1.5, payload_ml=300.0, seed=4)
    t, q, qd, tau = _run(LwrStream(LwrSimConfig(payload_ml=300.0, seed=4)), len(ref))
    np.testing.assert_allclose(t, ref.t, atol=1e-12)
    np.testing.assert_allclose(q, ref.q, atol=1e-12)
    np.testing.assert_allclose(qd, ref.qd, atol=1e-12)
    np.testing.assert_allclose(tau, ref.tau, atol=1e-9)


def test_stream_runs_past_a_plan_chunk_and_changes_payload(monkeypatch):
    import invdyn_ros.core.lwr_stream as ls
    monkeypatch.setattr(ls, 'PLAN_CHUNK_S', 0.5)
    s = LwrStream(LwrSimConfig(payload_ml=200.0, seed=1, rate_hz=500.0))
    _, q1, _, tau1 = _run(s, 400)        # 0.8 s: crosses a chunk boundary
    s.set_payload(400.0)
    _, q2, _, tau2 = _run(s, 200)
    assert np.all(np.isfinite(q2)) and np.all(np.isfinite(tau2))
    with pytest.raises(ValueError):
        s.set_payload(5000.0)


def test_feedforward_changes_the_motion_and_bad_values_are_ignored():
    a = LwrStream(LwrSimConfig(seed=2), controller='pd', gain_scale=0.25)
    b = LwrStream(LwrSimConfig(seed=2), controller='pd', gain_scale=0.25)
    c = LwrStream(LwrSimConfig(seed=2), controller='pd', gain_scale=0.25)
    ff = np.full(7, 2.0)
    _, qa, _, _ = _run(a, 200)
    _, qb, _, _ = _run(b, 200, ff)
    _, qc, _, _ = _run(c, 200, np.full(7, np.nan))
    assert np.abs(qa - qb).max() > 1e-4
    np.testing.assert_array_equal(qa, qc)
    with pytest.raises(ValueError, match='controller'):
        LwrStream(controller='magic')


def test_reference_look_ahead_matches_the_reference_when_reached(monkeypatch):
    import invdyn_ros.core.lwr_stream as ls
    monkeypatch.setattr(ls, 'PLAN_CHUNK_S', 0.3)
    s = LwrStream(LwrSimConfig(seed=6, rate_hz=500.0), controller='pd')
    ahead = [np.concatenate(s.reference_at(k)) for k in range(400)]   # crosses 2 chunks
    for k in range(400):
        np.testing.assert_array_equal(np.concatenate(s.reference()), ahead[k])
        assert s.sample == k
        s.step()
    with pytest.raises(ValueError, match='past'):
        s.reference_at(3)
    assert s.true_position().shape == (7,)
