"""The synthetic 1-D benchmark of Rueckert et al. (Humanoids 2017, Sec. IV-A, Table I).

A 1-D signal is the sum of a sine, a triangle and a sawtooth wave plus Gaussian noise (std 0.01
or 0.1). The task is one-step-ahead prediction: the input is the current noisy value x[k], the
target the next noisy value x[k+1]. The paper's baseline is the naive "state plus velocity"
extrapolation ``y_hat[k] = x[k] + (x[k] - x[k-1])``, with MSE 0.264 (noise 0.01) and 0.310
(noise 0.1).

The paper does not give periods or amplitudes, so they are chosen here to reproduce those
baseline numbers. With unit amplitudes and a sample period of 1, the naive error has two parts:
each sawtooth jump of height 2 costs about 2^2 twice (at the jump and at the next sample,
whose velocity estimate contains the jump), i.e. ``8 / P_saw`` per sample, and the noise costs
``(1 + 4 + 1) sigma^2`` (the second difference of white noise). The smooth sine and triangle add
only ~0.01. ``P_saw = 31`` samples then gives, over long series (n = 1e5, averaged over seeds):

    noise 0.01: naive MSE 0.264   (paper 0.264)
    noise 0.1:  naive MSE 0.322   (paper 0.310)

The periods (20, 47, 31 samples) are incommensurate so the sum does not repeat within typical
series lengths; each seed draws random phases, so different seeds give different series.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from invdyn_ros.core.trajectory import Trajectory

#: Periods of the three components [samples].
SINE_PERIOD = 20.0
TRIANGLE_PERIOD = 47.0
SAWTOOTH_PERIOD = 31.0
#: Amplitudes (each component spans [-A, A]).
SINE_AMPLITUDE = 1.0
TRIANGLE_AMPLITUDE = 1.0
SAWTOOTH_AMPLITUDE = 1.0
#: The paper's two noise levels (std) and its naive-baseline MSE at each (Table I).
PAPER_NOISE_LEVELS = (0.01, 0.1)
PAPER_NAIVE_MSE = {0.01: 0.264, 0.1: 0.310}


def clean_signal(n: int, phases: np.ndarray) -> np.ndarray:
    """Noise-free sum of sine, triangle and sawtooth at samples 0..n-1, shape (n,).

    Args:
        n: number of samples.
        phases: phase of each component as a fraction of its period, shape (3,).
    """
    k = np.arange(n, dtype=np.float64)
    sine = SINE_AMPLITUDE * np.sin(2.0 * np.pi * (k / SINE_PERIOD + phases[0]))
    u = np.mod(k / TRIANGLE_PERIOD + phases[1], 1.0)
    triangle = TRIANGLE_AMPLITUDE * (4.0 * np.abs(u - 0.5) - 1.0)
    w = np.mod(k / SAWTOOTH_PERIOD + phases[2], 1.0)
    sawtooth = SAWTOOTH_AMPLITUDE * (2.0 * w - 1.0)
    return sine + triangle + sawtooth


def _check(n: int, noise: float) -> tuple[int, float]:
    if isinstance(n, bool) or int(n) != n or int(n) < 2:
        raise ValueError(f'n must be an integer >= 2, got {n!r}')
    noise = float(noise)
    if not (np.isfinite(noise) and noise >= 0.0):
        raise ValueError(f'noise must be a non-negative std, got {noise!r}')
    return int(n), noise


def synthetic_series(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's one-step-ahead prediction set.

    Args:
        n: number of (input, target) pairs.
        noise: std of the additive Gaussian noise (the paper uses 0.01 and 0.1).
        seed: seeds the component phases and the noise.

    Returns:
        x: noisy value at step k, shape (n, 1).
        y: noisy value at step k + 1 (the target), shape (n, 1); ``y[k] == x[k + 1]``.
    """
    n, noise = _check(n, noise)
    rng = np.random.default_rng(seed)
    phases = rng.random(3)
    z = clean_signal(n + 1, phases) + noise * rng.standard_normal(n + 1)
    return z[:-1, None].copy(), z[1:, None].copy()


def naive_prediction(x: np.ndarray) -> np.ndarray:
    """The paper's "state plus velocity" baseline ``y_hat[k] = x[k] + (x[k] - x[k-1])``.

    Args:
        x: inputs, shape (n, 1) or (n,).

    Returns:
        Predictions of the next value, same shape as ``x``. The first sample has no velocity
        estimate and predicts ``x[0]``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[0] < 1:
        raise ValueError(f'x must have shape (n,) or (n, 1), got {x.shape}')
    y_hat = x.copy()
    y_hat[1:] = 2.0 * x[1:] - x[:-1]
    return y_hat


def naive_mse(x: np.ndarray, y: np.ndarray) -> float:
    """MSE of :func:`naive_prediction` on (x, y), skipping sample 0 (no velocity there)."""
    y_hat = naive_prediction(x)
    y = np.asarray(y, dtype=np.float64).reshape(y_hat.shape)
    return float(np.mean((y_hat[1:] - y[1:]) ** 2))


def synthetic_trajectory(n: int, noise: float, seed: int,
                         source: Optional[str] = None) -> Trajectory:
    """The set as a 1-joint :class:`Trajectory` for the common training pipeline.

    ``q`` is the noisy value x[k], ``qd`` its backward difference (0 at k = 0), ``tau`` the
    target x[k+1]; one sample per second (``rate_hz`` 1), joint name ``'x'``.
    """
    x, y = synthetic_series(n, noise, seed)
    qd = np.zeros_like(x)
    qd[1:] = x[1:] - x[:-1]
    return Trajectory(q=x, qd=qd, tau=y, joint_names=('x',), rate_hz=1.0,
                      source=source or f'synthetic noise={noise:g} seed={seed}',
                      meta={'noise': float(noise), 'seed': seed})
