"""The LSTM recurrence of offline training in C, forward and backward: what ``torch.nn.LSTM``
computes, with less per-step overhead.

Why. On the CPU, ``torch.nn.LSTM`` runs each time step as some ten separate tensor operations,
and autograd records each, so back-propagation walks a graph of hundreds of small nodes. For
the paper-sized model (1 x 64, batches of 8 segments, windows of 32 samples) those operations'
fixed costs outweigh their arithmetic: measured on this 2-core machine, forward plus backward
of one window (the LSTM, its head and the loss) took 1.22 ms with ``nn.LSTM`` and 0.94 ms here,
of which the C loops take 0.2 ms. With the optimiser step on one flat buffer
(:func:`~invdyn_ros.core.training.flatten_parameters`) a whole training run takes 0.64 to
0.73 of the time (see the README).

What. :class:`LstmLayerFunction` is one layer as a ``torch.autograd.Function``. Its forward
computes the input's share of every gate at once (one matrix product over all T steps, in
torch), then the recurrence in C (``_lstm_kernel.pyx``): per step one BLAS ``sgemm`` for
``h W_hh^T`` and one vectorised loop for the gates, the cell and the output. It keeps the gate
activations, cells and ``tanh(c)``. Its backward runs the recurrence in reverse in C (per step
one loop and one ``sgemm``) to the gates' gradients, then the weights' gradients as three
matrix products over all steps at once (in torch). The parameters are ``nn.LSTM``'s own
(``weight_ih_l0``, ...), so a model trained either way is the same kind of checkpoint.

Numerics. float32 as ``nn.LSTM`` trains here; tanh and the sigmoid are a rational
approximation a few ulp from libm's (see the kernel), so outputs and gradients agree with
``nn.LSTM``'s to float32 rounding (tests hold them to 1e-5 relative), not bit for bit; the
backward pass is exact for the forward pass it follows (derivatives from the kept
activations).

Where it runs. On the CPU, float32, where the kernel was built (:func:`available`; without
Cython, a C compiler or scipy's BLAS declarations at install time ``nn.LSTM`` runs instead).
The kernel is imported on first use, not with this module: it loads scipy's BLAS, which the
nodes (which import the model) do not need.
Dropout between layers is applied as ``nn.LSTM`` does (to every layer's output but the last,
in training mode). :func:`~invdyn_ros.core.training.train_lstm` chooses it by
``TrainConfig.kernel``; inference (evaluation, the predictor) keeps its own paths.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch
from torch.autograd.function import once_differentiable
import torch.nn.functional as F

#: The kernel module once loaded; False where it cannot be (see :func:`kernel`).
_KERNEL = None

TorchState = tuple[torch.Tensor, torch.Tensor]


def kernel():
    """The compiled kernel module (imported on the first call), or None where it was not
    built or does not load (a TypeError: scipy's BLAS declarations changed since the build)."""
    global _KERNEL
    if _KERNEL is None:
        try:
            _KERNEL = importlib.import_module('invdyn_ros.core._lstm_kernel')
        except (ImportError, TypeError):
            _KERNEL = False
    return _KERNEL or None


def available() -> bool:
    """Whether the compiled training kernel was built and loads in this process."""
    return kernel() is not None


class LstmLayerFunction(torch.autograd.Function):
    """One LSTM layer over a batch of sequences (torch's gate order i, f, g, o)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                b_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, n_in), h0 and c0 (B, H), weights as in ``nn.LSTM`` -> outputs (B, T, H),
        final h and c (B, H)."""
        n_b, n_t, n_in = x.shape
        n_h = w_hh.shape[1]
        # Time-major, so that each step's rows are contiguous for the kernel.
        xt = x.detach().transpose(0, 1).reshape(n_t * n_b, n_in)
        gates = torch.addmm(b_ih.detach() + b_hh.detach(), xt, w_ih.detach().t())
        gates = gates.view(n_t, n_b, 4 * n_h)
        # float32 whatever torch's default dtype: the kernel's buffers are float32.
        h = torch.empty(n_t + 1, n_b, n_h, dtype=torch.float32)
        c = torch.empty(n_t + 1, n_b, n_h, dtype=torch.float32)
        tc = torch.empty(n_t, n_b, n_h, dtype=torch.float32)
        h[0] = h0.detach()
        c[0] = c0.detach()
        kernel().forward(gates.numpy(), w_hh.detach().t().contiguous().numpy(), h.numpy(),
                         c.numpy(), tc.numpy())
        ctx.save_for_backward(xt, gates, w_ih, w_hh, h, c, tc)
        return h[1:].transpose(0, 1).contiguous(), h[n_t].clone(), c[n_t].clone()

    @staticmethod
    @once_differentiable   # the backward runs outside autograd: refuse a double backward
    def backward(ctx, dy: torch.Tensor, dh_t: torch.Tensor, dc_t: torch.Tensor):
        xt, act, w_ih, w_hh, h, c, tc = ctx.saved_tensors
        n_t, n_b, n_g = act.shape
        n_h = n_g // 4
        dh = dh_t.contiguous().clone()          # the kernel overwrites these in place
        dc = dc_t.contiguous().clone()
        dg = torch.empty(n_t, n_b, n_g, dtype=torch.float32)
        kernel().backward(dy.transpose(0, 1).contiguous().numpy(), act.numpy(),
                          w_hh.detach().contiguous().numpy(), c.numpy(), tc.numpy(),
                          dg.numpy(), dh.numpy(), dc.numpy())
        dg_flat = dg.view(n_t * n_b, n_g)
        dw_ih = dg_flat.t().mm(xt)
        dw_hh = dg_flat.t().mm(h[:n_t].reshape(n_t * n_b, n_h))
        db = dg_flat.sum(0)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = dg_flat.mm(w_ih.detach()).view(n_t, n_b, -1).transpose(0, 1)
        return dx, dh, dc, dw_ih, dw_hh, db, db


def supports(lstm: torch.nn.LSTM) -> Optional[str]:
    """None when :func:`fused_lstm` can run ``lstm`` (on float32 inputs on its device), else
    why not."""
    if not available():
        return 'the compiled LSTM kernel was not built'
    if lstm.weight_hh_l0.device.type != 'cpu':
        return 'the compiled LSTM kernel runs on the CPU only'
    if lstm.weight_hh_l0.dtype != torch.float32:
        return 'the compiled LSTM kernel runs float32 only'
    if not lstm.batch_first or lstm.bidirectional or lstm.proj_size or not lstm.bias:
        return 'the compiled LSTM kernel runs batch-first, one-way LSTMs with biases only'
    return None


def fused_lstm(lstm: torch.nn.LSTM, x: torch.Tensor, state: Optional[TorchState] = None
               ) -> tuple[torch.Tensor, TorchState]:
    """``lstm(x, state)`` through the compiled kernel (check :func:`supports` first).

    Args:
        lstm: a batch-first ``nn.LSTM`` (float32, CPU).
        x: (B, T, n_in) float32 inputs.
        state: (h, c), each (num_layers, B, H); None for the zero state.

    Returns:
        outputs (B, T, H) and the final (h, c), as ``nn.LSTM`` returns them.
    """
    n_l, n_h, n_b = lstm.num_layers, lstm.hidden_size, x.shape[0]
    if state is None:
        zeros = x.new_zeros(n_l, n_b, n_h)
        state = (zeros, zeros)
    hs, cs = [], []
    for layer in range(n_l):
        if layer > 0 and lstm.training and lstm.dropout > 0:
            x = F.dropout(x, lstm.dropout, training=True)
        x, h_n, c_n = LstmLayerFunction.apply(
            x, state[0][layer], state[1][layer], getattr(lstm, f'weight_ih_l{layer}'),
            getattr(lstm, f'weight_hh_l{layer}'), getattr(lstm, f'bias_ih_l{layer}'),
            getattr(lstm, f'bias_hh_l{layer}'))
        hs.append(h_n)
        cs.append(c_n)
    return x, (torch.stack(hs), torch.stack(cs))
