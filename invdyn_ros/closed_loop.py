"""The ROS graph closed loop: the simulated arm under PD, the predictor supplying feedforward.

Two node processes over DDS (no launch install needed):

* ``lwr_sim`` with ``controller:=pd`` (PD on its reference, stiffness x ``gain_scale``),
  publishing ``/joint_states`` and its reference on :data:`REFERENCE_TOPIC` (``reference_lead_s``
  ahead), applying the feedforward it receives on ``/invdyn/feedforward`` (JointState, by joint
  name, stamped: its lag is measured), dropping (and counting) any older than its timeout;
* ``predictor`` (optional) with its ``/joint_states`` remapped to the reference: it computes
  the feedforward for the desired motion, as a feedforward should (the measured motion fed
  back through an acceleration estimate would be feedback with a lag).

:func:`run_closed_loop_graph` runs them for a while and returns what ``lwr_sim`` reports on
``/diagnostics``: tracking RMS [rad] (true minus desired position, joints 1-5), feedforward
received / applied / dropped as stale, and its lag (reference published -> answer applied).
``make demo`` shows PD alone against PD + LSTM this way; a test runs it briefly.
"""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import threading
import time
from typing import Optional

from invdyn_ros.graph import stop_popens

REFERENCE_TOPIC = '/lwr_sim/reference'
FEEDFORWARD_TOPIC = '/invdyn/feedforward'
#: Diagnostics period of lwr_sim in these runs [s]: the tracking RMS is reported per period.
DIAG_PERIOD_S = 0.5
#: A period counts as "with feedforward" when at least this share of its steps applied one.
APPLIED_SHARE = 0.9


def _config_dir() -> Path:
    from invdyn_ros.graph import config_dir
    return config_dir()


def node_argv(executable: str, params: dict, remaps: tuple[tuple[str, str], ...] = ()
              ) -> list[str]:
    """Command line of ``invdyn_ros.nodes.<executable>`` with its shipped YAML, parameter
    overrides and remappings (as ``ros2 run ... --ros-args`` takes them)."""
    argv = [sys.executable, '-m', f'invdyn_ros.nodes.{executable}', '--ros-args', '-r',
            f'__node:={executable}', '--params-file', str(_config_dir() / f'{executable}.yaml')]
    for k, v in params.items():
        argv += ['-p', f'{k}:={v}']
    for a, b in remaps:
        argv += ['-r', f'{a}:={b}']
    return argv


