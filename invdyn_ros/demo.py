"""`make demo`: the main job, end to end, bounded in time, cleaning up after itself.

1. Offline: simulate the KUKA LWR 4+ pushing flasks of 200, 300 and 400 ml, record
   /joint_states as a rosbag2 (as recording a real arm would), read it back, train the stateful
   LSTM on joints 1-5, and fit the exact GP baseline on a subsample of the same data.
2. Online: start the node graph of ``launch/predict.launch.py`` with ``sim:=true trainer:=true
   gp:=true`` (the simulated arm, predictor and online trainer starting from the shipped model,
   GP baseline) over real DDS, switch the payload mid-run, and listen to everything.
3. Report: predicted vs measured torque per joint, the online error over time beside the same
   start model replayed frozen (what learning during operation buys, before and after the
   payload switch), the GP beside the LSTM, latency percentiles; printed, saved as
   ``results.json`` and PNG figures. All processes are stopped at the end.
4. Closed loop over DDS: the simulated arm under PD at a quarter of its gains, first alone, then
   with the predictor (shipped model) supplying the feedforward for its reference
   (:mod:`invdyn_ros.closed_loop`); prints both tracking errors and the feedforward's lag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import threading
import time

import numpy as np

from invdyn_ros.core.params import LWR_JOINTS_1_TO_5

#: (seconds per training run, LSTM epochs, GP points, online seconds).
#: Exact GP fits grow as n^3 (about 20 s at 500 points here): sized to keep the demo bounded.
FULL = dict(train_s=60.0, epochs=25, gp_points=600, online_s=90.0, closed_s=10.0)
QUICK = dict(train_s=8.0, epochs=3, gp_points=150, online_s=25.0, closed_s=4.0)
#: Closed-loop phase: PD stiffness scale, and how far ahead lwr_sim publishes its reference
#: (about the DDS round trip and catch-up lag measured on a loaded 2-core machine) [s].
CLOSED_GAIN_SCALE = 0.25
CLOSED_LEAD_S = 0.01
PAYLOADS_ML = (200.0, 300.0, 400.0)
#: The payload the simulated arm switches to part-way through the online run [ml].
SWITCH_TO_ML = 600.0
SWITCH_AT = 0.4
#: Bin width of the online error curve [s].
ERROR_BIN_S = 1.0


def _isolate_dds() -> None:
    """Keep the demo's DDS traffic on this machine, in a domain of its own."""
    repo = Path(__file__).resolve().parents[1]
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    profile = repo / 'config' / 'fastdds_localhost.xml'
    if not profile.is_file():
        from invdyn_ros.graph import config_dir
        profile = config_dir() / 'fastdds_localhost.xml'
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    os.environ['ROS_DOMAIN_ID'] = str(101 + os.getpid() % 100)


