"""Closed-loop torque control of the simulated LWR with learned feedforward.

``invdyn experiment control --out DIR [--quick]``: does a learned inverse-dynamics feedforward
let the arm track better with lower feedback gains?

Plant and controller. :class:`~invdyn_ros.core.lwr_stream.LwrStream` in controller ``'pd'``:
the simulated KUKA LWR 4+ (LuGre friction, a flask of sloshing liquid at the flange, sensor
noise) at 1 kHz, a PD law on the reference (stiffness scaled by the nominal inertia's
diagonal; natural frequency 25 rad/s at nominal gains, ``gain_scale`` 0.25 halves it) plus the
feedforward torque of joints 1-5 (joints 6-7 are held by PD alone in every condition). The
reference is the simulator's minimum-jerk ``'reach'`` or ``'push'`` motion.

Feedforward conditions (per motion, payload 200/300/400 ml, nominal and reduced gains):

1. ``pd``: none.
2. ``nominal``: the nominal rigid-body model (the packaged URDF + armature, what the simulator
   knows without friction, payload and slosh), ``RNEA(q_des, qd_des, qdd_des)`` with the exact
   desired acceleration.
3. ``gp``: exact GP (GPyTorch), residual over the nominal model (target ``residual_rbd``).
4. ``lstm_full`` / ``lstm_residual``: the stateful LSTM trained offline on recorded data with
   target ``full`` / ``residual_rbd`` (published: nominal + residual).
5. ``online``: the LSTM (``residual_rbd``) learning online from a cold start (fresh LSTM
   weights and a zero output layer: it starts as the nominal feedforward) with the trainer
   node's defaults (:class:`~invdyn_ros.core.online_learning.OnlineLearner`: windows of 128
   samples, Adagrad, replay, a recursive-least-squares refit of the output layer with its
   ridge chosen window by window, gating on the newest held-out windows, the fallback to the
   starting model; a candidate every 2 s of simulated time).

Every learned feedforward is computed from the reference stream (t, q_des, qd_des) by
:class:`~invdyn_ros.core.online.OnlinePredictor`, exactly as the predictor node computes it from
the ``lwr_sim`` node's reference topic (acceleration from the causal Kalman estimator), not from
the measured state: a feedforward of the measured motion feeds the motion back through a
lagging acceleration estimate. The GP is static, so its feedforward for the whole reference is
computed in one batch (equal to per-sample prediction); its per-sample latency is measured
separately with ``predict_one``.

Payload switch: one long run per gain level starts at 300 ml and switches to
:data:`SWITCH_TO_ML` (beyond the 200-400 ml of the training data: the offline model is now
wrong) and compares the offline LSTM frozen with the same LSTM learning online, in the two
ways the trainer can (``adapt``): its weights (``online``) or the flange payload of its nominal
model (``payload``, :mod:`invdyn_ros.core.payload`). Recovery time:
from the switch until the tracking error's 1-s moving RMS is back within
:data:`RECOVERY_FACTOR` of its level in the seconds before the switch (and stays there for
:data:`RECOVERY_HOLD_S`).

The in-process loop is deterministic (seeded) and idealised in one respect: an online update
runs as soon as its window is complete (the trainer node runs it in a worker thread; the
measured update time is reported beside the 128 ms window it must fit). The ROS graph closed
loop (lwr_sim + predictor nodes over DDS) is exercised by ``make demo`` and a test.

Tracking error: true (noise-free) joint position minus desired [rad]; RMS over time per joint
and over joints 1-5. Goals (measured, never asserted): at reduced gains, LSTM feedforward
tracking RMS >= 5x lower than PD alone and lower than nominal feedforward; online learning
recovering from the payload switch within 10 s of simulated time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import json
import math
import os
from pathlib import Path
import time
from typing import Callable, Optional, Union

import numpy as np

from invdyn_ros.core.accel import AccelConfig, AccelEstimator
from invdyn_ros.core.lwr_sim import JOINT_NAMES, LwrSimConfig, simulate
from invdyn_ros.core.lwr_stream import LwrStream
from invdyn_ros.core.params import LWR_JOINTS_1_TO_5, LWR_TORQUE_LIMITS_1_TO_5

J = LWR_JOINTS_1_TO_5
#: Columns of joints 1-5 among the simulator's 7.
COLS = np.array([JOINT_NAMES.index(n) for n in J])
RATE_HZ = 1000.0
PAYLOADS_ML = (200.0, 300.0, 400.0)
MOTIONS = ('reach', 'push')
#: (label, gain_scale): nominal PD gains and a quarter of them.
GAINS = (('nominal', 1.0), ('reduced', 0.25))
CONDITIONS = ('pd', 'nominal', 'gp', 'lstm_full', 'lstm_residual', 'online')
LABELS = {'pd': 'PD alone', 'nominal': 'PD + nominal RBD', 'gp': 'PD + GP (residual)',
          'lstm_full': 'PD + LSTM (full)', 'lstm_residual': 'PD + LSTM (residual)',
          'online': 'PD + LSTM online (cold start)', 'frozen': 'PD + LSTM offline, frozen'}
#: Labels in the payload-switch runs, where 'online' starts from the offline model.
SWITCH_LABELS = {'nominal': LABELS['nominal'], 'frozen': LABELS['frozen'],
                 'online': 'PD + LSTM offline, learning online',
                 'payload': 'PD + LSTM offline, payload estimated online'}
#: Conditions of the payload-switch runs; 'online' adapts the network ('adapt: network'),
#: 'payload' the nominal model's flange payload ('adapt: payload').
SWITCH_CONDITIONS = ('nominal', 'frozen', 'online', 'payload')
#: The learners whose recovery is a goal, and how the goal names them.
SWITCH_LEARNERS = {'online': 'adapt: network', 'payload': 'adapt: payload'}
SWITCH_START_ML = 300.0
#: Payload after the switch [ml]: outside the training data's 200-400 ml.
SWITCH_TO_ML = 800.0
#: Recovered: 1-s RMS within this factor of the pre-switch level ...
RECOVERY_FACTOR = 1.5
#: ... and staying there this long [s].
RECOVERY_HOLD_S = 2.0
RECOVERY_GOAL_S = 10.0
REDUCTION_GOAL = 5.0
#: Seeds of the closed-loop runs start here (training data uses 0..).
RUN_SEED = 1000
TRAIN_SEED = 0
ERROR_BIN_S = 0.5


@dataclass
class ControlSizes:
    """How much of everything (see :data:`FULL`, :data:`QUICK`)."""

    train_s: float          # seconds per training run [s]
    train_runs: int         # runs, payloads cycling through PAYLOADS_ML
    epochs: int
    hidden: int
    gp_points: int
    run_s: float            # seconds per closed-loop run [s]
    switch_s: float         # payload-switch run length [s]
    switch_at_s: float      # switch time [s]
    payloads: tuple[float, ...] = PAYLOADS_ML
    motions: tuple[str, ...] = MOTIONS


FULL = ControlSizes(train_s=30.0, train_runs=6, epochs=10, hidden=48, gp_points=600,
                    run_s=10.0, switch_s=40.0, switch_at_s=12.0)
QUICK = ControlSizes(train_s=3.0, train_runs=3, epochs=2, hidden=16, gp_points=60,
                     run_s=0.8, switch_s=3.0, switch_at_s=1.5, payloads=(300.0,))


# ------------------------------------------------------------------------------- models
@dataclass
class Models:
    """What the conditions need, trained once."""

    nominal: object             # NominalModel (residual_rbd base)
    spec: object                # its NominalSpec
    lstm_full: object           # LstmInverseDynamics, target 'full'
    lstm_residual: object       # LstmInverseDynamics, target 'residual_rbd'
    gp: object                  # GpInverseDynamics, target 'residual_rbd'
    accel: AccelConfig
    info: dict


def train_models(sizes: ControlSizes, out: Path, log: Callable[[str], None]) -> Models:
    """Simulate training data (computed-torque tracking, as ``invdyn data sim`` records) and
    fit the LSTMs and the GP; checkpoints are written to ``out``."""
    import torch
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.gp import GpConfig, train_gp
    from invdyn_ros.core.lstm import LstmConfig
    from invdyn_ros.core.nominal import lwr4plus_spec, NominalModel
    from invdyn_ros.core.training import TrainConfig, target_meta, train_lstm, training_meta
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    runs = [simulate(sizes.train_s, payload_ml=PAYLOADS_ML[i % len(PAYLOADS_ML)],
                     seed=TRAIN_SEED + i, motion='mixed') for i in range(sizes.train_runs)]
    log(f'  simulated {len(runs)} training runs x {sizes.train_s:g} s '
        f'({time.perf_counter() - t0:.1f} s)')
    spec = lwr4plus_spec(J)
    nominal = NominalModel(spec)
    accel = AccelConfig()
    mcfg = LstmConfig(joint_names=J, rate_hz=RATE_HZ, hidden_size=sizes.hidden)
    tcfg = TrainConfig(epochs=sizes.epochs, batch=16, window=100,
                       segment=min(2000, int(sizes.train_s * RATE_HZ) // 2), lr=0.05,
                       threads=1, patience=4)
    info: dict = {'train_runs': len(runs), 'train_s': sizes.train_s,
                  'train_samples': sum(len(r) for r in runs)}
    models = {}
    for target in ('full', 'residual_rbd'):
        res = train_lstm(runs, mcfg, tcfg, accel, target=target,
                         nominal=nominal if target != 'full' else None)
        save_checkpoint(out / f'lstm_{target}.npz', res.model,
                        training_meta(res, tcfg, accel, [r.source for r in runs], target,
                                      spec if target != 'full' else None))
        best = res.history[res.best_epoch - 1] if res.history else {}
        info[f'lstm_{target}'] = {'val_mse': best.get('val_mse'), 'epochs': len(res.history),
                                  'train_s': round(res.wall_s, 1)}
        log(f'  LSTM {target}: val MSE {best.get("val_mse", float("nan")):.4g} Nm^2, '
            f'{len(res.history)} epochs, {res.wall_s:.0f} s')
        models[target] = res.model
    gcfg = GpConfig(joint_names=J, rate_hz=RATE_HZ, kind='exact',
                    max_exact_points=sizes.gp_points, subsample=True, threads=1)
    gp, ginfo = train_gp(runs, gcfg, accel, target='residual_rbd', nominal=nominal)
    save_checkpoint(out / 'gp_residual_rbd.npz', gp,
                    {**target_meta('residual_rbd', spec), 'accel_config': accel.to_dict()})
    info['gp'] = {'points': gp.num_train, 'fit_s': round(ginfo['fit_time_s'], 1)}
    log(f'  GP (residual): {gp.num_train} points, fit {ginfo["fit_time_s"]:.1f} s')
    return Models(nominal, spec, models['full'], models['residual_rbd'], gp, accel, info)


def cold_start(models: Models, seed: int = 0):
    """A fresh residual LSTM whose output layer is zero: it publishes the nominal model alone
    until it learns (normalisation borrowed from the offline model)."""
    import torch
    from invdyn_ros.core.lstm import LstmInverseDynamics
    torch.manual_seed(seed)
    m = LstmInverseDynamics(models.lstm_residual.config, models.lstm_residual.normalizer)
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.zero_()
        m.y_mean.zero_()
    return m.eval()


# --------------------------------------------------------------------------- closed loop
@dataclass
class RunResult:
    """One closed-loop run: errors (T, 7) [rad], feedforward compute times [s], and more."""

    err: np.ndarray
    ff_time: np.ndarray
    #: measured torque minus feedforward, i.e. the feedback (PD) torque (T, 5) [Nm]
    fb_torque: Optional[np.ndarray] = None
    learner: Optional[dict] = None


def _reference(stream: LwrStream, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    refs = [stream.reference_at(k) for k in range(n)]
    return tuple(np.array([r[i] for r in refs]) for i in range(3))


def _gp_feedforward(models: Models, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
    """GP feedforward for a whole reference (T, 5) [Nm]: the same causal acceleration estimate
    the LSTM gets, the residual plus the nominal RNEA on it."""
    est = AccelEstimator(len(J), models.accel)
    qdd = np.empty_like(q)
    for k in range(len(q)):
        qdd[k], _ = est.update(k / RATE_HZ, q[k], qd[k])
    x = np.concatenate((q, qd, qdd), axis=1)
    return models.gp.predict(x)[0] + models.nominal.terms('residual_rbd', q, qd, qdd)


def run_closed_loop(models: Optional[Models], condition: str, motion: str, payload: float,
                    gain: float, seconds: float, seed: int,
                    switch: Optional[tuple[float, float]] = None,
                    start_model: object = None, online_lr: Optional[float] = None
                    ) -> RunResult:
    """One run of ``condition`` (see module doc; 'frozen' runs ``start_model`` without
    learning, 'online' learns from ``start_model`` or a cold start). ``switch`` = (time [s],
    payload [ml]); ``online_lr``: the online learning rate (None: the trainer node's default)."""
    from invdyn_ros.core.online import OnlinePredictor
    stream = LwrStream(LwrSimConfig(payload_ml=payload, seed=seed), motion=motion,
                       controller='pd', gain_scale=gain)
    n = int(round(seconds * RATE_HZ))
    q_des, qd_des, qdd_des = _reference(stream, n)
    ff_all = None
    predictor = learner = None
    limits = np.array(LWR_TORQUE_LIMITS_1_TO_5)
    if condition == 'gp':
        ff_all = np.clip(_gp_feedforward(models, q_des[:, COLS], qd_des[:, COLS]),
                         -limits, limits)
    elif condition in ('lstm_full', 'lstm_residual', 'frozen', 'online', 'payload'):
        model = {'lstm_full': models.lstm_full, 'lstm_residual': models.lstm_residual}.get(
            condition, start_model)
        if condition == 'online' and model is None:
            model = cold_start(models)
        target = 'full' if condition == 'lstm_full' else 'residual_rbd'
        predictor = OnlinePredictor(model, models.accel, limits, target=target,
                                    nominal=models.nominal if target != 'full' else None)
        if condition in ('online', 'payload'):
            from invdyn_ros.core.online_learning import learn_step, OnlineConfig, OnlineLearner
            from invdyn_ros.core.params import TrainerParams
            tp = TrainerParams()
            overrides = {'seed': seed, 'adapt': 'payload' if condition == 'payload'
                         else 'network'}
            if online_lr is not None:
                overrides['learning_rate'] = online_lr
            learner = OnlineLearner(model, models.accel,
                                    OnlineConfig.from_params(tp, **overrides),
                                    target='residual_rbd', nominal=models.nominal)
            publish_every = int(round(tp.publish_period_s * RATE_HZ))
    err = np.empty((n, 7))
    ff_time = np.zeros(n)
    fb = np.full((n, len(J)), np.nan) if predictor is not None else None
    ff7 = np.zeros(7)
    update_s: list[float] = []
    swaps = 0
    switch_k = int(round(switch[0] * RATE_HZ)) if switch else -1
    for k in range(n):
        if k == switch_k:
            stream.set_payload(switch[1])
        t = k / RATE_HZ
        t0 = time.perf_counter()
        if condition == 'pd':
            ff = None
        elif condition == 'nominal':
            ff = models.nominal.rnea(q_des[k, COLS], qd_des[k, COLS], qdd_des[k, COLS])
        elif ff_all is not None:
            ff = ff_all[k]
        else:
            ff = predictor.update(t, q_des[k, COLS], qd_des[k, COLS]).tau
        ff_time[k] = time.perf_counter() - t0
        err[k] = stream.true_position() - q_des[k]
        if ff is not None:
            ff7[COLS] = ff
            stream.step(ff7)
        else:
            stream.step()
        if predictor is not None or learner is not None:
            _, q_m, qd_m, tau_m = stream.measurement()
            if ff is not None and fb is not None:
                fb[k] = tau_m[COLS] - ff
            if learner is not None:
                swaps += learn_step(learner, predictor, k, t, q_m[COLS], qd_m[COLS],
                                    tau_m[COLS], publish_every, update_s)
    info = None
    if learner is not None:
        info = {'updates': int(learner.stats['updates'] + learner.stats['payload_updates']),
                'published': swaps, 'adapt': learner.config.adapt,
                'payload_resets': int(learner.stats['payload_resets']),
                'payload_mass_kg': None if learner.payload_estimate is None
                else float(learner.payload_estimate[0]),
                'update_ms_p50': float(np.median(update_s) * 1e3) if update_s else None,
                'update_ms_p99': float(np.percentile(update_s, 99) * 1e3) if update_s
                else None}
    return RunResult(err, ff_time, fb, info)


def rms(err: np.ndarray, axis: Optional[int] = None) -> np.ndarray:
    return np.sqrt(np.mean(err ** 2, axis=axis))


def recovery_time(t: np.ndarray, err: np.ndarray, switch_s: float) -> Optional[float]:
    """Seconds from the switch until the 1-s moving RMS tracking error (joints 1-5) is within
    RECOVERY_FACTOR of its mean over the seconds before the switch and stays so for
    RECOVERY_HOLD_S (None if never, within the run)."""
    e2 = np.mean(err[:, COLS] ** 2, axis=1)
    w = int(RATE_HZ)
    moving = np.sqrt(np.convolve(e2, np.ones(w) / w, mode='full')[:len(e2)])
    before = (t >= max(switch_s - 5.0, 1.0)) & (t < switch_s)
    if not before.any():
        before = t < switch_s
    level = RECOVERY_FACTOR * float(np.sqrt(np.mean(e2[before])))
    hold = int(RECOVERY_HOLD_S * RATE_HZ)
    ok = moving <= level
    after = np.flatnonzero(t >= switch_s)
    for i in after:
        if ok[i] and (i + hold <= len(ok)) and ok[i:i + hold].all():
            return float(t[i] - switch_s)
    return None


# -------------------------------------------------------------------------------- report
def _pct(values: np.ndarray) -> dict:
    return {'p50_us': float(np.percentile(values, 50) * 1e6),
            'p99_us': float(np.percentile(values, 99) * 1e6)}


def gp_latency(models: Models, n: int = 300) -> dict:
    """Per-sample GP feedforward latency (``predict_one`` + the nominal RNEA) [us]."""
    rng = np.random.default_rng(0)
    x = models.gp.normalizer.x_mean + rng.standard_normal((n, 3 * len(J))) * \
        models.gp.normalizer.x_std
    d = len(J)
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        models.gp.predict_one(x[i])
        models.nominal.rnea(x[i, :d], x[i, d:2 * d], x[i, 2 * d:])
        times[i] = time.perf_counter() - t0
    return _pct(times)


def run_table(models: Models, sizes: ControlSizes, conditions: tuple[str, ...],
              log: Callable[[str], None]) -> tuple[list[dict], dict]:
    """Every (motion, payload, gains, condition) run; rows of RMS errors and the traces kept
    for the plots (payload 300 ml, or the first)."""
    rows, traces = [], {}
    plot_payload = 300.0 if 300.0 in sizes.payloads else sizes.payloads[0]
    for mi, motion in enumerate(sizes.motions):
        for pi, payload in enumerate(sizes.payloads):
            seed = RUN_SEED + 10 * mi + pi
            for gname, gain in GAINS:
                for cond in conditions:
                    t0 = time.perf_counter()
                    r = run_closed_loop(models, cond, motion, payload, gain, sizes.run_s, seed)
                    per_joint = rms(r.err[:, COLS], axis=0)
                    row = {'motion': motion, 'payload_ml': payload, 'gains': gname,
                           'gain_scale': gain, 'condition': cond,
                           'rms_rad_per_joint': per_joint.tolist(),
                           'rms_rad': float(rms(r.err[:, COLS])),
                           'max_abs_rad': float(np.max(np.abs(r.err[:, COLS]))),
                           'ff_compute': _pct(r.ff_time) if cond != 'pd' else None,
                           'feedback_rms_nm': (float(np.sqrt(np.nanmean(r.fb_torque ** 2)))
                                               if r.fb_torque is not None else None),
                           'online': r.learner, 'wall_s': round(time.perf_counter() - t0, 2)}
                    rows.append(row)
                    if payload == plot_payload:
                        traces[(motion, gname, cond)] = r.err
                    log(f'  {motion:<5} {payload:>4.0f} ml {gname:<7} {LABELS[cond]:<30} '
                        f'RMS {row["rms_rad"] * 1e3:8.3f} mrad ({row["wall_s"]:.1f} s)')
    return rows, traces


def summarise(rows: list[dict], conditions: tuple[str, ...]) -> dict:
    """Mean over motions and payloads of the overall and per-joint RMS, per gains and
    condition, plus the reductions against PD alone and nominal feedforward."""
    out: dict = {}
    for gname, _ in GAINS:
        g = {}
        for cond in conditions:
            sel = [r for r in rows if r['gains'] == gname and r['condition'] == cond]
            if not sel:
                continue
            g[cond] = {'rms_rad': float(np.mean([r['rms_rad'] for r in sel])),
                       'rms_rad_per_joint': np.mean([r['rms_rad_per_joint'] for r in sel],
                                                    axis=0).tolist(),
                       'runs': len(sel)}
        for cond, v in g.items():
            if 'pd' in g:
                v['reduction_vs_pd'] = g['pd']['rms_rad'] / v['rms_rad']
            if 'nominal' in g:
                v['reduction_vs_nominal'] = g['nominal']['rms_rad'] / v['rms_rad']
        out[gname] = g
    return out


def goals(summary: dict, switch: dict) -> list[dict]:
    red = summary.get('reduced', {})
    out = []
    for cond in ('lstm_residual', 'lstm_full'):
        if cond in red and 'reduction_vs_pd' in red[cond]:
            v = red[cond]
            out.append({'goal': f'{LABELS[cond]}: >= {REDUCTION_GOAL:g}x lower tracking RMS '
                        'than PD alone at reduced gains',
                        'measured': f'{v["reduction_vs_pd"]:.2f}x',
                        'met': bool(v['reduction_vs_pd'] >= REDUCTION_GOAL)})
            if 'reduction_vs_nominal' in v:
                out.append({'goal': f'{LABELS[cond]}: lower tracking RMS than nominal RBD '
                            'feedforward at reduced gains',
                            'measured': f'{v["reduction_vs_nominal"]:.2f}x lower',
                            'met': bool(v['reduction_vs_nominal'] > 1.0)})
    for gname, s in switch.items():
        for cond, how in SWITCH_LEARNERS.items():
            rec = s.get('recovery_s', {}).get(cond)
            out.append({'goal': f'online learning ({how}) recovers from the payload switch '
                        f'within {RECOVERY_GOAL_S:g} s ({gname} gains)',
                        'measured': 'not within the run' if rec is None else f'{rec:.1f} s',
                        'met': bool(rec is not None and rec <= RECOVERY_GOAL_S)})
    return out


def run_switch(models: Models, sizes: ControlSizes, log: Callable[[str], None]
               ) -> tuple[dict, dict]:
    """Payload switch SWITCH_START_ML -> SWITCH_TO_ML, offline LSTM frozen vs learning online
    (plus nominal feedforward for scale), per gain level."""
    out, traces = {}, {}
    t = np.arange(int(round(sizes.switch_s * RATE_HZ))) / RATE_HZ
    for gname, gain in GAINS:
        res = {}
        for cond in SWITCH_CONDITIONS:
            t0 = time.perf_counter()
            r = run_closed_loop(models, cond, 'push', SWITCH_START_ML, gain, sizes.switch_s,
                                RUN_SEED + 500, switch=(sizes.switch_at_s, SWITCH_TO_ML),
                                start_model=models.lstm_residual)
            res[cond] = r
            traces[(gname, cond)] = r
            log(f'  switch {gname:<7} {SWITCH_LABELS[cond]:<34} '
                f'({time.perf_counter() - t0:.1f} s)')
        before = t < sizes.switch_at_s
        after = t >= sizes.switch_at_s
        out[gname] = {
            'rms_rad_before': {c: float(rms(r.err[before][:, COLS])) for c, r in res.items()},
            'rms_rad_after': {c: float(rms(r.err[after][:, COLS])) for c, r in res.items()},
            'recovery_s': {c: recovery_time(t, r.err, sizes.switch_at_s)
                           for c, r in res.items()},
            'online': res['online'].learner, 'payload': res['payload'].learner}
    return out, traces


def plot_tracking(traces: dict, motions: tuple[str, ...], conditions: tuple[str, ...],
                  path: Path, payload: float) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(motions), 1, figsize=(10, 3.6 * len(motions)), squeeze=False)
    for ax, motion in zip(axes[:, 0], motions):
        for i, cond in enumerate(conditions):
            err = traces.get((motion, 'reduced', cond))
            if err is None:
                continue
            t = np.arange(len(err)) / RATE_HZ
            ax.semilogy(t, np.linalg.norm(err[:, COLS], axis=1) * 1e3, lw=0.8,
                        color=f'C{i}', label=LABELS[cond])
        ax.set_title(f'{motion} motion, {payload:g} ml, reduced gains (x0.25)')
        ax.set_xlabel('time [s]')
        ax.set_ylabel('|q - q_des| joints 1-5 [mrad]')
        ax.grid(True, which='both', alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc='upper right')
    fig.suptitle('Closed-loop tracking error on the simulated LWR 4+')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _binned(err: np.ndarray, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    w = int(bin_s * RATE_HZ)
    n = len(err) // w
    e = err[:n * w, COLS].reshape(n, w, -1)
    return (np.arange(n) + 0.5) * bin_s, np.sqrt(np.mean(e ** 2, axis=(1, 2)))


def plot_switch(traces: dict, switch: dict, sizes: ControlSizes, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(GAINS), figsize=(12, 7), sharex=True, squeeze=False)
    colors = {'nominal': 'C1', 'frozen': 'C0', 'online': 'C2', 'payload': 'C3'}
    for j, (gname, _) in enumerate(GAINS):
        ax, ax2 = axes[0, j], axes[1, j]
        for cond in SWITCH_CONDITIONS:
            r = traces.get((gname, cond))
            if r is None:
                continue
            t, e = _binned(r.err, ERROR_BIN_S)
            rec = switch[gname]['recovery_s'].get(cond)
            lab = SWITCH_LABELS[cond] + (f' (recovers in {rec:.1f} s)' if rec is not None
                                         and cond in SWITCH_LEARNERS else '')
            ax.semilogy(t, e * 1e3, '-o', ms=2.5, color=colors[cond], label=lab)
            if r.fb_torque is not None:
                w = int(ERROR_BIN_S * RATE_HZ)
                n = len(r.fb_torque) // w
                fe = np.sqrt(np.nanmean(r.fb_torque[:n * w].reshape(n, w, -1) ** 2,
                                        axis=(1, 2)))
                ax2.semilogy(t[:n], fe, '-o', ms=2.5, color=colors[cond],
                             label=SWITCH_LABELS[cond])
        for a in (ax, ax2):
            a.axvline(sizes.switch_at_s, color='C3', ls='--', lw=0.8)
            a.grid(True, which='both', alpha=0.3)
        ax.set_title(f'{gname} gains: payload {SWITCH_START_ML:g} -> {SWITCH_TO_ML:g} ml at '
                     f'{sizes.switch_at_s:g} s (dashed)')
        ax.set_ylabel(f'tracking RMS, {ERROR_BIN_S:g} s bins [mrad]')
        ax2.set_ylabel('feedback torque (measured - ff) RMS [Nm]')
        ax2.set_xlabel('time [s]')
        ax.legend(fontsize=8)
    fig.suptitle('Payload switch: offline LSTM frozen vs learning online (push motion)')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_bars(summary: dict, conditions: tuple[str, ...], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(GAINS)
    x = np.arange(len(conditions))
    for i, (gname, gain) in enumerate(GAINS):
        vals = [summary[gname].get(c, {}).get('rms_rad', np.nan) * 1e3 for c in conditions]
        ax.bar(x + (i - (len(GAINS) - 1) / 2) * width, vals, width,
               label=f'{gname} gains (x{gain:g})')
    ax.set_yscale('log')
    ax.set_xticks(x)
    ax.set_xticklabels([LABELS[c] for c in conditions], rotation=20, ha='right', fontsize=8)
    ax.set_ylabel('tracking RMS, joints 1-5 [mrad]')
    ax.set_title('Tracking error by feedforward (mean over motions and payloads)')
    ax.legend()
    ax.grid(True, axis='y', which='both', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict) -> str:
    conds = result['conditions']
    lines = ['# Closed-loop control with learned feedforward (simulated KUKA LWR 4+)', '',
             f'Command: `{result["command"]}` ({"quick" if result["quick"] else "full"} sizes, '
             f'{result["wall_s"]:.0f} s). Tracking error = true joint position minus desired, '
             'RMS over time and joints 1-5, mean over motions '
             f'{list(result["sizes"]["motions"])} and payloads '
             f'{list(result["sizes"]["payloads"])} ml, {result["sizes"]["run_s"]:g} s per run '
             'at 1 kHz.', '']
    for gname, gain in GAINS:
        s = result['summary'][gname]
        lines += [f'## {gname.capitalize()} gains (stiffness x{gain:g})', '',
                  '| feedforward | RMS [mrad] | ' + ' | '.join(f'{j} [mrad]' for j in J)
                  + ' | vs PD alone | vs nominal | ff compute p50 / p99 [us] |',
                  '|---|---|' + '---|' * len(J) + '---|---|---|']
        for c in conds:
            if c not in s:
                continue
            v = s[c]
            lat = result['latency_us'].get(c)
            lat_s = f'{lat["p50_us"]:.1f} / {lat["p99_us"]:.1f}' if lat else '-'
            lines.append(f'| {LABELS[c]} | {v["rms_rad"] * 1e3:.3f} | '
                         + ' | '.join(f'{x * 1e3:.3f}' for x in v['rms_rad_per_joint'])
                         + f' | {v.get("reduction_vs_pd", float("nan")):.2f}x | '
                         f'{v.get("reduction_vs_nominal", float("nan")):.2f}x | {lat_s} |')
        lines.append('')
    lines += ['## Per run', '', '| motion | payload [ml] | gains | feedforward | RMS [mrad] | '
              'max abs [mrad] | feedback torque RMS [Nm] |', '|---|---|---|---|---|---|---|']
    for r in result['rows']:
        ffe = f'{r["feedback_rms_nm"]:.3f}' if r['feedback_rms_nm'] is not None else '-'
        lines.append(f'| {r["motion"]} | {r["payload_ml"]:g} | {r["gains"]} | '
                     f'{LABELS[r["condition"]]} | {r["rms_rad"] * 1e3:.3f} | '
                     f'{r["max_abs_rad"] * 1e3:.2f} | {ffe} |')
    lines += ['', f'## Payload switch ({SWITCH_START_ML:g} -> {SWITCH_TO_ML:g} ml at '
              f'{result["sizes"]["switch_at_s"]:g} s of {result["sizes"]["switch_s"]:g} s, push '
              'motion)', '',
              '| gains | feedforward | RMS before [mrad] | RMS after [mrad] | recovery [s] |',
              '|---|---|---|---|---|']
    for gname, s in result['switch'].items():
        for c in SWITCH_CONDITIONS:
            rec = s['recovery_s'].get(c)
            lines.append(f'| {gname} | {SWITCH_LABELS[c]} | {s["rms_rad_before"][c] * 1e3:.3f} | '
                         f'{s["rms_rad_after"][c] * 1e3:.3f} | '
                         f'{"-" if rec is None else f"{rec:.1f}"} |')
        for c in SWITCH_LEARNERS:
            o = s.get(c) or {}
            lines.append(f'| {gname} | online learner ({SWITCH_LEARNERS[c]}) | '
                         f'{o.get("updates")} updates, {o.get("published")} models swapped in '
                         f'| update p50 {o.get("update_ms_p50") or float("nan"):.1f} ms, p99 '
                         f'{o.get("update_ms_p99") or float("nan"):.1f} ms (window: 128 ms) '
                         '| |')
    lines += ['', f'Recovery: the 1-s moving RMS back within {RECOVERY_FACTOR:g}x of its level '
              f'before the switch, for {RECOVERY_HOLD_S:g} s.', '', '## Goals (measured)', '',
              '| goal | measured | met |', '|---|---|---|']
    for g in result['goals']:
        lines.append(f'| {g["goal"]} | {g["measured"]} | {"yes" if g["met"] else "no"} |')
    lines += ['', '## Models', '', '```', json.dumps(result['models'], indent=1), '```', '',
              'Figures: `tracking_error.png` (error over time, reduced gains), '
              '`payload_switch.png` (switch and recovery), `tracking_rms.png` (summary).', '',
              'Feedforward latency here is the in-process compute time per sample (the GP: '
              '`predict_one` + RNEA, measured apart). Over DDS, see `make demo` (the lwr_sim '
              "node's feedforward lag).", '']
    return '\n'.join(lines)


def run_control(out_dir: Union[str, Path], quick: bool = False,
                conditions: tuple[str, ...] = CONDITIONS,
                sizes: Optional[ControlSizes] = None, command: str = '',
                log: Callable[[str], None] = print) -> dict:
    """Train, run every condition, write ``report.md``, ``results.json`` and the figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = sizes or (QUICK if quick else FULL)
    t0 = time.perf_counter()
    log(f'[1/3] training data and models ({"quick" if quick else "full"} sizes)')
    models = train_models(sizes, out, log)
    log(f'[2/3] closed loop: {len(sizes.motions)} motions x {len(sizes.payloads)} payloads x '
        f'{len(GAINS)} gain levels x {len(conditions)} feedforwards, {sizes.run_s:g} s each')
    rows, traces = run_table(models, sizes, conditions, log)
    log(f'      payload switch runs ({sizes.switch_s:g} s)')
    switch, sw_traces = run_switch(models, sizes, log)
    summary = summarise(rows, conditions)
    latency = {}
    for c in conditions:
        if c in ('pd',):
            continue
        if c == 'gp':
            latency[c] = gp_latency(models)
            continue
        sel = [r['ff_compute'] for r in rows if r['condition'] == c and r['ff_compute']]
        if sel:
            latency[c] = {k: float(np.median([s[k] for s in sel])) for k in sel[0]}
    result = {'quick': quick, 'command': command or f'invdyn experiment control --out {out}'
              + (' --quick' if quick else ''), 'conditions': list(conditions),
              'sizes': asdict(sizes), 'models': models.info, 'rows': rows,
              'summary': summary, 'switch': switch, 'latency_us': latency,
              'joint_names': list(J), 'rate_hz': RATE_HZ,
              'switch_payloads_ml': [SWITCH_START_ML, SWITCH_TO_ML]}
    result['goals'] = goals(summary, switch)
    log('[3/3] report')
    plot_payload = 300.0 if 300.0 in sizes.payloads else sizes.payloads[0]
    plot_tracking(traces, sizes.motions, conditions, out / 'tracking_error.png', plot_payload)
    plot_switch(sw_traces, switch, sizes, out / 'payload_switch.png')
    plot_bars(summary, conditions, out / 'tracking_rms.png')
    result['wall_s'] = time.perf_counter() - t0
    _write(out / 'results.json', json.dumps(result, indent=2, default=_json))
    _write(out / 'report.md', markdown(result))
    for gname, _ in GAINS:
        s = summary[gname]
        parts = [f'{LABELS[c]} {s[c]["rms_rad"] * 1e3:.3f} mrad' for c in conditions if c in s]
        log(f'  {gname} gains: ' + ', '.join(parts))
    for g in result['goals']:
        log(f'  goal: {g["goal"]}: {g["measured"]} ({"met" if g["met"] else "NOT met"})')
    log(f'  wrote {out}/report.md, results.json and 3 figures ({result["wall_s"]:.0f} s)')
    return result


def _json(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(type(obj).__name__)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_text(text)
    os.replace(tmp, path)
