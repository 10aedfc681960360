"""Offline evaluation that runs a model exactly as the predictor node does.

Each trajectory goes through :class:`OnlinePredictor` sample by sample: the same causal
acceleration estimate, the same carried LSTM state, the same resets. The scores are the paper's
MSE (eq. 3, mean over joints and samples) [Nm^2] and the normalised MSE (MSE / variance of the
reference torque), per joint and overall.

What is scored is the torque the predictor publishes, against what it stands for
(:mod:`invdyn_ros.core.targets`): for 'full' and 'residual_rbd' (nominal RNEA + residual) the
measured torque; for 'residual_gravity' (the residual alone, the controller adds gravity) the
measured torque minus the nominal gravity g(q). The report also gives the nominal model alone
on the same samples (``nominal_mse``: RNEA on the same acceleration estimate, or for
'residual_gravity' a zero residual, i.e. gravity compensation alone), the bar a residual model
has to beat.

With ``online`` (``invdyn eval --online``) an LSTM is scored learning online during each
trajectory, as the predictor and trainer nodes run together beside the robot: each sample is
predicted before its torque reaches the learner, so no prediction has seen its own torque.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.checkpoint import load_checkpoint
from invdyn_ros.core.datasets import load_trajectories
from invdyn_ros.core.online import OnlinePredictor, run_online
from invdyn_ros.core.online_learning import prequential_trajectories
from invdyn_ros.core.params import TrainerParams
from invdyn_ros.core.targets import (check_target, DEFAULT_TARGET, PUBLISHED, RESIDUAL_TARGETS,
                                     SCORED_AGAINST, spec_from_meta)
from invdyn_ros.core.training import mse_scores, prepare
from invdyn_ros.core.trajectory import DataError, Trajectory


def predict_trajectories(model, accel: AccelConfig, trajs: Sequence[Trajectory],
                         target: str = DEFAULT_TARGET, nominal: Optional[Any] = None
                         ) -> list[np.ndarray]:
    """Step-by-step published torques [Nm] (T, d) for each trajectory, a fresh predictor each
    (for 'residual_rbd' nominal + residual, for 'residual_gravity' the residual)."""
    out = []
    for tr in trajs:
        tr = tr.select(model.config.joint_names)
        pred = OnlinePredictor(model, accel, target=target, nominal=nominal)
        tau, _ = run_online(pred, tr.times(), tr.q, tr.qd)
        out.append(tau)
    return out


def predict_gp_trajectories(gp, accel: AccelConfig, trajs: Sequence[Trajectory],
                            target: str = DEFAULT_TARGET, nominal: Optional[Any] = None
                            ) -> list[np.ndarray]:
    """GP mean published torques [Nm] (T, d) per trajectory, on the same causal inputs as the
    LSTM (the GP is static, so predicting all samples at once equals predicting them one by
    one); for 'residual_rbd' the nominal term is added, as for the LSTM."""
    out = []
    for p in prepare(trajs, gp.config.joint_names, accel, target=target, nominal=nominal):
        mean = gp.predict(p.x)[0]
        out.append(mean + p.base if target == 'residual_rbd' else mean)
    return out


def reference_torques(trajs: Sequence[Trajectory], joint_names: Sequence[str],
                      accel: AccelConfig, target: str, nominal: Optional[Any]
                      ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """What the published torque is scored against, (N, d) [Nm], and the nominal model alone's
    published torque on the same samples (None for 'full')."""
    check_target(target)
    data = prepare(trajs, joint_names, accel, target=target, nominal=nominal)
    tau = np.concatenate([p.y + p.base if p.base is not None else p.y for p in data])
    if target == 'full':
        return tau, None
    if target == 'residual_rbd':
        return tau, np.concatenate([p.base for p in data])
    # residual_gravity: scored against tau - g(q); the nominal alone publishes a zero residual
    y = np.concatenate([p.y for p in data])
    return y, np.zeros_like(y)


def evaluate_model(model_path: Union[str, Path], data: Sequence[Union[str, Path]],
                   topic: str = '/joint_states', online: Optional[TrainerParams] = None
                   ) -> dict:
    """Scores of the checkpoint at ``model_path`` (LSTM or GP, any target) on ``data`` (any
    loader's input); see the module docstring for what is scored.

    ``online``: the trainer node's settings; the LSTM is then scored learning online during
    each trajectory (:func:`~invdyn_ros.core.online_learning.prequential_trajectories`, on
    the checkpoint's acceleration settings as plain eval), and the report adds the frozen
    model's scores on the same samples (``frozen_mse``, ``frozen_nmse``,
    ``frozen_nmse_per_joint``, each on the samples where the frozen model gave a torque, as
    plain eval; ``nominal_*`` too) and ``online`` (adapt, updates, models published, samples
    where only the learning model gave none). A GP does not learn online, nor does a
    non-residual model adapt a payload: ValueError."""
    model, meta = load_checkpoint(model_path, expect_kind=None)
    is_gp = meta.get('kind') == 'gp'
    if online is not None and is_gp:
        raise ValueError(f'{model_path} is a GP checkpoint: only an LSTM learns online')
    target = meta.get('target', DEFAULT_TARGET)
    if online is not None and online.adapt == 'payload' and target != 'residual_rbd':
        raise ValueError(f"adapt 'payload' needs a 'residual_rbd' model (its nominal model "
                         f"carries the payload); {model_path} learned {target!r}")
    names = model.config.joint_names
    trajs = load_trajectories(data, names, topic)
    accel = AccelConfig.from_dict(meta.get('accel_config', {}))
    nominal = None
    if target in RESIDUAL_TARGETS:
        from invdyn_ros.core.nominal import NominalModel
        nominal = NominalModel(spec_from_meta(meta))
    frozen = None
    if is_gp:
        preds = predict_gp_trajectories(model, accel, trajs, target, nominal)
    else:
        preds = predict_trajectories(model, accel, trajs, target, nominal)
    if online is not None:
        frozen = preds
        runs = prequential_trajectories(model, trajs, online, accel, target, nominal)
        preds = [r.tau for r in runs]
        online_info = {'updates': sum(r.updates for r in runs),
                       'published': sum(r.published for r in runs)}
    y, nominal_pred = reference_torques(trajs, names, accel, target, nominal)
    p = np.concatenate(preds)
    valid = np.all(np.isfinite(p), axis=1)
    if not valid.any():
        raise DataError(', '.join(map(str, data)), 'the model produced no valid output')
    # The frozen model on its own valid samples, as plain eval scores it (so its figures are
    # plain eval's); the samples where only the learning model gave no torque are counted.
    f = np.concatenate(frozen) if frozen is not None else p
    fvalid = np.all(np.isfinite(f), axis=1)
    report = mse_scores(y[valid], p[valid])
    mode = 'static GP, same causal inputs' if is_gp else 'step-by-step, state carried'
    if online is not None:
        mode += (f', learning online (adapt {online.adapt}; each sample predicted before its '
                 'torque is learned)')
    report.update(model=str(model_path), joint_names=list(names), samples=int(len(y)),
                  scored_samples=int(valid.sum()), trajectories=len(trajs),
                  data=[str(d) for d in data], kind=meta.get('kind', 'lstm'), mode=mode,
                  target=target, published=PUBLISHED[target],
                  scored_against=SCORED_AGAINST[target])
    if frozen is not None:
        base = mse_scores(y[fvalid], f[fvalid])
        report.update(frozen_mse=base['mse'], frozen_nmse=base['nmse'],
                      frozen_nmse_per_joint=base['nmse_per_joint'],
                      frozen_scored_samples=int(fvalid.sum()),
                      online={'adapt': online.adapt, **online_info,
                              'no_output_where_frozen_had_one': int((fvalid & ~valid).sum())})
    if nominal_pred is not None:
        base = mse_scores(y[fvalid], nominal_pred[fvalid])
        report.update(nominal_mse=base['mse'], nominal_nmse=base['nmse'],
                      nominal_mse_per_joint=base['mse_per_joint'])
    return report
