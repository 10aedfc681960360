"""Loaders: files and folders of robot data -> :class:`Trajectory` lists.

Supported inputs (see :func:`load_trajectories`, which picks by what the path is):

* rosbag2 folders (sqlite3 or MCAP) with ``sensor_msgs/JointState`` (:mod:`.bagio`);
* ``.npz`` files (one trajectory each; keys ``q``, ``qd``, ``tau``, optional ``qdd``, ``t``,
  ``rate_hz``, ``joint_names``) or folders of them;
* the Baxter CSV layout of Valencia-Vidal et al. 2023 (space separated, header row, 100 Hz,
  7 angles, 7 velocities, 7 torques), a file or a folder of them;
* the LASA KUKA iiwa 14 CSV (750 x 28, 25 Hz, q, qd, qdd, tau with flipped torque sign);
* the SARCOS ``sarcos_inv_test.mat`` (4449 x 28: q, qd, qdd, tau).

Every loader fails with :class:`DataError` naming the file and the problem; nothing is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import re
from typing import Optional, Sequence, Union
import zipfile

import numpy as np

from invdyn_ros.core.trajectory import DataError, Trajectory

_LOG = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Baxter left-arm joint names as the robot publishes them on /robot/joint_states.
BAXTER_JOINTS = ('left_s0', 'left_s1', 'left_e0', 'left_e1', 'left_w0', 'left_w1', 'left_w2')
#: Baxter set sample rate [Hz] (the files have no time column; see the set's README).
BAXTER_RATE_HZ = 100.0
#: KUKA iiwa joint names as lbr_fri_ros2_stack publishes them.
IIWA_JOINTS = tuple(f'lbr_A{i}' for i in range(1, 8))
#: The LASA iiwa log was decimated to 25 Hz (every 20th sample of 500 Hz).
IIWA_RATE_HZ = 25.0
SARCOS_JOINTS = tuple(f'sarcos_j{i}' for i in range(1, 8))
#: Nominal SARCOS rate [Hz]; the test split is only loosely time-ordered (not for sequences).
SARCOS_RATE_HZ = 100.0

NPZ_REQUIRED = ('q', 'qd', 'tau')
NPZ_KNOWN = NPZ_REQUIRED + ('qdd', 't', 'rate_hz', 'joint_names')


# --- npz -----------------------------------------------------------------------------------

def load_npz(path: PathLike) -> Trajectory:
    """One trajectory from an ``.npz`` file (no pickled objects are ever loaded)."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise DataError(src, 'no such file')
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in NPZ_REQUIRED if k not in keys]
            if missing:
                raise DataError(src, f'missing arrays {missing} (has {sorted(keys)})')
            arrays = {k: z[k] for k in NPZ_KNOWN if k in keys}
    except DataError:
        raise
    except ValueError as e:
        # np.load raises ValueError for object arrays when allow_pickle is False.
        raise DataError(src, f'refused: {e}') from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise DataError(src, f'not a readable .npz file ({type(e).__name__}: {e})') from None
    q = arrays['q']
    names = arrays.get('joint_names')
    if names is None:
        joint_names = tuple(f'joint_{i + 1}' for i in range(q.shape[-1] if q.ndim else 0))
    else:
        joint_names = tuple(str(n) for n in np.atleast_1d(names).tolist())
    rate = arrays.get('rate_hz')
    for k in ('q', 'qd', 'tau', 'qdd', 't'):
        if k in arrays and arrays[k].dtype.kind not in 'fiu':
            raise DataError(src, f'array {k} has non-numeric dtype {arrays[k].dtype}')
    return Trajectory(
        q=q, qd=arrays['qd'], tau=arrays['tau'], qdd=arrays.get('qdd'), t=arrays.get('t'),
        rate_hz=None if rate is None else float(rate), joint_names=joint_names, source=src)


