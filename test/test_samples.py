"""Sample blocks predictor -> trainer (core.samples): round trip, joints by name, refusals."""

import math

import numpy as np
import pytest

from invdyn_ros.core.samples import decode_block, layout, SampleBlocker, SampleBlockError

J = ['a', 'b', 'c']


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    t = 10.0 + np.arange(n) * 1e-3
    return t, rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.normal(size=(n, 3))


def test_blocks_fill_and_round_trip_in_the_receivers_joint_order():
    t, q, qd, tau = _rows(10)
    b = SampleBlocker(J, rows=4)
    out = [b.add(t[k], q[k], qd[k], tau[k]) for k in range(10)]
    full = [o for o in out if o is not None]
    assert [o is not None for o in out] == [False, False, False, True] * 2 + [False, False]
    assert b.pending() == 2 and b.blocks == 2
    dims = layout(J, 4)
    # The receiver asks for a subset in another order.
    want = ['c', 'a']
    blk = decode_block(full[1], dims, want)
    np.testing.assert_array_equal(blk.t, t[4:8])
    np.testing.assert_array_equal(blk.q, q[4:8][:, [2, 0]])
    np.testing.assert_array_equal(blk.qd, qd[4:8][:, [2, 0]])
    np.testing.assert_array_equal(blk.tau, tau[4:8][:, [2, 0]])
    # The first block was a copy: later adds did not change it.
    np.testing.assert_array_equal(decode_block(full[0], dims, J).q, q[:4])


@pytest.mark.parametrize('mutate,match', [
    (lambda d, dims: (d[:-1], dims), 'values'),
    (lambda d, dims: (d, [dims[0]]), '2-D layout'),
    (lambda d, dims: (d, [('rows', *dims[0][1:]), dims[1]]), '2-D layout'),
    (lambda d, dims: (d, [dims[0], ('a,b', 10, 10)]), 'columns'),
    (lambda d, dims: (d, [dims[0], ('a,a,c', 10, 10)]), 'duplicate'),
    (lambda d, dims: (d, [dims[0], ('a,b,x', 10, 10)]), 'missing'),
    (lambda d, dims: (np.where(np.arange(d.size) == 5, math.nan, d), dims), 'non-finite'),
    (lambda d, dims: (np.where(np.arange(d.size) == 10, 0.0, d), dims), 'stamps'),
])
def test_bad_blocks_are_refused_with_a_reason(mutate, match):
    t, q, qd, tau = _rows(4)
    b = SampleBlocker(J, rows=4)
    data = None
    for k in range(4):
        data = b.add(t[k], q[k], qd[k], tau[k])
    d, dims = mutate(data, layout(J, 4))
    with pytest.raises(SampleBlockError, match=match):
        decode_block(d, dims, J)


def test_rows_must_be_positive():
    with pytest.raises(ValueError):
        SampleBlocker(J, rows=0)
