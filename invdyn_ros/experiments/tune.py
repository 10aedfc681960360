"""``invdyn tune``: the documented hyperparameter search behind the paper experiments' LSTM.

A seeded random search over :data:`SPACE` (layers, hidden size, truncated-BPTT window and
segment, batch, learning rate and optimiser, weight decay, and the acceleration filter whose
estimate is an input) and, where the data set has a nominal rigid-body model (the LWR's, as it
is; Baxter's, its parameters identified on each split's training runs), over what the network
learns (:data:`TARGETS`: the whole torque, or the residual over the nominal model, which is
added back to every prediction, so both are scored on the torque), plus the
incumbent (the current file's choice, or the package defaults) as trial 0. Every trial
trains on the loss of its data set's metric (:data:`LOSS`: plain MSE for the LWR, whose goals
are in Nm^2; normalised for Baxter, whose goal is nMSE): how joints weigh follows from what
is scored, it is not searched. The number of epochs is searched by validation inside each
trial: every trial trains up to ``max_epochs`` with a validation pass after each epoch (early
stop after ``patience`` epochs without improvement), and its epochs are the best validation
epoch.

Validation is by trajectory and never touches a test run:

* ``baxter``: ``folds``-fold cross-validation over the Baxter set's *Training* runs (runs
  assigned to folds by a seeded permutation); a trial's score is the mean over folds of the
  best validation nMSE (the metric of the Baxter goal), its epochs the mean of the folds' best
  epochs. The Test runs are not loaded.
* ``lwr``: simulated runs of their own seeds (:data:`LWR_TUNE_SEED` and up; the experiment's
  training and test runs use others): three training runs (200/300/400 ml) of
  ``lwr_train_samples`` in all and three validation runs; the score is the validation MSE
  [Nm^2] (the metric of the LWR goals).

The best trial (lowest score) is written into the hyperparameter file
(:data:`invdyn_ros.experiments.hparams.DEFAULT_PATH` by default) with a record of the search;
every trial goes to ``tune_<dataset>.json`` and ``tune_<dataset>.md`` in ``--out``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
import datetime
import math
import os
from pathlib import Path
import time
from typing import Sequence, Union

import numpy as np

from invdyn_ros.core.trajectory import Trajectory
from invdyn_ros.experiments.common import write_json, write_text
from invdyn_ros.experiments.hparams import (
    DATASETS, DEFAULT_PATH, HPARAM_TARGETS, HparamError, LstmHparams, load_hparams,
    NOMINAL_DATASETS, save_hparams)

#: The search space: discrete choices, and log-uniform learning-rate ranges per optimiser.
SPACE: dict = {
    'num_layers': [1, 2],
    'hidden_size': [32, 64, 128],
    'window': [32, 64, 128],
    'segment': [256, 512, 1024],
    'batch': [8, 16, 32],
    'optimizer': ['adagrad', 'adam'],
    'lr': {'adagrad': [0.01, 0.2], 'adam': [0.001, 0.01]},
    'weight_decay': [0.0, 1e-4, 1e-3, 3e-3],
    'jerk_psd': [1.0, 10.0, 100.0],
    'qd_noise_std': [0.005, 0.03],
}
#: The targets searched per data set: a residual only where the data set has a nominal model
#: (hparams.NOMINAL_DATASETS, which the hyperparameter file is checked against).
TARGETS: dict = {d: list(HPARAM_TARGETS) if d in NOMINAL_DATASETS else ['full']
                 for d in DATASETS}
#: Fixed in every trial: global gradient-norm clip and burn-in [samples].
FIXED = {'grad_clip': 1.0, 'burn_in': 8}
METRIC = {'baxter': 'nmse', 'lwr': 'mse'}
#: The training loss of each data set's trials (TrainConfig.loss): the one its METRIC scores.
LOSS = {d: 'mse' if m == 'mse' else 'normalised' for d, m in METRIC.items()}
#: Seeds of the LWR tuning runs: training + payload index, validation + payload index.
LWR_TUNE_SEED = 4000
LWR_TUNE_VAL_SEED = 5000
#: torch threads (see :data:`invdyn_ros.experiments.lwr_sizes.THREADS`).
THREADS = 1


@dataclass(frozen=True)
class TuneSettings:
    """Budget of one search.

    Attributes:
        trials: trials including the incumbent (trial 0).
        max_epochs: most epochs per trial (and fold).
        patience: epochs without validation improvement before a trial (fold) stops.
        folds: cross-validation folds (baxter).
        lwr_train_samples: LWR training samples (three runs) at 100 Hz.
        lwr_val_seconds: length of each of the three LWR validation runs [s].
        max_runs: use at most this many Baxter training runs (0: all); tests only.
        seed: seeds the sampling of trials, the folds and the models.
    """

    trials: int = 12
    max_epochs: int = 40
    patience: int = 8
    folds: int = 3
    lwr_train_samples: int = 30000
    lwr_val_seconds: float = 20.0
    max_runs: int = 0
    seed: int = 0

    def validate(self) -> 'TuneSettings':
        for name in ('trials', 'max_epochs', 'folds', 'lwr_train_samples'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f'{name} must be a positive integer, got {v!r}')
        for name in ('patience', 'max_runs', 'seed'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f'{name} must be a non-negative integer, got {v!r}')
        if self.folds < 2 and self.folds != 1:
            raise ValueError('folds must be >= 1')
        if not (math.isfinite(self.lwr_val_seconds) and self.lwr_val_seconds > 0.1):
            raise ValueError(f'lwr_val_seconds must be > 0.1, got {self.lwr_val_seconds!r}')
        return self


FULL_TUNE = TuneSettings()
QUICK_TUNE = TuneSettings(trials=4, max_epochs=12, patience=4, folds=2,
                          lwr_train_samples=10000, lwr_val_seconds=10.0)


def space_of(dataset: str) -> dict:
    """The search space of ``dataset``: :data:`SPACE` and its :data:`TARGETS`."""
    return {**SPACE, 'target': list(TARGETS[dataset])}


def sample_trial(rng: np.random.Generator, loss: str = 'normalised',
                 targets: Sequence[str] = ('full',)) -> LstmHparams:
    """One random point of :data:`SPACE` x ``targets`` (epochs are set by the trial's
    validation), trained on ``loss``."""
    pick = {k: v[int(rng.integers(len(v)))] for k, v in SPACE.items() if isinstance(v, list)}
    lo, hi = SPACE['lr'][pick['optimizer']]
    lr = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    pick['segment'] = max(pick['segment'], pick['window'])
    # No draw where there is no choice: Baxter's searches sample what they sampled before.
    target = targets[int(rng.integers(len(targets)))] if len(targets) > 1 else targets[0]
    return LstmHparams(lr=float(f'{lr:.3g}'), epochs=1, loss=loss, target=target, **FIXED,
                       **pick).validate()


def incumbent(path: Path, dataset: str) -> tuple[LstmHparams, str]:
    """Trial 0: the file's current choice for ``dataset``, else the package defaults."""
    try:
        hp, _ = load_hparams(path)
        return hp[dataset], f'current choice in {path}'
    except HparamError:
        pass
    try:
        import yaml
        doc = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
        if isinstance(doc, dict) and isinstance(doc.get(dataset), dict):
            return (LstmHparams.from_dict(doc[dataset].get('lstm', {}), dataset),
                    f'current choice in {path}')
    except (HparamError, ValueError, OSError):
        pass
    return LstmHparams(), 'package defaults'


