"""`invdyn experiment control --quick` and `invdyn experiment targets --quick` on tiny sizes:
they run end to end and write reports of the promised structure (numbers are indicative only at
these sizes; the full runs give the figures)."""

import json
import math
import subprocess
import sys

from invdyn_ros.experiments.control import (CONDITIONS, GAINS, QUICK, run_control,
                                            SWITCH_CONDITIONS)
from invdyn_ros.experiments.targets import run_targets, samples_to_beat

from conftest import REPO, SHARED_DATA


def test_quick_control_experiment_writes_its_report(tmp_path):
    out = tmp_path / 'control'
    res = run_control(out, quick=True, log=lambda s: None)
    saved = json.loads((out / 'results.json').read_text())
    assert saved['quick'] is True and saved['conditions'] == list(CONDITIONS)
    n = len(QUICK.motions) * len(QUICK.payloads) * len(GAINS) * len(CONDITIONS)
    assert len(saved['rows']) == n
    for row in saved['rows']:
        assert len(row['rms_rad_per_joint']) == 5
        assert 0 < row['rms_rad'] < 1.0 and math.isfinite(row['max_abs_rad'])
    for gname, _ in GAINS:
        s = saved['summary'][gname]
        assert set(s) == set(CONDITIONS)
        # physics, not learning: PD alone sags under gravity, nominal feedforward removes most
        assert s['pd']['rms_rad'] > 2 * s['nominal']['rms_rad']
    for gname, sw in saved['switch'].items():
        assert set(sw['rms_rad_after']) == set(SWITCH_CONDITIONS)
        assert sw['online']['updates'] > 0 and sw['online']['adapt'] == 'network'
        assert sw['payload']['updates'] > 0 and sw['payload']['adapt'] == 'payload'
        assert math.isfinite(sw['payload']['payload_mass_kg'])
    assert {'lstm_residual', 'online', 'gp', 'nominal'} <= set(saved['latency_us'])
    assert all(isinstance(g['met'], bool) for g in saved['goals']) and saved['goals']
    report = (out / 'report.md').read_text()
    for heading in ('## Nominal gains', '## Reduced gains', '## Per run', '## Payload switch',
                    '## Goals (measured)'):
        assert heading in report
    for png in ('tracking_error.png', 'payload_switch.png', 'tracking_rms.png'):
        assert (out / png).stat().st_size > 10_000, png
    assert res['summary'] == saved['summary']


def test_control_cli_refuses_bad_arguments(tmp_path):
    for extra in (['--conditions', 'magic'], ['--payloads', '5000']):
        r = subprocess.run([sys.executable, '-m', 'invdyn_ros.cli', 'experiment', 'control',
                            '--out', str(tmp_path / 'x'), '--quick'] + extra,
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr


def test_quick_targets_experiment_writes_its_report(tmp_path):
    out = tmp_path / 'targets'
    res = run_targets(out, quick=True, data_root=SHARED_DATA, log=lambda s: None)
    lwr = res['lwr']
    assert set(lwr['curves']) == {'full', 'residual_rbd', 'residual_gravity'}
    for curve in lwr['curves'].values():
        assert curve and all(p['mse'] > 0 and math.isfinite(p['mse']) for p in curve)
    assert lwr['nominal']['nominal_rbd'] > 0 and lwr['nominal']['nominal_gravity'] > 0
    assert res['nominal_cost']['rnea_us'] > 0
    if (SHARED_DATA / 'baxter_valencia2023').exists():
        assert list(res['baxter']['curves']) == ['full'] and res['baxter']['nominal'] is None
    md = (out / 'targets.md').read_text()
    assert 'samples to beat nominal RNEA' in md and 'Cost of the nominal term' in md
    assert (out / 'targets.png').stat().st_size > 10_000
    assert json.loads((out / 'targets.json').read_text())['quick'] is True


def test_samples_to_beat():
    curve = [{'samples': 100, 'mse': 5.0}, {'samples': 400, 'mse': 2.0},
             {'samples': 1600, 'mse': 1.0}]
    assert samples_to_beat(curve, 3.0) == 400
    assert samples_to_beat(curve, 0.5) is None
