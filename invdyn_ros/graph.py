"""The node graphs the launch files start, described once, for `invdyn up` to start without ROS.

``launch/predict.launch.py`` is written with the standard launch / launch_ros API, as ROS 2 users
expect; on a machine without a ROS install (``launch`` is not on PyPI), ``invdyn up predict``
starts the same processes from the description below. ``test/test_launch.py`` evaluates the
launch file against recording stand-ins of the launch API and checks that both describe the
same nodes, parameter files, parameter overrides, remappings and conditions, so the two cannot
drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

#: Launch arguments: name -> (default, description). Same names and defaults as the launch file.
LaunchArgs = dict[str, tuple[str, str]]

PREDICT_ARGS: LaunchArgs = {
    'sim': ('false', 'start the simulated KUKA LWR 4+ (lwr_sim) publishing joint_states'),
    'trainer': ('false', 'start the online trainer, which publishes improved models'),
    'gp': ('false', 'start the GP baseline beside the LSTM (needs gp_model)'),
    'model': ('', 'LSTM checkpoint for predictor and trainer; empty: the shipped default'),
    'gp_model': ('', 'GP checkpoint for the GP baseline'),
    'joint_states': ('/joint_states', 'topic of the robot joint states'),
    'adapt': ('network', 'what the trainer adapts: network (the LSTM weights) or payload (the '
                         'load at the flange; residual_rbd models)'),
}


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph.

    Attributes:
        executable: console script (``ros2 run invdyn <executable>``); also the module
            ``invdyn_ros.nodes.<executable>``.
        name: node name (the YAML key ``/**/<name>``).
        params_file: file in ``config/``.
        overrides: (parameter, launch argument) pairs set from launch arguments.
        remappings: (topic, launch argument) pairs.
        condition: launch argument that must be true to start the node; None: always.
    """

    executable: str
    name: str
    params_file: str
    overrides: tuple[tuple[str, str], ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    condition: Optional[str] = None


PREDICT_NODES = (
    NodeSpec('lwr_sim', 'lwr_sim', 'lwr_sim.yaml',
             remappings=(('/joint_states', 'joint_states'),), condition='sim'),
    NodeSpec('predictor', 'predictor', 'predictor.yaml', overrides=(('model_path', 'model'),),
             remappings=(('/joint_states', 'joint_states'),)),
    NodeSpec('trainer', 'trainer', 'trainer.yaml',
             overrides=(('model_path', 'model'), ('adapt', 'adapt')),
             remappings=(('/joint_states', 'joint_states'),), condition='trainer'),
    NodeSpec('gp_baseline', 'gp_baseline', 'gp_baseline.yaml',
             overrides=(('model_path', 'gp_model'),),
             remappings=(('/joint_states', 'joint_states'),), condition='gp'),
)

TRAIN_ARGS: LaunchArgs = {
    'model': ('', 'LSTM checkpoint to start from; empty: the shipped default'),
    'record_bag': ('', 'folder to record joint_states into (rosbag2); empty: no recording'),
    'joint_states': ('/joint_states', 'topic of the robot joint states'),
    'input': ('joint_states', 'learn from joint_states (needs no predictor) or from the sample '
                              'blocks of a running predictor (samples, less CPU)'),
    'adapt': ('network', 'what the trainer adapts: network (the LSTM weights) or payload (the '
                         'load at the flange; residual_rbd models)'),
}

TRAIN_NODES = (
    NodeSpec('trainer', 'trainer', 'trainer.yaml',
             overrides=(('model_path', 'model'), ('record_bag', 'record_bag'),
                        ('input', 'input'), ('adapt', 'adapt')),
             remappings=(('/joint_states', 'joint_states'),)),
)

GRAPHS = {'predict': (PREDICT_ARGS, PREDICT_NODES), 'train': (TRAIN_ARGS, TRAIN_NODES)}
TRUE_STRINGS = ('true', '1', 'yes', 'on')


def config_dir() -> Path:
    """config/ of the installed package (share/invdyn/config) or of the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory
        p = Path(get_package_share_directory('invdyn')) / 'config'
        if p.is_dir():
            return p
    except Exception:  # noqa: BLE001 - no ament index (pip or source install)
        pass
    return Path(__file__).resolve().parents[1] / 'config'


def parse_launch_args(graph: str, argv: Sequence[str]) -> dict[str, str]:
    """``name:=value`` arguments -> values, defaults filled in; ValueError on unknown names."""
    if graph not in GRAPHS:
        raise ValueError(f'unknown graph {graph!r}; known: {sorted(GRAPHS)}')
    spec, _ = GRAPHS[graph]
    values = {k: d for k, (d, _) in spec.items()}
    for a in argv:
        if ':=' not in a:
            raise ValueError(f'expected name:=value, got {a!r}')
        k, v = a.split(':=', 1)
        if k not in spec:
            raise ValueError(f'unknown launch argument {k!r}; known: {sorted(spec)}')
        values[k] = v
    for k in ('sim', 'trainer', 'gp'):
        if k in values and values[k].lower() not in TRUE_STRINGS + ('false', '0', 'no', 'off'):
            raise ValueError(f'launch argument {k} must be true or false, got {values[k]!r}')
    return values


@dataclass
class Process:
    """A node process as `invdyn up` starts it."""

    spec: NodeSpec
    argv: list[str]
    popen: Optional[subprocess.Popen] = field(default=None, repr=False)


def node_commands(graph: str, values: dict[str, str], python: str = sys.executable
                  ) -> list[Process]:
    """The command lines ``ros2 launch`` would run for ``graph`` with launch ``values``."""
    _, nodes = GRAPHS[graph]
    cfg = config_dir()
    out = []
    for n in nodes:
        if n.condition and values[n.condition].lower() not in TRUE_STRINGS:
            continue
        argv = [python, '-m', f'invdyn_ros.nodes.{n.executable}', '--ros-args',
                '-r', f'__node:={n.name}', '--params-file', str(cfg / n.params_file)]
        for param, arg in n.overrides:
            # Overrides are string parameters: YAML-quote them, or '' and paths with ':' or
            # '#' would not parse as strings (ros2 launch writes them to a YAML file instead).
            quoted = values[arg].replace("'", "''")
            argv += ['-p', f"{param}:='{quoted}'"]
        for topic, arg in n.remappings:
            argv += ['-r', f'{topic}:={values[arg]}']
        out.append(Process(n, argv))
    return out


def _pump(name: str, stream, sink) -> None:
    for line in iter(stream.readline, ''):
        sink.write(f'[{name}] {line}')
        sink.flush()


def run_graph(graph: str, argv: Sequence[str], duration_s: Optional[float] = None,
              env: Optional[dict] = None, sink=sys.stdout, stop: Optional[threading.Event] = None
              ) -> int:
    """Start the graph's processes, wait for ``duration_s`` (or until one exits or ``stop`` is
    set or SIGINT/SIGTERM arrives), then stop them all (SIGINT, then SIGKILL) and return the
    first non-zero exit status of a node that failed on its own, else 0."""
    values = parse_launch_args(graph, argv)
    procs = node_commands(graph, values)
    stop = stop or threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, lambda *_: stop.set())
    status = 0
    try:
        for p in procs:
            p.popen = subprocess.Popen(p.argv, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True,
                                       env=env or os.environ.copy(), start_new_session=True)
            threading.Thread(target=_pump, args=(p.spec.name, p.popen.stdout, sink),
                             daemon=True).start()
        t_end = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set():
            if t_end is not None and time.monotonic() >= t_end:
                break
            failed = [p for p in procs if p.popen.poll() is not None]
            if failed:
                status = failed[0].popen.returncode or 1
                sink.write(f'[invdyn up] {failed[0].spec.name} exited with status '
                           f'{failed[0].popen.returncode}; stopping the graph\n')
                break
            time.sleep(0.05)
    finally:
        stop_processes(procs)
        for s, h in old.items():
            signal.signal(s, h)
    return status


def stop_popens(popens: Sequence[Optional[subprocess.Popen]], timeout_s: float = 10.0) -> None:
    """SIGINT each running process's group (as ros2 launch does), wait up to ``timeout_s`` in
    all, then SIGKILL what is left. Processes must have been started in their own session."""
    live = [p for p in popens if p is not None and p.poll() is None]
    for p in live:
        try:
            os.killpg(p.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    for p in live:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def stop_processes(procs: Sequence[Process], timeout_s: float = 10.0) -> None:
    """:func:`stop_popens` for the graph's processes."""
    stop_popens([p.popen for p in procs], timeout_s)