# --------------------------------------------------------------------------------------------
# Data (never a test run)


#: The Baxter set's Dataset folder (Training/, Test/) under the shared robot data folder:
#: ``$INVDYN_SHARED_DATA``, else ``../shared/data`` beside the repository.
BAXTER_SUBDIR = Path('baxter_valencia2023') / 'Dataset'
BAXTER_ROOT_DEFAULT = Path(os.environ.get(
    'INVDYN_SHARED_DATA', Path(__file__).resolve().parents[3] / 'shared' / 'data')) / BAXTER_SUBDIR


def baxter_training_runs(root: Union[str, Path]) -> list[Trajectory]:
    """The Baxter set's Training runs (7 joints, 100 Hz), from ``root`` (its Dataset folder)."""
    from invdyn_ros.core.datasets import BAXTER_JOINTS, load_trajectories
    from invdyn_ros.core.trajectory import DataError
    folder = Path(root) / 'Training'
    if not folder.is_dir():
        raise DataError(str(folder), 'Baxter Training folder not found (give --baxter-root, '
                        'the folder holding Training/ and Test/)')
    return load_trajectories([folder], BAXTER_JOINTS)


def folds_of(n_runs: int, folds: int, seed: int) -> list[list[int]]:
    """Run indices per fold: a seeded permutation dealt round-robin."""
    if folds > n_runs:
        raise ValueError(f'{folds} folds need at least {folds} runs, got {n_runs}')
    order = np.random.default_rng(seed).permutation(n_runs)
    return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]


