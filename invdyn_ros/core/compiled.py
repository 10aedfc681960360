"""The predictor's per-sample path compiled to C, one call per sample.

:class:`~invdyn_ros.core.online.OnlinePredictor` runs, per ``/joint_states`` message: the input
range check, the acceleration filter (:class:`~invdyn_ros.core.accel.AccelEstimator`), the LSTM
step (:class:`~invdyn_ros.core.lstm_numpy.NumpyLstmStepper`) and the output check and clamp. In
numpy that is some twenty ufunc and BLAS calls on vectors of 5 to 256 elements, and each call's
Python overhead (about 0.5-1 us) costs more than its arithmetic. The kernel
(``_fastpath.pyx``, built by ``setup.py`` with Cython) does the same arithmetic in one C call
over preallocated buffers.

It is the same model: the weights are the stepper's fused matrices
(:meth:`~invdyn_ros.core.lstm_numpy.NumpyLstmStepper.fused_buffer`; the checkpoint stays the
single source), the filter is the same Kalman update in the same order of operations (it is
compiled without reassociation: its covariance update subtracts nearly equal numbers, and a
reordered one drifted by up to 0.8 Nm after a restart without velocity), the output check is
the same arithmetic. Two things differ from the numpy path, both far below the trained model's
own float32 rounding: the gate sums may be reordered (vectorised, ``#pragma omp simd`` there
only), and tanh is a rational approximation within :data:`TANH_MAX_ERROR` (libm's tanh, a call
per element, took half of the step). Tests hold it
to the numpy path and to the torch model within 1e-5 Nm. Only float64 runs compiled (a float32
predictor keeps the numpy path).

The kernel is optional: where it was not built (no Cython or C compiler at install time)
:data:`AVAILABLE` is False and the predictor runs the numpy path, and says which it runs.
A memory or start-up cost it has not: a C extension of some 100 kB, nothing compiled at run
time (a JIT such as numba would add about 130 MB of resident memory to the node for LLVM).

Buffers (all float64, 1-D):

* ``model``: :meth:`NumpyLstmStepper.fused_buffer`: per layer l the fused
  ``(4H, n_in_l + H + 1)`` matrix (rows i, f, o with their 1/2 folded in, then g; columns x,
  h, bias), row-major; then the head ``(d, H)`` and its bias ``(d,)`` with the output
  denormalisation folded in.
* ``bounds``: ``[inv (2d), c (2d)]``: an input is plausible when every ``|x inv - c| <= 1``
  over q (and qd when given); see :func:`invdyn_ros.core.online.input_half_widths`.
* ``consts``: :func:`consts_buffer`.
* ``state``: :func:`state_layout`: the filter's stamp, started flag, covariance (6) and
  estimate ``(3, d)``, the LSTM's ``h`` and ``c`` ``(L, H)`` each, and work space (gates, the
  network input ``x = [q, qd, qdd]``, the output torque).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from invdyn_ros.core.accel import AccelConfig, INITIAL_QDD_STD

try:
    from invdyn_ros.core._fastpath import Kernel, tanh_fast
except ImportError:             # not built: the numpy path runs
    Kernel = tanh_fast = None

#: Whether the compiled kernel was built and can be used in this process.
AVAILABLE = Kernel is not None

# Status codes of Kernel.step / Kernel.finish_output (the low byte) ...
OK = 0
OK_RESET = 1            # the filter (re)started on this sample; the LSTM state was zeroed
DUPLICATE = 2           # same stamp as the previous sample: nothing changed
OUT_OF_RANGE = 3        # a finite q or qd outside the plausible range: nothing changed
NON_FINITE_INPUT = 4    # NaN/inf in t, q or qd: nothing changed
NON_FINITE_OUTPUT = 5   # the output was not finite: LSTM state and filter were reset
#: ... plus this bit when the output was clamped to the torque limits.
CLAMPED = 256
STATUS_MASK = 0xFF

# Slots of ``consts`` (the kernel's C_* constants): then the limits (d) and their
# reciprocals (d).
C_R_Q, C_R_QD, C_JERK, C_MAX_GAP, C_USE_QD, C_INIT_VAR, C_HAS_LIMITS = range(7)
C_LIMITS = 7
# Slots of ``state``: stamp, started flag, covariance (6), then the (3, d) estimate.
S_T, S_STARTED, S_P, S_X = 0, 1, 2, 8

#: Largest |tanh_fast(x) - tanh(x)| of the kernel's tanh (measured over [-20, 20]: 2.6e-8).
TANH_MAX_ERROR = 3e-8


def state_layout(dof: int, num_layers: int, hidden: int) -> dict[str, slice]:
    """Where each part of the ``state`` buffer lies (see the module docstring); ``all`` is
    the whole buffer."""
    lh = num_layers * hidden
    parts = (('accel', 3 * dof), ('h', lh), ('c', lh), ('gates', 4 * hidden), ('x', 3 * dof),
             ('tau', dof))
    out, k = {}, S_X
    for name, n in parts:
        out[name] = slice(k, k + n)
        k += n
    out['all'] = slice(0, k)
    return out


def consts_buffer(accel: AccelConfig, torque_limits: Optional[Sequence[float]]
                  ) -> np.ndarray:
    """The ``consts`` buffer: the filter's settings, the torque limits [Nm] (d,) and their
    reciprocals (None: no clamp, only the finiteness check)."""
    head = [accel.q_noise_std ** 2, accel.qd_noise_std ** 2, float(accel.jerk_psd),
            float(accel.max_gap_s), float(bool(accel.use_velocity)), INITIAL_QDD_STD ** 2,
            float(torque_limits is not None)]
    if torque_limits is None:
        return np.array(head, dtype=np.float64)
    lim = np.asarray(torque_limits, dtype=np.float64)
    # The reciprocals as the numpy path computes them, so both decide a clamp alike.
    return np.concatenate((head, lim, 1.0 / lim))
