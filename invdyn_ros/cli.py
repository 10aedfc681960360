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
    invdyn experiment control --out DIR [--quick]                learned feedforward, closed loop
    invdyn experiment targets --out DIR [--quick]                full vs residual targets
    invdyn experiment paper --out DIR [--quick]                  every table and figure
    invdyn tune --dataset lwr|baxter|all [--quick]               search the LSTM hyperparameters
    invdyn fuzz [--messages N] [--seed S] [--json OUT]          bad input at a live predictor

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
    spec, nominal = _nominal_from_args(args, names, trajs)
    if args.model == 'gp':
        return _train_gp(args, trajs, names, rate, spec, nominal)
    try:
        mcfg = LstmConfig(joint_names=names, rate_hz=rate, hidden_size=args.hidden,
                          num_layers=args.layers)
        tcfg = TrainConfig(epochs=args.epochs, batch=args.batch, window=args.window,
                           segment=args.segment, lr=args.lr, optimizer=args.optimizer,
                           seed=args.seed, threads=args.threads, device=args.device,
                           val_fraction=args.val_fraction, patience=args.patience,
                           loss=args.loss, kernel=args.kernel).validate()
        accel = AccelConfig(jerk_psd=args.jerk_psd).validate()
    except ValueError as e:
        raise CliError(str(e)) from None
    bar = _progress(tcfg.epochs)
    try:
        result = train_lstm(trajs, mcfg, tcfg, accel, val_trajs=val, progress=bar,
                            target=args.target, nominal=nominal)
    except (FloatingPointError, ValueError) as e:   # diverged, or a kernel that cannot run
        raise CliError(f'{e}; no model written') from None
    finally:
        bar.close()
    meta = training_meta(result, tcfg, accel, [t.source for t in trajs], args.target, spec)
    out = save_checkpoint(args.out, result.model, meta)
    print(f'wrote {out}: target {args.target}, {result.train_samples} training samples, best '
          f'epoch {result.best_epoch}/{len(result.history)} ({result.stopped}), '
          f'val MSE {meta["val_mse"]}, nMSE {meta["val_nmse"]} (of the published torque), '
          f'{result.wall_s:.1f} s')
    return 0


def _joint_values(option: str, items: Optional[list[str]]) -> dict[str, float]:
    """``NAME=VALUE`` items -> {name: value}; CliError naming ``option`` on a bad item."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition('=')
        try:
            v = float(value)
        except ValueError:
            v = float('nan')
        if not sep or not name or v != v or v in (float('inf'), float('-inf')):
            raise CliError(f'{option}: expected JOINT=NUMBER, got {item!r}')
        out[name] = v
    return out


def _nominal_from_args(args: argparse.Namespace, names: tuple, trajs: Sequence = ()):
    """(spec, NominalModel) of a residual --target, or (None, None) for 'full'; with
    --identify, the spec's parameters fitted to ``trajs`` (the training data)."""
    hold = _joint_values('--hold', args.hold)
    armature = _joint_values('--armature', args.armature)
    identify_params = getattr(args, 'identify', False)
    if args.target == 'full':
        if args.urdf or hold or armature or identify_params:
            raise CliError('--urdf, --hold, --armature and --identify need a residual --target')
        return None, None
    if identify_params and not getattr(args, 'val_data', None) and getattr(
            args, 'val_fraction', 0.0) > 0:
        # The validation part is split off inside training: fitted on all of --data, the
        # nominal model would have seen it, and the validation scores would flatter.
        raise CliError('--identify fits the nominal model on --data: give the validation '
                       'runs as --val-data, or --val-fraction 0')
    if not args.urdf:
        raise CliError(f'--target {args.target} needs --urdf PATH (or --urdf lwr4plus for the '
                       'simulated LWR\'s nominal model, baxter_left for Baxter\'s left arm)')
    from invdyn_ros.core.nominal import NominalModel, spec_for
    try:
        spec = spec_for(args.urdf, names, held_q=hold, armature=armature)
        if identify_params:
            from invdyn_ros.core.accel import AccelConfig
            from invdyn_ros.core.identify import identify_trajectories
            spec = identify_trajectories(spec, trajs,
                                         AccelConfig(jerk_psd=args.jerk_psd).validate())
            print('identified the nominal model on the training data: nMSE per joint '
                  + ' / '.join(f'{v:.3f}' for v in spec.identified['fit']['nmse_per_joint']))
        return spec, NominalModel(spec)
    except ValueError as e:
        raise CliError(str(e)) from None


