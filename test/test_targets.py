"""Learning targets end to end: training learns the residual, the checkpoint keeps the target
and its nominal model, eval scores the published torque, the predictor publishes model +
residual (residual_rbd) or the residual alone (residual_gravity), the online learner learns the
same target."""

import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from invdyn_ros.core.accel import AccelConfig, estimate_accelerations
from invdyn_ros.core.checkpoint import (checkpoint_from_bytes, checkpoint_to_bytes,
                                        CheckpointError, load_checkpoint, load_lstm_weights,
                                        save_checkpoint)
from invdyn_ros.core.evaluate import evaluate_model, predict_trajectories
from invdyn_ros.core.lstm import LstmConfig
from invdyn_ros.core.lwr_sim import simulate
from invdyn_ros.core.nominal import lwr4plus_spec, NominalModel
from invdyn_ros.core.online import OnlinePredictor
from invdyn_ros.core.online_learning import OnlineConfig, OnlineLearner
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J
from invdyn_ros.core.targets import NominalSpec, spec_from_meta
from invdyn_ros.core.training import prepare, TrainConfig, train_lstm, training_meta

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp('targets')
    train = [simulate(1.0, payload_ml=ml, seed=s) for s, ml in ((1, 200.0), (2, 400.0))]
    test = simulate(0.6, payload_ml=300.0, seed=9)
    spec = lwr4plus_spec(J)
    nominal = NominalModel(spec)
    accel = AccelConfig()
    tcfg = TrainConfig(epochs=1, batch=4, window=50, segment=500, threads=1, val_fraction=0.0)
    paths = {}
    for target in ('full', 'residual_rbd', 'residual_gravity'):
        res = train_lstm(train, LstmConfig(joint_names=J, rate_hz=1000.0, hidden_size=8),
                         tcfg, accel, target=target,
                         nominal=nominal if target != 'full' else None)
        paths[target] = save_checkpoint(
            d / f'{target}.npz', res.model,
            training_meta(res, tcfg, accel, ['sim'], target,
                          spec if target != 'full' else None))
    np.savez(d / 'test.npz', q=test.q, qd=test.qd, tau=test.tau, t=test.t,
             joint_names=np.array(test.joint_names))
    return dict(d=d, paths=paths, spec=spec, nominal=nominal, test=test, accel=accel,
                train=train)


def test_prepare_learns_torque_minus_the_nominal_term(trained):
    tr, nm = trained['train'][0], trained['nominal']
    full = prepare([tr], J)[0]
    res = prepare([tr], J, target='residual_rbd', nominal=nm)[0]
    grav = prepare([tr], J, target='residual_gravity', nominal=nm)[0]
    sel = tr.select(J)
    qdd, _ = estimate_accelerations(sel, AccelConfig())
    k = 123
    np.testing.assert_allclose(res.base[k], nm.rnea(sel.q[k], sel.qd[k], qdd[k]), atol=1e-9)
    np.testing.assert_allclose(res.y + res.base, full.y, atol=1e-9)
    np.testing.assert_allclose(grav.base[k], nm.gravity(sel.q[k]), atol=1e-9)
    np.testing.assert_array_equal(res.x, full.x)
    # the nominal model explains most of the torque: the residual is much smaller
    assert np.var(res.y) < 0.5 * np.var(full.y)
    with pytest.raises(ValueError, match='needs a nominal model'):
        prepare([tr], J, target='residual_rbd')


def test_checkpoint_keeps_target_and_nominal(trained):
    for target in ('residual_rbd', 'residual_gravity'):
        model, meta = load_checkpoint(trained['paths'][target])
        assert meta['target'] == target
        assert spec_from_meta(meta) == trained['spec']
        w, meta2 = load_lstm_weights(trained['paths'][target])
        assert meta2['nominal'] == meta['nominal']
        # the header carries the spec at its top level, not among training metadata
        raw = np.load(trained['paths'][target])['header'].tobytes().decode()
        header = json.loads(raw)
        assert header['target'] == target and 'nominal' in header
        assert 'nominal' not in header['training']
    _, meta = load_checkpoint(trained['paths']['full'])
    assert meta['target'] == 'full' and 'nominal' not in meta


