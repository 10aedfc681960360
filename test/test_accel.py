"""The causal acceleration estimator against analytic derivatives of known noisy signals."""

import numpy as np
import pytest

from invdyn_ros.core.accel import (AccelConfig, AccelEstimator, AccelStatus, ensure_qdd,
                                   estimate_accelerations)
from invdyn_ros.core.trajectory import Trajectory

W = np.array([1.0, 2.0, 3.5])   # rad/s
A = np.array([0.8, 0.5, 0.3])   # rad


def _signal(t):
    wt = np.outer(t, W)
    return A * np.sin(wt), A * W * np.cos(wt), -A * W * W * np.sin(wt)


def _traj(t, q_noise=1e-4, qd_noise=5e-3, seed=0):
    rng = np.random.default_rng(seed)
    q, qd, _ = _signal(t)
    return Trajectory(q=q + rng.normal(0, q_noise, q.shape),
                      qd=qd + rng.normal(0, qd_noise, q.shape), tau=np.zeros_like(q),
                      joint_names=('a', 'b', 'c'), t=t)


def _rel_rmse(est, t, skip_s=1.0):
    _, _, qdd = _signal(t)
    keep = t >= t[0] + skip_s
    err = est[keep] - qdd[keep]
    return float(np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(qdd[keep] ** 2)))


@pytest.mark.parametrize('rate', [100.0, 1000.0])
def test_accuracy_with_noise_and_jitter(rate):
    rng = np.random.default_rng(1)
    t = np.arange(0.0, 20.0, 1.0 / rate) + rng.uniform(-0.1, 0.1, int(20 * rate)) / rate
    qdd, resets = estimate_accelerations(_traj(t))
    rel = _rel_rmse(qdd, t)
    # Measured (see the issue note): ~0.09 at 1 kHz, ~0.12 at 100 Hz. The causal alternative,
    # a backward difference of the noisy velocity, is far worse, which is why a filter is used.
    assert rel < 0.15
    assert resets.sum() == 1 and resets[0]
    qd = _traj(t).qd
    backward = np.vstack((np.zeros((1, 3)), np.diff(qd, axis=0) / np.diff(t)[:, None]))
    assert _rel_rmse(backward, t) > 2 * rel


def test_uses_stamps_not_an_assumed_rate():
    """Irregular sampling (rate switching 200 Hz <-> 1 kHz) must not bias the estimate."""
    dts = np.where(np.arange(8000) % 400 < 200, 1e-3, 5e-3)
    t = np.concatenate(([0.0], np.cumsum(dts)))
    qdd, _ = estimate_accelerations(_traj(t))
    assert _rel_rmse(qdd, t) < 0.15


def test_dropped_samples_and_duplicates():
    rate = 1000.0
    t = np.arange(0.0, 10.0, 1.0 / rate)
    rng = np.random.default_rng(2)
    keep = rng.random(len(t)) > 0.2            # drop 20 % of the samples at random
    keep[:2] = True
    t = t[keep]
    tr = _traj(t)
    est = AccelEstimator(3)
    out = []
    for k in range(len(t)):
        a, status = est.update(t[k], tr.q[k], tr.qd[k])
        out.append(a.copy())
        if k % 50 == 10:
            # The same message again (duplicate stamp): ignored, same estimate back.
            a2, status2 = est.update(t[k], tr.q[k] + 1.0, tr.qd[k] + 1.0)
            assert status2 is AccelStatus.DUPLICATE
            np.testing.assert_array_equal(a2, out[-1])
    assert _rel_rmse(np.array(out), t) < 0.15


def test_reset_on_backwards_stamp_and_gap():
    est = AccelEstimator(2, AccelConfig(max_gap_s=0.05))
    q = np.zeros(2)
    assert est.update(0.0, q, q)[1] is AccelStatus.RESET
    assert est.update(0.001, q, q)[1] is AccelStatus.OK
    assert est.update(0.0005, q, q)[1] is AccelStatus.RESET      # went backwards
    assert est.update(0.0015, q, q)[1] is AccelStatus.OK
    assert est.update(0.2, q, q)[1] is AccelStatus.RESET         # gap > max_gap_s
    a, _ = est.update(0.201, q, q)
    assert np.all(np.isfinite(a))


def test_position_only_mode():
    rate = 1000.0
    t = np.arange(0.0, 10.0, 1.0 / rate)
    tr = _traj(t, q_noise=1e-5)
    qdd, _ = estimate_accelerations(tr, AccelConfig(use_velocity=False, q_noise_std=1e-5))
    assert _rel_rmse(qdd, t, skip_s=2.0) < 0.3


def test_ensure_qdd_keeps_recorded_only_on_request():
    t = np.arange(0.0, 1.0, 0.01)
    tr = _traj(t).with_qdd(np.ones((len(t), 3)))
    assert np.all(ensure_qdd(tr, prefer_recorded=True).qdd == 1.0)
    assert not np.all(ensure_qdd(tr).qdd == 1.0)


@pytest.mark.parametrize('field,value', [('jerk_psd', 0.0), ('q_noise_std', -1.0),
                                         ('max_gap_s', float('nan'))])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AccelConfig(**{field: value}).validate()


@pytest.mark.parametrize('use_velocity', [True, False])
def test_equals_a_textbook_kalman_filter(use_velocity):
    """The closed-form scalar update is the standard KF: x, P as in matrix form."""
    cfg = AccelConfig(use_velocity=use_velocity)
    rng = np.random.default_rng(5)
    est = AccelEstimator(2, cfg)
    t = np.cumsum(rng.uniform(0.5e-3, 3e-3, 400))
    q, qd = rng.normal(size=(400, 2)), rng.normal(size=(400, 2))
    est.update(t[0], q[0], qd[0])
    x = est.state.copy()
    P = est.covariance
    H = np.eye(3)[:2] if use_velocity else np.eye(3)[:1]
    R = np.diag([cfg.q_noise_std ** 2, cfg.qd_noise_std ** 2])[:len(H), :len(H)]
    for k in range(1, 400):
        dt = t[k] - t[k - 1]
        F = np.array([[1, dt, dt * dt / 2], [0, 1, dt], [0, 0, 1]])
        Q = cfg.jerk_psd * np.array([[dt ** 5 / 20, dt ** 4 / 8, dt ** 3 / 6],
                                     [dt ** 4 / 8, dt ** 3 / 3, dt ** 2 / 2],
                                     [dt ** 3 / 6, dt ** 2 / 2, dt]])
        x, P = F @ x, F @ P @ F.T + Q
        K = P @ H.T @ np.linalg.inv(H @ P @ H.T + R)
        z = np.vstack((q[k], qd[k]))[:len(H)]
        x, P = x + K @ (z - H @ x), (np.eye(3) - K @ H) @ P
        est.update(t[k], q[k], qd[k])
    np.testing.assert_allclose(est.state, x, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(est.covariance, P, rtol=1e-8, atol=1e-14)
