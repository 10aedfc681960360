"""The packaged LWR 4+ URDF carries the published identified parameter set, converted correctly.

Source (typed here from the publication's numbers, independently of the URDF): C. Gaz, F. Flacco,
A. De Luca, "Extracting feasible robot parameters from dynamic coefficients using nonlinear
optimization methods", IEEE ICRA 2016, as given in github.com/kjyv/FloBaRoID
model/kuka_lwr4_gaz.urdf (commit 4efd77af); standard-DH table of Gaz, Flacco, De Luca, ICRA 2014.
Masses [kg], centres of mass in DH frame i [m], inertia about the centre of mass in the axes of DH
frame i [kg m^2] (see the URDF's header for why "about the centre of mass").

The test builds that DH model twice, with Pinocchio from the DH table and with a textbook
recursive Newton-Euler (Siciliano et al., "Robotics", 2009, sec. 7.5), and checks that the URDF's
mass matrix, gravity vector and inverse dynamics equal the DH model's at random states. The
URDF's joints have the same zeros and positive directions as the DH joints (q_urdf = q_dh).
"""

import numpy as np
import pinocchio as pin
import pytest

from invdyn_ros.core.lwr_sim import DEFAULT_URDF

# Standard DH (Gaz et al. 2014): alpha_i [rad], d_i [m]; all a_i = 0, no joint offsets. Frame 0
# is at the shoulder (A1 and A2 axes intersect) with z0 up; frame 7 is at the wrist point (d7 = 0).
DH_ALPHA = (np.pi / 2, -np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, 0.0)
DH_D = (0.0, 0.0, 0.4, 0.0, 0.39, 0.0, 0.0)
#: Height of DH frame 0 (the shoulder) above the URDF's base frame (the base plate) [m].
SHOULDER_HEIGHT = 0.3105

# Gaz, Flacco, De Luca (ICRA 2016), links 1-7.
MASS = (4.1948152162, 4.2996847737, 3.658530333, 2.3846673548, 1.7035567183, 0.4000713156,
        0.6501439811)
COM = ((-0.0216387515, 0.01, -0.0376881829),
       (0.0003284751, -0.0041132249, 0.0823647642),
       (0.0002593328, 0.1137431845, -0.000100257),
       (-0.0014648843, -0.0000461, 0.148580959),
       (-0.0003791484, -0.0553526131, -0.0101255137),
       (0.0020739022, 0.0586184696, -0.044799983),
       (-0.0004601303, 0.0014789221, 0.0715608282))
# Ixx, Iyy, Izz, Ixy, Ixz, Iyz (tensor entries, about the centre of mass)
INERTIA = ((0.01, 0.0018932828, 0.01, 0.01, 0.01, 0.01),
           (0.0474108647, 0.05, 0.001601901, -0.00000621, 0.0001166457, -0.0009141575),
           (0.0469510749, 0.0008344566, 0.05, -0.000271431, 4.09e-8, -0.000577228),
           (0.0124233226, 0.0072708907, 0.0099884782, 0.000000225, -0.0005187982,
            -0.0005484476),
           (0.006322648, 0.0012020203, 0.0070806218, -0.0002163196, 0.00000652, -0.005),
           (0.0005278646, 0.0, 0.0034899625, 0.0000483, -0.0000375, -0.0010605344),
           (0.0, 0.0000323, 0.0001187527, -0.000000577, 0.0, 0.0))

GRAVITY = 9.81          # [m/s^2], Pinocchio's default
N_STATES = 300
#: Agreement required between the URDF and the DH model, relative to the largest reference value.
REL_TOL = 1e-9


def tensor(i: int) -> np.ndarray:
    xx, yy, zz, xy, xz, yz = INERTIA[i]
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def dh_link(i: int) -> pin.SE3:
    """Fixed part of DH transform i (0-based): Trans_z(d_i) Rot_x(alpha_i) (all a_i = 0)."""
    return pin.SE3(pin.utils.rotate('x', DH_ALPHA[i]), np.array([0.0, 0.0, DH_D[i]]))