def test_checkpoint_refuses_inconsistent_targets(trained):
    model, _ = load_checkpoint(trained['paths']['residual_rbd'])
    spec = trained['spec'].to_dict()
    with pytest.raises(ValueError, match='needs a nominal model'):
        checkpoint_to_bytes(model, {'target': 'residual_rbd'})
    with pytest.raises(ValueError, match='carries no nominal model'):
        checkpoint_to_bytes(model, {'target': 'full', 'nominal': spec})
    with pytest.raises(ValueError, match='target must be one of'):
        checkpoint_to_bytes(model, {'target': 'torque'})
    # A URDF edited after training (its text no longer matches the stored hash) is refused.
    edited = dict(spec, urdf_text=spec['urdf_text'] + ' ')
    with pytest.raises(ValueError, match='SHA-256'):
        checkpoint_to_bytes(model, {'target': 'residual_rbd', 'nominal': edited})
    other = NominalSpec.from_dict(spec)
    wrong_joints = dict(other.to_dict(), joint_names=list(J[::-1]),
                        urdf_joints=list(J[::-1]))
    with pytest.raises(CheckpointError, match='differ from the model joints'):
        checkpoint_from_bytes(checkpoint_to_bytes(model, {'target': 'residual_rbd',
                                                          'nominal': wrong_joints}))


def test_online_output_is_nominal_plus_residual(trained):
    tr = trained['test'].select(J)
    nm = trained['nominal']
    w, meta = load_lstm_weights(trained['paths']['residual_rbd'])
    accel = AccelConfig.from_dict(meta['accel_config'])
    with_nominal = OnlinePredictor(w, accel, target='residual_rbd', nominal=nm)
    residual_only = OnlinePredictor(w, accel, target='residual_gravity')
    qdd, _ = estimate_accelerations(tr, accel)
    t = tr.times()
    for k in range(60):
        a = with_nominal.update(t[k], tr.q[k], tr.qd[k]).tau
        b = residual_only.update(t[k], tr.q[k], tr.qd[k]).tau
        np.testing.assert_allclose(a, b + nm.rnea(tr.q[k], tr.qd[k], qdd[k]), atol=1e-8)
    with pytest.raises(ValueError, match='needs its nominal model'):
        OnlinePredictor(w, accel, target='residual_rbd')
    # clamped and finite: the clamp applies to the published torque (model + residual)
    lim = OnlinePredictor(w, accel, torque_limits=[1.0] * 5, target='residual_rbd',
                          nominal=nm)
    out = lim.update(t[0], tr.q[0], tr.qd[0])
    assert out.clamped and np.all(np.abs(out.tau) <= 1.0)


def test_eval_scores_the_published_torque(trained):
    test, nm = trained['test'], trained['nominal']
    data = [str(trained['d'] / 'test.npz')]
    tau = test.select(J).tau
    g = nm.terms('residual_gravity', test.select(J).q, test.select(J).qd,
                 np.zeros_like(test.select(J).q))
    for target, reference in (('full', tau), ('residual_rbd', tau),
                              ('residual_gravity', tau - g)):
        rep = evaluate_model(trained['paths'][target], data)
        model, meta = load_checkpoint(trained['paths'][target])
        pred = predict_trajectories(model, AccelConfig.from_dict(meta['accel_config']),
                                    [test], target, nm if target != 'full' else None)[0]
        assert rep['target'] == target
        assert rep['mse'] == pytest.approx(float(np.mean((pred - reference) ** 2)), rel=1e-9)
        if target == 'full':
            assert 'nominal_mse' not in rep
        else:
            assert rep['nominal_mse'] > 0
    rep = evaluate_model(trained['paths']['residual_gravity'], data)
    assert 'minus nominal gravity' in rep['scored_against']


