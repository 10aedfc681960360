"""The torch-free model path: LstmWeights, its loader and the numpy stepper built from it."""

import os
import re
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from invdyn_ros.core.checkpoint import (CheckpointError, checkpoint_to_bytes, load_checkpoint,
                                        load_lstm_weights, lstm_weights_from_bytes,
                                        save_checkpoint)
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer, NumpyLstmStepper
from invdyn_ros.core.lstm_numpy import lstm_weight_shapes, LstmWeights
from invdyn_ros.core.online import OnlinePredictor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / 'models' / 'lwr4plus_j1-5_lstm.npz'
JOINTS = ('j1', 'j2', 'j3')


def _model(num_layers: int = 2, dtype: torch.dtype = torch.float32) -> LstmInverseDynamics:
    torch.manual_seed(3)
    cfg = LstmConfig(JOINTS, 500.0, hidden_size=16, num_layers=num_layers)
    rng = np.random.default_rng(3)
    norm = Normalizer.from_data(rng.normal(size=(50, 9)) * 3, rng.normal(size=(50, 3)) * 10)
    model = LstmInverseDynamics(cfg, norm).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def test_weight_shapes_are_torch_parameter_shapes() -> None:
    for layers in (1, 3):
        model = _model(layers)
        assert lstm_weight_shapes(model.config) == {
            n: tuple(p.shape) for n, p in model.named_parameters()}


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_weights_round_trip_torch_and_checkpoint(tmp_path: Path, dtype: torch.dtype) -> None:
    model = _model(dtype=dtype)
    lw = model.to_weights()
    assert lw.dtype == str(dtype).replace('torch.', '')
    back = LstmInverseDynamics.from_weights(lw)
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n
    path = save_checkpoint(tmp_path / 'm.npz', model, {'epochs': 1})
    loaded, meta = load_lstm_weights(path, joint_names=JOINTS, rate_hz=500.0)
    assert meta['epochs'] == 1 and meta['kind'] == 'lstm'
    for name, w in lw.weights.items():
        assert loaded.weights[name].dtype == w.dtype
        assert np.array_equal(loaded.weights[name], w), name
    # LstmWeights can be saved as well, giving the same weights and header.
    again, _ = lstm_weights_from_bytes(checkpoint_to_bytes(loaded))
    assert all(np.array_equal(again.weights[n], w) for n, w in lw.weights.items())


def test_stepper_from_weights_equals_stepper_from_model() -> None:
    model = _model()
    a = NumpyLstmStepper(model)
    b = NumpyLstmStepper(model.to_weights())
    rng = np.random.default_rng(0)
    sa, sb = a.initial_state(), b.initial_state()
    for _ in range(50):
        x = rng.normal(size=9)
        ta, sa = a.step(x, sa)
        tb, sb = b.step(x, sb)
        assert np.array_equal(ta, tb)


def test_numpy_path_equals_torch_sequence_on_shipped_model() -> None:
    """The checkpoint the predictor runs, read without torch, reproduces the torch model."""
    lw, _ = load_lstm_weights(DEFAULT_MODEL)
    model, _ = load_checkpoint(DEFAULT_MODEL)
    rng = np.random.default_rng(1)
    d = lw.config.dof
    x = np.cumsum(rng.normal(size=(300, 3 * d)) * 0.05, axis=0)
    with torch.no_grad():
        want, _ = model(torch.as_tensor(x[None], dtype=model.dtype))
    stepper = NumpyLstmStepper(lw)
    state = stepper.initial_state()
    got = np.empty((len(x), d))
    for k in range(len(x)):
        got[k], state = stepper.step(x[k], state)
    assert np.max(np.abs(got - want[0].double().numpy())) < 1e-5 * max(
        1.0, float(np.max(np.abs(got))))


@pytest.mark.parametrize('mutate, fragment', [
    (lambda w: w.pop('head.bias'), "missing ['head.bias']"),
    (lambda w: w.__setitem__('extra', np.zeros(3)), "extra ['extra']"),
    (lambda w: w.__setitem__('head.bias', np.zeros(4)), 'weight head.bias has shape (4,)'),
    (lambda w: w['head.weight'].__setitem__((0, 0), np.nan), 'head.weight has NaN/inf'),
])
def test_weights_validation(mutate, fragment: str) -> None:
    lw = _model().to_weights()
    weights = {n: w.copy() for n, w in lw.weights.items()}
    mutate(weights)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        LstmWeights(lw.config, lw.normalizer, weights, lw.dtype)


def test_torch_free_loader_refuses_like_the_torch_loader() -> None:
    data = checkpoint_to_bytes(_model())
    for call in (lambda: load_checkpoint(Path('/nonexistent/m.npz')),
                 lambda: load_lstm_weights(Path('/nonexistent/m.npz'))):
        with pytest.raises(CheckpointError, match='no such file'):
            call()
    with pytest.raises(CheckpointError, match='joints differ'):
        lstm_weights_from_bytes(data, joint_names=('a', 'b', 'c'))
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        lstm_weights_from_bytes(data[:len(data) // 2])


def test_online_predictor_takes_weights_or_model() -> None:
    model = _model()
    outs = []
    for m in (model, model.to_weights()):
        pred = OnlinePredictor(m, torque_limits=[50.0] * 3)
        q = np.zeros(3)
        outs.append([pred.update(k * 0.002, q + 0.01 * k, q + 0.1).tau for k in range(20)])
    assert all(np.array_equal(a, b) for a, b in zip(*outs))


def test_predictor_process_never_imports_torch() -> None:
    """The predictor's import and model-loading path stays free of torch (its ~200 MB RSS)."""
    code = (
        'import sys\n'
        'import numpy as np\n'
        'import invdyn_ros.nodes.predictor\n'
        'from invdyn_ros.core.checkpoint import load_lstm_weights\n'
        'from invdyn_ros.core.online import OnlinePredictor\n'
        f'lw, _ = load_lstm_weights({str(DEFAULT_MODEL)!r})\n'
        'p = OnlinePredictor(lw, torque_limits=[100.0] * lw.config.dof)\n'
        'z = np.zeros(lw.config.dof)\n'
        'r = [p.update(k * 1e-3, z, z) for k in range(3)]\n'
        'assert r[-1].tau is not None\n'
        'bad = sorted(m for m in ("torch", "gpytorch", "pinocchio") if m in sys.modules)\n'
        'print("heavy:", bad)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=dict(os.environ), timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'heavy: []' in out.stdout, out.stdout
