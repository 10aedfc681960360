"""Tests of the simulated KUKA LWR 4+ (invdyn_ros.core.lwr_sim)."""

import math

import numpy as np
import pinocchio as pin
import pytest

from invdyn_ros.core.lwr_sim import (
    ARMATURE, DEFAULT_URDF, HOME_Q, JOINT_NAMES, LuGreFriction, LuGreParams, LwrSim,
    LwrSimConfig, SloshParams, simulate)
from invdyn_ros.core.trajectory import Trajectory

RIGID_ONLY = LwrSimConfig(friction=False, slosh=False, flask_mass_kg=0.0)


def true_model() -> tuple[pin.Model, pin.Data]:
    """An independent Pinocchio model of the URDF with the simulator's armature."""
    model = pin.buildModelFromUrdf(DEFAULT_URDF)
    model.armature[:] = ARMATURE
    return model, model.createData()


def rms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(a ** 2, axis=0))


@pytest.fixture(scope='module')
def mixed_run() -> Trajectory:
    return simulate(5.0, payload_ml=300.0, seed=7, motion='mixed')


def test_urdf_kinematics_and_limits():
    model, data = true_model()
    assert tuple(model.names[1:]) == JOINT_NAMES
    pin.forwardKinematics(model, data, np.zeros(7))
    # base-shoulder 0.3105 + upper arm 0.4 + forearm 0.39 + flange 0.078, arm upright
    np.testing.assert_allclose(data.oMi[7].translation, [0.0, 0.0, 1.1785], atol=1e-9)
    np.testing.assert_allclose(data.oMi[2].translation[2], 0.3105, atol=1e-9)
    np.testing.assert_allclose(data.oMi[4].translation[2], 0.7105, atol=1e-9)
    np.testing.assert_allclose(data.oMi[6].translation[2], 1.1005, atol=1e-9)
    deg = np.deg2rad([170, 120, 170, 120, 170, 120, 170])
    np.testing.assert_allclose(model.upperPositionLimit, deg, atol=1e-6)
    np.testing.assert_allclose(model.lowerPositionLimit, -deg, atol=1e-6)
    np.testing.assert_allclose(model.effortLimit, [176, 176, 100, 100, 100, 38, 38])
    masses = [model.inertias[j].mass for j in range(1, 8)]
    # Gaz et al.'s identified set (test_lwr_params.py checks each value): 17.29 kg moving mass;
    # KUKA quotes about 16 kg for the whole robot, the split between links is not identifiable
    assert all(m > 0.05 for m in masses) and 15.0 < sum(masses) < 19.0


def test_rigid_body_torque_matches_rnea_exactly():
    """Friction, payload and noise off: measured torque == RNEA(q, qd, qdd_true)."""
    traj = simulate(2.0, payload_ml=0.0, seed=3, noise=False, config=RIGID_ONLY)
    model, data = true_model()
    qdd = traj.meta['qdd_true']
    assert np.abs(qdd).max() > 0.5          # the arm really accelerates
    err = max(np.abs(pin.rnea(model, data, traj.q[k], traj.qd[k], qdd[k]) - traj.tau[k]).max()
              for k in range(len(traj)))
    assert err < 1e-6


def test_payload_residual_grows_with_volume():
    cfg = LwrSimConfig(friction=False)
    sim = LwrSim(cfg)
    residual = []
    for ml in (0.0, 200.0, 300.0, 400.0):
        traj = simulate(2.0, payload_ml=ml, seed=4, noise=False, config=cfg)
        m = traj.meta
        nominal = sim.nominal_rnea(m['q_true'], m['qd_true'], m['qdd_true'])
        residual.append(rms(traj.tau - nominal))
    shoulder = [r[1] for r in residual]      # A2 carries the payload's weight
    assert all(b > a + 0.3 for a, b in zip(shoulder, shoulder[1:])), shoulder
    # 100 ml more water (0.1 kg) at ~0.6 m lever: about 0.6 Nm more on A2
    assert 0.3 < shoulder[3] - shoulder[2] < 1.2


