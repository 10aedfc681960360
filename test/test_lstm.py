"""Tests for the LSTM inverse-dynamics model, its normaliser and the numpy stepper."""

import numpy as np
import pytest
import torch

from invdyn_ros.core.lstm import (
    LstmConfig, LstmInverseDynamics, Normalizer, NumpyLstmStepper, STD_FLOOR, check_joint_names,
    sequence_inputs)

JOINTS = ('j1', 'j2', 'j3', 'j4', 'j5')
RATE_HZ = 1000.0
N_STEPS = 1000
#: Weight scale for test models: larger than torch's default init so gates and cell states
#: move far from their resting values (a near-linear model would hide ordering bugs), small
#: enough that the recurrence is not chaotic (float32 rounding would then grow without bound).
WEIGHT_SCALE = 0.2
TOL_F32 = 1e-5
TOL_F64 = 1e-10


def _data(seed: int = 0, n: int = N_STEPS, d: int = len(JOINTS)) -> tuple[np.ndarray, np.ndarray]:
    """Smooth-ish inputs (n, 3d) with per-column offsets and scales, torques (n, d) [Nm]."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(n, 3 * d)), axis=0) * 0.05 + rng.normal(size=3 * d)
    x *= np.repeat([1.0, 3.0, 20.0], d)  # rad, rad/s, rad/s^2 have different ranges
    y = rng.normal(size=(n, d)) * 2.0 + 0.5
    return x, y


def _model(num_layers: int = 1, hidden_size: int = 32, dtype: torch.dtype = torch.float32,
           seed: int = 0) -> LstmInverseDynamics:
    torch.manual_seed(seed)
    cfg = LstmConfig(JOINTS, RATE_HZ, hidden_size=hidden_size, num_layers=num_layers)
    x, y = _data(seed)
    model = LstmInverseDynamics(cfg, Normalizer.from_data(x, y))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * WEIGHT_SCALE)
    return model.to(dtype).eval()


# -- LstmConfig --------------------------------------------------------------------------------

def test_config_dims_and_defaults() -> None:
    cfg = LstmConfig(list(JOINTS), RATE_HZ)
    assert cfg.joint_names == JOINTS
    assert (cfg.input_kind, cfg.hidden_size, cfg.num_layers, cfg.dropout) == (
        'q_qd_qdd', 64, 1, 0.0)
    assert (cfg.dof, cfg.input_dim, cfg.output_dim) == (5, 15, 5)
    assert cfg.architecture() == {'hidden_size': 64, 'num_layers': 1, 'dropout': 0.0}


@pytest.mark.parametrize('kwargs, fragment', [
    ({'joint_names': ()}, 'joint_names is empty'),
    ({'joint_names': 'j1'}, 'sequence of names'),
    ({'joint_names': ('a', 'b', 'a')}, "duplicate joint names ['a']"),
    ({'joint_names': ('a', '')}, 'non-empty strings'),
    ({'input_kind': 'q_qd'}, 'unknown input_kind'),
    ({'hidden_size': 0}, 'hidden_size must be a positive integer'),
    ({'hidden_size': 8.0}, 'hidden_size must be a positive integer'),
    ({'num_layers': 0}, 'num_layers must be a positive integer'),
    ({'dropout': 1.0}, 'dropout must be in [0, 1)'),
    ({'rate_hz': 0.0}, 'rate_hz must be a positive finite number'),
    ({'rate_hz': float('nan')}, 'rate_hz must be a positive finite number'),
])
def test_config_refuses(kwargs: dict, fragment: str) -> None:
    args = {'joint_names': JOINTS, 'rate_hz': RATE_HZ, **kwargs}
    with pytest.raises(ValueError) as err:
        LstmConfig(**args)
    assert fragment in str(err.value)


def test_check_joint_names() -> None:
    cfg = LstmConfig(JOINTS, RATE_HZ)
    check_joint_names(cfg, list(JOINTS))
    with pytest.raises(ValueError, match='joint order differs'):
        check_joint_names(cfg, JOINTS[::-1])
    with pytest.raises(ValueError, match='joints differ'):
        check_joint_names(cfg, JOINTS[:4])


# -- Normalizer --------------------------------------------------------------------------------

def test_normalizer_from_data_and_inverse() -> None:
    x, y = _data()
    x[:, 3] = 1.25  # a joint that never moved: std 0
    norm = Normalizer.from_data(x, y)
    assert norm.x_std[3] == STD_FLOOR and norm.x_mean[3] == 1.25
    np.testing.assert_allclose(norm.x_mean, x.mean(axis=0))
    np.testing.assert_allclose(norm.y_std, y.std(axis=0))
    xn = norm.normalise_x(x)
    assert np.all(np.isfinite(xn))
    np.testing.assert_allclose(xn[:, [0, 1, 2, 4]].std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(norm.denormalise_x(xn), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.denormalise_y(norm.normalise_y(y)), y, rtol=1e-12,
                               atol=1e-12)


def test_normalizer_refuses_bad_input() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match='same non-zero number of rows'):
        Normalizer.from_data(x, y[:-1])
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match='NaN/inf'):
        Normalizer.from_data(x, y)
    with pytest.raises(ValueError, match='x_std must be > 0'):
        Normalizer(np.zeros(3), np.array([1.0, 0.0, 1.0]), np.zeros(1), np.ones(1))
    with pytest.raises(ValueError, match='equal non-zero length'):
        Normalizer(np.zeros(3), np.ones(2), np.zeros(1), np.ones(1))


def test_model_refuses_normalizer_of_wrong_size() -> None:
    cfg = LstmConfig(JOINTS, RATE_HZ)
    with pytest.raises(ValueError, match='normalizer is for 6 inputs'):
        LstmInverseDynamics(cfg, Normalizer.identity(6, 2))


# -- LstmInverseDynamics -----------------------------------------------------------------------

def test_normalisation_is_inside_the_model() -> None:
    """forward takes physical units and returns Nm: the buffers do the (de)normalisation."""
    model = _model()
    x, _ = _data(1, n=50)
    norm = model.normalizer
    with torch.no_grad():
        tau, _ = model(torch.as_tensor(x, dtype=torch.float32)[None])
        xn = torch.as_tensor(norm.normalise_x(x), dtype=torch.float32)[None]
        raw, _ = model.lstm(xn)
        manual = norm.denormalise_y(model.head(raw).numpy()[0])
    np.testing.assert_allclose(tau.numpy()[0], manual, rtol=1e-5, atol=1e-5)
    buffers = dict(model.named_buffers())
    assert set(buffers) == {'x_mean', 'x_std', 'y_mean', 'y_std'}
    assert 'x_mean' in model.state_dict()
    # The identity normaliser really is one.
    plain = LstmInverseDynamics(model.config)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in buffers},
                          strict=False)
    with torch.no_grad():
        out, _ = plain(xn)
        np.testing.assert_allclose(out.numpy(), model.head(raw).numpy(), rtol=1e-6, atol=1e-6)


def test_forward_normalised_is_forward_in_normalised_units() -> None:
    """Training calls forward_normalised on data normalised once: it must be forward."""
    model = _model()
    x, _ = _data(1, n=50)
    norm = model.normalizer
    state = model.initial_state(1)
    with torch.no_grad():
        tau, (h, c) = model(torch.as_tensor(x, dtype=torch.float32)[None], state)
        xn = torch.as_tensor(norm.normalise_x(x), dtype=torch.float32)[None]
        yn, (hn, cn) = model.forward_normalised(xn, state)
    np.testing.assert_allclose(norm.denormalise_y(yn.numpy()[0]), tau.numpy()[0],
                               rtol=1e-5, atol=1e-5)
    # The inputs were normalised in float64 here, in float32 inside forward: rounding only.
    torch.testing.assert_close(hn, h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cn, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('num_layers', [1, 2, 3])
def test_step_equals_sequence_float32(num_layers: int) -> None:
    model = _model(num_layers)
    x, _ = _data(2)
    batch = np.stack([x, x[::-1], 0.5 * x])  # (3, T, 15)
    xb = torch.as_tensor(batch, dtype=torch.float32)
    with torch.no_grad():
        tau_seq, (h_seq, c_seq) = model(xb)
        state = model.initial_state(batch=3)
        steps = []
        for k in range(N_STEPS):
            tau_k, state = model.step(xb[:, k], state)
            steps.append(tau_k)
    tau_steps = torch.stack(steps, dim=1)
    assert tau_seq.shape == (3, N_STEPS, 5) and tau_steps.shape == tau_seq.shape
    assert h_seq.shape == (num_layers, 3, 32) and c_seq.shape == (num_layers, 3, 32)
    assert float(tau_seq.std()) > 0.5  # the model is not trivially constant
    np.testing.assert_allclose(tau_steps.numpy(), tau_seq.numpy(), atol=TOL_F32, rtol=0)
    np.testing.assert_allclose(state[0].numpy(), h_seq.numpy(), atol=TOL_F32, rtol=0)
    np.testing.assert_allclose(state[1].numpy(), c_seq.numpy(), atol=TOL_F32, rtol=TOL_F32)


def test_step_equals_sequence_float64_unbatched() -> None:
    model = _model(2, dtype=torch.float64)
    x, _ = _data(3)
    xt = torch.as_tensor(x)
    with torch.no_grad():
        tau_seq, _ = model(xt[None])
        state = None
        steps = []
        for k in range(N_STEPS):
            tau_k, state = model.step(xt[k], state)
            assert tau_k.shape == (5,)
            steps.append(tau_k)
    assert state[0].shape == (2, 1, 32)
    np.testing.assert_allclose(torch.stack(steps).numpy(), tau_seq[0].numpy(), atol=TOL_F64,
                               rtol=0)


def test_state_carries_across_chunks_and_resets() -> None:
    model = _model(2)
    x, _ = _data(4, n=200)
    xt = torch.as_tensor(x, dtype=torch.float32)[None]
    with torch.no_grad():
        whole, _ = model(xt)
        first, state = model(xt[:, :120])
        second, _ = model(xt[:, 120:], state)
        fresh, _ = model(xt[:, 120:], model.initial_state())
        again, _ = model(xt[:, 120:])
    np.testing.assert_allclose(torch.cat([first, second], 1).numpy(), whole.numpy(),
                               atol=TOL_F32, rtol=0)
    # A reset (zero state) is what state=None means, and differs from the carried state.
    np.testing.assert_array_equal(fresh.numpy(), again.numpy())
    assert np.abs(fresh.numpy() - second.numpy()).max() > 1e-3
    h0, c0 = model.initial_state(batch=4)
    assert h0.shape == (2, 4, 32) and not h0.any() and not c0.any()
    assert h0.dtype == torch.float32


def test_forward_and_step_refuse_wrong_shapes() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r'x must have shape \(B, T, 15\)'):
        model(torch.zeros(1, 10, 14))
    with pytest.raises(ValueError, match=r'x must have shape \(15,\) or \(B, 15\)'):
        model.step(torch.zeros(1, 1, 15))


def test_forward_casts_input_dtype() -> None:
    model = _model()
    x, _ = _data(5, n=20)
    with torch.no_grad():
        a, _ = model(torch.as_tensor(x, dtype=torch.float64)[None])
        b, _ = model(torch.as_tensor(x, dtype=torch.float32)[None])
    assert a.dtype == torch.float32
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_dropout_between_layers_only_in_training() -> None:
    cfg = LstmConfig(JOINTS, RATE_HZ, hidden_size=16, num_layers=2, dropout=0.5)
    model = LstmInverseDynamics(cfg)
    assert model.lstm.dropout == 0.5
    single = LstmInverseDynamics(LstmConfig(JOINTS, RATE_HZ, hidden_size=16, dropout=0.5))
    assert single.lstm.dropout == 0.0  # torch would warn: no layer to drop out between


def test_sequence_inputs_layout() -> None:
    q, qd, qdd = np.ones((4, 2)), 2 * np.ones((4, 2)), 3 * np.ones((4, 2))
    x = sequence_inputs(q, qd, qdd)
    assert x.shape == (4, 6)
    np.testing.assert_array_equal(x[0], [1, 1, 2, 2, 3, 3])


# -- NumpyLstmStepper --------------------------------------------------------------------------

@pytest.mark.parametrize('num_layers', [1, 2])
@pytest.mark.parametrize('dtype, np_dtype, tol', [
    (torch.float32, np.float32, TOL_F32),
    (torch.float64, np.float64, TOL_F64),
])
def test_numpy_stepper_matches_torch(num_layers: int, dtype: torch.dtype, np_dtype: type,
                                     tol: float) -> None:
    model = _model(num_layers, hidden_size=64, dtype=dtype)
    x, _ = _data(6)
    x = x.astype(np_dtype)
    with torch.no_grad():
        tau_seq, (h_seq, c_seq) = model(torch.as_tensor(x)[None])
    stepper = NumpyLstmStepper(model, np_dtype)
    state = stepper.initial_state()
    out = np.empty((N_STEPS, 5))
    for k in range(N_STEPS):
        tau, state = stepper.step(x[k], state)
        assert tau.dtype == np_dtype and tau.shape == (5,)
        out[k] = tau
    assert float(tau_seq.std()) > 0.5
    np.testing.assert_allclose(out, tau_seq[0].numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(state[0], h_seq[:, 0].numpy(), atol=tol, rtol=0)
    # The cell state is unbounded (it integrates while the forget gate is near 1; here it
    # reaches ~100), so compare it relative to its size: float32 resolution there is ~1e-5.
    np.testing.assert_allclose(state[1], c_seq[:, 0].numpy(), atol=tol, rtol=tol)


def test_numpy_stepper_float64_from_float32_model() -> None:
    """A float64 stepper of a float32 model agrees with that model to float32 accuracy."""
    model = _model(1)
    x, _ = _data(7, n=300)
    with torch.no_grad():
        tau_seq, _ = model(torch.as_tensor(x, dtype=torch.float32)[None])
    stepper = NumpyLstmStepper(model)
    state = stepper.initial_state()
    x32 = x.astype(np.float32).astype(np.float64)  # the inputs torch actually saw
    out = []
    for k in range(len(x)):
        tau, state = stepper.step(x32[k], state)
        out.append(tau)
    np.testing.assert_allclose(np.array(out), tau_seq[0].numpy(), atol=TOL_F32, rtol=0)


def test_numpy_stepper_state_is_explicit() -> None:
    """The passed state is never modified; the same state gives the same result; reset works."""
    model = _model(2, dtype=torch.float64)
    stepper = NumpyLstmStepper(model)
    x, _ = _data(8, n=30)
    state = stepper.initial_state()
    assert state[0].shape == (2, 32) and not state[0].any() and not state[1].any()
    for k in range(20):
        _, state = stepper.step(x[k], state)
    saved = (state[0].copy(), state[1].copy())
    tau_a, next_a = stepper.step(x[20], state)
    tau_b, next_b = stepper.step(x[20], state)
    np.testing.assert_array_equal(state[0], saved[0])
    np.testing.assert_array_equal(state[1], saved[1])
    np.testing.assert_array_equal(tau_a, tau_b)
    np.testing.assert_array_equal(next_a[0], next_b[0])
    assert next_a[0] is not next_b[0]
    tau_reset, _ = stepper.step(x[20], stepper.initial_state())
    with torch.no_grad():
        tau_torch, _ = model.step(torch.as_tensor(x[20]))
    np.testing.assert_allclose(tau_reset, tau_torch.numpy(), atol=TOL_F64, rtol=0)
    assert np.abs(tau_reset - tau_a).max() > 1e-6


def test_numpy_stepper_is_a_snapshot() -> None:
    model = _model(1, dtype=torch.float64)
    stepper = NumpyLstmStepper(model)
    x, _ = _data(9, n=1)
    before, _ = stepper.step(x[0], stepper.initial_state())
    with torch.no_grad():
        model.head.bias.add_(1.0)
    after, _ = stepper.step(x[0], stepper.initial_state())
    np.testing.assert_array_equal(before, after)


def test_numpy_stepper_refuses_wrong_shapes() -> None:
    stepper = NumpyLstmStepper(_model(2))
    state = stepper.initial_state()
    with pytest.raises(ValueError, match=r'x must have shape \(15,\)'):
        stepper.step(np.zeros(14), state)
    with pytest.raises(ValueError, match=r'state must be two arrays of shape \(2, 32\)'):
        stepper.step(np.zeros(15), (np.zeros((1, 32)), np.zeros((1, 32))))
    with pytest.raises(ValueError, match='float32 or float64'):
        NumpyLstmStepper(_model(), np.float16)
