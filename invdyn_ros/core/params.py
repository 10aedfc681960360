"""Every node's parameters as a typed dataclass: one place for names, defaults, units, checks.

Nodes declare each field as a ROS parameter (with its description), read them once into the
dataclass and call :meth:`validate` before doing anything else; a bad value stops start-up with
a message naming the parameter. The YAML files in ``config/`` carry the same names and defaults
(a test checks they agree). Nothing here imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
import math
from typing import Any

from invdyn_ros.core.sched import MAX_NICE, MAX_RT_PRIORITY

#: Joints 1-5 of the KUKA LWR 4+ (the paper's setting), as named in our URDF and the LWR stacks.
LWR_JOINTS_1_TO_5 = ('lwr_a1_joint', 'lwr_a2_joint', 'lwr_e1_joint', 'lwr_a3_joint',
                     'lwr_a4_joint')
#: KUKA LWR 4+ maximum joint torques [Nm] of joints 1-5 (specification).
LWR_TORQUE_LIMITS_1_TO_5 = (176.0, 176.0, 100.0, 100.0, 100.0)


class ParamError(ValueError):
    """A parameter value is unusable; the message names the parameter."""


def _p(default: Any, description: str, **kw: Any) -> Any:
    """A dataclass field carrying the ROS parameter description."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda d=tuple(default): list(d),
                     metadata={'description': description, **kw})
    return field(default=default, metadata={'description': description, **kw})


