"""Fuzz a live predictor over DDS: random and mutated /joint_states, everything it says checked.

``invdyn fuzz [--messages N] [--seed S]`` (and ``test/test_fuzz.py``) starts a predictor node as
a child process, publishes N JointState messages at it as fast as it takes them (in bursts,
each waited for) and records everything it publishes on ``/invdyn/feedforward``,
``/invdyn/feedforward_cmd`` and ``/diagnostics``. Messages are valid or mutated: names missing,
duplicated, unknown, extra, reordered, empty; arrays of other lengths or empty; NaN, inf and
huge values; velocity or effort absent; stamps backwards, repeated, zero, negative, jumping
forward by seconds, far in the future; a burst of one second's 1,000 messages at once; a
publisher that pauses and resumes.

Verdicts (:class:`FuzzReport`):

* crashes: the node exited, or printed a traceback, or no longer answers valid input after
  the storm;
* unsafe outputs: any published torque that is NaN/inf, beyond its ``torque_limits``, of the
  wrong length or joint names, or stamped with a stamp that no acceptable input carried;
* accounting: every message is either answered or rejected (``answered + rejected_total``
  from /diagnostics equals what was sent); the rejections by kind that only depend on the
  message itself equal what an independent oracle (:func:`expected_rejection`) predicts, and
  the stamp-dependent ones (``duplicate_stamp``, ``non_finite_output``) account for the rest.

Run it against a node this command starts, never against a predictor driving a robot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
import json
import math
from pathlib import Path
import sys
import tempfile
import threading
import time
from typing import Optional, Sequence, TextIO

import numpy as np

from invdyn_ros.core.params import LWR_JOINTS_1_TO_5, LWR_TORQUE_LIMITS_1_TO_5

#: Stamps of valid messages start here [s] and advance by SAMPLE_NS.
T0_NS = 1_000 * 1_000_000_000
SAMPLE_NS = 1_000_000
#: Messages published back to back before waiting for the node to take them all.
DEFAULT_BURST = 250
#: The "same second's 1,000 messages at once" burst.
SECOND_BURST = 1000
#: Publisher pause of the stop-and-resume phase [s].
PAUSE_S = 0.5
#: A burst is done when the node has taken all of it, or has taken nothing more for this long
#: [s] (the rest was lost in transport: counted as unaccounted).
STALL_S = 2.0
#: Transport losses tolerated [fraction of sent]: a best-effort burst can lose messages when
#: the machine is starved of CPU (seen: 2.4 % with another job busy on one of 2 cores). They are
#: reported; beyond this the run fails (a node that drops input itself would lose far more).
MAX_LOSS_FRACTION = 0.05
NODE_START_TIMEOUT_S = 60.0
#: Valid messages sent after the storm; all must be answered, finitely.
LIVENESS_MESSAGES = 100
#: The node's joint_states queue: deeper than a burst, so that nothing is dropped unread.
NODE_QOS_DEPTH = 4 * SECOND_BURST
DIAGNOSTICS_PERIOD_S = 0.05
#: Kinds whose count depends only on the message (its stamp being <= 0; its values against the
#: model's plausible range), so the oracle predicts them exactly.
MESSAGE_KINDS = ('empty', 'length_mismatch', 'duplicate_names', 'missing_joint', 'non_finite',
                 'zero_stamp', 'out_of_range')
#: Kinds that depend on the node's state (previous stamps, the network's output).
STATE_KINDS = ('duplicate_stamp', 'non_finite_output')
#: Mutations and their weights in the random phase.
MUTATIONS = {
    'valid': 30, 'reordered_extra': 6, 'many_extra': 1, 'nan_in_extra': 2,
    'velocity_absent': 5, 'effort_absent': 5, 'missing_joint': 4, 'duplicate_name': 4,
    'unknown_name': 3, 'empty': 2, 'position_empty': 2, 'length_position': 3,
    'length_velocity': 3, 'length_effort': 3, 'nan': 4, 'inf': 4, 'huge': 4,
    'stamp_backwards': 3, 'stamp_repeat': 3, 'stamp_zero': 2, 'stamp_negative': 1,
    'stamp_jump': 2, 'stamp_far_future': 1, 'combo': 5,
}
HUGE_VALUES = (1e300, -1e300, 1.7e308, -1.7e308, 1e160, -1e100, 1e100, 1e15, -1e15)
ODD_NAMES = ('', ' ', 'ünïcødé_joint', 'x' * 300, 'lwr_a1_joint ', 'LWR_A1_JOINT')


class FuzzError(RuntimeError):
    """The fuzz run could not be carried out (node did not start, DDS did not match)."""


@dataclass
class FuzzMsg:
    """One JointState as sent: names, position [rad], velocity [rad/s], effort [Nm], stamp."""

    names: list
    position: list
    velocity: list
    effort: list
    sec: int
    nanosec: int
    mutation: str

    @property
    def stamp_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec


@dataclass
class InputBounds:
    """The model's plausible input range: |q - q_mean| <= q_half [rad] and |qd - qd_mean| <=
    qd_half [rad/s], each (d,) (see invdyn_ros.core.online.input_half_widths)."""

    q_mean: np.ndarray
    q_half: np.ndarray
    qd_mean: np.ndarray
    qd_half: np.ndarray

    @classmethod
    def of_model(cls, path: str) -> 'InputBounds':
        from invdyn_ros.core.checkpoint import load_lstm_weights
        from invdyn_ros.core.online import input_half_widths
        w, _ = load_lstm_weights(path)
        n, d = w.normalizer, w.config.dof
        q_half, qd_half = input_half_widths(n, d)
        return cls(n.x_mean[:d], q_half, n.x_mean[d:2 * d], qd_half)


def expected_rejection(m: FuzzMsg, joints: Sequence[str],
                       bounds: Optional[InputBounds] = None) -> Optional[str]:
    """What the predictor must say about ``m`` on its own, written from the JointState
    contract rather than from the node's code: the rejection kind, or None when the message
    must reach the network (where only stamp and output checks remain). With ``bounds``,
    values outside the model's plausible range are 'out_of_range'."""
    n = len(m.names)
    if n == 0 or len(m.position) == 0:
        return 'empty'
    if len(m.position) != n or len(m.velocity) not in (0, n) or len(m.effort) not in (0, n):
        return 'length_mismatch'
    if len(set(m.names)) != n:
        return 'duplicate_names'
    if any(j not in m.names for j in joints):
        return 'missing_joint'
    idx = [m.names.index(j) for j in joints]
    # NaN/inf in a configured joint; absurd magnitudes (beyond ~1e154, whose squares overflow)
    # are refused under the same name.
    if not math.isfinite(sum(arr[i] * arr[i] for arr in (m.position, m.velocity, m.effort)
                             if arr for i in idx)):
        return 'non_finite'
    if m.sec + m.nanosec * 1e-9 <= 0.0:
        return 'zero_stamp'
    if bounds is not None:
        q = np.array([m.position[i] for i in idx])
        out = np.abs(q - bounds.q_mean) > bounds.q_half
        if m.velocity:
            qd = np.array([m.velocity[i] for i in idx])
            out = out | (np.abs(qd - bounds.qd_mean) > bounds.qd_half)
        if out.any():
            return 'out_of_range'
    return None


