"""Gaussian-process inverse-dynamics baseline tau = f(q, qd, qdd), for comparison with the LSTM.

Rueckert et al. (2017) compare their LSTM with GP regression; this module is that baseline, fed
through the same code paths as the LSTM: :func:`train_gp` takes the same trajectories and runs
them through :func:`invdyn_ros.core.training.prepare`, so the GP sees exactly the LSTM's inputs
``x = [q_1..q_d, qd_1..qd_d, qdd_1..qdd_d]`` (3d,) [rad, rad/s, rad/s^2] (accelerations from the
same causal estimator) and predicts the same ``tau`` (d,) [Nm]; it is saved in the same
checkpoint format (kind ``'gp'``, see :mod:`invdyn_ros.core.checkpoint`).

Model. One independent GP per joint, all d of them in one GPyTorch model through a batch
dimension (``batch_shape = (d,)``): per joint a constant mean, a scaled Matern-5/2 kernel with
one length scale per input (ARD) and Gaussian noise, each with its own hyperparameters. Inputs
and torques are normalised with the LSTM's :class:`~invdyn_ros.core.lstm.Normalizer` (stored in
the model), so the hyperparameters live in normalised units; everything the class returns is in
physical units.

* ``kind='exact'``: exact inference (Cholesky, never GPyTorch's conjugate-gradient
  approximations), hyperparameters by maximising the exact marginal log likelihood (L-BFGS by
  default, or Adam; full batch). Time O(d n^3) per step and memory O(d n^2): refused above
  ``max_exact_points`` unless ``subsample`` is set.
* ``kind='sparse'``: stochastic variational GP (Hensman et al. 2013): ``num_inducing`` inducing
  points per joint (initialised by k-means, or a random subset, of the inputs, then learned),
  whitened variational distribution in natural parameters, variational ELBO on minibatches:
  natural-gradient steps for q(u), Adam for the rest, hyperparameters warm-started from an
  exact GP on a subset. The joints are batch dimensions of one
  :class:`gpytorch.variational.VariationalStrategy` (not an
  ``IndependentMultitaskVariationalStrategy``): that keeps one Gaussian likelihood with a noise
  per joint, the same likelihood and prediction code as the exact model, and an ELBO per joint.
  Cost per step O(d (b m^2 + m^3)), independent of n, so the baseline has a number at 100k
  samples too.

Prediction. :meth:`GpInverseDynamics.predict` runs GPyTorch in chunks (batched, for evaluation);
:meth:`GpInverseDynamics.predict_one` is the per-sample path for a node running at a decimated
rate: plain numpy on caches made once after fitting or loading (for the exact GP the weights
alpha = (K + s^2 I)^-1 (y - c) and the Cholesky factor of K + s^2 I, so one prediction is one
kernel row per joint, a dot product and a triangular solve), equal to the GPyTorch prediction
to rounding. Both return the predictive standard deviation *including* the observation noise,
in Nm. ``threads`` sets torch's threads for fitting and :meth:`~GpInverseDynamics.predict`;
the numpy path uses whatever BLAS threads the process has (one is best for its small products).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
import math
import time
from typing import Iterator, Optional, Sequence

import gpytorch
import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.blas import dtrsv
import torch

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.lstm import DEFAULT_INPUT_KIND, ModelInterface, Normalizer
from invdyn_ros.core.training import prepare
from invdyn_ros.core.trajectory import Trajectory

GP_KINDS = ('exact', 'sparse')
INDUCING_INITS = ('kmeans', 'random')
DEFAULT_NUM_INDUCING = 500
#: Largest training set exact inference accepts. The fit keeps ~10 (d, n, n) float64 arrays
#: for back-propagation through the kernel (measured: 2.7 GB peak at d=5, n=2000; ~20 GB at
#: d=7, n=5000) and costs O(d n^3) per MLL evaluation (~10 s at d=5, n=2000 on one core of the
#: 2-core development machine, ~150 evaluations per fit): below this limit, plan with n^2 and
#: n^3 from those figures.
DEFAULT_MAX_EXACT_POINTS = 5000
OPTIMIZERS = ('auto', 'lbfgs', 'adam')
#: Defaults when ``training_iters`` is None: L-BFGS iterations (exact, each with a line search
#: of a few MLL evaluations; after LBFGS_ADAM_WARMUP Adam steps), Adam steps (exact),
#: minibatch steps (sparse).
DEFAULT_ITERS = {'lbfgs': 100, 'adam': 200, 'sparse': 1000}
#: Defaults when ``lr`` is None: L-BFGS's step scale (the line search does the rest), Adam's
#: learning rate for an exact GP, and for a sparse one (hyperparameters and inducing points
#: only, already warm-started; q(u) takes natural-gradient steps of :data:`NGD_LR`).
DEFAULT_LRS = {'lbfgs': 1.0, 'adam': 0.1, 'sparse': 0.01}
#: Natural-gradient step for the sparse GP's variational distribution (1.0 would be the exact
#: conjugate update for the full data; minibatches need a damped step).
NGD_LR = 0.1
#: L-BFGS stops when the gradient or the change of the loss (per sample, summed over joints)
#: falls below these.
LBFGS_TOL_GRAD = 1e-7
LBFGS_TOL_CHANGE = 1e-9
#: Adam steps (at Adam's default rate) before L-BFGS takes over; see _optimise_exact.
LBFGS_ADAM_WARMUP = 50
#: Sparse GP: the hyperparameters start from an exact GP fitted (L-BFGS, this many iterations)
#: on a random subset of ``warm_start_points`` samples; SVGP hyperparameters alone converge
#: slowly, as the noise first absorbs the misfit of a still-poor variational posterior.
WARM_START_ITERS = 50
DEFAULT_WARM_START_POINTS = 500
DEFAULT_BATCH_SIZE = 1024
#: Everything runs in float64: a GP's Cholesky factors lose too much in float32, and the
#: numpy fast path is checked against GPyTorch to 1e-6.
DTYPE = torch.float64
#: Matern smoothness: 5/2 gives twice-differentiable functions, as rigid-body dynamics are.
MATERN_NU = 2.5
#: Lower bound on the noise variance, in normalised torque units (std >= 0.1 % of the torque
#: std): GPyTorch's default 1e-4 would forbid the low noise of simulated data.
NOISE_FLOOR = 1e-6
#: Starting point of the hyperparameter search, in normalised units: smooth and noisy. Typical
#: squared distances between normalised samples are 2 D, so length scales of 2 sqrt(D) start
#: every input as weakly relevant (r^2 ~ 0.5), and a noise variance of 0.1 (32 % of the torque
#: std) leaves the rest to noise. Starting rougher (sqrt(D), 0.01) the search first shortens
#: length scales to interpolate, and some joints end with the noise stuck at NOISE_FLOOR.
INIT_LENGTHSCALE_FACTOR = 2.0
INIT_NOISE = 0.1
#: Jitter (added to the diagonal only when a Cholesky factorisation fails) for float64, grown
#: tenfold per retry, at most this many retries (GPyTorch's scheme; the numpy path copies it).
CHOLESKY_JITTER = 1e-8
CHOLESKY_MAX_TRIES = 3
#: Test points per GPyTorch call in :meth:`GpInverseDynamics.predict` (bounds the d x chunk x n
#: cross-covariance in memory: 7 x 2048 x 5000 x 8 B = 570 MB at the exact limit).
PREDICT_CHUNK = 2048
#: k-means for inducing points: Lloyd iterations, and the most points it looks at.
KMEANS_ITERS = 20
KMEANS_MAX_POINTS = 20000
DEFAULT_THREADS = 2


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass
class GpConfig(ModelInterface):
    """Interface and fitting settings of a GP inverse-dynamics baseline.

    Attributes:
        joint_names: the d joints whose q, qd, qdd are inputs and whose torques are outputs.
        rate_hz: sample rate [Hz] of the training data; the GP is static, but the acceleration
            estimate it is fed depends on the rate, so a predictor must run at the same one.
        input_kind: input layout, a key of :data:`~invdyn_ros.core.lstm.INPUT_KINDS`
            (``'q_qd_qdd'``: x = [q, qd, qdd], 3d inputs), as for the LSTM.
        kind: ``'exact'`` or ``'sparse'`` (SVGP).
        num_inducing: inducing points per joint (sparse).
        max_exact_points: most training samples an exact GP accepts.
        subsample: with more samples than ``max_exact_points``, fit an exact GP on a random
            subset of that many (seeded) instead of refusing.
        optimizer: ``'lbfgs'`` (exact only: full-batch quasi-Newton), ``'adam'``, or
            ``'auto'``: L-BFGS for exact, Adam for sparse (minibatches).
        training_iters: L-BFGS iterations or Adam steps (sparse: minibatch steps); None: the
            default of :data:`DEFAULT_ITERS` for the optimiser / kind.
        lr: step size (Adam's learning rate, L-BFGS's initial step); None: :data:`DEFAULT_LRS`.
        batch_size: minibatch size (sparse).
        inducing_init: ``'kmeans'`` or ``'random'`` (a random subset of the inputs).
        warm_start_points: sparse only: start the hyperparameters from an exact GP on a random
            subset of this many samples (0: from the fixed initial values).
        seed: seeds subsampling, k-means, minibatch order and torch.
        threads: torch CPU threads while fitting and predicting with GPyTorch (the caller's
            setting is restored afterwards).
    """

    joint_names: tuple[str, ...]
    rate_hz: float
    input_kind: str = DEFAULT_INPUT_KIND
    kind: str = 'exact'
    num_inducing: int = DEFAULT_NUM_INDUCING
    max_exact_points: int = DEFAULT_MAX_EXACT_POINTS
    subsample: bool = False
    optimizer: str = 'auto'
    training_iters: Optional[int] = None
    lr: Optional[float] = None
    batch_size: int = DEFAULT_BATCH_SIZE
    inducing_init: str = 'kmeans'
    warm_start_points: int = DEFAULT_WARM_START_POINTS
    seed: int = 0
    threads: int = DEFAULT_THREADS

    @property
    def resolved_optimizer(self) -> str:
        """'lbfgs' or 'adam': the optimiser ``fit`` uses."""
        if self.optimizer == 'auto':
            return 'lbfgs' if self.kind == 'exact' else 'adam'
        return self.optimizer

    @property
    def resolved_training_iters(self) -> int:
        if self.training_iters is not None:
            return int(self.training_iters)
        return DEFAULT_ITERS['sparse' if self.kind == 'sparse' else self.resolved_optimizer]

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return DEFAULT_LRS['sparse' if self.kind == 'sparse' else self.resolved_optimizer]

    def validate(self) -> 'GpConfig':
        """Raise ValueError naming the first unusable field; returns self."""
        self.validate_interface()
        if self.kind not in GP_KINDS:
            raise ValueError(f'kind must be one of {list(GP_KINDS)}, got {self.kind!r}')
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f'optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}')
        if self.kind == 'sparse' and self.optimizer == 'lbfgs':
            raise ValueError("optimizer 'lbfgs' needs the full-batch objective of an exact GP; "
                             "a sparse GP trains on minibatches with 'adam'")
        if self.inducing_init not in INDUCING_INITS:
            raise ValueError(
                f'inducing_init must be one of {list(INDUCING_INITS)}, got {self.inducing_init!r}')
        for name in ('num_inducing', 'max_exact_points', 'batch_size', 'threads'):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f'{name} must be a positive integer, got {v!r}')
        if self.training_iters is not None and (
                not _is_int(self.training_iters) or self.training_iters < 1):
            raise ValueError(
                f'training_iters must be a positive integer or None, got {self.training_iters!r}')
        for name in ('seed', 'warm_start_points'):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f'{name} must be a non-negative integer, got {v!r}')
        if not isinstance(self.subsample, bool):
            raise ValueError(f'subsample must be True or False, got {self.subsample!r}')
        if self.lr is not None and (
                isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                or not math.isfinite(self.lr) or self.lr <= 0.0):
            raise ValueError(f'lr must be a positive number or None, got {self.lr!r}')
        return self

    def settings(self) -> dict:
        """The fitting settings (everything but the interface), JSON-ready."""
        return {'kind': self.kind, 'num_inducing': int(self.num_inducing),
                'max_exact_points': int(self.max_exact_points), 'subsample': self.subsample,
                'optimizer': self.optimizer,
                'training_iters': None if self.training_iters is None
                else int(self.training_iters),
                'lr': None if self.lr is None else float(self.lr),
                'batch_size': int(self.batch_size), 'inducing_init': self.inducing_init,
                'warm_start_points': int(self.warm_start_points),
                'seed': int(self.seed), 'threads': int(self.threads)}


#: Keys of :meth:`GpConfig.settings` (the checkpoint's ``config`` object for kind 'gp').
SETTINGS_KEYS = frozenset({
    'kind', 'num_inducing', 'max_exact_points', 'subsample', 'optimizer', 'training_iters',
    'lr', 'batch_size', 'inducing_init', 'warm_start_points', 'seed', 'threads'})


# --------------------------------------------------------------------------------------------
# GPyTorch models


def _mean_and_kernel(d: int, input_dim: int
                     ) -> tuple[gpytorch.means.Mean, gpytorch.kernels.Kernel]:
    batch = torch.Size([d])
    mean = gpytorch.means.ConstantMean(batch_shape=batch)
    kernel = gpytorch.kernels.ScaleKernel(
        gpytorch.kernels.MaternKernel(nu=MATERN_NU, ard_num_dims=input_dim, batch_shape=batch),
        batch_shape=batch)
    return mean, kernel


class _ExactBatchGp(gpytorch.models.ExactGP):
    """d independent exact GPs: inputs (n, D) shared, targets (d, n), outputs batched (d, .)."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor,
                 likelihood: gpytorch.likelihoods.GaussianLikelihood) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.mean_module, self.covar_module = _mean_and_kernel(train_y.shape[0],
                                                               train_x.shape[-1])

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                         self.covar_module(x))


