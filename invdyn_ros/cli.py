"""`invdyn`: the command line. Every capability hangs off one subcommand.

    invdyn data sim --out DIR [--payload-ml ML] [--seconds S]   simulated LWR -> rosbag2
    invdyn data synthetic --out FILE [--noise N]                 the paper's 1-D set -> .npz
    invdyn data info PATH...                                     what a bag/csv/npz holds
    invdyn data convert PATH... --out BAG                        any loader's data -> rosbag2
    invdyn train --data PATH... --out MODEL                      fit an LSTM, write a checkpoint
    invdyn eval --model MODEL --data PATH... [--json OUT]        step-by-step scores
    invdyn model info MODEL                                      what a checkpoint holds
    invdyn up predict [sim:=true trainer:=true ...]              the node graph, as launched
    invdyn demo --out DIR [--quick]                              the main job
    invdyn bench [latency|e2e|train|gp|all] [--quick] [--json OUT]   figures vs goals
    invdyn experiment synthetic --out DIR [--quick] [--runs N]   the paper's Table I, Fig. 5

Errors in inputs (files, arguments) print one clear line and exit with status 2; nothing
partial is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
import sys
from typing import Optional, Sequence

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not an integer: {s!r}') from None
    if v < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {v}')
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {s!r}') from None
    if not (v > 0 and v != float('inf')):
        raise argparse.ArgumentTypeError(f'must be a positive finite number, got {s}')
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {s!r}') from None
    if not (v >= 0 and v != float('inf')):
        raise argparse.ArgumentTypeError(f'must be a finite number >= 0, got {s}')
    return v


def _joint_list(s: str) -> list[str]:
    names = [n.strip() for n in s.replace(',', ' ').split() if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError('empty joint list')
    return names


# --- data ----------------------------------------------------------------------------------

def cmd_data_sim(args: argparse.Namespace) -> int:
    from invdyn_ros.core.bagio import write_joint_state_bag
    from invdyn_ros.core.lwr_sim import simulate
    trajs = [simulate(seconds=args.seconds, payload_ml=payload, seed=args.seed + i,
                      rate_hz=args.rate_hz)
             for i, payload in enumerate(args.payload_ml)]
    out = write_joint_state_bag(args.out, trajs, topic=args.topic, storage=args.storage,
                                overwrite=args.overwrite)
    n = sum(len(t) for t in trajs)
    print(f'wrote {out}: {n} JointState messages on {args.topic} ({args.storage}), '
          f'{len(trajs)} run(s), payload {args.payload_ml} ml, {args.rate_hz:g} Hz')
    return 0


def cmd_data_synthetic(args: argparse.Namespace) -> int:
    import numpy as np
    from invdyn_ros.core.synthetic import synthetic_series
    x, y = synthetic_series(args.n, args.noise, args.seed)
    out = Path(args.out)
    tmp = out.with_name(f'.{out.name}.tmp{os.getpid()}')
    with open(tmp, 'wb') as f:
        np.savez(f, x=x, y=y, noise=np.float64(args.noise))
    os.replace(tmp, out)
    print(f'wrote {out}: {args.n} samples, noise {args.noise}')
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    import numpy as np
    from invdyn_ros.core.datasets import load_path
    for p in args.paths:
        trajs = load_path(p, args.joints, args.topic)
        n = sum(len(t) for t in trajs)
        tr = trajs[0]
        print(f'{p}: {len(trajs)} trajectories, {n} samples, {tr.dof} joints '
              f'{list(tr.joint_names)}, {tr.rate_hz:.6g} Hz, accelerations '
              f'{"recorded" if tr.qdd is not None else "not recorded (estimated causally)"}')
        tau = np.concatenate([t.tau for t in trajs])
        print('  torque std per joint [Nm]: ' + ', '.join(f'{v:.3g}' for v in tau.std(0)))
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from invdyn_ros.core.bagio import write_joint_state_bag
    from invdyn_ros.core.datasets import load_trajectories
    trajs = load_trajectories(args.paths, args.joints, args.topic)
    out = write_joint_state_bag(args.out, trajs, topic=args.out_topic, storage=args.storage,
                                overwrite=args.overwrite)
    print(f'wrote {out}: {sum(len(t) for t in trajs)} messages from {len(trajs)} trajectories')
    return 0


# --- train / eval / model ------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from invdyn_ros.core.accel import AccelConfig
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.datasets import load_trajectories
    from invdyn_ros.core.lstm import LstmConfig
    from invdyn_ros.core.training import TrainConfig, train_lstm, training_meta
    trajs = load_trajectories(args.data, args.joints, args.topic)
    val = load_trajectories(args.val_data, args.joints, args.topic) if args.val_data else None
    names = tuple(args.joints or trajs[0].joint_names)
    rate = args.rate_hz or float(trajs[0].rate_hz)
    if args.model == 'gp':
        return _train_gp(args, trajs, names, rate)
    try:
        mcfg = LstmConfig(joint_names=names, rate_hz=rate, hidden_size=args.hidden,
                          num_layers=args.layers)
        tcfg = TrainConfig(epochs=args.epochs, batch=args.batch, window=args.window,
                           segment=args.segment, lr=args.lr, optimizer=args.optimizer,
                           seed=args.seed, threads=args.threads, device=args.device,
                           val_fraction=args.val_fraction, patience=args.patience).validate()
        accel = AccelConfig(jerk_psd=args.jerk_psd).validate()
    except ValueError as e:
        raise CliError(str(e)) from None
    bar = _progress(tcfg.epochs)
    try:
        result = train_lstm(trajs, mcfg, tcfg, accel, val_trajs=val, progress=bar)
    finally:
        bar.close()
    meta = training_meta(result, tcfg, accel, [t.source for t in trajs])
    out = save_checkpoint(args.out, result.model, meta)
    print(f'wrote {out}: {result.train_samples} training samples, best epoch '
          f'{result.best_epoch}/{len(result.history)} ({result.stopped}), '
          f'val MSE {meta["val_mse"]}, nMSE {meta["val_nmse"]}, {result.wall_s:.1f} s')
    return 0


def _train_gp(args: argparse.Namespace, trajs: list, names: tuple, rate: float) -> int:
    from invdyn_ros.core.accel import AccelConfig
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.gp import GpConfig, train_gp
    try:
        cfg = GpConfig(joint_names=names, rate_hz=rate, kind=args.gp_kind,
                       max_exact_points=args.gp_points, subsample=args.gp_subsample,
                       num_inducing=args.inducing, seed=args.seed, threads=args.threads)
        cfg.validate()
        accel = AccelConfig(jerk_psd=args.jerk_psd).validate()
        gp, info = train_gp(trajs, cfg, accel)
    except ValueError as e:
        raise CliError(str(e)) from None
    meta = {'accel_config': accel.to_dict(),
            'fit': {k: v for k, v in info.items() if k != 'accel_config'}}
    out = save_checkpoint(args.out, gp, meta)
    print(f'wrote {out}: {args.gp_kind} GP on {gp.num_train} points, fit '
          f'{info["fit_time_s"]:.1f} s')
    return 0


class _progress:
    """A tqdm bar over epochs that shows the latest losses (quiet when not a terminal)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=total, unit='epoch', disable=not sys.stderr.isatty())

    def __call__(self, entry: dict) -> None:
        shown = {k: f'{v:.4g}' for k, v in entry.items() if k in ('train_loss', 'val_nmse')}
        self._bar.set_postfix(shown)
        self._bar.update(1)
        if self._bar.disable:
            logging.getLogger('invdyn.train').info('epoch %d %s', entry['epoch'], shown)

    def close(self) -> None:
        self._bar.close()


