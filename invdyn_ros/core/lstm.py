"""Stateful LSTM inverse-dynamics model tau = f(q, qd, qdd), after Rueckert et al. (2017).

The model maps one sample of joint positions q [rad], velocities qd [rad/s] and accelerations
qdd [rad/s^2] of the ``d`` joints named in :attr:`LstmConfig.joint_names` to the ``d`` joint
torques tau [Nm], carrying an LSTM state (h, c) from sample to sample, so one prediction costs
O(1) whatever the history length.

* :class:`LstmInverseDynamics` (torch) is what is trained. Its input/output normalisation lives
  inside it as buffers, so it always takes raw physical units and returns Nm, and a checkpoint
  (see :mod:`invdyn_ros.core.checkpoint`) can never be paired with the wrong normaliser.
* :class:`~invdyn_ros.core.lstm_numpy.NumpyLstmStepper` is the real-time path: the same network,
  one sample at a time, in plain numpy with fused weights and preallocated buffers (a predictor
  runs it at 1 kHz). It and the model's interface (:class:`LstmConfig`, :class:`Normalizer`,
  :class:`LstmWeights`) live in the torch-free :mod:`invdyn_ros.core.lstm_numpy` and are
  re-exported here.

Input layout for ``input_kind='q_qd_qdd'``: ``x = [q_1..q_d, qd_1..qd_d, qdd_1..qdd_d]``, shape
(3d,), joints in :attr:`LstmConfig.joint_names` order; output ``tau = [tau_1..tau_d]``, (d,).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from invdyn_ros.core.fused_lstm import fused_lstm
from invdyn_ros.core.lstm_numpy import (  # noqa: F401 (re-exported: the model's interface)
    as_lstm_weights, check_joint_names, DEFAULT_HIDDEN_SIZE, DEFAULT_INPUT_KIND,
    DEFAULT_NUM_LAYERS, INPUT_KINDS, lstm_weight_shapes, LstmConfig, LstmWeights, ModelInterface,
    Normalizer, NumpyLstmStepper, NumpyState, sequence_inputs, STD_FLOOR, WEIGHT_DTYPES)

#: (h, c), each of shape (num_layers, B, hidden_size), as torch.nn.LSTM takes and returns it.
TorchState = tuple[torch.Tensor, torch.Tensor]
#: Names of the normalisation buffers inside :class:`LstmInverseDynamics`.
NORMALIZER_BUFFERS = ('x_mean', 'x_std', 'y_mean', 'y_std')


class LstmInverseDynamics(nn.Module):
    """LSTM + linear head, with input/output normalisation stored inside as buffers.

    ``forward`` takes raw inputs (B, T, input_dim) in physical units and returns torques
    (B, T, d) in Nm; training code that wants a loss in normalised units divides by
    ``model.normalizer.y_std``.
    """

    def __init__(self, config: LstmConfig, normalizer: Optional[Normalizer] = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        # torch.nn.LSTM warns when dropout is set with one layer (it would do nothing).
        lstm_dropout = float(config.dropout) if config.num_layers > 1 else 0.0
        self.lstm = nn.LSTM(input_size=config.input_dim, hidden_size=config.hidden_size,
                            num_layers=config.num_layers, dropout=lstm_dropout,
                            batch_first=True)
        self.head = nn.Linear(config.hidden_size, config.output_dim)
        for name, n in zip(NORMALIZER_BUFFERS, (config.input_dim, config.input_dim,
                                                config.output_dim, config.output_dim)):
            self.register_buffer(name, torch.zeros(n) if 'mean' in name else torch.ones(n))
        if normalizer is not None:
            self.set_normalizer(normalizer)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def normalizer(self) -> Normalizer:
        """A float64 numpy copy of the normalisation stored in the model."""
        return Normalizer(*(getattr(self, n).detach().cpu().double().numpy()
                            for n in NORMALIZER_BUFFERS))

    def set_normalizer(self, normalizer: Normalizer) -> None:
        """Store ``normalizer`` in the model's buffers (in the model's dtype and device)."""
        normalizer.validate()
        if (normalizer.input_dim, normalizer.output_dim) != (
                self.config.input_dim, self.config.output_dim):
            raise ValueError(
                f'normalizer is for {normalizer.input_dim} inputs / {normalizer.output_dim} '
                f'outputs, the model has {self.config.input_dim} / {self.config.output_dim}')
        with torch.no_grad():
            for name in NORMALIZER_BUFFERS:
                buf = getattr(self, name)
                buf.copy_(torch.as_tensor(getattr(normalizer, name), dtype=buf.dtype))

    def initial_state(self, batch: int = 1) -> TorchState:
        """Zero (h, c), each (num_layers, batch, hidden_size): the state after a reset."""
        shape = (self.config.num_layers, int(batch), self.config.hidden_size)
        device = self.head.weight.device
        return (torch.zeros(shape, dtype=self.dtype, device=device),
                torch.zeros(shape, dtype=self.dtype, device=device))

    def forward(self, x: torch.Tensor, state: Optional[TorchState] = None
                ) -> tuple[torch.Tensor, TorchState]:
        """Torques for a batch of sequences.

        Args:
            x: inputs (B, T, input_dim) in physical units (rad, rad/s, rad/s^2).
            state: (h, c), each (num_layers, B, hidden_size); None for a fresh (zero) state.

        Returns:
            tau (B, T, d) [Nm] and the state after the last sample.
        """
        if x.ndim != 3 or x.shape[-1] != self.config.input_dim:
            raise ValueError(
                f'x must have shape (B, T, {self.config.input_dim}), got {tuple(x.shape)}')
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        yn, state = self.forward_normalised((x - self.x_mean) / self.x_std, state)
        return yn * self.y_std + self.y_mean, state

    def forward_normalised(self, xn: torch.Tensor, state: Optional[TorchState] = None,
                           compiled: bool = False) -> tuple[torch.Tensor, TorchState]:
        """The network without its normalisation: ``forward`` in normalised units.

        Training normalises its data once and calls this, which saves four element-wise
        operations (and their gradients) per update over :meth:`forward`.

        Args:
            xn: normalised inputs (B, T, input_dim), ``(x - x_mean) / x_std``.
            state: (h, c), each (num_layers, B, hidden_size); None for a fresh (zero) state.
            compiled: run the recurrence through the compiled training kernel
                (:func:`~invdyn_ros.core.fused_lstm.fused_lstm`; the caller checks
                :func:`~invdyn_ros.core.fused_lstm.supports`) instead of ``nn.LSTM``.

        Returns:
            normalised torques (B, T, d), ``(tau - y_mean) / y_std``, and the state after the
            last sample.
        """
        if compiled:
            out, (h, c) = fused_lstm(self.lstm, xn, state)
        else:
            out, (h, c) = self.lstm(xn, state)
        return self.head(out), (h, c)

    def step(self, x: torch.Tensor, state: Optional[TorchState] = None
             ) -> tuple[torch.Tensor, TorchState]:
        """One sample: x (input_dim,) or (B, input_dim) -> tau (d,) or (B, d) [Nm], new state.

        ``state`` is (h, c), each (num_layers, B, hidden_size) (B = 1 for an unbatched x); None
        for a fresh state. Stepping through a sequence equals one :meth:`forward` over it.
        """
        unbatched = x.ndim == 1
        if not (unbatched or x.ndim == 2):
            raise ValueError(
                f'x must have shape ({self.config.input_dim},) or (B, {self.config.input_dim}), '
                f'got {tuple(x.shape)}')
        seq = x.reshape(1, 1, -1) if unbatched else x.unsqueeze(1)
        tau, state = self.forward(seq, state)
        return (tau.reshape(-1) if unbatched else tau[:, 0, :]), state

    def to_weights(self) -> LstmWeights:
        """The model as torch-free arrays (copies, in the model's dtype): what a checkpoint
        stores and what :class:`NumpyLstmStepper` runs."""
        dtype = str(self.dtype).replace('torch.', '')
        weights = {name: p.detach().cpu().numpy().copy() for name, p in self.named_parameters()}
        return LstmWeights(self.config, self.normalizer, weights, dtype)

    @classmethod
    def from_weights(cls, lw: LstmWeights) -> 'LstmInverseDynamics':
        """Rebuild the torch model (eval mode) from :class:`LstmWeights`, bit for bit."""
        lw.validate()
        model = cls(lw.config).to(getattr(torch, lw.dtype))
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.from_numpy(np.ascontiguousarray(lw.weights[name], dtype=lw.dtype)))
        model.set_normalizer(lw.normalizer)
        model.eval()
        return model
