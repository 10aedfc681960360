"""The simulated LWR as an endless stream of samples, for the lwr_sim node and closed loops.

:func:`invdyn_ros.core.lwr_sim.simulate` plans a fixed duration up front; a node runs until it
is stopped and may change the payload or receive a feedforward torque at any time. This wraps
:class:`LwrSim` with a motion planner that extends the plan chunk by chunk, and the same
controller as :func:`simulate` (computed torque on the nominal model + PD), or PD alone, each
plus an optional external feedforward [Nm].
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from invdyn_ros.core.lwr_sim import (CTRL_DAMPING, CTRL_OMEGA, DOF, HOME_Q, LwrSim,
                                     LwrSimConfig, MOTIONS, _Planner)

#: Seconds of motion planned at a time.
PLAN_CHUNK_S = 20.0
CONTROLLERS = ('computed_torque', 'pd')


class LwrStream:
    """Closed-loop simulated LWR producing one sample per :meth:`step`.

    Args:
        config: simulator settings (rate, payload, noise, seed, ...).
        motion: 'mixed', 'reach' or 'push'.
        controller: 'computed_torque' (nominal model + PD, as :func:`simulate`) or 'pd'
            (PD with gravity left to the feedforward, for closed-loop experiments).
        gain_scale: multiplies the PD gains' stiffness (e.g. 0.25 for reduced gains).
    """

    def __init__(self, config: LwrSimConfig = LwrSimConfig(), motion: str = 'mixed',
                 controller: str = 'computed_torque', gain_scale: float = 1.0) -> None:
        if motion not in MOTIONS:
            raise ValueError(f'motion must be one of {MOTIONS}, got {motion!r}')
        if controller not in CONTROLLERS:
            raise ValueError(f'controller must be one of {CONTROLLERS}, got {controller!r}')
        if not (np.isfinite(gain_scale) and gain_scale > 0):
            raise ValueError(f'gain_scale must be a positive number, got {gain_scale!r}')
        plan_seed, noise_seed = np.random.SeedSequence(int(config.seed)).spawn(2)
        self.sim = LwrSim(replace(config, seed=int(noise_seed.generate_state(1)[0])))
        self._planner = _Planner(self.sim, np.random.default_rng(plan_seed))
        self.motion = motion
        self.controller = controller
        omega = CTRL_OMEGA * np.sqrt(gain_scale)
        self.kp = omega ** 2
        self.kd = 2.0 * CTRL_DAMPING * omega
        self.rate_hz = self.sim.rate_hz
        self._k = 0
        self._plan_q = np.empty((0, DOF))
        self._plan_qd = np.empty((0, DOF))
        self._plan_qdd = np.empty((0, DOF))
        self._plan_start = 0
        self._q_end = HOME_Q.copy()
        self._q_m, self._qd_m, tau0 = self.sim.measure()
        self._last = (0.0, self._q_m, self._qd_m, tau0)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.sim.joint_names

    @property
    def time(self) -> float:
        """Simulated time of the current sample [s]."""
        return self._k / self.rate_hz

    def set_payload(self, ml: float) -> None:
        """Change the liquid in the flask [ml] (0..1000) from the next step on."""
        self.sim.set_payload(ml)

    def _extend_plan(self) -> None:
        """Append the next chunk of motion, dropping the samples already run."""
        q, qd, qdd = self._planner.plan(PLAN_CHUNK_S, self.rate_hz, self.motion, self._q_end)
        drop = max(self._k - self._plan_start, 0)
        self._plan_q = np.concatenate((self._plan_q[drop:], q))
        self._plan_qd = np.concatenate((self._plan_qd[drop:], qd))
        self._plan_qdd = np.concatenate((self._plan_qdd[drop:], qdd))
        self._plan_start += drop
        self._q_end = q[-1].copy()

    def reference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Desired q [rad], qd [rad/s], qdd [rad/s^2] of the current sample, each (7,)."""
        return self.reference_at(self._k)

    def reference_at(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Desired q [rad], qd [rad/s], qdd [rad/s^2] of sample ``k`` >= the current one (a
        look-ahead, e.g. for a feedforward computed ahead of time), each (7,)."""
        if k < self._k:
            raise ValueError(f'sample {k} is in the past (now {self._k})')
        while k - self._plan_start >= len(self._plan_q):
            self._extend_plan()
        i = k - self._plan_start
        return self._plan_q[i], self._plan_qd[i], self._plan_qdd[i]

    @property
    def sample(self) -> int:
        """Index of the current sample (steps run so far)."""
        return self._k

    def true_position(self) -> np.ndarray:
        """Noise-free joint positions [rad] (7,) now, e.g. to score tracking."""
        return self.sim._q.copy()

    def measurement(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """The last sample as a robot's /joint_states carries it, aligned as :func:`simulate`
        rows are: (t_k [s], q_k [rad], qd_k [rad/s], tau_k [Nm]) with q_k, qd_k measured at t_k
        and tau_k the joint torque applied from t_k on, each (7,)."""
        return self._last

    def step(self, feedforward: Optional[np.ndarray] = None) -> None:
        """Advance one sample: control law on the current measurement plus ``feedforward``
        (7,) [Nm] if given (non-finite feedforward is ignored, as a safe drive would)."""
        q_des, qd_des, qdd_des = self.reference()
        q_k, qd_k = self._q_m, self._qd_m
        e, ed = q_des - q_k, qd_des - qd_k
        if self.controller == 'computed_torque':
            tau = self.sim.nominal_rnea(q_k, qd_k, qdd_des + self.kp * e + self.kd * ed)
        else:
            # Plain PD scaled by the nominal inertia's diagonal, so one stiffness fits all joints.
            tau = self._pd_scale * (self.kp * e + self.kd * ed)
        if feedforward is not None and np.all(np.isfinite(feedforward)):
            tau = tau + feedforward
        self.sim.step(tau)
        # One reading per step (each draws sensor noise): the new state and the step's torque.
        self._q_m, self._qd_m, tau_k = self.sim.measure()
        self._last = (self.time, q_k, qd_k, tau_k)
        self._k += 1

    @property
    def _pd_scale(self) -> np.ndarray:
        scale = getattr(self, '_pd_scale_cache', None)
        if scale is None:
            import pinocchio as pin
            m = pin.crba(self.sim.nominal_model, self.sim.nominal_data, HOME_Q)
            scale = self._pd_scale_cache = np.diag(m).copy()
        return scale
