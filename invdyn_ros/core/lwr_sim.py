"""A simulated KUKA LWR 4+ carrying a flask of liquid, for learning inverse dynamics.

The robot of Rueckert et al. (Humanoids 2017) pushed flasks of 200/300/400 ml liquid with the
first five joints of a KUKA LWR. This module recreates that setting so the learners can be
developed and tested without the robot:

* **Rigid body**: the packaged URDF (``models_data/kuka_lwr4plus.urdf``) evaluated with
  Pinocchio (``aba`` forward, ``rnea`` inverse), plus reflected rotor inertia (``armature``).
  Its link inertial parameters are the identified set of Gaz, Flacco, De Luca (ICRA 2016),
  converted from their DH frames (sources and caveats in the URDF's header comment).
* **Joint friction**: a LuGre model per joint (Canudas de Wit et al., IEEE TAC 1995): Coulomb,
  Stribeck and viscous parts plus the bristle state ``z`` that gives presliding hysteresis.
* **Liquid payload**: a flask at the flange holding ``payload_ml`` of water (1 g/ml) plus the
  flask's own mass. The liquid's first sloshing mode is the standard equivalent mechanical
  model of a liquid in an upright cylinder (Abramson, NASA SP-106, 1966; Ibrahim, "Liquid
  Sloshing Dynamics", 2005): a spring-mass that moves laterally in the flask at about 3 Hz,
  excited by the flask's acceleration and gravity, and pushing back on the flange through
  Pinocchio's external-force argument ``fext``.
* **Sensors**: Gaussian noise (configurable std, seeded) on measured q, qd and tau.
* **Motion**: minimum-jerk reaching between random reachable via points and back-and-forth
  pushing strokes in joints 1-5 (joints 6 and 7 held), tracked at 1 kHz by computed torque
  with a *nominal* model (URDF + armature, no friction, no payload, no slosh) plus PD.

Torque convention (``LwrSimConfig.torque_sensor``):
    ``'motor'`` (default): the measured torque is the torque the joint drive applies, after
    saturation at the effort limits: ``tau = M(q) qdd + h(q, qd) + tau_friction + tau_payload``.
    It is the torque that produced the observed motion, i.e. what an inverse model must output
    to reproduce the motion as feedforward, and what a current-sensing robot reports in its
    ``effort`` field. ``'link'``: what a link-side joint torque sensor behind the gear (the
    LWR's own sensors) reads: motor torque minus joint friction, i.e. friction is invisible.

Time alignment: row ``k`` of :func:`simulate` holds the state at ``t_k`` and the torque held
(zero-order hold) over ``[t_k, t_k + 1/rate_hz)``; ``meta['qdd_true'][k]`` is the true
acceleration at ``t_k``, so with friction, payload and noise off
``rnea(q[k], qd[k], qdd_true[k]) == tau[k]`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pinocchio as pin

from invdyn_ros.core.trajectory import Trajectory

#: The packaged URDF of the KUKA LWR 4+ (see the comment at its top for parameter sources).
DEFAULT_URDF = str(Path(__file__).resolve().parent / 'models_data' / 'kuka_lwr4plus.urdf')

JOINT_NAMES = ('lwr_a1_joint', 'lwr_a2_joint', 'lwr_e1_joint', 'lwr_a3_joint',
               'lwr_a4_joint', 'lwr_a5_joint', 'lwr_a6_joint')
DOF = 7
#: Joints (0-based) that move in the paper's experiments; the other two are held.
MOVING_JOINTS = (0, 1, 2, 3, 4)
HELD_JOINTS = (5, 6)

#: Standard gravity [m/s^2] (Pinocchio's default model.gravity uses the same value).
GRAVITY = 9.81
#: Home pose [rad]: hand in front of the robot at table height with the flange facing forward
#: (A2 + 0.5 and A3 - 1.5 put the forearm 2.0 rad from vertical; A5 - 0.43 turns the flange
#: horizontal, so the flask mounted along the flange x axis stands upright).
HOME_Q = np.array([0.0, 0.5, 0.0, -1.5, 0.0, -0.43, 0.0])

#: Reflected rotor inertia per joint [kg m^2]. Not published for the LWR; the order of
#: magnitude of rotor inertia (~1e-5 kg m^2) times harmonic-drive ratio^2 (160^2). It is part of
#: the nominal model too (a datasheet-level quantity), so it is not a residual to be learned.
ARMATURE = (0.3, 0.3, 0.15, 0.15, 0.1, 0.05, 0.05)

# LuGre friction defaults per joint. These are assumptions with magnitudes typical of
# harmonic-drive joints of arms this size (a few Nm of Coulomb friction on the big joints,
# less on the wrist), not identified LWR values.
FRICTION_COULOMB = (1.5, 1.5, 1.0, 1.0, 0.6, 0.3, 0.3)     # Fc [Nm]
FRICTION_STATIC = (2.2, 2.2, 1.5, 1.5, 0.9, 0.45, 0.45)    # Fs [Nm] (breakaway)
FRICTION_VISCOUS = (2.0, 2.0, 1.2, 1.2, 0.6, 0.3, 0.3)     # sigma2 [Nm s/rad]
STRIBECK_VELOCITY = 0.03        # vs [rad/s]
#: Presliding range [rad]: the bristle stiffness is set so breakaway happens at this deflection.
PRESLIDING_RANGE = 2e-4
#: Damping ratio of the presliding (bristle) oscillation against the rotor inertia.
BRISTLE_DAMPING_RATIO = 0.5

# Flask geometry: a cylinder standing on a bracket in front of the flange (mounted along the
# flange x axis, which points up in HOME_Q). Fill height follows from the volume.
FLASK_RADIUS = 0.04             # [m]
FLASK_HEIGHT = 0.20             # [m]; holds 1.005 l
FLASK_MASS_KG = 0.2             # empty flask plus bracket [kg]
#: Flask bottom centre in the flange frame [m]: 5 cm below the flange axis, 7 cm in front.
FLASK_BOTTOM_IN_FLANGE = np.array([-0.05, 0.0, 0.07])
MAX_PAYLOAD_ML = 1000.0
WATER_KG_PER_ML = 1e-3
#: First zero of J1' (Bessel), the first antisymmetric sloshing mode of an upright cylinder.
BESSEL_XI1 = 1.8412
SLOSH_DAMPING_RATIO = 0.02      # water in a small container: 1-3 % of critical

# Sensor noise defaults (std): encoder, differentiated velocity, joint torque sensor.
Q_NOISE_STD = 1e-4              # [rad]
QD_NOISE_STD = 2e-3             # [rad/s]
TAU_NOISE_STD = 0.1             # [Nm]

# Tracking controller (computed torque with the nominal model): error dynamics with natural
# frequency 25 rad/s, damping 1 - stiff enough to track, soft enough to leave the unmodelled
# friction/payload/slosh visible in the motion.
CTRL_OMEGA = 25.0               # [rad/s]
CTRL_DAMPING = 1.0

# Motion generator.
REACH_HALF_RANGE = np.array([0.8, 0.35, 0.5, 0.4, 0.6])    # via points: HOME_Q +- this [rad]
REACH_DURATION = (1.2, 2.5)     # [s]
DWELL_DURATION = (0.0, 0.4)     # [s]
PUSH_AMPLITUDE = (0.06, 0.16)   # flange travel per stroke [m]
PUSH_STROKE_DURATION = (0.4, 0.8)   # [s]; brisk, so the liquid sloshes
PUSH_STROKES = (2, 5)           # strokes per block (integers, upper bound exclusive)
PUSH_DIRECTION_JITTER = 0.5     # [rad] around the radial direction in the horizontal plane
#: Peak planned speed as a fraction of each joint's velocity limit.
VELOCITY_FRACTION = 0.5
#: Planned positions stay inside this fraction of each joint's range.
LIMIT_FRACTION = 0.85
MIN_FLANGE_HEIGHT = 0.15        # [m] above the base plate (the table)
MOTIONS = ('mixed', 'reach', 'push')


def _per_joint(values: Sequence[float] | float, name: str) -> np.ndarray:
    a = np.broadcast_to(np.asarray(values, dtype=np.float64), (DOF,)).copy()
    if not np.all(np.isfinite(a)):
        raise ValueError(f'{name} must be finite, got {a}')
    return a


@dataclass
class LuGreParams:
    """LuGre friction parameters, one value (or a 7-vector) per joint.

    Attributes:
        coulomb: Coulomb level Fc [Nm].
        static: breakaway (Stribeck peak) level Fs >= Fc [Nm].
        stribeck_velocity: vs [rad/s], width of the Stribeck dip.
        viscous: sigma2 [Nm s/rad].
        stiffness: bristle stiffness sigma0 [Nm/rad]; None: Fs / PRESLIDING_RANGE.
        damping: bristle damping sigma1 [Nm s/rad]; None: BRISTLE_DAMPING_RATIO of critical
            against the joint's armature.
    """

    coulomb: Sequence[float] = FRICTION_COULOMB
    static: Sequence[float] = FRICTION_STATIC
    stribeck_velocity: Sequence[float] | float = STRIBECK_VELOCITY
    viscous: Sequence[float] = FRICTION_VISCOUS
    stiffness: Optional[Sequence[float]] = None
    damping: Optional[Sequence[float]] = None


class LuGreFriction:
    """Vectorised LuGre friction for ``DOF`` joints with a stable discrete update.

    Model: ``dz/dt = v - sigma0 |v| z / g(v)``, ``g(v) = Fc + (Fs - Fc) exp(-(v/vs)^2)``,
    friction torque ``F = sigma0 z + sigma1(v) dz/dt + sigma2 v`` with the usual velocity-
    dependent bristle damping ``sigma1(v) = sigma1 exp(-(v/vs)^2)`` (keeps the model
    dissipative). The bristle ODE is stiff at speed (time constant ``g / (sigma0 |v|)`` is well
    below 1 ms), so :meth:`advance` integrates it exactly for the velocity frozen over the step
    instead of with an explicit Euler step.
    """

    def __init__(self, params: LuGreParams, armature: np.ndarray) -> None:
        self.fc = _per_joint(params.coulomb, 'coulomb friction')
        self.fs = _per_joint(params.static, 'static friction')
        self.vs = _per_joint(params.stribeck_velocity, 'Stribeck velocity')
        self.sigma2 = _per_joint(params.viscous, 'viscous friction')
        if np.any(self.fc <= 0) or np.any(self.fs < self.fc) or np.any(self.vs <= 0) or \
                np.any(self.sigma2 < 0):
            raise ValueError('LuGre parameters need 0 < Fc <= Fs, vs > 0 and sigma2 >= 0')
        self.sigma0 = (self.fs / PRESLIDING_RANGE if params.stiffness is None
                       else _per_joint(params.stiffness, 'bristle stiffness'))
        self.sigma1 = (2.0 * BRISTLE_DAMPING_RATIO * np.sqrt(self.sigma0 * armature)
                       if params.damping is None else _per_joint(params.damping,
                                                                 'bristle damping'))
        if np.any(self.sigma0 <= 0) or np.any(self.sigma1 < 0):
            raise ValueError('LuGre needs bristle stiffness > 0 and damping >= 0')
        self.z = np.zeros(DOF)

    def reset(self) -> None:
        """Relax the bristles (z = 0)."""
        self.z[:] = 0.0

    def torque(self, v: np.ndarray) -> np.ndarray:
        """Friction torque [Nm], shape (DOF,), opposing motion at joint velocity ``v`` [rad/s]."""
        stribeck = np.exp(-(v / self.vs) ** 2)
        g = self.fc + (self.fs - self.fc) * stribeck
        zdot = v - self.sigma0 * np.abs(v) * self.z / g
        return self.sigma0 * self.z + self.sigma1 * stribeck * zdot + self.sigma2 * v

    def advance(self, v: np.ndarray, h: float) -> None:
        """Advance the bristle state by ``h`` [s] with ``v`` [rad/s] held constant (exact)."""
        g = self.fc + (self.fs - self.fc) * np.exp(-(v / self.vs) ** 2)
        a = self.sigma0 * np.abs(v) / g
        ah = a * h
        # (1 - exp(-a h)) / a, continuous at a -> 0 where it tends to h
        phi = np.where(ah > 1e-12, -np.expm1(-ah) / np.where(a > 0, a, 1.0), h)
        self.z += (v - a * self.z) * phi


@dataclass
class SloshParams:
    """First sloshing mode of ``volume_ml`` of water in the upright cylindrical flask.

    Attributes:
        liquid_kg: liquid mass [kg].
        fill_height: liquid height [m].
        mass: sloshing (moving) mass m1 [kg]; the rest of the liquid moves rigidly.
        omega: natural frequency [rad/s].
        height: height of the sloshing mass above the flask bottom [m].
    """

    liquid_kg: float
    fill_height: float
    mass: float
    omega: float
    height: float

    @staticmethod
    def for_volume(volume_ml: float) -> 'SloshParams':
        """Equivalent spring-mass of the first antisymmetric mode (Abramson 1966).

        ``omega^2 = g xi/R tanh(xi h/R)``, ``m1 = m 2R tanh(xi h/R) / (xi (xi^2 - 1) h)``,
        m1 placed ``h - (2R/xi) tanh(xi h / 2R)`` above the bottom (near the free surface
        for deep fills, lower for shallow ones), ``xi = 1.8412``.
        """
        m = volume_ml * WATER_KG_PER_ML
        if volume_ml <= 0.0:
            return SloshParams(0.0, 0.0, 0.0, 0.0, 0.0)
        r, xi = FLASK_RADIUS, BESSEL_XI1
        h = volume_ml * 1e-6 / (math.pi * r * r)
        th = math.tanh(xi * h / r)
        omega = math.sqrt(GRAVITY * xi / r * th)
        m1 = min(m, m * 2.0 * r * th / (xi * (xi * xi - 1.0) * h))
        height = max(0.0, h - 2.0 * r / xi * math.tanh(xi * h / (2.0 * r)))
        return SloshParams(m, h, m1, omega, height)


@dataclass
class LwrSimConfig:
    """Settings of :class:`LwrSim`.

    Attributes:
        rate_hz: sample (control) rate [Hz]; one :meth:`LwrSim.step` is 1 / rate_hz seconds.
        payload_ml: liquid in the flask [ml], 0..1000 (0: empty flask).
        flask_mass_kg: empty flask + bracket [kg]; 0 with payload_ml 0 means no payload at all.
        slosh: simulate the liquid's sloshing mode (else the liquid is rigid).
        slosh_damping_ratio: damping of the sloshing mode, fraction of critical.
        friction: simulate LuGre joint friction.
        friction_params: LuGre parameters.
        armature: reflected rotor inertia per joint [kg m^2], in true and nominal model.
        q_noise_std, qd_noise_std, tau_noise_std: sensor noise std [rad, rad/s, Nm].
        torque_sensor: 'motor' (applied drive torque, includes friction) or 'link' (link-side
            torque sensor: drive torque minus friction); see the module docstring.
        substeps: integration substeps per sample (semi-implicit Euler).
        seed: seed of the noise generator.
        urdf_path: robot description; default the packaged LWR 4+ URDF.
    """

    rate_hz: float = 1000.0
    payload_ml: float = 300.0
    flask_mass_kg: float = FLASK_MASS_KG
    slosh: bool = True
    slosh_damping_ratio: float = SLOSH_DAMPING_RATIO
    friction: bool = True
    friction_params: LuGreParams = field(default_factory=LuGreParams)
    armature: Sequence[float] = ARMATURE
    q_noise_std: float = Q_NOISE_STD
    qd_noise_std: float = QD_NOISE_STD
    tau_noise_std: float = TAU_NOISE_STD
    torque_sensor: str = 'motor'
    substeps: int = 2
    seed: int = 0
    urdf_path: str = DEFAULT_URDF


@dataclass
class LwrTrueState:
    """Noise-free simulator state at time ``t`` (arrays of shape (7,) unless noted).

    Attributes:
        t: simulated time [s].
        q, qd: joint positions [rad] and velocities [rad/s].
        qdd: acceleration [rad/s^2] at the start of the last step (zero before any step).
        tau_cmd: last drive torque after saturation [Nm].
        tau_friction: joint friction at the start of the last step [Nm] (opposes motion).
        tau_sensor: noise-free torque reading of the last step [Nm] (see torque_sensor).
        slosh_pos, slosh_vel: sloshing-mass displacement [m] and velocity [m/s] in the
            flask's horizontal plane, shape (2,).
        bristle: LuGre bristle deflection z [rad].
    """

    t: float
    q: np.ndarray
    qd: np.ndarray
    qdd: np.ndarray
    tau_cmd: np.ndarray
    tau_friction: np.ndarray
    tau_sensor: np.ndarray
    slosh_pos: np.ndarray
    slosh_vel: np.ndarray
    bristle: np.ndarray


def _validate_payload(ml: float) -> float:
    try:
        v = float(ml)
    except (TypeError, ValueError):
        raise ValueError(f'payload must be a number of ml, got {ml!r}') from None
    if not (math.isfinite(v) and 0.0 <= v <= MAX_PAYLOAD_ML):
        raise ValueError(f'payload must be within 0..{MAX_PAYLOAD_ML:g} ml, got {ml!r}')
    return v


def _validate_rate(rate_hz: float) -> float:
    r = float(rate_hz)
    if not (math.isfinite(r) and r > 0.0):
        raise ValueError(f'rate_hz must be a positive number, got {rate_hz!r}')
    return r


def _cylinder_shell_inertia(mass: float, radius: float, height: float) -> np.ndarray:
    """Rotational inertia [kg m^2] (3, 3) of a thin-walled cylinder about its centre."""
    ixx = mass * (radius ** 2 / 2.0 + height ** 2 / 12.0)
    return np.diag([ixx, ixx, mass * radius ** 2])


def _solid_cylinder_inertia(mass: float, radius: float, height: float) -> np.ndarray:
    """Rotational inertia [kg m^2] (3, 3) of a solid cylinder about its centre."""
    ixx = mass * (3.0 * radius ** 2 + height ** 2) / 12.0
    return np.diag([ixx, ixx, mass * radius ** 2 / 2.0])


class LwrSim:
    """KUKA LWR 4+ with friction, a sloshing liquid payload and noisy sensors; 7 joints.

    Step API (one call = one sample period ``1 / rate_hz``)::

        sim = LwrSim(LwrSimConfig(payload_ml=300))
        sim.reset()
        q, qd, tau = sim.measure()
        sim.step(tau_cmd)          # drive torques [Nm], shape (7,)

    :meth:`measure` returns the state now and the torque reading of the last step (before any
    step: the static holding torque). :meth:`nominal_rnea` / :meth:`nominal_gravity` give the
    nominal rigid-body model (URDF + armature; no payload, friction or slosh).
    """

    def __init__(self, config: Optional[LwrSimConfig] = None) -> None:
        cfg = config if config is not None else LwrSimConfig()
        self.config = cfg
        self.rate_hz = _validate_rate(cfg.rate_hz)
        self.dt = 1.0 / self.rate_hz
        if int(cfg.substeps) < 1:
            raise ValueError(f'substeps must be >= 1, got {cfg.substeps}')
        self.substeps = int(cfg.substeps)
        if cfg.torque_sensor not in ('motor', 'link'):
            raise ValueError(f"torque_sensor must be 'motor' or 'link', got {cfg.torque_sensor!r}")
        for name in ('q_noise_std', 'qd_noise_std', 'tau_noise_std', 'flask_mass_kg',
                     'slosh_damping_ratio'):
            val = float(getattr(cfg, name))
            if not (math.isfinite(val) and val >= 0.0):
                raise ValueError(f'{name} must be a non-negative number, got {val}')
        armature = _per_joint(cfg.armature, 'armature')
        if np.any(armature < 0):
            raise ValueError(f'armature must be >= 0, got {armature}')

        self.model = pin.buildModelFromUrdf(str(cfg.urdf_path))
        names = tuple(self.model.names[1:])
        if names != JOINT_NAMES:
            raise ValueError(f'{cfg.urdf_path}: expected joints {JOINT_NAMES}, got {names}')
        self.model.armature[:] = armature
        self.data = self.model.createData()
        # The nominal model is a separate copy so payload changes never leak into it.
        self.nominal_model = self.model.copy()
        self.nominal_data = self.nominal_model.createData()
        self._flange_joint = self.model.njoints - 1
        self._link7_inertia = self.model.inertias[self._flange_joint].copy()
        self.q_lower = self.model.lowerPositionLimit.copy()
        self.q_upper = self.model.upperPositionLimit.copy()
        self.qd_limit = self.model.velocityLimit.copy()
        self.tau_limit = self.model.effortLimit.copy()

        # Flask frame in the flange frame: z (flask axis) along flange x.
        self._flask_rot = pin.utils.rotate('y', math.pi / 2.0)
        self._flask_placement = pin.SE3(self._flask_rot, FLASK_BOTTOM_IN_FLANGE.copy())
        # Operational frame at the sloshing mass's neutral point, axes = flask axes; its
        # placement is updated with the fill level.
        self._slosh_frame = self.model.addFrame(pin.Frame(
            'lwr_flask_slosh_point', self._flange_joint, self._flask_placement, pin.OP_FRAME))
        self.friction = LuGreFriction(cfg.friction_params, armature)
        self._fext = pin.StdVec_Force()
        for _ in range(self.model.njoints):
            self._fext.append(pin.Force.Zero())
        self._rng = np.random.default_rng(cfg.seed)
        self._payload_ml = _validate_payload(cfg.payload_ml)
        self._apply_payload()
        self.reset()

    # ----------------------------------------------------------------------------- properties
    @property
    def joint_names(self) -> tuple[str, ...]:
        """The 7 joint names, in column order."""
        return JOINT_NAMES

    @property
    def payload_ml(self) -> float:
        """Liquid in the flask [ml]."""
        return self._payload_ml

    @property
    def slosh(self) -> SloshParams:
        """Parameters of the current liquid's sloshing mode."""
        return self._slosh

    @property
    def time(self) -> float:
        """Simulated time since :meth:`reset` [s]."""
        return self._k * self.dt

    # ---------------------------------------------------------------------------- payload
    def set_payload(self, ml: float) -> None:
        """Change the liquid volume [ml] (0..1000) at run time; the new liquid starts at rest
        relative to the flask."""
        self._payload_ml = _validate_payload(ml)
        self._apply_payload()
        self._s = np.zeros(2)
        self._sd = np.zeros(2)
        self._update_slosh_kinematics(self._q, self._qd, self._qdd)

    def _apply_payload(self) -> None:
        cfg = self.config
        sp = SloshParams.for_volume(self._payload_ml)
        if not cfg.slosh:
            sp = replace(sp, mass=0.0)
        self._slosh = sp
        self._slosh_point_flask = np.array([0.0, 0.0, sp.height])
        self._slosh_placement = self._flask_placement * pin.SE3(np.eye(3),
                                                                self._slosh_point_flask)
        self.model.frames[self._slosh_frame].placement = self._slosh_placement
        # The whole liquid and flask are a rigid body in the Pinocchio model (the sloshing mass
        # at its neutral point); fext adds the effect of the sloshing mass's relative motion.
        payload = pin.Inertia.Zero()
        if cfg.flask_mass_kg > 0.0:
            payload += pin.Inertia(cfg.flask_mass_kg, np.array([0.0, 0.0, FLASK_HEIGHT / 2.0]),
                                   _cylinder_shell_inertia(cfg.flask_mass_kg, FLASK_RADIUS,
                                                           FLASK_HEIGHT))
        rigid_liquid = sp.liquid_kg - sp.mass
        if rigid_liquid > 0.0:
            # liquid centre at h/2; the rigid part's centre follows from removing m1
            c0 = (sp.liquid_kg * sp.fill_height / 2.0 - sp.mass * sp.height) / rigid_liquid
            payload += pin.Inertia(rigid_liquid, np.array([0.0, 0.0, c0]),
                                   _solid_cylinder_inertia(rigid_liquid, FLASK_RADIUS,
                                                           sp.fill_height))
        if sp.mass > 0.0:
            payload += pin.Inertia(sp.mass, self._slosh_point_flask.copy(), np.zeros((3, 3)))
        self.model.inertias[self._flange_joint] = (
            self._link7_inertia + self._flask_placement.act(payload))
        self.data = self.model.createData()

    # -------------------------------------------------------------------------------- state
    def reset(self, q0: Optional[np.ndarray] = None) -> None:
        """Put the arm at rest at ``q0`` [rad], shape (7,) (default: :data:`HOME_Q`)."""
        q = HOME_Q.copy() if q0 is None else np.asarray(q0, dtype=np.float64).copy()
        if q.shape != (DOF,) or not np.all(np.isfinite(q)):
            raise ValueError(f'q0 must be 7 finite joint positions, got {q0!r}')
        if np.any(q < self.q_lower) or np.any(q > self.q_upper):
            raise ValueError(f'q0 outside the joint limits: {q}')
        self._q = q
        self._qd = np.zeros(DOF)
        self._qdd = np.zeros(DOF)
        self._k = 0
        self.friction.reset()
        self._tau_fric = np.zeros(DOF)
        self._s = np.zeros(2)
        self._sd = np.zeros(2)
        # start the liquid at its static equilibrium (s'' = 0 under gravity alone)
        self._update_slosh_kinematics(self._q, self._qd, self._qdd)
        if self._slosh.mass > 0.0:
            self._s = -self._lateral_specific_force / self._slosh.omega ** 2
        self._tau_cmd = self._holding_torque()
        self._tau_sensor = self._tau_cmd.copy()

    def _holding_torque(self) -> np.ndarray:
        self._set_slosh_force(np.zeros(2))
        return pin.rnea(self.model, self.data, self._q, np.zeros(DOF), np.zeros(DOF),
                        self._fext).copy()

    def true_state(self) -> LwrTrueState:
        """The noise-free state (copies)."""
        return LwrTrueState(
            t=self.time, q=self._q.copy(), qd=self._qd.copy(), qdd=self._qdd.copy(),
            tau_cmd=self._tau_cmd.copy(), tau_friction=self._tau_fric.copy(),
            tau_sensor=self._tau_sensor.copy(), slosh_pos=self._s.copy(),
            slosh_vel=self._sd.copy(), bristle=self.friction.z.copy())

    def measure(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noisy sensor readings, each shape (7,).

        Returns:
            q [rad] and qd [rad/s] now, and the torque reading [Nm] of the last step (the
            torque held since the previous sample; see the module docstring for the
            'motor'/'link' convention).
        """
        cfg = self.config
        q = self._q + cfg.q_noise_std * self._rng.standard_normal(DOF)
        qd = self._qd + cfg.qd_noise_std * self._rng.standard_normal(DOF)
        tau = self._tau_sensor + cfg.tau_noise_std * self._rng.standard_normal(DOF)
        return q, qd, tau

    # -------------------------------------------------------------------------------- slosh
    def _update_slosh_kinematics(self, q: np.ndarray, v: np.ndarray, a: np.ndarray) -> None:
        """Store the specific force (acceleration minus gravity) [m/s^2] at the sloshing mass's
        neutral point in flask axes, full (3,) and lateral (2,), for the state (q, v, a)."""
        if self._slosh.mass <= 0.0:
            self._lateral_specific_force = np.zeros(2)
            self._specific_force = np.zeros(3)
            return
        m, d, fid = self.model, self.data, self._slosh_frame
        pin.forwardKinematics(m, d, q, v, a)
        acc = pin.getFrameClassicalAcceleration(m, d, fid, pin.LOCAL).linear
        rot = pin.updateFramePlacement(m, d, fid).rotation
        f = acc - rot.T @ m.gravity.linear
        self._specific_force = f
        self._lateral_specific_force = f[:2].copy()

    def _set_slosh_force(self, sdd: np.ndarray) -> None:
        """Put the sloshing mass's reaction on the flange into fext (flange frame).

        Pinocchio already carries m1 rigidly at its neutral point; the correction is the force
        -m1 s'' of its relative acceleration, plus the moment of its true load acting at the
        displaced point instead of the neutral one.
        """
        m1 = self._slosh.mass
        if m1 <= 0.0:
            self._fext[self._flange_joint] = pin.Force.Zero()
            return
        f = self._specific_force
        # true load of the mass on the flask, and the displacement s, in flask axes
        fx, fy, fz = -m1 * (f[0] + sdd[0]), -m1 * (f[1] + sdd[1]), -m1 * f[2]
        sx, sy = float(self._s[0]), float(self._s[1])
        at_point = pin.Force(np.array([-m1 * sdd[0], -m1 * sdd[1], 0.0]),
                             np.array([sy * fz, -sx * fz, sx * fy - sy * fx]))
        self._fext[self._flange_joint] = self._slosh_placement.act(at_point)

    def _slosh_accel(self) -> np.ndarray:
        sp = self._slosh
        w = sp.omega
        return (-w * w * self._s - 2.0 * self.config.slosh_damping_ratio * w * self._sd
                - self._lateral_specific_force)

    # --------------------------------------------------------------------------------- step
    def step(self, tau_cmd: np.ndarray) -> None:
        """Apply drive torques ``tau_cmd`` [Nm], shape (7,), for one sample period.

        Torques beyond the effort limits are saturated (as the drives would). Raises ValueError
        for a wrong shape or NaN/inf torques, RuntimeError if the simulation diverges.
        """
        tau = np.asarray(tau_cmd, dtype=np.float64)
        if tau.shape != (DOF,):
            raise ValueError(f'tau_cmd must have shape ({DOF},), got {tau.shape}')
        if not math.isfinite(float(tau.sum())):     # any NaN/inf makes the sum non-finite
            raise ValueError(f'tau_cmd contains NaN/inf: {tau}')
        tau = np.minimum(np.maximum(tau, -self.tau_limit), self.tau_limit)
        friction_on = self.config.friction
        h = self.dt / self.substeps
        slosh_on = self._slosh.mass > 0.0
        fric_sum = np.zeros(DOF)
        fric = fric_sum
        q, v = self._q, self._qd
        m, d = self.model, self.data
        for i in range(self.substeps):
            if friction_on:
                fric = self.friction.torque(v)
                fric_sum += fric
            if slosh_on:
                # the liquid's acceleration uses the flange acceleration of the previous
                # substep: an explicit coupling that is harmless at ~3 Hz slosh frequency
                sdd = self._slosh_accel()
                self._set_slosh_force(sdd)
                qdd = pin.aba(m, d, q, v, tau - fric, self._fext).copy()
            else:
                qdd = pin.aba(m, d, q, v, tau - fric).copy()
            if i == 0:
                self._qdd = qdd
                self._tau_fric = fric.copy()
            if slosh_on:
                # semi-implicit Euler of the spring-mass (about 3 Hz: far from h's limits)
                self._sd = self._sd + h * sdd
                self._s = self._s + h * self._sd
                self._update_slosh_kinematics(q, v, qdd)
            v = v + h * qdd
            q = q + h * v
            if friction_on:
                self.friction.advance(v, h)
        if not math.isfinite(float(q.sum() + v.sum())):
            raise RuntimeError(f'simulation diverged at t={self.time:.4f} s (q={q}, qd={v})')
        self._q, self._qd = q, v
        self._k += 1
        self._tau_cmd = tau
        if self.config.torque_sensor == 'motor':
            self._tau_sensor = tau.copy()
        else:
            self._tau_sensor = tau - fric_sum / self.substeps

    # ------------------------------------------------------------------------ nominal model
    def nominal_rnea(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """Nominal inverse dynamics M(q) qdd + h(q, qd) [Nm] (URDF + armature; no payload,
        friction or slosh). Inputs [rad, rad/s, rad/s^2] of shape (7,) or (T, 7); output alike.
        """
        q, qd, qdd = (np.asarray(x, dtype=np.float64) for x in (q, qd, qdd))
        if q.shape != qd.shape or q.shape != qdd.shape or q.shape[-1:] != (DOF,) or q.ndim > 2:
            raise ValueError(f'q, qd, qdd must share shape (7,) or (T, 7), got '
                             f'{q.shape}, {qd.shape}, {qdd.shape}')
        m, d = self.nominal_model, self.nominal_data
        if q.ndim == 1:
            return pin.rnea(m, d, q, qd, qdd).copy()
        return np.array([pin.rnea(m, d, q[k], qd[k], qdd[k]) for k in range(q.shape[0])])

    def nominal_gravity(self, q: np.ndarray) -> np.ndarray:
        """Nominal gravity torque g(q) [Nm] for q [rad] of shape (7,) or (T, 7)."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape[-1:] != (DOF,) or q.ndim > 2:
            raise ValueError(f'q must have shape (7,) or (T, 7), got {q.shape}')
        m, d = self.nominal_model, self.nominal_data
        if q.ndim == 1:
            return pin.computeGeneralizedGravity(m, d, q).copy()
        return np.array([pin.computeGeneralizedGravity(m, d, qk) for qk in q])

    def flange_position(self, q: np.ndarray) -> np.ndarray:
        """Flange origin in the base frame [m], shape (3,), for q [rad] of shape (7,)."""
        d = self.nominal_data
        pin.forwardKinematics(self.nominal_model, d, np.asarray(q, dtype=np.float64))
        return d.oMi[self._flange_joint].translation.copy()

    def flask_axis(self, q: np.ndarray) -> np.ndarray:
        """Unit flask axis (bottom to top) in the base frame, shape (3,), at q [rad]."""
        d = self.nominal_data
        pin.forwardKinematics(self.nominal_model, d, np.asarray(q, dtype=np.float64))
        return d.oMi[self._flange_joint].rotation @ self._flask_rot[:, 2]


# ------------------------------------------------------------------------------ motion plans
def _min_jerk(qa: np.ndarray, qb: np.ndarray, tau: np.ndarray, duration: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-jerk profile from qa to qb at normalised times tau in [0, 1], (n, 7) each."""
    s = 10 * tau ** 3 - 15 * tau ** 4 + 6 * tau ** 5
    sd = (30 * tau ** 2 - 60 * tau ** 3 + 30 * tau ** 4) / duration
    sdd = (60 * tau - 180 * tau ** 2 + 120 * tau ** 3) / duration ** 2
    dq = (qb - qa)[None, :]
    return qa[None, :] + s[:, None] * dq, sd[:, None] * dq, sdd[:, None] * dq


class _Planner:
    """Random reaching and pushing segments in joints 1-5, joints 6-7 held at HOME_Q."""

    def __init__(self, sim: LwrSim, rng: np.random.Generator) -> None:
        self.sim = sim
        self.rng = rng
        mid = (sim.q_upper + sim.q_lower) / 2.0
        half = (sim.q_upper - sim.q_lower) / 2.0 * LIMIT_FRACTION
        self.lo, self.hi = mid - half, mid + half
        self.vmax = sim.qd_limit * VELOCITY_FRACTION
        self._data = sim.nominal_data

    def feasible(self, q: np.ndarray) -> bool:
        return bool(np.all(q >= self.lo) and np.all(q <= self.hi)
                    and self.sim.flange_position(q)[2] >= MIN_FLANGE_HEIGHT)

    def duration(self, qa: np.ndarray, qb: np.ndarray, low: float, high: float) -> float:
        """Random duration in [low, high], stretched so the min-jerk peak speed
        (1.875 |dq| / T) stays below VELOCITY_FRACTION of each joint's limit."""
        need = float(np.max(1.875 * np.abs(qb - qa) / self.vmax))
        return max(float(self.rng.uniform(low, high)), need)

    def reach(self, qa: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        for _ in range(100):
            qb = HOME_Q.copy()
            qb[list(MOVING_JOINTS)] += self.rng.uniform(-REACH_HALF_RANGE, REACH_HALF_RANGE)
            if self.feasible(qb):
                break
        else:
            qb = HOME_Q.copy()
        segs = [(qa, qb, self.duration(qa, qb, *REACH_DURATION))]
        dwell = float(self.rng.uniform(*DWELL_DURATION))
        if dwell > 0.0:
            segs.append((qb, qb, dwell))
        return segs

    def push(self, qa: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Back-and-forth strokes of the flange along a roughly radial horizontal line."""
        sim = self.sim
        m, d = sim.nominal_model, self._data
        pin.computeJointJacobians(m, d, qa)
        jac = pin.getJointJacobian(m, d, sim._flange_joint, pin.LOCAL_WORLD_ALIGNED)[:3]
        jac = jac[:, list(MOVING_JOINTS)]
        pos = d.oMi[sim._flange_joint].translation
        radial = math.atan2(pos[1], pos[0])
        for _ in range(50):
            ang = radial + self.rng.uniform(-PUSH_DIRECTION_JITTER, PUSH_DIRECTION_JITTER)
            amp = self.rng.uniform(*PUSH_AMPLITUDE)
            dx = amp * np.array([math.cos(ang), math.sin(ang), 0.0])
            qb = qa.copy()
            qb[list(MOVING_JOINTS)] += np.linalg.pinv(jac) @ dx
            if self.feasible(qb):
                break
        else:
            return self.reach(qa)
        segs = []
        n = int(self.rng.integers(*PUSH_STROKES))
        for k in range(2 * n):
            a, b = (qa, qb) if k % 2 == 0 else (qb, qa)
            segs.append((a, b, self.duration(a, b, *PUSH_STROKE_DURATION)))
        return segs

    def plan(self, seconds: float, rate_hz: float, motion: str, q0: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Desired q [rad], qd [rad/s], qdd [rad/s^2], each (T, 7), T = round(seconds*rate)."""
        n = int(round(seconds * rate_hz))
        t = np.arange(n) / rate_hz
        q_des = np.repeat(q0[None, :], n, axis=0)
        qd_des = np.zeros((n, DOF))
        qdd_des = np.zeros((n, DOF))
        # a short hold first so the controller starts from rest
        t0, qa = float(DWELL_DURATION[1]), q0.copy()
        while t0 < seconds:
            kind = motion
            if motion == 'mixed':
                kind = 'reach' if self.rng.random() < 0.5 else 'push'
            for a, b, dur in (self.reach(qa) if kind == 'reach' else self.push(qa)):
                mask = (t >= t0) & (t < t0 + dur)
                qs, qds, qdds = _min_jerk(a, b, (t[mask] - t0) / dur, dur)
                q_des[mask], qd_des[mask], qdd_des[mask] = qs, qds, qdds
                q_des[t >= t0 + dur] = b
                t0 += dur
                qa = b
        return q_des, qd_des, qdd_des


def simulate(seconds: float, payload_ml: float = 300.0, seed: int = 0,
             rate_hz: float = 1000.0, motion: str = 'mixed', noise: bool = True,
             config: Optional[LwrSimConfig] = None) -> Trajectory:
    """Simulate the LWR pushing a flask of ``payload_ml`` liquid for ``seconds`` [s].

    The arm starts at rest in :data:`HOME_Q` and follows random reaching and/or pushing motions
    (``motion`` in 'mixed', 'reach', 'push') in joints 1-5 (joints 6-7 held), tracked by
    computed torque with the nominal model plus PD, using the noisy measurements as a real
    controller would.

    Args:
        seconds: duration [s] (> 0, at least two samples).
        payload_ml: liquid volume [ml], 0..1000.
        seed: seeds both the motion plan and the sensor noise.
        rate_hz: sample and control rate [Hz].
        motion: 'mixed', 'reach' or 'push'.
        noise: add sensor noise (config stds); False gives exact readings.
        config: other simulator settings (friction, slosh, ...); its payload, seed and rate are
            replaced by the arguments above.

    Returns:
        Trajectory with 7 joints (q [rad], qd [rad/s], tau [Nm], t [s] from 0 at 1/rate_hz),
        qdd None, and meta: 'qdd_true', 'q_true', 'qd_true', 'tau_true' (noise-free), 'q_des',
        'qd_des', 'qdd_des', 'tau_friction' (at each sample), 'payload_ml', 'motion',
        'torque_sensor' - all arrays (T, 7).
    """
    try:
        secs = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f'seconds must be a number, got {seconds!r}') from None
    rate = _validate_rate(rate_hz)
    if not (math.isfinite(secs) and secs > 0.0):
        raise ValueError(f'seconds must be a positive number, got {seconds!r}')
    if motion not in MOTIONS:
        raise ValueError(f'motion must be one of {MOTIONS}, got {motion!r}')
    payload = _validate_payload(payload_ml)
    n = int(round(secs * rate))
    if n < 2:
        raise ValueError(f'{secs} s at {rate} Hz gives {n} samples; need at least 2')
    base = config if config is not None else LwrSimConfig()
    cfg = replace(base, payload_ml=payload, seed=int(seed), rate_hz=rate)
    if not noise:
        cfg = replace(cfg, q_noise_std=0.0, qd_noise_std=0.0, tau_noise_std=0.0)
    # separate streams: the plan does not change when noise is switched on or off
    plan_seed, noise_seed = np.random.SeedSequence(int(seed)).spawn(2)
    cfg = replace(cfg, seed=int(noise_seed.generate_state(1)[0]))
    sim = LwrSim(cfg)
    q_des, qd_des, qdd_des = _Planner(sim, np.random.default_rng(plan_seed)).plan(
        secs, rate, motion, HOME_Q)

    kp = CTRL_OMEGA ** 2
    kd = 2.0 * CTRL_DAMPING * CTRL_OMEGA
    out = {k: np.empty((n, DOF)) for k in ('q', 'qd', 'tau', 'qdd_true', 'q_true', 'qd_true',
                                           'tau_true', 'tau_friction')}
    q_m, qd_m, _ = sim.measure()
    for k in range(n):
        out['q'][k], out['qd'][k] = q_m, qd_m
        out['q_true'][k], out['qd_true'][k] = sim._q, sim._qd
        acc_ref = qdd_des[k] + kp * (q_des[k] - q_m) + kd * (qd_des[k] - qd_m)
        sim.step(sim.nominal_rnea(q_m, qd_m, acc_ref))
        q_m, qd_m, tau_m = sim.measure()
        out['tau'][k] = tau_m
        out['tau_true'][k] = sim._tau_sensor
        out['qdd_true'][k] = sim._qdd
        out['tau_friction'][k] = sim._tau_fric
    meta = {
        'qdd_true': out['qdd_true'], 'q_true': out['q_true'], 'qd_true': out['qd_true'],
        'tau_true': out['tau_true'], 'tau_friction': out['tau_friction'],
        'q_des': q_des, 'qd_des': qd_des, 'qdd_des': qdd_des, 'payload_ml': payload,
        'motion': motion, 'torque_sensor': cfg.torque_sensor, 'seed': int(seed),
    }
    return Trajectory(
        q=out['q'], qd=out['qd'], tau=out['tau'], joint_names=JOINT_NAMES, qdd=None,
        t=np.arange(n) / rate, rate_hz=rate,
        source=f'sim:lwr4plus payload={payload:g}ml seed={int(seed)}', meta=meta)
