"""Online learning during operation: 128-sample batches, Adagrad, replay, gated publication.

The trainer node feeds every measured sample into :meth:`OnlineLearner.add_sample`; each time
``batch_size`` new consecutive samples have arrived, a window of ``context + batch_size``
samples becomes a training batch (the context only warms the LSTM state; the loss is on the
newest ``batch_size`` samples). :meth:`OnlineLearner.train_pending` runs one Adagrad update per
batch on the new window plus ``replay_batches`` random older windows, so learning one payload
does not erase another. After each update the linear output layer is refitted by recursive
least squares with forgetting on the LSTM's hidden state (``head_rls``): a linear fit settles
within a few hundred samples where gradient steps need many windows, and two windows in a row
with a jump in error (a payload change) make it forget the stale data at once. How far that
fit may move from the starting layer (its ridge) is chosen window by window by which choice
would have predicted the recent windows best before they were learned (``rls_ridge_decades``):
at 1 kHz after a payload change the fast fit wins; a well-trained model fed 100 Hz data keeps
most of its layer, where a free fit of 129 weights per joint to the last seconds of motion
extrapolated badly to the next. Every ``holdout_every``-th window is held back instead; a
candidate model is published only when it does not score worse than the model in operation on
the newest ``holdout_recent`` held-back windows (:meth:`OnlineLearner.candidate`): after a
payload change older held-back data is stale and would reject the adapted model. Held-back
windows come from the motions just learned, so that gate cannot see a model that fits them at
the cost of the next motion: each new window is therefore also predicted, before it is
learned, by the model in operation and by the starting model, and when the model in operation
did worse over the newest ``fallback_windows`` of them, the starting model is published again
and training restarts from it.

With ``adapt='payload'`` (a ``residual_rbd`` model) the network is kept as it is and what
adapts is the load at the flange: :class:`~invdyn_ros.core.payload.PayloadEstimator` fits 10
inertial parameters of the flange body to what the network misses, window by window; a
candidate is the same network with the nominal model carrying the estimated payload
(:attr:`OnlineLearner.published_spec`), published when it scores better than the payload in
operation on the newest held-back windows. A fit of the network to the motions seen since a
load change is local and extrapolates wrongly to other motions; the physical parameters hold
everywhere (see :mod:`invdyn_ros.core.payload`).

A diverging update (non-finite loss or weights) is discarded and the weights restored; the
published model never sees it. Windows with absurd values (non-finite, or beyond
MAX_NORMALISED standard deviations) are refused before they reach training, replay or
holdout. Inputs use the same causal acceleration filter as the predictor.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass
import math
import threading
import time
from typing import Any, Optional

import numpy as np
import torch

from invdyn_ros.core.accel import AccelConfig, AccelEstimator, AccelStatus
from invdyn_ros.core.change import ChangeDetector
from invdyn_ros.core.lstm import LstmInverseDynamics
from invdyn_ros.core.online import OnlinePredictor
from invdyn_ros.core.payload import N_PARAMS, PayloadConfig, PayloadEstimator
from invdyn_ros.core.targets import check_target, DEFAULT_TARGET, RESIDUAL_TARGETS


#: A window whose inputs or targets lie further than this many standard deviations (of the
#: model's normalisation) from the mean is refused: no robot produces it, and its squared
#: error could overflow the float32 loss.
MAX_NORMALISED = 1e6
#: What online learning can adapt: the network's weights, or the payload of the nominal model.
ADAPT = ('network', 'payload')


@dataclass
class OnlineConfig:
    """Online-learning settings (the trainer node fills them from its parameters)."""

    batch_size: int = 128
    context: int = 128
    learning_rate: float = 0.01
    replay_batches: int = 3
    replay_size: int = 200
    holdout_every: int = 5
    holdout_size: int = 20
    grad_clip: float = 1.0
    max_pending: int = 32
    seed: int = 0
    #: Score candidates on only the newest this many held-back windows (0: all of them): after
    #: a payload change older held-back data is stale and would reject the adapted model.
    holdout_recent: int = 4
    #: Refit the linear output layer after each update by exponentially weighted least squares
    #: on the LSTM's hidden state (recursive least squares with forgetting).
    head_rls: bool = True
    #: Per-sample forgetting factor of that fit (0.999: a memory of ~1000 samples).
    rls_forgetting: float = 0.999
    #: Ridge weight pulling the fitted output layer towards the starting one [-]; with
    #: ``rls_ridge_decades`` the smallest of the ridges to choose from.
    rls_ridge: float = 1.0
    #: Choose that ridge window by window among rls_ridge x 10^0 .. 10^k and the starting
    #: output layer itself (an infinite ridge): the one whose fit would have predicted the
    #: recent windows best, each scored before it was learned (0: always ``rls_ridge``).
    #: A well-trained model then keeps its layer where new data do not show it wrong; a cold
    #: start or a new payload still gets the fast fit.
    rls_ridge_decades: int = 4
    #: Per-window forgetting factor of those scores, in (0, 1] (0.9: about 10 windows) [-].
    rls_select_forgetting: float = 0.9
    #: Two windows in a row whose error exceeds this factor times the running mean error (a
    #: payload change, a new tool) make that fit forget everything before them (0: never).
    rls_jump_factor: float = 10.0
    #: 'network' (the weights, as above) or 'payload' (see the module docstring).
    adapt: str = 'network'
    #: adapt 'network': when the model in operation predicted each of the newest this many
    #: windows, before they were learned, worse in sum than the starting model did, the
    #: starting model is published again and training restarts from it (0: never).
    fallback_windows: int = 4
    payload: PayloadConfig = PayloadConfig()

    @classmethod
    def from_params(cls, p: Any, **overrides: Any) -> 'OnlineConfig':
        """From the trainer node's :class:`~invdyn_ros.core.params.TrainerParams` (the same
        settings wherever an online learner runs), ``overrides`` replacing fields."""
        names = ('batch_size', 'context', 'learning_rate', 'replay_batches', 'replay_size',
                 'holdout_every', 'holdout_size', 'holdout_recent', 'head_rls', 'rls_forgetting',
                 'rls_ridge', 'rls_ridge_decades', 'rls_select_forgetting', 'rls_jump_factor',
                 'adapt', 'fallback_windows')
        kw: dict[str, Any] = {n: getattr(p, n) for n in names}
        kw['payload'] = PayloadConfig(forgetting=p.payload_forgetting, ridge=p.payload_ridge,
                                      jump_factor=p.payload_jump_factor)
        kw.update(overrides)
        return cls(**kw)


@dataclass
class Window:
    """One training window: inputs x (n, 3d), torques y (n, d) [Nm]; loss on the last
    ``scored`` samples."""

    x: np.ndarray
    y: np.ndarray
    scored: int


class OnlineLearner:
    """See the module docstring. Thread-safe between one producer (add_sample) and one
    consumer (train_pending / candidate)."""

    def __init__(self, model: LstmInverseDynamics, accel: AccelConfig = AccelConfig(),
                 config: OnlineConfig = OnlineConfig(), target: str = DEFAULT_TARGET,
                 nominal: Optional[Any] = None) -> None:
        check_target(target)
        if target in RESIDUAL_TARGETS and nominal is None:
            raise ValueError(f'target {target!r} needs its nominal model')
        if config.adapt not in ADAPT:
            raise ValueError(f'adapt must be one of {list(ADAPT)}, got {config.adapt!r}')
        if config.adapt == 'payload' and target != 'residual_rbd':
            raise ValueError(f"adapt 'payload' needs a 'residual_rbd' model (its nominal "
                             f"model carries the payload), this one learned {target!r}")
        # What the model learns: the measured torque minus the target's nominal term, on the
        # same acceleration estimate the inputs carry (as offline training does).
        self.target = target
        self._nominal = nominal if target in RESIDUAL_TARGETS else None
        self.config = config
        self.dof = model.config.dof
        self.model = copy.deepcopy(model).train()
        self._norm = model.normalizer
        self.published = copy.deepcopy(model).eval()
        self.model_version = 0
        self._opt = torch.optim.Adagrad(self.model.parameters(), lr=config.learning_rate)
        self._accel = AccelEstimator(self.dof, accel)
        n = config.context + config.batch_size
        self._x = collections.deque(maxlen=n)
        self._y = collections.deque(maxlen=n)
        self._since_batch = 0
        self._windows = 0
        self._pending: collections.deque = collections.deque()
        self._replay: collections.deque = collections.deque(maxlen=config.replay_size)
        self._holdout: collections.deque = collections.deque(maxlen=config.holdout_size)
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(config.seed)
        self.stats = collections.Counter()
        #: (new, old) normalised MSE behind the last publication decision, None before one.
        self.last_scores: Optional[tuple[float, float]] = None
        #: The nominal model's spec in operation (a payload estimate changes it).
        self.published_spec = nominal.spec if self._nominal is not None else None
        self._payload: Optional[PayloadEstimator] = None
        if config.adapt == 'payload':
            self._payload = PayloadEstimator(self._nominal, self._norm.y_std, config.payload)
            self._payload_base = np.array(nominal.spec.payload or np.zeros(N_PARAMS), dtype=float)
            self._payload_published = np.zeros(N_PARAMS)
        # Exponentially weighted least-squares statistics of the output layer (normalised
        # units): R = sum w phi phi^T, Z = sum w phi y^T over features phi = [h; 1].
        if config.head_rls:
            self._rls_prior = self._head_matrix(self.model)
            self._rls_r = np.zeros((len(self._rls_prior), len(self._rls_prior)))
            self._rls_z = np.zeros_like(self._rls_prior)
            self._rls_change = ChangeDetector(config.rls_jump_factor)
            k = config.rls_ridge_decades
            self._ridges = [config.rls_ridge * 10.0 ** i for i in range(k + 1)]
            if k > 0:
                self._ridges.append(math.inf)
            self._ridge_scores = np.zeros(len(self._ridges))
        #: The ridge the output-layer fit used last (inf: the starting layer kept).
        self.rls_ridge_in_use = config.rls_ridge
        # The fallback: the starting model, and how the model in operation and it predicted
        # the newest windows before they were learned (normalised MSE pairs).
        self._start: Optional[LstmInverseDynamics] = None
        if config.adapt == 'network' and config.fallback_windows > 0:
            self._start = copy.deepcopy(model).eval()
        self._fresh: collections.deque = collections.deque(maxlen=max(config.fallback_windows, 1))

    # --- producer side (callback) ----------------------------------------------------------
    def add_sample(self, t: float, q: np.ndarray, qd: np.ndarray, tau: np.ndarray) -> bool:
        """One measured sample (t [s], q [rad], qd [rad/s], tau [Nm], each (d,)); for a
        residual target the nominal term is subtracted here.

        Returns True when it completed a window (queued for training or held back).
        """
        qdd, status = self._accel.update(t, q, qd)
        if status is AccelStatus.DUPLICATE:
            self.stats['duplicate'] += 1
            return False
        if status is AccelStatus.RESET:
            # A new sequence: never build a window across a gap or time jump.
            self._x.clear()
            self._y.clear()
            self._since_batch = 0
            self.stats['sequence_starts'] += 1
        self._x.append(np.concatenate((q, qd, qdd)))
        y = np.array(tau, dtype=np.float64)
        if self._nominal is not None:
            y -= self._nominal.term(self.target, q, qd, qdd)
        self._y.append(y)
        self._since_batch += 1
        cfg = self.config
        if self._since_batch < cfg.batch_size or len(self._x) < cfg.batch_size:
            return False
        self._since_batch = 0
        w = Window(np.array(self._x), np.array(self._y), cfg.batch_size)
        self._windows += 1
        if not self._sane(w):
            # A glitch that passes as a number (1e30 Nm) would make every update that draws
            # this window from the replay buffer diverge, and a held-back one would make every
            # candidate's score non-finite: such a window is never kept.
            self.stats['windows_refused'] += 1
            return False
        with self._lock:
            if self._windows % cfg.holdout_every == 0:
                self._holdout.append(w)
                self.stats['held_back'] += 1
            else:
                if len(self._pending) >= cfg.max_pending:
                    self._pending.popleft()
                    self.stats['dropped_behind'] += 1
                self._pending.append(w)
        return True

    def _sane(self, w: Window) -> bool:
        """Whether a window's inputs and targets are finite and within MAX_NORMALISED
        standard deviations of the model's normalisation (so the loss stays finite)."""
        norm = self._norm
        zx = (w.x - norm.x_mean) / norm.x_std
        zy = (w.y - norm.y_mean) / norm.y_std
        worst = max(float(np.max(np.abs(zx))), float(np.max(np.abs(zy))))
        return math.isfinite(worst) and worst < MAX_NORMALISED

    # --- consumer side (worker thread) -----------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _loss(self, model: LstmInverseDynamics, windows: list[Window]) -> torch.Tensor:
        """Mean normalised squared error over windows; windows of equal length (the usual
        case; a context is shorter only right after a sequence start) run as one batch."""
        by_len: dict[tuple[int, int], list[Window]] = {}
        for w in windows:
            by_len.setdefault((len(w.x), w.scored), []).append(w)
        total = 0.0
        for (_, scored), group in by_len.items():
            x = torch.as_tensor(np.stack([w.x for w in group]), dtype=model.dtype)
            y = torch.as_tensor(np.stack([w.y[-scored:] for w in group]), dtype=model.dtype)
            tau, _ = model(x)
            err = (tau[:, -scored:] - y) / model.y_std
            total = total + (err ** 2).mean(dim=(1, 2)).sum()
        return total / len(windows)

    def train_pending(self, max_updates: Optional[int] = None) -> int:
        """Run one update per pending window (at most ``max_updates``); returns how many ran."""
        done = 0
        while max_updates is None or done < max_updates:
            with self._lock:
                if not self._pending:
                    break
                w = self._pending.popleft()
            if self._payload is not None:
                # Payload adaptation: the network stays as it is; no replay needed.
                self._update_payload(w)
                done += 1
                continue
            with self._lock:
                k = min(self.config.replay_batches, len(self._replay))
                replay = [self._replay[i] for i in
                          self._rng.choice(len(self._replay), size=k, replace=False)] if k else []
                self._replay.append(w)
            if self._start is not None:
                self._score_fresh(w)
            if self._update([w] + replay) and self.config.head_rls:
                self._refit_head(w)
            done += 1
        return done

    def _score_fresh(self, w: Window) -> None:
        """How the model in operation and the starting model predict a window not yet
        learned (the evidence for :meth:`candidate`'s fallback)."""
        with torch.no_grad():
            pair = (float(self._loss(self.published, [w])), float(self._loss(self._start, [w])))
        if all(math.isfinite(v) for v in pair):
            self._fresh.append(pair)

    def _fallback_due(self) -> bool:
        """Whether the model in operation did worse than the starting model on each of the
        newest ``fallback_windows`` windows taken together, scored before they were learned.
        (While the starting model is in operation both scores are equal: never due.)"""
        n = self.config.fallback_windows
        if self._start is None or len(self._fresh) < n:
            return False
        return sum(a for a, _ in self._fresh) > sum(b for _, b in self._fresh)

    def _fall_back(self) -> LstmInverseDynamics:
        """Publish the starting model again and restart training from it: what the learner
        made of the recent motions generalised worse than what it started from."""
        n = len(self._fresh)
        # (new, old) as for a gated candidate: the starting model's and the replaced model's
        # mean normalised MSE on the fresh windows.
        self.last_scores = (sum(b for _, b in self._fresh) / n,
                            sum(a for a, _ in self._fresh) / n)
        self.published = copy.deepcopy(self._start).eval()
        with torch.no_grad():
            for p, p0 in zip(self.model.parameters(), self._start.parameters()):
                p.copy_(p0)
        if self.config.head_rls:
            self._rls_r[:] = 0.0
            self._rls_z[:] = 0.0
        self._fresh.clear()
        self.model_version += 1
        self.stats['published'] += 1
        self.stats['fallbacks'] += 1
        return self.published

    @staticmethod
    def _head_matrix(model: LstmInverseDynamics) -> np.ndarray:
        """The output layer as one (hidden + 1, d) float64 matrix [weight^T; bias]."""
        return np.vstack((model.head.weight.detach().double().numpy().T,
                          model.head.bias.detach().double().numpy()[None]))

    def _refit_head(self, w: Window) -> None:
        """Recursive least squares with forgetting on the output layer: the window's scored
        samples enter the weighted statistics (older ones decayed by ``rls_forgetting`` per
        sample) and the layer becomes their ridge solution. A linear fit converges within a few
        hundred samples, where gradient steps on the whole net need many windows. Nothing is
        changed when the solution is not finite."""
        cfg = self.config
        model = self.model
        with torch.no_grad():
            x = torch.as_tensor(w.x[None], dtype=model.dtype)
            hidden, _ = model.lstm((x - model.x_mean) / model.x_std)
        phi = hidden[0, -w.scored:].double().numpy()
        phi = np.hstack((phi, np.ones((len(phi), 1))))
        norm = self._norm
        y = (w.y[-w.scored:] - norm.y_mean) / norm.y_std
        decay = cfg.rls_forgetting ** w.scored
        r_old, z_old = self._rls_r, self._rls_z
        r_win, z_win = phi.T @ phi, phi.T @ y
        # The output layer's error on the new window (before it is fitted): a jump well above
        # its running mean means the dynamics changed, and the old statistics are stale.
        err = float(np.mean((phi @ self._head_matrix(model) - y) ** 2))
        if not math.isfinite(err):
            self.stats['rls_discarded'] += 1
            return
        ridge_now = self._select_ridge(phi, y, decay * r_old, decay * z_old)
        # Right after a sequence start the LSTM state is still warming up: a large error
        # there says nothing about the dynamics, so it neither resets nor counts.
        restart = self._rls_change.observe(
            err, (r_win, z_win), warm=len(w.x) >= cfg.context + cfg.batch_size)
        if restart is not None:
            # Two windows in a row: the dynamics changed. Keep only these two windows.
            r_old, z_old = restart
            self.stats['rls_resets'] += 1
        r = decay * r_old + r_win
        z = decay * z_old + z_win
        head = self._ridge_solution(r, z, ridge_now)
        if head is None or not np.all(np.isfinite(r)):
            self.stats['rls_discarded'] += 1
            return
        self._rls_r, self._rls_z = r, z
        self.rls_ridge_in_use = ridge_now
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(head[:-1].T, dtype=model.dtype))
            model.head.bias.copy_(torch.as_tensor(head[-1], dtype=model.dtype))
        self.stats['rls_updates'] += 1

    def _ridge_solution(self, r: np.ndarray, z: np.ndarray, ridge: float
                        ) -> Optional[np.ndarray]:
        """The output layer (hidden + 1, d) fitting statistics (r, z) with ``ridge`` towards
        the starting layer (inf: the starting layer); None when not finite."""
        if math.isinf(ridge):
            return self._rls_prior.copy()
        try:
            head = np.linalg.solve(r + ridge * np.eye(len(r)), z + ridge * self._rls_prior)
        except np.linalg.LinAlgError:
            return None
        return head if np.all(np.isfinite(head)) else None

    def _select_ridge(self, phi: np.ndarray, y: np.ndarray, r: np.ndarray, z: np.ndarray
                      ) -> float:
        """Score each candidate ridge's fit of the statistics so far (r, z: before this
        window) on this window's features phi (n, hidden + 1) and normalised targets y (n, d),
        add to its forgetting sum, and return the ridge with the lowest sum: a prequential
        choice, each score made before its window is learned."""
        if len(self._ridges) == 1:
            return self._ridges[0]
        scores = np.full(len(self._ridges), np.inf)
        for i, ridge in enumerate(self._ridges):
            head = self._ridge_solution(r, z, ridge)
            if head is not None:
                scores[i] = np.mean((phi @ head - y) ** 2)
        if np.all(np.isfinite(scores)):
            self._ridge_scores = self.config.rls_select_forgetting * self._ridge_scores + scores
        return self._ridges[int(np.argmin(self._ridge_scores))]

    def _snapshot(self) -> list[tuple[torch.Tensor, dict]]:
        """Copies of every parameter and its optimizer state (Adagrad's sum and step), to
        undo a step. Tensor clones only: a deepcopy of the optimizer's state_dict took 1.7 ms
        of a 7 ms update."""
        return [(p.detach().clone(), {k: v.clone() if torch.is_tensor(v) else v
                                      for k, v in self._opt.state[p].items()})
                for p in self.model.parameters()]

    def _restore(self, snapshot: list[tuple[torch.Tensor, dict]]) -> None:
        """Undo a step: parameters and optimizer state as :meth:`_snapshot` took them."""
        with torch.no_grad():
            for p, (value, state) in zip(self.model.parameters(), snapshot):
                p.copy_(value)
                self._opt.state[p] = state

    def _update(self, windows: list[Window]) -> bool:
        """One Adagrad step; False when it diverged and was discarded."""
        snapshot = self._snapshot()
        loss = self._loss(self.model, windows)
        if not torch.isfinite(loss):
            self.stats['diverged_discarded'] += 1
            return False
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if not torch.isfinite(norm):
            self.stats['diverged_discarded'] += 1
            self._opt.zero_grad(set_to_none=True)
            return False
        self._opt.step()
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self._restore(snapshot)
            self.stats['diverged_discarded'] += 1
            return False
        self.stats['updates'] += 1
        self.last_loss = float(loss.item())
        return True

    def _missed(self, w: Window) -> tuple[np.ndarray, np.ndarray]:
        """(x, missed) of a window's scored samples: inputs (n, 3d) and target minus the
        network's prediction (n, d) [Nm]."""
        model = self.published            # in eval mode; the same weights as self.model here
        with torch.no_grad():
            tau, _ = model(torch.as_tensor(w.x[None], dtype=model.dtype))
        return w.x[-w.scored:], w.y[-w.scored:] - tau[0, -w.scored:].double().numpy()

    def _update_payload(self, w: Window) -> None:
        x, missed = self._missed(w)
        warm = len(w.x) >= self.config.context + self.config.batch_size
        if self._payload.update(x, missed, warm=warm):
            self.stats['payload_resets'] += 1
        self.stats['payload_updates'] += 1

    @property
    def payload_estimate(self) -> Optional[np.ndarray]:
        """The payload being fitted (change of the 10 dynamic parameters), or None."""
        return None if self._payload is None else self._payload.params.copy()

    def _payload_candidate(self) -> Optional[LstmInverseDynamics]:
        """The network in operation with the nominal model carrying the new payload estimate,
        when that scores better than the payload in operation on the newest held-back
        windows."""
        from invdyn_ros.core.nominal import with_payload
        windows = self._scoring_windows()
        if self._payload.updates == 0 or not windows:
            return None
        new_p = self._payload.params.copy()
        std = self._norm.y_std
        new = old = 0.0
        for w in windows:
            x, missed = self._missed(w)
            y = self._payload.regressor(x)
            new += float(np.mean(((missed - y @ new_p) / std) ** 2))
            old += float(np.mean(((missed - y @ self._payload_published) / std) ** 2))
        new, old = new / len(windows), old / len(windows)
        self.last_scores = (new, old)
        if not math.isfinite(new) or new >= old:
            self.stats['candidates_rejected'] += 1
            return None
        try:
            spec = with_payload(self.published_spec, self._payload_base + new_p,
                                self._nominal.payload_joint)
        except ValueError:
            # Not a body (e.g. a mass below zero while the fit settles): keep the one in use.
            self.stats['payload_invalid'] += 1
            return None
        self.published_spec = spec
        self._payload_published = new_p
        self.model_version += 1
        self.stats['published'] += 1
        return self.published

    def _scoring_windows(self) -> list[Window]:
        """The held-back windows candidates are scored on (the newest ``holdout_recent``)."""
        with self._lock:
            windows = list(self._holdout)
        if self.config.holdout_recent > 0:
            windows = windows[-self.config.holdout_recent:]
        return windows

    def holdout_score(self, model: LstmInverseDynamics) -> Optional[float]:
        """Normalised MSE of ``model`` on the held-back windows (None when there are none)."""
        windows = self._scoring_windows()
        if not windows:
            return None
        was_training = model.training
        model.eval()
        with torch.no_grad():
            score = float(self._loss(model, windows).item())
        model.train(was_training)
        return score

    def candidate(self) -> Optional[LstmInverseDynamics]:
        """The training model as a new published model if it scores no worse than the one in
        operation on held-back data; else None. Bumps ``model_version`` on acceptance.
        With ``adapt='payload'`` the network is the one in operation and
        :attr:`published_spec` carries the new payload."""
        if self._payload is not None:
            return self._payload_candidate()
        if self._fallback_due():
            return self._fall_back()
        if self.stats['updates'] == 0:
            return None
        new = self.holdout_score(self.model)
        old = self.holdout_score(self.published)
        if new is None or old is None or not np.isfinite(new):
            return None
        self.last_scores = (new, old)
        if new > old:
            self.stats['candidates_rejected'] += 1
            return None
        self.published = copy.deepcopy(self.model).eval()
        self.model_version += 1
        self.stats['published'] += 1
        return self.published


