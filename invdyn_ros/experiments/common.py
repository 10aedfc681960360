"""Shared pieces of the robot experiments (simulated LWR sizes, Fig. 8, Baxter, tuning).

Every model is trained and scored through the package's own code paths, so a figure here is
what ``invdyn train`` / ``invdyn eval`` would give:

* inputs: :func:`invdyn_ros.core.training.prepare` (joints by name, causal acceleration
  estimate, ``x = [q, qd, qdd]`` (T, 3d) [rad, rad/s, rad/s^2], ``y = tau`` (T, d) [Nm]);
* LSTM: :func:`invdyn_ros.core.training.train_lstm` (truncated BPTT, the tuned
  hyperparameters of :mod:`.hparams`), predicted by
  :func:`~invdyn_ros.core.training.predict_sequence` from the zero state with the state carried
  through each trajectory (equal to the predictor's step-by-step path; tested in
  test_training.py);
* GP: :class:`invdyn_ros.core.gp.GpInverseDynamics` (exact, or sparse variational beyond what
  exact inference can hold) on the same prepared inputs;
* naive: the paper's baseline for robots, the previous measured torque ``tau[k-1]``.

Scoring. Every model is scored on the same samples: each test trajectory from its second
sample on (the naive baseline has no previous torque at the first), pooled over trajectories:
MSE [Nm^2] (the paper's eq. 3, mean over joints and samples) and normalised MSE (per-joint MSE
divided by the variance of the true torque over the scored samples, then averaged).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import os
from pathlib import Path
import time
from typing import Optional, Sequence

import numpy as np

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.online_learning import prequential_trajectories, PrequentialResult
from invdyn_ros.core.params import TrainerParams
from invdyn_ros.core.training import Prepared, mse_scores, predict_sequence
from invdyn_ros.core.trajectory import Trajectory
from invdyn_ros.experiments.hparams import LstmHparams

#: First sample of each test trajectory that is scored (the naive baseline needs tau[k-1]).
SCORE_FROM = 1
MODEL_LABELS = {'naive': 'naive (previous torque)', 'gp': 'GP', 'lstm': 'LSTM'}
MODEL_COLOURS = {'naive': 'tab:gray', 'gp': 'tab:orange', 'lstm': 'tab:blue', 'true': 'k'}


def naive_predictions(data: Sequence[Prepared]) -> list[np.ndarray]:
    """The naive baseline for each trajectory: tau_hat[k] = tau[k-1] (T, d) [Nm]; row 0 (no
    previous torque) repeats tau[0] and is never scored."""
    return [np.concatenate([d.y[:1], d.y[:-1]]) for d in data]


def lstm_predictions(model, data: Sequence[Prepared]) -> list[np.ndarray]:
    """LSTM torques (T, d) [Nm] per trajectory, from the zero state, state carried."""
    return [predict_sequence(model, d.x) for d in data]


def with_base(preds: Sequence[np.ndarray], data: Sequence[Prepared]) -> list[np.ndarray]:
    """Torque predictions (T, d) [Nm] from a model's outputs on ``data``
    (:meth:`Prepared.published`): a 'residual_rbd' target's nominal term added back; the
    full torque as it is."""
    return [d.published(p)[0] for p, d in zip(preds, data)]


def online_predictions(model, trajs: Sequence[Trajectory], hp: LstmHparams, nominal,
                       seed: int, adapt: str = 'network') -> list[PrequentialResult]:
    """The offline-trained ``model`` learning online during each trajectory, as the trainer
    node would beside the robot (:func:`~invdyn_ros.core.online_learning.
    prequential_trajectories`: every sample predicted before its torque is learned), each
    trajectory starting again from ``model``, with the trainer node's default settings
    (:class:`~invdyn_ros.core.params.TrainerParams`, see :func:`online_protocol`), untuned
    for the data; ``adapt`` 'network' (the weights) or 'payload' (the nominal model's flange
    load; a 'residual_rbd' model)."""
    return prequential_trajectories(model, trajs, TrainerParams.from_dict({'adapt': adapt}),
                                    hp.accel_config(), hp.target, nominal, seed=seed)


def online_protocol(rate_hz: float) -> str:
    """How :func:`online_predictions` runs, for the reports (trajectories at ``rate_hz``)."""
    tp = TrainerParams()
    return ('each sample is predicted by the model in operation before its measured torque '
            'is handed to the online learner (prequential: no prediction has seen its own '
            'torque or a later one), each test run starting again from the offline model. '
            'The learner runs with the trainer node\'s default settings, untuned for this set: '
            f'windows of {tp.batch_size} samples ({tp.batch_size / rate_hz:g} s here), '
            'Adagrad, replay, the output layer refitted by recursive least squares with its '
            'ridge chosen window by window (among '
            f'{tp.rls_ridge:g} x 10^0..10^{tp.rls_ridge_decades} and the starting layer, by '
            'which predicted the recent windows best before they were learned), and a new '
            'model published only when it scores no worse than the one in operation on '
            'held-back windows (adapt payload: better), checked every '
            f'{tp.publish_period_s:g} s; adapt network falls back to the starting model when '
            'the model in operation predicted the newest '
            f'{tp.fallback_windows} windows, each before it was learned, worse than it.')


def online_summary(results: Sequence[PrequentialResult], data: Sequence[Prepared]) -> dict:
    """Scores (as :func:`score`) of :func:`online_predictions`' torques on ``data``, over the
    samples that got a torque, with the updates run, models published, scored samples without
    output (``no_output``) and the update time [ms] (median, 99th percentile)."""
    update_s = [u for r in results for u in r.update_s]
    # Scored where the predictor gave a torque (a refused sample has none): the offline
    # model's rows are all scored, so a refusal is counted (no_output), never hidden.
    y, p = _scored_rows([r.tau for r in results], data)
    valid = np.all(np.isfinite(p), axis=1)
    return {**mse_scores(y[valid], p[valid]), 'samples': int(valid.sum()),
            'updates': sum(r.updates for r in results),
            'published': sum(r.published for r in results),
            'no_output': int((~valid).sum()),
            'update_ms_p50': float(np.median(update_s) * 1e3) if update_s else None,
            'update_ms_p99': float(np.percentile(update_s, 99) * 1e3) if update_s else None}


def gp_predictions(gp, data: Sequence[Prepared]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """GP predictive means and standard deviations (incl. noise) (T, d) [Nm] per trajectory."""
    means, stds = [], []
    for d in data:
        m, s = gp.predict(d.x)
        means.append(m)
        stds.append(s)
    return means, stds


def score(preds: Sequence[np.ndarray], data: Sequence[Prepared]) -> dict:
    """MSE [Nm^2] and nMSE, per joint and mean, of ``preds`` on the scored samples of ``data``
    (each trajectory from :data:`SCORE_FROM` on); see :func:`~invdyn_ros.core.training.
    mse_scores`. Adds ``samples`` (scored samples)."""
    y, p = _scored_rows(preds, data)
    out = mse_scores(y, p)
    out['samples'] = int(len(y))
    return out


def _scored_rows(preds: Sequence[np.ndarray], data: Sequence[Prepared]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(torques, predictions) (N, d) [Nm] of the scored samples of ``data`` (each trajectory
    from :data:`SCORE_FROM` on); ValueError when the shapes differ."""
    y = np.concatenate([d.y[SCORE_FROM:] for d in data])
    p = np.concatenate([np.asarray(pr)[SCORE_FROM:] for pr in preds])
    if p.shape != y.shape:
        raise ValueError(f'predictions {p.shape} do not match the torques {y.shape}')
    return y, p


