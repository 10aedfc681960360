"""The online prediction pipeline, one sample at a time, free of ROS.

``(t, q, qd) -> acceleration estimate -> LSTM step with carried (h, c) -> torque``. The predictor
node calls :meth:`OnlinePredictor.update` on every ``/joint_states`` message, and ``invdyn eval``
calls it on every recorded sample, so offline scores are the scores of what runs online.

The module is torch-free: it takes :class:`~invdyn_ros.core.lstm_numpy.LstmWeights` (what the
predictor loads) or the torch model (converted once).

Safety: the output is never NaN/inf (a non-finite input is rejected before it touches the state;
a non-finite output resets the state and yields nothing), and it is clamped to per-joint torque
limits. The state resets whenever the estimator restarts (first sample, time going backwards,
a gap longer than ``max_gap_s``) or on :meth:`reset`.
"""

from __future__ import annotations

from dataclasses import dataclass
import enum
import math
from typing import Any, Optional, Sequence

import numpy as np

from invdyn_ros.core.accel import AccelConfig, AccelEstimator, AccelStatus
from invdyn_ros.core.lstm_numpy import as_lstm_weights, NumpyLstmStepper


class Rejection(enum.Enum):
    """Why a sample produced no output."""

    NON_FINITE_INPUT = 'non_finite_input'
    WRONG_SHAPE = 'wrong_shape'
    DUPLICATE_STAMP = 'duplicate_stamp'
    NON_FINITE_OUTPUT = 'non_finite_output'


@dataclass
class StepResult:
    """One update's outcome: ``tau`` [Nm] (d,) clamped, or None with ``rejected`` set."""

    tau: Optional[np.ndarray]
    reset: bool = False
    clamped: bool = False
    rejected: Optional[Rejection] = None


class OnlinePredictor:
    """Causal torque prediction for a stream of joint samples (see module docstring).

    Args:
        model: the trained network, :class:`LstmWeights` or the torch model (its joint order
            defines the sample layout).
        accel: acceleration-estimator settings; use the checkpoint's so online equals training.
        torque_limits: per-joint |tau| bound [Nm], shape (d,); None: no clamp.
        dtype: float64 (default) or float32 for the numpy LSTM step.
    """

    def __init__(self, model: Any, accel: AccelConfig = AccelConfig(),
                 torque_limits: Optional[Sequence[float]] = None, dtype=np.float64) -> None:
        model = as_lstm_weights(model)
        self.joint_names = model.config.joint_names
        self.dof = len(self.joint_names)
        self._stepper = NumpyLstmStepper(model, dtype=dtype)
        self._accel = AccelEstimator(self.dof, accel)
        self._state = self._stepper.initial_state()
        self._x = np.zeros(3 * self.dof)
        if torque_limits is not None:
            lim = np.asarray(torque_limits, dtype=np.float64)
            if lim.shape != (self.dof,) or not np.all(np.isfinite(lim)) or np.any(lim <= 0):
                raise ValueError(f'torque_limits must be {self.dof} positive numbers, got '
                                 f'{np.asarray(torque_limits).tolist()}')
            self._limits = lim
            self._neg_limits = -lim
            self._inv_limits = 1.0 / lim
        else:
            self._limits = None

    def swap_model(self, model: Any) -> None:
        """Use new weights (:class:`LstmWeights` or the torch model) from the next sample on;
        the state is kept when the shapes agree.

        Raises ValueError when the new model has other joints (the old one is kept then).
        """
        model = as_lstm_weights(model)
        if model.config.joint_names != self.joint_names:
            raise ValueError(f'new model joints {list(model.config.joint_names)} differ from '
                             f'{list(self.joint_names)}')
        stepper = NumpyLstmStepper(model, dtype=self._stepper.dtype)
        keep = (stepper.num_layers, stepper.hidden_size) == (
            self._stepper.num_layers, self._stepper.hidden_size)
        self._stepper = stepper
        if not keep:
            self._state = stepper.initial_state()

    def reset(self) -> None:
        """Forget the LSTM state and the acceleration filter (e.g. on a ~/reset request)."""
        self._accel.reset()
        self._state = self._stepper.initial_state()

    def update(self, t: float, q: np.ndarray, qd: Optional[np.ndarray]) -> StepResult:
        """One sample: stamp ``t`` [s], q [rad] (d,), qd [rad/s] (d,) or None -> torque."""
        if q.shape != (self.dof,) or (qd is not None and qd.shape != (self.dof,)):
            return StepResult(None, rejected=Rejection.WRONG_SHAPE)
        # One finiteness test for all inputs (1 us instead of 3): a NaN or inf in any term makes
        # the sum non-finite. (Values near float64's limit, 1e308, could overflow it and be
        # refused as well: no joint ever reads that.)
        total = t + q.sum() + (qd.sum() if qd is not None else 0.0)
        if not math.isfinite(total):
            return StepResult(None, rejected=Rejection.NON_FINITE_INPUT)
        qdd, status = self._accel.update(float(t), q, qd)
        if status is AccelStatus.DUPLICATE:
            return StepResult(None, rejected=Rejection.DUPLICATE_STAMP)
        reset = status is AccelStatus.RESET
        if reset:
            self._state = self._stepper.initial_state()
        d = self.dof
        x = self._x
        x[:d] = q
        # Without a measured velocity, the filter's own estimate stands in.
        x[d:2 * d] = qd if qd is not None else self._accel.state[1]
        x[2 * d:] = qdd
        tau, state = self._stepper.step(x, self._state)
        clamped = False
        if self._limits is not None:
            # max |tau_i| / limit_i is NaN if any output is, and > 1 iff a clamp is needed.
            worst = float(np.max(np.abs(tau) * self._inv_limits))
            ok = math.isfinite(worst)
            if ok and worst > 1.0:
                np.minimum(tau, self._limits, out=tau)
                np.maximum(tau, self._neg_limits, out=tau)
                clamped = True
        else:
            ok = math.isfinite(float(tau.sum()))
        if not ok:
            self._state = self._stepper.initial_state()
            self._accel.reset()
            return StepResult(None, reset=True, rejected=Rejection.NON_FINITE_OUTPUT)
        self._state = state
        return StepResult(tau, reset=reset, clamped=clamped)


def run_online(predictor: OnlinePredictor, t: np.ndarray, q: np.ndarray, qd: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Feed a recorded stream through ``predictor`` sample by sample.

    Returns:
        (tau, valid): tau [Nm] (T, d), NaN where no output was produced; valid (T,) bool.
    """
    n = len(t)
    out = np.full((n, predictor.dof), np.nan)
    valid = np.zeros(n, dtype=bool)
    for k in range(n):
        r = predictor.update(float(t[k]), q[k], qd[k])
        if r.tau is not None:
            out[k] = r.tau
            valid[k] = True
    return out, valid