def test_slosh_mode_feeds_back_on_the_arm():
    for ml in (200.0, 300.0, 400.0):
        sp = SloshParams.for_volume(ml)
        assert 2.0 < sp.omega / (2 * math.pi) < 5.0       # a few Hz
        assert 0.0 < sp.mass < sp.liquid_kg == pytest.approx(ml * 1e-3)
    assert SloshParams.for_volume(0.0).mass == 0.0
    on = simulate(3.0, payload_ml=400.0, seed=5, noise=False, motion='push',
                  config=LwrSimConfig(friction=False))
    off = simulate(3.0, payload_ml=400.0, seed=5, noise=False, motion='push',
                   config=LwrSimConfig(friction=False, slosh=False))
    np.testing.assert_array_equal(on.meta['q_des'], off.meta['q_des'])
    diff = np.abs(on.tau - off.tau).max(axis=0)
    assert diff[:5].max() > 0.02               # the liquid pushes back on the moving joints
    assert diff.max() < 1.0                    # ... but it is a small effect next to its mass


def test_slosh_oscillates_after_a_jolt():
    sim = LwrSim(LwrSimConfig(payload_ml=300.0, friction=False, q_noise_std=0.0,
                              qd_noise_std=0.0, tau_noise_std=0.0))
    hold = sim.true_state().tau_cmd
    assert np.abs(sim.true_state().slosh_pos).max() < 1e-3    # starts at rest
    kick = hold.copy()
    kick[0] += 20.0
    for _ in range(50):
        sim.step(kick)
    xs = []
    for _ in range(1500):
        sim.step(hold)
        xs.append(sim.true_state().slosh_pos[1])
    xs = np.asarray(xs) - np.mean(xs)
    crossings = np.count_nonzero(np.diff(np.sign(xs)) != 0)
    freq = crossings / 2 / 1.5
    assert np.abs(xs).max() > 1e-3
    assert abs(freq - sim.slosh.omega / (2 * math.pi)) < 0.8


def test_friction_depends_on_direction():
    """Friction-only residual over the nominal model: same speed, opposite sign."""
    cfg = LwrSimConfig(slosh=False, flask_mass_kg=0.0)
    traj = simulate(4.0, payload_ml=0.0, seed=2, noise=False, motion='reach', config=cfg)
    sim = LwrSim(cfg)
    m = traj.meta
    residual = traj.tau - sim.nominal_rnea(m['q_true'], m['qd_true'], m['qdd_true'])
    np.testing.assert_allclose(residual, m['tau_friction'], atol=1e-6)
    fc = np.asarray(LuGreParams().coulomb)
    checked = 0
    for j in range(5):
        fwd = residual[m['qd_true'][:, j] > 0.1, j]
        bwd = residual[m['qd_true'][:, j] < -0.1, j]
        if fwd.size > 50 and bwd.size > 50:
            assert fwd.min() > 0.8 * fc[j] and bwd.max() < -0.8 * fc[j]
            checked += 1
    assert checked >= 2


def test_lugre_hysteresis():
    fric = LuGreFriction(LuGreParams(), np.asarray(ARMATURE))
    dt, amp, freq = 1e-4, 0.06, 5.0
    t = np.arange(0.0, 2.0 / freq, dt)
    v = amp * np.sin(2 * np.pi * freq * t)
    torque = np.empty_like(t)
    for k, vk in enumerate(v):
        torque[k] = fric.torque(np.full(7, vk))[0]
        fric.advance(np.full(7, vk), dt)
    period = 1.0 / freq
    rising = np.argmin(np.abs(t - (period + period / 12)))     # v = amp/2, accelerating
    falling = np.argmin(np.abs(t - (period + 5 * period / 12)))  # v = amp/2, decelerating
    assert v[rising] == pytest.approx(v[falling], abs=1e-4)
    assert abs(torque[rising] - torque[falling]) > 0.2
    # presliding memory: at standstill the friction remembers the last direction of motion
    held = []
    for sign in (1.0, -1.0):
        fric.reset()
        for _ in range(2000):
            fric.advance(np.full(7, sign * 0.2), dt)
        fric.advance(np.zeros(7), dt)
        held.append(fric.torque(np.zeros(7)))
    assert np.all(held[0] > 0.9 * np.asarray(LuGreParams().coulomb))
    np.testing.assert_allclose(held[0], -held[1])


