"""Offline training of the stateful LSTM: truncated BPTT over trajectory segments.

Model, data and training apart (as in minGPT): :mod:`.lstm` is the network, this module turns
trajectories into batches and runs the optimiser, :mod:`.checkpoint` writes the result.

Batches. Each trajectory is cut into segments of ``segment`` samples (a random offset per epoch,
so boundaries move); never across trajectory boundaries. ``batch`` segments run side by side,
in windows of ``window`` samples: the LSTM state is carried from one window to the next of the
same segment and detached in between (truncated back-propagation through time), so the model
learns to use long-lived state while each update costs O(window). Every segment starts from the
zero state, as a trajectory does in evaluation; the first ``burn_in`` samples of a segment are
left out of the loss, as the state is not yet informative there.

The loss is the MSE of normalised torques (each joint weighs the same, whatever its scale);
reported figures are in Nm^2 (the paper's eq. 3) and as normalised MSE (MSE / variance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
import logging
import math
import time
from typing import Callable, Optional, Sequence, TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits
import torch

from invdyn_ros.core.accel import AccelConfig, ensure_qdd
from invdyn_ros.core.fused_lstm import available as kernel_available, supports as kernel_supports
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer, sequence_inputs
from invdyn_ros.core.targets import check_target, DEFAULT_TARGET, NominalSpec, RESIDUAL_TARGETS
from invdyn_ros.core.trajectory import DataError, Trajectory

if TYPE_CHECKING:   # Pinocchio is imported only by those who train a residual target
    from invdyn_ros.core.nominal import NominalModel

_LOG = logging.getLogger(__name__)

OPTIMIZERS = ('adagrad', 'adam')
#: What runs the LSTM's recurrence in training (TrainConfig.kernel).
KERNELS = ('auto', 'torch', 'compiled')
#: How joints weigh in the training loss (TrainConfig.loss).
LOSSES = ('normalised', 'mse')
#: Fewest samples a trajectory must have to be used for training.
MIN_TRAJ_SAMPLES = 8


@dataclass
class TrainConfig:
    """Optimisation settings (architecture lives in :class:`LstmConfig`).

    Attributes:
        epochs: maximum passes over the training data.
        batch: segments trained side by side per update.
        window: truncated-BPTT window [samples].
        segment: samples per segment; state is carried across the windows of a segment.
        burn_in: samples at each segment start left out of the loss.
        lr: learning rate (Adagrad as in the paper, or Adam).
        optimizer: 'adagrad' or 'adam'.
        grad_clip: global gradient-norm clip (0: off).
        weight_decay: L2 penalty on the weights (Adagrad's weight_decay; decoupled, AdamW, for
            Adam); 0: off. Regularises the extrapolation to motions unlike the training ones.
        val_fraction: share of trajectories held out for validation / early stopping.
        patience: epochs without validation improvement before stopping (0: never stop early).
        seed: seeds numpy and torch, so a run is reproducible on the same machine.
        threads: torch CPU threads (set deliberately: 2 cores here, DDS needs one in operation).
        device: 'auto' (GPU when present), 'cpu' or 'cuda'.
        loss: 'normalised' (each joint's error over its torque standard deviation: every joint
            weighs the same, as normalised MSE scores it) or 'mse' (errors in Nm over one
            common scale: joints weigh by their torque, as plain MSE scores it).
        kernel: what runs the LSTM's recurrence: 'compiled' (the C training kernel,
            :mod:`~invdyn_ros.core.fused_lstm`: CPU and float32, where it was built), 'torch'
            (``nn.LSTM``) or 'auto' (the compiled kernel where it can run, else ``nn.LSTM``).
            The same model either way, to float32 rounding.
    """

    epochs: int = 40
    batch: int = 16
    window: int = 64
    segment: int = 512
    burn_in: int = 8
    lr: float = 0.05
    optimizer: str = 'adagrad'
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    patience: int = 6
    seed: int = 0
    threads: int = 2
    device: str = 'auto'
    loss: str = 'normalised'
    kernel: str = 'auto'

    def validate(self) -> 'TrainConfig':
        for name in ('epochs', 'batch', 'window', 'segment', 'threads'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f'{name} must be a positive integer, got {v!r}')
        for name in ('burn_in', 'patience', 'seed'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f'{name} must be a non-negative integer, got {v!r}')
        if self.burn_in >= self.segment:
            raise ValueError(f'burn_in ({self.burn_in}) must be < segment ({self.segment})')
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f'lr must be a positive number, got {self.lr!r}')
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f'grad_clip must be >= 0, got {self.grad_clip!r}')
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f'weight_decay must be >= 0, got {self.weight_decay!r}')
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f'val_fraction must be in [0, 1), got {self.val_fraction!r}')
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}')
        if self.loss not in LOSSES:
            raise ValueError(f'loss must be one of {LOSSES}, got {self.loss!r}')
        if self.kernel not in KERNELS:
            raise ValueError(f'kernel must be one of {KERNELS}, got {self.kernel!r}')
        if self.device not in ('auto', 'cpu', 'cuda'):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        return self


@dataclass
class Prepared:
    """One trajectory as model arrays: inputs x (T, 3d) and targets y (T, d) [Nm].

    ``y`` is what the model learns: the measured torque for target 'full', else the measured
    torque minus ``base``, the nominal term (T, d) [Nm] of the target (None for 'full'), so
    ``y + base`` is always the measured torque.
    """

    x: np.ndarray
    y: np.ndarray
    source: str
    base: Optional[np.ndarray] = None
    target: str = DEFAULT_TARGET

    def published(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(what a predictor publishes, what it is scored against) for model outputs
        ``pred`` (T, d) [Nm] (:data:`~invdyn_ros.core.targets.PUBLISHED`): 'residual_rbd'
        adds the nominal term back to both, so normalised scores are of the torque."""
        if self.target == 'residual_rbd' and self.base is not None:
            return pred + self.base, self.y + self.base
        return pred, self.y


