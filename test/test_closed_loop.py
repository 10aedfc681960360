"""The ROS graph closed loop over DDS: lwr_sim under PD applies the predictor's feedforward for
its reference, tracks far better than PD alone, measures the feedforward's lag, and drops (and
counts) a feedforward that went stale when the predictor stopped."""

import numpy as np
import torch

from invdyn_ros.closed_loop import run_closed_loop_graph
from invdyn_ros.core.checkpoint import save_checkpoint
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer
from invdyn_ros.core.nominal import lwr4plus_spec
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J
from invdyn_ros.core.training import target_meta

SECONDS = 4.0
#: Half the usual rate: the test shares 2 cores with other work; the mechanism is the same.
RATE_HZ = 500.0


def test_predictor_feedforward_closes_the_loop_over_dds(tmp_path):
    # A residual_rbd model whose residual is exactly zero: the predictor publishes the nominal
    # rigid-body torque of the reference (Pinocchio inside the node), a feedforward whose
    # effect does not depend on training.
    model = LstmInverseDynamics(LstmConfig(joint_names=J, rate_hz=1000.0, hidden_size=4),
                                Normalizer.identity(15, 5))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    path = save_checkpoint(tmp_path / 'nominal_only.npz', model,
                           target_meta('residual_rbd', lwr4plus_spec(J)))
    pd = run_closed_loop_graph(None, SECONDS, gain_scale=0.25, lead_s=0.005, rate_hz=RATE_HZ)
    ff = run_closed_loop_graph(str(path), SECONDS, gain_scale=0.25, lead_s=0.005,
                               stop_predictor_first_s=0.5, rate_hz=RATE_HZ)
    assert pd['lwr_sim_exit'] is None, 'lwr_sim must keep running until stopped'
    assert pd['feedforward_received'] == 0 and pd['tracking_rms_all_rad'] > 0
    assert ff['predictor'].get('target') == 'residual_rbd'
    assert int(ff['predictor']['answered']) > 500
    assert ff['feedforward_received'] > 50 and ff['feedforward_applied_steps'] > 500
    assert np.isfinite(ff['lag_p50_ms']) and ff['lag_p50_ms'] >= 0
    # stopping the predictor leaves a feedforward that must be dropped, never applied
    assert ff['stale_dropped'] >= 1
    # While it is applied, gravity compensation alone removes most of PD's sag (at least half
    # of the error; in process it removes three quarters).
    assert ff['periods'] >= 1, ff
    assert ff['tracking_rms_rad'] < 0.5 * pd['tracking_rms_all_rad'], (pd, ff)


def test_lwr_sim_refuses_bad_controller_parameters():
    import subprocess
    from invdyn_ros.closed_loop import node_argv
    for params, word in (({'controller': 'magic'}, 'controller'),
                         ({'feedforward_joints': "['lwr_a1_joint', 'nope']"}, 'nope'),
                         ({'feedforward_timeout_s': -1.0}, 'feedforward_timeout_s')):
        r = subprocess.run(node_argv('lwr_sim', params), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (params, r.stdout, r.stderr)
        assert word in r.stdout + r.stderr and 'Traceback' not in r.stdout + r.stderr
