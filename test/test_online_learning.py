"""The online learner behind the trainer node: batches, replay, gating, divergence."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer
from invdyn_ros.core.online import OnlinePredictor, run_online
from invdyn_ros.core.online_learning import OnlineConfig, OnlineLearner, prequential

NAMES = ('j1', 'j2')
RATE = 200.0


def _stream(n, seed=0, gain=2.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    w = np.array([1.3, 0.7])
    q = np.sin(np.outer(t, w))
    qd = w * np.cos(np.outer(t, w))
    qdd = -w * w * np.sin(np.outer(t, w))
    tau = gain * qdd + 3.0 * np.sin(q) + 0.5 * np.sign(qd) + rng.normal(0, 0.01, q.shape)
    return t + 10.0, q, qd, tau


def _model(seed=0):
    torch.manual_seed(seed)
    t, q, qd, tau = _stream(2000)
    x = np.hstack((q, qd, np.zeros_like(q)))
    return LstmInverseDynamics(LstmConfig(joint_names=NAMES, rate_hz=RATE, hidden_size=16),
                               Normalizer.from_data(x, tau))


def test_windows_holdout_and_learning_improves_the_published_model():
    cfg = OnlineConfig(batch_size=64, context=32, learning_rate=0.05, holdout_every=4,
                       holdout_size=10)
    learner = OnlineLearner(_model(), config=cfg)
    before = copy.deepcopy(learner.published)
    t, q, qd, tau = _stream(64 * 40)
    complete = sum(learner.add_sample(t[k], q[k], qd[k], tau[k]) for k in range(len(t)))
    assert complete == 40
    assert learner.stats['held_back'] == 10 and learner.pending() == 30
    for _ in range(3):          # several passes: each window trains once, replay re-uses them
        learner.train_pending()
        for k in range(len(t)):
            learner.add_sample(t[k] + 100 * (_ + 1), q[k], qd[k], tau[k])
    learner.train_pending()
    assert learner.stats['updates'] > 100
    new = learner.candidate()
    assert new is not None and learner.model_version == 1
    assert learner.holdout_score(new) < 0.5 * learner.holdout_score(before)


def test_a_worse_candidate_is_not_published():
    learner = OnlineLearner(_model(), config=OnlineConfig(batch_size=32, context=0,
                                                          holdout_every=2))
    t, q, qd, tau = _stream(32 * 10)
    for k in range(len(t)):
        learner.add_sample(t[k], q[k], qd[k], tau[k])
    learner.train_pending()
    with torch.no_grad():      # sabotage the training copy
        for p in learner.model.parameters():
            p.add_(torch.randn_like(p) * 5.0)
    assert learner.candidate() is None
    assert learner.stats['candidates_rejected'] == 1 and learner.model_version == 0


def test_no_window_spans_a_gap():
    learner = OnlineLearner(_model(), config=OnlineConfig(batch_size=50, context=50))
    t, q, qd, tau = _stream(80)
    for k in range(80):
        learner.add_sample(t[k], q[k], qd[k], tau[k])
    t2 = t + 5.0                 # a 5 s gap: a new sequence starts
    for k in range(30):
        learner.add_sample(t2[k], q[k], qd[k], tau[k])
    assert learner.stats['sequence_starts'] == 2
    assert learner.pending() == 1             # only the first sequence completed a window


def test_diverging_update_is_discarded_and_weights_restored():
    learner = OnlineLearner(_model(), config=OnlineConfig(batch_size=32, context=0,
                                                          holdout_every=1000))
    t, q, qd, tau = _stream(32 * 3)
    tau = tau.copy()
    tau[40:60] = np.inf          # a poisoned batch (the node rejects these; belt and braces)
    for k in range(len(t)):
        learner.add_sample(t[k], q[k], qd[k], tau[k])
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    learner.train_pending(max_updates=2)
    # The poisoned window is refused before training (it would poison replay); the
    # discard-and-restore path itself is exercised in the tests below.
    assert learner.stats['windows_refused'] == 1 and learner.stats['updates'] == 2
    for p in learner.model.parameters():
        assert torch.isfinite(p).all()
    assert any(not torch.equal(before[k], v) for k, v in learner.model.state_dict().items()), \
        'the healthy batch still trained'


def _fed(cfg, n_windows, seed=0):
    learner = OnlineLearner(_model(), config=cfg)
    t, q, qd, tau = _stream(cfg.batch_size * n_windows, seed=seed)
    for k in range(len(t)):
        learner.add_sample(t[k], q[k], qd[k], tau[k])
    return learner


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_exploding_step_is_rolled_back_exactly_and_learning_goes_on():
    cfg = OnlineConfig(batch_size=32, context=0, holdout_every=4, learning_rate=0.05)
    learner = _fed(cfg, 40)
    published = _state(learner.published)
    learner.train_pending(max_updates=3)
    before, opt_before = _state(learner.model), copy.deepcopy(learner._opt.state_dict())
    real_step = learner._opt.step

    def exploding_step(*args, **kwargs):    # a step that blows the weights up
        real_step(*args, **kwargs)
        with torch.no_grad():
            next(learner.model.parameters()).fill_(float('inf'))
    learner._opt.step = exploding_step
    assert learner.train_pending(max_updates=2) == 2
    assert learner.stats['diverged_discarded'] == 2 and learner.stats['updates'] == 3
    assert _same(_state(learner.model), before), 'weights restored exactly'
    opt_after = learner._opt.state_dict()['state']
    assert all(torch.equal(opt_after[i]['sum'], opt_before['state'][i]['sum'])
               for i in opt_after), 'optimizer state restored too'
    assert _same(_state(learner.published), published), 'the published model never saw it'
    # The trainer recovers: the next updates train normally and a finite candidate comes out.
    learner._opt.step = real_step
    learner.train_pending()
    assert learner.stats['updates'] > 20
    new = learner.candidate()
    assert new is not None and learner.model_version == 1
    assert all(torch.isfinite(p).all() for p in new.parameters())


def test_non_finite_gradient_skips_the_step(monkeypatch):
    learner = _fed(OnlineConfig(batch_size=32, context=0, holdout_every=1000), 3)
    before = _state(learner.model)
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_',
                        lambda params, max_norm: torch.tensor(float('inf')))
    assert learner.train_pending() == 3
    assert learner.stats['diverged_discarded'] == 3 and learner.stats['updates'] == 0
    assert _same(_state(learner.model), before)
    assert all(p.grad is None for p in learner.model.parameters())
    assert learner.candidate() is None and learner.model_version == 0


def test_poisoned_targets_never_reach_a_published_model():
    """Finite but absurd torques (1e30 Nm: the loss overflows) and inf: every such update is
    discarded, and no candidate is built from them."""
    cfg = OnlineConfig(batch_size=32, context=0, holdout_every=1000)
    learner = OnlineLearner(_model(), config=cfg)
    t, q, qd, tau = _stream(32 * 4)
    tau = tau.copy()
    tau[:64] = 1e30
    tau[64:96, 1] = -np.inf
    for k in range(len(t)):
        learner.add_sample(t[k], q[k], qd[k], tau[k])
    published = _state(learner.published)
    learner.train_pending()
    # Refused as windows, before training, replay and holdout: nothing is left to diverge on.
    assert learner.stats['windows_refused'] == 3 and learner.stats['updates'] == 1
    assert learner.stats['diverged_discarded'] == 0 and learner.pending() == 0
    assert _same(_state(learner.published), published)
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())


def _switched(head_rls, n_before=20, n_after=12, decades=0):
    """A learner fed n_before windows of one plant, then n_after of a heavier one (the
    inertia gain triples and an offset torque appears, as with a new payload). A fixed ridge
    (decades 0) unless told."""
    cfg = OnlineConfig(batch_size=64, context=32, learning_rate=0.01, holdout_every=4,
                       holdout_size=10, holdout_recent=2, head_rls=head_rls,
                       rls_ridge_decades=decades)
    learner = OnlineLearner(_model(), config=cfg)
    t, q, qd, tau = _stream(64 * (n_before + n_after))
    _, _, _, tau_heavy = _stream(64 * (n_before + n_after), gain=6.0)
    tau_heavy = tau_heavy + np.array([3.0, -2.0])
    for k in range(len(t)):
        learner.add_sample(t[k], q[k], qd[k], tau[k] if k < 64 * n_before else tau_heavy[k])
        learner.train_pending()
    return learner


def test_output_layer_refit_recovers_from_a_dynamics_change_in_a_few_windows():
    with_rls, without = _switched(True), _switched(False)
    assert with_rls.stats['rls_resets'] >= 1 and with_rls.stats['rls_discarded'] == 0
    assert without.stats['rls_updates'] == 0
    # Scored on the newest held-back windows, all after the change.
    new = with_rls.holdout_score(with_rls.model)
    assert new < 0.3 * with_rls.holdout_score(with_rls.published)
    assert new < 0.3 * without.holdout_score(without.model)
    cand = with_rls.candidate()
    assert cand is not None and all(torch.isfinite(p).all() for p in cand.parameters())


def test_chosen_ridge_still_recovers_from_a_dynamics_change():
    """The default: the ridge chosen window by window among 1..10^4 and the starting layer.
    After the change the starting layer predicts badly, so small ridges win and the fit
    recovers as with the fixed ridge."""
    chosen, without = _switched(True, decades=4), _switched(False)
    assert chosen._ridges == [1.0, 10.0, 100.0, 1000.0, 10000.0, float('inf')]
    new = chosen.holdout_score(chosen.model)
    assert new < 0.3 * chosen.holdout_score(chosen.published)
    assert new < 0.3 * without.holdout_score(without.model)
    assert chosen.rls_ridge_in_use <= 100.0


def test_chosen_ridge_keeps_the_starting_layer_where_it_predicts_best():
    """A model already right for its plant: the starting output layer (an infinite ridge)
    predicts new windows best, and once chosen the refit leaves the layer as it started
    (only the Adagrad step moves it). Each score is made before its window is learned."""
    learner = OnlineLearner(_model(), config=OnlineConfig(batch_size=32, context=0,
                                                          learning_rate=0.0))
    prior = learner._rls_prior.copy()
    rng = np.random.default_rng(0)
    hidden = prior.shape[0] - 1
    for _ in range(6):
        # Features and targets the starting layer fits exactly, plus a little noise a fit
        # with a small ridge chases.
        phi = np.hstack((rng.normal(size=(32, hidden)), np.ones((32, 1))))
        y = phi @ prior + 0.3 * rng.normal(size=(32, prior.shape[1]))
        ridge = learner._select_ridge(phi, y, learner._rls_r, learner._rls_z)
        learner._rls_r += phi.T @ phi
        learner._rls_z += phi.T @ y
    assert ridge == float('inf')
    assert np.array_equal(learner._ridge_solution(learner._rls_r, learner._rls_z, ridge), prior)
    # Targets of another layer (the plant changed): a fit wins over the starting layer.
    shifted = OnlineLearner(_model(), config=OnlineConfig(batch_size=32, context=0,
                                                          learning_rate=0.0))
    for _ in range(6):
        phi = np.hstack((rng.normal(size=(32, hidden)), np.ones((32, 1))))
        y = phi @ (prior + 0.5) + 0.3 * rng.normal(size=(32, prior.shape[1]))
        ridge = shifted._select_ridge(phi, y, shifted._rls_r, shifted._rls_z)
        shifted._rls_r += phi.T @ phi
        shifted._rls_z += phi.T @ y
    assert ridge < float('inf')


def test_a_non_finite_output_layer_fit_changes_nothing(monkeypatch):
    learner = _fed(OnlineConfig(batch_size=32, context=0, holdout_every=1000), 3)
    learner.train_pending(max_updates=1)
    assert learner.stats['rls_updates'] == 1
    monkeypatch.setattr(np.linalg, 'solve', lambda a, b: np.full(b.shape, np.nan))
    head = _state(learner.model.head)
    stats = (learner._rls_r.copy(), learner._rls_z.copy())
    assert learner.train_pending() == 2
    assert learner.stats['rls_discarded'] == 2 and learner.stats['rls_updates'] == 1
    assert learner.stats['updates'] == 3
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())
    assert np.array_equal(learner._rls_r, stats[0]) and np.array_equal(learner._rls_z, stats[1])
    # The Adagrad step still ran on the head; only the least-squares refit was skipped.
    assert not _same(_state(learner.model.head), head) or learner.config.learning_rate == 0


def test_trainer_params_validate_the_output_layer_fit():
    import pytest
    from invdyn_ros.core.params import ParamError, TrainerParams
    TrainerParams().validate()
    for bad in ({'rls_forgetting': 1.5}, {'rls_forgetting': 0.0}, {'rls_ridge': 0.0},
                {'rls_jump_factor': -1.0}, {'holdout_recent': -1}, {'head_rls': 'yes'},
                {'rls_ridge_decades': -1}, {'rls_ridge_decades': 9},
                {'rls_select_forgetting': 0.0}, {'rls_select_forgetting': 1.01},
                {'fallback_windows': -1}):
        with pytest.raises(ParamError):
            TrainerParams(**bad).validate()


# --- prequential: predict, then learn ---------------------------------------------------------

def _heavy_stream(n):
    """The _stream plant with a tripled inertia gain and an offset (a new payload)."""
    t, q, qd, tau = _stream(n, gain=6.0)
    return t, q, qd, tau + np.array([3.0, -2.0])


PREQ_CFG = OnlineConfig(batch_size=64, context=32, learning_rate=0.01, holdout_every=4,
                        holdout_size=10, holdout_recent=2)


def test_prequential_without_publication_is_the_frozen_predictor():
    model = _model()
    t, q, qd, tau = _heavy_stream(64 * 6)
    res = prequential(model, t, q, qd, tau, publish_every=10 ** 9, config=PREQ_CFG)
    frozen, valid = run_online(OnlinePredictor(model), t, q, qd)
    assert valid.all() and res.published == 0 and res.updates > 0
    np.testing.assert_array_equal(res.tau, frozen)


@pytest.mark.parametrize('fallback', [0, 4])
def test_prequential_never_predicts_from_its_own_or_later_torques(fallback):
    """Also with the fallback to the starting model, which scores windows before they are
    learned. On this short toy stream it falls back on small margins and can end on the
    starting model whatever the future held, so only without it must the future show."""
    model = _model()
    cfg = dataclasses.replace(PREQ_CFG, fallback_windows=fallback)
    t, q, qd, tau = _heavy_stream(64 * 12)
    base = prequential(model, t, q, qd, tau, publish_every=64, config=cfg)
    assert base.published >= 1          # models were swapped in, so learning took effect
    for k in (200, 455):
        changed = tau.copy()
        changed[k:] += 1.0              # a different future, from sample k on
        other = prequential(model, t, q, qd, changed, publish_every=64, config=cfg)
        np.testing.assert_array_equal(other.tau[:k + 1], base.tau[:k + 1])
        if not fallback:
            # ... which does change what comes later, once a model trained on it is published.
            assert np.abs(other.tau[k + 1:] - base.tau[k + 1:]).max() > 0.1


def _spoilt(fallback_windows):
    """A learner whose model in operation was spoilt (output layer scaled by 5): the starting
    model predicts the new windows better."""
    cfg = OnlineConfig(batch_size=32, context=16, holdout_every=1000,
                       fallback_windows=fallback_windows)
    learner = _fed(cfg, 5)
    with torch.no_grad():
        learner.published.head.weight.mul_(5.0)
        learner.published.head.bias.add_(5.0)
    learner.train_pending()
    return learner


def test_fallback_publishes_the_starting_model_again_and_restarts_from_it():
    learner = _spoilt(3)
    start = _state(learner._start)
    assert learner.stats['updates'] == 5 and len(learner._fresh) == 3
    assert all(a > b for a, b in learner._fresh)
    model = learner.candidate()
    assert model is not None and learner.stats['fallbacks'] == 1
    assert learner.stats['published'] == 1 and learner.model_version == 1
    assert _same(_state(model), start) and _same(_state(learner.model), start)
    assert not learner._rls_r.any() and not learner._rls_z.any()
    new, old = learner.last_scores
    assert new < old
    # The starting model in operation: the same scores, never due again by itself.
    assert not learner._fallback_due()


def test_no_fallback_when_off():
    learner = _spoilt(0)
    assert learner._start is None and not learner._fallback_due()
    assert learner.stats['fallbacks'] == 0


def test_prequential_learning_beats_the_frozen_model_after_a_dynamics_change():
    model = _model()
    n = 64 * 40
    t, q, qd, tau = _heavy_stream(n)
    res = prequential(model, t, q, qd, tau, publish_every=128, config=PREQ_CFG)
    frozen, _ = run_online(OnlinePredictor(model), t, q, qd)
    late = slice(n // 2, n)
    err_online = np.mean((res.tau[late] - tau[late]) ** 2)
    err_frozen = np.mean((frozen[late] - tau[late]) ** 2)
    # update_s also times an update that diverged and was discarded (none here).
    assert res.published >= 3 and len(res.update_s) >= res.updates > 0
    assert err_online < 0.5 * err_frozen
    # The starting model is left as it was.
    again, _ = run_online(OnlinePredictor(model), t, q, qd)
    np.testing.assert_array_equal(again, frozen)


def test_prequential_refuses_bad_arguments():
    model = _model()
    t, q, qd, tau = _stream(100)
    with pytest.raises(ValueError, match='publish_every'):
        prequential(model, t, q, qd, tau, publish_every=0)
    with pytest.raises(ValueError, match=r'\(T, 2\)'):
        prequential(model, t, q[:, :1], qd, tau, publish_every=10)
    with pytest.raises(ValueError, match=r'\(T, 2\)'):
        prequential(model, t[:-1], q, qd, tau, publish_every=10)
