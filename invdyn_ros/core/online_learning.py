"""Online learning during operation: 128-sample batches, Adagrad, replay, gated publication.

The trainer node feeds every measured sample into :meth:`OnlineLearner.add_sample`; each time
``batch_size`` new consecutive samples have arrived, a window of ``context + batch_size``
samples becomes a training batch (the context only warms the LSTM state; the loss is on the
newest ``batch_size`` samples). :meth:`OnlineLearner.train_pending` runs one Adagrad update per
batch on the new window plus ``replay_batches`` random older windows, so learning one payload
does not erase another. Every ``holdout_every``-th window is held back instead; a candidate
model is published only when it does not score worse on the held-back recent data than the
model in operation (:meth:`OnlineLearner.candidate`).

A diverging update (non-finite loss or weights) is discarded and the weights restored; the
published model never sees it. Inputs use the same causal acceleration filter as the predictor.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass
import threading
from typing import Optional

import numpy as np
import torch

from invdyn_ros.core.accel import AccelConfig, AccelEstimator, AccelStatus
from invdyn_ros.core.lstm import LstmInverseDynamics


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
                 config: OnlineConfig = OnlineConfig()) -> None:
        self.config = config
        self.dof = model.config.dof
        self.model = copy.deepcopy(model).train()
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

    # --- producer side (callback) ----------------------------------------------------------
    def add_sample(self, t: float, q: np.ndarray, qd: np.ndarray, tau: np.ndarray) -> bool:
        """One measured sample (t [s], q [rad], qd [rad/s], tau [Nm], each (d,)).

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
        self._y.append(np.array(tau, dtype=np.float64))
        self._since_batch += 1
        cfg = self.config
        if self._since_batch < cfg.batch_size or len(self._x) < cfg.batch_size:
            return False
        self._since_batch = 0
        w = Window(np.array(self._x), np.array(self._y), cfg.batch_size)
        self._windows += 1
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
                k = min(self.config.replay_batches, len(self._replay))
                replay = [self._replay[i] for i in
                          self._rng.choice(len(self._replay), size=k, replace=False)] if k else []
                self._replay.append(w)
            self._update([w] + replay)
            done += 1
        return done

    def _update(self, windows: list[Window]) -> None:
        snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_snapshot = copy.deepcopy(self._opt.state_dict())
        loss = self._loss(self.model, windows)
        if not torch.isfinite(loss):
            self.stats['diverged_discarded'] += 1
            return
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if not torch.isfinite(norm):
            self.stats['diverged_discarded'] += 1
            self._opt.zero_grad(set_to_none=True)
            return
        self._opt.step()
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self.model.load_state_dict(snapshot)
            self._opt.load_state_dict(opt_snapshot)
            self.stats['diverged_discarded'] += 1
            return
        self.stats['updates'] += 1
        self.last_loss = float(loss.item())

    def holdout_score(self, model: LstmInverseDynamics) -> Optional[float]:
        """Normalised MSE of ``model`` on the held-back windows (None when there are none)."""
        with self._lock:
            windows = list(self._holdout)
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
        operation on held-back data; else None. Bumps ``model_version`` on acceptance."""
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
