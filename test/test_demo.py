"""`make demo`'s job in its short mode: runs end to end, writes its report, leaves no process."""

import json
import os
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]


def _node_processes() -> set:
    out = subprocess.run(['pgrep', '-f', 'invdyn_ros.nodes.'], capture_output=True, text=True)
    return set(out.stdout.split())


def test_quick_demo_runs_and_cleans_up(tmp_path):
    before = _node_processes()
    out = tmp_path / 'demo'
    r = subprocess.run([sys.executable, '-m', 'invdyn_ros.cli', 'demo', '--quick', '--out',
                        str(out)], capture_output=True, text=True, timeout=600, cwd=REPO,
                       env=os.environ.copy())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / 'results.json').read_text())
    on = res['online']
    assert res['quick'] is True
    assert on['joint_states_received'] > 1000 and on['feedforward_received'] > 100
    assert on['gp_predictions'] > 10
    for key in ('lstm_mse', 'gp_mse', 'lstm_mse_before_switch', 'lstm_mse_after_switch',
                'frozen_start_model_mse'):
        assert on[key] == on[key] and on[key] >= 0, key       # a number, not NaN
    assert int(on['predictor']['answered']) > 0
    for png in ('online_torques.png', 'online_error.png'):
        assert (out / png).stat().st_size > 10_000, png
    assert (out / 'lwr_lstm.npz').is_file() and (out / 'lwr_gp.npz').is_file()
    assert 'payload -> 600 ml (ok)' in r.stdout
    assert _node_processes() - before == set(), 'the demo left node processes running'
