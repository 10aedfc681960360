"""Tests for the Gaussian-process baseline (exact and sparse) and its checkpoints."""

from dataclasses import replace
import io
import json
from pathlib import Path
import time
import zipfile

import numpy as np
import pytest
import torch

from invdyn_ros.core.checkpoint import (
    CheckpointError, checkpoint_from_bytes, checkpoint_to_bytes, load_checkpoint,
    save_checkpoint)
from invdyn_ros.core.gp import GpConfig, GpInverseDynamics, kmeans_centres, train_gp
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer
from invdyn_ros.core.training import prepare
from invdyn_ros.core.trajectory import Trajectory

JOINTS = ('shoulder', 'elbow')
RATE_HZ = 100.0
#: True observation noise std per joint [Nm]; joint 2 is on a 5x larger torque scale, so the
#: per-joint normalisation and noise are exercised.
NOISE_STD = np.array([0.1, 0.25])
#: The shared test machine has 2 cores and other jobs: one torch thread avoids oversubscription.
THREADS = 1


def _truth(x: np.ndarray) -> np.ndarray:
    """Smooth torques (n, 2) of inputs (n, 6): joint 1 uses inputs 0, 1; joint 2 inputs 2, 3."""
    return np.stack([np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2,
                     5.0 * np.cos(x[:, 2]) * x[:, 3]], axis=1)


def _data(n: int, seed: int, spread: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs (n, 6), true torques (n, 2) and noisy torques (n, 2)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-spread, spread, size=(n, 6))
    f = _truth(x)
    return x, f, f + rng.normal(size=f.shape) * NOISE_STD


def _config(**kwargs) -> GpConfig:
    return GpConfig(JOINTS, RATE_HZ, threads=THREADS, **kwargs)


@pytest.fixture(scope='module')
def exact() -> tuple[GpInverseDynamics, dict]:
    x, _, y = _data(300, seed=0)
    model = GpInverseDynamics(_config(kind='exact'))
    t0 = time.perf_counter()
    info = model.fit(x, y)
    info['outer_wall_s'] = time.perf_counter() - t0
    return model, info


@pytest.fixture(scope='module')
def sparse() -> tuple[GpInverseDynamics, dict]:
    x, _, y = _data(2000, seed=1)
    model = GpInverseDynamics(_config(kind='sparse', num_inducing=64, batch_size=256,
                                      training_iters=300, warm_start_points=300))
    info = model.fit(x, y)
    return model, info


@pytest.fixture(scope='module')
def test_set() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _data(500, seed=9)


def _rmse(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((pred - truth) ** 2, axis=0))


# -- Exact GP ----------------------------------------------------------------------------------

def test_exact_fits_smooth_function(exact, test_set) -> None:
    model, info = exact
    x, f, y = test_set
    mean, std = model.predict(x)
    assert mean.shape == (500, 2) and std.shape == (500, 2)
    # Well below the noise: the GP recovers the function, not just the data.
    assert np.all(_rmse(mean, f) < 0.4 * NOISE_STD), _rmse(mean, f)
    # The predictive std (noise included) covers new noisy measurements ~95 % of the time.
    coverage = np.mean(np.abs(y - mean) <= 1.96 * std, axis=0)
    assert np.all((coverage > 0.9) & (coverage < 0.99)), coverage
    # ... and is dominated by the noise inside the data, not wildly above it.
    assert np.all(np.median(std, axis=0) < 1.3 * NOISE_STD)


def test_exact_learns_noise_and_relevances(exact) -> None:
    model, info = exact
    noise = np.array(info['noise_std_nm'])
    np.testing.assert_allclose(noise, NOISE_STD, rtol=0.2)
    assert info['noise_std_nm'] == model.hyperparameters()['noise_std_nm']
    ls = np.array(info['lengthscales'])
    assert ls.shape == (2, 6)
    # ARD, per joint: each joint's two relevant inputs have shorter length scales than all of
    # its irrelevant ones (the joints are independent GPs with their own hyperparameters).
    for joint, relevant in ((0, [0, 1]), (1, [2, 3])):
        irrelevant = [i for i in range(6) if i not in relevant]
        assert ls[joint, relevant].max() < ls[joint, irrelevant].min(), ls[joint]
    np.testing.assert_allclose(np.array(info['lengthscales_phys']),
                               ls * model.normalizer.x_std[None, :])


