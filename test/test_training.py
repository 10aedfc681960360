"""Training, and the online (step-by-step) path against the sequence path."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.lstm import LstmConfig
from invdyn_ros.core.online import OnlinePredictor, Rejection, run_online
from invdyn_ros.core import fused_lstm
from invdyn_ros.core.training import (clip_grad_norm, evaluate_sequences, FlatAdagrad,
                                      flatten_parameters, predict_sequence, prepare,
                                      TrainConfig, train_lstm)
from invdyn_ros.core.trajectory import Trajectory

NAMES = ('j1', 'j2')


def _toy(seed, n=3000, rate=200.0):
    """A 2-joint arm-like system: inertia, gravity, and friction with a slow hidden state
    (a first-order lag on velocity), so the torque depends on history, not only on x."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    w = rng.uniform(0.5, 2.0, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    q = np.sin(np.outer(t, w) + ph)
    qd = w * np.cos(np.outer(t, w) + ph)
    qdd = -w * w * np.sin(np.outer(t, w) + ph)
    lag = np.zeros_like(qd)
    for k in range(1, n):
        lag[k] = lag[k - 1] + (qd[k] - lag[k - 1]) * (1.0 / rate) / 0.3
    tau = 2.0 * qdd + 5.0 * np.sin(q) + 1.5 * np.tanh(5 * lag)
    return Trajectory(q=q, qd=qd, tau=tau + rng.normal(0, 0.01, tau.shape), t=t,
                      joint_names=NAMES, source=f'toy{seed}')


@pytest.fixture(scope='module')
def trained():
    trajs = [_toy(s) for s in range(6)]
    cfg = TrainConfig(epochs=25, batch=8, window=50, segment=400, lr=0.05, patience=0,
                      threads=1, seed=3)
    res = train_lstm(trajs, LstmConfig(joint_names=NAMES, rate_hz=200.0, hidden_size=24),
                     cfg, AccelConfig())
    return res


def test_training_reaches_a_loss_threshold(trained):
    # Variance of the toy torque is ~12 Nm^2; a model that learned it is far below 5 %.
    test = prepare([_toy(100)], NAMES)
    scores = evaluate_sequences(trained.model, test)
    assert scores['nmse'] < 0.05, scores
    assert trained.history[-1]['train_loss'] < trained.history[0]['train_loss']


def test_training_is_reproducible_with_a_seed():
    trajs = [_toy(s, n=600) for s in range(3)]
    cfg = TrainConfig(epochs=2, batch=4, window=20, segment=100, threads=1, seed=7)
    mcfg = LstmConfig(joint_names=NAMES, rate_hz=200.0, hidden_size=8)
    a = train_lstm(trajs, mcfg, cfg).model.state_dict()
    b = train_lstm(trajs, mcfg, cfg).model.state_dict()
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k


def test_online_step_by_step_equals_sequence(trained):
    tr = _toy(101, n=1500)
    seq = predict_sequence(trained.model, prepare([tr], NAMES)[0].x)
    online, valid = run_online(OnlinePredictor(trained.model, AccelConfig()), tr.t, tr.q, tr.qd)
    assert valid.all()
    np.testing.assert_allclose(online, seq, atol=1e-5, rtol=0)


def test_online_rejects_and_resets(trained):
    p = OnlinePredictor(trained.model, AccelConfig(max_gap_s=0.05), torque_limits=[1.0, 1.0])
    q = np.zeros(2)
    assert p.update(0.0, q, q).reset
    r = p.update(0.005, np.array([np.nan, 0.0]), q)
    assert r.tau is None and r.rejected is Rejection.NON_FINITE_INPUT
    assert p.update(0.005, np.zeros(3), q).rejected is Rejection.WRONG_SHAPE
    r = p.update(0.005, q, q)
    assert r.tau is not None and np.all(np.abs(r.tau) <= 1.0)
    assert p.update(0.005, q, q).rejected is Rejection.DUPLICATE_STAMP
    assert p.update(1.0, q, q).reset                       # gap
    assert p.update(0.5, q, q).reset                       # backwards
    with pytest.raises(ValueError, match='torque_limits'):
        OnlinePredictor(trained.model, torque_limits=[1.0, -1.0])


