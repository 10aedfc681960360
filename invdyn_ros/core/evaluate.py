"""Offline evaluation that runs a model exactly as the predictor node does.

Each trajectory goes through :class:`OnlinePredictor` sample by sample: the same causal
acceleration estimate, the same carried LSTM state, the same resets. The scores are the paper's
MSE (eq. 3, mean over joints and samples) [Nm^2] and the normalised MSE (MSE / variance of the
true torque), per joint and overall.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.checkpoint import load_checkpoint
from invdyn_ros.core.datasets import load_trajectories
from invdyn_ros.core.online import OnlinePredictor, run_online
from invdyn_ros.core.training import mse_scores, prepare
from invdyn_ros.core.trajectory import DataError, Trajectory


def predict_trajectories(model, accel: AccelConfig, trajs: Sequence[Trajectory]
                         ) -> list[np.ndarray]:
    """Step-by-step torques [Nm] (T, d) for each trajectory, a fresh predictor each."""
    out = []
    for tr in trajs:
        tr = tr.select(model.config.joint_names)
        pred = OnlinePredictor(model, accel)
        tau, _ = run_online(pred, tr.times(), tr.q, tr.qd)
        out.append(tau)
    return out


def predict_gp_trajectories(gp, accel: AccelConfig, trajs: Sequence[Trajectory]
                            ) -> list[np.ndarray]:
    """GP mean torques [Nm] (T, d) per trajectory, on the same causal inputs as the LSTM (the
    GP is static, so predicting all samples at once equals predicting them one by one)."""
    return [gp.predict(p.x)[0] for p in prepare(trajs, gp.config.joint_names, accel)]


def evaluate_model(model_path: Union[str, Path], data: Sequence[Union[str, Path]],
                   topic: str = '/joint_states') -> dict:
    """Scores of the checkpoint at ``model_path`` (LSTM or GP) on ``data`` (any loader's
    input)."""
    model, meta = load_checkpoint(model_path, expect_kind=None)
    names = model.config.joint_names
    trajs = load_trajectories(data, names, topic)
    accel = AccelConfig.from_dict(meta.get('accel_config', {}))
    if meta.get('kind') == 'gp':
        preds = predict_gp_trajectories(model, accel, trajs)
    else:
        preds = predict_trajectories(model, accel, trajs)
    y = np.concatenate([tr.tau for tr in trajs])
    p = np.concatenate(preds)
    valid = np.all(np.isfinite(p), axis=1)
    if not valid.any():
        raise DataError(', '.join(map(str, data)), 'the model produced no valid output')
    report = mse_scores(y[valid], p[valid])
    report.update(model=str(model_path), joint_names=list(names), samples=int(len(y)),
                  scored_samples=int(valid.sum()), trajectories=len(trajs),
                  data=[str(d) for d in data], kind=meta.get('kind', 'lstm'),
                  mode=('static GP, same causal inputs' if meta.get('kind') == 'gp'
                        else 'step-by-step, state carried'))
    return report
