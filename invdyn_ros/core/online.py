"""The online prediction pipeline, one sample at a time, free of ROS.

``(t, q, qd) -> acceleration estimate -> LSTM step with carried (h, c) -> torque``. The predictor
node calls :meth:`OnlinePredictor.update` on every ``/joint_states`` message, and ``invdyn eval``
calls it on every recorded sample, so offline scores are the scores of what runs online.

The module is torch-free: it takes :class:`~invdyn_ros.core.lstm_numpy.LstmWeights` (what the
predictor loads) or the torch model (converted once).

Targets (:mod:`invdyn_ros.core.targets`): for a model that learned ``'residual_rbd'`` the
output is the nominal rigid-body torque (one ``pin.rnea`` on the same q, qd and acceleration
estimate the network sees) plus the network's residual; for ``'residual_gravity'`` it is the
residual alone (the controller adds gravity itself); for ``'full'`` the network output. The
clamp and the finiteness check apply to what is output.

Safety: the output is never NaN/inf (a non-finite input, or one far outside the training data,
see :func:`input_half_widths`, is rejected before it touches the state;
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
from invdyn_ros.core.targets import check_target, DEFAULT_TARGET


#: q or qd further than this many standard deviations of the model's training data from its
#: mean is refused (Rejection.OUT_OF_RANGE): no joint goes there (100 x the spread of the
#: training motion), and one such glitch let through spoils the acceleration filter's state,
#: and with it every torque, for up to seconds.
MAX_INPUT_STD = 100.0
#: ... but never closer than a full turn [rad] / this speed [rad/s] to the mean, so that a
#: joint that hardly moved in the training data is not refused as soon as it does.
MIN_Q_RANGE = 2 * math.pi
MIN_QD_RANGE = 10.0


def input_half_widths(normalizer: Any, dof: int) -> tuple[np.ndarray, np.ndarray]:
    """Half-widths of the plausible q [rad] and qd [rad/s] ranges around the training means,
    each (dof,): MAX_INPUT_STD standard deviations, at least MIN_Q_RANGE / MIN_QD_RANGE."""
    std = np.asarray(normalizer.x_std, dtype=np.float64)
    return (np.maximum(MAX_INPUT_STD * std[:dof], MIN_Q_RANGE),
            np.maximum(MAX_INPUT_STD * std[dof:2 * dof], MIN_QD_RANGE))


class Rejection(enum.Enum):
    """Why a sample produced no output."""

    NON_FINITE_INPUT = 'non_finite_input'
    OUT_OF_RANGE = 'out_of_range'
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
        target: what the model learned (the checkpoint's ``target``).
        nominal: the :class:`~invdyn_ros.core.nominal.NominalModel` of a residual target
            (needed for 'residual_rbd', whose output adds it; unused for 'residual_gravity').
    """

    def __init__(self, model: Any, accel: AccelConfig = AccelConfig(),
                 torque_limits: Optional[Sequence[float]] = None, dtype=np.float64,
                 target: str = DEFAULT_TARGET, nominal: Optional[Any] = None) -> None:
        model = as_lstm_weights(model)
        self.joint_names = model.config.joint_names
        self.dof = len(self.joint_names)
        self.target = check_target(target)
        if target == 'residual_rbd':
            if nominal is None:
                raise ValueError("target 'residual_rbd' needs its nominal model")
            if tuple(nominal.joint_names) != tuple(self.joint_names):
                raise ValueError(f'nominal model joints {list(nominal.joint_names)} differ '
                                 f'from the model joints {list(self.joint_names)}')
        # Only 'residual_rbd' adds a nominal term to the output.
        self._rnea = nominal.rnea if target == 'residual_rbd' else None
        self._stepper = NumpyLstmStepper(model, dtype=dtype)
        self._x = np.zeros(3 * self.dof)
        self._set_input_bounds(self._stepper)
        self._accel = AccelEstimator(self.dof, accel)
        self._state = self._stepper.initial_state()
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

    def swap_model(self, model: Any, nominal: Optional[Any] = None) -> None:
        """Use new weights from the next sample on; the state is kept when the shapes agree.

        ``model``: :class:`LstmWeights`, the torch model, or a ready
        :class:`NumpyLstmStepper` (of the same dtype), which makes the swap itself a pointer
        change: the predictor builds the stepper off the control path.

        ``nominal``: a new NominalModel to add from then on (a 'residual_rbd' model whose
        nominal model changed, e.g. its payload); None keeps the one in use.

        Raises ValueError when the new model has other joints (the old one is kept then).
        """
        if isinstance(model, NumpyLstmStepper):
            stepper = model
            if stepper.dtype != self._stepper.dtype:
                raise ValueError(f'stepper dtype {stepper.dtype} differs from '
                                 f'{self._stepper.dtype}')
        else:
            stepper = NumpyLstmStepper(as_lstm_weights(model), dtype=self._stepper.dtype)
        if stepper.config.joint_names != self.joint_names:
            raise ValueError(f'new model joints {list(stepper.config.joint_names)} differ from '
                             f'{list(self.joint_names)}')
        if nominal is not None:
            if self.target != 'residual_rbd':
                raise ValueError(f'a {self.target!r} model adds no nominal model')
            if tuple(nominal.joint_names) != tuple(self.joint_names):
                raise ValueError(f'nominal model joints {list(nominal.joint_names)} differ '
                                 f'from the model joints {list(self.joint_names)}')
            self._rnea = nominal.rnea
        keep = (stepper.num_layers, stepper.hidden_size) == (
            self._stepper.num_layers, self._stepper.hidden_size)
        self._stepper = stepper
        self._set_input_bounds(stepper)
        if not keep:
            self._state = stepper.initial_state()

    def _set_input_bounds(self, stepper: NumpyLstmStepper) -> None:
        """Plausible inputs: |q - mean| and |qd - mean| within the half-widths of
        :func:`input_half_widths`, kept as reciprocals (a sample then costs one product)."""
        norm, d = stepper.normalizer, self.dof
        self._q_mean, self._qd_mean = norm.x_mean[:d].copy(), norm.x_mean[d:2 * d].copy()
        q_half, qd_half = input_half_widths(norm, d)
        # |x - mean| / half = |x * inv - c| with c = mean * inv, over [q, qd] at once (the
        # first d entries serve a sample without velocity). Views made here, once: a sample
        # then costs four ufunc calls on preallocated arrays.
        inv = np.concatenate((1.0 / q_half, 1.0 / qd_half))
        c = np.concatenate((self._q_mean, self._qd_mean)) * inv
        z = np.empty(2 * d)
        x = self._x
        self._bounds = {True: (x[:2 * d], inv, c, z), False: (x[:d], inv[:d], c[:d], z[:d])}

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype the LSTM runs in."""
        return self._stepper.dtype

    def reset(self) -> None:
        """Forget the LSTM state and the acceleration filter (e.g. on a ~/reset request)."""
        self._accel.reset()
        self._state = self._stepper.initial_state()

    def update(self, t: float, q: np.ndarray, qd: Optional[np.ndarray]) -> StepResult:
        """One sample: stamp ``t`` [s], q [rad] (d,), qd [rad/s] (d,) or None -> torque."""
        if q.shape != (self.dof,) or (qd is not None and qd.shape != (self.dof,)):
            return StepResult(None, rejected=Rejection.WRONG_SHAPE)
        # One test for finite and plausible inputs: each |x - mean| / half-width, at most 1
        # (a NaN fails the comparison too); only a refused sample is looked at again, to say
        # which it was. q and qd go into the input vector first (nothing else reads it before
        # the LSTM step, so a refused sample leaves no trace).
        d = self.dof
        x = self._x
        x[:d] = q
        if qd is not None:
            x[d:2 * d] = qd
        xs, inv, c, z = self._bounds[qd is not None]
        np.multiply(xs, inv, out=z)
        z -= c
        ok = np.abs(z, out=z).max() <= 1.0
        if not (ok and math.isfinite(t)):
            finite = math.isfinite(t) and np.isfinite(q).all() and (
                qd is None or np.isfinite(qd).all())
            return StepResult(None, rejected=Rejection.OUT_OF_RANGE if finite
                              else Rejection.NON_FINITE_INPUT)
        qdd, status = self._accel.update(float(t), q, qd)
        if status is AccelStatus.DUPLICATE:
            return StepResult(None, rejected=Rejection.DUPLICATE_STAMP)
        reset = status is AccelStatus.RESET
        if reset:
            self._state = self._stepper.initial_state()
        if qd is None:
            # Without a measured velocity, the filter's own estimate stands in.
            x[d:2 * d] = self._accel.state[1]
        x[2 * d:] = qdd
        tau, state = self._stepper.step(x, self._state)
        if self._rnea is not None:
            tau += self._rnea(q, x[d:2 * d], qdd)
        clamped = False
        if self._limits is not None:
            # max |tau_i| / limit_i is NaN if any output is, and > 1 iff a clamp is needed.
            worst = float((np.abs(tau) * self._inv_limits).max())
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