class MessageSource:
    """Random and mutated JointState messages for ``joints`` (see the module docstring)."""

    def __init__(self, joints: Sequence[str], seed: int = 0) -> None:
        self.joints = list(joints)
        self.rng = np.random.default_rng(seed)
        self._t_ns = T0_NS
        self._prev_ns = T0_NS          # stamp of the message generated before
        self._k = 0
        kinds = list(MUTATIONS)
        w = np.array([MUTATIONS[k] for k in kinds], dtype=float)
        self._kinds, self._p = kinds, w / w.sum()
        self._stamp = [k for k in kinds if k.startswith('stamp_')]
        self._content = [k for k in kinds if k not in self._stamp + ['valid', 'combo']]

    # -- building blocks ------------------------------------------------------------------------
    def _valid(self) -> FuzzMsg:
        self._t_ns += SAMPLE_NS
        self._k += 1
        d = len(self.joints)
        phase = self._k * 1e-3 * (1.0 + np.arange(d) * 0.3)
        q = (np.sin(phase) + self.rng.normal(0, 1e-3, d)).tolist()
        qd = (np.cos(phase) + self.rng.normal(0, 1e-2, d)).tolist()
        tau = self.rng.normal(0, 10, d).tolist()
        sec, nsec = divmod(self._t_ns, 1_000_000_000)
        return FuzzMsg(list(self.joints), q, qd, tau, int(sec), int(nsec), 'valid')

    def _set_stamp(self, m: FuzzMsg, ns: int) -> None:
        ns = int(ns)
        if ns >= 0:
            m.sec, m.nanosec = divmod(ns, 1_000_000_000)
        else:                       # builtin_interfaces/Time: sec int32, nanosec uint32
            m.sec, m.nanosec = -((-ns) // 1_000_000_000) - 1, 0
        m.sec = int(np.clip(m.sec, -2**31, 2**31 - 1))

    def _mutate(self, m: FuzzMsg, kind: str) -> None:
        """Apply one mutation to a valid message ``m`` (in place)."""
        rng = self.rng
        d = len(m.names)
        j = int(rng.integers(d)) if d else 0
        arrays = ('position', 'velocity', 'effort')
        if kind == 'reordered_extra':
            extra = [f'extra_{i}' for i in range(int(rng.integers(0, 4)))]
            order = rng.permutation(d + len(extra))
            names = m.names + extra
            vals = [getattr(m, a) + rng.normal(0, 1, len(extra)).tolist() for a in arrays]
            m.names = [names[i] for i in order]
            for a, v in zip(arrays, vals):
                setattr(m, a, [v[i] for i in order])
        elif kind == 'many_extra':
            k = int(rng.integers(50, 200))
            m.names = m.names + [f'other_{i}' for i in range(k)]
            for a in arrays:
                setattr(m, a, getattr(m, a) + rng.normal(0, 1, k).tolist())
        elif kind == 'nan_in_extra':      # a joint we do not model may be broken: accepted
            m.names = m.names + ['broken_extra']
            for a in arrays:
                setattr(m, a, getattr(m, a) + [float(rng.choice([np.nan, np.inf]))])
        elif kind == 'velocity_absent':
            m.velocity = []
        elif kind == 'effort_absent':
            m.effort = []
        elif kind == 'missing_joint':
            keep = [i for i in range(len(m.names)) if i != j]
            m.names = [m.names[i] for i in keep]
            for a in arrays:
                v = getattr(m, a)
                setattr(m, a, [v[i] for i in keep] if v else v)
        elif kind == 'duplicate_name':
            other = int(rng.integers(d))
            if rng.random() < 0.5:           # two entries, same name
                m.names = m.names + [m.names[other]]
                for a in arrays:
                    v = getattr(m, a)
                    setattr(m, a, v + [v[other]] if v else v)
            else:                            # a joint renamed to another's name
                m.names = list(m.names)
                m.names[j] = m.names[(j + 1) % d]
        elif kind == 'unknown_name':
            m.names = list(m.names)
            m.names[j] = str(rng.choice(ODD_NAMES))
        elif kind == 'empty':
            m.names, m.position, m.velocity, m.effort = [], [], [], []
        elif kind == 'position_empty':
            m.position = []
        elif kind in ('length_position', 'length_velocity', 'length_effort'):
            a = kind.split('_')[1]
            v = getattr(m, a)
            setattr(m, a, v[:-1] if rng.random() < 0.5 else v + [0.0])
        elif kind in ('nan', 'inf', 'huge'):
            a = str(rng.choice(arrays))
            v = list(getattr(m, a))
            if not v:
                v, a = list(m.position), 'position'
            i = int(rng.integers(len(v)))
            v[i] = {'nan': float('nan'), 'inf': float(rng.choice([np.inf, -np.inf]))}.get(
                kind, float(rng.choice(HUGE_VALUES)))
            setattr(m, a, v)
        elif kind == 'stamp_backwards':
            self._t_ns -= int(rng.integers(1, 5_000)) * SAMPLE_NS
            self._set_stamp(m, self._t_ns)
        elif kind == 'stamp_repeat':
            self._t_ns -= SAMPLE_NS
            self._set_stamp(m, self._prev_ns)
        elif kind == 'stamp_zero':
            self._t_ns -= SAMPLE_NS
            m.sec, m.nanosec = 0, 0
        elif kind == 'stamp_negative':
            self._t_ns -= SAMPLE_NS
            self._set_stamp(m, -int(rng.integers(1, 10**12)))
        elif kind == 'stamp_jump':
            self._t_ns += int(rng.integers(1_000, 10_000)) * SAMPLE_NS
            self._set_stamp(m, self._t_ns)
        elif kind == 'stamp_far_future':
            self._t_ns -= SAMPLE_NS
            m.sec, m.nanosec = 2**31 - 1, 999_999_999

    # -- public ---------------------------------------------------------------------------------
    def random(self) -> FuzzMsg:
        """One message, valid or mutated ('combo': one content and one stamp mutation)."""
        kind = str(self.rng.choice(self._kinds, p=self._p))
        m = self._valid()
        if kind == 'combo':
            picks = [str(self.rng.choice(self._content)), str(self.rng.choice(self._stamp))]
            for k in picks:
                self._mutate(m, k)
            m.mutation = '+'.join(picks)
        elif kind != 'valid':
            self._mutate(m, kind)
            m.mutation = kind
        self._prev_ns = m.stamp_ns
        return m

    def valid_run(self, n: int, jump_s: float = 0.0) -> list[FuzzMsg]:
        """``n`` valid messages 1 ms apart, after a forward jump of ``jump_s`` [s]."""
        self._t_ns += int(jump_s * 1e9)
        return [self._valid() for _ in range(n)]


@dataclass
class FuzzOptions:
    """What to send. ``torque_limits`` [Nm] go to the node and are checked on every output."""

    messages: int = 10_000
    seed: int = 0
    burst: int = DEFAULT_BURST
    model_path: str = ''
    joint_names: tuple = LWR_JOINTS_1_TO_5
    torque_limits: tuple = LWR_TORQUE_LIMITS_1_TO_5


@dataclass
class FuzzReport:
    """Outcome of one run (see the module docstring)."""

    sent: int = 0
    answered: int = 0                   # feedforward messages received
    answered_cmd: int = 0               # feedforward_cmd messages received
    node_answered: int = 0              # what the node's diagnostics count
    rejections: dict = field(default_factory=dict)      # node's counts by kind (this run)
    expected: dict = field(default_factory=dict)        # oracle's counts of MESSAGE_KINDS
    oracle_passed: int = 0              # messages the oracle lets through to the network
    unaccounted: int = 0                # sent - answered - rejected (lost unread)
    crashes: int = 0
    unsafe_outputs: int = 0
    unsafe_examples: list = field(default_factory=list)
    accounting_errors: list = field(default_factory=list)
    mutations: dict = field(default_factory=dict)
    liveness_answered: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.crashes == 0 and self.unsafe_outputs == 0 and not self.accounting_errors
                and self.sent > 0)

    def summary(self) -> str:
        rej = ', '.join(f'{k} {v}' for k, v in sorted(self.rejections.items())) or 'none'
        lines = [
            f'messages sent: {self.sent} in {self.seconds:.1f} s',
            f'answered: {self.answered} on /invdyn/feedforward, {self.answered_cmd} on '
            f'/invdyn/feedforward_cmd (node counts {self.node_answered})',
            f'rejections by kind: {rej} (total {sum(self.rejections.values())})',
            f'unaccounted (neither answered nor rejected): {self.unaccounted}',
            f'liveness after the storm: {self.liveness_answered}/{LIVENESS_MESSAGES} answered',
            f'crashes: {self.crashes}',
            f'unsafe outputs: {self.unsafe_outputs}',
        ]
        lines += [f'  unsafe: {e}' for e in self.unsafe_examples[:5]]
        lines += [f'accounting: {e}' for e in self.accounting_errors]
        lines.append('verdict: ' + ('PASS' if self.ok else 'FAIL'))
        return '\n'.join(lines)


