"""Fuzz a live predictor over DDS with 10,000 random and mutated joint states (invdyn_ros.fuzz):
no crash, nothing unsafe published, every message answered or rejected as the oracle says.
Plus the fuzz's own checks, shown to catch what they are meant to catch."""

import math

import numpy as np
import ros_harness  # noqa: F401 - sets up the environment the node inherits

from invdyn_ros.fuzz import (_check_outputs, expected_rejection, FuzzMsg, FuzzOptions,
                             FuzzReport, InputBounds, MESSAGE_KINDS, MessageSource, run_fuzz)

J = ('a', 'b', 'c')
#: Plausible: q within 30 rad of 0, qd within 100 rad/s.
BOUNDS = InputBounds(np.zeros(3), np.full(3, 30.0), np.zeros(3), np.full(3, 100.0))


def test_ten_thousand_messages_at_a_live_predictor(tmp_path):
    # Low limits: the shipped model's torques on this input exceed them, so the clamp is
    # exercised on many outputs and every one of them is checked against the limit.
    limits = (20.0, 30.0, 10.0, 5.0, 2.0)
    opts = FuzzOptions(messages=10_000, seed=1234, torque_limits=limits)
    report = run_fuzz(opts, log_dir=tmp_path)
    print(report.summary())
    assert report.sent == 10_000
    assert report.crashes == 0, report.summary()
    assert report.unsafe_outputs == 0, report.unsafe_examples
    assert report.accounting_errors == [], report.accounting_errors
    # Every message answered or rejected; a starved machine may lose a little of a best-effort
    # burst in transport (then the counts are checked as bounds, see invdyn_ros.fuzz).
    assert 0 <= report.unaccounted <= 0.01 * report.sent
    assert report.liveness_answered == 100
    # The storm really was a storm: every message-level kind was sent and rejected, and
    # many messages still got through (state carried across the rejections in between).
    for kind in MESSAGE_KINDS:
        assert report.expected[kind] > 50, kind
        if report.unaccounted == 0:
            assert report.rejections.get(kind, 0) == report.expected[kind], kind
    assert report.rejections.get('duplicate_stamp', 0) > 0
    assert report.answered > 5_000 and report.answered == report.answered_cmd
    assert any(k.startswith('velocity_absent') for k in report.mutations)


def test_oracle_on_hand_made_messages():
    def m(names, pos, vel=(), eff=(), sec=10, nsec=0):
        return FuzzMsg(list(names), list(pos), list(vel), list(eff), sec, nsec, 'hand')
    ok = [1.0, 2.0, 3.0]
    assert expected_rejection(m(J, ok, ok, ok), J) is None
    assert expected_rejection(m(J, ok), J) is None                          # no vel, no effort
    assert expected_rejection(m(('c', 'x', 'a', 'b'), [1.0, math.nan, 2.0, 3.0], ok + [1.0]),
                              J) is None                    # NaN in a joint we ignore
    assert expected_rejection(m((), ()), J) == 'empty'
    assert expected_rejection(m(J, ()), J) == 'empty'
    assert expected_rejection(m(J, ok[:2]), J) == 'length_mismatch'
    assert expected_rejection(m(J, ok, ok[:2]), J) == 'length_mismatch'
    assert expected_rejection(m(J, ok, (), ok + [1.0]), J) == 'length_mismatch'
    assert expected_rejection(m(('a', 'a', 'b'), ok), J) == 'duplicate_names'
    assert expected_rejection(m(('a', 'b', 'x'), ok), J) == 'missing_joint'
    assert expected_rejection(m(J, ok, [0.0, math.inf, 0.0]), J) == 'non_finite'
    assert expected_rejection(m(J, ok, (), [math.nan, 0.0, 0.0]), J) == 'non_finite'
    assert expected_rejection(m(J, [1e100, 0.0, 0.0]), J) is None           # huge, allowed
    assert expected_rejection(m(J, ok, (), [0.0, -1e200, 0.0]), J) == 'non_finite'  # absurd
    assert expected_rejection(m(J, ok, sec=0), J) == 'zero_stamp'
    assert expected_rejection(m(J, ok, sec=-5, nsec=10), J) == 'zero_stamp'
    assert expected_rejection(m(J, [29.9, 0.0, 0.0]), J, BOUNDS) is None
    assert expected_rejection(m(J, [0.0, -30.1, 0.0]), J, BOUNDS) == 'out_of_range'
    assert expected_rejection(m(J, ok, [0.0, 0.0, 101.0]), J, BOUNDS) == 'out_of_range'
    assert expected_rejection(m(J, ok, (), [1e100, 0.0, 0.0]), J, BOUNDS) is None   # effort


def test_source_is_reproducible_and_covers_every_kind():
    a, b = MessageSource(J, 7), MessageSource(J, 7)
    seq_a = [a.random() for _ in range(3000)]
    seq_b = [b.random() for _ in range(3000)]
    assert [(x.names, x.stamp_ns, x.mutation) for x in seq_a] == \
        [(x.names, x.stamp_ns, x.mutation) for x in seq_b]
    kinds = {expected_rejection(x, J, BOUNDS) for x in seq_a}
    assert kinds == set(MESSAGE_KINDS) | {None}


class _FakeSide:
    def __init__(self, ff, cmd):
        self.ff, self.cmd = ff, cmd


def test_output_check_catches_every_kind_of_unsafe_output():
    opts = FuzzOptions(joint_names=J, torque_limits=(1.0, 2.0, 3.0))
    good = (100, list(J), [0.5, -2.0, 3.0])
    bad = [
        (101, list(J), [math.nan, 0.0, 0.0]),            # NaN
        (102, list(J), [0.0, math.inf, 0.0]),            # inf
        (103, list(J), [1.0001, 0.0, 0.0]),              # beyond the limit
        (104, list(J), [0.0, 0.0]),                      # too short
        (105, ['b', 'a', 'c'], [0.0, 0.0, 0.0]),         # other joint order
        (999, list(J), [0.0, 0.0, 0.0]),                 # a stamp no valid input carried
    ]
    report = FuzzReport()
    _check_outputs(report, _FakeSide([good], [good[2]]), opts, {100})
    assert report.unsafe_outputs == 0
    _check_outputs(report, _FakeSide(bad, [[0.0, -2.5, 0.0], [math.nan, 0, 0]]), opts,
                   {100, 101, 102, 103, 104, 105})
    assert report.unsafe_outputs == len(bad) + 2, report.unsafe_examples
