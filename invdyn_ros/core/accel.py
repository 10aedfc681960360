"""Causal joint-acceleration estimation from stamped positions and velocities.

Robots report q and qd but rarely qdd, which inverse dynamics needs as input. The predictor
cannot look ahead, so the estimate must be causal; and the model must be trained on exactly the
estimate it will see online (same lag, same noise), so offline data go through the same filter,
sample by sample (:func:`estimate_accelerations` just loops :meth:`AccelEstimator.update`).

The filter: a Kalman filter per joint on the state ``[q, qd, qdd]`` with a white-jerk process
model ("constant acceleration" with jerk as white noise of spectral density ``jerk_psd``
[(rad/s^3)^2 / Hz]), measuring q and, when present, qd. The transition and process noise use the
real time step between stamps, so jitter and dropped samples are handled by construction, never by
an assumed rate. All joints share the noise settings, so one 3x3 covariance serves every joint
and a step costs a few 3x3 products whatever the number of joints.

Time handling, per :meth:`AccelEstimator.update`:

* the same stamp again (dt == 0): the sample is ignored, the last estimate returned;
* a stamp going backwards, or a gap longer than ``max_gap_s``: the filter restarts from that
  sample (qdd = 0, large uncertainty) and the caller is told, so a stateful model can reset too.
"""

from __future__ import annotations

from dataclasses import dataclass
import enum
from typing import Optional

import numpy as np

from invdyn_ros.core.trajectory import DataError, Trajectory

#: Initial acceleration uncertainty after a (re)start [rad/s^2]: large, so the first few
#: samples decide the estimate rather than the zero prior.
INITIAL_QDD_STD = 50.0


class AccelStatus(enum.Enum):
    """What one :meth:`AccelEstimator.update` did with its sample."""

    OK = 'ok'
    #: First sample, or restarted after a time jump or gap: estimate is qdd = 0.
    RESET = 'reset'
    #: Stamp equal to the previous one: sample ignored, previous estimate returned.
    DUPLICATE = 'duplicate'


@dataclass(frozen=True)
class AccelConfig:
    """Noise model of the acceleration filter.

    Attributes:
        jerk_psd: spectral density of the white jerk driving the model [(rad/s^3)^2 s];
            larger tracks faster changes with more noise.
        q_noise_std: position measurement noise [rad].
        qd_noise_std: velocity measurement noise [rad/s].
        max_gap_s: a step longer than this [s] restarts the filter (and tells the caller).
        use_velocity: fuse the measured qd; False estimates from positions alone.
    """

    jerk_psd: float = 10.0
    q_noise_std: float = 1.0e-4
    qd_noise_std: float = 5.0e-3
    max_gap_s: float = 0.1
    use_velocity: bool = True

    def validate(self) -> 'AccelConfig':
        for name in ('jerk_psd', 'q_noise_std', 'qd_noise_std', 'max_gap_s'):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f'AccelConfig.{name} must be a positive number, got {v!r}')
        return self

    def to_dict(self) -> dict:
        return {'jerk_psd': float(self.jerk_psd), 'q_noise_std': float(self.q_noise_std),
                'qd_noise_std': float(self.qd_noise_std), 'max_gap_s': float(self.max_gap_s),
                'use_velocity': bool(self.use_velocity)}

    @classmethod
    def from_dict(cls, d: dict) -> 'AccelConfig':
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known).validate()