def dh_model() -> pin.Model:
    """Pinocchio model built from the DH table: joint i turns about z_{i-1}."""
    model = pin.Model()
    parent = 0
    for i in range(7):
        placement = (pin.SE3(np.eye(3), np.array([0.0, 0.0, SHOULDER_HEIGHT])) if i == 0
                     else dh_link(i - 1))
        jid = model.addJoint(parent, pin.JointModelRZ(), placement, f'dh_joint_{i + 1}')
        body = pin.Inertia(MASS[i], np.array(COM[i]), tensor(i))
        model.appendBodyToJoint(jid, dh_link(i).act(body), pin.SE3.Identity())
        parent = jid
    return model


def dh_rnea(q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
    """Recursive Newton-Euler on the DH frames, quantities in the link frames (Siciliano 7.5)."""
    z0 = np.array([0.0, 0.0, 1.0])
    rot, r, w, wd, acc_c = [], [], [], [], []
    w_prev, wd_prev = np.zeros(3), np.zeros(3)
    acc_prev = np.array([0.0, 0.0, GRAVITY])        # base acceleration minus gravity
    for i in range(7):
        ct, st = np.cos(q[i]), np.sin(q[i])
        ca, sa = np.cos(DH_ALPHA[i]), np.sin(DH_ALPHA[i])
        rot_i = np.array([[ct, -st * ca, st * sa], [st, ct * ca, -ct * sa], [0.0, sa, ca]])
        r_i = np.array([0.0, DH_D[i] * sa, DH_D[i] * ca])      # o_{i-1} -> o_i in frame i
        w_i = rot_i.T @ (w_prev + qd[i] * z0)
        wd_i = rot_i.T @ (wd_prev + qdd[i] * z0 + qd[i] * np.cross(w_prev, z0))
        acc_i = rot_i.T @ acc_prev + np.cross(wd_i, r_i) + np.cross(w_i, np.cross(w_i, r_i))
        c = np.array(COM[i])
        acc_c.append(acc_i + np.cross(wd_i, c) + np.cross(w_i, np.cross(w_i, c)))
        rot.append(rot_i)
        r.append(r_i)
        w.append(w_i)
        wd.append(wd_i)
        w_prev, wd_prev, acc_prev = w_i, wd_i, acc_i
    tau = np.zeros(7)
    f_next, mu_next, rot_next = np.zeros(3), np.zeros(3), np.eye(3)
    for i in reversed(range(7)):
        c, inertia = np.array(COM[i]), tensor(i)
        f_child = rot_next @ f_next
        f_i = f_child + MASS[i] * acc_c[i]
        mu_i = (-np.cross(f_i, r[i] + c) + rot_next @ mu_next + np.cross(f_child, c)
                + inertia @ wd[i] + np.cross(w[i], inertia @ w[i]))
        tau[i] = mu_i @ (rot[i].T @ z0)
        f_next, mu_next, rot_next = f_i, mu_i, rot[i]
    return tau


def full_mass_matrix(model: pin.Model, data: pin.Data, q: np.ndarray) -> np.ndarray:
    m = pin.crba(model, data, q)
    return np.triu(m) + np.triu(m, 1).T


@pytest.fixture(scope='module')
def models():
    urdf = pin.buildModelFromUrdf(DEFAULT_URDF)
    dh = dh_model()
    return urdf, urdf.createData(), dh, dh.createData()


@pytest.fixture(scope='module')
def states(models):
    urdf = models[0]
    rng = np.random.default_rng(2016)
    q = rng.uniform(urdf.lowerPositionLimit, urdf.upperPositionLimit, (N_STATES, 7))
    qd = rng.uniform(-urdf.velocityLimit, urdf.velocityLimit, (N_STATES, 7))
    qdd = rng.normal(0.0, 10.0, (N_STATES, 7))
    return q, qd, qdd


def test_pinocchio_dh_model_matches_textbook_newton_euler(models, states):
    """The DH reference itself is right: Pinocchio on the DH table == hand-written RNEA."""
    _, _, dh, dh_data = models
    q, qd, qdd = states
    for k in range(0, N_STATES, 10):
        ref = dh_rnea(q[k], qd[k], qdd[k])
        np.testing.assert_allclose(pin.rnea(dh, dh_data, q[k], qd[k], qdd[k]), ref,
                                   rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))