class _Diagnostics:
    """Collects the /diagnostics of lwr_sim and the predictor in a context of its own."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from diagnostic_msgs.msg import DiagnosticArray
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node('invdyn_closed_loop_monitor', context=self.ctx)
        self.sim: list[dict] = []
        self.predictor: list[dict] = []

        def on_diag(msg) -> None:
            for s in msg.status:
                values = {kv.key: kv.value for kv in s.values}
                if s.name == 'invdyn: lwr_sim':
                    self.sim.append(values)
                elif s.name == 'invdyn: predictor':
                    self.predictor.append(values)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', on_diag,
                                      QoSProfile(depth=100,
                                                 reliability=ReliabilityPolicy.RELIABLE))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        from invdyn_ros.nodes.common import stop_spinning
        stop_spinning(self.executor, self.thread, self.node, self.ctx)


def _num(d: dict, key: str) -> float:
    try:
        return float(d.get(key, 'nan'))
    except ValueError:
        return float('nan')


def summarise(sim: list[dict], with_feedforward: bool, settle_s: float,
              until_s: float = float('inf')) -> dict:
    """Tracking RMS over the diagnostics periods after ``settle_s`` of simulated time:
    ``tracking_rms_rad`` (with feedforward: only periods in which it was applied at nearly
    every step) and ``tracking_rms_all_rad`` (every period after settling), both only up to
    ``until_s`` of simulated time (when the predictor was stopped on purpose)."""
    periods, every, prev = [], [], None
    for d in sim:
        if prev is not None:
            steps = _num(d, 'steps') - _num(prev, 'steps')
            applied = (_num(d, 'feedforward_applied_steps')
                       - _num(prev, 'feedforward_applied_steps'))
            rms = _num(d, 'tracking_rms_rad')
            t_sim = _num(d, 'sim_time_s')
            if steps > 0 and rms == rms and settle_s <= t_sim <= until_s:
                every.append((rms, steps))
                if not with_feedforward or applied >= APPLIED_SHARE * steps:
                    periods.append((rms, steps))
        prev = d
    last = sim[-1] if sim else {}

    def pooled(ps: list) -> Optional[float]:
        return (sum(r * r * n for r, n in ps) / sum(n for _, n in ps)) ** 0.5 if ps else None
    out = {'periods': len(periods), 'periods_all': len(every),
           'tracking_rms_rad': pooled(periods), 'tracking_rms_all_rad': pooled(every),
           'sim_time_s': _num(last, 'sim_time_s'),
           'feedforward_received': int(_num(last, 'feedforward_received') or 0)
           if last else 0,
           'feedforward_applied_steps': int(_num(last, 'feedforward_applied_steps') or 0)
           if last else 0,
           'stale_dropped': int(_num(last, 'rejected_stale_feedforward'))
           if 'rejected_stale_feedforward' in last else 0,
           'lag_p50_ms': _num(last, 'feedforward_lag_p50_ms'),
           'lag_p99_ms': _num(last, 'feedforward_lag_p99_ms')}
    return out


def run_closed_loop_graph(model_path: Optional[str], seconds: float, gain_scale: float = 0.25,
                          lead_s: float = 0.002, seed: int = 3, motion: str = 'mixed',
                          settle_s: float = 1.0, stop_predictor_first_s: float = 0.0,
                          rate_hz: float = 1000.0, sink=None) -> dict:
    """Run lwr_sim (PD, ``gain_scale``) with the predictor on ``model_path`` (None: PD
    alone) for ``seconds`` of wall time after both are up; returns :func:`summarise` of
    lwr_sim's diagnostics plus the predictor's last diagnostics. With
    ``stop_predictor_first_s`` > 0 the predictor is stopped that long before lwr_sim, so the
    stale-feedforward drop is exercised (counted in ``stale_dropped``). ``rate_hz``: the
    arm's rate (a test on a loaded machine may halve it; the predictor follows its input)."""
    mon = _Diagnostics()
    procs: list[subprocess.Popen] = []
    out = subprocess.DEVNULL if sink is None else sink

    def start(argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                             env=os.environ.copy(), start_new_session=True)
        procs.append(p)
        return p

    try:
        pred = None
        if model_path:
            pred = start(node_argv('predictor', {'model_path': f"'{model_path}'",
                                                 'diagnostics_period_s': DIAG_PERIOD_S},
                                   remaps=(('/joint_states', REFERENCE_TOPIC),)))
            # The predictor first (it loads a model): the arm must not run without it.
            t_end = time.monotonic() + 30.0
            while not mon.predictor and time.monotonic() < t_end and pred.poll() is None:
                time.sleep(0.05)
        sim = start(node_argv('lwr_sim', {
            'controller': 'pd', 'gain_scale': float(gain_scale), 'seed': int(seed),
            'rate_hz': float(rate_hz),
            'motion': motion, 'reference_topic': REFERENCE_TOPIC,
            'reference_lead_s': float(lead_s), 'feedforward_type': 'joint_state',
            'feedforward_topic': FEEDFORWARD_TOPIC, 'diagnostics_period_s': DIAG_PERIOD_S}))
        t_end = time.monotonic() + seconds + 30.0
        while time.monotonic() < t_end and sim.poll() is None:
            last = mon.sim[-1] if mon.sim else {}
            if _num(last, 'sim_time_s') >= seconds:
                break
            time.sleep(0.05)
        until_s = float('inf')
        if pred is not None and stop_predictor_first_s > 0:
            until_s = _num(mon.sim[-1], 'sim_time_s') if mon.sim else 0.0
            stop_popens([pred])
            time.sleep(stop_predictor_first_s)
        n = len(mon.sim)
        t_wait = time.monotonic() + 2 * DIAG_PERIOD_S + 1.0
        while len(mon.sim) == n and time.monotonic() < t_wait:
            time.sleep(0.05)
        status = {'lwr_sim_exit': sim.poll(), 'predictor_exit': pred.poll() if pred else None}
    finally:
        stop_popens(list(reversed(procs)))
        mon.close()
    res = summarise(mon.sim, model_path is not None, settle_s, until_s)
    res.update(status, predictor=mon.predictor[-1] if mon.predictor else {},
               gain_scale=gain_scale, model=model_path)
    return res