class _Side:
    """This process's DDS end: publishes joint states, records everything the node says."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        self.JointState = JointState
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node('invdyn_fuzz', context=self.context)
        # Reliable and far deeper than a burst's answers: nothing the node says may be lost.
        deep = QoSProfile(depth=4 * NODE_QOS_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        self.ff: list = []
        self.cmd: list = []
        self.diag: Optional[dict] = None
        self.diag_count = 0
        self._lock = threading.Lock()
        self.node.create_subscription(JointState, '/invdyn/feedforward', self._on_ff, deep)
        self.node.create_subscription(Float64MultiArray, '/invdyn/feedforward_cmd',
                                      lambda m: self.cmd.append(list(m.data)), deep)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag,
                                      QoSProfile(depth=100,
                                                 reliability=ReliabilityPolicy.RELIABLE))
        self.pub = self.node.create_publisher(JointState, '/joint_states', deep)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_ff(self, m) -> None:
        self.ff.append((m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec,
                        list(m.name), list(m.effort)))

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name == 'invdyn: predictor':
                with self._lock:
                    self.diag = {kv.key: kv.value for kv in st.values}
                    self.diag_count += 1

    def counts(self) -> tuple[int, Counter]:
        """(answered, rejections by kind) from the latest diagnostics."""
        with self._lock:
            d = dict(self.diag or {})
        rej = Counter({k[len('rejected_'):]: int(v) for k, v in d.items()
                       if k.startswith('rejected_') and k != 'rejected_total'})
        return int(d.get('answered', 0)), rej

    def publish(self, m: FuzzMsg) -> None:
        js = self.JointState()
        js.header.stamp.sec, js.header.stamp.nanosec = m.sec, m.nanosec
        js.name = m.names
        js.position, js.velocity, js.effort = m.position, m.velocity, m.effort
        self.pub.publish(js)

    def close(self) -> None:
        from invdyn_ros.nodes.common import stop_spinning
        stop_spinning(self.executor, self._thread, self.node, self.context)


def _wait(cond, timeout: float, proc=None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc is not None and proc.popen.poll() is not None:
            return False
        time.sleep(0.01)
    return cond()


def _check_outputs(report: FuzzReport, side: _Side, opts: FuzzOptions,
                   allowed_stamps: set) -> None:
    """Every published torque: finite, within its limit, right joints, an input's stamp."""
    lim = np.asarray(opts.torque_limits, dtype=float)
    joints = list(opts.joint_names)

    def bad(what: str) -> None:
        report.unsafe_outputs += 1
        if len(report.unsafe_examples) < 20:
            report.unsafe_examples.append(what)

    for stamp, names, effort in side.ff:
        tau = np.asarray(effort, dtype=float)
        if names != joints or tau.shape != lim.shape:
            bad(f'feedforward names {names} / {tau.shape[0]} torques')
        elif not np.all(np.isfinite(tau)):
            bad(f'feedforward non-finite {tau.tolist()}')
        elif np.any(np.abs(tau) > lim):
            bad(f'feedforward beyond limits {tau.tolist()}')
        if stamp not in allowed_stamps:
            bad(f'feedforward stamp {stamp} that no acceptable input carried')
    for data in side.cmd:
        tau = np.asarray(data, dtype=float)
        if tau.shape != lim.shape or not np.all(np.isfinite(tau)) \
                or np.any(np.abs(tau) > lim):
            bad(f'feedforward_cmd {tau.tolist()}')


