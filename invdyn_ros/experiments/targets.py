"""Learning target comparison: full torque vs residuals over a nominal rigid-body model.

``invdyn experiment targets --out DIR [--quick]``: for each target
(:data:`~invdyn_ros.core.targets.TARGETS`) and a growing number of training samples, train the
stateful LSTM and score the torque it stands for on held-out runs, step by step as the
predictor runs it, beside the nominal model alone. Answers: which target is most accurate, and
how many samples each needs to beat the nominal model.

* Simulated KUKA LWR 4+ (joints 1-5): training runs of ``invdyn data sim`` (payloads 200/300/400
  ml cycling, seeds 0..), each training size taking the same share of every run (so every
  payload is in every size); a separate run for early stopping; test runs with other seeds.
  Nominal model: the packaged URDF + armature (``--urdf lwr4plus``), joints 6-7 held at the
  simulator's home pose; it misses friction, the flask and its sloshing liquid, noise.
* Real Baxter (Valencia-Vidal et al. 2023, left arm, 7 joints, 100 Hz): only target ``full``
  is trained here. Baxter's URDF parameters explain its measured torques poorly, so its
  residual target needs the nominal model identified on the training data first
  (``invdyn train --urdf baxter_left --identify``); the paper experiment's Baxter comparison
  does that (:mod:`invdyn_ros.experiments.baxter`).

Scores: MSE [Nm^2] of the published torque (``full``: the output; ``residual_rbd``: nominal
RNEA + residual; ``residual_gravity``: the residual, scored against measured minus nominal
gravity, which is the same error as gravity + residual against the measured torque), so the
three MSEs are errors of the same joint torque and compare directly. Nominal alone: RNEA on the
same acceleration estimate (``nominal_rbd``) and gravity alone (``nominal_gravity``).

Also measures the nominal term's cost on this machine (``pin.rnea`` / gravity per call, and the
predictor's per-sample step with and without it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import json
import math
import os
from pathlib import Path
import time
from typing import Callable, Optional, Sequence, Union

import numpy as np

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5
from invdyn_ros.core.targets import TARGETS
from invdyn_ros.core.trajectory import Trajectory

J = LWR_JOINTS_1_TO_5
PAYLOADS_ML = (200.0, 300.0, 400.0)
LABELS = {'full': 'full torque', 'residual_rbd': 'residual over RNEA',
          'residual_gravity': 'residual over gravity', 'nominal_rbd': 'nominal RNEA alone',
          'nominal_gravity': 'nominal gravity alone'}
BAXTER_REL = 'baxter_valencia2023/Dataset'


@dataclass
class TargetSizes:
    """How much of everything (see :data:`FULL`, :data:`QUICK`)."""

    lwr_runs: int           # training runs
    lwr_run_s: float        # seconds per training run [s]
    lwr_test_runs: int
    lwr_test_s: float
    lwr_sizes: tuple[int, ...]      # training samples per model
    baxter_sizes: tuple[int, ...]
    hidden: int
    epoch_budget: int       # sample passes per model: epochs = budget // samples, clipped
    min_epochs: int
    max_epochs: int


FULL = TargetSizes(lwr_runs=6, lwr_run_s=30.0, lwr_test_runs=2, lwr_test_s=20.0,
                   lwr_sizes=(1000, 4000, 16000, 64000, 180000),
                   baxter_sizes=(1000, 4000, 16000, 67000), hidden=32, epoch_budget=300000,
                   min_epochs=3, max_epochs=40)
QUICK = TargetSizes(lwr_runs=3, lwr_run_s=2.0, lwr_test_runs=1, lwr_test_s=1.5,
                    lwr_sizes=(300, 1500), baxter_sizes=(300, 1500), hidden=8,
                    epoch_budget=3000, min_epochs=1, max_epochs=2)


def subset(trajs: Sequence[Trajectory], n: int) -> list[Trajectory]:
    """The first ``n / len(trajs)`` samples of every trajectory (all of them if fewer)."""
    per = max(8, int(math.ceil(n / len(trajs))))
    out = []
    for tr in trajs:
        m = min(per, len(tr))
        out.append(Trajectory(q=tr.q[:m], qd=tr.qd[:m], tau=tr.tau[:m],
                              joint_names=tr.joint_names, t=tr.t[:m], rate_hz=tr.rate_hz,
                              source=f'{tr.source}[:{m}]'))
    return out


def _train_and_score(train: list[Trajectory], val: list[Trajectory], test: list[Trajectory],
                     names: Sequence[str], rate_hz: float, target: str, nominal,
                     sizes: TargetSizes, seed: int) -> dict:
    from invdyn_ros.core.evaluate import predict_trajectories, reference_torques
    from invdyn_ros.core.lstm import LstmConfig
    from invdyn_ros.core.training import mse_scores, TrainConfig, train_lstm
    n = sum(len(t) for t in train)
    epochs = int(min(sizes.max_epochs, max(sizes.min_epochs, sizes.epoch_budget // n)))
    seg = int(min(2000, min(len(t) for t in train)))
    accel = AccelConfig()
    mcfg = LstmConfig(joint_names=tuple(names), rate_hz=rate_hz, hidden_size=sizes.hidden)
    tcfg = TrainConfig(epochs=epochs, batch=16, window=min(100, seg), segment=seg,
                       burn_in=min(8, seg - 1), lr=0.05, threads=1, patience=5, seed=seed)
    res = train_lstm(train, mcfg, tcfg, accel, val_trajs=val, target=target, nominal=nominal)
    pred = np.concatenate(predict_trajectories(res.model, accel, test, target, nominal))
    y, _ = reference_torques(test, names, accel, target, nominal)
    ok = np.all(np.isfinite(pred), axis=1)
    s = mse_scores(y[ok], pred[ok])
    return {'samples': n, 'epochs': len(res.history), 'mse': s['mse'], 'nmse': s['nmse'],
            'mse_per_joint': s['mse_per_joint'], 'train_s': round(res.wall_s, 1)}


def nominal_scores(test: list[Trajectory], nominal) -> dict:
    """Nominal RNEA (same acceleration estimate) and gravity alone vs the measured torque."""
    from invdyn_ros.core.evaluate import reference_torques
    from invdyn_ros.core.training import mse_scores
    accel = AccelConfig()
    tau, rbd = reference_torques(test, J, accel, 'residual_rbd', nominal)
    res_g, _ = reference_torques(test, J, accel, 'residual_gravity', nominal)
    return {'nominal_rbd': mse_scores(tau, rbd)['mse'],
            'nominal_gravity': mse_scores(tau, tau - res_g)['mse']}


def samples_to_beat(curve: list[dict], bar: float) -> Optional[int]:
    """Fewest training samples in the curve whose MSE is below ``bar`` (None: none)."""
    for point in curve:
        if point['mse'] < bar:
            return point['samples']
    return None


def lwr_comparison(sizes: TargetSizes, log: Callable[[str], None]) -> dict:
    from invdyn_ros.core.lwr_sim import simulate
    from invdyn_ros.core.nominal import lwr4plus_spec, NominalModel
    t0 = time.perf_counter()
    train = [simulate(sizes.lwr_run_s, payload_ml=PAYLOADS_ML[i % 3], seed=i)
             for i in range(sizes.lwr_runs)]
    val = [simulate(max(sizes.lwr_test_s / 2, 1.0), payload_ml=300.0, seed=400)]
    test = [simulate(sizes.lwr_test_s, payload_ml=PAYLOADS_ML[i % 3], seed=500 + i)
            for i in range(sizes.lwr_test_runs)]
    log(f'  LWR: simulated {len(train)} x {sizes.lwr_run_s:g} s training, '
        f'{len(test)} x {sizes.lwr_test_s:g} s test runs ({time.perf_counter() - t0:.0f} s)')
    spec = lwr4plus_spec(J)
    nominal = NominalModel(spec)
    base = nominal_scores(test, nominal)
    log(f'  LWR nominal alone: RNEA MSE {base["nominal_rbd"]:.4g}, gravity alone '
        f'{base["nominal_gravity"]:.4g} Nm^2')
    total = sum(len(t) for t in train)
    curves: dict = {}
    for target in TARGETS:
        curves[target] = []
        for n in sizes.lwr_sizes:
            if n > total:
                continue
            r = _train_and_score(subset(train, n), val, test, J, 1000.0, target,
                                 nominal if target != 'full' else None, sizes, seed=0)
            curves[target].append(r)
            log(f'  LWR {target:<17} {r["samples"]:>7} samples: MSE {r["mse"]:.4g} Nm^2 '
                f'({r["epochs"]} epochs, {r["train_s"]:.0f} s)')
    beat = {t: {'nominal_rbd': samples_to_beat(c, base['nominal_rbd']),
                'nominal_gravity': samples_to_beat(c, base['nominal_gravity'])}
            for t, c in curves.items()}
    return {'robot': 'simulated KUKA LWR 4+ (joints 1-5)', 'joint_names': list(J),
            'rate_hz': 1000.0, 'nominal': base, 'curves': curves,
            'samples_to_beat': beat, 'nominal_source': spec.source,
            'test_samples': int(sum(len(t) for t in test))}


def baxter_comparison(data_root: Path, sizes: TargetSizes, log: Callable[[str], None]
                      ) -> Optional[dict]:
    from invdyn_ros.core.datasets import BAXTER_JOINTS, load_trajectories
    root = data_root / BAXTER_REL
    if not (root / 'Training').is_dir() or not (root / 'Test').is_dir():
        log(f'  Baxter: data not found at {root}; skipped')
        return None
    train_all = load_trajectories([root / 'Training'], BAXTER_JOINTS)
    test = load_trajectories([root / 'Test'], BAXTER_JOINTS)
    # the last training run is held out for early stopping
    train, val = train_all[:-1], train_all[-1:]
    total = sum(len(t) for t in train)
    curve = []
    for n in sizes.baxter_sizes:
        r = _train_and_score(subset(train, min(n, total)), val, test, BAXTER_JOINTS,
                             float(train[0].rate_hz), 'full', None, sizes, seed=0)
        curve.append(r)
        log(f'  Baxter full {r["samples"]:>7} samples: MSE {r["mse"]:.4g} Nm^2, nMSE '
            f'{r["nmse"]:.3f} ({r["epochs"]} epochs, {r["train_s"]:.0f} s)')
        if n >= total:
            break
    return {'robot': 'Rethink Baxter, left arm (real, Valencia-Vidal et al. 2023)',
            'joint_names': list(BAXTER_JOINTS), 'rate_hz': float(train[0].rate_hz),
            'curves': {'full': curve}, 'nominal': None,
            'note': 'only target full here; the residual over an identified nominal model is '
                    'in the paper experiment\'s Baxter comparison',
            'test_samples': int(sum(len(t) for t in test)), 'data': str(root)}


def nominal_cost(repeats: int = 5, calls: int = 20000) -> dict:
    """Per-call cost [us] of the nominal term and of the predictor step with and without it
    (median of ``repeats`` timings of ``calls`` calls)."""
    import torch
    from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics
    from invdyn_ros.core.nominal import lwr4plus_spec, NominalModel
    from invdyn_ros.core.online import OnlinePredictor
    nominal = NominalModel(lwr4plus_spec(J))
    rng = np.random.default_rng(0)
    q, qd, qdd = (rng.normal(size=len(J)) * 0.3 for _ in range(3))

    def timed(fn) -> float:
        for _ in range(1000):
            fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            ts.append((time.perf_counter() - t0) / calls * 1e6)
        return float(np.median(ts))

    torch.manual_seed(0)
    model = LstmInverseDynamics(LstmConfig(joint_names=J, rate_hz=1000.0, hidden_size=64))
    out = {'rnea_us': timed(lambda: nominal.rnea(q, qd, qdd)),
           'gravity_us': timed(lambda: nominal.gravity(q))}
    for target in ('full', 'residual_rbd'):
        pred = OnlinePredictor(model, AccelConfig(), target=target,
                               nominal=nominal if target != 'full' else None)
        k = [0]

        def step() -> None:
            k[0] += 1
            pred.update(k[0] * 1e-3, q, qd)
        out[f'predictor_step_{target}_us'] = timed(step)
    out['note'] = ('median of repeated timings on this machine; predictor step: acceleration '
                   'estimate + 1x64 LSTM step (+ RNEA for residual_rbd), no ROS')
    return out


def plot_curves(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    robots = [k for k in ('lwr', 'baxter') if result.get(k)]
    fig, axes = plt.subplots(1, len(robots), figsize=(6.5 * len(robots), 4.6), squeeze=False)
    for ax, key in zip(axes[0], robots):
        r = result[key]
        for i, (target, curve) in enumerate(r['curves'].items()):
            if curve:
                ax.loglog([p['samples'] for p in curve], [p['mse'] for p in curve], '-o',
                          color=f'C{i}', label=f'LSTM, {LABELS[target]}')
        if r.get('nominal'):
            for name, style in (('nominal_rbd', '--'), ('nominal_gravity', ':')):
                ax.axhline(r['nominal'][name], color='k', ls=style, lw=1.0, label=LABELS[name])
        ax.set_xlabel('training samples')
        ax.set_ylabel('test MSE of the joint torque [Nm$^2$]')
        ax.set_title(r['robot'], fontsize=10)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle('Learning targets: torque error vs training samples')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = ['# Learning targets: full torque vs residual over a nominal model', '',
             f'Command: `{result["command"]}` ({result["wall_s"]:.0f} s). Test MSE [Nm^2] of '
             'the joint torque each target stands for, step by step with state carried (as '
             'the predictor runs it); residual_gravity is scored against measured minus '
             'nominal gravity, the same error as gravity + residual against the measured '
             'torque, so the columns compare directly.', '']
    for key in ('lwr', 'baxter'):
        r = result.get(key)
        if not r:
            continue
        lines += [f'## {r["robot"]}', '']
        if r.get('note'):
            lines += [r['note'] + '.', '']
        targets = [t for t, c in r['curves'].items() if c]
        ns = sorted({p['samples'] for t in targets for p in r['curves'][t]})
        lines += ['| training samples | ' + ' | '.join(LABELS[t] for t in targets) + ' |',
                  '|---|' + '---|' * len(targets)]
        for n in ns:
            cells = []
            for t in targets:
                p = [x for x in r['curves'][t] if x['samples'] == n]
                cells.append(f'{p[0]["mse"]:.4g}' if p else '-')
            lines.append(f'| {n} | ' + ' | '.join(cells) + ' |')
        if r.get('nominal'):
            lines += ['', f'Nominal alone: RNEA {r["nominal"]["nominal_rbd"]:.4g} Nm^2, gravity '
                      f'alone {r["nominal"]["nominal_gravity"]:.4g} Nm^2 ({r["nominal_source"]}).',
                      '', '| target | samples to beat nominal RNEA | samples to beat gravity '
                      'alone |', '|---|---|---|']
            for t, b in r['samples_to_beat'].items():
                lines.append(f'| {LABELS[t]} | {b["nominal_rbd"] or "not within the sizes"} | '
                             f'{b["nominal_gravity"] or "not within the sizes"} |')
        lines.append('')
    c = result['nominal_cost']
    lines += ['## Cost of the nominal term', '',
              f'`pin.rnea` for joints 1-5 of the LWR (7-DoF model, preallocated arrays): '
              f'{c["rnea_us"]:.2f} us per call; gravity: {c["gravity_us"]:.2f} us. Predictor '
              f'step (acceleration estimate + 1x64 LSTM): {c["predictor_step_full_us"]:.1f} us '
              f'for target full, {c["predictor_step_residual_rbd_us"]:.1f} us for residual_rbd '
              '(this machine, no ROS).', '', 'Figure: `targets.png`.', '']
    return '\n'.join(lines)


def run_targets(out_dir: Union[str, Path], quick: bool = False,
                data_root: Optional[Path] = None, command: str = '',
                log: Callable[[str], None] = print) -> dict:
    """Run the comparison; writes ``targets.json``, ``targets.md`` and ``targets.png``."""
    import torch
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if quick else FULL
    t0 = time.perf_counter()
    if data_root is None:
        data_root = Path(os.environ.get('INVDYN_SHARED_DATA',
                                        Path(__file__).resolve().parents[2].parent / 'shared'
                                        / 'data'))
    log(f'[1/3] simulated LWR ({"quick" if quick else "full"} sizes)')
    lwr = lwr_comparison(sizes, log)
    log('[2/3] real Baxter (target full only: no Baxter URDF)')
    baxter = baxter_comparison(Path(data_root), sizes, log)
    log('[3/3] nominal term cost')
    cost = nominal_cost(repeats=3 if quick else 5, calls=2000 if quick else 20000)
    log(f'  rnea {cost["rnea_us"]:.2f} us, gravity {cost["gravity_us"]:.2f} us per call; '
        f'predictor step full {cost["predictor_step_full_us"]:.1f} us, residual_rbd '
        f'{cost["predictor_step_residual_rbd_us"]:.1f} us')
    result = {'quick': quick, 'command': command or f'invdyn experiment targets --out {out}'
              + (' --quick' if quick else ''), 'sizes': asdict(sizes), 'lwr': lwr,
              'baxter': baxter, 'nominal_cost': cost}
    result['wall_s'] = time.perf_counter() - t0
    plot_curves(result, out / 'targets.png')
    for name, text in (('targets.json', json.dumps(result, indent=2)),
                       ('targets.md', markdown(result))):
        tmp = out / f'.{name}.tmp{os.getpid()}'
        tmp.write_text(text)
        os.replace(tmp, out / name)
    for t, b in lwr['samples_to_beat'].items():
        log(f'  LWR {t}: beats nominal RNEA from {b["nominal_rbd"]} samples, gravity alone '
            f'from {b["nominal_gravity"]}')
    log(f'  wrote {out}/targets.md, targets.json, targets.png ({result["wall_s"]:.0f} s)')
    return result
