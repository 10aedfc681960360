"""The LSTM model's interface and its real-time numpy path, free of torch.

What a predictor process needs to run a trained model, and nothing more: the model's
configuration (:class:`LstmConfig`), its normalisation (:class:`Normalizer`), its weights as
numpy arrays (:class:`LstmWeights`, read straight from a checkpoint by
:func:`invdyn_ros.core.checkpoint.load_lstm_weights`) and :class:`NumpyLstmStepper`, which
steps the network one sample at a time. Importing torch costs a process about 200 MB of
resident memory and a second of start-up; a 1 kHz predictor must not pay that to evaluate a
few small matrix products. Training (:mod:`invdyn_ros.core.lstm`, torch) converts to and from
:class:`LstmWeights`, so the checkpoint stays the single source of the weights.

Input layout for ``input_kind='q_qd_qdd'``: ``x = [q_1..q_d, qd_1..qd_d, qdd_1..qdd_d]``, shape
(3d,), joints in :attr:`LstmConfig.joint_names` order; output ``tau = [tau_1..tau_d]``, (d,).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Sequence, Union

import numpy as np

#: Input kinds: name -> the (d,)-blocks concatenated, in this order, into one input sample.
INPUT_KINDS: dict[str, tuple[str, ...]] = {
    'q_qd_qdd': ('q', 'qd', 'qdd'),
}
DEFAULT_INPUT_KIND = 'q_qd_qdd'
DEFAULT_HIDDEN_SIZE = 64
DEFAULT_NUM_LAYERS = 1

#: Floor on a normalisation standard deviation, in the column's own unit (rad, rad/s, rad/s^2,
#: Nm). A (nearly) constant column, e.g. a joint that never moved in the training data, must not
#: divide by zero, and must not be blown up a million times either when it does move at run time:
#: 1e-3 is below the sensor noise of any of these quantities on a real arm, so it never changes
#: an informative column.
STD_FLOOR = 1e-3

#: (h, c), each of shape (num_layers, hidden_size), for :class:`NumpyLstmStepper`.
NumpyState = tuple[np.ndarray, np.ndarray]


class ModelInterface:
    """What every model configuration shares (:class:`LstmConfig`, and the GP's
    :class:`~invdyn_ros.core.gp.GpConfig`): the joints, the sample rate and the input layout,
    with their derived sizes and checks. A dataclass subclass declares the fields
    ``joint_names``, ``rate_hz`` and ``input_kind`` and adds its own checks to
    :meth:`validate`, calling :meth:`validate_interface`."""

    joint_names: tuple[str, ...]
    rate_hz: float
    input_kind: str

    def __post_init__(self) -> None:
        if isinstance(self.joint_names, str):
            # A bare string would silently become one joint per character.
            raise ValueError(f'joint_names must be a sequence of names, got {self.joint_names!r}')
        self.joint_names = tuple(self.joint_names)
        self.validate()

    @property
    def dof(self) -> int:
        """Number of joints d."""
        return len(self.joint_names)

    @property
    def input_dim(self) -> int:
        """Length of one input sample (3d for 'q_qd_qdd')."""
        return len(INPUT_KINDS[self.input_kind]) * self.dof

    @property
    def output_dim(self) -> int:
        """Length of one output sample: one torque per joint, d."""
        return self.dof

    def validate(self) -> object:
        """Raise ValueError naming the first unusable field (subclasses extend it)."""
        self.validate_interface()
        return self

    def validate_interface(self) -> None:
        """Raise ValueError unless joints, rate and input kind are usable."""
        names = self.joint_names
        if len(names) == 0:
            raise ValueError('joint_names is empty: the model needs at least one joint')
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError(f'joint_names must be non-empty strings, got {list(names)}')
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f'duplicate joint names {dup} in {list(names)}')
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(
                f'unknown input_kind {self.input_kind!r}; known: {sorted(INPUT_KINDS)}')
        if (isinstance(self.rate_hz, bool) or not isinstance(self.rate_hz, (int, float))
                or not math.isfinite(self.rate_hz) or self.rate_hz <= 0.0):
            raise ValueError(f'rate_hz must be a positive finite number, got {self.rate_hz!r}')


@dataclass
class LstmConfig(ModelInterface):
    """Architecture and interface of an LSTM inverse-dynamics model.

    Attributes:
        joint_names: the d joints whose q, qd, qdd are inputs and whose torques are outputs, in
            column order.
        rate_hz: sample rate [Hz] the model was trained at; the LSTM state evolves per sample, so
            the model is only valid when fed at this rate.
        input_kind: input layout, a key of :data:`INPUT_KINDS` (``'q_qd_qdd'``: x = [q, qd, qdd]).
        hidden_size: LSTM state size per layer.
        num_layers: stacked LSTM layers.
        dropout: dropout between stacked LSTM layers during training (torch.nn.LSTM semantics;
            has no effect with one layer).
    """

    joint_names: tuple[str, ...]
    rate_hz: float
    input_kind: str = DEFAULT_INPUT_KIND
    hidden_size: int = DEFAULT_HIDDEN_SIZE
    num_layers: int = DEFAULT_NUM_LAYERS
    dropout: float = 0.0

    def validate(self) -> 'LstmConfig':
        """Raise ValueError naming the first unusable field; returns self."""
        self.validate_interface()
        for field_name in ('hidden_size', 'num_layers'):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'{field_name} must be a positive integer, got {value!r}')
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f'dropout must be in [0, 1), got {self.dropout!r}')
        return self

    def architecture(self) -> dict:
        """The architecture fields (everything but the interface), JSON-ready."""
        return {'hidden_size': int(self.hidden_size), 'num_layers': int(self.num_layers),
                'dropout': float(self.dropout)}


@dataclass
class Normalizer:
    """Per-feature affine normalisation of inputs and outputs: z = (v - mean) / std.

    Attributes:
        x_mean: input means, shape (input_dim,), in the input columns' units.
        x_std: input standard deviations, shape (input_dim,), > 0.
        y_mean: output (torque) means [Nm], shape (d,).
        y_std: output standard deviations [Nm], shape (d,), > 0.
    """

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray

    def __post_init__(self) -> None:
        for name in ('x_mean', 'x_std', 'y_mean', 'y_std'):
            setattr(self, name, np.array(getattr(self, name), dtype=np.float64))
        self.validate()

    @property
    def input_dim(self) -> int:
        return int(self.x_mean.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.y_mean.shape[0])

    def validate(self) -> None:
        """Raise ValueError if shapes disagree or a value is not finite / a std not positive."""
        for mean, std, what in ((self.x_mean, self.x_std, 'x'), (self.y_mean, self.y_std, 'y')):
            if mean.ndim != 1 or mean.shape != std.shape or mean.shape[0] == 0:
                raise ValueError(
                    f'{what}_mean and {what}_std must be 1-D of equal non-zero length, got '
                    f'{mean.shape} and {std.shape}')
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
                raise ValueError(f'NaN/inf in {what} normalisation')
            if np.any(std <= 0.0):
                raise ValueError(f'{what}_std must be > 0, got {std.tolist()}')

    @classmethod
    def identity(cls, input_dim: int, output_dim: int) -> 'Normalizer':
        """No normalisation: zero means, unit standard deviations."""
        return cls(np.zeros(input_dim), np.ones(input_dim), np.zeros(output_dim),
                   np.ones(output_dim))

    @classmethod
    def from_data(cls, x: np.ndarray, y: np.ndarray, std_floor: float = STD_FLOOR
                  ) -> 'Normalizer':
        """Mean and standard deviation of each column of inputs x (N, input_dim) and torques
        y (N, d) [Nm], each std raised to at least ``std_floor`` (see :data:`STD_FLOOR`)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f'x and y must be 2-D with the same non-zero number of rows, got {x.shape} and '
                f'{y.shape}')
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError('NaN/inf in normalisation data')
        if not (math.isfinite(std_floor) and std_floor > 0.0):
            raise ValueError(f'std_floor must be > 0, got {std_floor}')
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), std_floor),
                   y.mean(axis=0), np.maximum(y.std(axis=0), std_floor))

    def normalise_x(self, x: np.ndarray) -> np.ndarray:
        """Inputs (..., input_dim) in physical units -> normalised."""
        return (np.asarray(x) - self.x_mean) / self.x_std

    def denormalise_x(self, xn: np.ndarray) -> np.ndarray:
        """Normalised inputs (..., input_dim) -> physical units."""
        return np.asarray(xn) * self.x_std + self.x_mean

    def normalise_y(self, y: np.ndarray) -> np.ndarray:
        """Torques (..., d) [Nm] -> normalised."""
        return (np.asarray(y) - self.y_mean) / self.y_std

    def denormalise_y(self, yn: np.ndarray) -> np.ndarray:
        """Normalised torques (..., d) -> [Nm]."""
        return np.asarray(yn) * self.y_std + self.y_mean

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready lists (Python floats round-trip float64 exactly through JSON)."""
        return {name: getattr(self, name).tolist()
                for name in ('x_mean', 'x_std', 'y_mean', 'y_std')}


#: Data types the weights may have (what a checkpoint may store).
WEIGHT_DTYPES = ('float32', 'float64')


def lstm_weight_shapes(config: LstmConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight of the model ``config`` describes.

    The names are torch's ``state_dict`` names of :class:`~invdyn_ros.core.lstm.
    LstmInverseDynamics` parameters (``lstm.weight_ih_l0``, ..., ``head.bias``); gate rows in
    torch's order i, f, g, o.
    """
    h = int(config.hidden_size)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(int(config.num_layers)):
        n_in = config.input_dim if layer == 0 else h
        shapes[f'lstm.weight_ih_l{layer}'] = (4 * h, n_in)
        shapes[f'lstm.weight_hh_l{layer}'] = (4 * h, h)
        shapes[f'lstm.bias_ih_l{layer}'] = (4 * h,)
        shapes[f'lstm.bias_hh_l{layer}'] = (4 * h,)
    shapes['head.weight'] = (config.output_dim, h)
    shapes['head.bias'] = (config.output_dim,)
    return shapes


