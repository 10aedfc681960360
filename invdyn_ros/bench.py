"""`invdyn bench`: measure the project's performance goals and print each figure beside its goal.

Modes (``invdyn bench [latency|e2e|train|gp|all] [--quick] [--json OUT] [--profile]``):

* ``latency``: predictor compute per message, in this process, without DDS traffic: a real
  :class:`~invdyn_ros.nodes.predictor.PredictorNode` (real publishers, no subscribers) is fed
  JointState messages of a simulated LWR 4+ run by calling its /joint_states callback directly,
  timed from callback entry to both publishes returned [us] by the node's own clock (what it
  reports in /diagnostics); the whole callback, which then forwards the sample to the trainer
  (one 128-row block publish per 128 messages), is timed beside it. For attribution: the
  compute alone (joint mapping + :class:`~invdyn_ros.core.online.OnlinePredictor`, on the path
  the node runs, compiled where its kernel was built, and on the numpy path), the same
  with the naive PyTorch step (``LstmInverseDynamics.step`` under ``torch.no_grad``), and the
  bare LSTM steps (numpy vs torch). Percentiles per repeat; median over repeats with min..max,
  as the machine is noisy. Then the callback once more with a reader of /invdyn/feedforward in
  another process, called at the joint_states rate: in operation a publish hands the sample
  to DDS for delivery (a reliable write), which the in-process figure leaves out. And the
  compute on both paths called at the joint_states rate with the thread asleep in between: a
  message then starts cold (caches, a woken CPU), as in operation, where back-to-back calls
  keep everything warm.
  ``--profile`` adds a cProfile of the callback path.
* ``e2e``: between processes over DDS. A publisher process sends /joint_states at ``rate_hz``
  stamped with its wall clock (``time.time_ns``, the clock ROS time uses without sim time) just
  before each publish; this process receives the answers and takes its own wall clock at
  callback entry, so latency = receipt - stamp [us] on one machine's clock. Measured in the
  same run: the floor of the transport (a no-op relay process, ``python -m invdyn_ros.bench
  relay``, single- and multi-threaded executor), the predictor process, and the predictor with
  the trainer process running (``publish_period_s`` 1 s, so model updates land during the run);
  plus the predictor's resident memory from /proc [MB] and the CPU time per message of every
  process. The four runs repeat in interleaved rounds (``--rounds``). This process takes each
  answer topic in a thread of its own (as the predictor takes joint_states), so the instrument
  itself uses about 140 us of CPU per message rather than the ~480 of an rclpy executor.
* ``train``: offline LSTM training time and test MSE vs training samples (fixed epochs, so time
  should grow linearly), beside the paper's figures as a ratio; exact-GP fit time vs n; one
  online-trainer update on a 128-sample batch [ms].
* ``gp``: exact-GP fit time vs n [s] and per-message prediction latency (``predict_one``) [us].

Every figure is measured in the run; the only constants are the goals and the paper's figures
(Rueckert et al. 2017, labelled as such). DDS stays on this machine, in a domain of the bench's
own (``INVDYN_BENCH_DOMAIN_ID`` if set), for this process and every child.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
import gc
import json
import math
import os
from pathlib import Path
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional, Sequence, TextIO

import numpy as np

from invdyn_ros.core.params import PredictorParams

MODES = ('latency', 'e2e', 'train', 'gp')
#: Version of the JSON layout written by ``--json``.
JSON_SCHEMA = 1

# --- goals (from the project's issue) -------------------------------------------------------
#: Predictor compute per message, callback entry to both publishes returned [us].
CALLBACK_P50_GOAL_US = 50.0
CALLBACK_P99_GOAL_US = 100.0
#: End to end: the predictor may add this much to the relay's median [us] ...
E2E_P50_MARGIN_US = 100.0
#: ... and its p99 may be at most max(this floor [us], factor x the relay's p99).
E2E_P99_FLOOR_US = 1000.0
E2E_P99_FACTOR = 1.25
#: Predictor resident memory [MB] at the end of the run, and its growth over the run: "no
#: growth", with this much allowed for allocator noise [MB].
RSS_GOAL_MB = 150.0
RSS_GROWTH_TOLERANCE_MB = 1.0
#: One online-trainer update on a 128-sample batch [ms].
ONLINE_UPDATE_GOAL_MS = 10.0
#: Interleaved rounds of the compiled-kernel / nn.LSTM training comparison.
KERNEL_AB_ROUNDS = 3

# --- the paper's figures (Rueckert et al. 2017), the only numbers not measured here ---------
PAPER_CORES = 8
#: LSTM training time [s] vs training samples, on 8 CPU cores.
PAPER_LSTM_TRAIN_S = {1000: 2.9, 10000: 28.1, 50000: 141.0, 100000: 282.0}
#: GP training time [s] vs training samples.
PAPER_GP_TRAIN_S = {1000: 33.7, 10000: 3196.0}

# --- set-up ---------------------------------------------------------------------------------
SIM_RATE_HZ = 1000.0
TRAIN_SEED = 1
TEST_SEED = 2
PAYLOAD_ML = 300.0
#: First stamp of the in-process latency messages [s] (a zero stamp is rejected).
LATENCY_T0_S = 1000.0
#: Topics of the relay runs (the predictor's are its own).
RELAY_TOPICS = {'relay': ('/invdyn/bench/relay_in', '/invdyn/bench/relay_out'),
                'relay_mt': ('/invdyn/bench/relay_mt_in', '/invdyn/bench/relay_mt_out')}
FEEDFORWARD_TOPIC = '/invdyn/feedforward'
JOINT_STATES_TOPIC = '/joint_states'
SAMPLES_TOPIC = '/invdyn/samples'
#: Subscription depth of the relay: the predictor's default qos_depth.
RELAY_DEPTH = PredictorParams().qos_depth
#: Longest wait for a node process to come up (torch import on a loaded 2-core machine) [s].
NODE_START_TIMEOUT_S = 90.0
#: Wait after a publisher has matched its subscribers, so the other direction matches too [s].
MATCH_SETTLE_S = 0.5
#: Wait after the last message for answers still in flight [s].
DRAIN_S = 0.5
#: Wait after a predictor run before reading /diagnostics, so the values cover its end: the
#: predictor's default diagnostics period (1 s) and a margin [s].
DIAG_WAIT_S = 1.2
#: Period of the predictor's resident-memory samples [s].
RSS_SAMPLE_PERIOD_S = 0.2
#: Trainer publish period in the trainer-on run [s], short so updates land during the run.
TRAINER_PUBLISH_PERIOD_S = 1.0
#: Exact-GP points are drawn at random from this many times as many simulated samples.
GP_POOL_FACTOR = 5
PROFILE_TOP = 15
PERCENTILES = (50, 90, 99)


class BenchError(Exception):
    """A benchmark could not be run (a node did not start, a file is missing...)."""


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (quick or full; CLI options override single fields).

    Attributes:
        messages: latency: messages per repeat.
        repeats: latency: repeats (median, min and max are over these).
        reader_messages: latency: messages per repeat of the runs at the joint_states rate
            (the callback with a reader, the paced compute), so this many milliseconds at
            1 kHz.
        e2e_seconds: e2e: measured seconds per run [s].
        e2e_warmup_s: e2e: seconds sent before the measured part of each run [s].
        e2e_rounds: e2e: rounds of all four runs, interleaved (medians, min and max over them).
        train_sizes: LSTM training sample counts.
        test_samples: samples of the held-out simulated run that scores each LSTM.
        epochs: LSTM epochs, the same for every size.
        online_updates: online-trainer updates timed.
        gp_sizes: exact-GP training sample counts.
        gp_iters: GP optimiser steps (Adam); None: the GP's own default (a full fit).
        gp_predict_calls: predict_one calls timed per GP.
    """

    messages: int
    repeats: int
    reader_messages: int
    e2e_seconds: float
    e2e_warmup_s: float
    e2e_rounds: int
    train_sizes: tuple[int, ...]
    test_samples: int
    epochs: int
    online_updates: int
    gp_sizes: tuple[int, ...]
    gp_iters: Optional[int]
    gp_predict_calls: int


#: Quick: well under 2 minutes for `all` on a loaded 2-core machine; indicative figures. The
#: exact GP's default fit (Adam warm-up + L-BFGS, ~150 marginal-likelihood evaluations) takes
#: minutes at 1000 points here, so quick runs time a few Adam steps and say so.
QUICK = Settings(messages=2000, repeats=3, reader_messages=1000, e2e_seconds=3.0,
                 e2e_warmup_s=0.5, e2e_rounds=1,
                 train_sizes=(1000, 5000), test_samples=2000, epochs=10, online_updates=20,
                 gp_sizes=(500, 1000), gp_iters=5, gp_predict_calls=200)
FULL = Settings(messages=10000, repeats=5, reader_messages=5000, e2e_seconds=20.0,
                e2e_warmup_s=2.0, e2e_rounds=3,
                train_sizes=(1000, 10000, 100000), test_samples=10000, epochs=10,
                online_updates=100, gp_sizes=(500, 1000), gp_iters=None, gp_predict_calls=1000)


