"""The compiled per-sample path (invdyn_ros/core/_fastpath.pyx via core/compiled.py) computes
what the numpy path and the torch model compute, refuses what they refuse, and keeps its
state across model swaps and resets the same way."""

import math

import numpy as np
import pytest
import torch

from invdyn_ros.core import compiled as cc
from invdyn_ros.core.accel import AccelConfig, AccelEstimator
from invdyn_ros.core.checkpoint import load_checkpoint, load_lstm_weights
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer
from invdyn_ros.core.online import choose_path, OnlinePredictor
from invdyn_ros.core.params import ParamError, PredictorParams
from invdyn_ros.nodes.common import default_model_path

#: Torques of the two paths agree within this [Nm] (the issue's bound against torch).
TOL_NM = 1e-5
JOINTS = ('j1', 'j2', 'j3')


def _model(num_layers: int = 2, hidden: int = 16, seed: int = 3) -> LstmInverseDynamics:
    torch.manual_seed(seed)
    cfg = LstmConfig(JOINTS, 500.0, hidden_size=hidden, num_layers=num_layers)
    rng = np.random.default_rng(seed)
    norm = Normalizer.from_data(rng.normal(size=(50, 9)), rng.normal(size=(50, 3)) * 10)
    model = LstmInverseDynamics(cfg, norm).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.4)
    return model


