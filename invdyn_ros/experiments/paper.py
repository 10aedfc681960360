"""``invdyn experiment paper``: every table and figure of Rueckert et al. (2017), regenerated.

One command, one output folder (``DIR``):

1. Table I and 2. Fig. 5: the synthetic set (:mod:`.synthetic`; ``table1.png``,
   ``fig5_permutation.png``, and its own ``table1.md`` / ``synthetic.json``);
3. Fig. 6 and Table II: MSE and wall time against training-set size on the simulated LWR
   (:mod:`.lwr_sizes`; ``fig6_sizes.png``);
4. Fig. 8: predicted vs measured torque over two reaching motions (``fig8_reaching.png``);
5. the same comparison on the real Baxter set (:mod:`.baxter`; ``baxter_nmse.png``,
   ``baxter_test_run.png``), skipped with a stated reason when the data are absent;

plus ``report.md`` (tables, goals met or missed with the measured figures, the hyperparameter
search behind the LSTM, wall time) and ``results.json`` (every figure). The LSTM
hyperparameters come from ``config/paper_hparams.yaml`` (written by ``invdyn tune``).
Every number is measured in the run; the only constants are the paper's figures and the
goals, labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import datetime
import os
from pathlib import Path
import platform
import time
from typing import Optional, Union

from invdyn_ros.experiments import baxter as bx
from invdyn_ros.experiments import lwr_sizes as lwr
from invdyn_ros.experiments import synthetic as syn
from invdyn_ros.experiments.common import write_json, write_text
from invdyn_ros.experiments.hparams import DEFAULT_PATH, load_hparams
from invdyn_ros.experiments.tune import BAXTER_ROOT_DEFAULT, search_summary

QUICK_LIMIT_S = 600.0


@dataclass(frozen=True)
class PaperSizes:
    """Sizes of every part (each part's own dataclass)."""

    synthetic: syn.SyntheticSizes
    lwr: lwr.LwrSizes
    baxter: bx.BaxterSizes


FULL_SIZES = PaperSizes(syn.FULL_SIZES, lwr.FULL_SIZES, bx.FULL_SIZES)
QUICK_SIZES = PaperSizes(syn.QUICK_SIZES, lwr.QUICK_SIZES, bx.QUICK_SIZES)
#: What --quick means when nothing is patched: other sizes are reported as custom.
_STANDARD = (FULL_SIZES, QUICK_SIZES)
#: Only for tests (``invdyn experiment paper --quick`` with these patched in): seconds.
TINY_SIZES = PaperSizes(
    replace(syn.FULL_SIZES, runs=2, n_train=400, n_test=100, gp_points=60, gp_iters=5,
            lstm_steps=20, lstm_batch=8, lstm_segment=64, lstm_burn_in=20, lstm_hidden=8),
    replace(lwr.FULL_SIZES, sizes=(60, 150), test_seconds=2.0, exact_max=60, gp_exact_iters=3,
            gp_exact_optimizer='adam', gp_inducing=20, gp_sparse_steps=5, gp_warm_start=30,
            min_presentations=300, val_seconds=1.0, fig8_seconds=5.0),
    replace(bx.FULL_SIZES, seeds=1, gp_points=60, gp_iters=3, gp_optimizer='adam',
            max_train_runs=2, max_test_runs=2, max_samples=300, epochs=2))


def _demote(markdown: str) -> list[str]:
    """A part's own markdown as a section of the report (headings one level down)."""
    out = []
    for line in markdown.splitlines():
        out.append('#' + line if line.startswith('#') else line)
    return out


def _goal_line(g: dict) -> str:
    if g.get('met') is None:
        return f'- [-] {g["goal"]}'
    mark = 'x' if g['met'] else ' '
    return (f'- [{mark}] {g["goal"]}: measured {g["measured"]:.4g}, target {g["target"]:.4g}'
            f' -> {"met" if g["met"] else "MISSED"}')


def run_paper(out_dir: Union[str, Path], quick: bool = False,
              sizes: Optional[PaperSizes] = None,
              hparams_path: Union[str, Path, None] = None,
              baxter_root: Union[str, Path] = BAXTER_ROOT_DEFAULT,
              verbose: bool = True) -> dict:
    """Run every part and write ``report.md``, ``results.json`` and the figures into
    ``out_dir``. Returns the content of ``results.json``."""
    t0 = time.perf_counter()
    sizes = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    custom = sizes not in _STANDARD
    hp_path = Path(hparams_path) if hparams_path is not None else DEFAULT_PATH
    hp, search = load_hparams(hp_path)          # before any work: a bad file fails at once
    sizes.lwr.validate()
    sizes.synthetic.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode = 'quick' if quick else 'full'
    parts: dict = {}
    timings: dict = {}

    t = time.perf_counter()
    standard = syn.QUICK_SIZES if quick else syn.FULL_SIZES
    parts['synthetic'] = syn.run_synthetic(
        out, quick=quick, sizes=None if sizes.synthetic == standard else sizes.synthetic,
        verbose=verbose)
    timings['synthetic'] = time.perf_counter() - t

    t = time.perf_counter()
    parts['lwr'] = lwr.run_lwr(hp['lwr'], sizes.lwr, verbose=verbose)
    lwr.plot_fig6(parts['lwr'], out / 'fig6_sizes.png', quick)
    lwr.plot_fig8(parts['lwr'], out / 'fig8_reaching.png', quick)
    timings['lwr'] = time.perf_counter() - t

    t = time.perf_counter()
    root = Path(baxter_root)
    if (root / 'Training').is_dir() and (root / 'Test').is_dir():
        parts['baxter'] = bx.run_baxter(root, hp['baxter'], sizes.baxter, verbose=verbose)
        bx.plot_nmse(parts['baxter'], out / 'baxter_nmse.png', quick)
        bx.plot_run(parts['baxter'], out / 'baxter_test_run.png', quick)
    else:
        parts['baxter'] = {'skipped': f'Baxter data not found under {root} (expected '
                                      'Training/ and Test/ folders of CSV runs)'}
    timings['baxter'] = time.perf_counter() - t

    goals = ([{**g, 'part': 'synthetic'} for g in parts['synthetic']['goals']
              if 'Fig. 5' not in g['goal']]
             + [{**g, 'part': 'lwr'} for g in lwr.lwr_goal_lines(parts['lwr'])]
             + ([{**parts['baxter']['goal'], 'part': 'baxter'}]
                if 'goal' in parts['baxter'] else []))
    files = ['report.md', 'results.json', 'table1.png', 'fig5_permutation.png',
             'fig6_sizes.png', 'fig8_reaching.png']
    if 'skipped' not in parts['baxter']:
        files += ['baxter_nmse.png', 'baxter_test_run.png']
    note = ('QUICK MODE: fewer runs, sizes and seeds; figures are indicative only'
            if quick else 'full mode')
    if custom:
        note += '; custom (test) sizes'
    result = {
        'experiment': 'Rueckert et al. (Humanoids 2017), all tables and figures, regenerated',
        'mode': mode, 'quick': bool(quick), 'custom_sizes': custom, 'note': note,
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version()},
        'hparams_file': str(hp_path),
        'hparams': {k: v.__dict__ for k, v in hp.items()}, 'search': search,
        'synthetic': parts['synthetic'], 'lwr': parts['lwr'], 'baxter': parts['baxter'],
        'goals': goals, 'part_wall_s': timings, 'files': files,
    }
    result['wall_s'] = time.perf_counter() - t0
    write_text(out / 'report.md', report(result))
    write_json(out / 'results.json', result)
    if verbose:
        print((out / 'report.md').read_text(), end='')
        print(f'[paper] wrote {", ".join(files)} to {out} ({mode} mode, wall time '
              f'{result["wall_s"]:.1f} s)')
    return result