def test_exact_fit_info(exact) -> None:
    model, info = exact
    assert info['kind'] == 'exact' and info['objective'] == 'neg_mll'
    assert info['n'] == info['n_available'] == model.num_train == 300
    assert 0.0 < info['fit_time_s'] <= info['outer_wall_s']
    assert np.isfinite(info['neg_mll'])
    assert info['neg_mll'] == pytest.approx(sum(info['neg_mll_per_joint']))
    # The optimiser improved the marginal likelihood from its starting point.
    assert info['neg_mll'] < info['history'][0] - 0.5
    assert not model.training


def test_predict_one_equals_predict_exact(exact) -> None:
    model, _ = exact
    # Inside the data and far outside it (large predictive variance).
    x = np.concatenate([_data(10, seed=3)[0], _data(10, seed=4, spread=6.0)[0]])
    mean, std = model.predict(x)
    for i, xi in enumerate(x):
        m1, s1 = model.predict_one(xi)
        assert m1.shape == (2,) and s1.shape == (2,)
        np.testing.assert_allclose(m1, mean[i], rtol=1e-6, atol=1e-9 * NOISE_STD.max())
        np.testing.assert_allclose(s1, std[i], rtol=1e-4)
    # Far from the data the std grows towards the prior's.
    assert np.all(std[10:].mean(axis=0) > 2.0 * std[:10].mean(axis=0))


def test_threads_restored_after_fit_and_predict() -> None:
    before = torch.get_num_threads()
    x, _, y = _data(40, seed=5)
    model = GpInverseDynamics(GpConfig(JOINTS, RATE_HZ, training_iters=5,
                                       threads=before + 1))
    model.fit(x, y)
    model.predict(x[:3])
    assert torch.get_num_threads() == before


# -- Sparse GP ---------------------------------------------------------------------------------

def test_sparse_close_to_exact(sparse, test_set) -> None:
    model, info = sparse
    x, f, y = test_set
    mean, std = model.predict(x)
    assert info['kind'] == 'sparse' and info['objective'] == 'neg_elbo'
    assert info['n'] == 2000 and model.num_train == 0
    assert np.isfinite(info['neg_elbo'])
    assert np.all(_rmse(mean, f) < 0.4 * NOISE_STD), _rmse(mean, f)
    np.testing.assert_allclose(info['noise_std_nm'], NOISE_STD, rtol=0.25)
    coverage = np.mean(np.abs(y - mean) <= 1.96 * std, axis=0)
    assert np.all((coverage > 0.9) & (coverage < 0.995)), coverage
    # The exact GP on the same 2000 points with the same hyperparameters: the sparse
    # posterior approximates it closely.
    x_train, _, y_train = _data(2000, seed=1)
    state = {k: v for k, v in model.state_arrays().items()
             if k.startswith('likelihood.') or k.endswith(('raw_constant', 'raw_outputscale',
                                                           'raw_lengthscale'))}
    state.update(train_x=x_train, train_y=y_train)
    exact_same = GpInverseDynamics.from_state(replace(model.config, kind='exact'),
                                              model.normalizer, state)
    mean_x, std_x = exact_same.predict(x)
    # Its excess error is a small fraction of the noise.
    assert np.all(_rmse(mean, f) <= 1.3 * _rmse(mean_x, f) + 0.1 * NOISE_STD)
    assert np.all(_rmse(mean, mean_x) < 0.2 * NOISE_STD), _rmse(mean, mean_x)
    np.testing.assert_allclose(np.median(std, axis=0), np.median(std_x, axis=0), rtol=0.1)


def test_predict_one_equals_predict_sparse(sparse) -> None:
    model, _ = sparse
    x = np.concatenate([_data(10, seed=6)[0], _data(10, seed=7, spread=6.0)[0]])
    mean, std = model.predict(x)
    for i, xi in enumerate(x):
        m1, s1 = model.predict_one(xi)
        np.testing.assert_allclose(m1, mean[i], rtol=1e-6, atol=1e-9 * NOISE_STD.max())
        np.testing.assert_allclose(s1, std[i], rtol=1e-4)


