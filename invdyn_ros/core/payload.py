"""Online estimate of a changed payload: recursive least squares on 10 inertial parameters.

When the arm picks up a heavier flask or another tool, what changes is physical: the mass,
centre of mass and inertia of the body at the flange. The torque of such a change is linear in
those 10 dynamic parameters, ``tau_payload = Y(q, qd, qdd) p`` with ``Y`` the joint torque
regressor of the flange body (:meth:`~invdyn_ros.core.nominal.NominalModel.payload_regressor`).
:class:`PayloadEstimator` fits ``p`` to what the learned model misses, window by window, by
exponentially weighted least squares (recursive least squares with forgetting), with the
same change detection as the trainer's output-layer fit (:mod:`invdyn_ros.core.change`): two
windows in a row whose error (after the current estimate) jumps above ``jump_factor`` times
its running mean make it forget everything before them, so a new load is fitted from its
first quarter second on.

Why physical parameters and not the network: a fit of the network (its weights or its output
layer) to the data after a change is local, it corrects the motions seen since the change and
extrapolates wrongly elsewhere; ten rigid-body parameters predict the new load's torque in any
pose and motion once they are identified. (Measured on the simulated LWR's payload switch, see
:mod:`invdyn_ros.experiments.control`.) With the joints that do not move held, not every
parameter is identifiable from the joints the model covers; the ridge keeps the unidentifiable
directions at zero, where they do not affect the predicted torque of those joints anyway.

Units: errors and regressors are divided by the model's per-joint torque standard deviation,
so each joint weighs as much as in the network's loss.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional

import numpy as np

from invdyn_ros.core.change import ChangeDetector
from invdyn_ros.core.targets import PAYLOAD_PARAMS

N_PARAMS = len(PAYLOAD_PARAMS)


@dataclass(frozen=True)
class PayloadConfig:
    """Settings of :class:`PayloadEstimator` (the trainer's ``payload_*`` parameters)."""

    #: Per-sample forgetting factor (0.9998: a memory of ~5000 samples, 5 s at 1 kHz).
    forgetting: float = 0.9998
    #: Ridge weight pulling the estimate towards no change [-] (normalised units).
    ridge: float = 1.0
    #: Two windows in a row with an error above this factor times its running mean make the
    #: estimate forget the data before them (0: never).
    jump_factor: float = 4.0

    def validate(self) -> 'PayloadConfig':
        if not (0.0 < self.forgetting <= 1.0):
            raise ValueError(f'payload forgetting must be in (0, 1], got {self.forgetting!r}')
        if not (self.ridge > 0.0 and math.isfinite(self.ridge)):
            raise ValueError(f'payload ridge must be > 0, got {self.ridge!r}')
        if not (self.jump_factor >= 0.0 and math.isfinite(self.jump_factor)):
            raise ValueError(f'payload jump_factor must be >= 0, got {self.jump_factor!r}')
        return self


class PayloadEstimator:
    """See the module docstring. ``nominal``: a NominalModel (its payload joint's body is the
    one estimated); ``y_std``: per-joint torque scale (d,) [Nm]."""

    def __init__(self, nominal, y_std: np.ndarray,
                 config: PayloadConfig = PayloadConfig()) -> None:
        self.config = config.validate()
        self._nominal = nominal
        self.dof = nominal.dof
        self._y_std = np.asarray(y_std, dtype=np.float64)
        if self._y_std.shape != (self.dof,) or not np.all(self._y_std > 0):
            raise ValueError(f'y_std must be {self.dof} positive numbers')
        self._r = np.zeros((N_PARAMS, N_PARAMS))
        self._z = np.zeros(N_PARAMS)
        #: The estimate: change of the payload body's dynamic parameters (PAYLOAD_PARAMS).
        self.params = np.zeros(N_PARAMS)
        self._change = ChangeDetector(config.jump_factor)
        self.updates = 0
        self.resets = 0
        self.discarded = 0

    def regressor(self, x: np.ndarray) -> np.ndarray:
        """(n, d, 10) regressors for inputs x = [q, qd, qdd] (n, 3d)."""
        d = self.dof
        out = np.empty((len(x), d, N_PARAMS))
        for k in range(len(x)):
            out[k] = self._nominal.payload_regressor(x[k, :d], x[k, d:2 * d], x[k, 2 * d:])
        return out

    def torque(self, x: np.ndarray, params: Optional[np.ndarray] = None) -> np.ndarray:
        """(n, d) torque [Nm] of the estimate (or of ``params``) on inputs x (n, 3d)."""
        return self.regressor(x) @ (self.params if params is None else params)

    def update(self, x: np.ndarray, missed: np.ndarray, warm: bool = True) -> bool:
        """One window: inputs x (n, 3d) and what the learned model misses there, measured
        torque minus its prediction, (n, d) [Nm]. ``warm`` False (right after a sequence
        start, the network's state still settling) keeps the window out of change detection.
        Returns True when this window confirmed a change and the old data was forgotten."""
        cfg = self.config
        phi = (self.regressor(x) / self._y_std[None, :, None]).reshape(-1, N_PARAMS)
        e = (np.asarray(missed, dtype=np.float64) / self._y_std).reshape(-1)
        r_win, z_win = phi.T @ phi, phi.T @ e
        err = float(np.mean((e - phi @ self.params) ** 2))
        if not (math.isfinite(err) and np.all(np.isfinite(r_win)) and np.all(np.isfinite(z_win))):
            self.discarded += 1
            return False
        decay = cfg.forgetting ** len(x)
        r_old, z_old = self._r, self._z
        restart = self._change.observe(err, (r_win, z_win), warm=warm)
        if restart is not None:
            # A new load: keep only the two windows that showed it.
            r_old, z_old = restart
            decay = 1.0
            self.resets += 1
        r = decay * r_old + r_win
        z = decay * z_old + z_win
        params = np.linalg.solve(r + cfg.ridge * np.eye(N_PARAMS), z)
        if not np.all(np.isfinite(params)):
            self.discarded += 1
            return False
        self._r, self._z, self.params = r, z, params
        self.updates += 1
        return restart is not None