def run_fuzz(opts: FuzzOptions, log_dir: Optional[Path] = None) -> FuzzReport:
    """Start a predictor, fuzz it with ``opts.messages`` messages, return the report.

    The caller sets up DDS isolation (ROS_DOMAIN_ID etc.) before calling; the node inherits
    this process's environment.
    """
    from invdyn_ros.bench import _start_node
    if opts.messages < SECOND_BURST + 1:
        raise FuzzError(f'messages must be more than {SECOND_BURST}, got {opts.messages}')
    if opts.burst < 1:
        raise FuzzError(f'burst must be >= 1, got {opts.burst}')
    tmp = None
    if log_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix='invdyn_fuzz_')
        log_dir = Path(tmp.name)
    # The feedforward history as deep as the input queue: the dedicated receiver may answer a
    # burst faster than this process's executor takes the answers, and reliable keep-last
    # would drop the oldest ones.
    params = {'diagnostics_period_s': DIAGNOSTICS_PERIOD_S, 'qos_depth': NODE_QOS_DEPTH,
              'feedforward_depth': NODE_QOS_DEPTH,
              'joint_names': '[' + ','.join(opts.joint_names) + ']',
              'torque_limits': '[' + ','.join(repr(float(v)) for v in opts.torque_limits) + ']'}
    if opts.model_path:
        params['model_path'] = f"'{opts.model_path}'"
    report = FuzzReport()
    proc = _start_node('predictor', params, log_dir)
    side = _Side()
    try:
        ok = _wait(lambda: side.pub.get_subscription_count() > 0 and side.diag is not None,
                   NODE_START_TIMEOUT_S, proc)
        if not ok:
            last = (proc.tail(1).strip() or 'no output').replace('\n', ' ')
            raise FuzzError(f'the predictor did not come up (exit status '
                            f'{proc.popen.poll()}): {last}')
        time.sleep(0.5)                 # both ends of every connection matched
        _storm(opts, side, proc, report)
        _liveness(opts, side, proc, report)
    finally:
        side.close()
        alive = proc.popen.poll() is None
        proc.stop()
        log = proc.log.read_text(errors='replace') if proc.log.exists() else ''
        if tmp is not None:
            tmp.cleanup()
    report.crashes += (not alive) + log.count('Traceback')
    if not alive:
        report.accounting_errors.append('the predictor exited during the run')
    return report