def offline_stage(out: Path, sizes: dict) -> tuple[Path, Path, dict]:
    """Simulate -> bag -> LSTM and GP checkpoints; returns their paths and figures."""
    from invdyn_ros.core.accel import AccelConfig
    from invdyn_ros.core.bagio import write_joint_state_bag
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.datasets import load_trajectories
    from invdyn_ros.core.gp import GpConfig, train_gp
    from invdyn_ros.core.lstm import LstmConfig
    from invdyn_ros.core.lwr_sim import simulate
    from invdyn_ros.core.training import TrainConfig, train_lstm, training_meta

    print(f'[1/4] offline: simulating {len(PAYLOADS_ML)} runs x {sizes["train_s"]:g} s at '
          f'1 kHz (payloads {PAYLOADS_ML} ml), recording a rosbag2')
    runs = [simulate(seconds=sizes['train_s'], payload_ml=ml, seed=10 + i)
            for i, ml in enumerate(PAYLOADS_ML)]
    bag = write_joint_state_bag(out / 'sim_bag', runs, storage='mcap')
    trajs = load_trajectories([bag], LWR_JOINTS_1_TO_5)
    accel = AccelConfig()
    mcfg = LstmConfig(joint_names=LWR_JOINTS_1_TO_5, rate_hz=1000.0, hidden_size=32)
    tcfg = TrainConfig(epochs=sizes['epochs'], batch=16, window=100, segment=2000, lr=0.05)
    res = train_lstm(trajs, mcfg, tcfg, accel)
    lstm_path = save_checkpoint(out / 'lwr_lstm.npz', res.model,
                                training_meta(res, tcfg, accel, [str(bag)]))
    print(f'      LSTM: {res.train_samples} samples, {len(res.history)} epochs, '
          f'{res.wall_s:.1f} s, validation nMSE {res.history[res.best_epoch - 1].get("val_nmse")}')
    gcfg = GpConfig(joint_names=LWR_JOINTS_1_TO_5, rate_hz=1000.0, kind='exact',
                    max_exact_points=sizes['gp_points'], subsample=True, threads=1)
    gp, info = train_gp(trajs, gcfg, accel)
    gp_path = save_checkpoint(out / 'lwr_gp.npz', gp, {'accel_config': accel.to_dict()})
    print(f'      GP: exact, {gp.num_train} points, fit {info["fit_time_s"]:.1f} s')
    return lstm_path, gp_path, {'lstm_train_s': res.wall_s, 'lstm_samples': res.train_samples,
                                'gp_points': gp.num_train, 'gp_fit_s': info['fit_time_s']}