class _SparseBatchGp(gpytorch.models.ApproximateGP):
    """d independent SVGPs, each with its own m inducing points: inducing (d, m, D)."""

    def __init__(self, inducing: torch.Tensor) -> None:
        d, m, input_dim = inducing.shape
        # Natural parameters: natural-gradient steps on them converge in a few hundred
        # minibatches where Adam on a Cholesky parameterisation needs thousands.
        variational = gpytorch.variational.NaturalVariationalDistribution(
            m, batch_shape=torch.Size([d]))
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing, variational, learn_inducing_locations=True)
        super().__init__(strategy)
        self.mean_module, self.covar_module = _mean_and_kernel(d, input_dim)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                         self.covar_module(x))


def _likelihood(d: int) -> gpytorch.likelihoods.GaussianLikelihood:
    return gpytorch.likelihoods.GaussianLikelihood(
        batch_shape=torch.Size([d]),
        noise_constraint=gpytorch.constraints.GreaterThan(NOISE_FLOOR))


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, restoring the caller's setting afterwards."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


@contextmanager
def _gp_settings(max_points: int) -> Iterator[None]:
    """GPyTorch settings for every fit and prediction here.

    ``max_cholesky_size`` above the training size makes exact inference really exact (a
    Cholesky factorisation, not GPyTorch's default conjugate gradients beyond 800 points); the
    jitter is only added when a factorisation fails.
    """
    with gpytorch.settings.max_cholesky_size(int(max_points) + 1), \
            gpytorch.settings.cholesky_jitter(double_value=CHOLESKY_JITTER), \
            gpytorch.settings.cholesky_max_tries(CHOLESKY_MAX_TRIES):
        yield