def cmd_eval(args: argparse.Namespace) -> int:
    from invdyn_ros.core.evaluate import evaluate_model
    report = evaluate_model(args.model, args.data, topic=args.topic)
    _print_scores(report)
    if args.json:
        _write_json(args.json, report)
        print(f'wrote {args.json}')
    return 0


def _print_scores(report: dict) -> None:
    print(f'model {report["model"]} on {report["samples"]} samples '
          f'({report["trajectories"]} trajectories, step by step, state carried)')
    print(f'  {"joint":<16}{"MSE [Nm^2]":>14}{"nMSE":>10}')
    for j, name in enumerate(report['joint_names']):
        print(f'  {name:<16}{report["mse_per_joint"][j]:>14.5g}'
              f'{report["nmse_per_joint"][j]:>10.4f}')
    print(f'  {"overall":<16}{report["mse"]:>14.5g}{report["nmse"]:>10.4f}')


def _write_json(path: str, obj: dict) -> None:
    p = Path(path)
    tmp = p.with_name(f'.{p.name}.tmp{os.getpid()}')
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, p)


def cmd_model_info(args: argparse.Namespace) -> int:
    from invdyn_ros.core.checkpoint import load_checkpoint
    model, meta = load_checkpoint(args.model, expect_kind=None)
    cfg = model.config
    if meta.get('kind') == 'gp':
        what = f'{cfg.kind} GP on {model.num_train} points'
    else:
        what = f'LSTM {cfg.num_layers} layer(s) x {cfg.hidden_size}'
    print(f'{args.model}: {what}, joints {list(cfg.joint_names)}, {cfg.rate_hz:g} Hz, input '
          f'{cfg.input_kind}')
    print(json.dumps(meta, indent=2, default=str))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from invdyn_ros.graph import parse_launch_args, run_graph
    try:
        parse_launch_args(args.graph, args.launch_args)
    except ValueError as e:
        raise CliError(str(e)) from None
    return run_graph(args.graph, args.launch_args, duration_s=args.duration)