@dataclass
class LstmWeights:
    """A trained LSTM as plain arrays: everything needed to run it, without torch.

    Attributes:
        config: architecture and interface.
        normalizer: input/output normalisation (physical units in, Nm out).
        weights: name -> array, exactly the names and shapes of :func:`lstm_weight_shapes`.
        dtype: 'float32' or 'float64', the dtype the model was trained and stored in.
    """

    config: LstmConfig
    normalizer: Normalizer
    weights: dict[str, np.ndarray]
    dtype: str = 'float32'

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first weight whose name, shape or value is unusable."""
        self.config.validate()
        self.normalizer.validate()
        if (self.normalizer.input_dim, self.normalizer.output_dim) != (
                self.config.input_dim, self.config.output_dim):
            raise ValueError(
                f'normalisation is for {self.normalizer.input_dim} inputs / '
                f'{self.normalizer.output_dim} outputs, config has {self.config.input_dim} / '
                f'{self.config.output_dim}')
        if self.dtype not in WEIGHT_DTYPES:
            raise ValueError(f'dtype {self.dtype!r} not one of {list(WEIGHT_DTYPES)}')
        expected = lstm_weight_shapes(self.config)
        missing = sorted(set(expected) - set(self.weights))
        extra = sorted(set(self.weights) - set(expected))
        if missing or extra:
            raise ValueError(
                f'weights do not match the configuration: missing {missing}, extra {extra}')
        for name, shape in expected.items():
            w = self.weights[name]
            if not isinstance(w, np.ndarray) or w.shape != shape:
                got = getattr(w, 'shape', type(w).__name__)
                raise ValueError(
                    f'weight {name} has shape {got}, the configuration '
                    f'(hidden_size={self.config.hidden_size}, '
                    f'num_layers={self.config.num_layers}, {self.config.dof} joints) needs '
                    f'{shape}')
            if not np.all(np.isfinite(w)):
                raise ValueError(f'weight {name} has NaN/inf values')


class NumpyLstmStepper:
    """Single-sample LSTM inference in numpy, for real-time loops (no torch call per step).

    Built once from :class:`LstmWeights` (or from anything with a ``to_weights()`` method, such
    as the torch :class:`~invdyn_ros.core.lstm.LstmInverseDynamics`); later changes to the
    source do not affect it. Per layer the input and recurrent weights and both biases are
    fused into one matrix acting on ``[x; h; 1]``, so a layer is one matrix-vector product.
    Folded in as well:

    * the input normalisation into layer 0 (W (x - m) / s = (W / s) x - W m / s),
    * the output denormalisation into the head (tau = (s_y W_o) h + s_y b_o + m_y),
    * the sigmoid gates' 1/2 (sigmoid(z) = (1 + tanh(z / 2)) / 2, so one tanh serves all four
      gates; gate rows are reordered to i, f, o | g for that).

    The fusing is done in float64 and only then cast to ``dtype``.
    """

    def __init__(self, model: Union[LstmWeights, 'object'],
                 dtype: Union[type, np.dtype] = np.float64) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f'dtype must be float32 or float64, got {self.dtype}')
        lw = as_lstm_weights(model)
        cfg = lw.config
        self.config = cfg
        self.num_layers = int(cfg.num_layers)
        self.hidden_size = h_size = int(cfg.hidden_size)
        self.input_dim = int(cfg.input_dim)
        self.output_dim = int(cfg.output_dim)
        norm = lw.normalizer
        #: The normalisation folded into the weights (callers check input ranges with it).
        self.normalizer = norm

        def param(name: str) -> np.ndarray:
            return np.asarray(lw.weights[name], dtype=np.float64)

        # torch gate order is i, f, g, o; put the three sigmoid gates first.
        order = np.concatenate([np.arange(0, 2 * h_size), np.arange(3 * h_size, 4 * h_size),
                                np.arange(2 * h_size, 3 * h_size)])
        self._weights: list[np.ndarray] = []
        self._xh: list[np.ndarray] = []
        for layer in range(self.num_layers):
            w_ih = param(f'lstm.weight_ih_l{layer}')
            w_hh = param(f'lstm.weight_hh_l{layer}')
            bias = param(f'lstm.bias_ih_l{layer}') + param(f'lstm.bias_hh_l{layer}')
            if layer == 0:
                bias = bias - w_ih @ (norm.x_mean / norm.x_std)
                w_ih = w_ih / norm.x_std
            fused = np.concatenate([w_ih, w_hh, bias[:, None]], axis=1)[order]
            fused[:3 * h_size] *= 0.5
            self._weights.append(np.ascontiguousarray(fused, dtype=self.dtype))
            n_in = w_ih.shape[1]
            xh = np.zeros(n_in + h_size + 1, dtype=self.dtype)
            xh[-1] = 1.0  # the bias column's constant input
            self._xh.append(xh)
        w_out = param('head.weight')
        b_out = param('head.bias')
        self._w_out = np.ascontiguousarray(norm.y_std[:, None] * w_out, dtype=self.dtype)
        self._b_out = (norm.y_std * b_out + norm.y_mean).astype(self.dtype)
        self._state_shape = (self.num_layers, h_size)
        # Work buffers and every view into them, made once: a step then only calls ufuncs.
        gates = np.empty(4 * h_size, dtype=self.dtype)
        self._gates = gates
        self._sig = gates[:3 * h_size]
        self._gate_views = (gates[:h_size], gates[h_size:2 * h_size],
                            gates[2 * h_size:3 * h_size], gates[3 * h_size:])
        self._tmp = np.empty(h_size, dtype=self.dtype)
        self._layers = [(w, xh, xh[:xh.shape[0] - h_size - 1], xh[xh.shape[0] - h_size - 1:-1])
                        for w, xh in zip(self._weights, self._xh)]
        self._flat: Union[np.ndarray, None] = None

    def fused_buffer(self) -> np.ndarray:
        """The fused weights as one float64 vector: per layer its (4H, n_in + H + 1) matrix,
        then the head (d, H) and its bias (d,), row-major: what the compiled path
        (:mod:`invdyn_ros.core.compiled`) reads. Made on first use and kept; not to be
        written to."""
        if self._flat is None:
            parts = [w.ravel() for w in self._weights] + [self._w_out.ravel(), self._b_out]
            self._flat = np.concatenate(parts).astype(np.float64)
        return self._flat

    def initial_state(self) -> NumpyState:
        """Zero (h, c), each (num_layers, hidden_size): the state after a reset."""
        return (np.zeros(self._state_shape, dtype=self.dtype),
                np.zeros(self._state_shape, dtype=self.dtype))

    def step(self, x: np.ndarray, state: NumpyState) -> tuple[np.ndarray, NumpyState]:
        """One sample: x (input_dim,) in physical units -> tau (d,) [Nm] and the new state.

        ``state`` is (h, c), each (num_layers, hidden_size), and is not modified; the returned
        tau and state are new arrays (three small allocations), safe to keep.
        """
        h_old, c_old = state
        if x.shape != (self.input_dim,):
            raise ValueError(f'x must have shape ({self.input_dim},), got {x.shape}')
        if h_old.shape != self._state_shape or c_old.shape != self._state_shape:
            raise ValueError(
                f'state must be two arrays of shape {self._state_shape}, got {h_old.shape} and '
                f'{c_old.shape}')
        # One allocation for both new state arrays; h_new, c_new are views of it.
        h_new, c_new = np.empty((2,) + self._state_shape, dtype=self.dtype)
        gates, sig, tmp = self._gates, self._sig, self._tmp
        i_g, f_g, o_g, g_g = self._gate_views
        inp = x
        for layer, (weights, xh, xh_in, xh_h) in enumerate(self._layers):
            xh_in[:] = inp
            xh_h[:] = h_old[layer]
            np.dot(weights, xh, out=gates)
            np.tanh(gates, out=gates)
            sig *= 0.5
            sig += 0.5
            inp = h_new[layer]
            c = c_new[layer]
            np.multiply(f_g, c_old[layer], out=c)
            np.multiply(i_g, g_g, out=tmp)
            c += tmp
            np.tanh(c, out=tmp)
            np.multiply(o_g, tmp, out=inp)
        tau = np.dot(self._w_out, inp)
        tau += self._b_out
        return tau, (h_new, c_new)


def as_lstm_weights(model: Union[LstmWeights, 'object']) -> LstmWeights:
    """``model`` itself if it is :class:`LstmWeights`, else ``model.to_weights()`` (the torch
    model's conversion), so real-time code takes either without importing torch."""
    if isinstance(model, LstmWeights):
        return model
    to_weights = getattr(model, 'to_weights', None)
    if to_weights is None:
        raise TypeError(f'expected LstmWeights or a model with to_weights(), got '
                        f'{type(model).__name__}')
    return to_weights()


def sequence_inputs(q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
    """Stack q, qd, qdd, each (T, d) or (d,), into model inputs (T, 3d) or (3d,)."""
    return np.concatenate([np.asarray(q), np.asarray(qd), np.asarray(qdd)], axis=-1)


def check_joint_names(config: LstmConfig, joint_names: Sequence[str]) -> None:
    """Raise ValueError unless ``joint_names`` equals the model's joints, in the same order."""
    want = tuple(joint_names)
    if want == config.joint_names:
        return
    if set(want) == set(config.joint_names) and len(want) == len(config.joint_names):
        raise ValueError(
            f'joint order differs: model has {list(config.joint_names)}, asked for {list(want)} '
            '(reorder the inputs by name; the model is not reordered)')
    raise ValueError(
        f'joints differ: model has {list(config.joint_names)}, asked for {list(want)}')