def prepare(trajs: Sequence[Trajectory], joint_names: Sequence[str],
            accel: AccelConfig = AccelConfig(), prefer_recorded_qdd: bool = False,
            target: str = DEFAULT_TARGET, nominal: Optional['NominalModel'] = None
            ) -> list[Prepared]:
    """Select joints by name, estimate accelerations causally, stack model inputs, and form
    the ``target`` (a residual subtracts ``nominal`` evaluated on the same q, qd and the same
    acceleration estimate the model sees, as the predictor does online)."""
    check_target(target)
    if target in RESIDUAL_TARGETS and nominal is None:
        raise ValueError(f'target {target!r} needs a nominal model')
    if nominal is not None and tuple(nominal.joint_names) != tuple(joint_names):
        raise ValueError(f'nominal model joints {list(nominal.joint_names)} differ from '
                         f'{list(joint_names)}')
    out = []
    for tr in trajs:
        tr = tr.select(joint_names)
        if len(tr) < MIN_TRAJ_SAMPLES:
            _LOG.warning('%s: skipped, only %d samples', tr.source, len(tr))
            continue
        tr = ensure_qdd(tr, accel, prefer_recorded=prefer_recorded_qdd)
        x = sequence_inputs(tr.q, tr.qd, tr.qdd)
        if target in RESIDUAL_TARGETS:
            base = nominal.terms(target, tr.q, tr.qd, tr.qdd)
            out.append(Prepared(x, tr.tau - base, tr.source, base, target))
        else:
            out.append(Prepared(x, tr.tau, tr.source))
    if not out:
        raise DataError('', f'no trajectory with at least {MIN_TRAJ_SAMPLES} samples')
    return out


