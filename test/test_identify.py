"""Identification of a nominal model's parameters (core/identify.py) and identified specs in
nominal models, checkpoints and the paper's hyperparameters."""

from dataclasses import replace

import numpy as np
import pytest

from invdyn_ros.core.checkpoint import load_checkpoint, save_checkpoint
from invdyn_ros.core.identify import identify, JOINT_TERMS, regressor
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics
from invdyn_ros.core.nominal import (BAXTER_PRESET, baxter_spec, lwr4plus_spec, NominalModel,
                                     spec_for)
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as J
from invdyn_ros.core.targets import NominalSpec, spec_from_meta
from invdyn_ros.experiments.hparams import HparamError, LstmHparams

BAXTER = ('left_s0', 'left_s1', 'left_e0', 'left_e1', 'left_w0', 'left_w1', 'left_w2')
TRUE_TERMS = {'viscous': [0.8, 1.5, 0.3, 0.6, 0.2], 'coulomb': [1.2, -0.4, 0.9, 0.5, 0.3],
              'stiffness': [0.0, 3.0, 0.0, -1.0, 0.0], 'offset': [0.2, -0.5, 0.1, 0.0, 0.05]}


def _truth(spec: NominalSpec) -> NominalSpec:
    """A 'real robot' unlike the URDF: every body 30 % heavier (all 10 parameters scaled, so
    still a consistent body), with friction, springs and offsets."""
    m = NominalModel(spec)
    bodies = [list(1.3 * m.model.inertias[i].toDynamicParameters())
              for i in range(1, m.model.njoints)]
    return replace(spec, identified={'body_params': bodies, **TRUE_TERMS,
                                     'coulomb_velocity': 0.02, 'fit': {}}).validate()


def _excitation(n, seed, d=5):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1.5, 1.5, (n, d)), rng.normal(0, 1.0, (n, d)),
            rng.normal(0, 3.0, (n, d)))


@pytest.fixture(scope='module')
def identified():
    spec = lwr4plus_spec(J)
    truth = NominalModel(_truth(spec))
    data = []
    for seed in (1, 2):
        q, qd, qdd = _excitation(1500, seed)
        data.append((q, qd, qdd, truth.terms('residual_rbd', q, qd, qdd)))
    return spec, truth, identify(spec, data, ridge=1e-9)


def test_identification_recovers_a_robot_unlike_its_urdf(identified):
    spec, truth, ident = identified
    q, qd, qdd = _excitation(500, 9)
    want = truth.terms('residual_rbd', q, qd, qdd)
    urdf = NominalModel(spec).terms('residual_rbd', q, qd, qdd)
    got = NominalModel(ident).terms('residual_rbd', q, qd, qdd)
    var = want.var(axis=0)
    assert np.all(((urdf - want) ** 2).mean(axis=0) / var > 1e-2)     # the URDF is off
    assert np.all(((got - want) ** 2).mean(axis=0) / var < 1e-6)      # identified: exact
    for key in JOINT_TERMS:
        np.testing.assert_allclose(ident.identified[key], TRUE_TERMS[key], atol=1e-3)
    fit = ident.identified['fit']
    assert fit['samples'] == 3000 and fit['trajectories'] == 2
    assert max(fit['nmse_per_joint']) < 1e-6


def test_identified_rnea_is_the_regressor_times_the_parameters(identified):
    _, _, ident = identified
    m = NominalModel(ident)
    q, qd, qdd = _excitation(20, 3)
    theta = np.concatenate([np.ravel(ident.identified['body_params']),
                            np.column_stack([ident.identified[k] for k in JOINT_TERMS]).ravel()])
    y = regressor(m, q, qd, qdd, ident.identified['coulomb_velocity'])
    arm = np.array([ident.armature.get(n, 0.0) for n in ident.urdf_joints])
    np.testing.assert_allclose(y @ theta + arm * qdd, m.terms('residual_rbd', q, qd, qdd),
                               atol=1e-9)
    # gravity: the configuration-only terms (rigid-body gravity, spring, offset)
    g = np.array([m.gravity(x) for x in q])
    y0 = regressor(m, q, 0 * qd, 0 * qdd, 1.0)
    keep = np.ones(theta.size, bool)
    keep[y0.shape[2] - len(JOINT_TERMS) * 5 + np.arange(5) * 4 + 1] = False   # tanh(0) anyway
    np.testing.assert_allclose(y0[:, :, keep] @ theta[keep], g, atol=1e-9)


