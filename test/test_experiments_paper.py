"""`invdyn experiment paper` and `invdyn tune` (invdyn_ros.experiments.paper, lwr_sizes, baxter,
tune, hparams, common).

The report's structure is checked on one run of `invdyn experiment paper --quick` with the
test-only tiny sizes (paper.TINY_SIZES patched in for QUICK_SIZES; seconds, not minutes) on a
small Baxter-layout set written here, so it runs without the shared data; the checks on the
real Baxter set skip when it is absent.
"""

from dataclasses import replace
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data
from invdyn_ros import cli
from invdyn_ros.core.datasets import BAXTER_JOINTS
from invdyn_ros.core.training import Prepared
from invdyn_ros.core.trajectory import Trajectory
from invdyn_ros.experiments import baxter as bx
from invdyn_ros.experiments import lwr_sizes as lwr
from invdyn_ros.experiments import paper, tune
from invdyn_ros.experiments.common import naive_predictions, score, SCORE_FROM
from invdyn_ros.experiments.hparams import (
    check_dataset_target, HparamError, LstmHparams, load_hparams, save_hparams)

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
#: Small and fast, still a real LSTM: what the structure test trains.
TINY_HP = LstmHparams(num_layers=1, hidden_size=8, epochs=2, batch=4, window=16, segment=64)
#: The LWR section of the quick run learns the residual over the nominal model (the GP is also
#: fitted to that residual from TINY_SAME_FROM samples on).
TINY_LWR_HP = replace(TINY_HP, target='residual_rbd')
TINY_SAME_FROM = 150


def write_baxter_like(root: Path, runs: dict[str, int], n: int = 300, seed: int = 0) -> Path:
    """A folder in the Baxter set's layout (Training/, Test/ of space-separated CSV with its
    header, 100 Hz) holding smooth joint motions and torques from a toy model."""
    rng = np.random.default_rng(seed)
    header = ' '.join([f'ang_{j}' for j in BAXTER_JOINTS] + [f'vel_{j}' for j in BAXTER_JOINTS]
                      + [f'torq_{j}' for j in BAXTER_JOINTS])
    t = np.arange(n) / 100.0
    for sub, count in runs.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            w = rng.uniform(0.5, 2.0, 7)
            ph = rng.uniform(0, 2 * np.pi, 7)
            q = 0.5 * np.sin(np.outer(t, w) + ph)
            qd = 0.5 * w * np.cos(np.outer(t, w) + ph)
            tau = 3.0 * np.sin(q) + 0.5 * qd + rng.normal(0, 0.02, q.shape)
            np.savetxt(root / sub / f'run{i}.csv', np.hstack([q, qd, tau]), header=header,
                       comments='')
    return root


@pytest.fixture(scope='module')
def hp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('hp') / 'hp.yaml'
    # Both learn the residual: the LWR's over its URDF, Baxter's over a model identified on
    # the (toy) training runs.
    for name, hp in (('lwr', TINY_LWR_HP), ('baxter', TINY_LWR_HP)):
        save_hparams(path, name, hp, {'method': 'test fixture, not a search'})
    return path


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory, hp_file):
    """`invdyn experiment paper --quick` with the tiny sizes and the toy Baxter-layout set."""
    tmp = tmp_path_factory.mktemp('paper')
    root = write_baxter_like(tmp / 'baxter', {'Training': 2, 'Test': 2})
    out = tmp / 'out'
    mp = pytest.MonkeyPatch()
    mp.setattr(paper, 'QUICK_SIZES', replace(paper.TINY_SIZES, lwr=replace(
        paper.TINY_SIZES.lwr, gp_same_target_from=TINY_SAME_FROM)))
    try:
        rc = cli.main(['experiment', 'paper', '--quick', '--out', str(out), '--hparams',
                       str(hp_file), '--baxter-root', str(root)])
    finally:
        mp.undo()
    assert rc == 0
    return out, json.loads((out / 'results.json').read_text())