def kmeans_centres(x: np.ndarray, k: int, rng: np.random.Generator,
                   iters: int = KMEANS_ITERS, max_points: int = KMEANS_MAX_POINTS
                   ) -> np.ndarray:
    """k cluster centres (k, D) of points x (n, D) by Lloyd's algorithm from a random subset.

    At most ``max_points`` points (a random subset) are clustered: inducing points only need
    to cover the input distribution, not to be optimal (they are learned afterwards).
    """
    x = np.asarray(x, dtype=np.float64)
    if k > len(x):
        raise ValueError(f'cannot pick {k} centres from {len(x)} points')
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    centres = x[rng.choice(len(x), k, replace=False)].copy()
    x_sq = np.sum(x * x, axis=1)
    for _ in range(iters):
        d2 = x_sq[:, None] - 2.0 * x @ centres.T + np.sum(centres * centres, axis=1)[None, :]
        label = np.argmin(d2, axis=1)
        counts = np.bincount(label, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, label, x)
        filled = counts > 0  # an empty cluster keeps its old centre
        new = centres.copy()
        new[filled] = sums[filled] / counts[filled, None]
        if np.allclose(new, centres):
            centres = new
            break
        centres = new
    return centres


# --------------------------------------------------------------------------------------------
# Numpy fast path


def _matern52(r: np.ndarray) -> np.ndarray:
    """Matern-5/2 correlation of scaled distances r (any shape)."""
    s5r = math.sqrt(5.0) * r
    return (1.0 + s5r + (5.0 / 3.0) * r * r) * np.exp(-s5r)


def _kernel(a: np.ndarray, b: np.ndarray, outputscale: np.ndarray) -> np.ndarray:
    """Per-joint scaled Matern-5/2 kernel between points already divided by the length scales:
    a (d, n, D), b (d, m, D), outputscale (d,) -> (d, n, m)."""
    r2 = (np.sum(a * a, axis=-1)[:, :, None] + np.sum(b * b, axis=-1)[:, None, :]
          - 2.0 * np.matmul(a, b.transpose(0, 2, 1)))
    np.maximum(r2, 0.0, out=r2)  # rounding can make tiny squared distances negative
    return _matern52(np.sqrt(r2)) * outputscale[:, None, None]