def _train_gp(args: argparse.Namespace, trajs: list, names: tuple, rate: float, spec=None,
              nominal=None) -> int:
    from invdyn_ros.core.accel import AccelConfig
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.gp import GpConfig, train_gp
    try:
        cfg = GpConfig(joint_names=names, rate_hz=rate, kind=args.gp_kind,
                       max_exact_points=args.gp_points, subsample=args.gp_subsample,
                       num_inducing=args.inducing, seed=args.seed, threads=args.threads)
        cfg.validate()
        accel = AccelConfig(jerk_psd=args.jerk_psd).validate()
        gp, info = train_gp(trajs, cfg, accel, target=args.target, nominal=nominal)
    except ValueError as e:
        raise CliError(str(e)) from None
    from invdyn_ros.core.training import target_meta
    meta = {**target_meta(args.target, spec), 'accel_config': accel.to_dict(),
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


def _trainer_params(args: argparse.Namespace):
    """The trainer node's settings for ``eval --online``: its defaults, or the file's, with
    ``--adapt`` on top; validated like the node's."""
    from invdyn_ros.core.params import node_yaml_values, ParamError, TrainerParams
    try:
        values = node_yaml_values(args.trainer_params, 'trainer') if args.trainer_params \
            else {}
        if args.adapt:
            values['adapt'] = args.adapt
        return TrainerParams.from_dict(values)
    except (ParamError, TypeError) as e:
        raise CliError(f'--trainer-params: {e}') from None


def cmd_eval(args: argparse.Namespace) -> int:
    from invdyn_ros.core.evaluate import evaluate_model
    if (args.trainer_params or args.adapt) and not args.online:
        raise CliError('--trainer-params and --adapt apply only with --online')
    online = _trainer_params(args) if args.online else None
    try:
        report = evaluate_model(args.model, args.data, topic=args.topic, online=online)
    except ValueError as e:
        raise CliError(str(e)) from None
    _print_scores(report)
    if args.json:
        _write_json(args.json, report)
        print(f'wrote {args.json}')
    return 0


def _print_scores(report: dict) -> None:
    print(f'model {report["model"]} on {report["samples"]} samples '
          f'({report["trajectories"]} trajectories; {report["mode"]})')
    if 'target' in report:
        print(f'  target {report["target"]}: scores of {report["published"]}, against '
              f'{report["scored_against"]}')
    print(f'  {"joint":<16}{"MSE [Nm^2]":>14}{"nMSE":>10}')
    for j, name in enumerate(report['joint_names']):
        print(f'  {name:<16}{report["mse_per_joint"][j]:>14.5g}'
              f'{report["nmse_per_joint"][j]:>10.4f}')
    print(f'  {"overall":<16}{report["mse"]:>14.5g}{report["nmse"]:>10.4f}')
    if 'online' in report:
        on = report['online']
        print(f'  {"frozen model":<16}{report["frozen_mse"]:>14.5g}'
              f'{report["frozen_nmse"]:>10.4f}   (the same model without learning)')
        print(f'  learning online (adapt {on["adapt"]}): {on["updates"]} updates, '
              f'{on["published"]} models published')
    if 'nominal_mse' in report:
        print(f'  {"nominal alone":<16}{report["nominal_mse"]:>14.5g}'
              f'{report["nominal_nmse"]:>10.4f}')


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
          f'{cfg.input_kind}, target {meta.get("target", "full")}')
    if isinstance(meta.get('nominal'), dict):
        # The stored URDF is long: show its size and hash, not the text.
        nominal = dict(meta['nominal'])
        nominal['urdf_text'] = f'<{len(str(nominal.get("urdf_text", "")))} characters>'
        meta = dict(meta, nominal=nominal)
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


def _rt_priority(text: str) -> int:
    from invdyn_ros.core.sched import MAX_RT_PRIORITY
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
    if not 0 <= v <= MAX_RT_PRIORITY:
        raise argparse.ArgumentTypeError(f'must be 0 (off) or 1..{MAX_RT_PRIORITY}, got {v}')
    return v


def cmd_bench(args: argparse.Namespace) -> int:
    from invdyn_ros.bench import BenchError, BenchOptions, parse_sizes, run_bench
    try:
        opts = BenchOptions(quick=args.quick, profile=args.profile, rate_hz=args.rate_hz,
                            threads=args.threads, model=args.model, messages=args.messages,
                            repeats=args.repeats, seconds=args.seconds, rounds=args.rounds,
                            train_sizes=parse_sizes('--train-sizes', args.train_sizes),
                            gp_sizes=parse_sizes('--gp-sizes', args.gp_sizes),
                            epochs=args.epochs, realtime_priority=args.realtime_priority)
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


