"""The compiled LSTM training kernel against torch.nn.LSTM: outputs, final state and every
gradient, over layer counts, batch sizes, lengths and hidden sizes (including sizes that are
not a multiple of the vector width)."""

import math

import numpy as np
import pytest
import torch

from invdyn_ros.core import fused_lstm as fl

pytestmark = pytest.mark.skipif(
    not fl.available(), reason='invdyn_ros.core._lstm_kernel was not built (no Cython, C compiler '
    'or scipy at install time); test_kernel_is_built says so where it should be')


def test_kernel_is_built():
    pytest.importorskip('Cython', reason='Cython is not installed: the kernel cannot be built')
    assert fl.available()


def _run(fn, lstm, x, state):
    for p in lstm.parameters():
        p.grad = None
    x = x.detach().clone().requires_grad_(True)
    if state is not None:
        state = tuple(s.detach().clone().requires_grad_(True) for s in state)
    y, (h, c) = fn(x, state)
    # A loss that weighs outputs, final h and final c differently, so each gradient path counts.
    w = torch.linspace(-1.0, 2.0, y.shape[-1])
    (torch.sin(y * 3.0) * w).sum().add((h * 1.3).sum()).add((c.square() * 0.7).sum()).backward()
    grads = [x.grad] + ([s.grad for s in state] if state is not None else [])
    return [y, h, c] + grads + [p.grad.clone() for p in lstm.parameters()]


@pytest.mark.parametrize('layers,batch,steps,hidden,with_state', [
    (1, 8, 32, 64, True), (1, 1, 1, 3, False), (2, 5, 17, 13, True), (3, 2, 9, 8, False)])
def test_outputs_and_gradients_equal_nn_lstm(layers, batch, steps, hidden, with_state):
    torch.manual_seed(layers * 100 + hidden)
    lstm = torch.nn.LSTM(7, hidden, layers, batch_first=True)
    with torch.no_grad():   # larger weights than the default: saturating gates are exercised
        for p in lstm.parameters():
            p.mul_(3.0)
    x = torch.randn(batch, steps, 7) * 2.0
    state = ((torch.randn(layers, batch, hidden), torch.randn(layers, batch, hidden))
             if with_state else None)
    ref = _run(lambda a, s: lstm(a, s), lstm, x, state)
    got = _run(lambda a, s: fl.fused_lstm(lstm, a, s), lstm, x, state)
    assert len(ref) == len(got)
    for k, (a, b) in enumerate(zip(ref, got)):
        assert a.shape == b.shape, k
        scale = max(float(a.detach().abs().max()), 1.0)
        err = float((a - b).detach().abs().max()) / scale
        assert err < 1e-5, (k, err)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 6, 2, batch_first=True, dropout=0.5)
    x = torch.randn(3, 10, 4)
    lstm.eval()
    ref, _ = lstm(x)
    got, _ = fl.fused_lstm(lstm, x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    lstm.train()
    a, _ = fl.fused_lstm(lstm, x)
    b, _ = fl.fused_lstm(lstm, x)
    assert not torch.allclose(a, b)   # a fresh dropout mask per call, as nn.LSTM draws


def test_supports_says_why_not():
    assert fl.supports(torch.nn.LSTM(4, 6, batch_first=True)) is None
    assert 'float32' in fl.supports(torch.nn.LSTM(4, 6, batch_first=True).double())
    assert 'batch-first' in fl.supports(torch.nn.LSTM(4, 6))
    assert 'batch-first' in fl.supports(torch.nn.LSTM(4, 6, batch_first=True,
                                                      bidirectional=True))


def test_kernel_tanh_and_nan():
    k = fl.kernel()
    xs = np.linspace(-20.0, 20.0, 4001)
    err = max(abs(k.tanh_fast(float(v)) - math.tanh(float(np.float32(v)))) for v in xs)
    assert err < 1e-6, err
    assert math.isnan(k.tanh_fast(float('nan')))
    # The vectorised gate loop (the build the CPU runs, e.g. AVX2): one step from the zero
    # state with zero recurrent weights gives the activations of the pre-activations themselves.
    n_h = 1001
    pre = np.linspace(-20.0, 20.0, 4 * n_h).astype(np.float32)[None, None, :]
    g = pre.copy()
    h = np.zeros((2, 1, n_h), np.float32)
    c = np.zeros((2, 1, n_h), np.float32)
    tc = np.zeros((1, 1, n_h), np.float32)
    k.forward(g, np.zeros((n_h, 4 * n_h), np.float32), h, c, tc)
    x = pre[0, 0].astype(np.float64)
    sig = 1.0 / (1.0 + np.exp(-x))
    want = np.concatenate([sig[:n_h], sig[n_h:2 * n_h], np.tanh(x[2 * n_h:3 * n_h]),
                           sig[3 * n_h:]])
    assert np.max(np.abs(g[0, 0] - want)) < 1e-6
    i, u, o = want[:n_h], want[2 * n_h:3 * n_h], want[3 * n_h:]
    np.testing.assert_allclose(c[1, 0], i * u, atol=1e-6, rtol=0)
    np.testing.assert_allclose(tc[0, 0], np.tanh(i * u), atol=1e-6, rtol=0)
    np.testing.assert_allclose(h[1, 0], o * np.tanh(i * u), atol=1e-6, rtol=0)
    # A NaN input reaches the output (it is not clamped away into a finite number).
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    x = torch.zeros(1, 5, 3)
    x[0, 2, 1] = float('nan')
    y, _ = fl.fused_lstm(lstm, x)
    assert torch.isnan(y[0, 2:]).all() and torch.isfinite(y[0, :2]).all()


def test_kernel_refuses_mismatched_buffers():
    k = fl.kernel()
    f = np.float32
    g = np.zeros((4, 2, 12), f)
    with pytest.raises(ValueError, match='shapes'):   # w_hh_t (H, 4H) must be (3, 12)
        k.forward(g, np.zeros((3, 16), f), np.zeros((5, 2, 3), f), np.zeros((5, 2, 3), f),
                  np.zeros((4, 2, 3), f))
    with pytest.raises(ValueError, match='shapes'):   # c one step short
        k.backward(np.zeros((4, 2, 3), f), g, np.zeros((12, 3), f), np.zeros((4, 2, 3), f),
                   np.zeros((4, 2, 3), f), np.zeros_like(g), np.zeros((2, 3), f),
                   np.zeros((2, 3), f))


def test_double_backward_is_refused():
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3, requires_grad=True)
    y, _ = fl.fused_lstm(lstm, x)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    # An error, not a silently wrong (constant) second derivative.
    with pytest.raises(RuntimeError, match='once_differentiable|does not require grad'):
        gx.sum().backward()


def test_runs_whatever_the_default_dtype():
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    ref, _ = lstm(x)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got, _ = fl.fused_lstm(lstm, x)
    finally:
        torch.set_default_dtype(old)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