def _splits(dataset: str, settings: TuneSettings, baxter_root: Union[str, Path]
            ) -> tuple[list[tuple[list[Trajectory], list[Trajectory]]], str, tuple, float]:
    """[(train, validation)] trajectory splits, a description, the joints, the rate [Hz]."""
    if dataset == 'baxter':
        from invdyn_ros.core.datasets import BAXTER_JOINTS, BAXTER_RATE_HZ
        runs = baxter_training_runs(baxter_root)
        if settings.max_runs:
            runs = runs[:settings.max_runs]
        folds = folds_of(len(runs), settings.folds, settings.seed)
        splits = [([r for i, r in enumerate(runs) if i not in f], [runs[i] for i in f])
                  for f in folds]
        names = [[Path(runs[i].source).name for i in f] for f in folds]
        how = (f'{settings.folds}-fold cross-validation by run over the {len(runs)} Training '
               f'runs (folds: {names}); Test runs never loaded')
        return splits, how, BAXTER_JOINTS, BAXTER_RATE_HZ
    from invdyn_ros.experiments import lwr_sizes as lwr
    per_run = int(math.ceil(settings.lwr_train_samples / len(lwr.PAYLOADS_ML)))
    train = lwr.simulate_runs((per_run + 1) / lwr.RATE_HZ, LWR_TUNE_SEED)
    train = lwr.training_subset(train, settings.lwr_train_samples)
    val = lwr.simulate_runs(settings.lwr_val_seconds, LWR_TUNE_VAL_SEED)
    how = (f'simulated LWR: training {settings.lwr_train_samples} samples (3 runs, seeds '
           f'{LWR_TUNE_SEED}..{LWR_TUNE_SEED + 2}), validation 3 runs of '
           f'{settings.lwr_val_seconds:g} s (seeds {LWR_TUNE_VAL_SEED}..'
           f'{LWR_TUNE_VAL_SEED + 2}), at {lwr.RATE_HZ:g} Hz; the experiment\'s test runs '
           f'(seeds {lwr.TEST_SEED}..) are never simulated here')
    return [(train, val)], how, lwr.JOINTS, lwr.RATE_HZ


# --------------------------------------------------------------------------------------------
# Search


def run_trial(hp: LstmHparams, splits, joints, rate_hz: float, settings: TuneSettings,
              metric: str, dataset: str = 'lwr') -> dict:
    """Train ``hp`` on each split with a validation pass per epoch; returns the score (mean
    over splits of the best validation ``metric``), the epochs (mean best epoch, rounded) and
    per-split figures."""
    from invdyn_ros.core.training import train_lstm
    t0 = time.perf_counter()
    per_split = []
    for k, (train, val) in enumerate(splits):
        cfg = hp.train_config(seed=settings.seed + k, threads=THREADS,
                              patience=settings.patience, epochs=settings.max_epochs)
        try:
            # A residual target is scored on the torque (the nominal term added back); a
            # nominal model identified from data (Baxter) sees the split's training runs only.
            res = train_lstm(train, hp.model_config(joints, rate_hz), cfg, hp.accel_config(),
                             val_trajs=val, target=hp.target,
                             nominal=hp.nominal_model(joints, dataset, train))
        except FloatingPointError as e:
            return {'score': math.inf, 'epochs': 0, 'diverged': str(e),
                    'wall_s': time.perf_counter() - t0, 'splits': per_split}
        curve = [h[f'val_{metric}'] for h in res.history]
        best = int(np.argmin(curve))
        per_split.append({'best_epoch': best + 1, 'best': float(curve[best]),
                          'curve': [float(v) for v in curve], 'epochs_run': len(curve),
                          'wall_s': res.wall_s})
    return {'score': float(np.mean([s['best'] for s in per_split])),
            'epochs': max(1, int(round(np.mean([s['best_epoch'] for s in per_split])))),
            'wall_s': time.perf_counter() - t0, 'splits': per_split}


