"""Tests of the paper's synthetic 1-D benchmark (invdyn_ros.core.synthetic)."""

import numpy as np
import pytest

from invdyn_ros.core.synthetic import (
    PAPER_NAIVE_MSE, SAWTOOTH_PERIOD, clean_signal, naive_mse, naive_prediction,
    synthetic_series, synthetic_trajectory)
from invdyn_ros.core.trajectory import Trajectory


def test_shapes_and_next_value_target():
    x, y = synthetic_series(500, 0.01, seed=0)
    assert x.shape == (500, 1) and y.shape == (500, 1)
    np.testing.assert_array_equal(y[:-1], x[1:])       # target = next (noisy) value


def test_seeded_and_noise_level():
    a = synthetic_series(2000, 0.1, seed=3)
    b = synthetic_series(2000, 0.1, seed=3)
    c = synthetic_series(2000, 0.1, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], c[0])
    # with the same phases (same seed), only the noise differs between the two levels
    lo, _ = synthetic_series(20000, 0.0, seed=5)
    hi, _ = synthetic_series(20000, 0.1, seed=5)
    assert np.std(hi - lo) == pytest.approx(0.1, rel=0.05)


def test_signal_is_sine_triangle_sawtooth():
    s = clean_signal(4000, np.zeros(3))
    assert np.abs(s).max() <= 3.0 + 1e-9
    jumps = np.flatnonzero(np.diff(s) < -1.0)      # the sawtooth's drops of height ~2
    assert len(jumps) == pytest.approx(4000 / SAWTOOTH_PERIOD, abs=2)
    assert np.median(np.diff(jumps)) == pytest.approx(SAWTOOTH_PERIOD, abs=1)


def test_naive_prediction_formula():
    x = np.array([[1.0], [2.0], [4.0], [3.0]])
    np.testing.assert_array_equal(naive_prediction(x), [[1.0], [3.0], [6.0], [2.0]])
    np.testing.assert_array_equal(naive_prediction(x[:, 0]), [1.0, 3.0, 6.0, 2.0])
    with pytest.raises(ValueError):
        naive_prediction(np.zeros((2, 2, 2)))


@pytest.mark.parametrize('noise, expected', [(0.01, 0.264), (0.1, 0.322)])
def test_naive_baseline_matches_paper_ballpark(noise, expected):
    mses = [naive_mse(*synthetic_series(20000, noise, seed)) for seed in range(4)]
    assert np.mean(mses) == pytest.approx(expected, abs=0.01)
    assert np.mean(mses) == pytest.approx(PAPER_NAIVE_MSE[noise], rel=0.06)


def test_noise_adds_six_sigma_squared_to_naive_error():
    clean = naive_mse(*synthetic_series(50000, 0.0, seed=1))
    noisy = naive_mse(*synthetic_series(50000, 0.1, seed=1))
    assert noisy - clean == pytest.approx(6 * 0.1 ** 2, rel=0.15)


def test_trajectory_helper():
    traj = synthetic_trajectory(300, 0.01, seed=2)
    assert isinstance(traj, Trajectory)
    assert traj.joint_names == ('x',) and len(traj) == 300 and traj.rate_hz == 1.0
    x, y = synthetic_series(300, 0.01, seed=2)
    np.testing.assert_array_equal(traj.q, x)
    np.testing.assert_array_equal(traj.tau, y)
    np.testing.assert_allclose(traj.qd[1:], np.diff(x, axis=0))


@pytest.mark.parametrize('n, noise', [(1, 0.01), (2.5, 0.01), (-3, 0.01), (10, -0.1),
                                      (10, float('nan'))])
def test_validation(n, noise):
    with pytest.raises(ValueError):
        synthetic_series(n, noise, seed=0)