def test_sparse_needs_more_samples_than_inducing_points() -> None:
    x, _, y = _data(30, seed=2)
    model = GpInverseDynamics(_config(kind='sparse', num_inducing=50))
    with pytest.raises(ValueError, match='30 samples for num_inducing=50'):
        model.fit(x, y)


def test_kmeans_finds_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + 0.1 * rng.normal(size=(100, 2)) for c in centres])
    found = kmeans_centres(x, 3, np.random.default_rng(1))
    assert found.shape == (3, 2)
    dist = np.linalg.norm(found[:, None, :] - centres[None, :, :], axis=-1)
    assert np.all(dist.min(axis=0) < 0.1)   # every true centre found
    with pytest.raises(ValueError, match='cannot pick 5 centres from 3 points'):
        kmeans_centres(x[:3], 5, rng)


# -- Limits and validation ---------------------------------------------------------------------

def test_exact_refuses_too_many_points() -> None:
    x, _, y = _data(60, seed=8)
    model = GpInverseDynamics(_config(max_exact_points=50, training_iters=5))
    with pytest.raises(ValueError) as err:
        model.fit(x, y)
    msg = str(err.value)
    assert '60 samples exceed max_exact_points=50' in msg
    assert "kind='sparse'" in msg and 'subsample=True' in msg
    assert not model.is_fitted
    model = GpInverseDynamics(_config(max_exact_points=50, subsample=True, training_iters=5))
    info = model.fit(x, y)
    assert info['n'] == model.num_train == 50 and info['n_available'] == 60
    # The subset is rows of the data, kept in their original order.
    rows = [int(np.flatnonzero((x == r).all(axis=1))[0]) for r in model.state_arrays()['train_x']]
    assert rows == sorted(rows) and len(set(rows)) == 50


@pytest.mark.parametrize('kwargs, fragment', [
    ({'kind': 'full'}, "kind must be one of ['exact', 'sparse']"),
    ({'num_inducing': 0}, 'num_inducing must be a positive integer'),
    ({'max_exact_points': 2.5}, 'max_exact_points must be a positive integer'),
    ({'training_iters': 0}, 'training_iters must be a positive integer or None'),
    ({'batch_size': True}, 'batch_size must be a positive integer'),
    ({'threads': 0}, 'threads must be a positive integer'),
    ({'lr': -0.1}, 'lr must be a positive number or None'),
    ({'lr': float('nan')}, 'lr must be a positive number or None'),
    ({'seed': -1}, 'seed must be a non-negative integer'),
    ({'warm_start_points': -1}, 'warm_start_points must be a non-negative integer'),
    ({'subsample': 'yes'}, 'subsample must be True or False'),
    ({'optimizer': 'sgd'}, "optimizer must be one of ['auto', 'lbfgs', 'adam']"),
    ({'kind': 'sparse', 'optimizer': 'lbfgs'}, "optimizer 'lbfgs' needs the full-batch"),
    ({'inducing_init': 'grid'}, "inducing_init must be one of ['kmeans', 'random']"),
    ({'input_kind': 'q_qd'}, "unknown input_kind 'q_qd'"),
    ({'rate_hz': 0.0}, 'rate_hz must be a positive finite number'),
    ({'joint_names': 'abc'}, 'joint_names must be a sequence of names'),
    ({'joint_names': ()}, 'joint_names is empty'),
    ({'joint_names': ('a', 'a')}, "duplicate joint names ['a']"),
])
def test_config_validation(kwargs: dict, fragment: str) -> None:
    args = {'joint_names': JOINTS, 'rate_hz': RATE_HZ, **kwargs}
    with pytest.raises(ValueError) as err:
        GpConfig(**args)
    assert fragment in str(err.value), str(err.value)


def test_config_defaults_resolve_per_kind() -> None:
    exact_cfg = GpConfig(JOINTS, RATE_HZ)
    assert (exact_cfg.resolved_optimizer, exact_cfg.input_dim, exact_cfg.output_dim) == (
        'lbfgs', 6, 2)
    sparse_cfg = GpConfig(JOINTS, RATE_HZ, kind='sparse')
    assert sparse_cfg.resolved_optimizer == 'adam'
    assert sparse_cfg.resolved_training_iters > exact_cfg.resolved_training_iters
    assert GpConfig(JOINTS, RATE_HZ, lr=0.3, training_iters=7).resolved_lr == 0.3
    assert GpConfig(JOINTS, RATE_HZ, training_iters=7).resolved_training_iters == 7