def test_urdf_kinematics_equal_dh_kinematics(models, states):
    """Same joint axes, same zeros and directions, pitch joints (A2, A3, A5) at the DH origins."""
    urdf, urdf_data, dh, dh_data = models
    for q in states[0][:50]:
        pin.forwardKinematics(urdf, urdf_data, q)
        pin.forwardKinematics(dh, dh_data, q)
        for j in range(1, 8):
            motion_subspace = np.asarray(urdf_data.joints[j].S).ravel()     # (v, w), 6
            axis_urdf = urdf_data.oMi[j].rotation @ motion_subspace[3:]
            axis_dh = dh_data.oMi[j].rotation[:, 2]
            np.testing.assert_allclose(axis_urdf, axis_dh, atol=1e-12)
        for j in (2, 4, 6):
            np.testing.assert_allclose(urdf_data.oMi[j].translation,
                                       dh_data.oMi[j].translation, atol=1e-12)
        # the flange is 0.078 m beyond the wrist point along the A6 axis
        flange = dh_data.oMi[7].translation + 0.078 * dh_data.oMi[7].rotation[:, 2]
        np.testing.assert_allclose(urdf_data.oMi[7].translation, flange, atol=1e-12)


def test_urdf_dynamics_equal_published_dh_model(models, states):
    """M(q), g(q) and inverse dynamics of the URDF == those of the published DH model."""
    urdf, urdf_data, dh, dh_data = models
    q, qd, qdd = states
    dev = {'M': [], 'g': [], 'rnea': []}
    ref_max = {'M': 0.0, 'g': 0.0, 'rnea': 0.0}
    for k in range(N_STATES):
        pairs = {
            'M': (full_mass_matrix(urdf, urdf_data, q[k]), full_mass_matrix(dh, dh_data, q[k])),
            'g': (pin.computeGeneralizedGravity(urdf, urdf_data, q[k]),
                  pin.computeGeneralizedGravity(dh, dh_data, q[k])),
            'rnea': (pin.rnea(urdf, urdf_data, q[k], qd[k], qdd[k]),
                     pin.rnea(dh, dh_data, q[k], qd[k], qdd[k])),
        }
        for key, (got, ref) in pairs.items():
            dev[key].append(np.abs(got - ref).max())
            ref_max[key] = max(ref_max[key], np.abs(ref).max())
    for key in dev:
        rel = max(dev[key]) / ref_max[key]
        assert rel < REL_TOL, f'{key}: URDF deviates from the DH model by {rel:.2e} (relative)'
    assert ref_max['g'] > 20.0 and ref_max['M'] > 1.0      # a real robot's scale, not zeros


def test_urdf_masses_are_the_published_ones(models):
    urdf = models[0]
    np.testing.assert_allclose([urdf.inertias[j].mass for j in range(1, 8)], MASS, rtol=1e-12)


def test_mass_matrix_positive_definite(models, states):
    """Several link tensors of the set are not positive definite (see the URDF header), but the
    joint-space mass matrix - all that the joint dynamics use - is, even without armature."""
    urdf, urdf_data = models[0], models[1]
    low = min(np.linalg.eigvalsh(full_mass_matrix(urdf, urdf_data, q)).min()
              for q in states[0])
    assert low > 1e-5