def test_an_unexcited_parameter_keeps_its_urdf_value():
    """Data of one joint moving alone cannot show most body parameters: the ridge keeps them
    at the URDF's (no drift to huge values), and the model still fits what it saw."""
    spec = lwr4plus_spec(J)
    truth = NominalModel(_truth(spec))
    q, qd, qdd = _excitation(800, 4)
    q[:, 1:], qd[:, 1:], qdd[:, 1:] = 0.3, 0.0, 0.0
    ident = identify(spec, [(q, qd, qdd, truth.terms('residual_rbd', q, qd, qdd))])
    urdf = NominalModel(spec).model
    got = np.array(ident.identified['body_params'])
    prior = np.array([urdf.inertias[i].toDynamicParameters() for i in range(1, urdf.njoints)])
    assert np.max(np.abs(got - prior)) < 10.0
    assert ident.identified['fit']['nmse_per_joint'][0] < 0.05


def test_identified_spec_survives_json_and_a_checkpoint(identified, tmp_path):
    _, _, ident = identified
    back = NominalSpec.from_dict(ident.to_dict())
    assert back == ident and back.same_model(ident)
    assert not back.same_model(replace(ident, identified={}))
    model = LstmInverseDynamics(LstmConfig(joint_names=J, rate_hz=100.0, hidden_size=4))
    path = save_checkpoint(tmp_path / 'm.npz', model,
                           {'target': 'residual_rbd', 'nominal': ident.to_dict()})
    _, meta = load_checkpoint(path)
    spec = spec_from_meta(meta)
    assert spec == ident
    q, qd, qdd = _excitation(5, 5)
    np.testing.assert_allclose(NominalModel(spec).terms('residual_rbd', q, qd, qdd),
                               NominalModel(ident).terms('residual_rbd', q, qd, qdd))


@pytest.mark.parametrize('change,match', [
    ({'viscous': [1.0]}, 'identified.viscous must be 5 finite numbers'),
    ({'coulomb_velocity': 0.0}, 'coulomb_velocity must be > 0'),
    ({'body_params': [[1.0] * 9]}, 'body_params must be lists of 10'),
    ({'offset': [float('nan')] * 5}, 'identified.offset'),
])
def test_broken_identified_specs_are_refused(identified, change, match):
    _, _, ident = identified
    d = ident.to_dict()
    d['identified'] = {**d['identified'], **change}
    with pytest.raises(ValueError, match=match):
        NominalSpec.from_dict(d)
    d = ident.to_dict()
    del d['identified']['fit']
    with pytest.raises(ValueError, match='identified must have keys'):
        NominalSpec.from_dict(d)


def test_a_body_count_unlike_the_urdfs_or_a_massless_body_is_refused(identified):
    _, _, ident = identified
    bodies = ident.identified['body_params']
    with pytest.raises(ValueError, match='bodies, the URDF'):
        NominalModel(replace(ident, identified={**ident.identified,
                                                'body_params': bodies[:-1]}))
    zero = [[0.0] + list(b[1:]) if i == 2 else b for i, b in enumerate(bodies)]
    with pytest.raises(ValueError, match='mass 0 kg'):
        NominalModel(replace(ident, identified={**ident.identified, 'body_params': zero}))


@pytest.mark.parametrize('kw,match', [
    ({'ridge': 0.0}, 'ridge must be a positive'),
    ({'coulomb_velocity': -1.0}, 'coulomb_velocity must be a positive'),
])
def test_bad_identification_arguments(kw, match):
    q, qd, qdd = _excitation(300, 6)
    with pytest.raises(ValueError, match=match):
        identify(lwr4plus_spec(J), [(q, qd, qdd, q)], **kw)


