"""The nominal rigid-body model of residual targets: equals Pinocchio on the full 7-DoF model
with the unmodelled joints held, the spec round-trips and refuses what it cannot use, and a
'full' predictor never imports Pinocchio."""

import subprocess
import sys

import numpy as np
import pinocchio as pin
import pytest

from invdyn_ros.core.lwr_sim import ARMATURE, DEFAULT_URDF, HOME_Q, JOINT_NAMES, LwrSim
from invdyn_ros.core.nominal import (apply_target, complete_spec, lwr4plus_spec, NominalModel,
                                     spec_for)
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J
from invdyn_ros.core.targets import check_target, NominalSpec, spec_from_meta

from conftest import REPO


def _states(n, seed=0):
    rng = np.random.default_rng(seed)
    q = HOME_Q[:5] + rng.uniform(-0.5, 0.5, (n, 5))
    return q, rng.normal(0, 1.0, (n, 5)), rng.normal(0, 3.0, (n, 5))


def test_lwr_nominal_equals_pinocchio_with_held_joints():
    nm = NominalModel(lwr4plus_spec(J))
    # Independent reference: Pinocchio on the URDF, armature set, joints 6-7 at the home pose.
    model = pin.buildModelFromUrdf(DEFAULT_URDF)
    model.armature[:] = ARMATURE
    data = model.createData()
    sim = LwrSim()
    q, qd, qdd = _states(20)
    for k in range(len(q)):
        q7, qd7, qdd7 = HOME_Q.copy(), np.zeros(7), np.zeros(7)
        q7[:5], qd7[:5], qdd7[:5] = q[k], qd[k], qdd[k]
        want = pin.rnea(model, data, q7, qd7, qdd7)[:5]
        np.testing.assert_allclose(nm.rnea(q[k], qd[k], qdd[k]), want, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(nm.rnea(q[k], qd[k], qdd[k]),
                                   sim.nominal_rnea(q7, qd7, qdd7)[:5], atol=1e-9)
        np.testing.assert_allclose(nm.gravity(q[k]),
                                   pin.computeGeneralizedGravity(model, data, q7)[:5],
                                   atol=1e-9)
    batch = nm.terms('residual_rbd', q, qd, qdd)
    np.testing.assert_allclose(batch[3], nm.rnea(q[3], qd[3], qdd[3]))
    g = nm.terms('residual_gravity', q, qd, qdd)
    np.testing.assert_allclose(g[5], nm.gravity(q[5]))


def test_apply_target_splits_the_torque():
    nm = NominalModel(lwr4plus_spec(J))
    q, qd, qdd = _states(10, seed=1)
    tau = np.random.default_rng(2).normal(0, 5, (10, 5))
    for target in ('residual_rbd', 'residual_gravity'):
        y, base = apply_target(target, nm, q, qd, qdd, tau)
        np.testing.assert_allclose(y + base, tau, atol=1e-12)
        assert np.abs(base).max() > 1.0                   # gravity is tens of Nm here
    y, base = apply_target('full', None, q, qd, qdd, tau)
    np.testing.assert_array_equal(y, tau)
    assert not base.any()
    with pytest.raises(ValueError, match='needs a nominal model'):
        apply_target('residual_rbd', None, q, qd, qdd, tau)
    with pytest.raises(ValueError, match='target must be one of'):
        check_target('residual')


def test_spec_round_trip_and_refusals(tmp_path):
    spec = spec_for('lwr4plus', J)
    assert set(spec.held_q) == {'lwr_a5_joint', 'lwr_a6_joint'}
    assert spec.held_q['lwr_a5_joint'] == pytest.approx(HOME_Q[5])
    back = NominalSpec.from_dict(spec.to_dict())
    assert back == spec and back.same_model(spec)
    d = spec.to_dict()
    d['urdf_text'] = d['urdf_text'].replace('<mass value="', '<mass value="1', 1)
    with pytest.raises(ValueError, match='SHA-256'):
        NominalSpec.from_dict(d)
    # A plain URDF path: unmodelled joints held at 0 rad, stated in the spec.
    plain = spec_for(DEFAULT_URDF, J)
    assert plain.held_q == {'lwr_a5_joint': 0.0, 'lwr_a6_joint': 0.0}
    assert not plain.armature and not plain.same_model(spec)
    with pytest.raises(ValueError, match='not movable joints'):
        spec_for(DEFAULT_URDF, ('lwr_a1_joint', 'no_such_joint'))
    incomplete = NominalSpec.from_urdf(DEFAULT_URDF, J)
    with pytest.raises(ValueError, match='neither modelled nor held'):
        NominalModel(incomplete)
    assert NominalModel(complete_spec(incomplete)).dof == 5
    bad = tmp_path / 'bad.urdf'
    bad.write_text('<robot name="x"><link name="a"/><oops></robot>')
    with pytest.raises(ValueError, match='cannot parse'):
        spec_for(str(bad), ('a_joint',))
    with pytest.raises(ValueError, match='cannot read'):
        spec_for(str(tmp_path / 'missing.urdf'), J)
    # Checkpoint metadata: a residual target needs its spec, 'full' must not carry one.
    assert spec_from_meta({'target': 'full'}) is None
    assert spec_from_meta({'target': 'residual_rbd', 'nominal': spec.to_dict(),
                           'joint_names': list(J)}) == spec
    with pytest.raises(ValueError, match='needs a nominal model'):
        spec_from_meta({'target': 'residual_gravity'})
    with pytest.raises(ValueError, match='carries no nominal model'):
        spec_from_meta({'target': 'full', 'nominal': spec.to_dict()})
    with pytest.raises(ValueError, match='differ from the model joints'):
        spec_from_meta({'target': 'residual_rbd', 'nominal': spec.to_dict(),
                        'joint_names': list(J[::-1])})


def test_all_seven_joints_modelled_needs_no_held_joints():
    nm = NominalModel(spec_for('lwr4plus', JOINT_NAMES))
    assert nm.dof == 7 and not nm.spec.held_q
    sim = LwrSim()
    q = HOME_Q + 0.1
    np.testing.assert_allclose(nm.gravity(q), sim.nominal_gravity(q), atol=1e-9)


def test_full_predictor_path_never_imports_pinocchio():
    code = (
        'import sys\n'
        'from invdyn_ros.core.checkpoint import load_lstm_weights\n'
        'from invdyn_ros.core.online import OnlinePredictor\n'
        'import invdyn_ros.nodes.predictor\n'
        'import numpy as np\n'
        "w, meta = load_lstm_weights(sys.argv[1])\n"
        "assert meta['target'] == 'full', meta['target']\n"
        'p = OnlinePredictor(w)\n'
        'r = p.update(1.0, np.zeros(5), np.zeros(5))\n'
        'assert r.tau is not None\n'
        "print('pinocchio' in sys.modules, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, '-c', code,
                          str(REPO / 'models' / 'lwr4plus_j1-5_lstm.npz')],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['False', 'False'], out.stdout
