"""Loaders on the shared real robot data and on generated files, including bad input."""

import numpy as np
import pytest

from conftest import shared_data
from invdyn_ros.core.datasets import (BAXTER_JOINTS, load_npz, load_path, load_trajectories,
                                      save_npz)
from invdyn_ros.core.trajectory import DataError, Trajectory


def _traj(n=50, d=3, names=('a', 'b', 'c')):
    rng = np.random.default_rng(0)
    return Trajectory(q=rng.normal(size=(n, d)), qd=rng.normal(size=(n, d)),
                      tau=rng.normal(size=(n, d)), t=np.arange(n) * 0.01, joint_names=names,
                      source='gen')


def test_baxter_train_and_test_sets():
    root = shared_data('baxter_valencia2023/Dataset')
    train = load_trajectories([root / 'Training'])
    test = load_trajectories([root / 'Test'])
    # Counts from the data set's README: 67,881 training samples in 12 runs, 22,634 test in 4.
    assert (len(train), sum(map(len, train))) == (12, 67881)
    assert (len(test), sum(map(len, test))) == (4, 22634)
    tr = train[0]
    assert tr.joint_names == BAXTER_JOINTS and tr.rate_hz == 100.0
    assert np.allclose(np.diff(tr.t), 0.01)
    # Gravity is in the torques: shoulder s1 carries the arm, far from zero on average.
    assert abs(tr.tau[:, 1].mean()) > 5.0


def test_iiwa_lasa_file():
    tr, = load_path(shared_data('iiwa14_lasa/gprProcessedActualData.csv'))
    assert tr.q.shape == (750, 7) and tr.qdd is not None and tr.rate_hz == 25.0


def test_sarcos_mat():
    tr, = load_path(shared_data('sarcos_test/sarcos_inv_test.mat'))
    assert tr.q.shape == (4449, 7) and tr.qdd.shape == (4449, 7)


def test_select_joints_by_name_in_any_order():
    tr = _traj()
    sel = tr.select(['c', 'a'])
    np.testing.assert_array_equal(sel.q, tr.q[:, [2, 0]])
    with pytest.raises(DataError, match=r"joints \['z'\] not in data"):
        tr.select(['a', 'z'])


def test_npz_round_trip_file_and_folder(tmp_path):
    tr = _traj()
    save_npz(tmp_path / 'one.npz', tr)
    save_npz(tmp_path / 'two.npz', tr.slice(0, 20))
    back = load_npz(tmp_path / 'one.npz')
    np.testing.assert_array_equal(back.tau, tr.tau)
    assert back.joint_names == tr.joint_names
    trajs = load_trajectories([tmp_path], joint_names=['b'])
    assert [len(x) for x in trajs] == [50, 20] and trajs[0].joint_names == ('b',)


@pytest.mark.parametrize('arrays,match', [
    ({'q': np.zeros((5, 2)), 'qd': np.zeros((5, 2))}, r"missing arrays \['tau'\]"),
    ({'q': np.zeros((5, 2)), 'qd': np.zeros((4, 2)), 'tau': np.zeros((5, 2))},
     'mismatched array shapes'),
    ({'q': np.full((5, 2), np.nan), 'qd': np.zeros((5, 2)), 'tau': np.zeros((5, 2))},
     'NaN/inf values in q'),
    ({'q': np.zeros((5, 2)), 'qd': np.zeros((5, 2)), 'tau': np.zeros((5, 2)),
      't': np.array([0., 1., 1., 2., 3.])}, 'not strictly increasing'),
    ({'q': np.zeros((5, 2)), 'qd': np.zeros((5, 2)), 'tau': np.zeros((5, 2)),
      'rate_hz': 10.0, 'joint_names': np.array(['a', 'a'])}, 'duplicate joint names'),
    ({'q': np.zeros((0, 2)), 'qd': np.zeros((0, 2)), 'tau': np.zeros((0, 2)),
      'rate_hz': 10.0}, 'empty trajectory'),
])
def test_bad_npz_names_file_and_problem(tmp_path, arrays, match):
    path = tmp_path / 'bad.npz'
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as e:
        load_npz(path)
    assert str(path) in str(e.value)


def test_npz_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / 'hostile.npz'
    np.savez(path, q=np.array([{'x': 1}], dtype=object), qd=np.zeros(1), tau=np.zeros(1))
    with pytest.raises(DataError, match='refused'):
        load_npz(path)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / 'broken.npz'
    bad.write_bytes(b'PK\x03\x04 this is not a zip')
    with pytest.raises(DataError, match='not a readable .npz'):
        load_npz(bad)
    with pytest.raises(DataError, match='no such file or folder'):
        load_path(tmp_path / 'nope')
    (tmp_path / 'x.bin').write_bytes(b'\0\1')
    with pytest.raises(DataError, match='unknown data format'):
        load_path(tmp_path / 'x.bin')
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(DataError, match='holds no rosbag2'):
        load_path(empty)


def test_baxter_csv_bad_values_skipped_and_bad_layout_refused(tmp_path):
    header = ' '.join([f'ang_{j}' for j in BAXTER_JOINTS] + [f'vel_{j}' for j in BAXTER_JOINTS]
                      + [f'torq_{j}' for j in BAXTER_JOINTS])
    rows = np.ones((10, 21))
    rows[3, 5] = np.nan
    f = tmp_path / 'run.csv'
    f.write_text(header + '\n' + '\n'.join(' '.join(map(str, r)) for r in rows) + '\n')
    tr, = load_path(f)
    assert len(tr) == 9 and 0.03 not in np.round(tr.t, 6)   # the hole stays a hole
    g = tmp_path / 'short.csv'
    g.write_text(header + '\n1 2 3\n')
    with pytest.raises(DataError, match='expected 21 columns|unparsable'):
        load_path(g)


def test_mixed_joint_sets_refused(tmp_path):
    save_npz(tmp_path / 'a.npz', _traj())
    save_npz(tmp_path / 'b.npz', _traj(names=('x', 'y', 'z')))
    with pytest.raises(DataError, match='different joints'):
        load_trajectories([tmp_path])


def test_folder_entries_in_natural_order(tmp_path):
    for k in (10, 2, 1):
        save_npz(tmp_path / f'run_{k}.npz', _traj(n=5 + k))
    assert [len(t) for t in load_trajectories([tmp_path])] == [6, 7, 15]