def split_by_trajectory(data: list[Prepared], val_fraction: float, rng: np.random.Generator
                        ) -> tuple[list[Prepared], list[Prepared]]:
    """Hold out whole trajectories; with a single trajectory, hold out its last part."""
    if val_fraction <= 0.0:
        return data, []
    if len(data) == 1:
        d = data[0]
        cut = int(len(d.x) * (1.0 - val_fraction))
        if cut < MIN_TRAJ_SAMPLES or len(d.x) - cut < MIN_TRAJ_SAMPLES:
            return data, []
        # replace(): the parts keep the nominal term and target, so a residual's validation
        # is scored on the published torque like a held-out trajectory's.
        base = d.base
        return ([replace(d, x=d.x[:cut], y=d.y[:cut], source=d.source + '[train part]',
                         base=None if base is None else base[:cut])],
                [replace(d, x=d.x[cut:], y=d.y[cut:], source=d.source + '[val part]',
                         base=None if base is None else base[cut:])])
    order = rng.permutation(len(data))
    n_val = max(1, int(round(len(data) * val_fraction)))
    return [data[i] for i in order[n_val:]], [data[i] for i in order[:n_val]]


def _segments(data: list[Prepared], cfg: TrainConfig, rng: np.random.Generator
              ) -> list[tuple[int, int, int]]:
    segs = []
    for i, d in enumerate(data):
        n = len(d.x)
        offset = int(rng.integers(0, min(cfg.segment, n)))
        starts = ([0] if offset > 0 else []) + list(range(offset, n, cfg.segment))
        for s in starts:
            e = offset if (s == 0 and offset > 0) else min(s + cfg.segment, n)
            if e - s > cfg.burn_in:
                segs.append((i, s, e))
    return segs


def clip_grad_norm(params: Sequence[torch.Tensor], max_norm: float) -> float:
    """Scale the gradients of ``params`` so that their global 2-norm is at most ``max_norm``;
    returns the norm before clipping.

    What ``torch.nn.utils.clip_grad_norm_`` does (the same 1e-6 guard) with a few tensor
    operations: for the paper-sized model its per-call bookkeeping cost more than the arithmetic
    (0.24 of 1.9 ms per update on this machine). Every parameter must have a gradient.
    FloatingPointError when the norm is not finite (the step would ruin the weights).
    """
    grads = [p.grad for p in params]
    flat = grads[0].reshape(-1) if len(grads) == 1 else torch.cat([g.reshape(-1) for g in grads])
    total = float(torch.linalg.vector_norm(flat))
    if not math.isfinite(total):
        raise FloatingPointError(f'gradient norm {total}')
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total


class FlatAdagrad:
    """``torch.optim.Adagrad``'s update (its defaults: no learning-rate decay, eps 1e-10, a
    zero initial accumulator; weight decay added to the gradient) on the one flat parameter of
    :func:`flatten_parameters`, without the optimiser framework's per-step bookkeeping
    (profiling hooks, step counters): 0.19 ms of a 1.6 ms update for the paper-sized model,
    against 0.03 ms for these four operations. Tests hold it to ``torch.optim.Adagrad``.
    Unlike torch it cannot tell a parameter that got no gradient (it steps on its zero
    gradient, weight decay included): every parameter of the LSTM model gets one."""

    EPS = 1e-10

    def __init__(self, flat: torch.nn.Parameter, lr: float, weight_decay: float = 0.0):
        self.flat, self.lr, self.weight_decay = flat, float(lr), float(weight_decay)
        self.state_sum = torch.zeros_like(flat.data)

    def step(self) -> None:
        p, g = self.flat.data, self.flat.grad
        if self.weight_decay:
            g.add_(p, alpha=self.weight_decay)   # the gradient is zeroed before the next one
        self.state_sum.addcmul_(g, g)
        p.addcdiv_(g, self.state_sum.sqrt().add_(self.EPS), value=-self.lr)


def flatten_parameters(model: torch.nn.Module) -> torch.nn.Parameter:
    """Make every parameter of ``model`` a view of one flat buffer and its gradient a view of
    another; returns that buffer as a Parameter whose ``grad`` is the gradient buffer.

    Autograd then accumulates every gradient in place into the one buffer (a parameter's
    ``grad`` is defined, so it is added to, not replaced; zero it with ``flat.grad.zero_()``,
    never set a ``grad`` to None), and an optimiser or a gradient clip given ``[flat]`` does one
    tensor's operations instead of one per parameter: for the paper-sized model their per-call
    costs outweighed the arithmetic (clip and Adagrad step 0.35 of 1.97 ms per update with six
    tensors, 0.08 ms with one). For the CPU: cuDNN keeps its own weight layout.
    """
    params = list(model.parameters())
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    k = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[k:k + n].view_as(p)
        p.grad = flat.grad[k:k + n].view_as(p)
        k += n
    return flat