def run_tune(dataset: str, out_dir: Union[str, Path], settings: TuneSettings = FULL_TUNE,
             hparams_path: Union[str, Path, None] = None,
             baxter_root: Union[str, Path] = BAXTER_ROOT_DEFAULT, quick: bool = False,
             verbose: bool = True) -> dict:
    """Search ``dataset``'s hyperparameters, write the results and the chosen ones.

    Returns the content of ``tune_<dataset>.json``: ``space``, ``settings``, ``validation``,
    ``metric``, ``trials`` (each: hyperparameters, score, epochs, per split), ``best`` (index
    and hyperparameters), ``wall_s``.
    """
    if dataset not in DATASETS:
        raise ValueError(f'dataset must be one of {list(DATASETS)}, got {dataset!r}')
    settings.validate()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(hparams_path) if hparams_path is not None else DEFAULT_PATH
    metric = METRIC[dataset]
    splits, how, joints, rate = _splits(dataset, settings, baxter_root)
    rng = np.random.default_rng(settings.seed)
    start, start_from = incumbent(path, dataset)
    start = replace(start, loss=LOSS[dataset])
    candidates = [start] + [sample_trial(rng, LOSS[dataset], TARGETS[dataset])
                            for _ in range(settings.trials - 1)]
    trials = []
    for i, hp in enumerate(candidates):
        r = run_trial(hp, splits, joints, rate, settings, metric, dataset)
        trials.append({'trial': i, 'hparams': asdict(hp), **r})
        if verbose:
            print(f'[tune {dataset}] trial {i + 1}/{len(candidates)}: val {metric} '
                  f'{r["score"]:.4g} at {r["epochs"]} epochs ({r["wall_s"]:.0f} s): '
                  f'{replace(hp, epochs=max(r["epochs"], 1)).describe()}', flush=True)
    best_i = int(np.argmin([t['score'] for t in trials]))
    if not math.isfinite(trials[best_i]['score']):
        raise FloatingPointError('every trial diverged; nothing written')
    chosen = replace(candidates[best_i], epochs=trials[best_i]['epochs'])
    result = {
        'dataset': dataset, 'quick': bool(quick), 'metric': f'validation {metric}',
        'validation': how, 'space': space_of(dataset), 'fixed': FIXED,
        'epochs_search': f'up to {settings.max_epochs} epochs per trial, early stop after '
                         f'{settings.patience} without improvement; epochs = best epoch',
        'settings': asdict(settings), 'incumbent_from': start_from, 'trials': trials,
        'best': {'trial': best_i, 'score': trials[best_i]['score'], 'hparams': asdict(chosen)},
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
    }
    result['wall_s'] = time.perf_counter() - t0
    write_json(out / f'tune_{dataset}.json', result)
    write_text(out / f'tune_{dataset}.md', tune_markdown(result))
    record = {'method': f'random search, {len(trials)} trials (trial 0: {start_from}), seed '
                        f'{settings.seed}' + (' (QUICK budget)' if quick else ''),
              'space': space_of(dataset), 'validation': how, 'metric': result['metric'],
              'epochs': result['epochs_search'], 'best_trial': best_i,
              'best_score': float(trials[best_i]['score']),
              'trials_scores': [float(t['score']) for t in trials],
              'results': _shown_path(out / f'tune_{dataset}.json'),
              'date': result['date'], 'wall_s': round(result['wall_s'], 1)}
    save_hparams(path, dataset, chosen, record)
    result['hparams_file'] = str(path)
    if verbose:
        print(f'[tune {dataset}] chose trial {best_i} (val {metric} '
              f'{trials[best_i]["score"]:.4g}): {chosen.describe()}; wrote {path}, '
              f'{out / f"tune_{dataset}.json"} ({result["wall_s"]:.0f} s)')
    return result


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (the record stays valid in any
    clone), else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(DEFAULT_PATH.parents[1]))
    except ValueError:
        return str(path)


def tune_markdown(result: dict) -> str:
    lines = [f'# Hyperparameter search: {result["dataset"]}', '',
             f'- validation: {result["validation"]}',
             f'- metric: {result["metric"]} (lower is better); epochs: '
             f'{result["epochs_search"]}',
             f'- space: {result["space"]}; fixed: {result["fixed"]}',
             f'- trial 0: {result["incumbent_from"]}; wall time {result["wall_s"]:.0f} s'
             + (' (QUICK budget)' if result['quick'] else ''), '',
             '| trial | score | epochs | target | layers x hidden | window / segment / batch '
             '| optimizer | lr | weight decay | jerk PSD | qd noise | wall [s] |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for t in sorted(result['trials'], key=lambda t: t['score']):
        h = t['hparams']
        mark = ' **(chosen)**' if t['trial'] == result['best']['trial'] else ''
        lines.append(f'| {t["trial"]}{mark} | {t["score"]:.4g} | {t["epochs"]} | '
                     f'{h.get("target", "full")} | '
                     f'{h["num_layers"]} x {h["hidden_size"]} | {h["window"]} / {h["segment"]} '
                     f'/ {h["batch"]} | {h["optimizer"]} | {h["lr"]:.3g} | {h["weight_decay"]:g}'
                     f' | {h["jerk_psd"]:g} | {h["qd_noise_std"]:g} | {t["wall_s"]:.0f} |')
    return '\n'.join(lines) + '\n'


def search_summary(search: dict) -> str:
    """One paragraph for the paper report from a hyperparameter file's search record."""
    if not search:
        return 'no search record in the hyperparameter file'
    return (f'{search.get("method", "?")}; validation: {search.get("validation", "?")}; '
            f'metric {search.get("metric", "?")}, best '
            f'{search.get("best_score", float("nan")):.4g}'
            f' (trial {search.get("best_trial", "?")}); {search.get("epochs", "")}; '
            f'results: {search.get("results", "?")} ({search.get("date", "?")})')


def parse_datasets(text: str) -> Sequence[str]:
    """'all' or one data set name -> the data sets to tune."""
    return list(DATASETS) if text == 'all' else [text]
