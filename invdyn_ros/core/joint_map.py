"""Pick configured joints out of JointState-like arrays, by name, never by index.

Publishers differ in joint order (and some change it between messages), add joints we do not
model, or send velocity/effort arrays of other lengths. :class:`JointMapper` turns one message's
``(names, position, velocity, effort)`` into arrays in the configured order, or says why not.
The index map is cached per distinct name tuple, so the per-message cost is a dict lookup and a
fancy-index, not a search.
"""

from __future__ import annotations

from dataclasses import dataclass
import enum
from typing import Optional, Sequence

import numpy as np

#: Distinct name orders remembered; a publisher that changes its order every message must not
#: grow memory without bound.
MAX_CACHED_LAYOUTS = 64


class JointReject(enum.Enum):
    """Why a message could not be mapped (counted and reported by the nodes)."""

    EMPTY = 'empty'
    LENGTH_MISMATCH = 'length_mismatch'
    DUPLICATE_NAMES = 'duplicate_names'
    MISSING_JOINT = 'missing_joint'
    NON_FINITE = 'non_finite'
    NO_VELOCITY = 'no_velocity'
    NO_EFFORT = 'no_effort'


@dataclass
class Mapped:
    """One message in the configured joint order: q [rad], qd [rad/s] or None, tau [Nm] or None,
    each shape (d,)."""

    q: np.ndarray
    qd: Optional[np.ndarray]
    tau: Optional[np.ndarray]


class JointMapper:
    """Map messages onto ``joint_names`` (see module docstring)."""

    def __init__(self, joint_names: Sequence[str]) -> None:
        names = tuple(joint_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f'joint_names must be non-empty and unique, got {list(names)}')
        self.joint_names = names
        self._cache: dict[tuple, object] = {}

    def _index(self, names: tuple) -> object:
        idx = self._cache.get(names)
        if idx is None:
            if len(set(names)) != len(names):
                idx = JointReject.DUPLICATE_NAMES
            else:
                where = {n: i for i, n in enumerate(names)}
                try:
                    idx = np.array([where[n] for n in self.joint_names], dtype=np.intp)
                except KeyError:
                    idx = JointReject.MISSING_JOINT
            if len(self._cache) >= MAX_CACHED_LAYOUTS:
                self._cache.clear()
            self._cache[names] = idx
        return idx

    def map(self, names: Sequence[str], position: Sequence[float], velocity: Sequence[float],
            effort: Sequence[float], need_velocity: bool = False, need_effort: bool = False
            ) -> tuple[Optional[Mapped], Optional[JointReject]]:
        """Map one message; returns (mapped, None) or (None, reason).

        Velocity or effort arrays that are empty count as absent (allowed by JointState);
        present but of another length than ``names`` is a malformed message. Only the
        configured joints must be finite: a NaN in a joint we do not model is not our problem.
        """
        n = len(names)
        if n == 0 or len(position) == 0:
            return None, JointReject.EMPTY
        if (len(position) != n or (len(velocity) not in (0, n))
                or (len(effort) not in (0, n))):
            return None, JointReject.LENGTH_MISMATCH
        idx = self._index(tuple(names))
        if isinstance(idx, JointReject):
            return None, idx
        q = np.asarray(position, dtype=np.float64)[idx]
        qd = np.asarray(velocity, dtype=np.float64)[idx] if len(velocity) else None
        tau = np.asarray(effort, dtype=np.float64)[idx] if len(effort) else None
        if need_velocity and qd is None:
            return None, JointReject.NO_VELOCITY
        if need_effort and tau is None:
            return None, JointReject.NO_EFFORT
        if not (np.isfinite(q).all() and (qd is None or np.isfinite(qd).all())
                and (tau is None or np.isfinite(tau).all())):
            return None, JointReject.NON_FINITE
        return Mapped(q, qd, tau), None