def _safe_cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of the SPD matrix a (n, n); adds growing jitter as GPyTorch does
    if the plain factorisation fails."""
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        pass
    jitter = CHOLESKY_JITTER
    for _ in range(CHOLESKY_MAX_TRIES):
        try:
            return np.linalg.cholesky(a + jitter * np.eye(len(a)))
        except np.linalg.LinAlgError:
            jitter *= 10.0
    raise np.linalg.LinAlgError('kernel matrix is not positive definite even with jitter')


class _NumpyPredictor:
    """Per-joint predictive mean and variance in numpy from caches made once.

    With z the normalised input, points P_j (training inputs for exact, inducing points for
    sparse; (n, D)) and k_j = s_j m52(|(P_j - z) / l_j|) (n,), v_j = L_j^-1 k_j:

    * exact: L_j L_j^T = K_j + noise_j I, alpha_j = (K_j + noise_j I)^-1 (y_j - c_j);
      mean_j = c_j + k_j . alpha_j, var_j = s_j - |v_j|^2 + noise_j.
    * sparse: L_j L_j^T = K_zz,j + jitter I, whitened q(u_w) = N(m_j, S_j);
      mean_j = c_j + v_j . m_j, var_j = s_j + jitter + v_j^T S_j v_j - |v_j|^2 + noise_j,
      term by term as GPyTorch's VariationalStrategy (the sum cancels to ~noise, so the order
      of operations matters for matching it).

    Everything in normalised units; the caller denormalises.
    """

    def __init__(self, points: np.ndarray, lengthscale: np.ndarray, outputscale: np.ndarray,
                 mean_const: np.ndarray, noise: np.ndarray, chol: np.ndarray,
                 alpha: Optional[np.ndarray] = None, m_w: Optional[np.ndarray] = None,
                 s_w: Optional[np.ndarray] = None, prior_jitter: float = 0.0,
                 min_variance: float = 0.0) -> None:
        # points (n, D) shared or (d, n, D); lengthscale (d, D); outputscale, mean_const,
        # noise (d,); chol (d, n, n); alpha, m_w (d, n); s_w (d, n, n).
        self.scaled = np.ascontiguousarray(points / lengthscale[:, None, :])   # (d, n, D)
        self.scaled_sq = np.sum(self.scaled ** 2, axis=-1)                      # (d, n)
        self.inv_ls = 1.0 / lengthscale                                          # (d, D)
        self.outputscale = outputscale
        self.mean_const = mean_const
        self.noise = noise
        self.chol = chol
        self.alpha = alpha
        self.m_w = m_w
        self.s_w = s_w
        self.prior_jitter = prior_jitter
        self.min_variance = min_variance

    def __call__(self, zn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised inputs zn (M, D) -> mean (d, M), variance incl. noise (d, M)."""
        zs = zn[None, :, :] * self.inv_ls[:, None, :]                           # (d, M, D)
        cross = np.matmul(self.scaled, zs.transpose(0, 2, 1))                   # (d, n, M)
        r2 = self.scaled_sq[:, :, None] + np.sum(zs * zs, axis=-1)[:, None, :] - 2.0 * cross
        np.maximum(r2, 0.0, out=r2)  # as in _kernel, with the points' norms cached
        k = _matern52(np.sqrt(r2)) * self.outputscale[:, None, None]            # (d, n, M)
        d, m = k.shape[0], k.shape[2]
        mean = np.empty((d, m))
        var_f = np.empty((d, m))
        for j in range(d):
            if m == 1:
                # One sample: BLAS trsv on L^T (the F-ordered view of C-ordered L, no copy)
                # skips solve_triangular's checks and copies; reading L is the whole cost.
                v = dtrsv(self.chol[j].T, k[j, :, 0], lower=0, trans=1)[:, None]
            else:
                v = solve_triangular(self.chol[j], k[j], lower=True, check_finite=False)
            vv = np.sum(v * v, axis=0)
            if self.alpha is not None:
                mean[j] = self.mean_const[j] + self.alpha[j] @ k[j]
                var_f[j] = self.outputscale[j] - vv
            else:
                mean[j] = self.mean_const[j] + self.m_w[j] @ v
                var_f[j] = (self.outputscale[j] + self.prior_jitter
                            + (np.sum(v * (self.s_w[j] @ v), axis=0) - vv))
        # GPyTorch clamps the latent variance before the likelihood adds the noise.
        var = np.maximum(var_f, self.min_variance) + self.noise[:, None]
        return mean, var


# --------------------------------------------------------------------------------------------
# The model


#: The kernel and mean hyperparameters, by GPyTorch name (the same in both model kinds).
_HYPERPARAMETERS = ('mean_module.raw_constant', 'covar_module.raw_outputscale',
                    'covar_module.base_kernel.raw_lengthscale')


def _init_hyperparameters(gp: gpytorch.models.GP,
                          likelihood: gpytorch.likelihoods.GaussianLikelihood,
                          input_dim: int) -> None:
    """Neutral starting values, in normalised units."""
    gp.covar_module.base_kernel.lengthscale = INIT_LENGTHSCALE_FACTOR * math.sqrt(input_dim)
    gp.covar_module.outputscale = 1.0     # normalised torques have unit variance
    likelihood.noise = INIT_NOISE


def _optimise_exact(gp: _ExactBatchGp, likelihood: gpytorch.likelihoods.GaussianLikelihood,
                    optimizer: str, iters: int, lr: float) -> tuple[list[float], np.ndarray]:
    """Maximise the exact marginal log likelihood of ``gp`` over its hyperparameters.

    Returns the loss (negative MLL per sample, summed over joints) at every evaluation and the
    final negative MLL per joint (d,).
    """
    gp.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, gp)
    xt, yt = gp.train_inputs[0], gp.train_targets
    history: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = -mll(gp(xt), yt).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f'GP fit diverged (loss {loss.item()}); try another optimizer or a lower lr')
        loss.backward()
        history.append(loss.item())
        return loss

    if optimizer == 'lbfgs':
        # Adam's bounded steps first: from the initial values, L-BFGS's first line searches
        # can throw a joint's noise into the flat region at its lower bound, where its gradient
        # vanishes and it stays (a worse optimum that interpolates the noise).
        opt = torch.optim.Adam(gp.parameters(), lr=DEFAULT_LRS['adam'])
        for _ in range(LBFGS_ADAM_WARMUP):
            opt.step(closure)
        # The exact MLL is deterministic and smooth: quasi-Newton with a strong-Wolfe line
        # search then gets in ~50 iterations where Adam needs hundreds.
        opt = torch.optim.LBFGS(gp.parameters(), lr=lr, max_iter=iters,
                                line_search_fn='strong_wolfe', tolerance_grad=LBFGS_TOL_GRAD,
                                tolerance_change=LBFGS_TOL_CHANGE)
        opt.step(closure)
    else:
        opt = torch.optim.Adam(gp.parameters(), lr=lr)
        for _ in range(iters):
            opt.step(closure)
    with torch.no_grad():
        final = -mll(gp(xt), yt)
    return history, final.numpy().copy()


