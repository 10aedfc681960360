"""What every invdyn node shares: parameters from dataclasses, QoS per topic, main(), stats.

Kept thin on purpose: nodes translate messages to arrays and call :mod:`invdyn_ros.core`.
"""

from __future__ import annotations

import collections
from dataclasses import fields
from pathlib import Path
import signal
import time
from typing import Type, TypeVar

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from invdyn_ros.core.params import NodeParams, ParamError

P = TypeVar('P', bound=NodeParams)

#: Exit status of a node that refused its parameters (as argparse does for bad arguments).
EXIT_BAD_PARAMS = 2
#: Rejections of one kind are logged at most this often [s], with the running count.
REJECT_LOG_PERIOD_S = 5.0


def joint_states_qos(depth: int) -> QoSProfile:
    """/joint_states subscription: best effort accepts both reliable publishers
    (joint_state_broadcaster) and best-effort ones; a shallow queue, as old states are
    useless to a 1 kHz consumer."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


#: Feedforward publishers: reliable offers to reliable and best-effort subscribers alike.
FEEDFORWARD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
#: Model updates: the latest model must reach a predictor that starts later.
MODEL_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Sample blocks predictor -> trainer: reliable, deep enough for 6 s of 128-sample blocks at
#: 1 kHz while the trainer's executor is busy (it runs niced), so no learning data is lost.
SAMPLES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


def _as_declared(value, declared: type, sample=None):
    """``value`` as a parameter of the declared type would hold it: integers (and lists of
    integers) where doubles are declared become doubles, as YAML and `ros2 param set` write
    ``400`` for 400.0. Anything else is returned as it is (and refused by its type check)."""
    if declared is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (declared is list and isinstance(sample, float) and isinstance(value, (list, tuple))
            and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return [float(v) for v in value]
    return value


def declare_params(node: Node, cls: Type[P]) -> P:
    """Declare every field of ``cls`` as a parameter (with its description), read them once
    into a ``cls`` and validate it. Raises ParamError naming a bad parameter.

    Integers given for double parameters (``-p max_gap_s:=1`` at start-up, ``ros2 param set
    /node x 400`` at run time) are taken as doubles; every other type mismatch is refused.
    """
    values = {}
    defaults = cls.defaults()
    overrides = getattr(node, '_parameter_overrides', {})   # rclpy's, from --ros-args -p
    for f in fields(cls):
        default = defaults[f.name]
        desc = ParameterDescriptor(description=f.metadata.get('description', ''))
        if isinstance(default, list) and not default:
            raise ParamError(f'{cls.__name__}.{f.name}: empty list default has no type')
        given = overrides.get(f.name)
        if given is not None:
            value = _as_declared(given.value, type(default), default[0] if isinstance(
                default, list) else None)
            if value is not given.value:
                overrides[f.name] = Parameter(f.name, value=value)
        try:
            node.declare_parameter(f.name, default, desc)
            values[f.name] = node.get_parameter(f.name).value
        except (TypeError, ValueError, rclpy.exceptions.InvalidParameterTypeException) as e:
            raise ParamError(f'parameter {f.name}: {e}') from None
    for f in fields(cls):
        if isinstance(defaults[f.name], list):
            values[f.name] = list(values[f.name])

    def _coerce(params: list) -> list:
        out = []
        for prm in params:
            if prm.name in defaults:
                default = defaults[prm.name]
                value = _as_declared(prm.value, type(default), default[0] if isinstance(
                    default, list) else None)
                if value is not prm.value:
                    prm = Parameter(prm.name, value=value)
            out.append(prm)
        return out
    node.add_pre_set_parameters_callback(_coerce)
    return cls.from_dict(values)


def stamp_to_s(stamp) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def default_model_path(name: str) -> str:
    """The shipped model ``name``: share/invdyn/models when installed, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory
        p = Path(get_package_share_directory('invdyn')) / 'models' / name
        if p.is_file():
            return str(p)
    except Exception:  # noqa: BLE001 - no ament index (pip install): fall through
        pass
    return str(Path(__file__).resolve().parents[2] / 'models' / name)


class Rejections:
    """Counts rejected inputs by kind and logs each kind at most every few seconds."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.counts: collections.Counter = collections.Counter()
        self._last_log: dict[str, float] = {}

    def __call__(self, kind: str, detail: str = '') -> None:
        self.counts[kind] += 1
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= REJECT_LOG_PERIOD_S:
            self._last_log[kind] = now
            self._node.get_logger().warning(
                f'rejected input ({kind}{": " + detail if detail else ""}); '
                f'{self.counts[kind]} so far')

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class LatencyWindow:
    """Recent per-message compute times [s] for percentiles in diagnostics."""

    def __init__(self, size: int = 5000) -> None:
        self._buf = np.zeros(size)
        self._n = 0

    def add(self, seconds: float) -> None:
        self._buf[self._n % len(self._buf)] = seconds
        self._n += 1

    def values(self) -> np.ndarray:
        """The recorded times [s], oldest first (the last ``size`` of them)."""
        n = min(self._n, len(self._buf))
        return np.roll(self._buf, -(self._n % len(self._buf)))[-n:] if n else np.zeros(0)

    def percentiles(self, ps=(50, 99)) -> list[float]:
        n = min(self._n, len(self._buf))
        if n == 0:
            return [float('nan')] * len(ps)
        return [float(v) for v in np.percentile(self._buf[:n], ps)]


def init_ros(args=None) -> None:
    """rclpy.init without rclpy's signal handlers: SIGINT and SIGTERM raise KeyboardInterrupt
    in the main thread instead, so main() stops spinning, lets running callbacks finish, closes
    recordings and then shuts the context down (rclpy's own handler invalidates the context
    under callbacks that are still publishing)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)

    def _interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def refuse_runtime_changes(node: Node) -> None:
    """Parameters are read once at start-up; say so to `ros2 param set` instead of silently
    accepting a value that would have no effect."""
    def _check(params) -> SetParametersResult:
        names = ', '.join(p.name for p in params)
        return SetParametersResult(
            successful=False, reason=f'{names}: read at start-up only; restart the node with '
            'the new value')
    node.add_on_set_parameters_callback(_check)


def diagnostics(node: Node, name: str, values: dict, rejections: 'Rejections',
                ok: bool = True, message: str = '') -> DiagnosticArray:
    """One /diagnostics message: status ``name`` (OK or WARN) with ``values`` and every
    rejection count (``rejected_total`` and ``rejected_<kind>``) as key/value strings."""
    status = DiagnosticStatus(name=name, hardware_id='invdyn', message=message,
                              level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN)
    values = dict(values, rejected_total=rejections.total)
    values.update({f'rejected_{k}': v for k, v in rejections.counts.items()})
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = node.get_clock().now().to_msg()
    return arr


#: How long a helper's close waits for its executor and spin thread [s].
SPIN_STOP_TIMEOUT_S = 5.0


def stop_spinning(executor, thread, node: Node, context) -> None:
    """Close a helper that spins ``node`` on ``executor`` in a background ``thread`` (the
    demo's and benches' monitors), in order: the executor shut down, its spin thread joined,
    then the node destroyed and the context shut down, so nothing is still waiting in rcl
    when the node and context go away (a process that exits with such a thread can abort:
    'terminate called without an active exception')."""
    executor.shutdown(timeout_sec=SPIN_STOP_TIMEOUT_S)
    thread.join(timeout=SPIN_STOP_TIMEOUT_S)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