def test_bad_identification_data():
    spec = lwr4plus_spec(J)
    q, qd, qdd = _excitation(300, 6)
    with pytest.raises(ValueError, match='at least 200'):
        identify(spec, [(q[:50], qd[:50], qdd[:50], q[:50])])
    bad = q.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match='non-finite'):
        identify(spec, [(q, qd, qdd, bad)])
    with pytest.raises(ValueError, match=r'share shape \(T, 5\)'):
        identify(spec, [(q, qd, qdd, q[:, :4])])


def test_baxter_left_arm_model_is_packaged():
    spec = baxter_spec(BAXTER)
    m = NominalModel(spec)
    assert m.dof == 7 and m.model.nv == 7 and not spec.held_q
    g = m.gravity(np.zeros(7))
    assert np.all(np.isfinite(g)) and abs(g[1]) > 5.0       # s1 carries the arm
    assert spec_for(BAXTER_PRESET, BAXTER[:5]).held_q == {'left_w1': 0.0, 'left_w2': 0.0}


def test_baxter_residual_hyperparameters_identify_on_the_given_runs():
    from invdyn_ros.core.trajectory import Trajectory
    hp = LstmHparams(target='residual_rbd')
    with pytest.raises(HparamError, match='identified on training data'):
        hp.nominal_model(BAXTER, 'baxter')
    q, qd, _ = _excitation(400, 7, d=7)
    truth = NominalModel(baxter_spec(BAXTER))
    tr = Trajectory(t=np.arange(400) / 100.0, q=np.cumsum(qd, 0) * 0.01, qd=qd,
                    tau=np.zeros((400, 7)), joint_names=BAXTER, source='x')
    tr = replace(tr, tau=truth.terms('residual_rbd', tr.q, tr.qd, np.zeros((400, 7))))
    m = hp.nominal_model(BAXTER, 'baxter', [tr])
    assert m.spec.identified['fit']['samples'] == 400
    assert LstmHparams().nominal_model(BAXTER, 'baxter') is None     # full torque: none


def test_a_spec_with_a_payload_is_identified_once(identified):
    """The payload is in the prior and in the fit; the returned spec (which NominalModel adds
    the payload to again) still reproduces the data, and stores the body without it."""
    from invdyn_ros.core.nominal import with_payload
    spec, truth, _ = identified
    loaded = with_payload(spec, [1.5, 0.0, 0.0, 0.15, 0.01, 0.0, 0.01, 0.0, 0.0, 0.01])
    gen = NominalModel(replace(_truth(spec), payload=loaded.payload,
                               payload_joint=loaded.payload_joint))
    q, qd, qdd = _excitation(2000, 11)
    ident = identify(loaded, [(q, qd, qdd, gen.terms('residual_rbd', q, qd, qdd))],
                     ridge=1e-9)
    q, qd, qdd = _excitation(300, 12)
    want = gen.terms('residual_rbd', q, qd, qdd)
    got = NominalModel(ident).terms('residual_rbd', q, qd, qdd)
    assert np.all(((got - want) ** 2).mean(axis=0) / want.var(axis=0) < 1e-6)
    # a negative identified body mass does not block a payload (the trainer's adapt: payload)
    bodies = [list(b) for b in ident.identified['body_params']]
    bodies[-1][0] = -abs(bodies[-1][0])
    neg = replace(ident, identified={**ident.identified, 'body_params': bodies})
    assert with_payload(neg, [0.3] + [0.0] * 9).payload[0] == 0.3


def test_a_single_trajectory_split_keeps_the_nominal_term():
    """Validation split off a single trajectory is scored on the published torque too."""
    from invdyn_ros.core.training import Prepared, split_by_trajectory
    rng = np.random.default_rng(0)
    d = Prepared(rng.normal(size=(100, 3)), rng.normal(size=(100, 1)), 's',
                 rng.normal(size=(100, 1)), 'residual_rbd')
    train, val = split_by_trajectory([d], 0.2, rng)
    assert val[0].target == 'residual_rbd' and len(val[0].base) == len(val[0].y) == 20
    np.testing.assert_array_equal(train[0].base, d.base[:80])
    pred, true = val[0].published(np.zeros((20, 1)))
    np.testing.assert_array_equal(true, d.y[80:] + d.base[80:])