def _storm(opts: FuzzOptions, side: _Side, proc, report: FuzzReport) -> None:
    """Send the messages, check every answer, account for every rejection."""
    base = side.counts()
    from invdyn_ros.nodes.common import default_model_path
    from invdyn_ros.nodes.predictor import DEFAULT_MODEL
    bounds = InputBounds.of_model(opts.model_path or default_model_path(DEFAULT_MODEL))
    src = MessageSource(opts.joint_names, opts.seed)
    expected: Counter = Counter()
    mutations: Counter = Counter()
    allowed: set = set()
    passed_stamps: list = []            # stamps reaching the network, in order
    n_random = opts.messages - SECOND_BURST
    t_start = time.monotonic()

    def send(batch: list) -> None:
        for m in batch:
            why = expected_rejection(m, opts.joint_names, bounds)
            expected[why or 'passed'] += 1
            mutations[m.mutation] += 1
            if why is None:
                allowed.add(m.stamp_ns)
                passed_stamps.append(m.stamp_ns)
            side.publish(m)
        report.sent += len(batch)
        answered0, rej0 = base
        target = report.sent

        def processed() -> int:
            a, r = side.counts()
            return (a - answered0) + sum(r.values()) - sum(rej0.values())
        # Until the node has taken the whole burst, or makes no progress for STALL_S (the
        # transport lost part of it: accounted below), or dies (a crash, reported).
        last, since = -1, time.monotonic()
        while processed() < target and proc.popen.poll() is None:
            n = processed()
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > STALL_S:
                break
            time.sleep(0.01)

    half = n_random // 2
    k = 0
    while k < half:                      # random and mutated messages, in bursts
        batch = [src.random() for _ in range(min(opts.burst, half - k))]
        send(batch)
        k += len(batch)
    # One second's 1,000 messages at once, after a jump of seconds.
    send(src.valid_run(SECOND_BURST, jump_s=3.0))
    # The publisher stops for a while and resumes where its clock now is.
    time.sleep(PAUSE_S)
    src._t_ns += int(PAUSE_S * 1e9)
    while k < n_random:
        batch = [src.random() for _ in range(min(opts.burst, n_random - k))]
        send(batch)
        k += len(batch)
    _wait(lambda: len(side.ff) >= side.counts()[0] - base[0]
          and len(side.cmd) >= len(side.ff), 5.0)
    report.seconds = time.monotonic() - t_start
    report.mutations = dict(mutations)
    report.expected = {k: expected[k] for k in MESSAGE_KINDS if expected[k]}
    report.oracle_passed = expected['passed']
    report.answered = len(side.ff)
    report.answered_cmd = len(side.cmd)
    _check_outputs(report, side, opts, allowed)
    # Accounting against the oracle (from the counts at this point, before liveness).
    answered, rej = side.counts()
    answered -= base[0]
    rej = Counter({k: v - base[1].get(k, 0) for k, v in rej.items() if v - base[1].get(k, 0)})
    report.node_answered = answered
    report.rejections = dict(rej)
    report.unaccounted = report.sent - answered - sum(rej.values())
    errs = report.accounting_errors
    # Exact accounting when every message reached the node; with transport losses (reported
    # as unaccounted) the node's counts can only be at most the oracle's.
    exact = report.unaccounted == 0
    if report.unaccounted < 0 or report.unaccounted > MAX_LOSS_FRACTION * report.sent:
        errs.append(f'{report.unaccounted} messages neither answered nor rejected')
    if answered != report.answered or report.answered != report.answered_cmd:
        errs.append(f'node answered {answered}, received {report.answered} feedforward and '
                    f'{report.answered_cmd} feedforward_cmd')
    for kind in MESSAGE_KINDS:
        n = rej.get(kind, 0)
        if n != expected[kind] if exact else n > expected[kind]:
            errs.append(f'rejected_{kind}: node {n}, oracle {expected[kind]}')
    unknown = set(rej) - set(MESSAGE_KINDS) - set(STATE_KINDS)
    if unknown:
        errs.append(f'unexpected rejection kinds {sorted(unknown)}')
    state = sum(rej.get(k, 0) for k in STATE_KINDS)
    if (answered + state != report.oracle_passed if exact
            else answered + state > report.oracle_passed):
        errs.append(f'answered {answered} + stamp/output rejections {state} != '
                    f'{report.oracle_passed} messages the oracle let through')
    if exact and rej.get('non_finite_output', 0) == 0:
        # Without output resets the duplicate count is exact: equal to the last stamp that
        # reached the acceleration filter (which any other stamp replaces).
        dup, last = 0, None
        for s in passed_stamps:
            if s == last:
                dup += 1
            else:
                last = s
        if rej.get('duplicate_stamp', 0) != dup:
            errs.append(f'rejected_duplicate_stamp: node {rej.get("duplicate_stamp", 0)}, '
                        f'oracle {dup}')