@dataclass
class PrequentialResult:
    """What :func:`prequential` measured on one stream."""

    #: The torque in operation for each sample [Nm] (T, d), predicted before that sample's
    #: torque was learned; NaN where the predictor refused the sample.
    tau: np.ndarray
    #: Online updates run and models published (swapped into the predictor).
    updates: int
    published: int
    #: Wall time of each :meth:`OnlineLearner.train_pending` call that ran an update [s].
    update_s: list


def prequential(model: LstmInverseDynamics, t: np.ndarray, q: np.ndarray, qd: np.ndarray,
                tau: np.ndarray, publish_every: int, accel: AccelConfig = AccelConfig(),
                config: OnlineConfig = OnlineConfig(), target: str = DEFAULT_TARGET,
                nominal: Optional[Any] = None,
                torque_limits: Optional[Any] = None) -> PrequentialResult:
    """Predict, then learn: a recorded stream run through the predictor and the online
    learner as the two nodes run beside a robot.

    Each sample k is first predicted by the model in operation (an
    :class:`~invdyn_ros.core.online.OnlinePredictor`, state carried, the causal acceleration
    estimate) and only then handed to the learner with its measured torque; every
    ``publish_every`` samples the learner's candidate, if it passes its gate, is swapped into
    the predictor (keeping the LSTM state), as the trainer node publishes and the predictor
    loads new weights. So no prediction has seen its own torque or any later one: the score of
    ``tau`` is what a controller would have received while the model learned during
    operation. Updates run as soon as their window is complete (the trainer node runs them in a
    worker thread, within the window's duration on this machine: ``invdyn bench``).

    Args:
        model: the starting model (not modified).
        t: stamps [s] (T,), increasing; q [rad], qd [rad/s], tau [Nm]: (T, d), the model's
            joint order.
        publish_every: samples between publication checks (>= 1); the trainer node's
            ``publish_period_s`` times the sample rate.
        accel, config, target, nominal: as for :class:`OnlineLearner` (the predictor uses the
            same acceleration settings and nominal model).
        torque_limits: the predictor's per-joint clamp [Nm] (d,), or None.
    """
    t = np.asarray(t, dtype=np.float64)
    q, qd, tau = (np.asarray(a, dtype=np.float64) for a in (q, qd, tau))
    n, d = len(t), model.config.dof
    if t.shape != (n,) or any(a.shape != (n, d) for a in (q, qd, tau)):
        raise ValueError(f'expected t (T,) and q, qd, tau (T, {d}), got {t.shape}, '
                         f'{q.shape}, {qd.shape}, {tau.shape}')
    if int(publish_every) < 1:
        raise ValueError(f'publish_every must be >= 1, got {publish_every}')
    predictor = OnlinePredictor(model, accel, torque_limits, target=target, nominal=nominal)
    learner = OnlineLearner(model, accel, config, target=target, nominal=nominal)
    out = np.full((n, d), np.nan)
    update_s = []
    published = 0
    for k in range(n):
        r = predictor.update(float(t[k]), q[k], qd[k])
        if r.tau is not None:
            out[k] = r.tau
        published += learn_step(learner, predictor, k, float(t[k]), q[k], qd[k], tau[k],
                                publish_every, update_s)
    return PrequentialResult(out, int(learner.stats['updates'] + learner.stats['payload_updates']),
                             published, update_s)


