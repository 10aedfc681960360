"""The one trajectory type every loader returns and every learner consumes.

A trajectory is a time series of joint positions ``q`` [rad], velocities ``qd`` [rad/s] and
measured torques ``tau`` [Nm], each of shape (T, d) for ``d`` joints named in ``joint_names``.
Accelerations ``qdd`` [rad/s^2] are optional (most robots do not record them; see
:mod:`invdyn_ros.core.accel`). Time is given either as stamps ``t`` [s], shape (T,), strictly
increasing, or only as a nominal ``rate_hz``; stamps win whenever they exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np


class DataError(ValueError):
    """Input data is unusable; the message names the source and the problem."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f'{source}: {problem}' if source else problem)


@dataclass
class Trajectory:
    """One continuous recording of a robot arm.

    Attributes:
        q: joint positions [rad], shape (T, d).
        qd: joint velocities [rad/s], shape (T, d).
        tau: measured joint torques [Nm], shape (T, d).
        joint_names: the d joint names, in column order.
        qdd: joint accelerations [rad/s^2], shape (T, d), or None when not recorded.
        t: sample times [s], shape (T,), strictly increasing, or None when only a rate is known.
        rate_hz: nominal sample rate [Hz]; derived from ``t`` when stamps exist.
        source: where the data came from (file path and part), for error messages.
    """

    q: np.ndarray
    qd: np.ndarray
    tau: np.ndarray
    joint_names: tuple[str, ...]
    qdd: Optional[np.ndarray] = None
    t: Optional[np.ndarray] = None
    rate_hz: Optional[float] = None
    source: str = ''
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.q = np.asarray(self.q, dtype=np.float64)
        self.qd = np.asarray(self.qd, dtype=np.float64)
        self.tau = np.asarray(self.tau, dtype=np.float64)
        if self.qdd is not None:
            self.qdd = np.asarray(self.qdd, dtype=np.float64)
        if self.t is not None:
            self.t = np.asarray(self.t, dtype=np.float64)
        self.joint_names = tuple(str(n) for n in self.joint_names)
        self.validate()
        if self.t is not None and len(self.t) > 1 and self.rate_hz is None:
            self.rate_hz = float(1.0 / np.median(np.diff(self.t)))

    def __len__(self) -> int:
        return int(self.q.shape[0])

    @property
    def dof(self) -> int:
        return int(self.q.shape[1])

    def validate(self) -> None:
        """Raise :class:`DataError` naming ``source`` if shapes, names or values are unusable."""
        src = self.source
        arrays = {'q': self.q, 'qd': self.qd, 'tau': self.tau}
        if self.qdd is not None:
            arrays['qdd'] = self.qdd
        for name, a in arrays.items():
            if a.ndim != 2:
                raise DataError(src, f'{name} must be 2-D (T, d), got shape {a.shape}')
        shapes = {name: a.shape for name, a in arrays.items()}
        if len(set(shapes.values())) != 1:
            raise DataError(src, f'mismatched array shapes {shapes}')
        n, d = self.q.shape
        if n == 0 or d == 0:
            raise DataError(src, f'empty trajectory (shape {self.q.shape})')
        if len(self.joint_names) != d:
            raise DataError(
                src, f'{len(self.joint_names)} joint names for {d} columns: {self.joint_names}')
        if len(set(self.joint_names)) != d:
            raise DataError(src, f'duplicate joint names {self.joint_names}')
        for name, a in arrays.items():
            bad = ~np.isfinite(a)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DataError(
                    src, f'{int(bad.sum())} NaN/inf values in {name} (first at sample {row})')
        if self.t is not None:
            if self.t.shape != (n,):
                raise DataError(src, f't has shape {self.t.shape}, expected ({n},)')
            if not np.all(np.isfinite(self.t)):
                raise DataError(src, 'NaN/inf timestamps')
            if n > 1 and np.any(np.diff(self.t) <= 0.0):
                k = int(np.argwhere(np.diff(self.t) <= 0.0)[0][0])
                raise DataError(
                    src, f'timestamps not strictly increasing at sample {k + 1} '
                    f'({self.t[k]:.6f} s then {self.t[k + 1]:.6f} s)')
        if self.rate_hz is not None and not (np.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise DataError(src, f'rate_hz must be a positive number, got {self.rate_hz}')
        if self.t is None and self.rate_hz is None:
            raise DataError(src, 'neither timestamps t nor rate_hz given')

    def times(self) -> np.ndarray:
        """Sample times [s], shape (T,): the stamps, or k / rate_hz when there are none."""
        if self.t is not None:
            return self.t
        return np.arange(len(self), dtype=np.float64) / float(self.rate_hz)

    def select(self, joint_names: Sequence[str]) -> 'Trajectory':
        """The same trajectory restricted to ``joint_names`` (matched by name, in that order)."""
        missing = [j for j in joint_names if j not in self.joint_names]
        if missing:
            raise DataError(
                self.source, f'joints {missing} not in data (has {list(self.joint_names)})')
        idx = [self.joint_names.index(j) for j in joint_names]
        return replace(
            self, q=self.q[:, idx], qd=self.qd[:, idx], tau=self.tau[:, idx],
            qdd=None if self.qdd is None else self.qdd[:, idx], joint_names=tuple(joint_names),
            meta=dict(self.meta))

    def slice(self, start: int, stop: int) -> 'Trajectory':
        """Samples ``start:stop`` as a new trajectory."""
        return replace(
            self, q=self.q[start:stop], qd=self.qd[start:stop], tau=self.tau[start:stop],
            qdd=None if self.qdd is None else self.qdd[start:stop],
            t=None if self.t is None else self.t[start:stop], meta=dict(self.meta))

    def with_qdd(self, qdd: np.ndarray) -> 'Trajectory':
        """A copy with accelerations set (shape (T, d), rad/s^2)."""
        return replace(self, qdd=np.asarray(qdd, dtype=np.float64), meta=dict(self.meta))