@dataclass
class BenchOptions:
    """What to run; None fields take the quick or full default of :class:`Settings`."""

    quick: bool = False
    profile: bool = False
    rate_hz: float = 1000.0
    threads: int = 1
    model: Optional[str] = None
    messages: Optional[int] = None
    repeats: Optional[int] = None
    seconds: Optional[float] = None
    rounds: Optional[int] = None
    train_sizes: Optional[Sequence[int]] = None
    gp_sizes: Optional[Sequence[int]] = None
    epochs: Optional[int] = None
    #: e2e: SCHED_FIFO priority of predictor and relay; None: the predictor's YAML default.
    realtime_priority: Optional[int] = None

    def rt_priority(self) -> int:
        """The e2e real-time priority: the option, else the shipped predictor.yaml's."""
        if self.realtime_priority is not None:
            return int(self.realtime_priority)
        import yaml
        from invdyn_ros.graph import config_dir
        with open(config_dir() / 'predictor.yaml', encoding='utf-8') as f:
            cfg = yaml.safe_load(f)
        return int(cfg['/**/predictor']['ros__parameters']['realtime_priority'])

    def settings(self) -> Settings:
        s = QUICK if self.quick else FULL
        over = {'messages': self.messages, 'repeats': self.repeats,
                'e2e_seconds': self.seconds, 'e2e_rounds': self.rounds, 'epochs': self.epochs,
                'train_sizes': tuple(self.train_sizes) if self.train_sizes else None,
                'gp_sizes': tuple(self.gp_sizes) if self.gp_sizes else None}
        return replace(s, **{k: v for k, v in over.items() if v is not None})


# --- small helpers --------------------------------------------------------------------------

def parse_sizes(option: str, text: Optional[str]) -> Optional[list[int]]:
    """'1000,10000' (commas or spaces) -> [1000, 10000]; None passes through. Raises
    BenchError naming ``option`` on anything but sample counts >= 2."""
    if text is None:
        return None
    try:
        sizes = [int(v) for v in text.replace(',', ' ').split()]
    except ValueError:
        raise BenchError(f'{option}: not a list of integers: {text!r}') from None
    if not sizes or min(sizes) < 2:
        raise BenchError(f'{option}: need sample counts >= 2, got {text!r}')
    return sizes


def repo_root() -> Path:
    """The folder that holds the ``invdyn_ros`` package."""
    return Path(__file__).resolve().parents[1]


def isolate_dds() -> int:
    """Keep DDS on this machine, in a domain of the bench's own, for this process and every
    child it starts (they inherit the environment); returns the ROS domain id.

    Must run before anything here initialises rclpy. ``INVDYN_BENCH_DOMAIN_ID`` wins when set.
    """
    from invdyn_ros.graph import config_dir
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(config_dir() / 'fastdds_localhost.xml')
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    given = os.environ.get('INVDYN_BENCH_DOMAIN_ID')
    if given:
        try:
            domain = int(given)
        except ValueError:
            raise BenchError(f'INVDYN_BENCH_DOMAIN_ID must be an integer, got {given!r}') from None
        if not 0 <= domain <= 232:
            raise BenchError(f'INVDYN_BENCH_DOMAIN_ID must be in 0..232, got {domain}')
    else:
        # 1..100: valid for Fast DDS's default port mapping; pid-derived so runs differ.
        domain = 1 + (os.getpid() * 7919 + int.from_bytes(os.urandom(2), 'little')) % 100
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ['INVDYN_BENCH_DOMAIN_ID'] = str(domain)
    # Children run `python -m invdyn_ros...`: make sure they import this very package.
    path = os.environ.get('PYTHONPATH', '')
    if str(repo_root()) not in path.split(os.pathsep):
        os.environ['PYTHONPATH'] = os.pathsep.join(p for p in (str(repo_root()), path) if p)
    return domain


def _pcts(values_us: np.ndarray) -> dict:
    """p50/p90/p99/max of ``values_us`` (any unit; keys say us)."""
    if len(values_us) == 0:
        return {'p50_us': None, 'p90_us': None, 'p99_us': None, 'max_us': None}
    p = np.percentile(values_us, PERCENTILES)
    return {'p50_us': float(p[0]), 'p90_us': float(p[1]), 'p99_us': float(p[2]),
            'max_us': float(np.max(values_us))}


def _over_repeats(per_repeat: list[dict]) -> dict:
    """{'p50_us': {'median', 'min', 'max'}, ...} over the repeats' percentile dicts."""
    out = {}
    for key in per_repeat[0]:
        vals = np.array([r[key] for r in per_repeat], dtype=float)
        out[key] = {'median': float(np.median(vals)), 'min': float(vals.min()),
                    'max': float(vals.max())}
    return out


def _fmt(v: Optional[float], digits: int = 1) -> str:
    return 'n/a' if v is None or not math.isfinite(v) else f'{v:.{digits}f}'


def _spread(d: dict, digits: int = 1) -> str:
    """'median [min..max]' of an :func:`_over_repeats` entry."""
    return f'{_fmt(d["median"], digits)} [{_fmt(d["min"], digits)}..{_fmt(d["max"], digits)}]'


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        tmp.write_text(json.dumps(_finite(obj), indent=2, allow_nan=False))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Report:
    """Figures with their goals: printed as one table per mode, and kept for the JSON."""

    #: Column widths [characters] of figure, value and goal.
    WIDTHS = (50, 24, 16)

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.goals: list[dict] = []

    def section(self, title: str) -> None:
        fw, vw, gw = self.WIDTHS
        print(f'\n== {title} ==', file=self.out)
        print(f'  {"figure":<{fw}}{"value":>{vw}}  {"goal":<{gw}} status', file=self.out)

    def row(self, figure: str, value: str, goal: str = '', ok: Optional[bool] = None,
            mode: str = '', number: Optional[float] = None) -> None:
        """One figure; ``ok`` None: no goal (reference only); else recorded as a goal."""
        fw, vw, gw = self.WIDTHS
        mark = '' if ok is None else ('pass' if ok else 'MISS')
        print(f'  {figure:<{fw}}{value:>{vw}}  {goal:<{gw}} {mark}'.rstrip(), file=self.out,
              flush=True)
        if ok is not None:
            self.goals.append({'mode': mode, 'figure': figure, 'value': number,
                               'goal': goal, 'pass': bool(ok)})

    def note(self, text: str) -> None:
        print(f'  ({text})', file=self.out, flush=True)


# --- simulated data -------------------------------------------------------------------------

class SimData:
    """Simulated LWR 4+ runs, made once per bench run: training (``train_samples``) and a
    held-out test run (``test_samples``), 7 joints at 1 kHz."""

    def __init__(self, train_samples: int, test_samples: int) -> None:
        self._n = {'train': int(train_samples), 'test': int(test_samples)}
        self._cache: dict = {}

    def get(self, which: str):
        """The 'train' or 'test' :class:`~invdyn_ros.core.trajectory.Trajectory`."""
        if which not in self._cache:
            from invdyn_ros.core.lwr_sim import simulate
            n = max(self._n[which], 2)
            self._cache[which] = simulate(n / SIM_RATE_HZ, payload_ml=PAYLOAD_ML,
                                          seed=TRAIN_SEED if which == 'train' else TEST_SEED,
                                          rate_hz=SIM_RATE_HZ)
        return self._cache[which]