def _diverged(what: str, epoch: int) -> FloatingPointError:
    """The error that stops a diverging training (``epoch`` counted from 0)."""
    return FloatingPointError(f'training diverged ({what}) in epoch {epoch + 1}; '
                              'try a smaller learning rate')


def resolve_kernel(cfg: TrainConfig, model: LstmInverseDynamics) -> bool:
    """Whether training runs the compiled LSTM kernel (``cfg.kernel``; see TrainConfig).
    ValueError when 'compiled' was asked for where it cannot run."""
    why_not = kernel_supports(model.lstm)
    if cfg.kernel == 'compiled' and why_not:
        raise ValueError(f'kernel compiled requested, but {why_not}')
    return cfg.kernel != 'torch' and why_not is None


def resolve_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda requested but no GPU is available')
    return torch.device(name)


@dataclass
class TrainResult:
    model: LstmInverseDynamics
    history: list[dict]
    best_epoch: int
    train_samples: int
    val_samples: int
    wall_s: float
    stopped: str


def predict_sequence(model: LstmInverseDynamics, x: np.ndarray,
                     device: Optional[torch.device] = None) -> np.ndarray:
    """Torques (T, d) [Nm] for one trajectory's inputs x (T, 3d), from the zero state."""
    device = device or model.head.weight.device
    with torch.no_grad():
        xt = torch.as_tensor(x, dtype=model.dtype, device=device)[None]
        tau, _ = model(xt)
    return tau[0].double().cpu().numpy()