def prequential_trajectories(model: LstmInverseDynamics, trajs: Any, params: Any,
                             accel: AccelConfig = AccelConfig(), target: str = DEFAULT_TARGET,
                             nominal: Optional[Any] = None, seed: int = 0
                             ) -> list[PrequentialResult]:
    """:func:`prequential` over each trajectory (``Trajectory``-like: ``select``, ``times``,
    ``rate_hz``, ``q``, ``qd``, ``tau``), each starting again from ``model``, with the trainer
    node's settings ``params`` (a :class:`~invdyn_ros.core.params.TrainerParams`; the
    learner's ``seed``): a publication check every ``publish_period_s`` at the trajectory's
    sample rate, as the trainer node publishes on its timer."""
    cfg = OnlineConfig.from_params(params, seed=seed)
    out = []
    for tr in trajs:
        tr = tr.select(model.config.joint_names)
        every = max(1, int(round(params.publish_period_s * tr.rate_hz)))
        out.append(prequential(model, tr.times(), tr.q, tr.qd, tr.tau, every, accel, cfg,
                               target, nominal))
    return out


def learn_step(learner: OnlineLearner, predictor: OnlinePredictor, k: int, t: float,
               q: np.ndarray, qd: np.ndarray, tau: np.ndarray, publish_every: int,
               update_s: list) -> bool:
    """Sample ``k`` (stamp t [s], q [rad], qd [rad/s], tau [Nm], each (d,)) into ``learner``,
    the update it completes run at once (its wall time appended to ``update_s`` [s]), and
    every ``publish_every`` samples a candidate that passes the gate swapped into
    ``predictor``, as the trainer node publishes and the predictor loads it. Returns whether a
    model was swapped in."""
    if learner.add_sample(t, q, qd, tau):
        t0 = time.perf_counter()
        if learner.train_pending():
            update_s.append(time.perf_counter() - t0)
    if k == 0 or k % publish_every:
        return False
    cand = learner.candidate()
    if cand is None:
        return False
    new_nominal = None
    if learner.config.adapt == 'payload':
        # The same network on a nominal model carrying the new payload (the predictor node
        # rebuilds it the same way).
        from invdyn_ros.core.nominal import NominalModel
        new_nominal = NominalModel(learner.published_spec)
    predictor.swap_model(cand, nominal=new_nominal)
    return True