def test_quick_report_structure(quick_run):
    out, result = quick_run
    assert result['quick'] is True and result['mode'] == 'quick'
    assert 'QUICK' in result['note'] and result['wall_s'] > 0
    for f in result['files']:
        assert (out / f).is_file(), f
        if f.endswith('.png'):
            assert (out / f).read_bytes()[:8] == PNG_MAGIC and (out / f).stat().st_size > 5000
    assert {'table1.png', 'fig5_permutation.png', 'fig6_sizes.png', 'fig8_reaching.png',
            'baxter_nmse.png', 'baxter_test_run.png'} <= set(result['files'])
    text = (out / 'report.md').read_text()
    for heading in ('## Goals', '## LSTM hyperparameters', 'Table I', 'Fig. 5',
                    '## Fig. 6 and Table II', '### Fig. 8', '## Real robot: Baxter',
                    '### Training speed', 'Search space'):
        assert heading in text, heading
    assert 'QUICK' in text and f'{result["wall_s"]:.0f} s' in text
    assert 'test fixture, not a search' in text          # the search record is reported
    # Every goal of the issue is listed with its measured figure or a stated reason.
    parts = {g['part'] for g in result['goals']}
    assert parts == {'synthetic', 'lwr', 'baxter'}
    for g in result['goals']:
        assert g['met'] is None or np.isfinite(g['measured'])


def test_lwr_part_measures_every_model_at_every_size(quick_run):
    out, result = quick_run
    part = result['lwr']
    sizes = paper.TINY_SIZES.lwr
    assert [r['n'] for r in part['sizes']] == list(sizes.sizes)
    for r in part['sizes']:
        for m in ('naive', 'gp', 'lstm'):
            assert np.isfinite(r[m]['mse']) and r[m]['mse'] > 0
            assert len(r[m]['nmse_per_joint']) == len(lwr.JOINTS)
            assert r[m]['samples'] == part['settings']['test_samples']
        assert r['gp']['kind'] == ('exact' if r['n'] <= sizes.exact_max else 'sparse')
        assert r['lstm']['train_samples'] == r['n']
        assert r['lstm']['target'] == 'residual_rbd'
        # The like-for-like GP: the same residual, the same samples scored, from its size on.
        assert ('gp_same_target' in r) == (r['n'] >= TINY_SAME_FROM)
        if 'gp_same_target' in r:
            g = r['gp_same_target']
            assert g['samples'] == r['gp']['samples'] and np.isfinite(g['mse'])
            assert g['mse'] != r['gp']['mse'] and g['target'] == 'residual_rbd'
        most, patience = lwr.lstm_epochs(TINY_HP, r['n'], sizes.min_presentations,
                                         sizes.patience)
        assert (r['lstm']['max_epochs'], r['lstm']['patience']) == (most, patience)
        # The kept model is one of the epochs run, and no more epochs ran than allowed.
        assert r['lstm']['best_epoch'] >= 1
        assert r['lstm']['best_epoch'] <= r['lstm']['epochs']
        assert r['lstm']['epochs'] <= most
        # Learning during operation: both ways of adapting a residual model, every test
        # sample predicted (no refusals), the learner's updates run.
        assert set(r['lstm_online']) == {'network', 'payload'}
        for on in r['lstm_online'].values():
            assert on['samples'] == r['lstm']['samples'] and np.isfinite(on['mse'])
            assert on['no_output'] == 0 and on['updates'] > 0
        assert r['gp']['fit_s'] > 0 and r['lstm']['train_s'] > 0
    # The naive baseline does not depend on the training set.
    assert len({r['naive']['mse'] for r in part['sizes']}) == 1
    f8 = part['fig8']
    n = len(f8['t'])
    assert np.shape(f8['true']) == np.shape(f8['lstm']) == np.shape(f8['gp']) == (n, 5)
    assert np.all(np.array(f8['gp_std']) > 0)
    assert len(f8['motions']) == 2 and f8['motions'][1][1] <= n
    speed = part['speed']
    assert part['settings']['lstm']['target'] == 'residual_rbd'
    assert 'target residual_rbd' in part['settings']['lstm_description']
    report = (out / 'report.md').read_text()
    assert 'GP + nominal MSE' in report and 'LSTM / (GP + nominal)' in report
    assert speed['paper_sized']['architecture'].startswith('1 x 64')
    assert [t['epochs'] for t in speed['timed']] == [TINY_HP.epochs] * len(speed['timed'])
    for t in speed['timed']:   # each size timed SPEED_REPEATS times, the median counts
        assert len(t['train_s_runs']) == lwr.SPEED_REPEATS == speed['paper_sized']['repeats']
        assert t['train_s'] == pytest.approx(float(np.median(t['train_s_runs'])))
    assert f'each size the median of {lwr.SPEED_REPEATS} trainings [min..max]' in report
    assert speed['paper_sized']['extrapolated'] is True
    assert len(part['analysis']['friction_var_share']) == 5
    floor = part['analysis']['accel_floor']
    assert len(floor['mse_per_joint']) == 5 and 0.0 < floor['mse'] < np.inf
    assert floor['mse'] == pytest.approx(np.mean(floor['mse_per_joint']))