def save_npz(path: PathLike, traj: Trajectory) -> Path:
    """Write ``traj`` as an ``.npz`` (atomically: temp file then rename)."""
    path = Path(path)
    arrays = {'q': traj.q, 'qd': traj.qd, 'tau': traj.tau,
              'joint_names': np.array(traj.joint_names, dtype=str)}
    if traj.qdd is not None:
        arrays['qdd'] = traj.qdd
    if traj.t is not None:
        arrays['t'] = traj.t
    if traj.rate_hz is not None:
        arrays['rate_hz'] = np.float64(traj.rate_hz)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --- text tables ---------------------------------------------------------------------------

def _load_table(path: Path, delimiter: Optional[str], skip_header: int, ncols: int
                ) -> np.ndarray:
    src = str(path)
    if not path.is_file():
        raise DataError(src, 'no such file')
    try:
        a = np.loadtxt(path, delimiter=delimiter, skiprows=skip_header, ndmin=2)
    except ValueError as e:
        raise DataError(src, f'unparsable table ({e})') from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(src, f'unreadable ({e})') from None
    if a.shape[0] == 0:
        raise DataError(src, 'no data rows')
    if a.shape[1] != ncols:
        raise DataError(src, f'expected {ncols} columns, found {a.shape[1]}')
    return a


def _drop_bad_rows(a: np.ndarray, src: str) -> tuple[np.ndarray, np.ndarray]:
    """Skip rows with NaN/inf (counted and logged): an isolated bad sample is not worth
    refusing a whole recording for. The filter restarts over the hole via the gap rule."""
    good = np.all(np.isfinite(a), axis=1)
    nbad = int((~good).sum())
    if nbad:
        _LOG.warning('%s: skipped %d rows with NaN/inf values', src, nbad)
        if nbad == len(a):
            raise DataError(src, 'every row has NaN/inf values')
    return a[good], good


def load_baxter_csv(path: PathLike) -> Trajectory:
    """A Baxter run (Valencia-Vidal et al. 2023): 100 Hz, left arm, torques with gravity."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise DataError(src, 'no such file')
    with open(path, 'r', errors='replace') as f:
        header = f.readline().split()
    if len(header) != 21 or not header[0].startswith('ang_'):
        raise DataError(src, f'not the Baxter layout (header {header[:3]}...)')
    names = tuple(h[len('ang_'):] for h in header[:7])
    a = _load_table(path, None, 1, 21)
    a, good = _drop_bad_rows(a, src)
    # No time column: stamps from the set's documented rate, keeping the holes of skipped rows.
    t = np.flatnonzero(good) / BAXTER_RATE_HZ
    return Trajectory(q=a[:, :7], qd=a[:, 7:14], tau=a[:, 14:21], t=t, rate_hz=BAXTER_RATE_HZ,
                      joint_names=names, source=src)


def load_iiwa_lasa_csv(path: PathLike) -> Trajectory:
    """The LASA iiwa 14 log: 25 Hz, recorded qdd, torque sign flipped to the RNEA convention."""
    path = Path(path)
    a = _load_table(path, ',', 0, 28)
    a, good = _drop_bad_rows(a, str(path))
    return Trajectory(q=a[:, :7], qd=a[:, 7:14], qdd=a[:, 14:21], tau=-a[:, 21:28],
                      t=np.flatnonzero(good) / IIWA_RATE_HZ, rate_hz=IIWA_RATE_HZ,
                      joint_names=IIWA_JOINTS, source=str(path))


def load_sarcos_mat(path: PathLike, variable: Optional[str] = None) -> Trajectory:
    """A SARCOS .mat split (q, qd, qdd, tau), e.g. the GPML ``sarcos_inv_test``."""
    import scipy.io  # Imported here: only this loader needs scipy.io.
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise DataError(src, 'no such file')
    try:
        m = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises a variety of types for broken files.
        raise DataError(src, f'not a readable .mat file ({type(e).__name__}: {e})') from None
    names = [k for k in m if not k.startswith('__')]
    var = variable or (path.stem if path.stem in m else (names[0] if len(names) == 1 else None))
    if var is None or var not in m:
        raise DataError(src, f'cannot tell which variable holds the data (has {names})')
    a = np.asarray(m[var], dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 28:
        raise DataError(src, f'variable {var} has shape {a.shape}, expected (N, 28)')
    a, good = _drop_bad_rows(a, src)
    return Trajectory(q=a[:, :7], qd=a[:, 7:14], qdd=a[:, 14:21], tau=a[:, 21:28],
                      t=np.flatnonzero(good) / SARCOS_RATE_HZ, rate_hz=SARCOS_RATE_HZ,
                      joint_names=SARCOS_JOINTS, source=src)


# --- dispatch ------------------------------------------------------------------------------

def _is_bag(path: Path) -> bool:
    return path.is_dir() and ((path / 'metadata.yaml').is_file() or _is_interrupted_bag(path))


def _is_interrupted_bag(path: Path) -> bool:
    """A bag folder whose recording was killed: no metadata.yaml, one storage file."""
    if not path.is_dir() or (path / 'metadata.yaml').is_file():
        return False
    from invdyn_ros.core.bagio import interrupted_bag_file
    return interrupted_bag_file(path) is not None


def _natural_key(path: Path) -> list:
    """Sort key that orders bag_2 before bag_10 (recorder rotations are numbered)."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', path.name)]