class GpInverseDynamics(torch.nn.Module):
    """GP inverse-dynamics baseline: d independent GPs over x = [q, qd, qdd] (see module doc).

    Make one with a :class:`GpConfig`, then :meth:`fit`; or load one with
    :func:`invdyn_ros.core.checkpoint.load_checkpoint` (``expect_kind='gp'``).
    Parameters (:meth:`state_arrays`) are in normalised units and float64.
    """

    def __init__(self, config: GpConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self._normalizer: Optional[Normalizer] = None
        # Physical training data of an exact GP (the GP's 'weights'): x (n, 3d), y (n, d).
        self._train_x: Optional[np.ndarray] = None
        self._train_y: Optional[np.ndarray] = None
        self._fast: Optional[_NumpyPredictor] = None
        # Registered first, so its parameters are named 'likelihood.*' (the exact GP holds the
        # same module; named_parameters() lists each parameter once, under its first name).
        self.likelihood: Optional[gpytorch.likelihoods.GaussianLikelihood] = None
        self.gp: Optional[gpytorch.models.GP] = None

    # -- state ------------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self.gp is not None

    @property
    def normalizer(self) -> Normalizer:
        """The input/output normalisation (a copy)."""
        self._require_fitted()
        n = self._normalizer
        return Normalizer(n.x_mean, n.x_std, n.y_mean, n.y_std)

    @property
    def num_train(self) -> int:
        """Training samples held (exact) or used (sparse: 0, the data are not kept)."""
        return 0 if self._train_x is None else int(self._train_x.shape[0])

    def _require_fitted(self) -> None:
        if self.gp is None:
            raise RuntimeError('GP model is not fitted: call fit() or load a checkpoint')

    def _build(self, normalizer: Normalizer, train_x: Optional[np.ndarray] = None,
               train_y: Optional[np.ndarray] = None,
               inducing: Optional[np.ndarray] = None) -> None:
        """(Re)create the GPyTorch modules: exact from physical x (n, 3d), y (n, d); sparse from
        normalised inducing points (d, m, 3d)."""
        cfg = self.config
        if (normalizer.input_dim, normalizer.output_dim) != (cfg.input_dim, cfg.output_dim):
            raise ValueError(
                f'normalizer is for {normalizer.input_dim} inputs / {normalizer.output_dim} '
                f'outputs, the model has {cfg.input_dim} / {cfg.output_dim}')
        self._normalizer = normalizer
        self._fast = None
        likelihood = _likelihood(cfg.dof).to(DTYPE)
        if cfg.kind == 'exact':
            self._train_x, self._train_y = train_x, train_y
            xt = torch.as_tensor(normalizer.normalise_x(train_x), dtype=DTYPE)
            yt = torch.as_tensor(normalizer.normalise_y(train_y).T.copy(), dtype=DTYPE)
            gp = _ExactBatchGp(xt, yt, likelihood).to(DTYPE)
        else:
            self._train_x = self._train_y = None
            gp = _SparseBatchGp(torch.as_tensor(inducing, dtype=DTYPE)).to(DTYPE)
        self.likelihood = likelihood
        self.gp = gp

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything besides config and normalisation that rebuilds the model, float64.

        The GPyTorch parameters by name (raw, i.e. unconstrained, values: they round-trip
        exactly), plus for an exact GP its training data ``train_x`` (n, 3d) and ``train_y``
        (n, d) in physical units.
        """
        self._require_fitted()
        arrays = {name: p.detach().cpu().numpy().copy() for name, p in self.named_parameters()}
        if self.config.kind == 'exact':
            arrays['train_x'] = self._train_x.copy()
            arrays['train_y'] = self._train_y.copy()
        return arrays

    @classmethod
    def from_state(cls, config: GpConfig, normalizer: Normalizer,
                   arrays: dict[str, np.ndarray]) -> 'GpInverseDynamics':
        """Rebuild a fitted model from :meth:`state_arrays` output; ValueError naming the first
        array that is missing, extra, misshapen, not float64 or not finite."""
        config.validate()
        normalizer.validate()
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray) or a.dtype != np.float64:
                raise ValueError(f'array {name} must be float64, got {getattr(a, "dtype", a)}')
            if not np.all(np.isfinite(a)):
                raise ValueError(f'array {name} has NaN/inf values')
        model = cls(config)
        d, input_dim = config.dof, config.input_dim
        if config.kind == 'exact':
            for name, cols in (('train_x', input_dim), ('train_y', d)):
                a = arrays.get(name)
                if a is None or a.ndim != 2 or a.shape[1] != cols or a.shape[0] < 1:
                    raise ValueError(
                        f'{name} must have shape (n, {cols}), got '
                        f'{None if a is None else a.shape}')
            if arrays['train_x'].shape[0] != arrays['train_y'].shape[0]:
                raise ValueError(
                    f'train_x has {arrays["train_x"].shape[0]} rows, train_y '
                    f'{arrays["train_y"].shape[0]}')
            model._build(normalizer, train_x=arrays['train_x'].copy(),
                         train_y=arrays['train_y'].copy())
        else:
            model._build(normalizer, inducing=np.zeros((d, config.num_inducing, input_dim)))
        params = dict(model.named_parameters())
        expected = set(params) | ({'train_x', 'train_y'} if config.kind == 'exact' else set())
        missing = sorted(expected - set(arrays))
        extra = sorted(set(arrays) - expected)
        if missing or extra:
            raise ValueError(f'missing {missing}, extra {extra}')
        for name, p in params.items():
            if tuple(arrays[name].shape) != tuple(p.shape):
                raise ValueError(
                    f'{name} has shape {arrays[name].shape}, a {config.kind} GP with '
                    f'{d} joints, {input_dim} inputs'
                    + (f', {config.num_inducing} inducing points' if config.kind == 'sparse'
                       else '') + f' needs {tuple(p.shape)}')
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(torch.from_numpy(arrays[name]))
        if config.kind == 'sparse':
            # Otherwise the first call would re-initialise q(u) to the prior.
            model.gp.variational_strategy.variational_params_initialized.fill_(1)
        model.eval()  # builds the numpy caches
        return model

    def train(self, mode: bool = True) -> 'GpInverseDynamics':
        """torch's train/eval switch. ``train()`` drops the numpy caches of :meth:`predict_one`;
        ``eval()`` builds them from the current parameters if they are missing (so after
        changing parameters by hand, call ``train()`` then ``eval()``)."""
        super().train(mode)
        if mode:
            self._fast = None
        elif self.gp is not None and self._fast is None:
            self._make_fast_path()
        return self

    # -- fitting ----------------------------------------------------------------------------

    def fit(self, x: np.ndarray, y: np.ndarray) -> dict:
        """Fit hyperparameters (and for sparse the variational posterior) to the data.

        Args:
            x: inputs (n, 3d) in physical units [rad, rad/s, rad/s^2], layout as the LSTM's.
            y: torques (n, d) [Nm].

        Returns:
            info: ``fit_time_s`` (wall seconds of this call), ``n`` (samples used),
            ``n_available``, ``kind``, ``objective`` ('neg_mll' or 'neg_elbo') and its final
            value per joint and summed (``neg_mll``/``neg_elbo``, per sample, normalised units,
            on all used data), ``history`` (the loss at every evaluation: Adam steps, or
            L-BFGS evaluations including line-search ones), and :meth:`hyperparameters`.

        Raises:
            ValueError: bad shapes or values; an exact GP with more than ``max_exact_points``
                samples without ``subsample``; a sparse GP with fewer samples than inducing
                points.
        """
        t0 = time.perf_counter()
        cfg = self.config
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != cfg.input_dim:
            raise ValueError(f'x must have shape (n, {cfg.input_dim}), got {x.shape}')
        if y.shape != (x.shape[0], cfg.output_dim):
            raise ValueError(f'y must have shape ({x.shape[0]}, {cfg.output_dim}), got {y.shape}')
        if x.shape[0] < 2:
            raise ValueError(f'need at least 2 samples, got {x.shape[0]}')
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError('NaN/inf in the training data')
        n_available = x.shape[0]
        rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        if cfg.kind == 'exact' and n_available > cfg.max_exact_points:
            if not cfg.subsample:
                gb = cfg.dof * n_available ** 2 * 8 / 1e9
                raise ValueError(
                    f'{n_available} samples exceed max_exact_points={cfg.max_exact_points} for '
                    f'an exact GP (O(n^3) time per step, {gb:.1f} GB per copy of the {cfg.dof} '
                    "kernel matrices): use kind='sparse', or subsample=True to fit on a random "
                    f'{cfg.max_exact_points}-sample subset, or raise max_exact_points')
            keep = np.sort(rng.choice(n_available, cfg.max_exact_points, replace=False))
            x, y = x[keep], y[keep]
        if cfg.kind == 'sparse' and x.shape[0] < cfg.num_inducing:
            raise ValueError(
                f'{x.shape[0]} samples for num_inducing={cfg.num_inducing}: use fewer inducing '
                "points or kind='exact'")
        normalizer = Normalizer.from_data(x, y)
        try:
            history, final, objective = self._fit_normalised(x, y, normalizer, rng)
        except BaseException:
            # No half-fitted model: it is either fitted or not.
            self.gp = self.likelihood = None
            self._normalizer = self._train_x = self._train_y = self._fast = None
            raise
        info = {'kind': cfg.kind, 'n': int(len(x)), 'n_available': int(n_available),
                'objective': objective, objective: float(final.sum()),
                f'{objective}_per_joint': final.tolist(), 'history': history,
                **self.hyperparameters()}
        info['fit_time_s'] = time.perf_counter() - t0
        return info

    def _fit_normalised(self, x: np.ndarray, y: np.ndarray, normalizer: Normalizer,
                        rng: np.random.Generator) -> tuple[list[float], np.ndarray, str]:
        """Build and fit the GPyTorch model on x (n, 3d), y (n, d) (physical units); returns
        the loss history, the final objective per joint (d,) and its name."""
        cfg = self.config
        with _torch_threads(cfg.threads), _gp_settings(max(cfg.max_exact_points, len(x))):
            if cfg.kind == 'exact':
                self._build(normalizer, train_x=x, train_y=y)
                history, final = self._fit_exact()
                objective = 'neg_mll'
            else:
                xn = normalizer.normalise_x(x)
                if cfg.inducing_init == 'kmeans':
                    centres = kmeans_centres(xn, cfg.num_inducing, rng)
                else:
                    centres = xn[rng.choice(len(xn), cfg.num_inducing, replace=False)]
                inducing = np.repeat(centres[None], cfg.dof, axis=0)
                self._build(normalizer, inducing=inducing)
                history, final = self._fit_sparse(xn, normalizer.normalise_y(y), rng)
                objective = 'neg_elbo'
        self.train()   # drop any cache of an earlier fit
        self.eval()    # and build the numpy fast path
        return history, final, objective

    def _fit_exact(self) -> tuple[list[float], np.ndarray]:
        cfg = self.config
        _init_hyperparameters(self.gp, self.likelihood, cfg.input_dim)
        return _optimise_exact(self.gp, self.likelihood, cfg.resolved_optimizer,
                               cfg.resolved_training_iters, cfg.resolved_lr)

    def _warm_start(self, xn: np.ndarray, yn: np.ndarray, rng: np.random.Generator) -> None:
        """Set the sparse GP's hyperparameters to those of an exact GP fitted on a random
        subset of ``warm_start_points`` normalised samples xn (n, 3d), yn (n, d)."""
        k = min(self.config.warm_start_points, len(xn))
        keep = np.sort(rng.choice(len(xn), k, replace=False))
        likelihood = _likelihood(self.config.dof).to(DTYPE)
        exact = _ExactBatchGp(torch.as_tensor(xn[keep], dtype=DTYPE),
                              torch.as_tensor(yn[keep].T.copy(), dtype=DTYPE),
                              likelihood).to(DTYPE)
        _init_hyperparameters(exact, likelihood, self.config.input_dim)
        _optimise_exact(exact, likelihood, 'lbfgs', WARM_START_ITERS, DEFAULT_LRS['lbfgs'])
        with torch.no_grad():
            for name in _HYPERPARAMETERS:
                self.gp.get_parameter(name).copy_(exact.get_parameter(name))
            self.likelihood.noise_covar.raw_noise.copy_(likelihood.noise_covar.raw_noise)

    def _fit_sparse(self, xn: np.ndarray, yn: np.ndarray, rng: np.random.Generator
                    ) -> tuple[list[float], np.ndarray]:
        """SVGP on normalised xn (n, 3d), yn (n, d); returns the loss per step and the final
        negative ELBO per sample on all data, per joint (d,)."""
        cfg = self.config
        gp, likelihood = self.gp, self.likelihood
        _init_hyperparameters(gp, likelihood, cfg.input_dim)
        if cfg.warm_start_points > 0:
            self._warm_start(xn, yn, rng)
        gp.train()
        likelihood.train()
        n = len(xn)
        xt = torch.as_tensor(xn, dtype=DTYPE)
        yt = torch.as_tensor(yn.T.copy(), dtype=DTYPE)       # (d, n)
        elbo = gpytorch.mlls.VariationalELBO(likelihood, gp, num_data=n)
        # Natural gradients for q(u), Adam for the hyperparameters and inducing locations.
        variational = list(gp.variational_parameters())
        skip = {id(p) for p in variational}
        others = [p for p in list(gp.parameters()) + list(likelihood.parameters())
                  if id(p) not in skip]
        ngd = gpytorch.optim.NGD(variational, num_data=n, lr=NGD_LR)
        adam = torch.optim.Adam(others, lr=cfg.resolved_lr)
        batch = min(cfg.batch_size, n)
        order = rng.permutation(n)
        pos = 0
        history = []
        for _ in range(cfg.resolved_training_iters):
            if pos + batch > n:
                order, pos = rng.permutation(n), 0
            idx = torch.as_tensor(order[pos:pos + batch])
            pos += batch
            ngd.zero_grad(set_to_none=True)
            adam.zero_grad(set_to_none=True)
            loss = -elbo(gp(xt[idx]), yt[:, idx]).sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(f'SVGP fit diverged (loss {loss.item()}); lower lr')
            loss.backward()
            ngd.step()
            adam.step()
            history.append(loss.item())
        # The final ELBO on all data (not a noisy minibatch estimate), in chunks.
        gp.eval()
        likelihood.eval()
        with torch.no_grad():
            ll = torch.zeros(cfg.dof, dtype=DTYPE)
            for s in range(0, n, PREDICT_CHUNK):
                f = gp(xt[s:s + PREDICT_CHUNK])
                ll += likelihood.expected_log_prob(yt[:, s:s + PREDICT_CHUNK], f).sum(-1)
            kl = gp.variational_strategy.kl_divergence()
        return history, (-(ll - kl) / n).numpy().copy()

    # -- inspection -------------------------------------------------------------------------

    def _raw_hyperparameters(self) -> dict[str, np.ndarray]:
        """Constrained hyperparameters in normalised units: lengthscale (d, D), outputscale,
        noise (variances) and mean (d,)."""
        kernel = self.gp.covar_module
        with torch.no_grad():
            return {
                'lengthscale': kernel.base_kernel.lengthscale.reshape(self.config.dof, -1)
                .numpy().copy(),
                'outputscale': kernel.outputscale.reshape(-1).numpy().copy(),
                'noise': self.likelihood.noise.reshape(-1).numpy().copy(),
                'mean': self.gp.mean_module.constant.reshape(-1).numpy().copy()}

    def hyperparameters(self) -> dict:
        """Learned hyperparameters, JSON-ready lists, per joint:

        ``lengthscales`` (d, 3d) in normalised input units (input std = 1) and
        ``lengthscales_phys`` (d, 3d) in the inputs' units [rad, rad/s, rad/s^2];
        ``signal_std_nm`` (d,) and ``noise_std_nm`` (d,) [Nm]; ``noise_var_normalised`` (d,)
        (noise variance / torque variance).
        """
        self._require_fitted()
        h = self._raw_hyperparameters()
        norm = self._normalizer
        return {'lengthscales': h['lengthscale'].tolist(),
                'lengthscales_phys': (h['lengthscale'] * norm.x_std[None, :]).tolist(),
                'signal_std_nm': (np.sqrt(h['outputscale']) * norm.y_std).tolist(),
                'noise_std_nm': (np.sqrt(h['noise']) * norm.y_std).tolist(),
                'noise_var_normalised': h['noise'].tolist()}

    # -- prediction -------------------------------------------------------------------------

    def _make_fast_path(self) -> None:
        """Build the numpy caches of :meth:`predict_one` from the current parameters."""
        h = self._raw_hyperparameters()
        d = self.config.dof
        min_var = gpytorch.settings.min_variance.value(DTYPE)
        ls = h['lengthscale']
        if self.config.kind == 'exact':
            zn = self._normalizer.normalise_x(self._train_x)                        # (n, D)
            yn = self._normalizer.normalise_y(self._train_y).T                      # (d, n)
            n = len(zn)
            chol = np.empty((d, n, n))
            alpha = np.empty((d, n))
            diag = np.arange(n)
            # One joint at a time: the kernel's temporaries are (n, n), not (d, n, n).
            for j in range(d):
                scaled = (zn / ls[j])[None]
                kmat = _kernel(scaled, scaled, h['outputscale'][j:j + 1])[0]
                kmat[diag, diag] += h['noise'][j]
                chol[j] = _safe_cholesky(kmat)
                alpha[j] = solve_triangular(chol[j].T, solve_triangular(
                    chol[j], yn[j] - h['mean'][j], lower=True, check_finite=False),
                    lower=False, check_finite=False)
            self._fast = _NumpyPredictor(zn, ls, h['outputscale'], h['mean'], h['noise'], chol,
                                         alpha=alpha, min_variance=min_var)
        else:
            strategy = self.gp.variational_strategy
            jitter = float(strategy.jitter_val)
            with torch.no_grad():
                inducing = strategy.inducing_points.numpy().copy()                # (d, m, D)
                q_u = strategy.variational_distribution   # whitened: u = L_zz u_w
                m_w = q_u.mean.numpy().copy()                                      # (d, m)
                s_w = q_u.covariance_matrix.numpy().copy()                         # (d, m, m)
            scaled = inducing / ls[:, None, :]
            kzz = _kernel(scaled, scaled, h['outputscale'])
            eye = np.eye(inducing.shape[1])
            chol = np.stack([_safe_cholesky(kzz[j] + jitter * eye) for j in range(d)])
            self._fast = _NumpyPredictor(inducing, ls, h['outputscale'], h['mean'], h['noise'],
                                         chol, m_w=m_w, s_w=s_w, prior_jitter=jitter,
                                         min_variance=min_var)

    def _check_x(self, x: np.ndarray, ndim: int) -> np.ndarray:
        self._require_fitted()
        x = np.asarray(x, dtype=np.float64)
        want = (self.config.input_dim,) if ndim == 1 else (None, self.config.input_dim)
        if x.ndim != ndim or x.shape[-1] != self.config.input_dim:
            raise ValueError(f'x must have shape {want}, got {x.shape}'.replace('None', 'M'))
        return x

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictive torques with GPyTorch, for many samples.

        Args:
            x: inputs (M, 3d) in physical units [rad, rad/s, rad/s^2].

        Returns:
            (mean (M, d) [Nm], std (M, d) [Nm]); std is of a new measurement (noise included).
        """
        x = self._check_x(x, 2)
        if self.training:
            self.eval()
        norm = self._normalizer
        xt = torch.as_tensor(norm.normalise_x(x), dtype=DTYPE)
        means, variances = [], []
        # fast_pred_var: the exact GP's predictive variances from a cached inverse Cholesky root
        # (exact here, as max_cholesky_size covers the training set: GPyTorch would use Lanczos
        # beyond it), one O(n^3) set-up and then a matrix product per chunk instead of a solve
        # against the training covariance for every chunk.
        with torch.no_grad(), _torch_threads(self.config.threads), \
                _gp_settings(max(self.config.max_exact_points, self.num_train)), \
                gpytorch.settings.fast_pred_var():
            for s in range(0, len(xt), PREDICT_CHUNK):
                f = self.gp(xt[s:s + PREDICT_CHUNK])
                means.append(f.mean)
                variances.append(f.variance)
            noise = self.likelihood.noise.reshape(-1, 1)
        mean = torch.cat(means, dim=-1).numpy().T if means else np.zeros((0, self.config.dof))
        var = (torch.cat(variances, dim=-1) + noise).numpy().T if variances else mean
        return norm.denormalise_y(mean), np.sqrt(var) * norm.y_std

    def predict_one(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One sample, in numpy on cached factors (no torch call): for a node at a decimated
        rate. Cost O(d n D + d n^2) for an exact GP (the n^2 is the std's triangular solve),
        O(d m D + d m^2) for a sparse one.

        Args:
            x: one input (3d,) in physical units [rad, rad/s, rad/s^2].

        Returns:
            (mean (d,) [Nm], std (d,) [Nm], noise included), equal to :meth:`predict` to
            rounding.
        """
        x = self._check_x(x, 1)
        if self._fast is None:
            self.eval()
        norm = self._normalizer
        mean, var = self._fast(((x - norm.x_mean) / norm.x_std)[None, :])
        return mean[:, 0] * norm.y_std + norm.y_mean, np.sqrt(var[:, 0]) * norm.y_std


# --------------------------------------------------------------------------------------------
# Training from trajectories


def train_gp(trajs: Sequence[Trajectory], config: GpConfig, accel: AccelConfig = AccelConfig(),
             prefer_recorded_qdd: bool = False, target: str = 'full',
             nominal: Optional[object] = None) -> tuple[GpInverseDynamics, dict]:
    """Fit a GP baseline on trajectories, with exactly the LSTM's inputs.

    Args:
        trajs: training trajectories (any loader's output), joints selected by
            ``config.joint_names``; accelerations estimated causally with ``accel`` unless
            ``prefer_recorded_qdd`` and recorded, as :func:`~invdyn_ros.core.training.prepare`
            does for the LSTM.
        config: GP settings.
        accel: acceleration-estimator settings.
        prefer_recorded_qdd: use recorded accelerations where present.
        target, nominal: what the GP learns, as for the LSTM (:func:`~invdyn_ros.core.
            training.prepare`): the torque, or its residual over the nominal model.

    Returns:
        (model in eval mode, info): info as :meth:`GpInverseDynamics.fit` (``fit_time_s`` is the
        fit alone, wall seconds) plus ``wall_s`` (including data preparation), ``data_sources``
        and ``accel_config``.
    """
    t0 = time.perf_counter()
    config.validate()
    data = prepare(trajs, config.joint_names, accel, prefer_recorded_qdd, target, nominal)
    x = np.concatenate([d.x for d in data])
    y = np.concatenate([d.y for d in data])
    model = GpInverseDynamics(config)
    info = model.fit(x, y)
    info.update(data_sources=[d.source for d in data], accel_config=accel.to_dict(),
                wall_s=time.perf_counter() - t0)
    return model, info