def mse_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MSE [Nm^2] (the paper's eq. 3) and normalised MSE (MSE / variance), per joint and mean."""
    err = np.mean((y_pred - y_true) ** 2, axis=0)
    var = np.maximum(np.var(y_true, axis=0), 1e-12)
    return {'mse': float(err.mean()), 'nmse': float((err / var).mean()),
            'mse_per_joint': err.tolist(), 'nmse_per_joint': (err / var).tolist()}


def evaluate_sequences(model: LstmInverseDynamics, data: list[Prepared]) -> dict:
    """Scores of the published torque (:meth:`Prepared.published`) over trajectories, each
    run from the zero state with state carried throughout."""
    if not data:
        return {}
    pairs = [d.published(predict_sequence(model, d.x)) for d in data]
    return mse_scores(np.concatenate([y for _, y in pairs]), np.concatenate([p for p, _ in pairs]))


def train_lstm(trajs: Sequence[Trajectory], model_config: LstmConfig,
               cfg: TrainConfig = TrainConfig(), accel: AccelConfig = AccelConfig(),
               val_trajs: Optional[Sequence[Trajectory]] = None,
               progress: Optional[Callable[[dict], None]] = None,
               prefer_recorded_qdd: bool = False, target: str = DEFAULT_TARGET,
               nominal: Optional['NominalModel'] = None) -> TrainResult:
    """Train an LSTM inverse-dynamics model on ``trajs``.

    Args:
        trajs: training trajectories (any loader's output), joints selected by
            ``model_config.joint_names``.
        model_config: architecture and joints.
        cfg: optimisation settings.
        accel: acceleration-estimator settings (stored in the checkpoint; the predictor uses
            the same).
        val_trajs: explicit validation trajectories; default: ``cfg.val_fraction`` of trajs.
        progress: called after each epoch with that epoch's history entry.
        target: what the model learns (:data:`~invdyn_ros.core.targets.TARGETS`); a residual
            target learns the measured torque minus ``nominal``'s term. Validation scores are
            of the torque a predictor publishes (:meth:`Prepared.published`): for
            'residual_rbd' the nominal term is added back, so MSE and nMSE are the torque's.
        nominal: the nominal model of a residual target.

    Returns:
        The best model by validation MSE (the last one without validation data).
    """
    cfg.validate()
    # The compiled kernel's per-step BLAS products are small: one thread of scipy's OpenBLAS
    # (more would compete with torch's pool for the same cores), for this call only. The
    # kernel is loaded first: the limit reaches only the BLAS libraries loaded when it is set.
    if cfg.kernel != 'torch':
        kernel_available()
    with threadpool_limits(limits=1, user_api='blas'):
        return _train_lstm(trajs, model_config, cfg, accel, val_trajs, progress,
                           prefer_recorded_qdd, target, nominal)


def _train_lstm(trajs, model_config, cfg, accel, val_trajs, progress, prefer_recorded_qdd,
                target, nominal) -> TrainResult:
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    names = model_config.joint_names
    data = prepare(trajs, names, accel, prefer_recorded_qdd, target, nominal)
    if val_trajs is not None:
        train, val = data, prepare(val_trajs, names, accel, prefer_recorded_qdd, target,
                                   nominal)
    else:
        train, val = split_by_trajectory(data, cfg.val_fraction, rng)
    x_all = np.concatenate([d.x for d in train])
    y_all = np.concatenate([d.y for d in train])
    model = LstmInverseDynamics(model_config, Normalizer.from_data(x_all, y_all)).to(device)
    compiled = resolve_kernel(cfg, model)
    flat = flatten_parameters(model) if device.type == 'cpu' else None
    model_params = list(model.parameters())
    params = [flat] if flat is not None else model_params
    grad_views = [p.grad for p in model_params] if flat is not None else []
    # Fused optimisers: one kernel per step instead of one per parameter and operation (the
    # paper-sized model's update is dominated by such fixed costs, not by arithmetic).
    if cfg.optimizer == 'adagrad' and flat is not None:
        opt = FlatAdagrad(flat, cfg.lr, cfg.weight_decay)
    elif cfg.optimizer == 'adagrad':
        opt = torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    elif cfg.weight_decay > 0:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
    # Data normalised once, the loss taken on the network's normalised output: the error of
    # joint k in normalised units is (tau_k - y_k) / y_std_k, so each joint's squared error is
    # weighed by (y_std_k / scale)^2, scale being that joint's own standard deviation
    # ('normalised': weight 1) or one common scale ('mse'; see TrainConfig.loss).
    norm = model.normalizer
    if cfg.loss == 'normalised':
        joint_w = np.ones(model_config.output_dim)
    else:
        joint_w = norm.y_std ** 2 / np.mean(norm.y_std ** 2)
    joint_w_t = torch.as_tensor(joint_w, dtype=torch.float32, device=device)
    xs = [torch.as_tensor(norm.normalise_x(d.x), dtype=torch.float32) for d in train]
    ys = [torch.as_tensor(norm.normalise_y(d.y), dtype=torch.float32) for d in train]
    history: list[dict] = []
    best = (math.inf, -1, None)
    stopped = 'epochs'
    for epoch in range(cfg.epochs):
        model.train()
        segs = _segments(train, cfg, rng)
        order = rng.permutation(len(segs))
        loss_sum, loss_n = 0.0, 0
        for b0 in range(0, len(order), cfg.batch):
            chunk = [segs[k] for k in order[b0:b0 + cfg.batch]]
            lens = [e - s for _, s, e in chunk]
            L = max(lens)
            xb = torch.zeros(len(chunk), L, model_config.input_dim)
            yb = torch.zeros(len(chunk), L, model_config.output_dim)
            mask = torch.zeros(len(chunk), L, 1)
            for j, (i, s, e) in enumerate(chunk):
                xb[j, :e - s] = xs[i][s:e]
                yb[j, :e - s] = ys[i][s:e]
                mask[j, cfg.burn_in:e - s] = 1.0
            xb, yb = xb.to(device), yb.to(device)
            weight = (mask.to(device) * joint_w_t)   # (B, L, d): 0 outside the loss
            state = None
            for w0 in range(0, L, cfg.window):
                sl = slice(w0, w0 + cfg.window)
                out, state = model.forward_normalised(xb[:, sl], state, compiled)
                state = (state[0].detach(), state[1].detach())
                # Samples in the loss: those past the burn-in and inside their segment.
                n = model_config.output_dim * sum(
                    max(0, min(n_s, w0 + cfg.window) - max(cfg.burn_in, w0)) for n_s in lens)
                if n == 0:
                    continue
                loss = ((out - yb[:, sl]).square() * weight[:, sl]).sum() / n
                if flat is not None:   # in place: the parameters' grads are its views
                    flat.grad.zero_()
                else:   # what opt.zero_grad(set_to_none=True) does, less overhead
                    for p in params:
                        p.grad = None
                loss.backward()
                # Autograd adds into the flat buffer's views; were one replaced, the step would
                # see a zero gradient for it without a word (six identity checks, < 1 us).
                if flat is not None and any(
                        p.grad is not v for p, v in zip(model_params, grad_views)):
                    raise RuntimeError('a gradient left the flat buffer (set to None or '
                                       'replaced during training)')
                loss_value = loss.item()
                if not math.isfinite(loss_value):   # before the step: the weights stay good
                    raise _diverged(f'loss {loss_value}', epoch)
                if cfg.grad_clip > 0:
                    try:
                        clip_grad_norm(params, cfg.grad_clip)
                    except FloatingPointError as exc:   # before the step, as above
                        raise _diverged(str(exc), epoch) from None
                opt.step()
                loss_sum += loss_value * n
                loss_n += n
        model.eval()
        entry = {'epoch': epoch + 1, 'train_loss': loss_sum / max(loss_n, 1),
                 'wall_s': time.perf_counter() - t_start}
        if val:
            scores = evaluate_sequences(model, val)
            entry.update(val_mse=scores['mse'], val_nmse=scores['nmse'])
            score = scores['mse']
        else:
            score = entry['train_loss']
        history.append(entry)
        if progress:
            progress(entry)
        if score < best[0]:
            best = (score, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif cfg.patience and epoch - best[1] >= cfg.patience:
            stopped = f'early stop: no validation improvement for {cfg.patience} epochs'
            break
    model.load_state_dict(best[2])
    model.eval()
    for p in model.parameters():   # the returned model carries no gradient buffers
        p.grad = None
    return TrainResult(model=model.cpu(), history=history, best_epoch=best[1] + 1,
                       train_samples=int(sum(len(d.x) for d in train)),
                       val_samples=int(sum(len(d.x) for d in val)),
                       wall_s=time.perf_counter() - t_start, stopped=stopped)


def training_meta(result: TrainResult, cfg: TrainConfig, accel: AccelConfig,
                  sources: Sequence[str], target: str = DEFAULT_TARGET,
                  nominal_spec: Optional[NominalSpec] = None) -> dict:
    """Training metadata for the checkpoint (what data, how, and how well), with the target
    and, for a residual target, the nominal model's spec (so the file alone rebuilds it)."""
    last = result.history[result.best_epoch - 1] if result.history else {}
    return {**target_meta(target, nominal_spec),
            'train_config': asdict(cfg), 'accel_config': accel.to_dict(),
            'data_sources': list(sources), 'train_samples': result.train_samples,
            'val_samples': result.val_samples, 'best_epoch': result.best_epoch,
            'epochs_run': len(result.history), 'stopped': result.stopped,
            'wall_s': round(result.wall_s, 3),
            'val_mse': last.get('val_mse'), 'val_nmse': last.get('val_nmse')}


def target_meta(target: str, nominal_spec: Optional[NominalSpec]) -> dict:
    """Checkpoint metadata of a target: ``{'target': ...}`` plus ``'nominal'`` (the spec's
    JSON) for a residual target. ValueError when a residual target lacks its spec."""
    check_target(target)
    if target not in RESIDUAL_TARGETS:
        return {'target': target}
    if nominal_spec is None:
        raise ValueError(f'target {target!r} needs a nominal model spec')
    return {'target': target, 'nominal': nominal_spec.to_dict()}
