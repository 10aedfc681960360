"""Causal joint-acceleration estimation from stamped positions and velocities.

Robots report q and qd but rarely qdd, which inverse dynamics needs as input. The predictor
cannot look ahead, so the estimate must be causal; and the model must be trained on exactly the
estimate it will see online (same lag, same noise), so offline data go through the same filter,
sample by sample (:func:`estimate_accelerations` just loops :meth:`AccelEstimator.update`).

The filter: a Kalman filter per joint on the state ``[q, qd, qdd]`` with a white-jerk process
model ("constant acceleration" with jerk as white noise of spectral density ``jerk_psd``
[(rad/s^3)^2 / Hz]), measuring q and, when present, qd. The transition and process noise use the
real time step between stamps, so jitter and dropped samples are handled by construction, never by
an assumed rate. All joints share the noise settings, so one 3x3 covariance (six floats)
serves every joint and a step costs two small matrix products whatever the number of joints.

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
        # Two alternating work buffers (5, dof): rows 0-2 the state q, qd, qdd, rows 3-4 the
        # measurement q, qd. An update is then one (3, 5) @ (5, dof) product from one buffer
        # into the other, with no allocation but the small gain matrix.
        self._buf = np.zeros((2, 5, self.dof))
        self._cur = 0
        self._x = self._buf[0, :3]             # the current state, rows: q, qd, qdd
        self._views = tuple((self._buf[i], self._buf[i, :4], self._buf[i, :3]) for i in (0, 1))
        # The shared 3x3 covariance as six Python floats: at this size scalar arithmetic is
        # several times faster than numpy calls, and this runs on every /joint_states message.
        self._P = (0.0,) * 6                   # p00, p01, p02, p11, p12, p22
        self._t: Optional[float] = None
        self._r_q = config.q_noise_std ** 2
        self._r_qd = config.qd_noise_std ** 2
        self._s = float(config.jerk_psd)

    @property
    def state(self) -> np.ndarray:
        """Current estimate, shape (3, dof): rows q [rad], qd [rad/s], qdd [rad/s^2]."""
        return self._x

    @property
    def covariance(self) -> np.ndarray:
        """The shared state covariance (3, 3) (same for every joint)."""
        p00, p01, p02, p11, p12, p22 = self._P
        return np.array([[p00, p01, p02], [p01, p11, p12], [p02, p12, p22]])

    def reset(self) -> None:
        """Forget everything; the next sample starts the filter afresh."""
        self._t = None

    def _start(self, t: float, q: np.ndarray, qd: Optional[np.ndarray]) -> None:
        self._t = t
        self._x[0] = q
        self._x[1] = qd if qd is not None else 0.0
        self._x[2] = 0.0
        qd_var = self._r_qd if qd is not None else INITIAL_QDD_STD ** 2
        self._P = (self._r_q, 0.0, 0.0, qd_var, 0.0, INITIAL_QDD_STD ** 2)

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
        # Predict: P <- F P F^T + Q, F = [[1, dt, h], [0, 1, dt], [0, 0, 1]], h = dt^2 / 2,
        # Q the discretised white-jerk noise (van Loan for the triple integrator).
        p00, p01, p02, p11, p12, p22 = self._P
        h = 0.5 * dt * dt
        d2, d3 = dt * dt, dt * dt * dt
        s = self._s
        a0 = p00 + dt * p01 + h * p02          # row 0 of F P
        a1 = p01 + dt * p11 + h * p12
        a2 = p02 + dt * p12 + h * p22
        b1 = p11 + dt * p12                    # row 1 of F P
        b2 = p12 + dt * p22
        m00 = a0 + dt * a1 + h * a2 + s * d3 * d2 / 20.0
        m01 = a1 + dt * a2 + s * d2 * d2 / 8.0
        m02 = a2 + s * d3 / 6.0
        m11 = b1 + dt * b2 + s * d3 / 3.0
        m12 = b2 + s * d2 / 2.0
        m22 = p22 + s * dt
        src, src_pos, _ = self._views[self._cur]
        nxt = 1 - self._cur
        dst = self._views[nxt][2]
        src[3] = q
        if qd is None:
            # Position only: K = P[:, 0] / (P00 + r_q).
            inv = 1.0 / (m00 + self._r_q)
            k0, k1, k2 = m00 * inv, m01 * inv, m02 * inv
            self._P = (m00 - k0 * m00, m01 - k0 * m01, m02 - k0 * m02,
                       m11 - k1 * m01, m12 - k1 * m02, m22 - k2 * m02)
            # x <- (I - K H) F x + K q, as one (3, 4) @ [x; q] product.
            gain = np.array((1.0 - k0, (1.0 - k0) * dt, (1.0 - k0) * h, k0,
                             -k1, 1.0 - k1 * dt, dt - k1 * h, k1,
                             -k2, -k2 * dt, 1.0 - k2 * h, k2)).reshape(3, 4)
            np.dot(gain, src_pos, out=dst)
        else:
            # K = P H^T S^-1 with S = P[:2, :2] + R (2 x 2, inverted in closed form).
            s00, s01, s11 = m00 + self._r_q, m01, m11 + self._r_qd
            inv = 1.0 / (s00 * s11 - s01 * s01)
            i00, i01, i11 = s11 * inv, -s01 * inv, s00 * inv
            k00, k01 = m00 * i00 + m01 * i01, m00 * i01 + m01 * i11
            k10, k11 = m01 * i00 + m11 * i01, m01 * i01 + m11 * i11
            k20, k21 = m02 * i00 + m12 * i01, m02 * i01 + m12 * i11
            # P <- P - K P[:2, :]
            self._P = (m00 - k00 * m00 - k01 * m01, m01 - k00 * m01 - k01 * m11,
                       m02 - k00 * m02 - k01 * m12, m11 - k10 * m01 - k11 * m11,
                       m12 - k10 * m02 - k11 * m12, m22 - k20 * m02 - k21 * m12)
            # x <- (I - K H) F x + K z, with H F = [[1, dt, h], [0, 1, dt]]: one (3, 5) @
            # [x; q; qd] product.
            src[4] = qd
            gain = np.array((
                1.0 - k00, dt - k00 * dt - k01, h - k00 * h - k01 * dt, k00, k01,
                -k10, 1.0 - k10 * dt - k11, dt - k10 * h - k11 * dt, k10, k11,
                -k20, -k20 * dt - k21, 1.0 - k20 * h - k21 * dt, k20, k21)).reshape(3, 5)
            np.dot(gain, src, out=dst)
        self._cur = nxt
        self._x = dst
        return dst[2], AccelStatus.OK


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
