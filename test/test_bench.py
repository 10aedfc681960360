"""`invdyn bench`: the quick run of every mode completes and its JSON holds every figure.

Structure only: the figures are measured on a shared, noisy machine, so no test here looks at a
timing value, only that each one is there and is a finite number.
"""

import json
import math
import os
from pathlib import Path
import subprocess
import sys

import pytest

from invdyn_ros.bench import BenchError, e2e_stats, parse_sizes

REPO = Path(__file__).resolve().parents[1]
#: Guards against a hang only (the quick run takes about a minute); not a speed check.
HANG_TIMEOUT_S = 600
PERCENTILE_KEYS = ('p50_us', 'p90_us', 'p99_us', 'max_us')
LATENCY_PATHS = ('callback', 'callback_whole', 'callback_reader', 'compute', 'compute_numpy',
                 'compute_paced', 'compute_numpy_paced', 'naive_compute', 'step_numpy',
                 'step_torch')
E2E_RUNS = ('relay', 'relay_mt', 'predictor', 'predictor_trainer')
QUICK_TRAIN_SIZES = [1000, 5000]
QUICK_GP_SIZES = [500, 1000]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(obj, path='$'):
    """Every (path, value) of a JSON value that is a number or null."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f'{path}.{k}')
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f'{path}[{i}]')
    elif obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool)):
        yield path, obj


def _check_numbers(d: dict, keys, where: str) -> None:
    for k in keys:
        assert k in d, f'{where}: {k} missing'
        assert _is_number(d[k]), f'{where}.{k} = {d[k]!r} is not a finite number'


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'bench.json'
    env = os.environ.copy()
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH')) if p)
    # The test run's own DDS domain (conftest), so the bench cannot hear another run.
    env['INVDYN_BENCH_DOMAIN_ID'] = env['ROS_DOMAIN_ID']
    proc = subprocess.run(
        [sys.executable, '-m', 'invdyn_ros.cli', 'bench', 'all', '--quick', '--json', str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_every_number_is_finite(quick_run):
    _, d = quick_run
    bad = [(p, v) for p, v in _numbers(d) if not _is_number(v)]
    assert not bad, f'non-finite or missing figures: {bad[:10]}'


def test_output_says_quick_and_has_one_table_per_mode(quick_run):
    text, d = quick_run
    assert 'QUICK' in text
    for mode in ('latency', 'e2e', 'train', 'gp'):
        assert f'== {mode}:' in text
    assert d['quick'] is True
    assert d['modes'] == ['latency', 'e2e', 'train', 'gp']
    assert d['schema'] == 1


def test_latency_figures(quick_run):
    lat = quick_run[1]['latency']
    assert lat['messages'] > 0 and lat['repeats'] > 0
    for path in LATENCY_PATHS:
        for key in PERCENTILE_KEYS:
            _check_numbers(lat['paths'][path][key], ('median', 'min', 'max'),
                           f'latency.{path}.{key}')
    _check_numbers(lat, ('ratio_naive_over_ours_compute_p50', 'ratio_naive_over_ours_step_p50'),
                   'latency')
    assert lat['model']['hidden_size'] > 0


def test_e2e_figures(quick_run):
    e2e = quick_run[1]['e2e']
    for name in E2E_RUNS:
        r = e2e['runs'][name]
        for k in ('sent', 'received', 'lost'):
            assert isinstance(r[k], int) and not isinstance(r[k], bool), f'{name}.{k}'
        assert r['sent'] > 0
        assert r['lost'] == r['sent'] - r['received']
        _check_numbers(r, PERCENTILE_KEYS + ('late_p50_us', 'late_p99_us', 'late_max_us'),
                       f'e2e.{name}')
        # CPU per message of the node under test and of the publisher, both > 0.
        node = name if name.startswith('relay') else 'predictor'
        cpu = r['cpu_us_per_message']
        assert cpu[node] > 0 and cpu['publisher'] > 0, (name, cpu)
    assert 'trainer' in e2e['runs']['predictor_trainer']['cpu_us_per_message']
    rss = e2e['predictor_rss_mb']
    _check_numbers(rss, ('start', 'end', 'growth', 'max'), 'rss')
    for part in ('trainer_off', 'trainer_on', 'trainer_on_second_half'):
        _check_numbers(rss[part], ('start', 'end', 'growth', 'max'), f'rss.{part}')
    _check_numbers(e2e, ('rate_hz', 'seconds', 'warmup_s', 'realtime_priority'), 'e2e')
    assert isinstance(e2e['runs']['predictor_trainer']['trainer'], dict)


def test_train_and_gp_figures(quick_run):
    d = quick_run[1]
    tr = d['train']
    assert [f['n'] for f in tr['lstm']] == QUICK_TRAIN_SIZES
    for f in tr['lstm']:
        _check_numbers(f, ('train_s', 'prepare_s', 's_per_1k_samples', 'test_mse', 'test_nmse'),
                       f'train.lstm[{f["n"]}]')
    assert 'ratio_to_paper' in tr['lstm'][0]       # the paper has 1000 samples
    _check_numbers(tr['reference_model'], ('test_mse', 'test_nmse'), 'train.reference_model')
    k = tr['kernels']   # the compiled LSTM kernel against nn.LSTM, interleaved
    assert k['n'] == QUICK_TRAIN_SIZES[-1]
    _check_numbers(k, ('compiled_median_s', 'torch_median_s', 'ratio'), 'train.kernels')
    assert len(k['compiled_s']) == len(k['torch_s']) == k['rounds']
    assert [f['n'] for f in tr['gp_fit']] == QUICK_GP_SIZES
    for f in tr['gp_fit']:
        _check_numbers(f, ('fit_s', 'evals', 's_per_eval'), f'train.gp_fit[{f["n"]}]')
    _check_numbers(tr['online_update'], ('median_ms', 'p90_ms', 'max_ms', 'updates'), 'online')
    assert tr['online_update']['updates'] > 0
    gp = d['gp']
    assert [f['n'] for f in gp['fits']] == QUICK_GP_SIZES
    assert [p['n'] for p in gp['predict_one']] == QUICK_GP_SIZES
    for p in gp['predict_one']:
        _check_numbers(p, PERCENTILE_KEYS, f'gp.predict_one[{p["n"]}]')
    assert d['paper']['lstm_train_s']['1000'] == 2.9


def test_goals_listed_with_verdicts(quick_run):
    goals = quick_run[1]['goals']
    modes = {g['mode'] for g in goals}
    assert modes == {'latency', 'e2e', 'train'}
    for g in goals:
        assert isinstance(g['pass'], bool)
        assert g['figure'] and g['goal']
        assert _is_number(g['value'])


def test_e2e_stats_counts_only_the_measured_window():
    pub = {'sent': 3, 'first_ns': 100, 'last_ns': 300, 'late_p50_us': 0.0,
           'late_p99_us': 0.0, 'late_max_us': 0.0}
    # (receipt, stamp): a warm-up message (50), a duplicate of 100, 200 lost.
    received = [(1050, 50), (1100, 100), (1200, 100), (1300, 300)]
    r = e2e_stats(received, pub)
    assert (r['sent'], r['received'], r['lost']) == (3, 2, 1)
    assert r['max_us'] == pytest.approx(1.0)       # (1100 - 100) ns, first receipt counted


def test_e2e_stats_nothing_received():
    pub = {'sent': 2, 'first_ns': 1, 'last_ns': 2, 'late_p50_us': 0.0, 'late_p99_us': 0.0,
           'late_max_us': 0.0}
    r = e2e_stats([], pub)
    assert r['lost'] == 2 and r['p50_us'] is None


def test_parse_sizes():
    assert parse_sizes('--x', '1000,10000 5') == [1000, 10000, 5]
    assert parse_sizes('--x', None) is None
    for bad in ('', 'a,b', '1'):
        with pytest.raises(BenchError, match='--x'):
            parse_sizes('--x', bad)