def _positive(name: str, v: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ParamError(f'parameter {name} must be a positive number, got {v!r}')


def _forgetting(name: str, v: float) -> None:
    """A forgetting factor: in (0, 1]."""
    _positive(name, v)
    if v > 1.0:
        raise ParamError(f'parameter {name} must be in (0, 1], got {v!r}')


def _nonneg(name: str, v: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ParamError(f'parameter {name} must be a number >= 0, got {v!r}')


def _joints(name: str, v: list) -> None:
    if not v or not all(isinstance(j, str) and j for j in v) or len(set(v)) != len(v):
        raise ParamError(f'parameter {name} must be a non-empty list of unique joint names, '
                         f'got {v!r}')


def _choice(name: str, v: str, choices: tuple) -> None:
    if not isinstance(v, str) or v not in choices:
        raise ParamError(f'parameter {name} must be one of {list(choices)}, got {v!r}')


def _topic(name: str, v: str) -> None:
    if not isinstance(v, str) or not v.startswith('/'):
        raise ParamError(f'parameter {name} must be absolute, got {v!r}')


def _type_ok(v: Any, like: Any) -> bool:
    """Whether ``v`` has the type of the default ``like`` (bool apart from int; an int is a
    valid float)."""
    if isinstance(like, bool):
        return isinstance(v, bool)
    if isinstance(like, int):
        return isinstance(v, int) and not isinstance(v, bool)
    if isinstance(like, float):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if isinstance(like, str):
        return isinstance(v, str)
    return True


def _check_type(name: str, v: Any, default: Any) -> None:
    if isinstance(default, list):
        if not isinstance(v, (list, tuple)) or (default and not all(
                _type_ok(x, default[0]) for x in v)):
            kind = type(default[0]).__name__ if default else 'value'
            raise ParamError(f'parameter {name} must be a list of {kind}s, got {v!r}')
    elif not _type_ok(v, default):
        kind = {bool: 'a bool (true/false)', int: 'an integer', float: 'a number',
                str: 'a string'}.get(type(default), type(default).__name__)
        raise ParamError(f'parameter {name} must be {kind}, got {v!r}')


class NodeParams:
    """Mixin: field descriptions and dict conversion for the node parameter dataclasses."""

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        return {f.name: f.metadata.get('description', '') for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        obj = cls()
        return {f.name: getattr(obj, f.name) for f in fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> 'NodeParams':
        """Validated parameters from ``values`` (missing ones take their defaults). Each value
        must have its default's type, as a ROS parameter keeps its declared type: an integer
        where an integer is declared, an integer or a float for a float, a list whose items
        are of the default list's item type; ParamError names the parameter."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ParamError(f'unknown parameters {sorted(unknown)}')
        defaults = cls.defaults()
        for name, v in values.items():
            _check_type(name, v, defaults[name])
        obj = cls(**values)
        obj.validate()
        return obj

    def validate(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


#: Floats as ROS 2's parameter files read them: YAML 1.1 (PyYAML) takes ``1e-3`` for a string.
_ROS_FLOAT = r'^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$'


def _ros_yaml_loader():
    """A safe YAML loader that also reads exponent floats without a dot (``1e-3``)."""
    import re
    import yaml

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_implicit_resolver('tag:yaml.org,2002:float', re.compile(_ROS_FLOAT),
                                 list('-+0123456789.'))
    return Loader


def node_yaml_values(path: str, node: str) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node`` in a ROS 2 parameter file (this package's
    ``config/<node>.yaml`` form: keyed ``/**/<node>``, ``/<node>`` or ``<node>``).

    Raises ParamError naming the file when it cannot be read, is not YAML, or holds no
    parameters for ``node``."""
    import yaml
    try:
        with open(path, encoding='utf-8') as f:
            doc = yaml.load(f, Loader=_ros_yaml_loader())
    except OSError as e:
        raise ParamError(f'{path}: cannot read: {e.strerror or e}') from None
    except UnicodeDecodeError:
        raise ParamError(f'{path}: not a text file (UTF-8)') from None
    except yaml.YAMLError as e:
        raise ParamError(f'{path}: not a YAML file: {e}') from None
    for key in (f'/**/{node}', f'/{node}', node):
        entry = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get('ros__parameters'), dict):
            return dict(entry['ros__parameters'])
    raise ParamError(f"{path}: no '/**/{node}: ros__parameters:' section")


@dataclass
class PredictorParams(NodeParams):
    """Parameters of the predictor node."""

    model_path: str = _p('', 'LSTM checkpoint (.npz); empty: the default model shipped in '
                         'share/invdyn/models')
    joint_names: list = _p(LWR_JOINTS_1_TO_5, 'joints to predict, matched by name in '
                           '/joint_states; must equal the model joints')
    torque_limits: list = _p(LWR_TORQUE_LIMITS_1_TO_5, 'per-joint |torque| clamp [Nm], '
                             'same order as joint_names')
    max_gap_s: float = _p(0.1, 'a stamp gap longer than this [s] resets the LSTM state')
    model_topic: str = _p('/invdyn/model', 'topic of model updates from the trainer')
    diagnostics_period_s: float = _p(1.0, 'period of /diagnostics messages [s]')
    qos_depth: int = _p(200, 'history depth of the joint_states subscription [messages]: a '
                        'stall of up to this many periods drops no input (200: 0.2 s at 1 kHz)')
    feedforward_depth: int = _p(10, 'history depth of the feedforward publishers [messages] '
                                '(a reliable reader slower than the node loses the oldest)')
    forward_samples: bool = _p(True, 'publish the accepted samples (stamp, q, qd, effort) in '
                               'blocks on samples_topic, for the trainer')
    samples_topic: str = _p('/invdyn/samples', 'topic of those blocks')
    samples_per_message: int = _p(128, 'samples per block [samples]')
    receive: str = _p('thread', 'how joint_states are taken: thread (a wait set of their own in '
                      'a dedicated thread, about a third of the CPU per message) or executor '
                      '(the rclpy executor, with the node services and timers)')
    realtime_priority: int = _p(50, 'SCHED_FIFO priority of the node threads (1..98, as '
                                'ros2_control thread_priority); 0: default scheduler. Without '
                                'permission the node warns and runs on')
    inference: str = _p('auto', 'how a sample is computed: compiled (one C call, the kernel '
                        'built at install), numpy, or auto (compiled when built, else numpy); '
                        'the same torques within 1e-5 Nm')

    def validate(self) -> None:
        _joints('joint_names', self.joint_names)
        _choice('receive', self.receive, PREDICTOR_RECEIVE)
        _choice('inference', self.inference, PREDICTOR_INFERENCE)
        if not isinstance(self.forward_samples, bool):
            raise ParamError(f'parameter forward_samples must be true or false, got '
                             f'{self.forward_samples!r}')
        _positive('samples_per_message', self.samples_per_message)
        _positive('feedforward_depth', self.feedforward_depth)
        _topic('samples_topic', self.samples_topic)
        if not 0 <= self.realtime_priority <= MAX_RT_PRIORITY:
            raise ParamError(f'parameter realtime_priority must be 0 (off) or 1..'
                             f'{MAX_RT_PRIORITY}, got {self.realtime_priority}')
        if len(self.torque_limits) != len(self.joint_names):
            raise ParamError(f'parameter torque_limits needs {len(self.joint_names)} values '
                             f'(one per joint), got {len(self.torque_limits)}')
        for v in self.torque_limits:
            _positive('torque_limits', v)
        _positive('max_gap_s', self.max_gap_s)
        _positive('diagnostics_period_s', self.diagnostics_period_s)
        _positive('qos_depth', self.qos_depth)
        _topic('model_topic', self.model_topic)


#: How the predictor can take joint_states.
PREDICTOR_RECEIVE = ('thread', 'executor')
#: How the predictor can compute a sample: 'compiled' (one C call, invdyn_ros.core.compiled),
#: 'numpy' (the numpy objects), 'auto' (compiled when its kernel was built and the model runs
#: in float64, else numpy); OnlinePredictor's ``inference`` (invdyn_ros.core.online).
PREDICTOR_INFERENCE = ('auto', 'compiled', 'numpy')
#: What the trainer can learn from.
TRAINER_INPUTS = ('samples', 'joint_states')
#: What the trainer adapts (see invdyn_ros.core.online_learning).
TRAINER_ADAPT = ('network', 'payload')
#: Most decades of ridges the output-layer fit chooses among (each one solve per window).
MAX_RIDGE_DECADES = 8


@dataclass
class TrainerParams(NodeParams):
    """Parameters of the online trainer node."""

    model_path: str = _p('', 'initial LSTM checkpoint; empty: the shipped default model')
    input: str = _p('samples', 'what to learn from: samples (the blocks a predictor forwards '
                    'on samples_topic; cheap) or joint_states (/joint_states itself; for a '
                    'trainer without a predictor)')
    samples_topic: str = _p('/invdyn/samples', 'topic of the predictor blocks')
    joint_names: list = _p(LWR_JOINTS_1_TO_5, 'joints to learn, matched by name')
    batch_size: int = _p(128, 'consecutive samples per online update (the paper: 128)')
    context: int = _p(128, 'samples before each batch run only to warm the LSTM state')
    learning_rate: float = _p(0.01, 'Adagrad learning rate')
    replay_batches: int = _p(3, 'older batches from the replay buffer mixed into each update')
    replay_size: int = _p(200, 'batches kept in the replay buffer (oldest dropped)')
    holdout_every: int = _p(5, 'every n-th batch is held back to score candidate models')
    holdout_size: int = _p(20, 'held-back batches kept for scoring')
    holdout_recent: int = _p(4, 'score candidates on only the newest n held-back batches (older '
                             'ones go stale when the dynamics change); 0: all kept')
    head_rls: bool = _p(True, 'refit the output layer after each update by recursive least '
                        'squares on the LSTM hidden state')
    rls_forgetting: float = _p(0.999, 'per-sample forgetting factor of that fit, in (0, 1]')
    rls_ridge: float = _p(1.0, 'ridge weight pulling that fit towards the starting output '
                          'layer; with rls_ridge_decades the smallest ridge to choose from')
    rls_ridge_decades: int = _p(4, 'choose the ridge window by window among rls_ridge x '
                                '10^0..10^k and the starting layer itself, by which would have '
                                'predicted the recent windows best before they were learned; '
                                '0: always rls_ridge')
    rls_select_forgetting: float = _p(0.9, 'per-window forgetting factor of those scores, in '
                                      '(0, 1]')
    rls_jump_factor: float = _p(10.0, 'two batches in a row with an error above this factor '
                                'times the running mean make that fit forget all older data; '
                                '0: never')
    adapt: str = _p('network', 'what online learning changes: network (LSTM weights, any '
                    'target) or payload (10 inertial parameters of the flange body added to '
                    'the nominal model; residual_rbd models: fast, holds in every pose)')
    fallback_windows: int = _p(4, 'adapt network: when the model in operation predicted the '
                               'newest n windows (before they were learned) worse in sum than '
                               'the starting model, publish the starting model again and '
                               'restart training from it; 0: never')
    payload_forgetting: float = _p(0.9998, 'adapt payload: per-sample forgetting factor of the '
                                   'payload fit, in (0, 1]')
    payload_ridge: float = _p(1.0, 'adapt payload: ridge weight pulling the fit towards no '
                              'change')
    payload_jump_factor: float = _p(4.0, 'adapt payload: two batches in a row with an error '
                                    'above this factor times the running mean make the fit '
                                    'forget all older data (a new load); 0: never')
    publish_period_s: float = _p(2.0, 'least time between model publications [s]')
    model_topic: str = _p('/invdyn/model', 'topic the new weights are published on')
    checkpoint_path: str = _p('', 'where to save each published model (atomically); empty: '
                              'do not save')
    record_bag: str = _p('', 'folder to record /joint_states into (rosbag2); empty: off')
    record_storage: str = _p('mcap', 'rosbag2 storage of the recording: mcap or sqlite3')
    record_max_bytes: int = _p(256 * 1024 * 1024, 'rotate the recording after this size '
                               '[bytes]; 0: no limit')
    record_max_seconds: float = _p(600.0, 'rotate the recording after this duration [s]; '
                                   '0: no limit')
    max_gap_s: float = _p(0.1, 'a stamp gap longer than this [s] starts a new sequence')
    threads: int = _p(1, 'torch CPU threads for updates')
    nice: int = _p(10, 'added to the nice value of the trainer threads (0..19) so that updates '
                   'yield the CPU to the predictor and the controller; 0: unchanged')

    def validate(self) -> None:
        _joints('joint_names', self.joint_names)
        for name in ('batch_size', 'replay_size', 'holdout_every', 'holdout_size', 'threads'):
            _positive(name, getattr(self, name))
        for name in ('context', 'replay_batches', 'record_max_bytes', 'record_max_seconds'):
            _nonneg(name, getattr(self, name))
        _positive('learning_rate', self.learning_rate)
        _nonneg('holdout_recent', self.holdout_recent)
        _choice('input', self.input, TRAINER_INPUTS)
        _topic('samples_topic', self.samples_topic)
        if not 0 <= self.nice <= MAX_NICE:
            raise ParamError(f'parameter nice must be in 0..{MAX_NICE}, got {self.nice}')
        if not isinstance(self.head_rls, bool):
            raise ParamError(f'parameter head_rls must be a bool, got {self.head_rls!r}')
        _forgetting('rls_forgetting', self.rls_forgetting)
        _positive('rls_ridge', self.rls_ridge)
        _nonneg('rls_ridge_decades', self.rls_ridge_decades)
        if self.rls_ridge_decades > MAX_RIDGE_DECADES:
            raise ParamError(f'parameter rls_ridge_decades must be in 0..{MAX_RIDGE_DECADES}, '
                             f'got {self.rls_ridge_decades}')
        _forgetting('rls_select_forgetting', self.rls_select_forgetting)
        _nonneg('fallback_windows', self.fallback_windows)
        _nonneg('rls_jump_factor', self.rls_jump_factor)
        _choice('adapt', self.adapt, TRAINER_ADAPT)
        _forgetting('payload_forgetting', self.payload_forgetting)
        _positive('payload_ridge', self.payload_ridge)
        _nonneg('payload_jump_factor', self.payload_jump_factor)
        _positive('publish_period_s', self.publish_period_s)
        _positive('max_gap_s', self.max_gap_s)
        _choice('record_storage', self.record_storage, ('mcap', 'sqlite3'))
        _topic('model_topic', self.model_topic)


@dataclass
class GpBaselineParams(NodeParams):
    """Parameters of the GP baseline node."""

    model_path: str = _p('', 'GP checkpoint (.npz, kind gp) fitted offline with '
                         '`invdyn train --model gp`')
    joint_names: list = _p(LWR_JOINTS_1_TO_5, 'joints to predict, matched by name')
    decimation: int = _p(10, 'predict on every n-th /joint_states message')
    max_gap_s: float = _p(0.1, 'a stamp gap longer than this [s] restarts the acceleration '
                          'filter')

    def validate(self) -> None:
        _joints('joint_names', self.joint_names)
        _positive('decimation', self.decimation)
        _positive('max_gap_s', self.max_gap_s)


@dataclass
class LwrSimParams(NodeParams):
    """Parameters of the simulated KUKA LWR 4+ node."""

    rate_hz: float = _p(1000.0, 'simulation and /joint_states rate [Hz]')
    payload_ml: float = _p(300.0, 'liquid in the flask at the flange [ml], 0..1000; may be '
                           'changed at run time')
    motion: str = _p('mixed', 'reference motion: mixed, reach or push')
    seed: int = _p(0, 'random seed of motion and sensor noise')
    noise: bool = _p(True, 'add sensor noise to q, qd and tau')
    duration_s: float = _p(0.0, 'stop publishing after this much simulated time [s]; 0: run '
                           'until shut down')
    controller: str = _p('computed_torque', 'computed_torque: the nominal model + PD tracks '
                         'the reference (data generation; feedforward is not subscribed); pd: '
                         'PD on the reference plus the received feedforward (closed-loop '
                         'control)')
    gain_scale: float = _p(1.0, 'multiplies the PD stiffness (0.25: a quarter of the nominal '
                           'gains; damping follows for the same damping ratio)')
    feedforward_topic: str = _p('/invdyn/feedforward_cmd', 'torque feedforward [Nm] added to '
                                'the PD law in controller pd; empty: none')
    feedforward_type: str = _p('array', 'array: std_msgs/Float64MultiArray in '
                               'feedforward_joints order; joint_state: sensor_msgs/JointState, '
                               'effort by joint name, stamped (its age is measured)')
    feedforward_joints: list = _p(LWR_JOINTS_1_TO_5, 'joints of an array feedforward, in its '
                                  'order; unnamed joints get none')
    feedforward_timeout_s: float = _p(0.05, 'a feedforward older than this [s] is dropped '
                                      '(counted), never applied')
    reference_topic: str = _p('', 'publish the reference (JointState: position = desired q '
                              '[rad], velocity = desired qd [rad/s]) here, the input of a '
                              'feedforward predictor; empty: off')
    reference_lead_s: float = _p(0.0, 'publish the reference this far ahead [s] (stamped with '
                                 'its own time), to cover the feedforward round trip')
    diagnostics_period_s: float = _p(1.0, 'period of /diagnostics (feedforward counts and '
                                     'lag, tracking error) [s]')

    def validate(self) -> None:
        _positive('rate_hz', self.rate_hz)
        _choice('controller', self.controller, ('computed_torque', 'pd'))
        _positive('gain_scale', self.gain_scale)
        _choice('feedforward_type', self.feedforward_type, ('array', 'joint_state'))
        _joints('feedforward_joints', self.feedforward_joints)
        _positive('feedforward_timeout_s', self.feedforward_timeout_s)
        _nonneg('reference_lead_s', self.reference_lead_s)
        _positive('diagnostics_period_s', self.diagnostics_period_s)
        for name in ('feedforward_topic', 'reference_topic'):
            v = getattr(self, name)
            if v and not v.startswith('/'):
                raise ParamError(f'parameter {name} must be absolute or empty, got {v!r}')
        if not (isinstance(self.payload_ml, (int, float)) and 0 <= self.payload_ml <= 1000):
            raise ParamError(f'parameter payload_ml must be in [0, 1000] ml, got '
                             f'{self.payload_ml!r}')
        _choice('motion', self.motion, ('mixed', 'reach', 'push'))
        _nonneg('duration_s', self.duration_s)