def cmd_demo(args: argparse.Namespace) -> int:
    from invdyn_ros.demo import run_demo
    return run_demo(Path(args.out), quick=args.quick)


def cmd_bench(args: argparse.Namespace) -> int:
    from invdyn_ros.bench import BenchError, BenchOptions, parse_sizes, run_bench
    try:
        opts = BenchOptions(quick=args.quick, profile=args.profile, rate_hz=args.rate_hz,
                            threads=args.threads, model=args.model, messages=args.messages,
                            repeats=args.repeats, seconds=args.seconds,
                            train_sizes=parse_sizes('--train-sizes', args.train_sizes),
                            gp_sizes=parse_sizes('--gp-sizes', args.gp_sizes),
                            epochs=args.epochs)
        run_bench(args.mode, opts, json_out=args.json)
    except BenchError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_experiment_synthetic(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise CliError(f'--seed must be >= 0, got {args.seed}')
    from invdyn_ros.experiments.synthetic import run_synthetic
    run_synthetic(Path(args.out), quick=args.quick, runs=args.runs, seed=args.seed)
    return 0


# --- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='invdyn', description='Learn and serve robot inverse dynamics with a stateful LSTM.')
    p.add_argument('-v', '--verbose', action='store_true', help='log more')
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')

    data = sub.add_parser('data', help='make, inspect and convert robot data')
    dsub = data.add_subparsers(dest='data_command', required=True, metavar='DATA_COMMAND')
    s = dsub.add_parser('sim', help='simulate the KUKA LWR 4+ and write a rosbag2')
    s.add_argument('--out', required=True, help='rosbag2 folder to create')
    s.add_argument('--payload-ml', type=_nonneg_float, nargs='+', default=[300.0],
                   help='liquid payload(s) [ml], one run each (default 300)')
    s.add_argument('--seconds', type=_positive_float, default=60.0,
                   help='seconds per run (default 60)')
    s.add_argument('--rate-hz', type=_positive_float, default=1000.0,
                   help='sample rate [Hz] (default 1000)')
    s.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    s.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    s.add_argument('--topic', default='/joint_states')
    s.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    s.set_defaults(func=cmd_data_sim)

    s = dsub.add_parser('synthetic', help="the paper's 1-D sine+triangle+sawtooth set")
    s.add_argument('--out', required=True, help='.npz file to write (arrays x, y)')
    s.add_argument('--noise', type=_nonneg_float, default=0.01, help='noise std (0.01, 0.1)')
    s.add_argument('--n', type=_positive_int, default=10000, help='samples')
    s.add_argument('--seed', type=int, default=0)
    s.set_defaults(func=cmd_data_synthetic)

    s = dsub.add_parser('info', help='summarise bags, CSV, .mat or .npz data')
    s.add_argument('paths', nargs='+')
    s.add_argument('--joints', type=_joint_list, help='joint names to select (comma list)')
    s.add_argument('--topic', default='/joint_states', help='JointState topic in bags')
    s.set_defaults(func=cmd_data_info)

    s = dsub.add_parser('convert', help='write any supported data as a rosbag2')
    s.add_argument('paths', nargs='+')
    s.add_argument('--out', required=True)
    s.add_argument('--joints', type=_joint_list)
    s.add_argument('--topic', default='/joint_states', help='topic to read in input bags')
    s.add_argument('--out-topic', default='/joint_states')
    s.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    s.add_argument('--overwrite', action='store_true')
    s.set_defaults(func=cmd_data_convert)

    t = sub.add_parser('train', help='train an LSTM inverse-dynamics model')
    t.add_argument('--data', nargs='+', required=True, help='bags, CSV/npz files or folders')
    t.add_argument('--val-data', nargs='+', help='validation data (default: split by '
                   'trajectory)')
    t.add_argument('--out', required=True, help='checkpoint file to write (.npz)')
    t.add_argument('--model', choices=('lstm', 'gp'), default='lstm',
                   help='lstm (default) or the GP baseline')
    t.add_argument('--gp-kind', choices=('exact', 'sparse'), default='exact',
                   help='GP: exact, or sparse variational with inducing points')
    t.add_argument('--gp-points', type=_positive_int, default=2000,
                   help='GP: most points an exact GP takes (default 2000)')
    t.add_argument('--gp-subsample', action='store_true',
                   help='GP: subsample larger data to --gp-points instead of refusing')
    t.add_argument('--inducing', type=_positive_int, default=500,
                   help='sparse GP: inducing points (default 500)')
    t.add_argument('--joints', type=_joint_list, help='joints to model (default: all)')
    t.add_argument('--topic', default='/joint_states')
    t.add_argument('--epochs', type=_positive_int, default=40)
    t.add_argument('--batch', type=_positive_int, default=16,
                   help='segments per update (default 16)')
    t.add_argument('--window', type=_positive_int, default=64,
                   help='truncated-BPTT window [samples] (default 64)')
    t.add_argument('--segment', type=_positive_int, default=512,
                   help='samples per stateful segment (default 512)')
    t.add_argument('--hidden', type=_positive_int, default=64, help='LSTM units (default 64)')
    t.add_argument('--layers', type=_positive_int, default=1, help='LSTM layers (default 1)')
    t.add_argument('--lr', type=_positive_float, default=0.05)
    t.add_argument('--optimizer', choices=('adagrad', 'adam'), default='adagrad')
    t.add_argument('--val-fraction', type=float, default=0.2)
    t.add_argument('--patience', type=int, default=6)
    t.add_argument('--jerk-psd', type=_positive_float, default=10.0,
                   help='acceleration filter jerk spectral density [(rad/s^3)^2 s]')
    t.add_argument('--rate-hz', type=_positive_float, help='override the data rate [Hz]')
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--threads', type=_positive_int, default=2, help='torch CPU threads')
    t.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    t.set_defaults(func=cmd_train)

    e = sub.add_parser('eval', help='score a model step by step, as the predictor runs it')
    e.add_argument('--model', required=True)
    e.add_argument('--data', nargs='+', required=True)
    e.add_argument('--topic', default='/joint_states')
    e.add_argument('--json', help='also write the scores as JSON here')
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser('model', help='inspect checkpoints')
    msub = m.add_subparsers(dest='model_command', required=True, metavar='MODEL_COMMAND')
    s = msub.add_parser('info', help='print what a checkpoint holds')
    s.add_argument('model')
    s.set_defaults(func=cmd_model_info)

    u = sub.add_parser('up', help='start a node graph as its launch file would (no ROS '
                       'install needed)', description='Start the processes of '
                       'launch/<graph>.launch.py, e.g. `invdyn up predict sim:=true '
                       'trainer:=true`. predict: sim, trainer, gp (true/false), model, '
                       'gp_model (paths), joint_states (topic); train: model, record_bag, '
                       'joint_states.')
    u.add_argument('graph', choices=('predict', 'train'), help='which launch file')
    u.add_argument('launch_args', nargs='*', metavar='name:=value', help='launch arguments')
    u.add_argument('--duration', type=_positive_float,
                   help='stop after this many seconds (default: run until Ctrl-C)')
    u.set_defaults(func=cmd_up)

    d = sub.add_parser('demo', help='the main job: simulate, learn, predict, plot')
    d.add_argument('--out', default='demo_out', help='folder for figures and results')
    d.add_argument('--quick', action='store_true', help='a short run (CI)')
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser('bench', help='measure latency, end to end, training and GP figures '
                       'against the goals', description='Measure and print each figure beside '
                       'its goal (never asserted). Modes: latency (predictor compute per message, '
                       'in process), e2e (between processes over DDS, on this machine only), '
                       'train (offline LSTM and GP fit time vs samples, online update), gp (GP '
                       'fit and per-message prediction).')
    b.add_argument('mode', nargs='?', choices=('latency', 'e2e', 'train', 'gp', 'all'),
                   default='all', help='what to measure (default all)')
    b.add_argument('--quick', action='store_true', help='short runs, indicative figures (CI)')
    b.add_argument('--json', metavar='OUT', help='also write every figure as JSON here')
    b.add_argument('--profile', action='store_true',
                   help='latency: print a cProfile of the predictor callback path')
    b.add_argument('--model', help='LSTM checkpoint (default: the shipped model, else a '
                   'random 1 x 64 one)')
    b.add_argument('--rate-hz', type=_positive_float, default=1000.0,
                   help='e2e: /joint_states rate [Hz] (default 1000)')
    b.add_argument('--seconds', type=_positive_float,
                   help='e2e: measured seconds per run (default 20, quick 3)')
    b.add_argument('--messages', type=_positive_int,
                   help='latency: messages per repeat (default 10000, quick 2000)')
    b.add_argument('--repeats', type=_positive_int,
                   help='latency: repeats (default 5, quick 3)')
    b.add_argument('--train-sizes', metavar='N,N,...',
                   help='LSTM training samples (default 1000,10000,100000; quick 1000,5000)')
    b.add_argument('--gp-sizes', metavar='N,N,...',
                   help='exact GP training points (default and quick 500,1000)')
    b.add_argument('--epochs', type=_positive_int, help='LSTM epochs for every size (10)')
    b.add_argument('--threads', type=_positive_int, default=1,
                   help='torch CPU threads for training and the naive path (default 1)')
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser('experiment', help="regenerate the paper's experiments")
    xsub = x.add_subparsers(dest='experiment_command', required=True,
                            metavar='EXPERIMENT_COMMAND')
    s = xsub.add_parser('synthetic', help='Table I and Fig. 5: one-step prediction on the '
                        'synthetic 1-D set, naive / GP / LSTM, sequential vs permuted training',
                        description='Regenerate Table I (naive / GP / LSTM test MSE at noise '
                        '0.01 and 0.1, mean +- std over runs, beside the paper\'s figures) and '
                        'Fig. 5 (sequential vs permuted training data). Writes synthetic.json, '
                        'table1.md, fig5_permutation.png and table1.png into --out.')
    s.add_argument('--out', required=True, help='output folder (created if missing)')
    s.add_argument('--quick', action='store_true',
                   help='3 runs, smaller models: indicative figures in about a minute')
    s.add_argument('--runs', type=_positive_int,
                   help='runs per noise level (default 20, quick 3)')
    s.add_argument('--seed', type=int, default=0, help='seed of the first run (default 0)')
    s.set_defaults(func=cmd_experiment_synthetic)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    from invdyn_ros.core.checkpoint import CheckpointError
    from invdyn_ros.core.trajectory import DataError
    try:
        return int(args.func(args) or 0)
    except (CliError, DataError, CheckpointError, FileExistsError) as e:
        print(f'invdyn: error: {e}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print('invdyn: interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == '__main__':
    sys.exit(main())