def test_link_side_sensor_excludes_friction():
    cfg = LwrSimConfig(slosh=False, flask_mass_kg=0.0, torque_sensor='link', substeps=1)
    traj = simulate(2.0, payload_ml=0.0, seed=3, noise=False, config=cfg)
    model, data = true_model()
    qdd = traj.meta['qdd_true']
    err = max(np.abs(pin.rnea(model, data, traj.q[k], traj.qd[k], qdd[k]) - traj.tau[k]).max()
              for k in range(len(traj)))
    assert err < 1e-6
    assert np.abs(traj.meta['tau_friction']).max() > 0.5


def test_motion_within_limits_and_wrist_held(mixed_run):
    sim = LwrSim()
    m = mixed_run.meta
    q, qd = m['q_true'], m['qd_true']
    assert np.all(q > sim.q_lower) and np.all(q < sim.q_upper)
    assert np.all(np.abs(qd) < sim.qd_limit)
    assert np.all(np.abs(mixed_run.tau) <= sim.tau_limit + 1.0)
    np.testing.assert_array_equal(m['q_des'][:, 5:], np.broadcast_to(HOME_Q[5:], (len(q), 2)))
    assert np.abs(q[:, 5:] - HOME_Q[5:]).max() < 0.05
    travel = q[:, :5].max(axis=0) - q[:, :5].min(axis=0)
    assert np.count_nonzero(travel > 0.05) >= 3          # the first five joints really move
    # the planned motion is smooth: min-jerk segments, continuous velocity
    assert np.abs(np.diff(m['qd_des'], axis=0)).max() < 0.02


def test_flask_is_upright_at_home():
    axis = LwrSim().flask_axis(HOME_Q)
    assert axis[2] > 0.99


def test_trajectory_format(mixed_run):
    traj = mixed_run
    assert isinstance(traj, Trajectory)
    traj.validate()
    assert traj.joint_names == JOINT_NAMES and traj.dof == 7 and len(traj) == 5000
    assert traj.qdd is None
    np.testing.assert_allclose(np.diff(traj.t), 1e-3, atol=1e-12)
    assert traj.t[0] == 0.0 and traj.rate_hz == pytest.approx(1000.0)
    assert traj.source == 'sim:lwr4plus payload=300ml seed=7'
    for key in ('qdd_true', 'q_true', 'qd_true', 'tau_true', 'tau_friction', 'q_des'):
        assert traj.meta[key].shape == (5000, 7)
    assert traj.meta['payload_ml'] == 300.0


def test_noise_levels(mixed_run):
    cfg = LwrSimConfig()
    m = mixed_run.meta
    assert np.std(mixed_run.q - m['q_true']) == pytest.approx(cfg.q_noise_std, rel=0.1)
    assert np.std(mixed_run.qd - m['qd_true']) == pytest.approx(cfg.qd_noise_std, rel=0.1)
    assert np.std(mixed_run.tau - m['tau_true']) == pytest.approx(cfg.tau_noise_std, rel=0.1)
    clean = simulate(0.5, payload_ml=300.0, seed=7, noise=False)
    np.testing.assert_array_equal(clean.q, clean.meta['q_true'])
    np.testing.assert_array_equal(clean.tau, clean.meta['tau_true'])


def test_determinism():
    a = simulate(1.0, payload_ml=200.0, seed=11)
    b = simulate(1.0, payload_ml=200.0, seed=11)
    c = simulate(1.0, payload_ml=200.0, seed=12)
    for key in ('q', 'qd', 'tau'):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.tau, c.tau)
    assert not np.array_equal(a.meta['q_des'], c.meta['q_des'])      # the plan is seeded too


def test_motions_differ():
    push = simulate(3.0, seed=1, motion='push', noise=False)
    reach = simulate(3.0, seed=1, motion='reach', noise=False)
    assert not np.allclose(push.meta['q_des'], reach.meta['q_des'])
    # pushing: the flange goes back and forth along a line, returning to its start pose
    sim = LwrSim()
    q_des = push.meta['q_des']
    start = sim.flange_position(q_des[0])
    pts = np.array([sim.flange_position(q) for q in q_des[::50]])
    assert np.ptp(pts[:, 2]) < 0.05 < np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])
    assert np.linalg.norm(pts - start, axis=1).max() < 0.25