def test_fit_and_predict_check_inputs() -> None:
    model = GpInverseDynamics(_config(training_iters=3))
    with pytest.raises(RuntimeError, match='not fitted'):
        model.predict(np.zeros((1, 6)))
    with pytest.raises(ValueError, match=r'x must have shape \(n, 6\)'):
        model.fit(np.zeros((10, 5)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r'y must have shape \(10, 2\)'):
        model.fit(np.zeros((10, 6)), np.zeros((10, 3)))
    x, _, y = _data(20, seed=10)
    y[4, 1] = np.nan
    with pytest.raises(ValueError, match='NaN/inf'):
        model.fit(x, y)
    y[4, 1] = 0.0
    model.fit(x, y)
    with pytest.raises(ValueError, match=r'x must have shape \(6,\)'):
        model.predict_one(np.zeros(5))
    with pytest.raises(ValueError, match=r'x must have shape \(M, 6\)'):
        model.predict(np.zeros(6))


# -- Same inputs as the LSTM -------------------------------------------------------------------

def _trajectory(seed: int, n: int = 150) -> Trajectory:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE_HZ
    q = np.stack([np.sin(2.0 * t + seed), np.cos(1.5 * t)], axis=1)
    qd = np.stack([2.0 * np.cos(2.0 * t + seed), -1.5 * np.sin(1.5 * t)], axis=1)
    tau = 3.0 * q + 0.5 * qd + 0.05 * rng.normal(size=q.shape)
    return Trajectory(q=q, qd=qd, tau=tau, joint_names=JOINTS, t=t,
                      source=f'run{seed}')


def test_train_gp_uses_the_lstm_inputs() -> None:
    trajs = [_trajectory(0), _trajectory(1)]
    model, info = train_gp(trajs, _config(training_iters=10))
    prepared = prepare(trajs, JOINTS)
    x = np.concatenate([p.x for p in prepared])
    y = np.concatenate([p.y for p in prepared])
    state = model.state_arrays()
    np.testing.assert_array_equal(state['train_x'], x)
    np.testing.assert_array_equal(state['train_y'], y)
    assert info['n'] == 300 and info['data_sources'] == ['run0', 'run1']
    assert 0.0 < info['fit_time_s'] <= info['wall_s']
    assert info['accel_config']['jerk_psd'] > 0
    mean, _ = model.predict(x[::3])
    assert np.sqrt(np.mean((mean - y[::3]) ** 2)) < 0.1


# -- Checkpoints -------------------------------------------------------------------------------

@pytest.mark.parametrize('which', ['exact', 'sparse'])
def test_checkpoint_round_trip(which: str, exact, sparse, tmp_path: Path) -> None:
    model, info = exact if which == 'exact' else sparse
    path = save_checkpoint(tmp_path / 'gp.npz', model, {'fit_time_s': info['fit_time_s'],
                                                        'model_version': 3})
    loaded, meta = load_checkpoint(path, expect_kind='gp', joint_names=JOINTS, rate_hz=RATE_HZ)
    assert isinstance(loaded, GpInverseDynamics) and not loaded.training
    assert loaded.config == model.config
    assert meta['kind'] == 'gp' and meta['config']['kind'] == which
    assert meta['dtype'] == 'float64' and meta['model_version'] == 3
    assert meta['fit_time_s'] == info['fit_time_s']
    assert loaded.num_train == model.num_train
    assert loaded.hyperparameters() == model.hyperparameters()
    x = np.concatenate([_data(50, seed=11)[0], _data(5, seed=12, spread=6.0)[0]])
    mean, std = model.predict(x)
    mean2, std2 = loaded.predict(x)
    np.testing.assert_allclose(mean2, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std2, std, rtol=1e-9)
    for xi in x[::10]:
        for a, b in zip(loaded.predict_one(xi), model.predict_one(xi)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_checkpoint_layout(exact) -> None:
    model, _ = exact
    data = checkpoint_to_bytes(model, {})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
    assert {'header.npy', 'weight.train_x.npy', 'weight.train_y.npy',
            'weight.likelihood.noise_covar.raw_noise.npy'} <= names
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        header = json.loads(npz['header'].tobytes())
        assert npz['weight.train_x'].shape == (300, 6)
        assert npz['weight.train_x'].dtype == np.float64
    assert header['kind'] == 'gp' and header['dtype'] == 'float64'
    assert header['config'] == model.config.settings()
    assert header['normalisation'] == model.normalizer.to_dict()


def _lstm() -> LstmInverseDynamics:
    torch.manual_seed(0)
    cfg = LstmConfig(JOINTS, RATE_HZ, hidden_size=4)
    return LstmInverseDynamics(cfg, Normalizer.identity(6, 2)).eval()


def test_checkpoint_kind_mismatch_refused(exact, tmp_path: Path) -> None:
    model, _ = exact
    gp_path = save_checkpoint(tmp_path / 'gp.npz', model, {})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(gp_path)   # expect_kind defaults to 'lstm'
    msg = str(err.value)
    assert "holds a 'gp' model, but a 'lstm' model was asked for" in msg
    assert 'Gaussian-process' in msg and "expect_kind='gp'" in msg and str(gp_path) in msg
    lstm_path = save_checkpoint(tmp_path / 'lstm.npz', _lstm(), {})
    with pytest.raises(CheckpointError, match="holds a 'lstm' model, but a 'gp' model"):
        load_checkpoint(lstm_path, expect_kind='gp')
    loaded, meta = load_checkpoint(gp_path, expect_kind=None)
    assert isinstance(loaded, GpInverseDynamics) and meta['kind'] == 'gp'


def _gp_tamper(model: GpInverseDynamics, edit) -> bytes:
    with zipfile.ZipFile(io.BytesIO(checkpoint_to_bytes(model, {}))) as zf:
        arrays = {n[:-4]: np.lib.format.read_array(io.BytesIO(zf.read(n)))
                  for n in zf.namelist()}
    header = json.loads(arrays.pop('header').tobytes().decode('utf-8'))
    edit(header, arrays)
    header['weights'] = {k[len('weight.'):]: list(v.shape) for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def test_checkpoint_refuses_damaged_gp(exact, sparse) -> None:
    model, _ = exact
    cases = [
        (lambda h, a: h['config'].pop('num_inducing'), 'config keys'),
        (lambda h, a: h['config'].update(kind='dense'), 'invalid model configuration'),
        (lambda h, a: h.update(dtype='float32'), "a 'gp' checkpoint is always float64"),
        (lambda h, a: a.update({'weight.train_x': a['weight.train_x'][:, :5]}),
         'train_x must have shape (n, 6)'),
        (lambda h, a: a.update({'weight.train_y': a['weight.train_y'][:-1]}),
         'train_x has 300 rows, train_y 299'),
        (lambda h, a: a.pop('weight.gp.mean_module.raw_constant'),
         "missing ['gp.mean_module.raw_constant']"),
        (lambda h, a: a['weight.likelihood.noise_covar.raw_noise'].__setitem__(0, np.inf),
         'weight likelihood.noise_covar.raw_noise has NaN/inf'),
        (lambda h, a: a.update({'weight.train_y': a['weight.train_y'].astype(np.float32)}),
         'weight train_y is float32'),
    ]
    for edit, fragment in cases:
        with pytest.raises(CheckpointError) as err:
            checkpoint_from_bytes(_gp_tamper(model, edit), expect_kind='gp', source='src')
        assert fragment in str(err.value), str(err.value)
    sparse_model, _ = sparse

    def shrink(h: dict, a: dict) -> None:
        h['config']['num_inducing'] = 32
    with pytest.raises(CheckpointError, match='32 inducing points needs'):
        checkpoint_from_bytes(_gp_tamper(sparse_model, shrink), expect_kind='gp')


def test_unfitted_gp_not_saved() -> None:
    with pytest.raises(ValueError, match='unfitted GP'):
        checkpoint_to_bytes(GpInverseDynamics(_config()), {})


def test_a_gp_does_not_learn_online(exact, tmp_path: Path) -> None:
    from invdyn_ros.core.evaluate import evaluate_model
    from invdyn_ros.core.params import TrainerParams
    model, _ = exact
    gp_path = save_checkpoint(tmp_path / 'gp.npz', model, {})
    with pytest.raises(ValueError, match='GP checkpoint: only an LSTM learns online'):
        evaluate_model(gp_path, [tmp_path / 'none'], online=TrainerParams())