def test_baxter_part(quick_run):
    _, result = quick_run
    part = result['baxter']
    assert part['settings']['train_runs'] == ['run0.csv', 'run1.csv']
    assert len(part['settings']['test_runs']) == 2
    assert part['accel_check']['recorded_qdd'] is False
    sc = part['scores']
    for m in ('naive', 'gp', 'lstm'):
        assert len(sc[m]['nmse_per_joint']) == 7 and np.isfinite(sc[m]['nmse'])
    assert part['goal']['measured'] == sc['lstm']['nmse']
    assert part['goal']['met'] == (sc['lstm']['nmse'] <= bx.GOAL_NMSE)
    # The nominal model was identified on the two training runs only, and is scored alone.
    assert sc['nominal']['fit']['samples'] == 600 and sc['nominal']['fit']['trajectories'] == 2
    assert len(sc['nominal']['nmse_per_joint']) == 7 and np.isfinite(sc['nominal']['nmse'])
    assert part['settings']['lstm']['target'] == 'residual_rbd'
    # The same model learning online during the test runs: every sample got a torque, the
    # learner ran, and the goal still scores the offline model.
    on = sc['lstm_online']
    assert len(on['runs']) == 1 and on['runs'][0]['no_output'] == 0
    assert on['runs'][0]['updates'] > 0 and np.isfinite(on['nmse'])
    assert len(on['nmse_per_joint']) == 7
    assert all(len(r['online_nmse_per_joint']) == 7 for r in part['per_test_run'])


def test_baxter_report_shows_the_identified_model(quick_run):
    out, _ = quick_run
    text = (out / 'report.md').read_text()
    assert 'identified rigid-body model alone' in text
    assert 'LSTM (identified model + residual)' in text and 'Test runs are not used' in text
    assert 'the same LSTM learning online during each test run' in text
    assert 'predicted by the model in operation before its measured torque' in text
    assert '- [i] Beside the goals: the Baxter LSTM learning online' in text
    assert '### Learning during operation (beside the goals)' in text


def test_missing_baxter_data_is_reported_not_fatal(tmp_path, hp_file, monkeypatch):
    monkeypatch.setattr(paper, 'QUICK_SIZES', replace(
        paper.TINY_SIZES, lwr=replace(paper.TINY_SIZES.lwr, sizes=(60,)),
        synthetic=replace(paper.TINY_SIZES.synthetic, runs=1)))
    assert cli.main(['experiment', 'paper', '--quick', '--out', str(tmp_path / 'o'),
                     '--hparams', str(hp_file), '--baxter-root', str(tmp_path / 'none')]) == 0
    result = json.loads((tmp_path / 'o' / 'results.json').read_text())
    assert 'not found' in result['baxter']['skipped']
    assert 'Skipped' in (tmp_path / 'o' / 'report.md').read_text()