class AccelEstimator:
    """Causal, stamp-driven acceleration estimate for ``dof`` joints (see module docstring)."""

    def __init__(self, dof: int, config: AccelConfig = AccelConfig()) -> None:
        if dof < 1:
            raise ValueError(f'dof must be >= 1, got {dof}')
        self.dof = int(dof)
        self.config = config.validate()
        self._x = np.zeros((3, self.dof))      # rows: q, qd, qdd
        self._P = np.zeros((3, 3))
        self._t: Optional[float] = None
        self._r_q = config.q_noise_std ** 2
        self._r_qd = config.qd_noise_std ** 2
        self._last_dt = -1.0
        self._F = np.eye(3)
        self._Q = np.zeros((3, 3))

    @property
    def state(self) -> np.ndarray:
        """Current estimate, shape (3, dof): rows q [rad], qd [rad/s], qdd [rad/s^2]."""
        return self._x

    def reset(self) -> None:
        """Forget everything; the next sample starts the filter afresh."""
        self._t = None

    def _start(self, t: float, q: np.ndarray, qd: Optional[np.ndarray]) -> None:
        self._t = t
        self._x[0] = q
        self._x[1] = qd if qd is not None else 0.0
        self._x[2] = 0.0
        qd_var = self._r_qd if qd is not None else INITIAL_QDD_STD ** 2
        self._P = np.diag([self._r_q, qd_var, INITIAL_QDD_STD ** 2])

    def _transition(self, dt: float) -> None:
        # Cache F and Q: at a steady rate consecutive steps share dt exactly or nearly.
        if dt == self._last_dt:
            return
        self._last_dt = dt
        self._F = np.array([[1.0, dt, 0.5 * dt * dt], [0.0, 1.0, dt], [0.0, 0.0, 1.0]])
        d2, d3 = dt * dt, dt * dt * dt
        # Discretised continuous white-jerk noise (van Loan for the triple integrator).
        self._Q = self.config.jerk_psd * np.array([
            [d3 * d2 / 20.0, d2 * d2 / 8.0, d3 / 6.0],
            [d2 * d2 / 8.0, d3 / 3.0, d2 / 2.0],
            [d3 / 6.0, d2 / 2.0, dt]])

    def update(self, t: float, q: np.ndarray, qd: Optional[np.ndarray] = None
               ) -> tuple[np.ndarray, AccelStatus]:
        """Take one sample and return the acceleration estimate.

        Args:
            t: sample stamp [s].
            q: joint positions [rad], shape (dof,).
            qd: joint velocities [rad/s], shape (dof,), or None when the robot gives none
                (also ignored when ``config.use_velocity`` is False).

        Returns:
            (qdd, status): qdd [rad/s^2] shape (dof,) (a view: copy it to keep it), and what
            happened to the sample (:class:`AccelStatus`).
        """
        if not self.config.use_velocity:
            qd = None
        if self._t is None:
            self._start(t, q, qd)
            return self._x[2], AccelStatus.RESET
        dt = t - self._t
        if dt == 0.0:
            return self._x[2], AccelStatus.DUPLICATE
        if dt < 0.0 or dt > self.config.max_gap_s:
            self._start(t, q, qd)
            return self._x[2], AccelStatus.RESET
        self._t = t
        self._transition(dt)
        F = self._F
        x = F @ self._x
        P = F @ self._P @ F.T + self._Q
        if qd is None:
            # Position only: scalar innovation variance, gain (3,).
            s = P[0, 0] + self._r_q
            k = P[:, 0] / s
            x += np.outer(k, q - x[0])
            P = P - np.outer(k, P[0])
        else:
            S = P[:2, :2].copy()
            S[0, 0] += self._r_q
            S[1, 1] += self._r_qd
            K = np.linalg.solve(S, P[:2]).T          # (3, 2) = P H^T S^-1
            innov = np.stack((q - x[0], qd - x[1]))  # (2, dof)
            x += K @ innov
            P = P - K @ P[:2]
        # Symmetrise: keeps the shared covariance well-conditioned over millions of steps.
        self._P = 0.5 * (P + P.T)
        self._x = x
        return self._x[2], AccelStatus.OK


def estimate_accelerations(traj: Trajectory, config: AccelConfig = AccelConfig()
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Run the online estimator over a whole trajectory, exactly as the predictor would.

    Args:
        traj: trajectory with stamps ``t`` (or only ``rate_hz``, then k / rate_hz).
        config: filter settings.

    Returns:
        (qdd, resets): qdd [rad/s^2] shape (T, d); resets, bool shape (T,), True where the
        filter (and so a stateful model) restarted.
    """
    t = traj.times()
    est = AccelEstimator(traj.dof, config)
    qdd = np.empty_like(traj.q)
    resets = np.zeros(len(traj), dtype=bool)
    for k in range(len(traj)):
        a, status = est.update(float(t[k]), traj.q[k], traj.qd[k])
        qdd[k] = a
        resets[k] = status is AccelStatus.RESET
    return qdd, resets


def ensure_qdd(traj: Trajectory, config: AccelConfig = AccelConfig(),
               prefer_recorded: bool = False) -> Trajectory:
    """Trajectory with ``qdd`` filled by the causal estimator.

    Recorded accelerations are kept only when ``prefer_recorded`` is set: the online predictor
    never has them, so by default a model trains on the estimate it will see in operation.
    """
    if traj.qdd is not None and prefer_recorded:
        return traj
    if len(traj) < 2:
        raise DataError(traj.source, 'need at least 2 samples to estimate accelerations')
    qdd, resets = estimate_accelerations(traj, config)
    out = traj.with_qdd(qdd)
    out.meta['accel_resets'] = np.flatnonzero(resets).tolist()
    out.meta['accel_config'] = config.to_dict()
    return out
