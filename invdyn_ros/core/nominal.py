"""The nominal rigid-body model of a residual target, evaluated with Pinocchio.

:class:`NominalModel` builds a Pinocchio model from a :class:`~invdyn_ros.core.targets.
NominalSpec` (URDF text, joints by name, held joints, armature) and evaluates, for the model's
``d`` joints:

* :meth:`NominalModel.rnea`: ``M(q) qdd + C(q, qd) qd + g(q)`` [Nm] (Pinocchio ``rnea``);
  for a spec with identified parameters (:mod:`invdyn_ros.core.identify`), with the identified
  body parameters, plus per joint viscous and Coulomb friction, a spring and an offset;
* :meth:`NominalModel.gravity`: ``g(q)`` [Nm] (``computeGeneralizedGravity``), plus an
  identified spec's spring and offset;
* :meth:`NominalModel.payload_regressor`: ``Y(q, qd, qdd)`` (d, 10), the torque per unit of each
  dynamic parameter of the payload body (``computeJointTorqueRegressor``): the torque of a
  payload ``p`` is ``Y p``, which is how the trainer estimates a changed load online.

A spec's ``payload`` (10 dynamic parameters) is added to the URDF's body of ``payload_joint``
when the model is built, so the RNEA above includes it at no extra cost per sample.

Joints of the URDF the model does not cover (e.g. joints 6 and 7 of the 7-DoF LWR when the
model learns joints 1-5) are evaluated at the fixed positions the spec stores (``held_q``),
with zero velocity and acceleration: the learned model's inputs do not carry those joints, so
the nominal term must not depend on them either, and whatever torque their real motion causes
is part of the residual. The stored positions are explicit in the checkpoint (the simulated
LWR holds them at its home pose; ``invdyn train --hold`` sets them; unset ones are 0 rad).

Cost: one sample is one ``pin.rnea`` call on preallocated arrays, a few microseconds (see
``invdyn experiment targets``, which measures and reports it): cheap enough for a 1 kHz
predictor. Import this module only when a residual target needs it: a 'full' predictor never
loads Pinocchio.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pinocchio as pin

from invdyn_ros.core.targets import (check_target, IDENTIFIED_JOINT_TERMS, NominalSpec,
                                     PAYLOAD_PARAMS, RESIDUAL_TARGETS)

#: A payload that leaves its body lighter than this is refused [kg]: the body's centre of mass
#: (first moment / mass) would be meaningless.
MIN_BODY_MASS_KG = 1e-3

#: Name of the simulated LWR's nominal model for ``invdyn train --urdf``.
LWR_PRESET = 'lwr4plus'
PACKAGE_URDF_SOURCE = 'package:invdyn_ros/core/models_data/kuka_lwr4plus.urdf'
#: Name of the Baxter left arm's nominal model (kinematics and the manufacturer's inertial
#: values; identify its parameters from data, see core/identify.py) for ``invdyn train --urdf``.
BAXTER_PRESET = 'baxter_left'
BAXTER_URDF = Path(__file__).resolve().parent / 'models_data' / 'baxter_left_arm.urdf'


def _build(urdf_text: str) -> pin.Model:
    try:
        return pin.buildModelFromXML(urdf_text)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f'nominal model: Pinocchio cannot parse the URDF: {e}') from None


def movable_joints(urdf_text: str) -> tuple[str, ...]:
    """Names of the URDF's movable joints in Pinocchio's (tree) order."""
    return tuple(_build(urdf_text).names[1:])


def complete_spec(spec: NominalSpec) -> NominalSpec:
    """``spec`` with every movable URDF joint that is not modelled and not in ``held_q`` held
    at 0 rad, so the stored spec names every position it uses."""
    held = dict(spec.held_q)
    for name in movable_joints(spec.urdf_text):
        if name not in spec.urdf_joints and name not in held:
            held[name] = 0.0
    return replace(spec, held_q=held).validate()


class NominalModel:
    """Nominal inverse dynamics and gravity for the ``d`` joints of a spec (see module doc).

    Raises ValueError when the URDF lacks a named joint, a joint is not a 1-DoF joint
    (revolute/prismatic; Pinocchio gives 'continuous' joints two coordinates), or a movable
    joint is neither modelled nor held.
    """

    def __init__(self, spec: NominalSpec) -> None:
        spec.validate()
        self.spec = spec
        model = _build(spec.urdf_text)
        names = list(model.names)
        movable = set(names[1:])
        unknown = sorted((set(spec.urdf_joints) | set(spec.held_q) | set(spec.armature))
                         - movable)
        if unknown:
            raise ValueError(f'nominal model: joints {unknown} are not movable joints of the '
                             f'URDF (it has {names[1:]})')
        missing = sorted(movable - set(spec.urdf_joints) - set(spec.held_q))
        if missing:
            raise ValueError(f'nominal model: URDF joints {missing} are neither modelled nor '
                             'held (give their positions in held_q)')
        for name in names[1:]:
            j = model.joints[model.getJointId(name)]
            if j.nq != 1 or j.nv != 1:
                raise ValueError(f'nominal model: joint {name!r} has {j.nq} position and '
                                 f'{j.nv} velocity coordinates; only 1-DoF joints are supported')
        for name, value in spec.armature.items():
            model.armature[model.joints[model.getJointId(name)].idx_v] = value
        ident = spec.identified
        if ident:
            bodies = ident['body_params']
            if len(bodies) != model.njoints - 1:
                raise ValueError(f'nominal model: identified.body_params has {len(bodies)} '
                                 f'bodies, the URDF {model.njoints - 1}')
            for i, params in enumerate(bodies, start=1):
                # Not necessarily physical (see core/identify.py), but never massless.
                if abs(params[0]) < MIN_BODY_MASS_KG:
                    raise ValueError(f'nominal model: identified body of {names[i]!r} has '
                                     f'mass {params[0]:g} kg')
                model.inertias[i] = pin.Inertia.FromDynamicParameters(
                    np.asarray(params, dtype=np.float64))
        # Per-joint terms of an identified model (zeros otherwise): RNEA adds them.
        zeros = [0.0] * len(spec.joint_names)
        self._fv, self._fc, self._k, self._o = (
            np.asarray(ident.get(key, zeros), dtype=np.float64)
            for key in IDENTIFIED_JOINT_TERMS)
        self._vc = float(ident.get('coulomb_velocity', 1.0))
        self._extra = bool(ident)
        self.payload_joint = spec.payload_joint or names[-1]
        if self.payload_joint not in movable:
            raise ValueError(f'nominal model: payload joint {self.payload_joint!r} is not a '
                             f'movable joint of the URDF (it has {names[1:]})')
        self._payload_id = model.getJointId(self.payload_joint)
        if spec.payload:
            body = model.inertias[self._payload_id].toDynamicParameters() + np.asarray(
                spec.payload, dtype=np.float64)
            # An identified body may have any non-zero mass (see core/identify.py).
            mass = abs(body[0]) if spec.identified else body[0]
            if mass < MIN_BODY_MASS_KG:
                raise ValueError(f'nominal model: payload mass {spec.payload[0]:g} kg leaves '
                                 f'the body of {self.payload_joint!r} at {body[0]:g} kg')
            model.inertias[self._payload_id] = pin.Inertia.FromDynamicParameters(body)
        self.model = model
        self.data = model.createData()
        self.joint_names = spec.joint_names
        self.dof = len(spec.joint_names)
        jids = [model.getJointId(n) for n in spec.urdf_joints]
        self._iq = np.array([model.joints[j].idx_q for j in jids])
        self._iv = np.array([model.joints[j].idx_v for j in jids])
        # Preallocated full-size state; the held joints' entries are set once and never change.
        self._q = pin.neutral(model)
        for name, value in spec.held_q.items():
            self._q[model.joints[model.getJointId(name)].idx_q] = value
        self._v = np.zeros(model.nv)
        self._a = np.zeros(model.nv)

    # --- one sample (the 1 kHz path) ---------------------------------------------------------
    def rnea(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """Nominal torque [Nm] (d,) for q [rad], qd [rad/s], qdd [rad/s^2], each (d,)."""
        self._q[self._iq] = q
        self._v[self._iv] = qd
        self._a[self._iv] = qdd
        tau = pin.rnea(self.model, self.data, self._q, self._v, self._a)[self._iv]
        if self._extra:
            tau = tau + self._static(q) + self._fv * qd + self._fc * np.tanh(qd / self._vc)
        return tau

    def gravity(self, q: np.ndarray) -> np.ndarray:
        """Nominal gravity torque g(q) [Nm] (d,) for q [rad] (d,); an identified model adds
        its configuration-only terms (spring and offset)."""
        self._q[self._iq] = q
        g = pin.computeGeneralizedGravity(self.model, self.data, self._q)[self._iv]
        return g + self._static(q) if self._extra else g

    def _static(self, q: np.ndarray) -> np.ndarray:
        """An identified model's spring and offset torque [Nm] (d,)."""
        return self._k * np.asarray(q, dtype=np.float64) + self._o

    def payload_regressor(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """(d, 10): torque [Nm] of the model's joints per unit of each dynamic parameter
        (:data:`~invdyn_ros.core.targets.PAYLOAD_PARAMS`) of the payload joint's body, for q
        [rad], qd [rad/s], qdd [rad/s^2], each (d,)."""
        k = len(PAYLOAD_PARAMS) * (self._payload_id - 1)
        return self.body_regressor(q, qd, qdd)[:, k:k + len(PAYLOAD_PARAMS)]

    def body_regressor(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """(d, 10 n_b): torque [Nm] of the model's joints per unit of each dynamic parameter
        of each of the URDF's ``n_b`` movable-joint bodies (Pinocchio's joint order), for q
        [rad], qd [rad/s], qdd [rad/s^2], each (d,); the held joints at their positions."""
        self._q[self._iq] = q
        self._v[self._iv] = qd
        self._a[self._iv] = qdd
        y = pin.computeJointTorqueRegressor(self.model, self.data, self._q, self._v, self._a)
        return y[self._iv]

    def body_mass(self) -> float:
        """Mass of the payload joint's body, payload included [kg]."""
        return float(self.model.inertias[self._payload_id].mass)

    def term(self, target: str, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """What ``target`` subtracts from the measured torque, one sample, (d,) [Nm]."""
        if target == 'residual_rbd':
            return self.rnea(q, qd, qdd)
        if target == 'residual_gravity':
            return self.gravity(q)
        raise ValueError(f'target {target!r} has no nominal term')

    # --- many samples ------------------------------------------------------------------------
    def terms(self, target: str, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """:meth:`term` for each row of (T, d) arrays -> (T, d) [Nm]."""
        check_target(target)
        q, qd, qdd = (np.asarray(x, dtype=np.float64) for x in (q, qd, qdd))
        if q.ndim != 2 or q.shape[1] != self.dof or qd.shape != q.shape or qdd.shape != q.shape:
            raise ValueError(f'q, qd, qdd must share shape (T, {self.dof}), got {q.shape}, '
                             f'{qd.shape}, {qdd.shape}')
        out = np.empty_like(q)
        for k in range(len(q)):
            out[k] = self.term(target, q[k], qd[k], qdd[k])
        return out


def with_payload(spec: NominalSpec, payload: Sequence[float],
                 joint: Optional[str] = None) -> NominalSpec:
    """``spec`` carrying ``payload`` (10 dynamic parameters, see
    :data:`~invdyn_ros.core.targets.PAYLOAD_PARAMS`) on ``joint`` (default: the spec's payload
    joint, else the URDF's last movable joint, i.e. the flange); an all-zero payload removes
    it. ValueError when the result cannot be built."""
    values = tuple(float(v) for v in payload)
    if joint is None:
        joint = spec.payload_joint or movable_joints(spec.urdf_text)[-1]
    new = replace(spec, payload=values, payload_joint=joint) if any(values) else replace(
        spec, payload=(), payload_joint='')
    NominalModel(new.validate())
    return new


def nominal_for(target: str, spec: Optional[NominalSpec]) -> Optional[NominalModel]:
    """The model a target subtracts (None for 'full'); ValueError when it cannot be built."""
    check_target(target)
    if target not in RESIDUAL_TARGETS:
        return None
    if spec is None:
        raise ValueError(f'target {target!r} needs a nominal model (a URDF)')
    return NominalModel(spec)


def lwr4plus_spec(joint_names: Sequence[str]) -> NominalSpec:
    """The simulated LWR's nominal model: the packaged URDF plus the reflected rotor inertia
    the simulator's own nominal model has (:data:`~invdyn_ros.core.lwr_sim.ARMATURE`), the
    joints not modelled held at the simulator's home pose (joints 6-7 do not move there).
    Friction, the flask payload and sensor noise are what it misses."""
    from invdyn_ros.core.lwr_sim import ARMATURE, DEFAULT_URDF, HOME_Q, JOINT_NAMES
    names = tuple(joint_names)
    unknown = sorted(set(names) - set(JOINT_NAMES))
    if unknown:
        raise ValueError(f'joints {unknown} are not LWR 4+ joints {list(JOINT_NAMES)}')
    held = {n: float(HOME_Q[i]) for i, n in enumerate(JOINT_NAMES) if n not in names}
    return NominalSpec.from_urdf(DEFAULT_URDF, names, held_q=held,
                                 armature=dict(zip(JOINT_NAMES, map(float, ARMATURE))),
                                 source=f'{PACKAGE_URDF_SOURCE} (+ lwr_sim armature, held '
                                        'joints at the home pose)')


def baxter_spec(joint_names: Sequence[str]) -> NominalSpec:
    """The Baxter left arm's nominal model (packaged URDF, trimmed from Rethink's; see its
    header comment) for ``joint_names`` (of left_s0 .. left_w2), the others held at 0 rad."""
    spec = NominalSpec.from_urdf(BAXTER_URDF, tuple(joint_names),
                                 source='package:invdyn_ros/core/models_data/'
                                        'baxter_left_arm.urdf')
    return complete_spec(spec)


def spec_for(urdf: str, joint_names: Sequence[str],
             held_q: Optional[Mapping[str, float]] = None,
             armature: Optional[Mapping[str, float]] = None) -> NominalSpec:
    """A complete spec from a URDF path, :data:`LWR_PRESET` for the simulated LWR's nominal
    model or :data:`BAXTER_PRESET` for Baxter's left arm; ``held_q``/``armature`` override the
    preset's or add to a file's."""
    if urdf in (LWR_PRESET, BAXTER_PRESET):
        spec = (lwr4plus_spec if urdf == LWR_PRESET else baxter_spec)(joint_names)
        spec = replace(spec, held_q={**spec.held_q, **(held_q or {})},
                       armature={**spec.armature, **(armature or {})})
    else:
        spec = NominalSpec.from_urdf(urdf, joint_names, held_q=held_q, armature=armature)
    spec = complete_spec(spec)
    NominalModel(spec)      # fail now, naming the problem, rather than after training
    return spec


def apply_target(target: str, nominal: Optional[NominalModel], q: np.ndarray, qd: np.ndarray,
                 qdd: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training targets for (T, d) arrays: ``(y, base)`` with ``y = tau - base``, ``base`` the
    nominal term (zeros for 'full') [Nm]."""
    check_target(target)
    if target not in RESIDUAL_TARGETS:
        return np.asarray(tau, dtype=np.float64), np.zeros_like(tau, dtype=np.float64)
    if nominal is None:
        raise ValueError(f'target {target!r} needs a nominal model')
    base = nominal.terms(target, q, qd, qdd)
    return np.asarray(tau, dtype=np.float64) - base, base
