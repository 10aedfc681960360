"""The LSTM hyperparameters behind the paper experiments, as chosen by ``invdyn tune``.

They live in a small YAML file in the repository (:data:`DEFAULT_PATH`,
``config/paper_hparams.yaml``), one section per data set (``lwr``: the simulated KUKA LWR 4+,
joints 1-5; ``baxter``: the real Baxter set, 7 joints), written by
:func:`invdyn_ros.experiments.tune.run_tune` with the search that produced them
(``search``: the space, the trials, the validation score of the choice, where the full results
are). ``invdyn experiment paper`` reads them; nothing in the experiments is set by hand.

Per data set: architecture (``num_layers``, ``hidden_size``), truncated BPTT (``window``
[samples] per update, ``segment`` [samples] over which the state is carried, ``burn_in``,
``batch`` segments per update), optimisation (``epochs``: the fixed number of passes the final
model trains, ``lr``, ``optimizer``, ``grad_clip``, ``weight_decay``, ``loss``: how joints
weigh, see :class:`~invdyn_ros.core.training.TrainConfig`), the causal
acceleration estimator (``jerk_psd``, ``qd_noise_std``), whose estimate is an input of the
model, and what the network learns (``target``: ``full``, the whole torque as in the paper, or
``residual_rbd``, the torque minus the data set's nominal rigid-body model, which is added back
to every prediction; only data sets with a nominal model, see :data:`NOMINAL_DATASETS`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import yaml

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.lstm import LstmConfig
from invdyn_ros.core.training import OPTIMIZERS, TrainConfig

#: The repository's hyperparameter file (what ``invdyn tune`` writes by default).
DEFAULT_PATH = Path(__file__).resolve().parents[2] / 'config' / 'paper_hparams.yaml'
DATASETS = ('lwr', 'baxter')
#: Data sets with a packaged nominal rigid-body model (the LWR 4+'s, used as it is; Baxter's
#: left arm, its parameters identified on the training data): only these may learn a residual
#: target.
NOMINAL_DATASETS = ('lwr', 'baxter')
#: Targets the paper experiments know (core.targets.TARGETS less residual_gravity, which the
#: experiments do not use).
HPARAM_TARGETS = ('full', 'residual_rbd')


class HparamError(ValueError):
    """A missing or unusable hyperparameter file or entry."""


@dataclass(frozen=True)
class LstmHparams:
    """One data set's LSTM hyperparameters (see the module docstring)."""

    num_layers: int = 1
    hidden_size: int = 64
    epochs: int = 30
    batch: int = 16
    window: int = 64
    segment: int = 512
    burn_in: int = 8
    lr: float = 0.05
    optimizer: str = 'adagrad'
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    jerk_psd: float = 10.0
    qd_noise_std: float = 5.0e-3
    loss: str = 'normalised'
    target: str = 'full'

    def validate(self) -> 'LstmHparams':
        """Raise HparamError naming the first unusable field; returns self."""
        if self.target not in HPARAM_TARGETS:
            raise HparamError(f'target must be one of {list(HPARAM_TARGETS)}, got '
                              f'{self.target!r}')
        try:
            self.train_config(seed=0, threads=1).validate()
            self.accel_config()
            LstmConfig(joint_names=('j',), rate_hz=1.0, hidden_size=self.hidden_size,
                       num_layers=self.num_layers).validate()
        except (ValueError, TypeError) as e:
            raise HparamError(str(e)) from None
        return self

    def model_config(self, joint_names: Sequence[str], rate_hz: float) -> LstmConfig:
        return LstmConfig(joint_names=tuple(joint_names), rate_hz=float(rate_hz),
                          hidden_size=self.hidden_size, num_layers=self.num_layers)

    def train_config(self, seed: int, threads: int, val_fraction: float = 0.0,
                     patience: int = 0, epochs: Optional[int] = None) -> TrainConfig:
        """Training settings; by default no validation split and no early stop: the final
        model trains exactly ``epochs`` epochs (chosen by the search on validation data)."""
        return TrainConfig(epochs=int(epochs or self.epochs), batch=self.batch,
                           window=self.window, segment=self.segment, burn_in=self.burn_in,
                           lr=float(self.lr), optimizer=self.optimizer,
                           grad_clip=float(self.grad_clip),
                           weight_decay=float(self.weight_decay), val_fraction=val_fraction,
                           patience=patience, seed=seed, threads=threads, device='cpu',
                           loss=self.loss)

    def nominal_model(self, joint_names: Sequence[str], dataset: str = 'lwr',
                      train: Sequence = ()):
        """The nominal model a residual target learns over, or None for the full torque.

        ``lwr``: the packaged LWR 4+ model for ``joint_names`` as it is (the simulator's own
        rigid body). ``baxter``: the packaged Baxter left-arm URDF's kinematics with its
        parameters identified (:func:`invdyn_ros.core.identify.identify`) on ``train``
        (trajectories; the training runs only), with this set's acceleration estimate.
        """
        if self.target == 'full':
            return None
        from invdyn_ros.core.nominal import baxter_spec, lwr4plus_spec, NominalModel
        if dataset == 'lwr':
            return NominalModel(lwr4plus_spec(tuple(joint_names)))
        if dataset != 'baxter':
            raise HparamError(f'dataset {dataset!r} has no nominal model')
        if not train:
            raise HparamError('the Baxter nominal model is identified on training data; none '
                              'given')
        from invdyn_ros.core.identify import identify_trajectories
        return NominalModel(identify_trajectories(baxter_spec(tuple(joint_names)), train,
                                                  self.accel_config()))

    def accel_config(self) -> AccelConfig:
        return AccelConfig(jerk_psd=float(self.jerk_psd),
                           qd_noise_std=float(self.qd_noise_std)).validate()

    def describe(self) -> str:
        return (f'{self.num_layers} x {self.hidden_size} LSTM; {self.optimizer} lr '
                f'{self.lr:g}, {self.epochs} epochs, batch {self.batch} segments of '
                f'{self.segment} samples, BPTT window {self.window}, burn-in {self.burn_in}, '
                f'grad clip {self.grad_clip:g}, weight decay {self.weight_decay:g}, '
                f'{self.loss} loss; '
                + ('' if self.target == 'full' else
                   f'target {self.target} (the nominal model plus the LSTM); ')
                + f'acceleration filter jerk PSD {self.jerk_psd:g}, qd noise '
                f'{self.qd_noise_std:g} rad/s')

    @classmethod
    def from_dict(cls, d: dict, where: str = '') -> 'LstmHparams':
        if not isinstance(d, dict):
            raise HparamError(f'{where}: expected a mapping, got {type(d).__name__}')
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise HparamError(f'{where}: unknown hyperparameters {unknown}')
        kw = {}
        for name, value in d.items():
            want = type(getattr(cls(), name))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or isinstance(value, bool):
                raise HparamError(f'{where}.{name}: expected {want.__name__}, got {value!r}')
            if want is float and not math.isfinite(value):
                raise HparamError(f'{where}.{name}: not a finite number: {value!r}')
            kw[name] = value
        h = cls(**kw)
        if h.optimizer not in OPTIMIZERS:
            raise HparamError(f'{where}.optimizer: one of {OPTIMIZERS}, got {h.optimizer!r}')
        try:
            return h.validate()
        except HparamError as e:
            raise HparamError(f'{where}: {e}') from None