def report(result: dict) -> str:
    """``report.md``: every table, the goals, the search, the wall time."""
    quick = result['quick']
    wall = result['wall_s']
    lines = ['# Rueckert et al. (2017), regenerated: LSTM vs GP vs naive', '',
             f'Mode: **{"QUICK" if quick else "full"}** ({result["note"]}). Wall time of the '
             f'whole run: **{wall:.0f} s** ({wall / 60:.1f} min; parts: '
             + ', '.join(f'{k} {v:.0f} s' for k, v in result['part_wall_s'].items())
             + f') on {result["machine"]["cpus"]} CPUs (shared with other work), '
             f'{result["date"]}.']
    if quick:
        lines.append(f'Quick mode is meant to finish within {QUICK_LIMIT_S / 60:.0f} min on 2 '
                     f'cores: ' + ('it did.' if wall <= QUICK_LIMIT_S else 'it did NOT.'))
    lines += ['', '## Goals (measured by this run)', '']
    lines += [_goal_line(g) for g in result['goals']]
    if 'skipped' in result['baxter']:
        lines.append(f'- [-] Baxter goal: not measured, {result["baxter"]["skipped"]}')
    elif 'lstm_online' in result['baxter'].get('scores', {}):
        on = result['baxter']['scores']['lstm_online']
        lines.append(f'- [i] Beside the goals: the Baxter LSTM learning online during the test '
                     f'runs (the trainer node\'s defaults, each sample predicted before it is '
                     f'learned) scores nMSE {on["nmse"]:.4g} (mean of '
                     f'{len(on["runs"])} seed(s)); see the Baxter section.')
    lines += ['', '## LSTM hyperparameters (chosen by `invdyn tune`, not by hand)', '',
              f'From `{result["hparams_file"]}`.', '']
    from invdyn_ros.experiments.hparams import LstmHparams
    for name, h in result['hparams'].items():
        lines.append(f'- {name}: {LstmHparams(**h).describe()}.')
        lines.append(f'  Search: {search_summary(result["search"].get(name, {}))}.')
    from invdyn_ros.experiments.tune import SPACE, TARGETS
    lines += ['', f'Search space (both data sets): {SPACE}; what the network learns '
              f'(target): {TARGETS}; epochs by validation (best epoch), grad clip 1, burn-in '
              '8.', '']
    lines += _demote(syn.markdown_report(result['synthetic']))
    lines.append('')
    lines += lwr.markdown(result['lwr'])
    if 'skipped' in result['baxter']:
        lines += ['## Real robot: Baxter', '', f'Skipped: {result["baxter"]["skipped"]}.', '']
    else:
        lines += bx.markdown(result['baxter'])
    lines += ['## Figures', ''] + [f'- `{f}`' for f in result['files'] if f.endswith('.png')]
    return '\n'.join(lines) + '\n'
