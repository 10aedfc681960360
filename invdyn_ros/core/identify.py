"""Identify a nominal model's parameters from recorded data (linear least squares).

A URDF's kinematics are usually right and its inertial parameters often are not (a real
Baxter's measured torques follow its URDF's masses poorly, and no URDF has friction, cable
springs or sensor offsets). Inverse dynamics is linear in the dynamic parameters, so they can
be fitted to recorded ``(q, qd, qdd, tau)`` by least squares (the classic identification of
Atkeson, An, Hollerbach 1986; Khalil and Dombre ch. 12)::

    tau_j = Y_j(q, qd, qdd) theta                          (rigid body, 10 per body)
            + fv_j qd_j + fc_j tanh(qd_j / v_c)            (viscous and smooth Coulomb friction)
            + k_j q_j + o_j                                (spring, e.g. a gravity-assist
                                                           spring, and a sensor offset)

``Y`` is Pinocchio's joint-torque regressor of the spec's URDF (its kinematics only). Many
combinations of body parameters do not show in the torques at all; a ridge penalty pulls every
parameter towards a prior (the URDF's own inertial values, zero friction, spring and offset),
so an unexcited parameter keeps its URDF value and the result stays a physical-looking model
for motions the data did not cover. Each joint's equations are weighed by the inverse of its
torque standard deviation (every joint counts the same, as the normalised MSE scores them).

The result is the same :class:`~invdyn_ros.core.targets.NominalSpec` with ``identified`` set:
the body parameters replace the URDF's in :class:`~invdyn_ros.core.nominal.NominalModel`,
whose RNEA then adds the friction, spring and offset terms. It is stored whole in a
checkpoint, so a residual model is rebuilt from its file alone. Imports Pinocchio.
"""

from __future__ import annotations

from dataclasses import replace
import math
from typing import Sequence

import numpy as np

from invdyn_ros.core.accel import AccelConfig, ensure_qdd
from invdyn_ros.core.nominal import MIN_BODY_MASS_KG, NominalModel
from invdyn_ros.core.targets import IDENTIFIED_JOINT_TERMS, NominalSpec, PAYLOAD_PARAMS
from invdyn_ros.core.trajectory import Trajectory

#: Velocity scale of the smooth Coulomb term tanh(qd / v_c) [rad/s]: well below the speeds of
#: a motion, above the velocity noise of a joint at rest.
DEFAULT_COULOMB_VELOCITY = 0.02
#: Ridge weight towards the prior, per parameter, relative to the mean squared normalised
#: torque equation (dimensionless: each column is scaled to unit RMS first).
DEFAULT_RIDGE = 1e-3
#: Floor of a parameter's penalty scale, relative to the median column RMS.
SCALE_FLOOR = 0.1
#: Per-joint terms, in this order, after the body parameters.
JOINT_TERMS = IDENTIFIED_JOINT_TERMS
#: Samples per chunk when accumulating the normal equations (bounds memory).
CHUNK = 4096
#: Fewest samples an identification accepts (several times the parameter count is needed).
MIN_SAMPLES = 200


def regressor(model: NominalModel, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray,
              coulomb_velocity: float) -> np.ndarray:
    """(T, d, 10 n_b + 4 d): the torque of the ``d`` modelled joints per unit of each
    parameter (``n_b`` bodies' :data:`~invdyn_ros.core.targets.PAYLOAD_PARAMS`, then per joint
    :data:`JOINT_TERMS`), for q [rad], qd [rad/s], qdd [rad/s^2], each (T, d). The spec's
    armature is not a parameter: its torque ``armature * qdd`` comes on top."""
    n, d = q.shape
    k0 = len(PAYLOAD_PARAMS) * (model.model.njoints - 1)
    out = np.zeros((n, d, k0 + len(JOINT_TERMS) * d))
    for t in range(n):
        out[t, :, :k0] = model.body_regressor(q[t], qd[t], qdd[t])
    rows = np.arange(d)
    cols = k0 + len(JOINT_TERMS) * rows
    out[:, rows, cols] = qd
    out[:, rows, cols + 1] = np.tanh(qd / coulomb_velocity)
    out[:, rows, cols + 2] = q
    out[:, rows, cols + 3] = 1.0
    return out