def stack(data: Sequence[Prepared]) -> tuple[np.ndarray, np.ndarray]:
    """All samples of ``data`` as one (n, 3d) input and (n, d) torque array."""
    return np.concatenate([d.x for d in data]), np.concatenate([d.y for d in data])


@dataclass(frozen=True)
class GpPlan:
    """How the GP baseline is fitted at one training-set size.

    Attributes:
        kind: 'exact' or 'sparse'.
        points: training samples the GP fits on (exact: a random subset when the set is larger).
        iters: optimiser iterations (exact: L-BFGS iterations after GPyTorch's Adam warm-up,
            or Adam steps) or minibatch steps (sparse).
        inducing: inducing points per joint (sparse).
        optimizer: exact only: 'lbfgs' or 'adam' (cheaper per fit: one marginal-likelihood
            evaluation per step, no warm-up or line search).
        warm_start_points: sparse only: hyperparameters start from an exact GP on this many
            random samples.
    """

    kind: str
    points: int
    iters: int
    inducing: int = 0
    optimizer: str = 'lbfgs'
    warm_start_points: int = 500

    def describe(self) -> str:
        if self.kind == 'exact':
            how = 'L-BFGS iterations' if self.optimizer == 'lbfgs' else 'Adam steps'
            return f'exact GP, {self.points} points, {self.iters} {how}'
        return (f'sparse variational GP, {self.inducing} inducing points, {self.iters} '
                f'minibatch steps over {self.points} points (warm start: exact GP on '
                f'{self.warm_start_points})')


def fit_gp(data: Sequence[Prepared], joint_names: Sequence[str], rate_hz: float,
           plan: GpPlan, seed: int, threads: int):
    """Fit the GP baseline on the prepared training data (same inputs as the LSTM).

    Returns the fitted :class:`~invdyn_ros.core.gp.GpInverseDynamics` and info: ``fit_s``
    (wall seconds of the fit), ``n`` (samples used), ``plan`` (text), ``noise_std_nm``.
    """
    from invdyn_ros.core.gp import GpConfig, GpInverseDynamics
    x, y = stack(data)
    rng = np.random.default_rng(seed)
    if plan.kind == 'exact' and len(x) > plan.points:
        # A random subset: neighbouring samples are nearly duplicates, a random one spreads
        # the points over the whole training set.
        keep = np.sort(rng.choice(len(x), plan.points, replace=False))
        x, y = x[keep], y[keep]
    kw = dict(joint_names=tuple(joint_names), rate_hz=float(rate_hz), kind=plan.kind,
              training_iters=plan.iters, seed=seed, threads=threads)
    if plan.kind == 'exact':
        kw['max_exact_points'] = max(len(x), 1)
        kw['optimizer'] = plan.optimizer
    else:
        kw['num_inducing'] = min(plan.inducing, len(x))
        kw['warm_start_points'] = min(plan.warm_start_points, len(x))
    gp = GpInverseDynamics(GpConfig(**kw))
    t0 = time.perf_counter()
    info = gp.fit(x, y)
    fit_s = time.perf_counter() - t0
    return gp, {'fit_s': fit_s, 'n': int(info['n']), 'plan': plan.describe(),
                'noise_std_nm': list(map(float, info.get('noise_std_nm', [])))}


def accel_from_dict(d: Optional[dict]) -> AccelConfig:
    return AccelConfig.from_dict(d or {}).validate()


def write_text(path: Path, text: str) -> None:
    """Write then rename: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=1, default=_json_default) + '\n')


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f'not JSON serialisable: {type(o).__name__}')


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt
