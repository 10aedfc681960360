"""rosbag2 JointState reading, writing and recording on generated bags (no ROS needed)."""

import logging
import os
from pathlib import Path
import subprocess
import sys
import textwrap

from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from ruamel.yaml import YAML

from invdyn_ros.core import bagio
from invdyn_ros.core.trajectory import DataError, Trajectory

REPO = Path(__file__).resolve().parents[1]
STORAGES = ['sqlite3', 'mcap']
NAMES = ('j1', 'j2', 'j3')
RATE = 1000.0           # Hz
T0_NS = 1_700_000_000_000_000_000   # an absolute epoch stamp [ns]
MS = 1_000_000          # ns


def _traj(n, d=3, seed=0, rate=RATE, t=True, names=None):
    rng = np.random.default_rng(seed)
    times = np.arange(n) / rate if t else None
    return Trajectory(q=rng.normal(size=(n, d)), qd=rng.normal(size=(n, d)),
                      tau=rng.normal(size=(n, d)), joint_names=names or NAMES[:d],
                      t=times, rate_hz=None if t else rate)


def _msg(stamp_ns, names, pos, vel, eff, frame_id=''):
    return bagio._joint_state(stamp_ns, names, np.asarray(pos, float), np.asarray(vel, float),
                              np.asarray(eff, float), frame_id)


def _cdr(stamp_ns, names, pos, vel, eff, little_endian=True):
    msg = _msg(stamp_ns, names, pos, vel, eff)
    return bytes(bagio._typestore().serialize_cdr(msg, bagio.JOINT_STATE_TYPE,
                                                  little_endian=little_endian))


def _write_raw(path, messages, storage='mcap', topic='/joint_states',
               msgtype=bagio.JOINT_STATE_TYPE):
    """A bag written with rosbags' Writer directly: messages are (receive_ns, cdr bytes)."""
    plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as w:
        conn = w.add_connection(topic, msgtype, typestore=bagio._typestore())
        for recv_ns, data in messages:
            w.write(conn, recv_ns, data)
    return path


def _metadata(path):
    return YAML(typ='safe').load((path / 'metadata.yaml').read_text())[
        'rosbag2_bagfile_information']


# ---------------------------------------------------------------------------------------------
# Round trip and format
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('storage', STORAGES)
def test_reads_every_message_across_decode_batches(tmp_path, storage, monkeypatch):
    # Real bags are read in batches of DECODE_BATCH messages (65,536); a small batch here
    # checks that no message after the first batch is lost.
    monkeypatch.setattr(bagio, 'DECODE_BATCH', 64)
    a = _traj(1000, seed=3)
    bag = bagio.write_joint_state_bag(tmp_path / 'bag', a, storage=storage)
    got, = bagio.read_joint_state_bag(bag)
    assert len(got) == 1000
    np.testing.assert_allclose(got.q, a.q, rtol=0, atol=1e-12)


@pytest.mark.parametrize('storage', STORAGES)
def test_round_trip_is_exact_and_bag_is_complete(tmp_path, storage):
    a = _traj(500, seed=1)
    b = _traj(300, seed=2, t=False, rate=250.0)       # stamps from k / rate_hz
    bag = bagio.write_joint_state_bag(tmp_path / 'bag', [a, b], storage=storage,
                                      frame_id='base')
    stats = {}
    out = bagio.read_joint_state_bag(bag, stats=stats)
    assert len(out) == 2
    for orig, got in zip((a, b), out):
        assert got.joint_names == NAMES
        for name in ('q', 'qd', 'tau'):
            np.testing.assert_allclose(getattr(got, name), getattr(orig, name), rtol=0,
                                       atol=1e-12)
        np.testing.assert_allclose(got.t, orig.times() - orig.times()[0], rtol=0, atol=1e-12)
        assert got.rate_hz == pytest.approx(orig.rate_hz, rel=1e-9)
    assert out[0].source == f'{bag}:/joint_states[segment 0]'
    assert out[1].meta['t0_ns'] > out[0].meta['t0_ns'] + 499 * MS
    assert stats['messages'] == stats['samples'] == 800
    assert stats['segments'] == 2 and stats['gaps'] == 1
    assert all(stats[k] == 0 for k in bagio.SKIP_KINDS)

    meta = _metadata(bag)
    assert meta['version'] == bagio.BAG_VERSION == 9
    assert meta['storage_identifier'] == storage
    assert meta['message_count'] == 800
    (topic,) = meta['topics_with_message_count']
    assert topic['topic_metadata']['name'] == '/joint_states'
    assert topic['topic_metadata']['type'] == 'sensor_msgs/msg/JointState'
    assert topic['topic_metadata']['type_description_hash'].startswith('RIHS01_')
    (qos,) = topic['topic_metadata']['offered_qos_profiles']
    assert (qos['reliability'], qos['durability'], qos['history']) == \
        ('reliable', 'volatile', 'keep_last')
    assert [f.name for f in bag.iterdir()] and all(
        (bag / f).is_file() for f in meta['relative_file_paths'])
    assert not [p for p in tmp_path.iterdir() if p.name != 'bag']     # no temporary left

    # Independent check with rosbags alone: definition embedded, every message decodes.
    with Reader(bag) as reader:
        (conn,) = reader.connections
        assert 'float64[] effort' in conn.msgdef.data
        msgs = [(ts, bagio._typestore().deserialize_cdr(raw, conn.msgtype))
                for _, ts, raw in reader.messages()]
    assert len(msgs) == 800
    recv_ns, first = msgs[0]
    assert first.header.frame_id == 'base' and list(first.name) == list(NAMES)
    assert recv_ns == first.header.stamp.sec * 10**9 + first.header.stamp.nanosec
    np.testing.assert_array_equal(msgs[-1][1].effort, b.tau[-1])


def test_absolute_stamps_survive_a_second_round_trip(tmp_path):
    n = 200
    messages = [(T0_NS + k * MS, _cdr(T0_NS + k * MS, NAMES, [k, 0, 0], [1, 1, 1], [2, 2, 2]))
                for k in range(n)]
    (first,) = bagio.read_joint_state_bag(_write_raw(tmp_path / 'raw', messages))
    assert first.meta['t0_ns'] == T0_NS
    bagio.write_joint_state_bag(tmp_path / 'copy', first.slice(50, n), storage='sqlite3')
    (again,) = bagio.read_joint_state_bag(tmp_path / 'copy')
    assert again.meta['t0_ns'] == T0_NS + 50 * MS
    np.testing.assert_array_equal(again.q[:, 0], np.arange(50, n))


def test_segments_written_back_keep_their_absolute_stamps(tmp_path):
    k = np.arange(200)
    stamps = T0_NS + k * MS + np.where(k >= 100, 20 * MS, 0)        # one 21 ms step: a gap
    segs = bagio.read_joint_state_bag(_stamped_bag(tmp_path / 'two', stamps.tolist()))
    bagio.write_joint_state_bag(tmp_path / 'copy', segs)
    again = bagio.read_joint_state_bag(tmp_path / 'copy')
    assert [s.meta['t0_ns'] for s in again] == [T0_NS, T0_NS + 120 * MS]
    for a, b in zip(segs, again):
        np.testing.assert_array_equal(a.q, b.q)
        np.testing.assert_array_equal(a.t, b.t)


@pytest.mark.parametrize('storage', STORAGES)
def test_reads_the_storage_file_inside_the_folder(tmp_path, storage):
    bag = bagio.write_joint_state_bag(tmp_path / 'b', _traj(50), storage=storage)
    (f,) = [p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap')]
    (tr,) = bagio.read_joint_state_bag(f)
    assert len(tr) == 50 and tr.source.startswith(str(f))


# ---------------------------------------------------------------------------------------------
# Matching by name and skipping bad messages
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('storage', STORAGES)
def test_joints_are_matched_by_name_in_every_message(tmp_path, storage):
    rng = np.random.default_rng(3)
    all_names = np.array(['j1', 'j2', 'j3', 'gripper'])
    n = 400
    q = rng.normal(size=(n, 4))
    messages = []
    for k in range(n):
        perm = rng.permutation(4) if k else np.arange(4)
        stamp = T0_NS + k * MS
        # A few big-endian messages take the slow path; values must not depend on the path.
        messages.append((stamp, _cdr(stamp, all_names[perm], q[k, perm], q[k, perm] + 10,
                                     q[k, perm] + 20, little_endian=k % 50 != 7)))
    bag = _write_raw(tmp_path / 'shuffled', messages, storage)

    (tr,) = bagio.read_joint_state_bag(bag, joint_names=['j3', 'j1'])
    assert tr.joint_names == ('j3', 'j1')
    np.testing.assert_array_equal(tr.q, q[:, [2, 0]])
    np.testing.assert_array_equal(tr.qd, q[:, [2, 0]] + 10)
    np.testing.assert_array_equal(tr.tau, q[:, [2, 0]] + 20)

    (tr,) = bagio.read_joint_state_bag(bag)            # names of the first message
    assert tr.joint_names == tuple(all_names)
    np.testing.assert_array_equal(tr.q, q)


def _bad_message_bag(path, storage):
    """A bag with good messages at 1 kHz and one of each defect; returns the good indices."""
    good = []
    messages = []
    k_stamp = 0

    def add(data, stamp=None, recv=None):
        stamp = T0_NS + k_stamp * MS if stamp is None else stamp
        messages.append((stamp if recv is None else recv, data))

    for k in range(100):
        k_stamp = k
        v = [k, k, k]
        if k == 10:
            add(_cdr(T0_NS + k * MS, NAMES, [np.nan, 0, 0], v, v))              # non-finite
        elif k == 20:
            add(_cdr(T0_NS + k * MS, NAMES[:2], v[:2], v[:2], v[:2]))           # j3 missing
        elif k == 30:
            add(_cdr(T0_NS + k * MS, NAMES, v, v[:2], v))                       # lengths
        elif k == 40:
            add(_cdr(T0_NS + k * MS, NAMES, v, [], v))                          # no velocity
        elif k == 50:
            add(_cdr(T0_NS + k * MS, ('j1', 'j1', 'j3'), v, v, v))              # duplicates
        elif k == 60:
            add(b'\x00\x01\x00\x00garbage')                                      # undecodable
        elif k == 70:
            add(_cdr(0, NAMES, v, v, v), recv=T0_NS + k * MS)                    # zero stamp
            good.append(k)
        else:
            add(_cdr(T0_NS + k * MS, NAMES, v, v, v))
            good.append(k)
        if k == 80:   # repeated stamp, then one going backwards (receive times increase)
            add(_cdr(T0_NS + k * MS, NAMES, [-1] * 3, v, v), recv=T0_NS + k * MS + 1)
            add(_cdr(T0_NS + (k - 5) * MS, NAMES, [-2] * 3, v, v), recv=T0_NS + k * MS + 2)
    return _write_raw(path, messages, storage), good


@pytest.mark.parametrize('storage', STORAGES)
def test_bad_messages_are_skipped_counted_and_logged_once_per_kind(tmp_path, storage, caplog):
    bag, good = _bad_message_bag(tmp_path / 'bad', storage)
    stats = {}
    with caplog.at_level(logging.WARNING, logger='invdyn_ros.core.bagio'):
        (tr,) = bagio.read_joint_state_bag(bag, joint_names=NAMES, stats=stats)
    np.testing.assert_array_equal(tr.q[:, 0], good)
    np.testing.assert_array_equal(tr.t, (np.array(good) - good[0]) * MS / 1e9)
    expected = {'non_finite': 1, 'missing_joints': 1, 'length_mismatch': 1,
                'empty_velocity': 1, 'duplicate_names': 1, 'undecodable': 1,
                'stamp_repeated': 1, 'stamp_backwards': 1, 'empty_effort': 0,
                'short_segment': 0}
    assert {k: stats[k] for k in bagio.SKIP_KINDS} == expected
    assert stats['messages'] == 102 and stats['samples'] == len(good)
    assert stats['stamp_from_receive_time'] == 1
    # One warning per kind that occurred (plus one for the zero stamps), not one per message.
    assert len(caplog.records) == sum(v > 0 for v in expected.values()) + 1
    assert any('NaN/inf' in r.getMessage() and 'skipped 1 of 102' in r.getMessage()
               for r in caplog.records)


def test_stats_accumulate_into_the_callers_dict(tmp_path):
    bag, _ = _bad_message_bag(tmp_path / 'bad', 'mcap')
    stats = {'non_finite': 5}
    bagio.read_joint_state_bag(bag, stats=stats)
    bagio.read_joint_state_bag(bag, stats=stats)
    assert stats['non_finite'] == 7 and stats['messages'] == 204


# ---------------------------------------------------------------------------------------------
# Time: gaps, clock jumps, short segments
# ---------------------------------------------------------------------------------------------

def _stamped_bag(path, stamps_ns):
    """Header stamps as given; receive times increase 1 ms per message (the arrival order)."""
    return _write_raw(path, [(T0_NS + i * MS, _cdr(s, NAMES, [i, 0, 0], [0] * 3, [0] * 3))
                             for i, s in enumerate(stamps_ns)])


def test_split_at_gaps_never_joins_across_them(tmp_path):
    k = np.arange(300)
    stamps = T0_NS + k * MS + np.where(k >= 100, 50 * MS, 0) + np.where(k >= 200, 1000 * MS, 0)
    stamps = np.append(stamps, stamps[-1] + 3000 * MS)      # a lone sample after a gap
    bag = _stamped_bag(tmp_path / 'gaps', stamps.tolist())
    stats = {}
    out = bagio.read_joint_state_bag(bag, stats=stats)
    assert [len(tr) for tr in out] == [100, 100, 100]
    assert [tr.meta['segment'] for tr in out] == [0, 1, 2]
    np.testing.assert_array_equal(np.concatenate([tr.q[:, 0] for tr in out]), k)
    assert all(np.diff(tr.t).max() == pytest.approx(1e-3) for tr in out)
    assert out[1].meta['t0_ns'] == T0_NS + 150 * MS
    assert stats['gaps'] == 3 and stats['short_segment'] == 1
    assert stats['short_segments_dropped'] == 1

    out = bagio.read_joint_state_bag(bag, gap_s=0.1)      # the 50 ms step is no gap now
    assert [len(tr) for tr in out] == [200, 100]


def test_a_clock_jumping_back_starts_a_new_segment(tmp_path):
    first = T0_NS + np.arange(100) * MS
    second = T0_NS - 10_000 * MS + np.arange(50) * MS      # e.g. a restarted simulation
    bag = _stamped_bag(tmp_path / 'jump', np.concatenate([first, second]).tolist())
    stats = {}
    out = bagio.read_joint_state_bag(bag, stats=stats)
    assert [len(tr) for tr in out] == [100, 50]
    assert stats['clock_jumps_back'] == 1 and stats['stamp_backwards'] == 0


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def test_missing_path_and_folder_without_metadata(tmp_path):
    with pytest.raises(DataError, match='no such bag') as err:
        bagio.read_joint_state_bag(tmp_path / 'nope')
    assert str(tmp_path / 'nope') in str(err.value)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='metadata.yaml is missing') as err:
        bagio.read_joint_state_bag(tmp_path / 'empty')
    assert str(tmp_path / 'empty') in str(err.value)