def check_dataset_target(dataset: str, hp: LstmHparams, where: str = '') -> None:
    """HparamError when ``hp`` learns a residual on a data set without a nominal model."""
    if hp.target != 'full' and dataset not in NOMINAL_DATASETS:
        raise HparamError(f'{where or dataset}: target {hp.target!r} needs a nominal model; '
                          f'{dataset!r} has none (only {list(NOMINAL_DATASETS)} do)')


def load_hparams(path: Union[str, Path, None] = None) -> tuple[dict[str, LstmHparams], dict]:
    """Read the hyperparameter file: ({data set: LstmHparams}, {data set: search record}).

    Raises:
        HparamError: a missing file, bad YAML, or a missing / unusable section.
    """
    p = Path(path) if path is not None else DEFAULT_PATH
    if not p.is_file():
        raise HparamError(f'{p}: no hyperparameter file (write one with `invdyn tune`)')
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise HparamError(f'{p}: not valid YAML ({e.__class__.__name__})') from None
    if not isinstance(doc, dict):
        raise HparamError(f'{p}: expected a mapping of data sets {list(DATASETS)}')
    out, search = {}, {}
    for name in DATASETS:
        if name not in doc:
            raise HparamError(f'{p}: no section {name!r}')
        section = doc[name]
        if not isinstance(section, dict) or 'lstm' not in section:
            raise HparamError(f'{p}: section {name!r} has no lstm entry')
        out[name] = LstmHparams.from_dict(section['lstm'], f'{p}:{name}.lstm')
        check_dataset_target(name, out[name], f'{p}:{name}.lstm')
        search[name] = section.get('search', {})
    return out, search


HEADER = """\
# LSTM hyperparameters of the paper experiments (`invdyn experiment paper`), one section per
# data set: lwr (simulated KUKA LWR 4+, joints 1-5) and baxter (real Baxter, 7 joints).
# Written by `invdyn tune` (invdyn_ros/experiments/tune.py): a random search, scored on
# validation trajectories only (never the test runs); `search` records the space, the trials
# and the validation score of the choice. Units: window, segment, burn_in [samples];
# lr [1]; jerk_psd [(rad/s^3)^2 s]; qd_noise_std [rad/s]. target: what the network learns,
# full (the torque) or residual_rbd (the torque minus the nominal model: the LWR 4+'s as it
# is, Baxter's with its parameters identified on the training runs).
"""


class _Dumper(yaml.SafeDumper):
    """Block style, but lists of scalars on one line (the search space stays short)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence('tag:yaml.org,2002:seq', data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def save_hparams(path: Union[str, Path], dataset: str, hp: LstmHparams, search: dict) -> Path:
    """Set ``dataset``'s section of the file at ``path`` (other sections are kept)."""
    from invdyn_ros.experiments.common import write_text
    if dataset not in DATASETS:
        raise HparamError(f'unknown data set {dataset!r}; known: {list(DATASETS)}')
    hp.validate()
    check_dataset_target(dataset, hp)
    p = Path(path)
    doc = {}
    if p.is_file():
        doc = yaml.safe_load(p.read_text()) or {}
        if not isinstance(doc, dict):
            raise HparamError(f'{p}: expected a mapping, refusing to overwrite it')
    doc[dataset] = {'lstm': asdict(hp), 'search': search}
    ordered = {k: doc[k] for k in DATASETS if k in doc}
    ordered.update({k: v for k, v in doc.items() if k not in ordered})
    p.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, width=99)
    write_text(p, HEADER + text)
    return p


def with_overrides(hp: LstmHparams, **kw) -> LstmHparams:
    """A copy with the given fields replaced (validated)."""
    return replace(hp, **kw).validate()
