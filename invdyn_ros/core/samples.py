"""Measured samples forwarded from the predictor to the trainer in blocks.

Why: in rclpy every received message costs a trip through the executor (on the 2-core test
machine about half a millisecond of CPU for a no-op relay at 1 kHz), so a trainer that
subscribes to /joint_states itself doubles the CPU the graph spends on receiving. The
predictor already receives and maps every message; it appends the accepted ones to a block and
publishes one message per ``rows`` samples. The trainer then takes 1/rows of the messages.

Wire format (a std_msgs/Float64MultiArray, built by the node from :func:`layout`): ``data`` is
row-major (rows, 1 + 3 d): stamp t [s], q [rad] (d), qd [rad/s] (d), tau [Nm] (d), joints in the
order named by the second dimension's label (comma-separated), so the receiver matches joints by
name. Nothing here imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional, Sequence

import numpy as np

#: Label of the first (row) dimension.
ROWS_LABEL = 'samples'
#: Joint names are joined with this in the second dimension's label.
NAME_SEP = ','


class SampleBlockError(ValueError):
    """A received block that cannot be used (the message says why)."""


@dataclass(frozen=True)
class SampleBlock:
    """Decoded samples: t [s] (n,), q [rad], qd [rad/s], tau [Nm] each (n, d), in the
    receiver's joint order."""

    t: np.ndarray
    q: np.ndarray
    qd: np.ndarray
    tau: np.ndarray

    def __len__(self) -> int:
        return len(self.t)


class SampleBlocker:
    """Collects samples into blocks of ``rows`` (preallocated; one copy per full block)."""

    def __init__(self, joint_names: Sequence[str], rows: int) -> None:
        if rows < 1:
            raise ValueError(f'rows must be at least 1, got {rows}')
        self.joint_names = list(joint_names)
        self.dof = d = len(self.joint_names)
        self.rows = int(rows)
        self.cols = 1 + 3 * d
        self._buf = np.empty((self.rows, self.cols))
        self._n = 0
        self.blocks = 0

    def add(self, t: float, q: np.ndarray, qd: np.ndarray, tau: np.ndarray
            ) -> Optional[np.ndarray]:
        """Append one sample; returns the full block (rows * cols,) when this one completes
        it, else None. The returned array is the caller's (the buffer is reused)."""
        row = self._buf[self._n]
        d = self.dof
        row[0] = t
        row[1:1 + d] = q
        row[1 + d:1 + 2 * d] = qd
        row[1 + 2 * d:] = tau
        self._n += 1
        if self._n < self.rows:
            return None
        self._n = 0
        self.blocks += 1
        return self._buf.ravel().copy()

    def pending(self) -> int:
        """Samples waiting for their block to fill."""
        return self._n


def layout(joint_names: Sequence[str], rows: int) -> list[tuple[str, int, int]]:
    """The Float64MultiArray layout of a block: (label, size, stride) per dimension."""
    cols = 1 + 3 * len(joint_names)
    return [(ROWS_LABEL, rows, rows * cols), (NAME_SEP.join(joint_names), cols, cols)]


def decode_block(data: Sequence[float], dims: Sequence[tuple[str, int, int]],
                 joint_names: Sequence[str]) -> SampleBlock:
    """A received block in ``joint_names`` order (a subset or reordering of the sender's).

    Raises SampleBlockError for a wrong layout, missing joints, a length that does not match,
    non-finite values or stamps that do not increase.
    """
    if len(dims) != 2 or dims[0][0] != ROWS_LABEL:
        raise SampleBlockError(f'expected a 2-D layout labelled {ROWS_LABEL!r} first, got '
                               f'{[d[0] for d in dims]}')
    sender = [n for n in dims[1][0].split(NAME_SEP) if n]
    if len(set(sender)) != len(sender):
        raise SampleBlockError('duplicate joint names in the block')
    ds = len(sender)
    rows, cols = int(dims[0][1]), int(dims[1][1])
    if cols != 1 + 3 * ds:
        raise SampleBlockError(f'{ds} joints need {1 + 3 * ds} columns, layout says {cols}')
    arr = np.asarray(data, dtype=np.float64)
    if rows < 1 or arr.size != rows * cols:
        raise SampleBlockError(f'layout {rows} x {cols} but {arr.size} values')
    missing = [n for n in joint_names if n not in sender]
    if missing:
        raise SampleBlockError(f'joints missing from the block: {missing}')
    # One test for the whole block: a NaN or inf anywhere makes the sum non-finite.
    if not math.isfinite(float(arr.sum())):
        raise SampleBlockError('non-finite values in the block')
    arr = arr.reshape(rows, cols)
    t = arr[:, 0].copy()
    if rows > 1 and not np.all(np.diff(t) > 0.0):
        raise SampleBlockError('stamps do not increase within the block')
    idx = np.array([sender.index(n) for n in joint_names])
    return SampleBlock(t, arr[:, 1 + idx], arr[:, 1 + ds + idx], arr[:, 1 + 2 * ds + idx])
