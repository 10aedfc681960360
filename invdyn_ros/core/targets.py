"""What a model learns: the whole joint torque or a residual over a nominal rigid-body model.

Targets (the checkpoint header's ``target`` field):

* ``'full'``: the measured joint torque tau (the paper's setting). No nominal model.
* ``'residual_rbd'``: ``tau - RNEA_nominal(q, qd, qdd)``, the nominal rigid-body model of a URDF
  with nominal parameters; the network learns only what that model misses (friction, payload,
  parameter errors). A predictor publishes ``RNEA_nominal + residual``.
* ``'residual_gravity'``: ``tau - g_nominal(q)``, for controllers that already add gravity
  themselves (the KUKA FRI case); a predictor publishes only the residual.

The nominal model is described by a :class:`NominalSpec`, stored in the checkpoint (as JSON)
so the model it was trained against can be rebuilt from the file alone: the URDF text itself
(with its SHA-256, checked on load), which URDF joint each model joint is, the fixed positions
of the URDF's other joints, and the reflected rotor inertia added to the URDF.

This module is free of Pinocchio (and torch): a checkpoint with target ``'full'`` never needs
it. :mod:`invdyn_ros.core.nominal` evaluates a spec with Pinocchio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

TARGETS = ('full', 'residual_rbd', 'residual_gravity')
DEFAULT_TARGET = 'full'
#: Targets that subtract a nominal model (and so need a :class:`NominalSpec`).
RESIDUAL_TARGETS = ('residual_rbd', 'residual_gravity')
#: Nominal-spec JSON keys.
SPEC_KEYS = frozenset({'urdf_text', 'urdf_sha256', 'source', 'joint_names', 'urdf_joints',
                       'held_q', 'armature'})
#: Keys a spec with a payload adds (written only then, so older files stay valid).
PAYLOAD_KEYS = frozenset({'payload', 'payload_joint'})
#: Key an identified spec adds (written only then).
IDENTIFIED_KEYS = frozenset({'identified'})
#: Per-joint terms of an identified model, in this order [Nm s/rad, Nm, Nm/rad, Nm]: viscous
#: friction, Coulomb friction (times tanh(qd / v_c)), spring, offset.
IDENTIFIED_JOINT_TERMS = ('viscous', 'coulomb', 'stiffness', 'offset')
#: Fields of ``NominalSpec.identified`` (see :mod:`invdyn_ros.core.identify`): the body
#: parameters replacing the URDF's (10 per movable URDF joint's body, Pinocchio's joint
#: order), the per-joint terms, v_c [rad/s] and the fit's record.
IDENTIFIED_FIELDS = frozenset({'body_params', *IDENTIFIED_JOINT_TERMS, 'coulomb_velocity',
                               'fit'})
#: Dynamic parameters of one rigid body, in Pinocchio's order: mass [kg], first moment m*c
#: [kg m] (x, y, z), inertia about the joint frame's origin [kg m^2] (xx, xy, yy, xz, yz, zz).
PAYLOAD_PARAMS = ('m', 'mcx', 'mcy', 'mcz', 'Ixx', 'Ixy', 'Iyy', 'Ixz', 'Iyz', 'Izz')
#: A URDF larger than this is not a robot description we accept inside a checkpoint [bytes].
MAX_URDF_BYTES = 4 << 20

#: What each target's published torque is, for reports.
PUBLISHED = {
    'full': 'the model output (whole joint torque)',
    'residual_rbd': 'nominal RNEA(q, qd, qdd) + model residual',
    'residual_gravity': 'the model residual only (the controller adds nominal gravity)',
}
#: What each target's published torque is scored against in evaluation.
SCORED_AGAINST = {
    'full': 'measured torque',
    'residual_rbd': 'measured torque',
    'residual_gravity': 'measured torque minus nominal gravity g(q)',
}


def check_target(target: str) -> str:
    """``target`` if it is one of :data:`TARGETS`, else ValueError naming the choices."""
    if target not in TARGETS:
        raise ValueError(f'target must be one of {list(TARGETS)}, got {target!r}')
    return target


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


@dataclass(frozen=True)
class NominalSpec:
    """A nominal rigid-body model: URDF text, joint mapping, held joints, armature.

    Attributes:
        urdf_text: the URDF (XML text); stored whole so a checkpoint never depends on a file
            that may change (a re-identified URDF would silently change the learned residual).
        joint_names: the model's joints, in the model's column order.
        urdf_joints: the URDF joint for each model joint (same order); usually the same names.
        held_q: every other movable URDF joint -> the fixed position [rad] it is evaluated at
            (with zero velocity and acceleration); the model's inputs do not carry those joints.
        armature: URDF joint -> reflected rotor inertia [kg m^2] added on the diagonal of the
            mass matrix (a datasheet-level quantity URDFs lack); missing joints: 0.
        source: where the URDF came from (information only, e.g. 'package:kuka_lwr4plus.urdf').
        payload: empty, or the 10 dynamic parameters (:data:`PAYLOAD_PARAMS`, in the frame of
            ``payload_joint``) added to the URDF's body of ``payload_joint``: a tool or load
            the URDF lacks, set by the user or estimated online by the trainer
            (``adapt: payload``). Added parameter-wise (RNEA is linear in them), so a negative
            entry (a lighter tool) is allowed as long as that body's total mass stays positive.
        payload_joint: the URDF joint whose body carries ``payload`` (set with it).
        identified: empty, or parameters fitted to data by
            :func:`invdyn_ros.core.identify.identify` (:data:`IDENTIFIED_FIELDS`): the body
            parameters replace the URDF's inertial values, and the RNEA adds per joint viscous
            and Coulomb friction, a spring and an offset. The URDF then gives the kinematics
            and the prior.
    """

    urdf_text: str
    joint_names: tuple[str, ...]
    urdf_joints: tuple[str, ...]
    held_q: Mapping[str, float] = field(default_factory=dict)
    armature: Mapping[str, float] = field(default_factory=dict)
    source: str = ''
    payload: tuple[float, ...] = ()
    payload_joint: str = ''
    identified: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> 'NominalSpec':
        """Types and values (not the URDF's contents: :class:`NominalModel` checks those)."""
        if not isinstance(self.urdf_text, str) or not self.urdf_text.strip():
            raise ValueError('nominal model: urdf_text must be non-empty URDF text')
        if len(self.urdf_text.encode('utf-8')) > MAX_URDF_BYTES:
            raise ValueError(f'nominal model: URDF larger than {MAX_URDF_BYTES} bytes')
        for name, seq in (('joint_names', self.joint_names), ('urdf_joints', self.urdf_joints)):
            if (not isinstance(seq, tuple) or not seq
                    or not all(isinstance(j, str) and j for j in seq)
                    or len(set(seq)) != len(seq)):
                raise ValueError(f'nominal model: {name} must be unique non-empty names, '
                                 f'got {seq!r}')
        if len(self.urdf_joints) != len(self.joint_names):
            raise ValueError(f'nominal model: {len(self.joint_names)} joint_names but '
                             f'{len(self.urdf_joints)} urdf_joints')
        for name, mapping in (('held_q', self.held_q), ('armature', self.armature)):
            if not isinstance(mapping, Mapping):
                raise ValueError(f'nominal model: {name} must be a mapping joint -> number')
            for k, v in mapping.items():
                if (not isinstance(k, str) or isinstance(v, bool)
                        or not isinstance(v, (int, float)) or not math.isfinite(v)):
                    raise ValueError(f'nominal model: {name}[{k!r}] must be a finite number, '
                                     f'got {v!r}')
        overlap = set(self.held_q) & set(self.urdf_joints)
        if overlap:
            raise ValueError(f'nominal model: joints {sorted(overlap)} are both modelled and '
                             'held')
        if any(v < 0 for v in self.armature.values()):
            raise ValueError('nominal model: armature must be >= 0')
        if not isinstance(self.payload, tuple) or (
                self.payload and (len(self.payload) != len(PAYLOAD_PARAMS) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in self.payload))):
            raise ValueError(f'nominal model: payload must be empty or {len(PAYLOAD_PARAMS)} '
                             f'finite numbers {list(PAYLOAD_PARAMS)}, got {self.payload!r}')
        if not isinstance(self.payload_joint, str) or bool(self.payload) != bool(
                self.payload_joint):
            raise ValueError('nominal model: payload and payload_joint go together, got '
                             f'payload {list(self.payload)} on joint {self.payload_joint!r}')
        if self.identified:
            _check_identified(self.identified, len(self.joint_names))
        return self

    @property
    def sha256(self) -> str:
        """SHA-256 of the URDF text (hex)."""
        return _sha256(self.urdf_text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the checkpoint header stores)."""
        return {'urdf_text': self.urdf_text, 'urdf_sha256': self.sha256, 'source': self.source,
                'joint_names': list(self.joint_names), 'urdf_joints': list(self.urdf_joints),
                'held_q': {k: float(v) for k, v in self.held_q.items()},
                'armature': {k: float(v) for k, v in self.armature.items()},
                **({'payload': [float(v) for v in self.payload],
                    'payload_joint': self.payload_joint} if self.payload else {}),
                **({'identified': dict(self.identified)} if self.identified else {})}

    @classmethod
    def from_dict(cls, d: Any) -> 'NominalSpec':
        """Rebuild from :meth:`to_dict` output; ValueError when anything is off (including a
        URDF whose text no longer matches its stored SHA-256)."""
        allowed = [SPEC_KEYS | extra for extra in (
            frozenset(), PAYLOAD_KEYS, IDENTIFIED_KEYS, PAYLOAD_KEYS | IDENTIFIED_KEYS)]
        if not isinstance(d, dict) or set(d) not in allowed:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f'nominal model: expected keys {sorted(SPEC_KEYS)} (and '
                             f'{sorted(PAYLOAD_KEYS)} with a payload, {sorted(IDENTIFIED_KEYS)} '
                             f'when identified), got {got}')
        identified = d.get('identified', {})
        if not isinstance(identified, dict):
            raise ValueError('nominal model: identified must be a mapping')
        payload = d.get('payload', [])
        if not isinstance(payload, list):
            raise ValueError('nominal model: payload must be a list')
        for key in ('joint_names', 'urdf_joints'):
            if not isinstance(d[key], list):
                raise ValueError(f'nominal model: {key} must be a list')
        if not isinstance(d['source'], str):
            raise ValueError('nominal model: source must be a string')
        spec = cls(urdf_text=d['urdf_text'], joint_names=tuple(d['joint_names']),
                   urdf_joints=tuple(d['urdf_joints']), held_q=dict(d['held_q'])
                   if isinstance(d['held_q'], dict) else d['held_q'],
                   armature=dict(d['armature']) if isinstance(d['armature'], dict)
                   else d['armature'], source=d['source'], payload=tuple(payload),
                   payload_joint=d.get('payload_joint', ''),
                   identified=identified).validate()
        if d['urdf_sha256'] != spec.sha256:
            raise ValueError('nominal model: the URDF text does not match its stored SHA-256 '
                             '(corrupt or edited)')
        return spec

    @classmethod
    def from_urdf(cls, path: str | Path, joint_names: Sequence[str],
                  urdf_joints: Optional[Sequence[str]] = None,
                  held_q: Optional[Mapping[str, float]] = None,
                  armature: Optional[Mapping[str, float]] = None,
                  source: Optional[str] = None) -> 'NominalSpec':
        """Read the URDF at ``path`` (ValueError if unreadable). ``urdf_joints`` defaults to
        ``joint_names``; held joints not named in ``held_q`` are completed with 0 rad by
        :func:`invdyn_ros.core.nominal.complete_spec`."""
        p = Path(path)
        try:
            text = p.read_text(encoding='utf-8')
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f'nominal model: cannot read URDF {p}: {e}') from None
        names = tuple(joint_names)
        return cls(urdf_text=text, joint_names=names,
                   urdf_joints=tuple(urdf_joints) if urdf_joints is not None else names,
                   held_q=dict(held_q or {}), armature=dict(armature or {}),
                   source=source if source is not None else str(p)).validate()

    def same_model(self, other: Optional['NominalSpec'], payload: bool = True) -> bool:
        """True when ``other`` describes the same nominal model (source text aside; the
        payload aside too with ``payload=False``: the same robot carrying another load)."""
        if other is None:
            return False
        a, b = self.to_dict(), other.to_dict()
        ignored = ('source', 'urdf_text') + (() if payload else tuple(PAYLOAD_KEYS))
        for key in ignored:
            a.pop(key, None)
            b.pop(key, None)
        return a == b


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_identified(ident: Any, dof: int) -> None:
    """ValueError unless ``ident`` has :data:`IDENTIFIED_FIELDS` with usable values (the
    number of bodies is checked against the URDF by the nominal model)."""
    if not isinstance(ident, Mapping) or set(ident) != IDENTIFIED_FIELDS:
        got = sorted(ident) if isinstance(ident, Mapping) else type(ident).__name__
        raise ValueError(f'nominal model: identified must have keys '
                         f'{sorted(IDENTIFIED_FIELDS)}, got {got}')
    bodies = ident['body_params']
    if (not isinstance(bodies, (list, tuple)) or not bodies or not all(
            isinstance(b, (list, tuple)) and len(b) == len(PAYLOAD_PARAMS)
            and all(_finite(v) for v in b) for b in bodies)):
        raise ValueError(f'nominal model: identified.body_params must be lists of '
                         f'{len(PAYLOAD_PARAMS)} finite numbers {list(PAYLOAD_PARAMS)}')
    for key in IDENTIFIED_JOINT_TERMS:
        v = ident[key]
        if not isinstance(v, (list, tuple)) or len(v) != dof or not all(map(_finite, v)):
            raise ValueError(f'nominal model: identified.{key} must be {dof} finite numbers')
    if not (_finite(ident['coulomb_velocity']) and ident['coulomb_velocity'] > 0):
        raise ValueError('nominal model: identified.coulomb_velocity must be > 0 [rad/s]')
    if not isinstance(ident['fit'], Mapping):
        raise ValueError('nominal model: identified.fit must be a mapping')


def payload_mass(spec: Optional[NominalSpec]) -> float:
    """The mass a spec's payload adds [kg] (0 without a spec or payload)."""
    return float(spec.payload[0]) if spec is not None and spec.payload else 0.0


def spec_from_meta(meta: Mapping[str, Any]) -> Optional[NominalSpec]:
    """The nominal spec a checkpoint's metadata carries (None for target 'full');
    ValueError when the target needs one and it is missing or invalid."""
    target = check_target(meta.get('target', DEFAULT_TARGET))
    raw = meta.get('nominal')
    if target not in RESIDUAL_TARGETS:
        if raw is not None:
            raise ValueError(f"target {target!r} carries no nominal model, but one is stored")
        return None
    if raw is None:
        raise ValueError(f'target {target!r} needs a nominal model, none is stored')
    spec = NominalSpec.from_dict(raw)
    joints = meta.get('joint_names')
    if joints is not None and tuple(joints) != spec.joint_names:
        raise ValueError(f'nominal model joints {list(spec.joint_names)} differ from the model '
                         f'joints {list(joints)}')
    return spec