def _sniff_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == '.npz':
        return 'npz'
    if suffix == '.mat':
        return 'mat'
    if suffix in ('.db3', '.mcap'):
        return 'bagfile'
    if suffix in ('.csv', '.txt'):
        with open(path, 'r', errors='replace') as f:
            first = f.readline()
        if first.startswith('ang_'):
            return 'baxter'
        if first.count(',') == 27:
            return 'iiwa'
    raise DataError(str(path), 'unknown data format (expected a rosbag2 folder, .npz, '
                    'Baxter or iiwa .csv, or SARCOS .mat)')


def load_path(path: PathLike, joint_names: Optional[Sequence[str]] = None,
              topic: str = '/joint_states') -> list[Trajectory]:
    """All trajectories in one file or folder, restricted to ``joint_names`` when given."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), 'no such file or folder')
    if _is_bag(path):
        from invdyn_ros.core.bagio import read_joint_state_bag
        try:
            trajs = read_joint_state_bag(path, topic=topic, joint_names=joint_names)
        except DataError as e:
            if not _is_interrupted_bag(path):
                raise
            # A recording killed before it wrote anything usable (e.g. right after rotating
            # into this bag) must not make the complete bags beside it unreadable.
            _LOG.warning('skipping interrupted recording %s: %s', path, e)
            trajs = []
    elif path.is_dir():
        files = sorted((p for p in path.iterdir()
                        if p.suffix.lower() in ('.npz', '.csv', '.mat') or _is_bag(p)),
                       key=_natural_key)
        if not files:
            raise DataError(str(path), 'folder holds no rosbag2, .npz, .csv or .mat data')
        trajs = [tr for f in files for tr in load_path(f, joint_names, topic)]
    else:
        kind = _sniff_file(path)
        if kind == 'bagfile':
            return load_path(path.parent, joint_names, topic)
        loader = {'npz': load_npz, 'mat': load_sarcos_mat, 'baxter': load_baxter_csv,
                  'iiwa': load_iiwa_lasa_csv}[kind]
        trajs = [loader(path)]
    if joint_names is not None:
        trajs = [tr.select(joint_names) for tr in trajs]
    return trajs


def load_trajectories(paths: Sequence[PathLike], joint_names: Optional[Sequence[str]] = None,
                      topic: str = '/joint_states') -> list[Trajectory]:
    """Every trajectory in ``paths`` (files or folders of any supported kind)."""
    if not paths:
        raise DataError('', 'no data paths given')
    out = [tr for p in paths for tr in load_path(p, joint_names, topic)]
    if not out:
        raise DataError(', '.join(map(str, paths)), 'no trajectories found')
    names = {tr.joint_names for tr in out}
    if len(names) > 1:
        raise DataError(', '.join(map(str, paths)),
                        f'trajectories have different joints {sorted(names)}; choose joints')
    return out