def test_online_learner_learns_the_same_target(trained):
    tr = trained['test'].select(J)
    nm = trained['nominal']
    model, _ = load_checkpoint(trained['paths']['residual_rbd'])
    cfg = OnlineConfig(batch_size=32, context=16, holdout_every=1000)
    learner = OnlineLearner(model, trained['accel'], cfg, target='residual_rbd', nominal=nm)
    plain = OnlineLearner(model, trained['accel'], cfg)
    t = tr.times()
    for k in range(48):
        learner.add_sample(t[k], tr.q[k], tr.qd[k], tr.tau[k])
        plain.add_sample(t[k], tr.q[k], tr.qd[k], tr.tau[k])
    w_res, w_full = learner._pending[0], plain._pending[0]
    d = len(J)
    base = nm.terms('residual_rbd', w_full.x[:, :d], w_full.x[:, d:2 * d], w_full.x[:, 2 * d:])
    np.testing.assert_allclose(w_res.y, w_full.y - base, atol=1e-9)
    assert learner.train_pending() == 1
    with pytest.raises(ValueError, match='needs its nominal model'):
        OnlineLearner(model, trained['accel'], cfg, target='residual_gravity')


def test_cli_trains_and_evaluates_a_residual_target(trained, tmp_path):
    out = tmp_path / 'm.npz'
    data = str(trained['d'] / 'test.npz')
    env = dict(os.environ)
    cmd = [sys.executable, '-m', 'invdyn_ros.cli']
    r = subprocess.run(cmd + ['train', '--data', data, '--joints', ','.join(J), '--epochs', '1',
                              '--hidden', '4', '--segment', '200', '--window', '50',
                              '--val-fraction', '0', '--threads', '1',
                              '--target', 'residual_gravity', '--urdf', 'lwr4plus',
                              '--out', str(out)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'target residual_gravity' in r.stdout
    r = subprocess.run(cmd + ['eval', '--model', str(out), '--data', data], capture_output=True,
                       text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'measured torque minus nominal gravity' in r.stdout and 'nominal alone' in r.stdout
    r = subprocess.run(cmd + ['train', '--data', data, '--target', 'residual_rbd', '--out',
                              str(tmp_path / 'x.npz')], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=300)
    assert r.returncode == 2 and 'needs --urdf' in r.stderr and 'Traceback' not in r.stderr
    r = subprocess.run(cmd + ['train', '--data', data, '--urdf', 'lwr4plus', '--out',
                              str(tmp_path / 'x.npz')], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=300)
    assert r.returncode == 2 and 'residual --target' in r.stderr
    torch.set_num_threads(1)


def test_cli_identifies_the_nominal_model_on_the_training_data(trained, tmp_path):
    """--identify fits the URDF model's parameters to the training data; the checkpoint
    carries them, eval and the predictor's nominal term use them."""
    out = tmp_path / 'id.npz'
    data = str(trained['d'] / 'test.npz')
    cmd = [sys.executable, '-m', 'invdyn_ros.cli']
    r = subprocess.run(cmd + ['train', '--data', data, '--joints', ','.join(J), '--epochs', '1',
                              '--hidden', '4', '--segment', '200', '--window', '50',
                              '--val-fraction', '0', '--threads', '1', '--target',
                              'residual_rbd', '--urdf', 'lwr4plus', '--identify', '--out',
                              str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'identified the nominal model on the training data' in r.stdout
    _, meta = load_checkpoint(out)
    spec = spec_from_meta(meta)
    assert spec.identified['fit']['samples'] == 600
    assert not spec.same_model(trained['spec'])
    r = subprocess.run(cmd + ['eval', '--model', str(out), '--data', data], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'nominal alone' in r.stdout
    r = subprocess.run(cmd + ['train', '--data', data, '--identify', '--out',
                              str(tmp_path / 'x.npz')], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert r.returncode == 2 and '--identify need a residual --target' in r.stderr
    # identified on all of --data, a validation split of it would flatter the scores
    r = subprocess.run(cmd + ['train', '--data', data, '--target', 'residual_rbd', '--urdf',
                              'lwr4plus', '--identify', '--val-fraction', '0.2', '--out',
                              str(tmp_path / 'x.npz')], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert r.returncode == 2 and 'give the validation runs as --val-data' in r.stderr


def test_online_output_adds_an_identified_nominal_model(trained):
    """The predictor's nominal term is the identified model's (friction, spring and offset
    included) when the checkpoint's spec carries identified parameters."""
    from invdyn_ros.core.identify import identify
    tr = trained['test'].select(J)
    accel = trained['accel']
    sel = [x.select(J) for x in trained['train']]
    spec = identify(trained['spec'], [(x.q, x.qd, estimate_accelerations(x, accel)[0], x.tau)
                                      for x in sel])
    ident = NominalModel(spec)
    w, meta = load_lstm_weights(trained['paths']['residual_rbd'])
    pred = OnlinePredictor(w, AccelConfig.from_dict(meta['accel_config']),
                           target='residual_rbd', nominal=ident)
    residual_only = OnlinePredictor(w, AccelConfig.from_dict(meta['accel_config']),
                                    target='residual_gravity')
    qdd, _ = estimate_accelerations(tr, AccelConfig.from_dict(meta['accel_config']))
    t = tr.times()
    for k in range(40):
        a = pred.update(t[k], tr.q[k], tr.qd[k]).tau
        b = residual_only.update(t[k], tr.q[k], tr.qd[k]).tau
        want = b + ident.rnea(tr.q[k], tr.qd[k], qdd[k])
        np.testing.assert_allclose(a, want, atol=1e-8)
        assert not np.allclose(want, b + trained['nominal'].rnea(tr.q[k], tr.qd[k], qdd[k]))


def test_eval_online_scores_the_model_learning_during_each_run(trained, tmp_path, capsys):
    """`invdyn eval --online`: the LSTM learning online (prequential) beside the frozen model,
    with the trainer node's settings from its parameter file; the frozen figures are those of
    a plain eval."""
    from invdyn_ros import cli
    model = str(trained['paths']['residual_rbd'])
    data = str(trained['d'] / 'test.npz')
    params = tmp_path / 'trainer.yaml'
    params.write_text('/**/trainer:\n  ros__parameters:\n    batch_size: 64\n    context: 32\n'
                      '    holdout_every: 3\n    publish_period_s: 0.1\n')
    plain = tmp_path / 'plain.json'
    assert cli.main(['eval', '--model', model, '--data', data, '--json', str(plain)]) == 0
    for adapt in ('network', 'payload'):
        out = tmp_path / f'{adapt}.json'
        assert cli.main(['eval', '--model', model, '--data', data, '--online',
                         '--trainer-params', str(params), '--adapt', adapt,
                         '--json', str(out)]) == 0
        text = capsys.readouterr().out
        assert f'learning online (adapt {adapt})' in text and 'frozen model' in text
        rep, ref = json.loads(out.read_text()), json.loads(plain.read_text())
        assert rep['online']['adapt'] == adapt and rep['online']['updates'] > 0
        assert rep['online']['published'] >= 1       # publications every 0.1 s of data
        assert rep['frozen_mse'] == pytest.approx(ref['mse'], rel=1e-12)
        assert np.isfinite(rep['mse']) and rep['mse'] != rep['frozen_mse']
        assert rep['scored_samples'] == ref['scored_samples']
        assert 'learning online' in rep['mode']


BAD_TRAINER_YAML = {
    'negative': ('batch_size: -3', 'parameter batch_size must be a positive number'),
    'float for int': ('batch_size: 64.5', 'parameter batch_size must be an integer'),
    'float context': ('context: 1.5', 'parameter context must be an integer'),
    'float replay': ('replay_batches: 1.5', 'parameter replay_batches must be an integer'),
    'float recent': ('holdout_recent: 1.5', 'parameter holdout_recent must be an integer'),
    'int topic': ('samples_topic: 5', 'parameter samples_topic must be a string'),
    'str for bool': ('head_rls: yes_please', 'parameter head_rls must be a bool'),
    'str nice': ('nice: abc', 'parameter nice must be an integer'),
    'joints': ('joint_names: 5', 'parameter joint_names must be a list of strs'),
    'unknown': ('colour: 3', "unknown parameters ['colour']"),
}


@pytest.mark.parametrize('args, message', [
    (['--adapt', 'payload'], 'apply only with --online'),
    (['--trainer-params', 'x.yaml'], 'apply only with --online'),
    (['--online', '--trainer-params', 'missing.yaml'], 'cannot read'),
] + [(['--online', '--trainer-params', f'{{{k}}}'], None) for k in BAD_TRAINER_YAML] + [
    (['--online', '--trainer-params', '{binary}'], 'not a text file'),
    (['--online', '--trainer-params', '{list}'], "no '/**/trainer: ros__parameters:'"),
])
def test_eval_online_refuses_bad_arguments(trained, tmp_path, capsys, args, message):
    from invdyn_ros import cli
    if args[-1].startswith('{'):
        key = args[-1][1:-1]
        bad = tmp_path / 'bad.yaml'
        if key == 'binary':
            bad.write_bytes(b'\xff\xfe\x00bad')
        elif key == 'list':
            bad.write_text('- 1\n- 2\n')
        else:
            line, message = BAD_TRAINER_YAML[key]
            bad.write_text(f'/**/trainer:\n  ros__parameters:\n    {line}\n')
        args = args[:-1] + [str(bad)]
    rc = cli.main(['eval', '--model', str(trained['paths']['residual_rbd']), '--data',
                   str(trained['d'] / 'test.npz')] + args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1


def test_eval_online_payload_needs_a_residual_rbd_model(trained, capsys):
    from invdyn_ros import cli
    rc = cli.main(['eval', '--model', str(trained['paths']['full']), '--data',
                   str(trained['d'] / 'test.npz'), '--online', '--adapt', 'payload'])
    err = capsys.readouterr().err
    assert rc == 2 and "adapt 'payload' needs a 'residual_rbd' model" in err


def test_trainer_yaml_reads_floats_as_ros_does(tmp_path):
    """ROS 2 reads 1e-3 as a double; plain YAML 1.1 (PyYAML) as a string."""
    from invdyn_ros.core.params import node_yaml_values, TrainerParams
    f = tmp_path / 'trainer.yaml'
    f.write_text('/**/trainer:\n  ros__parameters:\n    learning_rate: 1e-3\n'
                 '    rls_ridge: 2.5E+1\n    model_topic: /e3\n')
    p = TrainerParams.from_dict(node_yaml_values(str(f), 'trainer'))
    assert (p.learning_rate, p.rls_ridge, p.model_topic) == (1e-3, 25.0, '/e3')


def test_node_yaml_values_reads_the_shipped_trainer_file(tmp_path):
    from invdyn_ros.core.params import node_yaml_values, ParamError, TrainerParams
    values = node_yaml_values(str(REPO / 'config' / 'trainer.yaml'), 'trainer')
    assert TrainerParams.from_dict(values) == TrainerParams()
    other = tmp_path / 'p.yaml'
    other.write_text('/**/predictor:\n  ros__parameters: {}\n')
    with pytest.raises(ParamError, match="no '/\\*\\*/trainer: ros__parameters:' section"):
        node_yaml_values(str(other), 'trainer')
    other.write_text('a: [\n')
    with pytest.raises(ParamError, match='not a YAML file'):
        node_yaml_values(str(other), 'trainer')