def cmd_experiment_control(args: argparse.Namespace) -> int:
    from invdyn_ros.experiments.control import CONDITIONS, FULL, QUICK, run_control
    sizes = QUICK if args.quick else FULL
    conditions = tuple(args.conditions) if args.conditions else CONDITIONS
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise CliError(f'--conditions: unknown {unknown}; known: {list(CONDITIONS)}')
    from dataclasses import replace
    if args.seconds:
        sizes = replace(sizes, run_s=args.seconds)
    if args.payloads:
        if max(args.payloads) > 1000.0:
            raise CliError(f'--payloads must be within 0..1000 ml, got {args.payloads}')
        sizes = replace(sizes, payloads=tuple(args.payloads))
    run_control(Path(args.out), quick=args.quick, conditions=conditions, sizes=sizes,
                command='invdyn ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else '')
    return 0


def cmd_experiment_targets(args: argparse.Namespace) -> int:
    from invdyn_ros.experiments.targets import run_targets
    run_targets(Path(args.out), quick=args.quick,
                data_root=Path(args.data_root) if args.data_root else None,
                command='invdyn ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else '')
    return 0


def cmd_experiment_paper(args: argparse.Namespace) -> int:
    from invdyn_ros.experiments import paper
    from invdyn_ros.experiments.hparams import HparamError
    from invdyn_ros.experiments.tune import BAXTER_ROOT_DEFAULT
    try:
        paper.run_paper(Path(args.out), quick=args.quick, hparams_path=args.hparams,
                        baxter_root=Path(args.baxter_root or BAXTER_ROOT_DEFAULT))
    except HparamError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from invdyn_ros.experiments import tune
    from invdyn_ros.experiments.hparams import HparamError
    settings = tune.QUICK_TUNE if args.quick else tune.FULL_TUNE
    changes = {k: getattr(args, k) for k in ('trials', 'max_epochs', 'folds', 'seed')
               if getattr(args, k) is not None}
    try:
        settings = replace(settings, **changes).validate()
        for dataset in tune.parse_datasets(args.dataset):
            tune.run_tune(dataset, Path(args.out), settings, hparams_path=args.hparams,
                          baxter_root=Path(args.baxter_root or tune.BAXTER_ROOT_DEFAULT),
                          quick=args.quick)
    except (HparamError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    from invdyn_ros.fuzz import FuzzError, FuzzOptions, main_cli, SECOND_BURST
    if args.messages <= SECOND_BURST:
        raise CliError(f'--messages must be more than {SECOND_BURST}, got {args.messages}')
    if args.seed < 0:
        raise CliError(f'--seed must be >= 0, got {args.seed}')
    if args.model and not Path(args.model).is_file():
        raise CliError(f'--model {args.model}: no such file')
    opts = FuzzOptions(messages=args.messages, seed=args.seed, burst=args.burst,
                       model_path=str(Path(args.model).resolve()) if args.model else '')
    if args.torque_limits:
        try:
            limits = tuple(_positive_float(v) for v in args.torque_limits.split(','))
        except argparse.ArgumentTypeError as e:
            raise CliError(f'--torque-limits: {e}') from None
        if len(limits) != len(opts.joint_names):
            raise CliError(f'--torque-limits needs {len(opts.joint_names)} values, one per '
                           f'joint of {list(opts.joint_names)}')
        opts.torque_limits = limits
    try:
        return main_cli(opts, json_out=args.json)
    except FuzzError as e:
        raise CliError(str(e)) from None


# --- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from invdyn_ros.core.params import TRAINER_ADAPT
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
    t.add_argument('--target', choices=('full', 'residual_rbd', 'residual_gravity'),
                   default='full', help='what the model learns: full torque (default), torque '
                   'minus the nominal rigid-body model (residual_rbd; the predictor publishes '
                   'model + residual) or minus nominal gravity (residual_gravity; the predictor '
                   'publishes the residual only)')
    t.add_argument('--urdf', help='residual targets: URDF of the nominal model, lwr4plus '
                   '(the packaged KUKA LWR 4+ URDF with the simulator\'s armature) or '
                   'baxter_left (the packaged Baxter left arm; use with --identify); stored in '
                   'the checkpoint')
    t.add_argument('--identify', action='store_true',
                   help='residual targets: fit the nominal model\'s parameters (bodies, '
                   'friction, springs, offsets) to the training data by least squares, the '
                   'URDF giving the kinematics and the prior (see invdyn_ros/core/identify.py)')
    t.add_argument('--hold', nargs='+', metavar='JOINT=RAD',
                   help='residual targets: fixed positions of URDF joints the model does not '
                   'cover (default 0 rad; lwr4plus: the simulator\'s home pose)')
    t.add_argument('--armature', nargs='+', metavar='JOINT=KGM2',
                   help='residual targets: reflected rotor inertia added to URDF joints')
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
    t.add_argument('--loss', choices=('normalised', 'mse'), default='normalised',
                   help="how joints weigh: 'normalised' (error over each joint's torque "
                   "spread, as nMSE scores) or 'mse' (errors in Nm, as MSE scores)")
    t.add_argument('--val-fraction', type=float, default=0.2)
    t.add_argument('--patience', type=int, default=6)
    t.add_argument('--jerk-psd', type=_positive_float, default=10.0,
                   help='acceleration filter jerk spectral density [(rad/s^3)^2 s]')
    t.add_argument('--rate-hz', type=_positive_float, help='override the data rate [Hz]')
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--threads', type=_positive_int, default=2, help='torch CPU threads')
    t.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    # training.KERNELS, spelled out: importing training (torch) here would slow every --help.
    t.add_argument('--kernel', choices=('auto', 'torch', 'compiled'), default='auto',
                   help='what runs the LSTM recurrence: the compiled CPU kernel, torch.nn.LSTM, '
                        'or auto (the compiled kernel where it runs: CPU, float32, built)')
    t.set_defaults(func=cmd_train)

    e = sub.add_parser('eval', help='score a model step by step, as the predictor runs it')
    e.add_argument('--model', required=True)
    e.add_argument('--data', nargs='+', required=True)
    e.add_argument('--topic', default='/joint_states')
    e.add_argument('--json', help='also write the scores as JSON here')
    e.add_argument('--online', action='store_true',
                   help='score the LSTM learning online during each trajectory, as the '
                   'predictor and trainer nodes run together (each sample predicted before '
                   'its torque is learned), beside the frozen model')
    e.add_argument('--trainer-params', metavar='YAML',
                   help='with --online: the trainer node\'s parameter file (config/trainer.yaml '
                   'form; default: its defaults). Its learning settings are used; the '
                   'acceleration filter (max_gap_s too) is the checkpoint\'s, as in plain eval, '
                   'and model_path, joint_names, topics, recording and threads do not apply')
    e.add_argument('--adapt', choices=TRAINER_ADAPT,
                   help='with --online: what learns (overrides the file)')
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
    b.add_argument('--rounds', type=_positive_int,
                   help='e2e: rounds of the four runs, interleaved (default 3, quick 1)')
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
    b.add_argument('--realtime-priority', type=_rt_priority, default=None,
                   help='e2e: SCHED_FIFO priority of the predictor and of the relay beside it '
                        '(0: default scheduler; default: the predictor.yaml value)')
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
    s = xsub.add_parser('control', help='closed-loop tracking of the simulated LWR with PD and '
                        'learned feedforward (nominal, GP, LSTM, online LSTM)',
                        description='Train the models, then run reaching and pushing with '
                        'payloads 200/300/400 ml under PD alone and PD + nominal / GP / LSTM '
                        '(full, residual) / online-learning LSTM feedforward, at nominal and a '
                        'quarter of the gains, plus a payload switch. Writes report.md, '
                        'results.json and PNG figures into --out.')
    s.add_argument('--out', required=True, help='output folder (created if missing)')
    s.add_argument('--quick', action='store_true',
                   help='tiny models and short runs, payload 300 ml only (under a minute)')
    s.add_argument('--conditions', nargs='+', metavar='NAME',
                   help='subset of pd nominal gp lstm_full lstm_residual online (default all)')
    s.add_argument('--seconds', type=_positive_float, help='seconds per run (default 10, '
                   'quick 0.8)')
    s.add_argument('--payloads', type=_nonneg_float, nargs='+', metavar='ML',
                   help='payloads [ml] (default 200 300 400, quick 300)')
    s.set_defaults(func=cmd_experiment_control)
    s = xsub.add_parser('targets', help='full torque vs residual targets: MSE and samples '
                        'needed to beat the nominal model (LWR, Baxter)',
                        description='Train LSTMs with target full, residual_rbd and '
                        'residual_gravity on growing subsets of simulated LWR data (and full on '
                        'the real Baxter set), score them on held-out runs beside the nominal '
                        'model alone, and measure the nominal term\'s cost. Writes targets.md, '
                        'targets.json and targets.png into --out.')
    s.add_argument('--out', required=True, help='output folder (created if missing)')
    s.add_argument('--quick', action='store_true', help='tiny sizes (CI)')
    s.add_argument('--data-root', help='shared robot data folder (default ../shared/data or '
                   '$INVDYN_SHARED_DATA)')
    s.set_defaults(func=cmd_experiment_targets)
    s = xsub.add_parser('paper', help='every table and figure of the paper: Table I, Fig. 5, '
                        'Fig. 6 / Table II, Fig. 8, and the real Baxter set; LSTM vs GP vs naive',
                        description='Regenerate Table I and Fig. 5 (synthetic), Fig. 6 and '
                        'Table II (MSE and wall time vs training-set size on the simulated LWR), '
                        'Fig. 8 (two reaching motions) and the comparison on the Baxter set, all '
                        'measured in one run with the LSTM hyperparameters of --hparams. Writes '
                        'report.md, results.json and PNG figures into --out.')
    s.add_argument('--out', required=True, help='output folder (created if missing)')
    s.add_argument('--quick', action='store_true',
                   help='fewer runs, sizes and seeds: indicative figures within 10 minutes')
    s.add_argument('--hparams', help='LSTM hyperparameter file (default: '
                   'config/paper_hparams.yaml, written by `invdyn tune`)')
    s.add_argument('--baxter-root', help='the Baxter Dataset folder holding Training/ and '
                   'Test/ (default: $INVDYN_SHARED_DATA or ../shared/data, '
                   'baxter_valencia2023/Dataset)')
    s.set_defaults(func=cmd_experiment_paper)

    tn = sub.add_parser('tune', help='search the LSTM hyperparameters of the paper experiments',
                        description='Random search over layers, hidden size, BPTT window and '
                        'segment, batch, learning rate and optimizer, weight decay and the '
                        'acceleration filter, and whether the network learns the whole torque '
                        'or the residual over the nominal model (the LWR\'s as it is, '
                        'Baxter\'s identified on the training runs), epochs by '
                        'validation, on the loss of the data '
                        "set's metric; validation by trajectory (Baxter: folds of its Training "
                        'runs; LWR: '
                        'simulated runs of their own seeds), never on test runs. Writes '
                        'tune_<dataset>.json/.md into --out and the choice into --hparams.')
    tn.add_argument('--dataset', choices=('lwr', 'baxter', 'all'), default='all')
    tn.add_argument('--out', default='tune_out', help='folder for the results (default '
                    'tune_out)')
    tn.add_argument('--quick', action='store_true', help='a small budget (indicative)')
    tn.add_argument('--trials', type=_positive_int, help='trials incl. the incumbent '
                    '(default 12, quick 4)')
    tn.add_argument('--max-epochs', type=_positive_int, help='most epochs per trial (40)')
    tn.add_argument('--folds', type=_positive_int, help='Baxter cross-validation folds (3)')
    tn.add_argument('--seed', type=int, help='search seed (default 0)')
    tn.add_argument('--hparams', help='hyperparameter file to update (default '
                    'config/paper_hparams.yaml)')
    tn.add_argument('--baxter-root', help='the Baxter Dataset folder (see experiment paper)')
    tn.set_defaults(func=cmd_tune)

    f = sub.add_parser('fuzz', help='random and mutated joint states at a live predictor',
                       description='Start a predictor node and publish random and mutated '
                       '/joint_states at it over DDS; print messages sent, answered, rejections '
                       'by kind, crashes and unsafe outputs (NaN/inf or beyond torque_limits). '
                       'Exit 0 when it passed, 1 when not. Never point it at a robot.')
    f.add_argument('--messages', type=_positive_int, default=10000,
                   help='messages to send (default 10000, more than 1000)')
    f.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    f.add_argument('--burst', type=_positive_int, default=250,
                   help='messages published back to back before waiting (default 250)')
    f.add_argument('--model', help='LSTM checkpoint (default: the shipped model)')
    f.add_argument('--torque-limits', metavar='NM,NM,...',
                   help='per-joint torque limits [Nm] given to the node and checked on every '
                   'output (default: the KUKA LWR 4+ maxima)')
    f.add_argument('--json', metavar='OUT', help='also write the report as JSON here')
    f.set_defaults(func=cmd_fuzz)
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