class _Monitor:
    """Listens to the running graph and keeps what the report needs."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState

        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node('invdyn_demo_monitor', context=self.ctx)
        be = QoSProfile(depth=2000, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.measured: dict[int, list] = {}
        self.state: dict[int, tuple] = {}
        self.lstm: dict[int, list] = {}
        self.gp: dict[int, list] = {}
        self.recv_lag: list[float] = []
        self.diag: list[tuple[float, str, dict]] = []
        idx = None

        def key(m):
            return m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec

        def on_js(m):
            nonlocal idx
            if idx is None:
                idx = [list(m.name).index(j) for j in LWR_JOINTS_1_TO_5]
            k = key(m)
            self.measured[k] = [m.effort[i] for i in idx]
            self.state[k] = ([m.position[i] for i in idx], [m.velocity[i] for i in idx])

        def on_ff(m):
            k = key(m)
            self.lstm[k] = list(m.effort)
            self.recv_lag.append(self.node.get_clock().now().nanoseconds - k)

        def on_diag(m):
            for s in m.status:
                self.diag.append((time.monotonic(), s.name,
                                  {kv.key: kv.value for kv in s.values}))

        self.node.create_subscription(JointState, '/joint_states', on_js, be)
        self.node.create_subscription(JointState, '/invdyn/feedforward', on_ff, be)
        self.node.create_subscription(JointState, '/invdyn/gp/feedforward',
                                      lambda m: self.gp.__setitem__(key(m), list(m.effort)), be)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, be)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def set_payload(self, ml: float) -> bool:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        cli = self.node.create_client(SetParameters, '/lwr_sim/set_parameters')
        if not cli.wait_for_service(timeout_sec=5.0):
            return False
        req = SetParameters.Request(parameters=[Parameter(
            name='payload_ml', value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                    double_value=float(ml)))])
        fut = cli.call_async(req)
        t_end = time.monotonic() + 5.0
        while not fut.done() and time.monotonic() < t_end:
            time.sleep(0.01)
        return bool(fut.done() and fut.result().results[0].successful)

    def close(self) -> None:
        from invdyn_ros.nodes.common import stop_spinning
        stop_spinning(self.executor, self.thread, self.node, self.ctx)


def online_stage(lstm_path: Path, gp_path: Path, seconds: float) -> tuple[_Monitor, dict]:
    """Run the node graph with the simulated arm, predictor and trainer starting from the LSTM
    at ``lstm_path``; returns the monitor and event times."""
    from invdyn_ros.graph import run_graph
    print(f'[2/4] online: predictor + trainer + GP baseline + simulated arm over DDS for '
          f'{seconds:g} s; payload switches to {SWITCH_TO_ML:g} ml at '
          f'{SWITCH_AT * seconds:g} s')
    mon = _Monitor()
    stop = threading.Event()
    log = open(os.devnull, 'w') if not os.environ.get('INVDYN_DEMO_VERBOSE') else None
    status = {}
    th = threading.Thread(target=lambda: status.setdefault('rc', run_graph(
        'predict', ['sim:=true', 'trainer:=true', 'gp:=true', f'model:={lstm_path}',
                    f'gp_model:={gp_path}'], stop=stop, **({'sink': log} if log else {}))))
    t_start = time.monotonic()
    th.start()
    events = {'start': t_start}
    try:
        while time.monotonic() - t_start < seconds and th.is_alive():
            if 'switch' not in events and time.monotonic() - t_start >= SWITCH_AT * seconds:
                ok = mon.set_payload(SWITCH_TO_ML)
                events['switch'] = time.monotonic()
                events['switch_stamp_ns'] = max(mon.measured) if mon.measured else 0
                print(f'      payload -> {SWITCH_TO_ML:g} ml ({"ok" if ok else "FAILED"})')
            time.sleep(0.1)
    finally:
        stop.set()
        th.join(timeout=30)
        if log:
            log.close()
    events['graph_status'] = status.get('rc')
    return mon, events


def _frozen_predictions(model_path: Path, keys: list, mon: _Monitor) -> np.ndarray:
    """What the starting model, never updated, predicts step by step on the same stream."""
    from invdyn_ros.core.accel import AccelConfig
    from invdyn_ros.core.checkpoint import load_checkpoint
    from invdyn_ros.core.evaluate import predict_trajectories
    from invdyn_ros.core.trajectory import Trajectory
    model, meta = load_checkpoint(model_path, joint_names=LWR_JOINTS_1_TO_5)
    q = np.array([mon.state[k][0] for k in keys])
    qd = np.array([mon.state[k][1] for k in keys])
    tr = Trajectory(q=q, qd=qd, tau=np.zeros_like(q), joint_names=LWR_JOINTS_1_TO_5,
                    t=np.array(keys, dtype=np.int64) * 1e-9)
    return predict_trajectories(model, AccelConfig.from_dict(meta.get('accel_config', {})),
                                [tr])[0]


def report(out: Path, mon: _Monitor, events: dict, offline: dict, quick: bool,
           t0: float, start_model: Path) -> dict:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    keys = sorted(set(mon.measured) & set(mon.lstm))
    if not keys:
        raise RuntimeError('the predictor produced no feedforward during the online run')
    t_ns = np.array(keys, dtype=np.int64)
    t = (t_ns - t_ns[0]) * 1e-9
    meas = np.array([mon.measured[k] for k in keys])
    lstm = np.array([mon.lstm[k] for k in keys])
    gkeys = sorted(set(mon.measured) & set(mon.gp))
    t_gp = (np.array(gkeys, dtype=np.int64) - t_ns[0]) * 1e-9
    gp = np.array([mon.gp[k] for k in gkeys]) if gkeys else np.zeros((0, 5))
    meas_gp = np.array([mon.measured[k] for k in gkeys]) if gkeys else np.zeros((0, 5))
    switch_t = (events.get('switch_stamp_ns', 0) - t_ns[0]) * 1e-9

    def mse(a, b):
        return float(np.mean((a - b) ** 2)) if len(a) else float('nan')

    frozen = _frozen_predictions(start_model, keys, mon)
    pre, post = t < switch_t, t >= switch_t
    lat = np.array(mon.recv_lag) * 1e-9
    pred_diag = [d for _, n, d in mon.diag if n == 'invdyn: predictor']
    train_diag = [d for _, n, d in mon.diag if n == 'invdyn: trainer']
    last_p = pred_diag[-1] if pred_diag else {}
    last_t = train_diag[-1] if train_diag else {}
    n_js = len(mon.measured)
    results = {
        'quick': quick, 'wall_s': round(time.perf_counter() - t0, 1), 'offline': offline,
        'online': {
            'joint_states_received': n_js, 'feedforward_received': len(mon.lstm),
            'answered_fraction': len(keys) / max(n_js, 1),
            'lstm_mse_before_switch': mse(lstm[pre], meas[pre]),
            'lstm_mse_after_switch': mse(lstm[post], meas[post]),
            'gp_mse': mse(gp, meas_gp), 'lstm_mse': mse(lstm, meas),
            'frozen_start_model_mse': mse(frozen, meas),
            'frozen_mse_after_switch': mse(frozen[post], meas[post]),
            'start_model': str(start_model),
            'gp_predictions': len(gkeys),
            'stamp_to_receipt_p50_ms': float(np.percentile(lat, 50) * 1e3) if len(lat) else None,
            'stamp_to_receipt_p99_ms': float(np.percentile(lat, 99) * 1e3) if len(lat) else None,
            'predictor': last_p, 'trainer': last_t, 'graph_status': events.get('graph_status')},
        'joint_names': list(LWR_JOINTS_1_TO_5)}
    o = results['online']
    print('[3/4] results')
    print(f'  joint_states received {n_js}, feedforward answered {o["answered_fraction"]:.1%}; '
          f'predictor compute p50 {last_p.get("compute_p50_us", "?")} us, p99 '
          f'{last_p.get("compute_p99_us", "?")} us; stamp-to-receipt p50 '
          f'{o["stamp_to_receipt_p50_ms"]:.2f} ms, p99 {o["stamp_to_receipt_p99_ms"]:.2f} ms')
    print(f'  LSTM (learning online) MSE [Nm^2]: {o["lstm_mse"]:.4g} overall, '
          f'{o["lstm_mse_before_switch"]:.4g} before / {o["lstm_mse_after_switch"]:.4g} after '
          f'the payload switch; the same start model frozen: {o["frozen_start_model_mse"]:.4g} '
          f'overall, {o["frozen_mse_after_switch"]:.4g} after the switch; GP MSE '
          f'{o["gp_mse"]:.4g} on {len(gkeys)} decimated samples')
    print(f'  trainer: {last_t.get("updates", 0)} updates, {last_t.get("published", 0)} models '
          f'published; predictor on model version {last_p.get("model_version", "?")} '
          f'({last_p.get("model_updates", 0)} swaps, {last_p.get("rejected_total", 0)} rejected '
          f'inputs)')

    fig, axes = plt.subplots(5, 1, figsize=(11, 11), sharex=True)
    for j, ax in enumerate(axes):
        ax.plot(t, meas[:, j], 'k', lw=0.8, label='measured')
        ax.plot(t, lstm[:, j], 'C1', lw=0.8, label='LSTM (predictor node)')
        if len(gkeys):
            ax.plot(t_gp, gp[:, j], 'C0.', ms=1.5, label='GP baseline node')
        ax.axvline(switch_t, color='C3', ls='--', lw=0.8)
        ax.set_ylabel(f'{LWR_JOINTS_1_TO_5[j]}\n[Nm]')
    axes[0].legend(loc='upper right', fontsize=8)
    axes[-1].set_xlabel('time [s] (dashed: payload switch)')
    fig.suptitle('invdyn online on the simulated LWR 4+: feedforward vs measured joint torque')
    fig.tight_layout()
    fig.savefig(out / 'online_torques.png', dpi=90)
    plt.close(fig)

    bins = np.arange(0.0, t[-1] + ERROR_BIN_S, ERROR_BIN_S)
    which = np.digitize(t, bins)
    centers, err, err_frozen = [], [], []
    for b in np.unique(which):
        sel = which == b
        centers.append(t[sel].mean())
        err.append(np.mean((lstm[sel] - meas[sel]) ** 2))
        err_frozen.append(np.mean((frozen[sel] - meas[sel]) ** 2))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.semilogy(centers, err_frozen, '-', color='0.6', lw=1.0,
                label='start model, frozen (offline replay)')
    ax.semilogy(centers, err, 'C1-o', ms=3, label='LSTM learning online, 1 s bins')
    if len(gkeys):
        gw = np.digitize(t_gp, bins)
        gc = [t_gp[gw == b].mean() for b in np.unique(gw)]
        ge = [np.mean((gp[gw == b] - meas_gp[gw == b]) ** 2) for b in np.unique(gw)]
        ax.semilogy(gc, ge, 'C0-s', ms=3, label='GP baseline, 1 s bins')
    ax.axvline(switch_t, color='C3', ls='--', label=f'payload -> {SWITCH_TO_ML:g} ml')
    ax.set_xlabel('time [s]')
    ax.set_ylabel('MSE [Nm$^2$]')
    ax.set_title('Online feedforward error while the trainer learns')
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / 'online_error.png', dpi=90)
    plt.close(fig)
    (out / 'results.json').write_text(json.dumps(results, indent=2, default=str))
    print(f'  figures and results.json in {out}/ ({results["wall_s"]:.0f} s)')
    return results


def run_demo(out: Path, quick: bool = False) -> int:
    """Run the demo into folder ``out`` (replaced if it exists); returns an exit status."""
    t0 = time.perf_counter()
    sizes = QUICK if quick else FULL
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _isolate_dds()
    _, gp_path, offline = offline_stage(out, sizes)
    # Online, predictor and trainer start from the shipped model (what `ros2 launch` uses by
    # default); the model just trained above shows the bag -> train path, not the best model.
    from invdyn_ros.nodes.common import default_model_path
    from invdyn_ros.nodes.predictor import DEFAULT_MODEL
    start_model = Path(default_model_path(DEFAULT_MODEL))
    mon, events = online_stage(start_model, gp_path, sizes['online_s'])
    try:
        results = report(out, mon, events, offline, quick, t0, start_model)
    finally:
        mon.close()
    closed = closed_loop_stage(start_model, sizes['closed_s'])
    results['closed_loop'] = closed
    (out / 'results.json').write_text(json.dumps(results, indent=2, default=str))
    return 0 if results['online']['feedforward_received'] > 0 else 1


def closed_loop_stage(model: Path, seconds: float) -> dict:
    """PD alone vs PD + LSTM feedforward over DDS at reduced gains (see module doc, 4)."""
    from invdyn_ros.closed_loop import run_closed_loop_graph
    print(f'[4/4] closed loop over DDS: lwr_sim under PD at x{CLOSED_GAIN_SCALE:g} gains, '
          f'{seconds:g} s alone, then with the predictor\'s feedforward ({model.name})')
    pd = run_closed_loop_graph(None, seconds, CLOSED_GAIN_SCALE, CLOSED_LEAD_S)
    ff = run_closed_loop_graph(str(model), seconds, CLOSED_GAIN_SCALE, CLOSED_LEAD_S)

    def mrad(v):
        return f'{v * 1e3:.2f} mrad' if v is not None else 'n/a'
    ratio = (pd['tracking_rms_rad'] / ff['tracking_rms_rad']
             if pd['tracking_rms_rad'] and ff['tracking_rms_rad'] else None)
    print(f'  tracking RMS (joints 1-5): PD alone {mrad(pd["tracking_rms_rad"])}, PD + LSTM '
          f'{mrad(ff["tracking_rms_rad"])} while fed ({ff["periods"]} of '
          f'{ff["periods_all"]} periods), {mrad(ff["tracking_rms_all_rad"])} overall'
          + (f'; {ratio:.1f}x lower' if ratio else ''))
    print(f'  feedforward: {ff["feedforward_received"]} received, applied at '
          f'{ff["feedforward_applied_steps"]} steps, {ff["stale_dropped"]} dropped as stale; '
          f'lag (reference published -> applied) p50 {ff["lag_p50_ms"]:.1f} ms, p99 '
          f'{ff["lag_p99_ms"]:.1f} ms (reference published {CLOSED_LEAD_S * 1e3:g} ms ahead)')
    return {'gain_scale': CLOSED_GAIN_SCALE, 'lead_s': CLOSED_LEAD_S, 'pd_alone': pd,
            'pd_lstm': ff, 'reduction': ratio}