@pytest.mark.parametrize('max_norm', [0.1, 1.0, 1e6])
def test_clip_grad_norm_is_torchs(max_norm):
    """The lean clip scales gradients exactly as torch.nn.utils.clip_grad_norm_ (clipped or
    left alone)."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(16, 5), (16, 4), (16,), (3, 4), (3,)]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    ours = [torch.zeros(s, requires_grad=True) for s in shapes]
    ref = [torch.zeros(s, requires_grad=True) for s in shapes]
    for p, q, g in zip(ours, ref, grads):
        p.grad, q.grad = g.clone(), g.clone()
    clip_grad_norm(ours, max_norm)
    torch.nn.utils.clip_grad_norm_(ref, max_norm)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
    total = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in ours]))
    assert total <= max_norm * (1 + 1e-5)
    if max_norm == 1e6:   # nothing to clip: untouched
        assert all(torch.equal(p.grad, g) for p, g in zip(ours, grads))


def test_diverging_training_raises_clearly():
    trajs = [_toy(s, n=400) for s in range(2)]
    bad = trajs[0]
    bad.tau[:] = 1e30   # absurd torques: the normalised loss is fine, so poison the lr instead
    cfg = TrainConfig(epochs=3, batch=2, window=20, segment=100, lr=1e30, optimizer='adam',
                      grad_clip=0.0, threads=1)
    with pytest.raises(FloatingPointError, match='diverged'):
        train_lstm(trajs, LstmConfig(joint_names=NAMES, rate_hz=200.0, hidden_size=4), cfg)


def test_mse_loss_weighs_joints_by_their_torque():
    # Joint 0 carries 20x the torque of joint 1 and the model is too small to fit both:
    # trained on 'mse' it favours joint 0 (as plain MSE scores), on 'normalised' both joints
    # weigh alike (as normalised MSE scores). Seeded: the same numbers on every run.
    def scaled(seed):
        tr = _toy(seed)
        return Trajectory(q=tr.q, qd=tr.qd, tau=tr.tau * np.array([20.0, 1.0]), t=tr.t,
                          joint_names=NAMES, source=tr.source)
    trajs = [scaled(s) for s in range(6)]
    test = prepare([scaled(100)], NAMES)
    mcfg = LstmConfig(joint_names=NAMES, rate_hz=200.0, hidden_size=4)
    got = {}
    for loss in ('normalised', 'mse'):
        cfg = TrainConfig(epochs=25, batch=8, window=50, segment=400, lr=0.05, patience=0,
                          threads=1, seed=3, loss=loss)
        got[loss] = evaluate_sequences(train_lstm(trajs, mcfg, cfg).model, test)[
            'nmse_per_joint']
    # measured: normalised [0.24, 0.12], mse [0.05, 1.06]
    assert got['mse'][0] < 0.5 * got['normalised'][0]
    assert got['normalised'][1] < 0.5 * got['mse'][1]


@pytest.mark.parametrize('field,value', [('epochs', 0), ('optimizer', 'sgd'), ('lr', -1.0),
                                         ('burn_in', 1000), ('val_fraction', 1.0),
                                         ('weight_decay', -1.0), ('weight_decay', float('nan')),
                                         ('loss', 'huber'), ('kernel', 'cuda')])
def test_train_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize('optimizer', ['adagrad', 'adam'])
def test_weight_decay_shrinks_the_weights(optimizer):
    trajs = [_toy(s, n=400) for s in range(2)]
    mcfg = LstmConfig(joint_names=NAMES, rate_hz=200.0, hidden_size=8)
    norms = []
    for wd in (0.0, 0.5):
        cfg = TrainConfig(epochs=3, batch=4, window=20, segment=100, threads=1, seed=7,
                          optimizer=optimizer, lr=0.01, weight_decay=wd, val_fraction=0.0)
        model = train_lstm(trajs, mcfg, cfg).model
        norms.append(sum(float((p.detach() ** 2).sum()) for p in model.parameters()))
    assert norms[1] < norms[0]


def test_clip_refuses_a_non_finite_gradient():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([1.0, float('inf'), 0.0])
    with pytest.raises(FloatingPointError, match='gradient norm'):
        clip_grad_norm([p], 1.0)


@pytest.mark.parametrize('weight_decay', [0.0, 0.003])
def test_flat_adagrad_is_torchs(weight_decay):
    """FlatAdagrad on a flattened model takes the steps torch.optim.Adagrad takes on the
    model's own parameters, and the gradients accumulate in place into the flat buffer."""
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
              for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    flat = flatten_parameters(models[0])
    ours = FlatAdagrad(flat, lr=0.1, weight_decay=weight_decay)
    ref = torch.optim.Adagrad(models[1].parameters(), lr=0.1, weight_decay=weight_decay)
    for step in range(20):
        x = torch.randn(16, 3)
        flat.grad.zero_()
        models[0](x).square().sum().backward()
        assert models[0][0].weight.grad.data_ptr() == flat.grad.data_ptr()   # in place
        ours.step()
        ref.zero_grad()
        models[1](x).square().sum().backward()
        ref.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():   # the flat buffer is the model's weights
        assert float((flat - torch.cat([p.reshape(-1) for p in models[1].parameters()]))
                     .abs().max()) < 1e-5