def test_step_api_static_hold_and_payload_change():
    for friction in (True, False):
        sim = LwrSim(LwrSimConfig(payload_ml=300.0, friction=friction))
        q0, qd0, tau0 = sim.measure()
        assert q0.shape == qd0.shape == tau0.shape == (7,)
        hold = sim.true_state().tau_cmd
        for _ in range(500):
            sim.step(hold)
        state = sim.true_state()
        assert np.abs(state.q - HOME_Q).max() < 1e-6 and state.t == pytest.approx(0.5)
        # 100 ml more: the old holding torque is short by ~0.6 Nm on A2
        sim.set_payload(400.0)
        assert sim.payload_ml == 400.0
        for _ in range(300):
            sim.step(hold)
        sag = np.abs(sim.true_state().q - HOME_Q).max()
        if friction:    # below breakaway: stiction holds it, only presliding deflection
            assert 1e-5 < sag < 1e-3
        else:
            assert sag > 1e-2
        sim.reset()
        assert sim.time == 0.0
        assert abs(sim.true_state().tau_cmd[1] - hold[1]) > 0.3


@pytest.mark.parametrize('bad', [-1.0, 1000.5, float('nan'), float('inf'), 'lots', None])
def test_set_payload_validation(bad):
    sim = LwrSim()
    with pytest.raises(ValueError, match='payload'):
        sim.set_payload(bad)
    assert sim.payload_ml == 300.0
    with pytest.raises(ValueError, match='payload'):
        LwrSim(LwrSimConfig(payload_ml=bad))


def test_step_validation():
    sim = LwrSim()
    with pytest.raises(ValueError, match='NaN'):
        sim.step(np.array([0, 0, np.nan, 0, 0, 0, 0.0]))
    with pytest.raises(ValueError, match='shape'):
        sim.step(np.zeros(6))
    with pytest.raises(ValueError, match='q0'):
        sim.reset(np.zeros(5))
    with pytest.raises(ValueError, match='limits'):
        sim.reset(np.full(7, 3.0))
    # torques beyond the effort limits are saturated, not rejected
    sim.step(np.full(7, 1e4))
    np.testing.assert_array_equal(sim.true_state().tau_cmd, sim.tau_limit)


def test_simulate_validation():
    with pytest.raises(ValueError, match='seconds'):
        simulate(-1.0)
    with pytest.raises(ValueError, match='seconds'):
        simulate(float('nan'))
    with pytest.raises(ValueError, match='samples'):
        simulate(0.001)
    with pytest.raises(ValueError, match='payload'):
        simulate(1.0, payload_ml=-5.0)
    with pytest.raises(ValueError, match='motion'):
        simulate(1.0, motion='dance')
    with pytest.raises(ValueError, match='rate_hz'):
        simulate(1.0, rate_hz=0.0)
    with pytest.raises(ValueError, match='torque_sensor'):
        LwrSim(LwrSimConfig(torque_sensor='current'))


def test_nominal_model_api():
    sim = LwrSim(LwrSimConfig(payload_ml=400.0))
    model, data = true_model()
    rng = np.random.default_rng(0)
    q = HOME_Q + 0.3 * rng.standard_normal((4, 7))
    qd = rng.standard_normal((4, 7))
    qdd = rng.standard_normal((4, 7))
    batch = sim.nominal_rnea(q, qd, qdd)
    assert batch.shape == (4, 7)
    for k in range(4):
        np.testing.assert_allclose(batch[k], pin.rnea(model, data, q[k], qd[k], qdd[k]),
                                   atol=1e-10)
        np.testing.assert_allclose(sim.nominal_gravity(q[k]),
                                   sim.nominal_rnea(q[k], np.zeros(7), np.zeros(7)), atol=1e-10)
    assert sim.nominal_gravity(q).shape == (4, 7)
    with pytest.raises(ValueError):
        sim.nominal_rnea(q, qd[:2], qdd)
