"""The online prediction pipeline, one sample at a time, free of ROS.

``(t, q, qd) -> acceleration estimate -> LSTM step with carried (h, c) -> torque``. The predictor
node calls :meth:`OnlinePredictor.update` on every ``/joint_states`` message, and ``invdyn eval``
calls it on every recorded sample, so offline scores are the scores of what runs online.

The module is torch-free: it takes :class:`~invdyn_ros.core.lstm_numpy.LstmWeights` (what the
predictor loads) or the torch model (converted once). A sample runs either as one compiled C
call (:mod:`invdyn_ros.core.compiled`: range check, filter, LSTM step and clamp together; the
default where the kernel was built) or through the numpy objects
(:class:`~invdyn_ros.core.accel.AccelEstimator`, :class:`NumpyLstmStepper`); both give the
same torques and refuse the same samples (``inference``).

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

from invdyn_ros.core import compiled as cc
from invdyn_ros.core.accel import AccelConfig, AccelEstimator, AccelStatus
from invdyn_ros.core.lstm_numpy import as_lstm_weights, NumpyLstmStepper
from invdyn_ros.core.params import PREDICTOR_INFERENCE
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


#: How OnlinePredictor runs a sample: 'compiled' (one C call: :mod:`.compiled`), 'numpy'
#: (:class:`NumpyLstmStepper` and :class:`AccelEstimator`), 'auto' (compiled when its kernel
#: was built and the model runs in float64, else numpy). Both compute the same torques (within
#: 1e-5 Nm, see :mod:`.compiled`). The predictor node's parameter takes the same values.
INFERENCE_PATHS = PREDICTOR_INFERENCE


def choose_path(inference: str, dtype) -> str:
    """'compiled' or 'numpy' for an ``inference`` setting and a model dtype; ValueError when
    'compiled' is asked for and cannot run (kernel not built, or float32)."""
    if inference not in INFERENCE_PATHS:
        raise ValueError(f'inference must be one of {list(INFERENCE_PATHS)}, got {inference!r}')
    possible = cc.AVAILABLE and np.dtype(dtype) == np.float64
    if inference == 'compiled' and not possible:
        why = ('its kernel was not built (no Cython or C compiler when the package was '
               'installed)' if not cc.AVAILABLE else 'it runs float64 models only')
        raise ValueError(f'the compiled inference path cannot run here: {why}')
    if inference == 'numpy' or not possible:
        return 'numpy'
    return 'compiled'


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
        inference: 'auto', 'compiled' or 'numpy' (:data:`INFERENCE_PATHS`); :attr:`path`
            says which runs.
    """

    def __init__(self, model: Any, accel: AccelConfig = AccelConfig(),
                 torque_limits: Optional[Sequence[float]] = None, dtype=np.float64,
                 target: str = DEFAULT_TARGET, nominal: Optional[Any] = None,
                 inference: str = 'auto') -> None:
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
        #: 'compiled' or 'numpy': how each sample runs (see :data:`INFERENCE_PATHS`).
        self.path = choose_path(inference, dtype)
        self._cc: Optional[dict] = None
        if self.path == 'compiled':
            self._cc_consts = cc.consts_buffer(self._accel.config, torque_limits)
            self._cc_setup(self._stepper, keep=False)

    # --- compiled path -----------------------------------------------------------------------
    def _cc_setup(self, stepper: NumpyLstmStepper, keep: bool) -> None:
        """Buffers of the compiled path for ``stepper``; the filter is carried over from the
        buffers in use, the LSTM state too when ``keep``."""
        d, n_l, h = self.dof, stepper.num_layers, stepper.hidden_size
        lay = cc.state_layout(d, n_l, h)
        state = np.zeros(lay['all'].stop)
        old = self._cc
        if old is not None:
            end = lay['accel'].stop            # the filter: the same size for the same joints
            state[:end] = old['state'][:end]
            if keep:
                state[lay['h']] = old['state'][old['layout']['h']]
                state[lay['c']] = old['state'][old['layout']['c']]
        model = stepper.fused_buffer()
        bounds = np.concatenate(self._bounds[True][1:3])
        if old is None:
            kernel = cc.Kernel(model, bounds, self._cc_consts, state, n_l, h, d)
        else:
            kernel = old['kernel']
            kernel.set_model(model, bounds, state, n_l, h)
        x = state[lay['x']]
        # The kernel's memoryviews keep model, bounds and state alive; the views here are what
        # the Python side reads after a step.
        self._cc = {'kernel': kernel, 'state': state, 'layout': lay, 'tau': state[lay['tau']],
                    'qd': x[d:2 * d], 'qdd': x[2 * d:]}

    def _update_compiled(self, t: float, q: np.ndarray, qd: Optional[np.ndarray]
                         ) -> StepResult:
        k = self._cc
        kernel = k['kernel']
        has_qd = qd is not None
        try:
            code = kernel.step(t, q, qd if has_qd else q, has_qd, self._rnea is None)
        except (ValueError, TypeError):
            # The kernel takes contiguous float64 vectors; anything else is converted once.
            q = np.ascontiguousarray(q, dtype=np.float64)
            qd = q if not has_qd else np.ascontiguousarray(qd, dtype=np.float64)
            code = kernel.step(float(t), q, qd, has_qd, self._rnea is None)
        status = code & cc.STATUS_MASK
        if status >= cc.DUPLICATE:
            return StepResult(None, reset=status == cc.NON_FINITE_OUTPUT,
                              rejected=_CC_REJECTIONS[status])
        if self._rnea is not None:
            k['tau'] += self._rnea(q, k['qd'], k['qdd'])
            done = kernel.finish_output()
            if done == cc.NON_FINITE_OUTPUT:
                return StepResult(None, reset=True, rejected=Rejection.NON_FINITE_OUTPUT)
            code |= done
        return StepResult(k['tau'].copy(), reset=status == cc.OK_RESET,
                          clamped=bool(code & cc.CLAMPED))

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
        if self._cc is not None:
            self._cc_setup(stepper, keep)

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
        if self._cc is not None:
            state, lay = self._cc['state'], self._cc['layout']
            state[cc.S_STARTED] = 0.0
            state[lay['h']] = 0.0
            state[lay['c']] = 0.0

    def update(self, t: float, q: np.ndarray, qd: Optional[np.ndarray]) -> StepResult:
        """One sample: stamp ``t`` [s], q [rad] (d,), qd [rad/s] (d,) or None -> torque."""
        if q.shape != (self.dof,) or (qd is not None and qd.shape != (self.dof,)):
            return StepResult(None, rejected=Rejection.WRONG_SHAPE)
        if self._cc is not None:
            return self._update_compiled(t, q, qd)
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


#: Rejections of the compiled path's status codes.
_CC_REJECTIONS = {cc.DUPLICATE: Rejection.DUPLICATE_STAMP, cc.OUT_OF_RANGE: Rejection.OUT_OF_RANGE,
                  cc.NON_FINITE_INPUT: Rejection.NON_FINITE_INPUT,
                  cc.NON_FINITE_OUTPUT: Rejection.NON_FINITE_OUTPUT}


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