def test_missing_topic_and_wrong_type(tmp_path):
    bag = bagio.write_joint_state_bag(tmp_path / 'b', _traj(10), topic='/arm/joint_states')
    with pytest.raises(DataError, match='topics present') as err:
        bagio.read_joint_state_bag(bag)
    assert str(bag) in str(err.value) and '/arm/joint_states' in str(err.value)

    string = bagio._typestore().types['std_msgs/msg/String'](data='hi')
    raw = bytes(bagio._typestore().serialize_cdr(string, 'std_msgs/msg/String'))
    bag = _write_raw(tmp_path / 's', [(1, raw)], msgtype='std_msgs/msg/String')
    with pytest.raises(DataError, match='std_msgs/msg/String') as err:
        bagio.read_joint_state_bag(bag)
    assert str(bag) in str(err.value)


def test_velocity_absent_everywhere_is_an_error(tmp_path):
    bag = _write_raw(tmp_path / 'nv', [(T0_NS + k * MS, _cdr(T0_NS + k * MS, NAMES, [k] * 3,
                                                             [], [0] * 3)) for k in range(5)])
    with pytest.raises(DataError, match='no velocity') as err:
        bagio.read_joint_state_bag(bag)
    assert str(bag) in str(err.value)


@pytest.mark.parametrize('storage', STORAGES)
def test_corrupt_or_truncated_storage_is_a_data_error(tmp_path, storage):
    bag = bagio.write_joint_state_bag(tmp_path / 'b', _traj(2000), storage=storage)
    (f,) = [p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap')]
    data = f.read_bytes()
    f.write_bytes(data[:len(data) // 2])
    for target in (bag, f):
        with pytest.raises(DataError) as err:
            bagio.read_joint_state_bag(target)
        assert str(target) in str(err.value)
    f.write_bytes(b'\x00' * 4096)
    with pytest.raises(DataError, match='cannot open') as err:
        bagio.read_joint_state_bag(bag)
    assert str(bag) in str(err.value)
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [unclosed')
    with pytest.raises(DataError, match='cannot open'):
        bagio.read_joint_state_bag(bag)


# ---------------------------------------------------------------------------------------------
# Atomic writing
# ---------------------------------------------------------------------------------------------

def test_failed_write_leaves_nothing_and_overwrite_is_explicit(tmp_path, monkeypatch):
    target = tmp_path / 'bag'
    bagio.write_joint_state_bag(target, _traj(20, seed=1))
    with pytest.raises(DataError, match='exists already'):
        bagio.write_joint_state_bag(target, _traj(20, seed=2))

    real_write = Writer.write
    calls = []

    def failing_write(self, conn, ts, data):
        calls.append(ts)
        if len(calls) > 10:
            raise OSError('disk full')
        real_write(self, conn, ts, data)

    monkeypatch.setattr(Writer, 'write', failing_write)
    with pytest.raises(OSError, match='disk full'):
        bagio.write_joint_state_bag(tmp_path / 'new', _traj(100))
    with pytest.raises(OSError, match='disk full'):
        calls.clear()
        bagio.write_joint_state_bag(target, _traj(100, seed=3), overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']     # no temporaries, no 'new'
    (old,) = bagio.read_joint_state_bag(target)                       # old bag untouched
    np.testing.assert_array_equal(old.q, _traj(20, seed=1).q)

    bagio.write_joint_state_bag(target, _traj(30, seed=4), storage='sqlite3', overwrite=True)
    (new,) = bagio.read_joint_state_bag(target)
    np.testing.assert_array_equal(new.q, _traj(30, seed=4).q)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']


# ---------------------------------------------------------------------------------------------
# Recorder
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('storage', STORAGES)
@pytest.mark.parametrize('limit', [{'max_bag_seconds': 0.25}, {'max_bag_bytes': 20_000}])
def test_recorder_rotates_into_complete_bags_holding_everything(tmp_path, storage, limit):
    ref = _traj(1000, seed=5)
    rec = bagio.JointStateBagRecorder()
    rec.open(tmp_path / 'rec', joint_names=NAMES, storage=storage, **limit)
    for k in range(len(ref)):
        rec.write(T0_NS + k * MS, None, ref.q[k], ref.qd[k], ref.tau[k])
        if k == 600:
            assert rec.closed_bags == bagio.recorded_bags(tmp_path / 'rec')  # readable now
    bags = rec.close()
    assert len(bags) >= 3
    assert bags == bagio.recorded_bags(tmp_path / 'rec')
    assert [b.name for b in bags] == [f'bag_{k}' for k in range(len(bags))]
    parts = [tr for b in bags for tr in bagio.read_joint_state_bag(b)]
    assert len(parts) == len(bags)
    for name in ('q', 'qd', 'tau'):
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]),
                                      getattr(ref, name))
    t_abs = np.concatenate([p.meta['t0_ns'] + np.rint(p.t * 1e9).astype(np.int64)
                            for p in parts])
    np.testing.assert_array_equal(t_abs, T0_NS + np.arange(1000) * MS)
    if 'max_bag_seconds' in limit:
        assert max(len(p) for p in parts) == 250
    else:
        assert all(_metadata(b)['message_count'] * len(
            bagio._serialize(_msg(T0_NS, NAMES, ref.q[0], ref.qd[0], ref.tau[0]))) <= 20_000
            for b in bags)

    # A restarted recorder continues the numbering instead of overwriting.
    with bagio.JointStateBagRecorder() as again:
        again.open(tmp_path / 'rec', storage=storage)
        again.write(T0_NS, NAMES, [1, 2, 3], [0, 0, 0], [0, 0, 0])
    assert bagio.recorded_bags(tmp_path / 'rec')[-1].name == f'bag_{len(bags)}'


KILLED_RECORDER = textwrap.dedent('''
    import os, signal, sys
    from invdyn_ros.core.bagio import JointStateBagRecorder
    rec = JointStateBagRecorder()
    rec.open(sys.argv[1], joint_names=['j1', 'j2'], storage=sys.argv[2],
             max_bag_seconds=0.3, flush_interval_s=3600.0)
    for k in range(50):        # 10 ms apart: bag_0 holds 30 samples, bag_1 the last 20
        rec.write(1_000_000_000 + k * 10_000_000, None, [k, k], [0, 0], [1, 1])
        if k == 39:
            rec.flush()        # what the trainer's timer does; 40..49 are never flushed
    os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.mark.parametrize('storage', STORAGES)
def test_what_survives_a_killed_recorder(tmp_path, storage, caplog):
    root = tmp_path / 'rec'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, '-c', KILLED_RECORDER, str(root), storage], env=env,
                       timeout=60)
    assert r.returncode == -9
    (closed,) = bagio.recorded_bags(root)
    (tr,) = bagio.read_joint_state_bag(closed)
    np.testing.assert_array_equal(tr.q[:, 0], np.arange(30))
    # The bag being written has no metadata.yaml; it reads up to its last flush, the folder
    # as well as its storage file, with a warning.
    current = root / 'bag_1'
    assert not (current / 'metadata.yaml').exists()
    for target in (current, bagio.interrupted_bag_file(current)):
        with caplog.at_level(logging.WARNING, logger='invdyn_ros.core.bagio'):
            (tr,) = bagio.read_joint_state_bag(target)
        np.testing.assert_array_equal(tr.q[:, 0], np.arange(30, 40))
        assert 'interrupted' in caplog.text
    # And the whole recording loads for training: both bags, in order, nothing else.
    from invdyn_ros.core.datasets import load_trajectories
    q = np.concatenate([t.q[:, 0] for t in load_trajectories([root], ['j1', 'j2'])])
    np.testing.assert_array_equal(q, np.arange(40))


def test_torn_mcap_reads_exactly_its_complete_chunks(tmp_path):
    """Cut an unfinished MCAP recording at every offset: what reads is always an exact prefix
    of what was written, holding every chunk that ended before the cut."""
    rec = bagio.JointStateBagRecorder()
    rec.open(tmp_path / 'rec', joint_names=NAMES, storage='mcap', flush_interval_s=3600.0)
    f = tmp_path / 'rec' / 'bag_0' / 'bag_0.mcap'
    ref = _traj(60, seed=8)
    ends = []                   # file size after each flushed chunk of 10 messages
    for k in range(len(ref)):
        rec.write(T0_NS + k * MS, None, ref.q[k], ref.qd[k], ref.tau[k])
        if k % 10 == 9:
            rec.flush()
            ends.append(f.stat().st_size)
    data = f.read_bytes()
    rec.close()
    cut_file = tmp_path / 'cut' / 'cut.mcap'
    cut_file.parent.mkdir()
    starts = [0] + ends[:-1]
    for cut in sorted(set(range(0, len(data) + 1, 97)) | set(ends) | {e - 1 for e in ends}):
        cut_file.write_bytes(data[:cut])
        whole = sum(e <= cut for e in ends)          # chunks (and indexes) before the cut
        begun = sum(s < cut for s in starts)         # chunks that began before the cut
        try:
            (tr,) = bagio.read_joint_state_bag(cut_file)
        except DataError as e:
            assert whole == 0, (cut, str(e))
            continue
        n = len(tr)
        assert n % 10 == 0 and 10 * max(whole, 1) <= n <= 10 * begun, (cut, n)
        np.testing.assert_array_equal(tr.q, ref.q[:n])
        np.testing.assert_array_equal(tr.tau, ref.tau[:n])


# ---------------------------------------------------------------------------------------------
# The vectorised CDR fast paths against rosbags' own (de)serialiser
# ---------------------------------------------------------------------------------------------

_text = st.text(st.characters(codec='utf-8', exclude_characters='\0'), max_size=9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_id=_text, names=st.lists(_text, max_size=5),
       lengths=st.tuples(*[st.integers(0, 5)] * 3), n=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_fast_layout_agrees_with_rosbags(frame_id, names, lengths, n, seed):
    rng = np.random.default_rng(seed)
    ts = bagio._typestore()
    arrays = [rng.normal(size=(n, m)) for m in lengths]
    stamps = rng.integers(1, 2**31 - 1, size=n) * 10**9 + rng.integers(0, 10**9, size=n)
    msgs = [bytes(ts.serialize_cdr(_msg(stamps[i], names, *(a[i] for a in arrays),
                                        frame_id=frame_id), bagio.JOINT_STATE_TYPE))
            for i in range(n)]
    layout = bagio._checked_layout(msgs[0])     # None would mean our parse disagrees
    assert layout is not None and layout.names == tuple(names)
    # Encoding all rows at once gives rosbags' bytes exactly ...
    blob = bagio._encode_rows(layout, msgs[0], stamps, *arrays)
    assert blob == b''.join(msgs)
    # ... and decoding them gives the values back.
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(n, layout.size)
    sec, nsec, *decoded = bagio._decode_rows(rows, layout)
    np.testing.assert_array_equal(sec * 10**9 + nsec, stamps)
    for got, want in zip(decoded, arrays):
        np.testing.assert_array_equal(got, want)