def _samples_needed(modes: Sequence[str], s: Settings, rate_hz: float) -> int:
    need = [2]
    if 'latency' in modes:
        need.append(s.messages)
    if 'e2e' in modes:
        need.append(int(math.ceil((s.e2e_seconds + s.e2e_warmup_s) * rate_hz)) + 10)
    if 'train' in modes:
        need.append(max(s.train_sizes))
        # Online windows: batch 128 each, every 5th held back, plus one of context.
        need.append((s.online_updates * 5 // 4 + 3) * 128)
    if 'gp' in modes or 'train' in modes:
        need.append(max(s.gp_sizes) * GP_POOL_FACTOR)
    return max(need)


def bench_model(opts: BenchOptions, data: SimData, tmp: Path) -> tuple[Path, str]:
    """The LSTM checkpoint to benchmark and where it came from: ``--model``, else the shipped
    default, else a paper-sized (1 x 64) model with random weights and a normaliser from the
    simulated data (written to ``tmp``)."""
    from invdyn_ros.core.checkpoint import CheckpointError, load_checkpoint
    from invdyn_ros.core.params import LWR_JOINTS_1_TO_5
    from invdyn_ros.nodes.common import default_model_path
    from invdyn_ros.nodes.predictor import DEFAULT_MODEL
    if opts.model:
        path = Path(opts.model)
        try:
            load_checkpoint(path, expect_kind='lstm', joint_names=LWR_JOINTS_1_TO_5)
        except CheckpointError as e:
            raise BenchError(f'--model: {e}') from None
        return path, str(path)
    shipped = Path(default_model_path(DEFAULT_MODEL))
    if shipped.is_file():
        return shipped, f'shipped {shipped.name}'
    import torch
    from invdyn_ros.core.accel import AccelConfig, ensure_qdd
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer, sequence_inputs
    tr = ensure_qdd(data.get('train').select(LWR_JOINTS_1_TO_5), AccelConfig())
    torch.manual_seed(0)
    model = LstmInverseDynamics(
        LstmConfig(joint_names=LWR_JOINTS_1_TO_5, rate_hz=SIM_RATE_HZ),
        Normalizer.from_data(sequence_inputs(tr.q, tr.qd, tr.qdd), tr.tau)).eval()
    path = save_checkpoint(tmp / 'bench_random_lstm.npz', model,
                           {'model_version': 1, 'accel_config': AccelConfig().to_dict()})
    return path, 'random weights, 1 x 64 (no shipped model)'


# --- latency: in process, no DDS ------------------------------------------------------------

def _joint_state_messages(traj, n: int) -> list:
    """``n`` JointState messages (all of the trajectory's joints) stamped 1 ms apart."""
    from sensor_msgs.msg import JointState
    msgs = []
    names = list(traj.joint_names)
    q, qd, tau = traj.q.tolist(), traj.qd.tolist(), traj.tau.tolist()
    for k in range(n):
        m = JointState()
        ns = int(round((LATENCY_T0_S + k / SIM_RATE_HZ) * 1e9))
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        m.name = names
        i = k % len(q)
        m.position, m.velocity, m.effort = q[i], qd[i], tau[i]
        msgs.append(m)
    return msgs


def _time_calls(fn: Callable[[Any], Any], items: Sequence,
                rate_hz: Optional[float] = None) -> np.ndarray:
    """Wall time of ``fn(item)`` for each item [us]: back to back, or with ``rate_hz`` (the
    joint_states rate) one call per period, sleeping in between, so that a reader downstream
    sees the node's real message rate and each call starts cold, as in operation."""
    out = np.empty(len(items))
    clock = time.perf_counter_ns
    period = 0 if rate_hz is None else int(1e9 / rate_hz)
    t_next = clock()
    for k, item in enumerate(items):
        if period:
            wait = t_next - clock()
            if wait > 0:
                time.sleep(wait / 1e9)
            t_next += period
        t0 = clock()
        fn(item)
        out[k] = clock() - t0
    return out / 1e3


#: The latency mode's reader of the feedforward (a relay child process) republishes here.
READER_SINK_TOPIC = '/invdyn/bench/feedforward_sink'


def bench_latency(opts: BenchOptions, s: Settings, data: SimData, model_path: Path,
                  model_label: str, report: Report) -> dict:
    """Predictor compute per message, in process (see the module docstring). Returns the
    figures; prints the table (and the cProfile top functions with ``opts.profile``)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger
    import torch

    from invdyn_ros.core.accel import AccelEstimator, AccelStatus
    from invdyn_ros.core.checkpoint import load_checkpoint
    from invdyn_ros.core.joint_map import JointMapper
    from invdyn_ros.core.lstm import NumpyLstmStepper
    from invdyn_ros.core.online import OnlinePredictor
    from invdyn_ros.nodes.common import LatencyWindow, stamp_to_s
    from invdyn_ros.nodes.predictor import PredictorNode

    torch.set_num_threads(opts.threads)
    traj = data.get('train')
    msgs = _joint_state_messages(traj, s.messages)
    ctx = Context()
    rclpy.init(context=ctx)
    node = None
    try:
        node = PredictorNode(context=ctx, parameter_overrides=[
            Parameter('model_path', value=str(model_path))])
        p = node.params
        model, _ = load_checkpoint(model_path, expect_kind='lstm', joint_names=p.joint_names)
        accel_cfg = node._accel          # the node's own settings (checkpoint + max_gap_s)
        d = len(p.joint_names)
        mapper = JointMapper(p.joint_names)
        # The LSTM inputs the node would build, for the bare-step timings.
        xs = []
        est = AccelEstimator(d, accel_cfg)
        for m in msgs:
            mp, _ = mapper.map(m.name, m.position, m.velocity, m.effort)
            qdd, _ = est.update(stamp_to_s(m.header.stamp), mp.q, mp.qd)
            xs.append(np.concatenate((mp.q, mp.qd, qdd)))

        whole_runs: list[dict] = []

        def node_span(run: Callable[[], np.ndarray], n: int) -> np.ndarray:
            """What the goal measures: the node's own time per message from callback entry
            to both publishes returned (its LatencyWindow) [us]. The callback goes on after
            them (the trainer's sample block, one publish per 128 messages), so its whole
            time, returned by ``run``, is kept beside in ``whole_runs``."""
            node._on_reset(Trigger.Request(), Trigger.Response())
            node.latency = LatencyWindow(n)
            whole_runs.append(_pcts(run()))
            return node.latency.values() * 1e6

        def callback_run() -> np.ndarray:
            return node_span(lambda: _time_calls(node._on_joint_state, msgs), len(msgs))

        def compute_run(inference: str = p.inference, paced: bool = False) -> np.ndarray:
            online = OnlinePredictor(model, accel_cfg, p.torque_limits, inference=inference)

            def one(m):
                mp, _ = mapper.map(m.name, m.position, m.velocity, m.effort)
                return online.update(stamp_to_s(m.header.stamp), mp.q, mp.qd)
            if paced:
                # One message per period with the thread asleep in between, as in operation:
                # each message then starts with cold caches (and, on a VM, a woken vCPU).
                return _time_calls(one, msgs[:s.reader_messages], opts.rate_hz)
            return _time_calls(one, msgs)

        def naive_run() -> np.ndarray:
            acc = AccelEstimator(d, accel_cfg)
            state = [None]

            def one(m):
                mp, _ = mapper.map(m.name, m.position, m.velocity, m.effort)
                qdd, status = acc.update(stamp_to_s(m.header.stamp), mp.q, mp.qd)
                if status is AccelStatus.RESET:
                    state[0] = None
                x = torch.as_tensor(np.concatenate((mp.q, mp.qd, qdd)), dtype=model.dtype)
                with torch.no_grad():
                    tau, state[0] = model.step(x, state[0])
                return tau.numpy()
            return _time_calls(one, msgs)

        def step_numpy_run() -> np.ndarray:
            stepper = NumpyLstmStepper(model)
            state = [stepper.initial_state()]

            def one(x):
                tau, state[0] = stepper.step(x, state[0])
            return _time_calls(one, xs)

        def step_torch_run() -> np.ndarray:
            state = [None]

            def one(x):
                with torch.no_grad():
                    tau, state[0] = model.step(torch.as_tensor(x, dtype=model.dtype), state[0])
                return tau.numpy()
            return _time_calls(one, xs)

        # As the predictor's main() does before spinning: long-lived objects out of the GC.
        gc.collect()
        gc.freeze()
        paths = {'callback': callback_run, 'compute': compute_run,
                 'compute_numpy': lambda: compute_run('numpy'), 'naive_compute': naive_run,
                 'step_numpy': step_numpy_run, 'step_torch': step_torch_run}
        per_repeat: dict[str, list[dict]] = {k: [] for k in paths}
        # Paths interleaved within each repeat, so a change in machine load hits all alike.
        for _ in range(s.repeats):
            for name, run in paths.items():
                per_repeat[name].append(_pcts(run()))
        per_repeat['callback_whole'] = list(whole_runs)
        # The compute again at the joint_states rate, both paths interleaved.
        for name in ('compute_paced', 'compute_numpy_paced'):
            per_repeat[name] = []
        for _ in range(s.repeats):
            per_repeat['compute_paced'].append(_pcts(compute_run(paced=True)))
            per_repeat['compute_numpy_paced'].append(_pcts(compute_run('numpy', paced=True)))
        # The callback again with a reader of /invdyn/feedforward in another process (as in
        # operation: the publish then hands the sample to DDS for delivery), at the node's
        # message rate.
        with tempfile.TemporaryDirectory(prefix='invdyn_bench_lat_') as tmp:
            reader = _Proc('reader', [sys.executable, '-m', 'invdyn_ros.bench', 'relay',
                                      '--in', FEEDFORWARD_TOPIC, '--out', READER_SINK_TOPIC,
                                      '--executor', 'single', '--realtime-priority', '0'],
                           Path(tmp))
            try:
                _wait(lambda: node._ff_pub.get_subscription_count() > 0,
                      NODE_START_TIMEOUT_S, f'a reader on {FEEDFORWARD_TOPIC}', [reader])
                paced = msgs[:s.reader_messages]
                per_repeat['callback_reader'] = []
                for _ in range(s.repeats):
                    per_repeat['callback_reader'].append(_pcts(node_span(
                        lambda: _time_calls(node._on_joint_state, paced, opts.rate_hz),
                        len(paced))))
            finally:
                reader.stop()
        figures = {k: _over_repeats(v) for k, v in per_repeat.items()}
        profile = _profile_callback(node, msgs) if opts.profile else None
        node_path = node._online.path
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)

    def ratio(naive: str, ours: str) -> float:
        return figures[naive]['p50_us']['median'] / figures[ours]['p50_us']['median']

    cfg = model.config
    result = {'messages': s.messages, 'repeats': s.repeats,
              'reader_messages': s.reader_messages, 'reader_rate_hz': opts.rate_hz,
              'model': {'source': model_label, 'path': str(model_path),
                        'hidden_size': int(cfg.hidden_size),
                        'num_layers': int(cfg.num_layers), 'joints': list(cfg.joint_names)},
              'torch_threads': opts.threads, 'inference': node_path, 'paths': figures,
              'ratio_naive_over_ours_compute_p50': ratio('naive_compute', 'compute'),
              'ratio_naive_over_ours_step_p50': ratio('step_torch', 'step_numpy')}
    if profile is not None:
        result['profile'] = profile
    _print_latency(result, report)
    return result


def _profile_callback(node, msgs: list) -> list[dict]:
    """cProfile of the node's callback over ``msgs``: the top functions by cumulative time,
    per message [us] (cProfile's own overhead inflates small functions)."""
    import cProfile
    import pstats
    from std_srvs.srv import Trigger
    node._on_reset(Trigger.Request(), Trigger.Response())
    prof = cProfile.Profile()
    prof.enable()
    for m in msgs:
        node._on_joint_state(m)
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = []
    root = str(repo_root())
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.items():
        where = file.replace(root + os.sep, '') if file.startswith(root) else Path(file).name
        rows.append({'function': f'{where}:{line}({func})', 'calls_per_msg': ncalls / len(msgs),
                     'tottime_us_per_msg': tottime / len(msgs) * 1e6,
                     'cumtime_us_per_msg': cumtime / len(msgs) * 1e6})
    rows.sort(key=lambda r: -r['cumtime_us_per_msg'])
    return rows[:PROFILE_TOP]


def _print_latency(r: dict, report: Report) -> None:
    m = r['model']
    report.section(f'latency: predictor compute per message, in process, no DDS '
                   f'({r["messages"]} messages x {r["repeats"]} repeats; median [min..max] '
                   f'over repeats)')
    report.note(f'model: {m["source"]}, {m["num_layers"]} x {m["hidden_size"]} LSTM, '
                f'{len(m["joints"])} joints; torch threads {r["torch_threads"]}; the node '
                f'computes with its {r["inference"]} path')
    cb = r['paths']['callback']
    for key, goal in (('p50_us', CALLBACK_P50_GOAL_US), ('p90_us', None),
                      ('p99_us', CALLBACK_P99_GOAL_US), ('max_us', None)):
        v = cb[key]['median']
        report.row(f'callback entry to both publishes {key[:-3]} [us]', _spread(cb[key]),
                   f'<= {goal:g}' if goal else '', None if goal is None else v <= goal,
                   'latency', v)
    cw = r['paths']['callback_whole']
    for key in ('p50_us', 'p99_us'):
        report.row(f'whole callback, with the sample forwarding after the publishes '
                   f'{key[:-3]} [us]', _spread(cw[key]))
    cr = r['paths']['callback_reader']
    for key in ('p50_us', 'p99_us'):
        report.row(f'callback, a reader in another process, {r["reader_rate_hz"]:g} Hz '
                   f'{key[:-3]} [us]', _spread(cr[key]))
    labels = {'compute': f'compute (map + OnlinePredictor, {r["inference"]})',
              'compute_numpy': 'compute (map + OnlinePredictor, numpy)',
              'compute_paced': f'compute ({r["inference"]}), one message per '
                               f'{1e3 / r["reader_rate_hz"]:g} ms',
              'compute_numpy_paced': f'compute (numpy), one message per '
                                     f'{1e3 / r["reader_rate_hz"]:g} ms',
              'naive_compute': 'naive compute (map + torch step)',
              'step_numpy': 'LSTM step, numpy (ours)', 'step_torch': 'LSTM step, torch no_grad'}
    for name, label in labels.items():
        for key in ('p50_us', 'p99_us'):
            report.row(f'{label} {key[:-3]} [us]', _spread(r['paths'][name][key]))
    report.row('naive / ours, compute p50 [x]', _fmt(r['ratio_naive_over_ours_compute_p50'], 2))
    report.row('naive / ours, LSTM step p50 [x]', _fmt(r['ratio_naive_over_ours_step_p50'], 2))
    if 'profile' in r:
        print('\n  cProfile of the callback path, top functions by cumulative time '
              '[us per message]:', file=report.out)
        print(f'  {"cum":>8} {"own":>8} {"calls":>6}  function', file=report.out)
        for row in r['profile']:
            print(f'  {row["cumtime_us_per_msg"]:8.2f} {row["tottime_us_per_msg"]:8.2f} '
                  f'{row["calls_per_msg"]:6.2f}  {row["function"]}', file=report.out)


# --- e2e: between processes over DDS --------------------------------------------------------

class _Proc:
    """A child process in its own session (stopped as a group), output to a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, stdin: bool = False) -> None:
        self.name = name
        self.stopped = False
        self.log = log_dir / f'{name}.log'
        self._log_f = open(self.log, 'w')
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE if stdin else self._log_f,
            stderr=self._log_f, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True, env=os.environ.copy(), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check(self) -> None:
        """Raise BenchError, with the tail of its log, if the process has exited on its own."""
        rc = self.popen.poll()
        if rc is not None and not self.stopped:
            raise BenchError(f'{self.name} exited with status {rc}; its log ends:\n'
                             f'{self.tail()}')

    def tail(self, lines: int = 20) -> str:
        if not self._log_f.closed:
            self._log_f.flush()
        try:
            return '\n'.join(self.log.read_text(errors='replace').splitlines()[-lines:])
        except OSError:
            return ''

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT to its process group (as ros2 launch does), then SIGKILL."""
        self.stopped = True
        from invdyn_ros.graph import stop_popens
        p = self.popen
        stop_popens([p], timeout)
        for f in (p.stdin, p.stdout):
            if f is not None and not f.closed:
                f.close()
        self._log_f.close()


def _start_node(executable: str, params: dict, log_dir: Path) -> _Proc:
    """``invdyn_ros.nodes.<executable>`` as ros2 run would start it, with the shipped YAML."""
    from invdyn_ros.graph import config_dir
    argv = [sys.executable, '-m', f'invdyn_ros.nodes.{executable}', '--ros-args',
            '--params-file', str(config_dir() / f'{executable}.yaml')]
    for k, v in params.items():
        argv += ['-p', f'{k}:={v}']
    return _Proc(executable, argv, log_dir)


def _wait(cond: Callable[[], bool], timeout: float, what: str,
          procs: Sequence[_Proc] = ()) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        for p in procs:
            p.check()
        time.sleep(0.05)
    raise BenchError(f'timed out after {timeout:g} s waiting for {what}')


class _Consumer:
    """This process's end: records (receipt wall clock [ns], stamp [ns]) of every message on
    the given JointState topics, and the latest /diagnostics values per status name."""

    def __init__(self, topics: Sequence[str]) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node('invdyn_bench_consumer', context=self.context)
        # Reliable and deep: the subject's publishers are reliable, and nothing received may
        # be dropped here, or it would count as lost.
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self._bufs: dict[str, list] = {}
        self.subs = {}
        self._receivers = []
        from invdyn_ros.nodes.receiver import DedicatedReceiver
        for topic in topics:
            self._bufs[topic] = []
            self.subs[topic] = sub = self.node.create_subscription(
                JointState, topic, self._recorder(topic), qos)
            # As the predictor takes joint_states: each topic in a thread of its own, so the
            # instrument takes about a third of the CPU an executor would on this machine.
            try:
                rx = DedicatedReceiver(self.node, sub, self._recorder(topic),
                                       name=f'bench-rx{len(self._receivers)}')
            except RuntimeError:
                continue                    # this rclpy lacks the calls: the executor takes it
            rx.start()
            self._receivers.append(rx)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag,
                                      QoSProfile(depth=10,
                                                 reliability=ReliabilityPolicy.RELIABLE))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _recorder(self, topic: str) -> Callable:
        bufs = self._bufs
        wall = time.time_ns

        def on_msg(msg) -> None:
            now = wall()        # first thing: the receipt time
            st = msg.header.stamp
            bufs[topic].append((now, st.sec * 1_000_000_000 + st.nanosec))
        return on_msg

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            self.diagnostics[st.name] = {kv.key: kv.value for kv in st.values}

    def take(self, topic: str) -> list:
        """Everything received on ``topic`` since the last take."""
        buf, self._bufs[topic] = self._bufs[topic], []
        return buf

    def close(self) -> None:
        from invdyn_ros.nodes.common import stop_spinning
        for rx in self._receivers:
            rx.stop()
        stop_spinning(self.executor, self._thread, self.node, self.context)


class _PublisherProc:
    """The /joint_states publisher child (``python -m invdyn_ros.bench publish``), driven one
    run at a time over its stdin/stdout (one JSON line each way)."""

    def __init__(self, traj_file: Path, rate_hz: float, log_dir: Path) -> None:
        self.proc = _Proc('publisher', [sys.executable, '-m', 'invdyn_ros.bench', 'publish',
                                        '--traj', str(traj_file), '--rate-hz', str(rate_hz)],
                          log_dir, stdin=True)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.proc.popen.stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass        # closed by stop()

    def _reply(self, timeout: float, watch: Sequence[_Proc] = ()) -> dict:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                for p in (self.proc, *watch):
                    p.check()
                if time.monotonic() > end:
                    raise BenchError(f'publisher gave no answer in {timeout:g} s') from None
                continue
            try:
                reply = json.loads(line)
            except json.JSONDecodeError:
                continue        # not ours (a library printing to stdout)
            if 'error' in reply:
                raise BenchError(f'publisher: {reply["error"]}')
            return reply

    def ready(self, timeout: float) -> None:
        self._reply(timeout)

    def run(self, topic: str, subscribers: int, warmup_s: float, seconds: float,
            watch: Sequence[_Proc] = ()) -> dict:
        """One run on ``topic``: wait for ``subscribers`` readers, send warm-up then measured
        messages; returns the publisher's account (sent, first/last stamp, lateness). A process
        in ``watch`` that exits meanwhile raises BenchError at once."""
        cmd = {'topic': topic, 'subscribers': subscribers, 'warmup_s': warmup_s,
               'seconds': seconds, 'match_timeout_s': NODE_START_TIMEOUT_S}
        self.proc.popen.stdin.write(json.dumps(cmd) + '\n')
        self.proc.popen.stdin.flush()
        return self._reply(NODE_START_TIMEOUT_S + 2 * (warmup_s + seconds) + 10.0, watch)

    def stop(self) -> None:
        try:
            if self.proc.popen.poll() is None:
                self.proc.popen.stdin.write(json.dumps({'quit': True}) + '\n')
                self.proc.popen.stdin.flush()
                self.proc.popen.wait(timeout=5.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.proc.stop()


class _RssSampler:
    """Samples a process's resident set size [MB] from /proc every RSS_SAMPLE_PERIOD_S."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[int, float]] = []   # (wall clock [ns], RSS [MB])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self) -> Optional[float]:
        try:
            with open(f'/proc/{self.pid}/status') as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        return int(line.split()[1]) / 1024.0      # kB -> MB
        except (OSError, ValueError, IndexError):
            return None
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            v = self.read()
            if v is not None:
                self.samples.append((time.time_ns(), v))
            self._stop.wait(RSS_SAMPLE_PERIOD_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def between(self, t0_ns: int, t1_ns: int) -> list[float]:
        return [v for t, v in self.samples if t0_ns <= t <= t1_ns]


def _cpu_s(pid: int) -> Optional[float]:
    """CPU time (user + system, all threads) a process has used so far [s], from /proc."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None


def _cpu_per_message(before: dict, after: dict, sent: int) -> dict:
    """CPU time per sent message [us] of each process between two :func:`_cpu_s` snapshots
    (name -> seconds); ``this`` is the consumer, the bench process itself."""
    out = {}
    for name, t0 in before.items():
        t1 = after.get(name)
        if t0 is not None and t1 is not None and sent > 0:
            out[name] = (t1 - t0) / sent * 1e6
    return out


def e2e_stats(received: Sequence[tuple[int, int]], pub: dict) -> dict:
    """Count and latency [us] of one run: the measured messages are the publisher's stamps
    from ``first_ns`` to ``last_ns``; each is counted once (its first receipt)."""
    first, last = int(pub['first_ns']), int(pub['last_ns'])
    seen: dict[int, int] = {}
    for recv_ns, stamp_ns in received:
        if first <= stamp_ns <= last and stamp_ns not in seen:
            seen[stamp_ns] = recv_ns
    lat = np.array([r - st for st, r in seen.items()], dtype=float) / 1e3
    sent = int(pub['sent'])
    out = {'sent': sent, 'received': len(seen), 'lost': sent - len(seen)}
    out.update(_pcts(lat))
    out.update({k: float(pub[k]) for k in ('late_p50_us', 'late_p99_us', 'late_max_us')})
    return out


#: The e2e runs of a round, in order.
E2E_RUN_NAMES = tuple(RELAY_TOPICS) + ('predictor', 'predictor_trainer')
#: Integer counts of a run, summed over rounds.
E2E_COUNTS = ('sent', 'received', 'lost')


def merge_rounds(rounds: list[dict]) -> dict:
    """One run's figures over its rounds: counts summed; every other figure the median over
    rounds, with ``spread`` holding median, min and max; diagnostics from the last round;
    ``per_round`` the main figures of each."""
    out: dict[str, Any] = {k: int(sum(r[k] for r in rounds)) for k in E2E_COUNTS}
    out['rounds'] = len(rounds)
    out['spread'] = {}
    for k, v in rounds[0].items():
        if k in E2E_COUNTS or not (v is None or isinstance(v, float)):
            continue
        vals = np.array([r[k] for r in rounds if r[k] is not None], dtype=float)
        out[k] = float(np.median(vals)) if len(vals) else None
        out['spread'][k] = ({'median': out[k], 'min': float(vals.min()),
                             'max': float(vals.max())} if len(vals) else None)
    cpu_names = set().union(*(r['cpu_us_per_message'] for r in rounds))
    out['cpu_us_per_message'] = {
        n: float(np.median([r['cpu_us_per_message'][n] for r in rounds
                            if n in r['cpu_us_per_message']])) for n in sorted(cpu_names)}
    for k in ('diagnostics', 'trainer'):
        if k in rounds[-1]:
            out[k] = rounds[-1][k]
    out['per_round'] = [{k: r[k] for k in E2E_COUNTS + ('p50_us', 'p99_us', 'max_us')}
                        for r in rounds]
    return out


def _worst_growth(figs: list[dict]) -> dict:
    """The :func:`_rss_figures` entry with the largest growth (unreadable ones last)."""
    return max(figs, key=lambda f: -math.inf if f['growth'] is None else f['growth'])


def _numbers(values: dict, keys: Sequence[str]) -> dict:
    """The ``keys`` of a diagnostics status that parse as finite numbers."""
    out = {}
    for k in keys:
        try:
            v = float(values[k])
        except (KeyError, ValueError):
            continue
        if math.isfinite(v):
            out[k] = v
    return out


PREDICTOR_DIAG = ('answered', 'model_updates', 'model_version', 'rejected_total', 'resets',
                  'compute_p50_us', 'compute_p99_us', 'publish_p50_us', 'publish_p99_us')
TRAINER_DIAG = ('samples', 'updates', 'published', 'model_version', 'candidates_rejected',
                'last_update_ms')


def _predictor_diag(consumer: '_Consumer') -> dict:
    """The predictor's numeric diagnostics, with its rejection counts by kind (``rejected_*``,
    counted since the node started): what it refused, when a run misses an answer."""
    values = consumer.diagnostics.get('invdyn: predictor', {})
    return _numbers(values, PREDICTOR_DIAG + tuple(
        k for k in values if k.startswith('rejected_') and k != 'rejected_total'))


def bench_e2e(opts: BenchOptions, s: Settings, data: SimData, model_path: Path, tmp: Path,
              report: Report) -> dict:
    """End to end between processes over DDS (see the module docstring)."""
    traj = data.get('train')
    # The relay gets the predictor's scheduling, so the floor stays like for like.
    rt = opts.rt_priority()
    n = int(math.ceil((s.e2e_seconds + s.e2e_warmup_s) * opts.rate_hz)) + 10
    traj_file = tmp / 'e2e_joint_states.npz'
    with open(traj_file, 'wb') as f:
        np.savez(f, q=traj.q[:n], qd=traj.qd[:n], tau=traj.tau[:n],
                 names=np.array(traj.joint_names))
    procs: list[_Proc] = []
    consumer = publisher = rss = None
    try:
        # Slow start-ups (torch import) overlap; nothing is measured until all are up.
        for name, (t_in, t_out) in RELAY_TOPICS.items():
            procs.append(_Proc(name, [sys.executable, '-m', 'invdyn_ros.bench', 'relay',
                                      '--in', t_in, '--out', t_out, '--executor',
                                      'multi' if name.endswith('_mt') else 'single',
                                      '--realtime-priority', str(rt)], tmp))
        predictor = _start_node('predictor', {'model_path': str(model_path),
                                              'realtime_priority': rt}, tmp)
        procs.append(predictor)
        publisher = _PublisherProc(traj_file, opts.rate_hz, tmp)
        procs.append(publisher.proc)
        rss = _RssSampler(predictor.pid)
        outs = [t_out for _, t_out in RELAY_TOPICS.values()] + [FEEDFORWARD_TOPIC]
        consumer = _Consumer(outs)
        for topic in outs:
            _wait(lambda t=topic: consumer.subs[t].get_publisher_count() > 0,
                  NODE_START_TIMEOUT_S, f'a publisher on {topic}', procs)
        publisher.ready(NODE_START_TIMEOUT_S)

        def cpu_now() -> dict:
            snap = {p.name: _cpu_s(p.pid) for p in procs if not p.stopped}
            snap['this'] = _cpu_s(os.getpid())
            return snap

        def run(name: str, t_in: str, t_out: str, subscribers: int) -> dict:
            consumer.take(t_out)
            cpu0 = cpu_now()
            pub = publisher.run(t_in, subscribers, s.e2e_warmup_s, s.e2e_seconds,
                                [p for p in procs if not p.stopped])
            cpu1 = cpu_now()
            time.sleep(DRAIN_S)
            r = e2e_stats(consumer.take(t_out), pub)
            # Warm-up messages count too: the snapshots bracket every message sent.
            r['cpu_us_per_message'] = _cpu_per_message(
                cpu0, cpu1, pub['sent'] + int(round(s.e2e_warmup_s * opts.rate_hz)))
            r['window_ns'] = [int(pub['first_ns']), int(pub['last_ns'])]
            return r

        # Rounds of all four runs, interleaved, so that a change in machine load (this is a
        # shared VM) hits the floor and the node alike; the trainer starts and stops each round.
        per_round: dict[str, list[dict]] = {k: [] for k in E2E_RUN_NAMES}
        for _ in range(s.e2e_rounds):
            for name, (t_in, t_out) in RELAY_TOPICS.items():
                per_round[name].append(run(name, t_in, t_out, 1))
            r = run('predictor', JOINT_STATES_TOPIC, FEEDFORWARD_TOPIC, 1)
            time.sleep(DIAG_WAIT_S)
            r['diagnostics'] = _predictor_diag(consumer)
            per_round['predictor'].append(r)
            trainer = _start_node('trainer', {'model_path': str(model_path),
                                              'publish_period_s': TRAINER_PUBLISH_PERIOD_S},
                                  tmp)
            procs.append(trainer)
            consumer.diagnostics.pop('invdyn: trainer', None)
            # The trainer (input samples, as shipped) learns from the predictor's sample
            # blocks: /joint_states keeps one subscriber; wait until the blocks have a reader.
            _wait(lambda: consumer.node.count_subscribers(SAMPLES_TOPIC) > 0,
                  NODE_START_TIMEOUT_S, f'the trainer on {SAMPLES_TOPIC}', procs)
            r = run('predictor_trainer', JOINT_STATES_TOPIC, FEEDFORWARD_TOPIC, 1)
            time.sleep(DIAG_WAIT_S)
            r['diagnostics'] = _predictor_diag(consumer)
            r['trainer'] = _numbers(consumer.diagnostics.get('invdyn: trainer', {}),
                                    TRAINER_DIAG)
            per_round['predictor_trainer'].append(r)
            trainer.check()
            trainer.stop()
            _wait(lambda: consumer.node.count_subscribers(SAMPLES_TOPIC) == 0,
                  NODE_START_TIMEOUT_S, 'the trainer to leave', procs)
        for p in procs:
            p.check()
        rss.stop()
        runs = {k: merge_rounds(v) for k, v in per_round.items()}
        w_off = [r['window_ns'] for r in per_round['predictor']]
        w_on = [r['window_ns'] for r in per_round['predictor_trainer']]
        rss_mb = _rss_figures(rss, w_off[0][0], w_on[-1][1])
        # Within each run, and over the second half of each trainer run (after the trainer's
        # participant is matched and its first models are in): steady-state growth, the
        # largest over the rounds.
        rss_mb['trainer_off'] = _worst_growth([_rss_figures(rss, a, b) for a, b in w_off])
        rss_mb['trainer_on'] = _worst_growth([_rss_figures(rss, a, b) for a, b in w_on])
        rss_mb['trainer_on_second_half'] = _worst_growth(
            [_rss_figures(rss, (a + b) // 2, b) for a, b in w_on])
    finally:
        if rss is not None:
            rss.stop()
        if consumer is not None:
            consumer.close()
        if publisher is not None:
            publisher.stop()
        for p in procs:
            p.stop()
    result = {'rate_hz': opts.rate_hz, 'seconds': s.e2e_seconds, 'warmup_s': s.e2e_warmup_s,
              'rounds': s.e2e_rounds, 'realtime_priority': rt,
              'domain_id': int(os.environ['ROS_DOMAIN_ID']), 'runs': runs,
              'predictor_rss_mb': rss_mb}
    _print_e2e(result, report)
    return result


def _rss_figures(rss: _RssSampler, t0_ns: int, t1_ns: int) -> dict:
    vals = rss.between(t0_ns, t1_ns)
    if len(vals) < 2:
        vals = [v for _, v in rss.samples[-2:]]
    if not vals:
        return {'start': None, 'end': None, 'growth': None, 'max': None, 'samples': 0}
    return {'start': vals[0], 'end': vals[-1], 'growth': vals[-1] - vals[0],
            'max': max(vals), 'samples': len(vals)}


def e2e_goals(runs: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """Per predictor run: {'p50_us': (value, limit), 'p99_us': (value, limit)} from the goals
    relative to the single-threaded relay."""
    relay = runs['relay']
    # Nothing through the relay: no floor to compare with, so no goal can be met.
    lim50 = None if relay['p50_us'] is None else relay['p50_us'] + E2E_P50_MARGIN_US
    lim99 = (None if relay['p99_us'] is None
             else max(E2E_P99_FLOOR_US, E2E_P99_FACTOR * relay['p99_us']))
    return {name: {'p50_us': (runs[name]['p50_us'], lim50),
                   'p99_us': (runs[name]['p99_us'], lim99)}
            for name in ('predictor', 'predictor_trainer')}


def _print_e2e(r: dict, report: Report) -> None:
    report.section(f'e2e: /joint_states -> node -> this process, over DDS '
                   f'({r["rate_hz"]:g} Hz, {r["rounds"]} round(s) of {r["seconds"]:g} s measured '
                   f'per run after {r["warmup_s"]:g} s warm-up, figures: median [min..max] over '
                   f'rounds, counts summed; domain {r["domain_id"]}; predictor and relays '
                   + (f'SCHED_FIFO {r["realtime_priority"]}' if r['realtime_priority']
                      else 'default scheduler') + ')')
    runs = r['runs']
    labels = {'relay': 'relay (no-op, 1 thread)', 'relay_mt': 'relay (no-op, 2-thread exec.)',
              'predictor': 'predictor, trainer off',
              'predictor_trainer': 'predictor, trainer on'}
    goals = e2e_goals(runs)
    for name, label in labels.items():
        x = runs[name]
        is_pred = name in goals
        report.row(f'{label}: sent / received', f'{x["sent"]} / {x["received"]}')
        report.row(f'{label}: lost', str(x['lost']), '0' if is_pred else '',
                   (x['lost'] == 0) if is_pred else None, 'e2e', x['lost'])
        for key in ('p50_us', 'p99_us', 'max_us'):
            v = x[key]
            sp = x.get('spread', {}).get(key)
            text = _spread(sp) if sp and x.get('rounds', 1) > 1 else _fmt(v)
            if is_pred and key in goals[name]:
                lim = goals[name][key][1]
                ok = v is not None and lim is not None and v <= lim
                report.row(f'{label}: {key[:-3]} [us]', text, f'<= {_fmt(lim, 0)}', ok,
                           'e2e', v)
            else:
                report.row(f'{label}: {key[:-3]} [us]', text)
        report.row(f'{label}: publisher late p99 / max [us]',
                   f'{_fmt(x["late_p99_us"])} / {_fmt(x["late_max_us"])}')
    for name in ('predictor', 'predictor_trainer'):
        diag = runs[name].get('diagnostics', {})
        report.row(f'{labels[name]}: own compute p50 / p99 [us]',
                   f'{_fmt(diag.get("compute_p50_us"))} / {_fmt(diag.get("compute_p99_us"))}')
        report.row(f'{labels[name]}:   of which the two publishes p50 / p99 [us]',
                   f'{_fmt(diag.get("publish_p50_us"))} / {_fmt(diag.get("publish_p99_us"))}')
    tr = runs['predictor_trainer'].get('trainer', {})
    report.row('trainer on (last round): updates / published / rejected',
               ' / '.join(_fmt(tr.get(k), 0) for k in
                          ('updates', 'published', 'candidates_rejected')))
    last = runs['predictor_trainer'].get('per_round', [runs['predictor_trainer']])[-1]
    sent_all = last['sent'] + int(round(r['warmup_s'] * r['rate_hz']))
    report.row('trainer on (last round): samples learned from / sent (incl. warm-up)',
               f'{_fmt(tr.get("samples"), 0)} / {sent_all}')
    report.row('trainer on (last round): last update [ms]', _fmt(tr.get('last_update_ms'), 2))
    report.row('trainer on (last round): models swapped in',
               _fmt(runs['predictor_trainer'].get('diagnostics', {}).get('model_updates'), 0))
    refused = {k[len('rejected_'):]: int(v) for k, v in
               runs['predictor_trainer'].get('diagnostics', {}).items()
               if k.startswith('rejected_') and k != 'rejected_total'}
    report.row('predictor: refusals since start, by kind (inputs and models)',
               ', '.join(f'{k} {v}' for k, v in sorted(refused.items())) or 'none')
    m = r['predictor_rss_mb']
    report.row('predictor RSS at start of run [MB]', _fmt(m['start']))
    # Unreadable memory counts as a miss: the goal cannot be shown to hold.
    report.row('predictor RSS at end of run [MB]', _fmt(m['end']), f'<= {RSS_GOAL_MB:g}',
               m['end'] is not None and m['end'] <= RSS_GOAL_MB, 'e2e', m['end'])
    # The goal is steady state: within the trainer-off run, and over the trainer run's second
    # half. Start to end also spans the trainer's participant joining and its first models.
    for key, label in (('trainer_off', 'trainer-off run'),
                       ('trainer_on_second_half', 'trainer-on run, 2nd half')):
        g = m.get(key, {}).get('growth')
        report.row(f'RSS growth, {label} [MB]', _fmt(g, 2),
                   f'none (<= {RSS_GROWTH_TOLERANCE_MB:g})',
                   g is not None and g <= RSS_GROWTH_TOLERANCE_MB, 'e2e', g)
    report.row('RSS growth, first run start to last run end [MB]',
               _fmt(m['growth'], 2))
    for name in ('relay', 'predictor', 'predictor_trainer'):
        cpu = runs[name].get('cpu_us_per_message', {})
        parts = [f'{k} {_fmt(v, 0)}' for k, v in sorted(cpu.items())
                 if k in ('relay', 'predictor', 'trainer', 'publisher', 'this')]
        report.row(f'CPU/msg [us], {name}', ', '.join(parts) or 'n/a')
    report.note('goals relative to the 1-thread relay: p50 <= relay p50 + '
                f'{E2E_P50_MARGIN_US:g} us, p99 <= max({E2E_P99_FLOOR_US:g} us, '
                f'{E2E_P99_FACTOR:g} x relay p99); own compute: the predictor\'s /diagnostics '
                '(callback entry to both publishes returned, and the two publish calls of '
                'it, last 5000 messages, both runs); CPU per message: '
                'user + system time of each process over the run / messages sent (this = the '
                'consumer); their sum over 1000 us is the share of the 2 cores in use at 1 kHz')


# --- train: offline LSTM, GP fit, online update ---------------------------------------------

def _gp_fits(opts: BenchOptions, s: Settings, data: SimData, cache: dict) -> list[dict]:
    """Fit an exact GP at each of ``s.gp_sizes`` (once per bench run; ``cache`` keeps the
    models for the prediction timings). Returns the fit figures."""
    from invdyn_ros.core.gp import GpConfig, GpInverseDynamics
    from invdyn_ros.core.params import LWR_JOINTS_1_TO_5
    from invdyn_ros.core.training import prepare
    fits = cache.setdefault('gp', {})
    pool = prepare([data.get('train')], LWR_JOINTS_1_TO_5)[0]
    rng = np.random.default_rng(TRAIN_SEED)
    out = []
    for n in s.gp_sizes:
        if n not in fits:
            if n > len(pool.x):
                raise BenchError(f'GP size {n} exceeds the {len(pool.x)} simulated samples')
            # A random subset: consecutive 1 kHz samples are nearly duplicates.
            keep = np.sort(rng.choice(len(pool.x), n, replace=False))
            extra = {} if s.gp_iters is None else {'optimizer': 'adam',
                                                   'training_iters': s.gp_iters}
            cfg = GpConfig(joint_names=LWR_JOINTS_1_TO_5, rate_hz=SIM_RATE_HZ, kind='exact',
                           max_exact_points=max(n, 1), threads=opts.threads, **extra)
            gp = GpInverseDynamics(cfg)
            t0 = time.perf_counter()
            info = gp.fit(pool.x[keep], pool.y[keep])
            fit_s = time.perf_counter() - t0
            evals = max(len(info.get('history', [])), 1)
            fig = {'n': int(n), 'fit_s': fit_s, 'evals': evals, 's_per_eval': fit_s / evals,
                   'optimizer': cfg.resolved_optimizer, 'full_fit': s.gp_iters is None}
            if n in PAPER_GP_TRAIN_S:
                fig['paper_s'] = PAPER_GP_TRAIN_S[n]
                fig['ratio_to_paper'] = fit_s / PAPER_GP_TRAIN_S[n]
            fits[n] = (gp, fig)
        out.append(fits[n][1])
    return out


def bench_train(opts: BenchOptions, s: Settings, data: SimData, model_path: Path,
                cache: dict, report: Report) -> dict:
    """Offline LSTM training time and MSE vs samples, GP fit time, one online update."""
    import torch

    from invdyn_ros.core.accel import AccelConfig, ensure_qdd
    from invdyn_ros.core.checkpoint import load_checkpoint
    from invdyn_ros.core.lstm import LstmConfig
    from invdyn_ros.core.params import LWR_JOINTS_1_TO_5 as JOINTS
    from invdyn_ros.core.training import TrainConfig, evaluate_sequences, prepare, train_lstm
    accel = AccelConfig()
    train = data.get('train').select(JOINTS)
    test = prepare([data.get('test')], JOINTS, accel)
    mcfg = LstmConfig(joint_names=JOINTS, rate_hz=SIM_RATE_HZ)
    # No validation split and no early stop: every size runs exactly ``epochs`` epochs.
    tcfg = TrainConfig(epochs=s.epochs, val_fraction=0.0, patience=0, threads=opts.threads,
                       device='cpu')
    # torch's one-time start-up (a second or more) must not land on the first size.
    warm = ensure_qdd(train.slice(0, min(len(train), 600)), accel)
    train_lstm([warm], mcfg, replace(tcfg, epochs=1), accel, prefer_recorded_qdd=True)
    lstm = []
    for n in s.train_sizes:
        if n > len(train):
            raise BenchError(f'train size {n} exceeds the {len(train)} simulated samples')
        t0 = time.perf_counter()
        part = ensure_qdd(train.slice(0, n), accel)    # the causal filter, as train_lstm does
        prep_s = time.perf_counter() - t0
        res = train_lstm([part], mcfg, tcfg, accel, prefer_recorded_qdd=True)
        scores = evaluate_sequences(res.model, test)
        fig = {'n': int(n), 'train_s': res.wall_s, 'prepare_s': prep_s,
               's_per_1k_samples': res.wall_s / n * 1000.0, 'epochs': len(res.history),
               'test_mse': scores['mse'], 'test_nmse': scores['nmse']}
        if n in PAPER_LSTM_TRAIN_S:
            fig['paper_s'] = PAPER_LSTM_TRAIN_S[n]
            fig['ratio_to_paper'] = res.wall_s / PAPER_LSTM_TRAIN_S[n]
        lstm.append(fig)
    kernels = _kernel_ab(tcfg, mcfg, accel, part)
    # Reference: the benchmarked (e.g. shipped, fully trained) model on the same test run.
    ref_model, _ = load_checkpoint(model_path, expect_kind='lstm', joint_names=JOINTS)
    ref = evaluate_sequences(ref_model, test)
    online = _bench_online_update(s, data, model_path, accel)
    torch.set_num_threads(opts.threads)
    gp_fit = _gp_fits(opts, s, data, cache)
    result = {'epochs': s.epochs, 'torch_threads': opts.threads,
              'test_samples': int(sum(len(d.x) for d in test)), 'lstm': lstm,
              'kernels': kernels,
              'reference_model': {'source': str(model_path), 'test_mse': ref['mse'],
                                  'test_nmse': ref['nmse']},
              'gp_fit': gp_fit, 'online_update': online}
    _print_train(result, report)
    return result


def _kernel_ab(tcfg, mcfg, accel, part, rounds: int = KERNEL_AB_ROUNDS) -> dict:
    """Training time of the same model on the largest size with the compiled LSTM kernel and
    with ``nn.LSTM``, the two interleaved ``rounds`` times (so a slow stretch of the machine
    lands on both): medians and their ratio [s]."""
    from invdyn_ros.core import fused_lstm
    from invdyn_ros.core.training import train_lstm
    if not fused_lstm.available():
        return {'skipped': 'the compiled LSTM kernel was not built'}
    times: dict[str, list[float]] = {'compiled': [], 'torch': []}
    for _ in range(rounds):
        for kernel in times:
            res = train_lstm([part], mcfg, replace(tcfg, kernel=kernel), accel,
                             prefer_recorded_qdd=True)
            times[kernel].append(res.wall_s)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {'n': int(len(part)), 'rounds': rounds, 'compiled_s': times['compiled'],
            'torch_s': times['torch'], 'compiled_median_s': med['compiled'],
            'torch_median_s': med['torch'], 'ratio': med['compiled'] / med['torch']}


def _bench_online_update(s: Settings, data: SimData, model_path: Path, accel) -> dict:
    """Time OnlineLearner.train_pending on one window at a time, as the trainer node's worker
    does, with the trainer node's thread pools (torch and BLAS) [ms]."""
    from invdyn_ros.core.checkpoint import load_checkpoint
    from invdyn_ros.core.online_learning import OnlineConfig, OnlineLearner
    from invdyn_ros.core.params import LWR_JOINTS_1_TO_5, TrainerParams
    from invdyn_ros.core.threads import limit_threads
    tp = TrainerParams()
    model, _ = load_checkpoint(model_path, expect_kind='lstm', joint_names=LWR_JOINTS_1_TO_5)
    limit_threads(tp.threads)
    cfg = OnlineConfig.from_params(tp)
    learner = OnlineLearner(model, accel, cfg)
    tr = data.get('train').select(LWR_JOINTS_1_TO_5)
    times = []
    for k in range(len(tr)):
        if len(times) >= s.online_updates:
            break
        learner.add_sample(float(k) / SIM_RATE_HZ, tr.q[k], tr.qd[k], tr.tau[k])
        if learner.pending():
            t0 = time.perf_counter()
            learner.train_pending(max_updates=1)
            times.append((time.perf_counter() - t0) * 1e3)
    if not times:
        raise BenchError('no online update ran (too few simulated samples)')
    t = np.array(times)
    return {'updates': len(t), 'median_ms': float(np.median(t)),
            'p90_ms': float(np.percentile(t, 90)), 'max_ms': float(t.max()),
            'batch_size': cfg.batch_size, 'context': cfg.context,
            'replay_batches': cfg.replay_batches, 'torch_threads': tp.threads}


def _print_train(r: dict, report: Report) -> None:
    report.section(f'train: offline LSTM ({r["epochs"]} epochs each, torch threads '
                   f'{r["torch_threads"]}; paper: {PAPER_CORES} cores, its own epochs)')
    for f in r['lstm']:
        report.row(f'LSTM train time, {f["n"]} samples [s]', _fmt(f['train_s'], 2))
        if 'paper_s' in f:
            report.row(f'  paper ({PAPER_CORES} cores) [s] / ours:paper',
                       f'{f["paper_s"]:g} / {f["ratio_to_paper"]:.3f}')
        report.row(f'LSTM test MSE [Nm^2] / nMSE, {f["n"]} samples',
                   f'{f["test_mse"]:.4g} / {f["test_nmse"]:.4f}')
    k = r['kernels']
    if 'skipped' in k:
        report.note(f'LSTM kernel comparison skipped: {k["skipped"]}')
    else:
        report.row(f'LSTM train time, {k["n"]} samples, compiled kernel / nn.LSTM [s]',
                   f'{k["compiled_median_s"]:.2f} / {k["torch_median_s"]:.2f} '
                   f'(ratio {k["ratio"]:.2f}; medians of {k["rounds"]} interleaved)')
    ref = r['reference_model']
    report.row(f'reference: {Path(ref["source"]).name} test MSE / nMSE',
               f'{ref["test_mse"]:.4g} / {ref["test_nmse"]:.4f}')
    report.note('train time excludes the causal acceleration filter over the data '
                '(prepare_s in the JSON); MSE on a held-out simulated run after '
                f'{r["epochs"]} epochs, not a converged model')
    for f in r['gp_fit']:
        how = 'full fit' if f['full_fit'] else f'quick: {f["evals"]} Adam steps'
        report.row(f'exact GP fit, {f["n"]} points [s] ({how})', _fmt(f['fit_s'], 2))
        if 'paper_s' in f and f['full_fit']:
            report.row('  paper [s] / ours:paper',
                       f'{f["paper_s"]:g} / {f["ratio_to_paper"]:.3f}')
        report.row(f'exact GP fit, {f["n"]} points: s / MLL evaluation',
                   _fmt(f['s_per_eval'], 3))
    o = r['online_update']
    report.row(f'online update, {o["batch_size"]}-sample batch, median [ms]',
               _fmt(o['median_ms'], 2), f'<= {ONLINE_UPDATE_GOAL_MS:g}',
               o['median_ms'] <= ONLINE_UPDATE_GOAL_MS, 'train', o['median_ms'])
    report.row('online update p90 / max [ms]', f'{_fmt(o["p90_ms"], 2)} / {_fmt(o["max_ms"], 2)}')
    report.note(f'online: {o["updates"]} updates, context {o["context"]} + {o["batch_size"]} '
                f'samples, {o["replay_batches"]} replay windows each, torch threads '
                f'{o["torch_threads"]}')


# --- gp: fit time and per-message prediction -------------------------------------------------

def bench_gp(opts: BenchOptions, s: Settings, data: SimData, cache: dict,
             report: Report) -> dict:
    """Exact-GP fit time vs n, and predict_one latency per message [us]."""
    from invdyn_ros.core.params import LWR_JOINTS_1_TO_5
    from invdyn_ros.core.training import prepare
    fits = _gp_fits(opts, s, data, cache)
    test = prepare([data.get('test')], LWR_JOINTS_1_TO_5)[0].x
    predict = []
    for n in s.gp_sizes:
        gp = cache['gp'][n][0]
        xs = [test[k % len(test)] for k in range(s.gp_predict_calls)]
        gp.predict_one(xs[0])          # caches made on first use stay out of the timing
        lat = _pcts(_time_calls(gp.predict_one, xs))
        predict.append({'n': int(n), 'calls': len(xs), **lat})
    result = {'fits': fits, 'predict_one': predict}
    report.section('gp: exact GP baseline (numpy predict_one per message; fit vs n)')
    for f in fits:
        how = 'full fit' if f['full_fit'] else f'quick: {f["evals"]} Adam steps'
        report.row(f'exact GP fit, {f["n"]} points [s] ({how})', _fmt(f['fit_s'], 2))
    for p in predict:
        report.row(f'predict_one, {p["n"]} points, p50 / p99 [us]',
                   f'{_fmt(p["p50_us"])} / {_fmt(p["p99_us"])}')
    return result


# --- the command ----------------------------------------------------------------------------

def run_bench(mode: str, opts: BenchOptions, json_out: Optional[str] = None,
              out: TextIO = sys.stdout) -> dict:
    """Run ``mode`` ('latency', 'e2e', 'train', 'gp' or 'all'), print one table per mode and
    return every figure (also written to ``json_out`` atomically when given).

    Raises BenchError when a benchmark cannot run.
    """
    modes = list(MODES) if mode == 'all' else [mode]
    if any(m not in MODES for m in modes):
        raise BenchError(f'unknown mode {mode!r}; known: {", ".join(MODES + ("all",))}')
    json_path = Path(json_out) if json_out else None
    if json_path is not None and not json_path.parent.is_dir():
        raise BenchError(f'--json: folder {json_path.parent} does not exist')
    domain = isolate_dds()
    s = opts.settings()
    t_start = time.perf_counter()
    load0 = list(os.getloadavg())
    print(f'invdyn bench {mode}' + (' (QUICK: short runs, indicative figures only)'
                                    if opts.quick else ''), file=out)
    print(f'machine: {os.cpu_count()} CPUs, load average {load0[0]:.2f}; ROS domain {domain} '
          f'(localhost only)', file=out, flush=True)
    report = Report(out)
    data = SimData(_samples_needed(modes, s, opts.rate_hz), s.test_samples)
    cache: dict = {}
    result: dict[str, Any] = {'schema': JSON_SCHEMA, 'quick': opts.quick, 'modes': modes,
                              'paper': {'cores': PAPER_CORES,
                                        'lstm_train_s': {str(k): v for k, v in
                                                         PAPER_LSTM_TRAIN_S.items()},
                                        'gp_train_s': {str(k): v for k, v in
                                                       PAPER_GP_TRAIN_S.items()}}}
    wall: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix='invdyn_bench_') as tmpdir:
        tmp = Path(tmpdir)
        model_path, model_label = bench_model(opts, data, tmp)
        result['model'] = {'path': str(model_path), 'source': model_label}
        for m in modes:
            t0 = time.perf_counter()
            if m == 'latency':
                result[m] = bench_latency(opts, s, data, model_path, model_label, report)
            elif m == 'e2e':
                result[m] = bench_e2e(opts, s, data, model_path, tmp, report)
            elif m == 'train':
                result[m] = bench_train(opts, s, data, model_path, cache, report)
            else:
                result[m] = bench_gp(opts, s, data, cache, report)
            wall[m] = time.perf_counter() - t0
    result['goals'] = report.goals
    result['machine'] = {'cpus': os.cpu_count(), 'loadavg_start': load0,
                         'loadavg_end': list(os.getloadavg())}
    result['wall_s'] = {**wall, 'total': time.perf_counter() - t_start}
    missed = [g['figure'] for g in report.goals if not g['pass']]
    print(f'\n{len(report.goals) - len(missed)} of {len(report.goals)} goals met'
          + (f'; missed: {"; ".join(missed)}' if missed else '')
          + f'. {result["wall_s"]["total"]:.0f} s in all'
          + (' (quick)' if opts.quick else '') + '.', file=out)
    if json_path is not None:
        _write_json_atomic(json_path, result)
        print(f'wrote {json_path}', file=out)
    return result


# --- child processes: the publisher and the relay -------------------------------------------

def _publish_main(args: argparse.Namespace) -> int:
    """Publish /joint_states-like runs on request (one JSON command per stdin line, one JSON
    answer per stdout line): ``{"topic", "subscribers", "warmup_s", "seconds"}``."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    from invdyn_ros.nodes.common import FEEDFORWARD_QOS
    with np.load(args.traj, allow_pickle=False) as z:
        names = [str(n) for n in z['names']]
        rows = (z['q'].tolist(), z['qd'].tolist(), z['tau'].tolist())
    rclpy.init()
    node = Node('invdyn_bench_publisher')
    pubs = {}
    try:
        print(json.dumps({'ready': True}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd.get('quit'):
                break
            topic = cmd['topic']
            if topic not in pubs:
                # Reliable depth 10, as lwr_sim and joint_state_broadcaster publish.
                pubs[topic] = node.create_publisher(JointState, topic, FEEDFORWARD_QOS)
            pub = pubs[topic]
            end = time.monotonic() + float(cmd['match_timeout_s'])
            while pub.get_subscription_count() < int(cmd['subscribers']):
                if time.monotonic() > end:
                    print(json.dumps({'error': f'{pub.get_subscription_count()} of '
                                               f'{cmd["subscribers"]} subscribers on {topic}'}),
                          flush=True)
                    return 1
                time.sleep(0.02)
            time.sleep(MATCH_SETTLE_S)
            msg = JointState()
            msg.name = names
            print(json.dumps(_publish_run(pub, msg, rows, args.rate_hz,
                                          float(cmd['warmup_s']), float(cmd['seconds']))),
                  flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _publish_run(pub, msg, rows: tuple, rate_hz: float, warmup_s: float, seconds: float
                 ) -> dict:
    """Send warm-up then measured messages at ``rate_hz`` on an absolute schedule (a late
    message is sent at once, so the mean rate holds); each stamped with the wall clock [ns]
    just before its publish."""
    q, qd, tau = rows
    period_ns = int(round(1e9 / rate_hz))
    n_warm = int(round(warmup_s * rate_hz))
    n_meas = max(int(round(seconds * rate_hz)), 1)
    late = np.empty(n_meas)
    first = last = 0
    clock, wall, sleep = time.monotonic_ns, time.time_ns, time.sleep
    t0 = clock() + period_ns
    stamp = msg.header.stamp
    for k in range(n_warm + n_meas):
        target = t0 + k * period_ns
        now = clock()
        if target > now:
            sleep((target - now) / 1e9)
            now = clock()
        i = k % len(q)
        msg.position, msg.velocity, msg.effort = q[i], qd[i], tau[i]
        ns = wall()
        ns = ns if ns > last else last + 1      # unique, increasing stamps identify messages
        stamp.sec, stamp.nanosec = divmod(ns, 1_000_000_000)
        pub.publish(msg)
        last = ns
        if k >= n_warm:
            if k == n_warm:
                first = ns
            late[k - n_warm] = (now - target) / 1e3
    return {'sent': n_meas, 'first_ns': first, 'last_ns': last,
            'late_p50_us': float(np.percentile(late, 50)),
            'late_p99_us': float(np.percentile(late, 99)), 'late_max_us': float(late.max())}


def _relay_main(args: argparse.Namespace) -> int:
    """A no-op node: republish every JointState (stamp and all) from --in on --out; the floor
    of what any rclpy node adds between two topics."""
    import rclpy
    from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                                 SingleThreadedExecutor)
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    from invdyn_ros.core.sched import set_realtime
    from invdyn_ros.nodes.common import FEEDFORWARD_QOS, joint_states_qos
    rclpy.init()
    node = Node(f'invdyn_bench_relay_{args.executor}')
    try:
        pub = node.create_publisher(JointState, args.out_topic, FEEDFORWARD_QOS)
        # The predictor's subscription QoS (best effort, default qos_depth).
        node.create_subscription(JointState, args.in_topic, pub.publish,
                                 joint_states_qos(RELAY_DEPTH))
        # 2 threads: as the predictor's executor.
        executor = (MultiThreadedExecutor(num_threads=2) if args.executor == 'multi'
                    else SingleThreadedExecutor())
        executor.add_node(node)
        res = set_realtime(args.realtime_priority)
        print(f'relay: {res.message}', flush=True)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry of the bench's child processes (``python -m invdyn_ros.bench relay|publish``);
    the benchmark itself is ``invdyn bench``."""
    p = argparse.ArgumentParser(prog='python -m invdyn_ros.bench',
                                description='child processes of `invdyn bench`')
    sub = p.add_subparsers(dest='role', required=True)
    r = sub.add_parser('relay', help='no-op JointState relay')
    r.add_argument('--in', dest='in_topic', required=True)
    r.add_argument('--out', dest='out_topic', required=True)
    r.add_argument('--executor', choices=('single', 'multi'), default='single')
    r.add_argument('--realtime-priority', type=int, default=0,
                   help='SCHED_FIFO priority of the relay threads (0: default scheduler)')
    pb = sub.add_parser('publish', help='/joint_states publisher driven over stdin')
    pb.add_argument('--traj', required=True, help='.npz with q, qd, tau, names')
    pb.add_argument('--rate-hz', type=float, default=1000.0)
    args = p.parse_args(argv)
    return _relay_main(args) if args.role == 'relay' else _publish_main(args)


if __name__ == '__main__':
    sys.exit(main())