def _liveness(opts: FuzzOptions, side: _Side, proc, report: FuzzReport) -> None:
    """After the storm, valid input must be answered, every message, finitely."""
    if proc.popen.poll() is not None:
        return
    src = MessageSource(opts.joint_names, opts.seed + 1)
    src._t_ns = T0_NS + 10**6 * 1_000_000_000       # far beyond every stamp sent
    n0 = len(side.ff)
    batch = src.valid_run(LIVENESS_MESSAGES)
    for m in batch:
        side.publish(m)
    _wait(lambda: len(side.ff) - n0 >= LIVENESS_MESSAGES, 10.0, proc)
    got = side.ff[n0:]
    lim = np.asarray(opts.torque_limits, dtype=float)
    report.liveness_answered = sum(
        1 for _, _, e in got if np.all(np.isfinite(e)) and np.all(np.abs(e) <= lim))
    if report.liveness_answered < LIVENESS_MESSAGES:
        report.crashes += 1
        report.accounting_errors.append(
            f'after the storm only {report.liveness_answered} of {LIVENESS_MESSAGES} valid '
            'messages were answered')


def main_cli(opts: FuzzOptions, json_out: Optional[str] = None, out: TextIO = sys.stdout
             ) -> int:
    """``invdyn fuzz``: isolate DDS, run, print the figures; 0 when the node passed, else 1."""
    from invdyn_ros.bench import isolate_dds
    domain = isolate_dds()
    print(f'invdyn fuzz: {opts.messages} messages (seed {opts.seed}, bursts of {opts.burst}) '
          f'at a predictor started in ROS domain {domain}', file=out, flush=True)
    report = run_fuzz(opts)
    print(report.summary(), file=out, flush=True)
    if json_out:
        data = asdict(report)
        data['ok'] = report.ok
        data['options'] = asdict(opts)
        Path(json_out).write_text(json.dumps(data, indent=2))
    return 0 if report.ok else 1