def _stream(n: int, d: int, seed: int = 0):
    """A 500 Hz stream with every kind of event: a NaN, an absurd speed, a duplicate stamp,
    a time jump back, a gap, and large motions that hit the torque clamp."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.002
    t[n // 2:] += 0.5                                   # gap: the filter restarts
    t[n // 3] = t[n // 3 - 1]                           # duplicate stamp
    t[2 * n // 3:] -= 0.01                              # small jump back
    q = np.cumsum(rng.normal(0.0, 0.01, (n, d)), axis=0)
    qd = np.gradient(q, axis=0) / 0.002 + rng.normal(0.0, 0.01, (n, d))
    q[n // 5, 1] = np.nan
    qd[n // 4, 0] = 1e6
    return t, q, qd


def _run(pred: OnlinePredictor, t, q, qd, with_qd: bool = True) -> list:
    return [pred.update(t[k], q[k], qd[k] if with_qd else None) for k in range(len(t))]


def test_kernel_is_built_here() -> None:
    """`make test` installs Cython, so the kernel must have been built: the node's fast path
    is what CI exercises."""
    assert cc.AVAILABLE, 'invdyn_ros.core._fastpath was not built (is Cython installed?)'
    assert choose_path('auto', np.float64) == 'compiled'
    assert choose_path('auto', np.float32) == 'numpy'


def test_tanh_is_within_its_bound() -> None:
    x = np.concatenate([np.linspace(-20.0, 20.0, 400001), [0.0, 1e-12, -1e300, 1e300]])
    got = np.array([cc.tanh_fast(v) for v in x])
    assert np.max(np.abs(got - np.tanh(x))) <= cc.TANH_MAX_ERROR
    assert math.isnan(cc.tanh_fast(math.nan))


@pytest.mark.parametrize('num_layers, with_qd', [(1, True), (2, True), (2, False)])
def test_compiled_equals_numpy_path_sample_by_sample(num_layers: int, with_qd: bool) -> None:
    model = _model(num_layers)
    t, q, qd = _stream(1500, 3)
    lim = [4.0, 4.0, 4.0]          # [Nm]: low enough that some outputs are clamped
    fast = OnlinePredictor(model, AccelConfig(), lim, inference='compiled')
    ref = OnlinePredictor(model, AccelConfig(), lim, inference='numpy')
    assert (fast.path, ref.path) == ('compiled', 'numpy')
    a, b = _run(fast, t, q, qd, with_qd), _run(ref, t, q, qd, with_qd)
    for k, (ra, rb) in enumerate(zip(a, b)):
        assert (ra.rejected, ra.reset, ra.clamped) == (rb.rejected, rb.reset, rb.clamped), k
        if rb.tau is not None:
            assert np.max(np.abs(ra.tau - rb.tau)) < TOL_NM, k
    kinds = {r.rejected for r in b} | {'clamped' for r in b if r.clamped} | {
        'reset' for r in b if r.reset}
    # The stream did exercise every branch it was built for.
    assert {'clamped', 'reset', None}.issubset(kinds) and len(kinds) >= 5, kinds


def test_compiled_path_equals_torch_model_on_shipped_checkpoint() -> None:
    """The issue's bound: the fast path is the model, within 1e-5, against torch's own
    forward over the same inputs (the acceleration filter's estimates)."""
    path = default_model_path('lwr4plus_j1-5_lstm.npz')
    lw, meta = load_lstm_weights(path)
    model, _ = load_checkpoint(path)
    accel = AccelConfig.from_dict(meta.get('accel_config', {}))
    d = lw.config.dof
    rng = np.random.default_rng(4)
    n = 600
    t = np.arange(n) / lw.config.rate_hz
    q = np.cumsum(rng.normal(0.0, 2e-3, (n, d)), axis=0) + np.asarray(lw.normalizer.x_mean[:d])
    qd = np.gradient(q, axis=0) * lw.config.rate_hz
    est = AccelEstimator(d, accel)
    x = np.array([np.concatenate((q[k], qd[k], est.update(t[k], q[k], qd[k])[0]))
                  for k in range(n)])
    with torch.no_grad():
        want = model(torch.as_tensor(x[None], dtype=model.dtype))[0][0].double().numpy()
    fast = OnlinePredictor(lw, accel, inference='compiled')
    got = np.array([r.tau for r in _run(fast, t, q, qd)])
    assert np.max(np.abs(got - want)) < TOL_NM * max(1.0, float(np.max(np.abs(want))))


def test_swap_reset_and_inputs_of_other_types_behave_as_numpy_path() -> None:
    t, q, qd = _stream(600, 3, seed=2)
    m1, m2, m3 = _model(2, 16, seed=3), _model(2, 16, seed=5), _model(1, 8, seed=6)
    preds = [OnlinePredictor(m1, AccelConfig(), inference=p) for p in ('compiled', 'numpy')]
    outs: list[list] = [[], []]
    for k in range(len(t)):
        if k == 150:
            for p in preds:
                p.swap_model(m2)            # same shapes: the LSTM state carries over
        if k == 250:
            for p in preds:
                p.swap_model(m3)            # other shapes: state zeroed, the filter kept
        if k == 450:
            for p in preds:
                p.reset()
        for p, out in zip(preds, outs):
            # float32 and strided inputs are converted, not refused.
            qk = q[k].astype(np.float32) if k % 7 == 0 else q[k]
            qdk = np.repeat(qd[k], 2)[::2] if k % 5 == 0 else qd[k]
            out.append(p.update(t[k], qk, qdk))
    for k, (ra, rb) in enumerate(zip(*outs)):
        assert (ra.rejected, ra.reset) == (rb.rejected, rb.reset), k
        if rb.tau is not None:
            assert np.max(np.abs(ra.tau - rb.tau)) < TOL_NM, k
    assert outs[0][450].reset and not outs[0][250].reset


def test_residual_rbd_output_adds_the_nominal_torque_in_both_paths() -> None:
    pytest.importorskip('pinocchio', reason='Pinocchio (pip package pin) is not installed')
    from invdyn_ros.core.nominal import lwr4plus_spec, NominalModel
    from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J
    nominal = NominalModel(lwr4plus_spec(J))
    torch.manual_seed(0)
    cfg = LstmConfig(J, 1000.0, hidden_size=8)
    model = LstmInverseDynamics(cfg, Normalizer.identity(15, 5)).eval()
    t, q, qd = _stream(400, 5, seed=7)
    q = np.nan_to_num(q) * 0.1
    qd = np.clip(qd, -2.0, 2.0)
    res = [_run(OnlinePredictor(model, AccelConfig(), [150.0] * 5, target='residual_rbd',
                                nominal=nominal, inference=p), t, q, qd)
           for p in ('compiled', 'numpy')]
    n_out = 0
    for ra, rb in zip(*res):
        assert (ra.rejected, ra.clamped) == (rb.rejected, rb.clamped)
        if rb.tau is not None:
            assert np.max(np.abs(ra.tau - rb.tau)) < TOL_NM
            n_out += 1
    assert n_out > 390


def test_inference_setting_is_checked() -> None:
    with pytest.raises(ValueError, match='inference must be one of'):
        OnlinePredictor(_model(), inference='gpu')
    with pytest.raises(ValueError, match='float64 models only'):
        OnlinePredictor(_model(), dtype=np.float32, inference='compiled')
    assert OnlinePredictor(_model(), dtype=np.float32).path == 'numpy'
    with pytest.raises(ParamError, match='inference'):
        PredictorParams(inference='fast').validate()


@pytest.mark.parametrize('dt', [0.001, 0.002, 0.004])
def test_filter_restart_without_velocity_then_with_it_matches(dt: float) -> None:
    """A restart on a sample without qd (first sample, gap, reset) followed by samples with
    qd: the filter's covariance update subtracts nearly equal numbers there, so any reordering
    of its arithmetic shows (a reviewer measured 0.02-0.8 Nm with fast-math flags)."""
    model = _model(1, 8, seed=6)
    rng = np.random.default_rng(9)
    preds = [OnlinePredictor(model, AccelConfig(), inference=p) for p in ('compiled', 'numpy')]
    worst = 0.0
    for k in range(400):
        q = np.array([0.1, 0.2, 0.3]) + 0.01 * k + rng.normal(0.0, 1e-3, 3)
        qd = None if k % 100 == 0 or rng.random() < 0.3 else rng.normal(5.0, 0.1, 3)
        if k == 250:
            for p in preds:
                p.reset()
        t = dt * k + (0.5 if k >= 300 else 0.0)            # a gap: another restart
        ra, rb = (p.update(t, q, qd) for p in preds)
        assert (ra.rejected, ra.reset, ra.clamped) == (rb.rejected, rb.reset, rb.clamped), k
        worst = max(worst, float(np.max(np.abs(ra.tau - rb.tau))))
    assert worst < TOL_NM
    # The filter states themselves agree to rounding.
    state = preds[0]._cc['state']
    assert np.allclose(state[cc.S_P:cc.S_X], preds[1]._accel.covariance[np.triu_indices(3)],
                       rtol=1e-12, atol=0.0)


def _constant_model(tau) -> LstmConfig:
    """All weights zero: the output is exactly the normalisation's y_mean, ``tau``."""
    from invdyn_ros.core.lstm_numpy import lstm_weight_shapes, LstmWeights
    cfg = LstmConfig(('a', 'b'), 1000.0, hidden_size=2)
    norm = Normalizer(np.zeros(6), np.ones(6), np.array(tau, float), np.ones(2))
    return LstmWeights(cfg, norm, {k: np.zeros(s) for k, s in lstm_weight_shapes(cfg).items()},
                       'float64')


@pytest.mark.filterwarnings('ignore:overflow encountered')   # numpy's sum of 1e308s
@pytest.mark.parametrize('tau, limits', [
    ([1e308, 1e308], None),                         # finite outputs whose sum overflows
    ([1e308, 1e308], [1.0, 2.0]),
    ([0.7, 3.0000000000000004], [1.0, 3.0]),        # one rounding step above a limit
    ([-0.5, 7.0], [1.0, 3.0]),
])
def test_extreme_outputs_are_judged_alike(tau, limits) -> None:
    q = np.zeros(2)
    ra, rb = (OnlinePredictor(_constant_model(tau), torque_limits=limits, inference=p)
              .update(0.0, q, q) for p in ('compiled', 'numpy'))
    assert (ra.rejected, ra.clamped) == (rb.rejected, rb.clamped)
    assert (ra.tau is None and rb.tau is None) or np.array_equal(ra.tau, rb.tau)


def test_kernel_refuses_buffers_of_the_wrong_size_and_stays_usable() -> None:
    d, n_l, h = 2, 1, 4
    lay = cc.state_layout(d, n_l, h)
    model = np.zeros(4 * h * (3 * d + h + 1) + d * h + d)
    bounds = np.zeros(4 * d)
    consts = cc.consts_buffer(AccelConfig(), [1.0, 1.0])
    state = np.zeros(lay['all'].stop)
    kernel = cc.Kernel(model, bounds, consts, state, n_l, h, d)
    for args, what in (((model, bounds, np.zeros(lay['all'].stop), n_l, 4096), 'model buffer'),
                       ((model[:-1], bounds, state, n_l, h), 'model buffer'),
                       ((model, bounds[:-1], state, n_l, h), 'bounds'),
                       ((model, bounds, state[:-1], n_l, h), 'state buffer'),
                       ((model, bounds, state, 0, h), 'layers and hidden')):
        with pytest.raises(ValueError, match=what):
            kernel.set_model(*args)
    with pytest.raises(ValueError, match='consts'):
        cc.Kernel(model, bounds, consts[:-1], state, n_l, h, d)
    # Nothing was replaced: the kernel still steps on its own buffers.
    assert kernel.step(0.0, np.zeros(d), np.zeros(d), True, True) == cc.OK_RESET