def test_compiled_and_torch_kernels_train_the_same_model():
    """The compiled LSTM kernel and nn.LSTM train the same model from the same seed, to
    float32 rounding accumulated over the run (two layers: the kernel's dx path counts)."""
    if not fused_lstm.available():
        pytest.skip('the compiled LSTM kernel was not built')
    trajs = [_toy(s, n=600) for s in range(3)]
    mcfg = LstmConfig(joint_names=NAMES, rate_hz=200.0, hidden_size=8, num_layers=2)
    test = prepare([_toy(100, n=600)], NAMES)
    res = {}
    for kernel in ('torch', 'compiled'):
        cfg = TrainConfig(epochs=3, batch=4, window=20, segment=100, threads=1, seed=7,
                          kernel=kernel)
        r = train_lstm(trajs, mcfg, cfg)
        res[kernel] = (r, predict_sequence(r.model, test[0].x))
        assert all(p.grad is None for p in r.model.parameters())
    (a, pa), (b, pb) = res['torch'], res['compiled']
    for ha, hb in zip(a.history, b.history):
        assert abs(ha['train_loss'] - hb['train_loss']) <= 1e-4 * ha['train_loss']
    np.testing.assert_allclose(pb, pa, atol=1e-3 * float(np.abs(pa).max()), rtol=0)


def test_kernel_choice_where_the_compiled_kernel_cannot_run(monkeypatch):
    monkeypatch.setattr(fused_lstm, '_KERNEL', False)   # as where it was not built
    trajs = [_toy(s, n=300) for s in range(2)]
    mcfg = LstmConfig(joint_names=NAMES, rate_hz=200.0, hidden_size=4)
    base = dict(epochs=1, batch=2, window=20, segment=100, threads=1, val_fraction=0.0)
    with pytest.raises(ValueError, match='kernel compiled requested, but .*not built'):
        train_lstm(trajs, mcfg, TrainConfig(**base, kernel='compiled'))
    assert np.isfinite(train_lstm(trajs, mcfg, TrainConfig(**base)).history[0]['train_loss'])


def test_training_holds_every_blas_library_to_one_thread_and_restores_them():
    """In a fresh process (scipy's BLAS not yet loaded: the compiled kernel loads it), every
    BLAS library runs one thread while train_lstm runs, and those loaded before it have their
    own limits back afterwards."""
    script = textwrap.dedent("""
        import json
        import numpy as np
        from threadpoolctl import threadpool_info
        from invdyn_ros.core.lstm import LstmConfig
        from invdyn_ros.core.training import TrainConfig, train_lstm
        from invdyn_ros.core.trajectory import Trajectory
        def blas():
            return {i['filepath']: i['num_threads'] for i in threadpool_info()
                    if i['user_api'] == 'blas'}
        t = np.arange(300) / 100.0
        q = np.stack([np.sin(t), np.cos(t)], 1)
        tr = Trajectory(q=q, qd=q, tau=q, t=t, joint_names=('a', 'b'), source='x')
        before = blas()
        during = []
        train_lstm([tr], LstmConfig(joint_names=('a', 'b'), rate_hz=100.0, hidden_size=4),
                   TrainConfig(epochs=2, batch=2, window=20, segment=100, val_fraction=0.0,
                               threads=2), progress=lambda e: during.append(blas()))
        print(json.dumps({'before': before, 'during': during, 'after': blas()}))
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS')}
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got['during'] and all(n == 1 for d in got['during'] for n in d.values()), got
    if fused_lstm.available():
        assert any('scipy_openblas-' in f for f in got['during'][0]), got   # the kernel's BLAS
    assert got['before'] and all(got['after'][f] == n for f, n in got['before'].items()), got