def test_bad_hparams_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('lwr: {lstm: {hidden_size: -3}}\nbaxter: {lstm: {}}\n')
    out = tmp_path / 'o'
    assert cli.main(['experiment', 'paper', '--quick', '--out', str(out),
                     '--hparams', str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'hidden_size' in err[0]
    assert not out.exists()                      # failed before writing anything
    assert cli.main(['experiment', 'paper', '--out', str(out), '--hparams',
                     str(tmp_path / 'missing.yaml')]) == 2


# --- hyperparameter file ----------------------------------------------------------------------

def test_hparams_round_trip_and_sections_kept(tmp_path):
    path = tmp_path / 'hp.yaml'
    a = replace(TINY_HP, lr=0.02, optimizer='adam', weight_decay=1e-3)
    save_hparams(path, 'lwr', a, {'method': 'x'})
    save_hparams(path, 'baxter', TINY_HP, {'method': 'y'})
    save_hparams(path, 'lwr', replace(a, epochs=7), {'method': 'z'})   # baxter kept
    hp, search = load_hparams(path)
    assert hp['lwr'] == replace(a, epochs=7) and hp['baxter'] == TINY_HP
    assert search == {'lwr': {'method': 'z'}, 'baxter': {'method': 'y'}}
    assert path.read_text().startswith('# LSTM hyperparameters')
    tc = hp['lwr'].train_config(seed=3, threads=1)
    assert (tc.optimizer, tc.lr, tc.weight_decay, tc.val_fraction, tc.patience) == (
        'adam', 0.02, 1e-3, 0.0, 0)


@pytest.mark.parametrize('text,fragment', [
    ('lwr: [1]\nbaxter: {}\n', 'no lstm entry'),
    ('baxter: {lstm: {}}\n', "no section 'lwr'"),
    ('lwr: {lstm: {colour: 1}}\nbaxter: {lstm: {}}\n', 'unknown hyperparameters'),
    ('lwr: {lstm: {epochs: two}}\nbaxter: {lstm: {}}\n', 'epochs'),
    ('lwr: {lstm: {optimizer: sgd}}\nbaxter: {lstm: {}}\n', 'optimizer'),
    ('lwr: {lstm: {window: 64, segment: 512, burn_in: 600}}\nbaxter: {lstm: {}}\n', 'burn_in'),
    ('lwr: {lstm: {lr: .nan}}\nbaxter: {lstm: {}}\n', 'finite'),
    (':\n  - ][', 'not valid YAML'),
    ('lwr: {lstm: {target: torque}}\nbaxter: {lstm: {}}\n', 'target must be one of'),
])
def test_hparams_file_errors(tmp_path, text, fragment):
    path = tmp_path / 'hp.yaml'
    path.write_text(text)
    with pytest.raises(HparamError, match=fragment):
        load_hparams(path)


def test_repository_hparams_file_is_valid():
    hp, search = load_hparams()        # config/paper_hparams.yaml, written by `invdyn tune`
    for name in ('lwr', 'baxter'):
        assert search[name].get('method', '').startswith('random search'), search[name]
        assert 'validation' in search[name] and 'Test' not in search[name].get('results', '')


# --- tuning ----------------------------------------------------------------------------------

TINY_TUNE = replace(tune.QUICK_TUNE, trials=2, max_epochs=2, patience=1, folds=2,
                    lwr_train_samples=600, lwr_val_seconds=1.0)


def test_tune_lwr_writes_the_best_trial(tmp_path):
    path = tmp_path / 'hp.yaml'
    result = tune.run_tune('lwr', tmp_path / 'out', TINY_TUNE, hparams_path=path,
                           verbose=False)
    scores = [t['score'] for t in result['trials']]
    assert len(scores) == 2 and all(np.isfinite(scores))
    assert result['best']['trial'] == int(np.argmin(scores))
    saved = json.loads((tmp_path / 'out' / 'tune_lwr.json').read_text())
    assert saved['best'] == result['best']
    assert (tmp_path / 'out' / 'tune_lwr.md').read_text().count('(chosen)') == 1
    import yaml
    doc = yaml.safe_load(path.read_text())
    best = result['trials'][result['best']['trial']]
    assert doc['lwr']['lstm'] == {**best['hparams'], 'epochs': best['epochs']}
    assert doc['lwr']['search']['trials_scores'] == scores
    assert 'validation' in doc['lwr']['search']


def test_tune_seeds_never_touch_the_experiment_runs():
    tune_seeds = set(range(tune.LWR_TUNE_SEED, tune.LWR_TUNE_SEED + 3)) | set(
        range(tune.LWR_TUNE_VAL_SEED, tune.LWR_TUNE_VAL_SEED + 3))
    used = set(range(lwr.TRAIN_SEED, lwr.TRAIN_SEED + 3)) | set(
        range(lwr.TEST_SEED, lwr.TEST_SEED + 3)) | {lwr.FIG8_SEED}
    assert not tune_seeds & used


def test_tune_baxter_reads_only_training_runs(tmp_path, monkeypatch):
    root = write_baxter_like(tmp_path / 'baxter', {'Training': 4, 'Test': 2}, n=200)
    import invdyn_ros.core.datasets as ds
    seen = []
    real = ds.load_trajectories

    def recording(paths, *a, **kw):
        seen.extend(map(str, paths))
        return real(paths, *a, **kw)
    monkeypatch.setattr(ds, 'load_trajectories', recording)
    result = tune.run_tune('baxter', tmp_path / 'out', TINY_TUNE,
                           hparams_path=tmp_path / 'hp.yaml', baxter_root=root, verbose=False)
    assert seen and all(Path(p).name == 'Training' for p in seen)
    assert '2-fold' in result['validation'] and len(result['trials'][0]['splits']) == 2


def test_folds_partition_the_runs():
    folds = tune.folds_of(12, 3, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(12))
    assert [len(f) for f in folds] == [4, 4, 4]
    with pytest.raises(ValueError):
        tune.folds_of(2, 3, seed=0)


def test_sampled_trials_are_valid():
    rng = np.random.default_rng(1)
    for _ in range(50):
        hp = tune.sample_trial(rng)
        lo, hi = tune.SPACE['lr'][hp.optimizer]
        assert lo <= hp.lr <= hi * 1.001 and hp.segment >= hp.window
        assert hp.target == 'full'
    # Both searches also draw what the network learns (the LWR's nominal model as it is,
    # Baxter's identified on the training runs of each fold).
    for dataset in ('lwr', 'baxter'):
        targets = {tune.sample_trial(rng, 'mse', tune.TARGETS[dataset]).target
                   for _ in range(40)}
        assert targets == {'full', 'residual_rbd'}
        assert tune.space_of(dataset)['target'] == ['full', 'residual_rbd']
    # A data set without a nominal model cannot learn a residual.
    with pytest.raises(HparamError, match='needs a nominal model'):
        check_dataset_target('sarcos', TINY_LWR_HP)


def test_residual_trial_is_scored_on_the_torque():
    """A residual trial learns the torque minus the nominal model (their sum is the torque
    exactly) and is scored on the torque: after one epoch it is already below the torque's
    variance, which the nominal model alone explains most of."""
    splits, _, joints, rate = tune._splits('lwr', TINY_TUNE, '')
    hp = replace(TINY_LWR_HP, epochs=1)
    r = tune.run_trial(hp, splits, joints, rate, TINY_TUNE, 'mse')
    assert np.isfinite(r['score'])
    from invdyn_ros.core.training import prepare
    val = splits[0][1]
    full = prepare(val, joints, hp.accel_config())
    res = prepare(val, joints, hp.accel_config(), target='residual_rbd',
                  nominal=hp.nominal_model(joints))
    for f, g in zip(full, res):
        np.testing.assert_allclose(g.y + g.base, f.y, atol=1e-9)
    var = np.mean([np.var(np.concatenate([f.y for f in full]), axis=0)])
    assert r['score'] < var


# --- shared pieces -----------------------------------------------------------------------------

def test_naive_and_scoring_skip_the_first_sample():
    y = np.arange(20, dtype=float).reshape(10, 2)
    d = Prepared(np.zeros((10, 6)), y, 'toy')
    (p,) = naive_predictions([d])
    assert np.array_equal(p[1:], y[:-1])
    s = score([p], [d])
    assert s['samples'] == 10 - SCORE_FROM
    assert s['mse'] == pytest.approx(4.0)         # every step changes by 2 in both joints


def test_training_subsets_are_nested_and_decimation_keeps_rates():
    runs = [Trajectory(q=np.zeros((50, 2)), qd=np.zeros((50, 2)), tau=np.full((50, 2), k),
                       joint_names=('a', 'b'), t=np.arange(50) / 100.0, rate_hz=100.0)
            for k in range(3)]
    assert lwr.split_counts(100, 3) == [34, 33, 33]
    small, big = lwr.training_subset(runs, 30), lwr.training_subset(runs, 100)
    assert [len(t) for t in small] == [10, 10, 10] and sum(len(t) for t in big) == 100
    for s, b in zip(small, big):
        assert np.array_equal(s.tau, b.tau[:len(s)])
    with pytest.raises(ValueError):
        lwr.training_subset(runs, 200)
    d = lwr.decimate(Trajectory(q=np.arange(40.0)[:, None], qd=np.zeros((40, 1)),
                                tau=np.zeros((40, 1)), joint_names=('a',),
                                t=np.arange(40) / 1000.0, rate_hz=1000.0,
                                meta={'q_des': np.arange(40.0)[:, None]}))
    assert d.rate_hz == 100.0 and np.array_equal(d.q[:, 0], [0, 10, 20, 30])
    assert np.array_equal(d.meta['q_des'][:, 0], [0, 10, 20, 30])


def test_motion_windows():
    v = np.zeros((20, 2))
    v[3:7, 0] = 1.0
    v[10:15, 1] = -1.0
    assert lwr.motion_windows(v, 100.0) == [(3, 7), (10, 15)]
    assert lwr.motion_windows(np.ones((4, 1)), 100.0) == [(0, 4)]


def test_lwr_goals_and_epochs():
    def row(n, gp, lstm):
        return {'n': n, 'gp': {'mse': gp}, 'lstm': {'mse': lstm}}
    g = lwr.goals([row(1000, 2.0, 1.0), row(10000, 2.0, 1.01), row(30000, 2.0, 0.9)])
    assert [x['met'] for x in g] == [True, False, True]
    assert lwr.goals([row(100, 1.0, 2.0)])[-1]['met'] is None
    assert lwr.lstm_epochs(TINY_HP, 100, 1000, 10) == (10, 10)
    assert lwr.lstm_epochs(TINY_HP, 100, 10000, 10) == (100, 20)
    assert lwr.lstm_epochs(TINY_HP, 10 ** 6, 1000, 3) == (lwr.EPOCH_CAP_FACTOR * TINY_HP.epochs, 3)


def test_real_baxter_split():
    root = shared_data('baxter_valencia2023/Dataset')
    train, test = bx.load_split(root, bx.QUICK_SIZES)
    assert len(train) == 12 and len(test) == 4
    assert not {t.source for t in train} & {t.source for t in test}
    assert all(t.joint_names == BAXTER_JOINTS and t.rate_hz == 100.0 for t in train + test)