#: One trajectory for :func:`identify`: (q, qd, qdd, tau), each (T, d).
Arrays4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def identify(spec: NominalSpec, data: Sequence[Arrays4],
             ridge: float = DEFAULT_RIDGE,
             coulomb_velocity: float = DEFAULT_COULOMB_VELOCITY) -> NominalSpec:
    """Fit ``spec``'s parameters to recorded data (see the module docstring).

    Args:
        spec: a complete nominal spec (every movable URDF joint modelled or held); its URDF's
            inertial values are the prior. An earlier identification in it is ignored.
        data: one ``(q, qd, qdd, tau)`` per trajectory, each (T, d) in the spec's joint order
            [rad, rad/s, rad/s^2, Nm]; qdd as the model will see it (the causal estimate).
        ridge: weight of the pull towards the prior (> 0).
        coulomb_velocity: v_c of the smooth Coulomb term [rad/s] (> 0).

    Returns:
        ``spec`` with ``identified`` set (body parameters, per-joint terms, fit figures).

    Raises:
        ValueError: bad arguments, too few samples, non-finite data, or a body left with a
            mass within :data:`~invdyn_ros.core.nominal.MIN_BODY_MASS_KG` of zero.
    """
    if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge > 0):
        raise ValueError(f'identify: ridge must be a positive number, got {ridge!r}')
    if not (isinstance(coulomb_velocity, (int, float)) and math.isfinite(coulomb_velocity)
            and coulomb_velocity > 0):
        raise ValueError(f'identify: coulomb_velocity must be a positive number [rad/s], got '
                         f'{coulomb_velocity!r}')
    base = replace(spec, identified={}).validate()
    model = NominalModel(base)
    d = model.dof
    arrays = []
    for i, item in enumerate(data):
        if len(item) != 4:
            raise ValueError(f'identify: trajectory {i}: expected (q, qd, qdd, tau)')
        q, qd, qdd, tau = (np.asarray(a, dtype=np.float64) for a in item)
        if q.ndim != 2 or q.shape[1] != d or any(a.shape != q.shape for a in (qd, qdd, tau)):
            raise ValueError(f'identify: trajectory {i}: q, qd, qdd, tau must share shape '
                             f'(T, {d})')
        if not all(np.all(np.isfinite(a)) for a in (q, qd, qdd, tau)):
            raise ValueError(f'identify: trajectory {i}: non-finite values')
        arrays.append((q, qd, qdd, tau))
    n = sum(len(a[0]) for a in arrays)
    if n < MIN_SAMPLES:
        raise ValueError(f'identify: {n} samples, at least {MIN_SAMPLES} needed')
    # The spec's armature (reflected rotor inertia, on the mass matrix's diagonal) stays as it
    # is and is not in Pinocchio's regressor: its torque is taken off before the fit.
    arm = np.asarray(model.model.armature)[model._iv]
    arrays = [(q, qd, qdd, tau - arm * qdd) for q, qd, qdd, tau in arrays]
    tau_all = np.concatenate([a[3] for a in arrays])
    sd = np.maximum(tau_all.std(axis=0), 1e-6)
    nb = model.model.njoints - 1
    prior = np.concatenate(
        [model.model.inertias[i].toDynamicParameters() for i in range(1, nb + 1)]
        + [np.zeros(len(JOINT_TERMS) * d)])
    p = len(prior)
    # Normal equations per joint (one regressor pass: the fit's residual per joint follows
    # from them too), in normalised units, for the deviation from the prior: b = tau - Y prior.
    ata_j, atb_j, btb_j = np.zeros((d, p, p)), np.zeros((d, p)), np.zeros(d)
    for q, qd, qdd, tau in arrays:
        for s in range(0, len(q), CHUNK):
            sl = slice(s, s + CHUNK)
            a = regressor(model, q[sl], qd[sl], qdd[sl], coulomb_velocity) / sd[None, :, None]
            b = tau[sl] / sd - a @ prior
            a_j = a.transpose(1, 0, 2)                          # (d, chunk, p)
            ata_j += a_j.transpose(0, 2, 1) @ a_j
            atb_j += np.einsum('jcp,cj->jp', a_j, b)
            btb_j += (b ** 2).sum(axis=0)
    ata, atb = ata_j.sum(axis=0), atb_j.sum(axis=0)
    rows = n * d
    # The penalty of each parameter scales with its column's RMS (so ``ridge`` is scale-free),
    # floored at a fraction of the median: a parameter the data barely excite (e.g. a body's
    # first moment along its own joint axis) must stay at its prior, not drift to 1e7.
    scale = np.sqrt(np.diag(ata) / rows)
    scale = np.maximum(scale, SCALE_FLOOR * np.median(scale[scale > 0]))
    reg = ridge * rows * np.diag(scale ** 2)
    delta = np.linalg.solve(ata + reg, atb)
    theta = prior + delta
    k0 = len(PAYLOAD_PARAMS) * nb
    bodies = theta[:k0].reshape(nb, len(PAYLOAD_PARAMS))
    # A spec's payload was part of the prior and of the fit, and NominalModel adds it to the
    # payload joint's body again: store that body without it.
    stored = bodies.copy()
    if base.payload:
        stored[model._payload_id - 1] -= np.asarray(base.payload, dtype=np.float64)
    # Identified parameters need not be physically consistent (a spring or a cable shows as a
    # negative mass just as well); RNEA stays linear in them as long as no mass is zero.
    light = [model.model.names[i + 1] for i in range(nb)
             if abs(stored[i, 0]) < MIN_BODY_MASS_KG]
    if light:
        raise ValueError(f'identify: the bodies of {light} came out with a mass within '
                         f'{MIN_BODY_MASS_KG} kg of zero; use another ridge')
    terms = theta[k0:].reshape(d, len(JOINT_TERMS))
    # Fit figures on the identification data (normalised MSE per joint), for the record:
    # |a delta - b|^2 per joint from its normal equations, back in Nm^2 (>= 0 up to rounding).
    err = np.einsum('p,jpq,q->j', delta, ata_j, delta) - 2 * atb_j @ delta + btb_j
    nmse = np.maximum(err, 0.0) * sd ** 2 / n / np.maximum(tau_all.var(axis=0), 1e-12)
    identified = {
        'body_params': [[float(v) for v in row] for row in stored],
        **{name: [float(v) for v in terms[:, i]] for i, name in enumerate(JOINT_TERMS)},
        'coulomb_velocity': float(coulomb_velocity),
        'fit': {'samples': int(n), 'trajectories': len(arrays), 'ridge': float(ridge),
                'nmse_per_joint': [float(v) for v in nmse]},
    }
    out = replace(base, identified=identified).validate()
    NominalModel(out)       # builds: every body is usable
    return out


def identify_trajectories(spec: NominalSpec, trajs: Sequence[Trajectory],
                          accel: AccelConfig, **kw) -> NominalSpec:
    """:func:`identify` on trajectories: the spec's joints selected by name, qdd the causal
    estimate of ``accel`` (as the model will see it); ``kw`` as :func:`identify`'s."""
    names = spec.joint_names
    return identify(spec, [(t.q, t.qd, t.qdd, t.tau) for t in (
        ensure_qdd(tr.select(names), accel) for tr in trajs)], **kw)
