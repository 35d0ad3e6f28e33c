r"""Learning a map from data: one-step regression, teacher forcing, and fine-tuning statistics.

Three ways to fit the parameters :math:`\theta` of a model :math:`x_{n+1} = f_\theta(x_n)` to
observations :math:`y_0, y_1, \dots` of a chaotic system (chapter 7):

- :func:`fit_one_step`: what practitioners do first, regression of each observation on the
  one before (teacher forcing), :math:`\min_\theta \langle|f_\theta(y_k) - y_{k+1}|^2\rangle`,
  or on ``rollout`` steps of the model's own forecast from :math:`y_k`;
- :class:`TeacherForced`: generalised teacher forcing :cite:`mikhaeil2022difficulty`
  :cite:`hess2023generalized`, the model with its state pulled towards the data,
  :math:`\tilde x_{n+1} = (1 - \alpha_n) f_\theta(\tilde x_n) + \alpha_n y_{n+1}`, a
  :class:`~chaosgrad.maps.Map` whose Jacobian is :math:`(1 - \alpha_n) Df_\theta`: any
  estimator run on it gives the teacher-forced gradient, whose backpropagated products
  grow like :math:`((1-\alpha)e^{\lambda_1})^n` instead of :math:`e^{\lambda_1 n}`
  (sparse teacher forcing: :math:`\alpha_n = 1` every :math:`\tau` steps, 0 otherwise);
- :func:`fine_tune`: gradient descent (Adam :cite:`kingma2015adam`) on a loss of long-time
  averages (:class:`~chaosgrad.climate.FourierStatistics`) plus the one-step loss as a
  regulariser, with the gradient of the average from any estimator of
  :func:`~chaosgrad.gradients.average_gradient` or from teacher forcing, its cost counted.

References
----------
:cite:`mikhaeil2022difficulty` J. Mikhaeil, Z. Monfared, D. Durstewitz, On the difficulty of
learning chaotic dynamics with RNNs, NeurIPS (2022). :cite:`hess2023generalized` F. Hess et
al., Generalized teacher forcing for learning chaotic dynamics, ICML (2023).
:cite:`kingma2015adam` D. P. Kingma, J. Ba, Adam, ICLR (2015).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .climate import FourierStatistics, Observations
from .estimates import Estimate
from .gradients import METHODS, Cost, average_gradient
from .maps import Map
from .progress import progress_range
from .systems import Noisy
from .validation import check_finite, check_positive, check_whole

__all__ = ["ESTIMATORS", "FineTuning", "TeacherForced", "fine_tune", "fine_tune_each", "fit_one_step", "growth_rate",
           "one_step_loss", "rollout_gradient_norms", "rollout_starts"]


def one_step_loss(model: Map, data: Observations) -> float:
    r"""The one-step (teacher-forced) mean squared error :math:`\langle|f_\theta(y_k) - y_{k+1}|^2\rangle / d`
    over every pair of ``data``'s noisy observations (its floor is about :math:`\sigma^2` from the
    noise of :math:`y_{k+1}` alone)."""
    x, y = data.pairs()
    with torch.no_grad():
        return float(((model.step(x) - y) ** 2).mean())


def fit_one_step(model: Map, data: Observations, iterations: int, lr: float = 1e-3, batch: int = 256,
                 rollout: int = 1, seed: int = 0, progress: bool | None = None) -> Tensor:
    r"""Fit ``model``'s parameters in place by Adam on the ``rollout``-step forecast error.

    Each iteration draws ``batch`` starts :math:`(k, r)` (index and run) of ``data``'s noisy
    observations and minimises
    :math:`\frac1{K}\sum_{j=1}^{K} \frac1d |f_\theta^{\,j}(y_k) - y_{k+j}|^2` (mean over the
    batch), :math:`K` = ``rollout``: :math:`K = 1` is one-step regression (teacher forcing),
    :math:`K > 1` backpropagates through the model's own forecast for :math:`K` steps.

    Parameters
    ----------
    model
        A :class:`~chaosgrad.maps.Map` whose ``step`` is written in torch (e.g.
        :class:`~chaosgrad.models.NeuralMap`); its parameters are updated in place.
    data
        Training :class:`~chaosgrad.climate.Observations` (one model step = one sampling
        interval).
    iterations, lr, batch, rollout, seed
        Adam iterations (>= 1), learning rate (> 0), starts per iteration, :math:`K` (>= 1,
        shorter than the runs), seed of the draws.
    progress
        Progress bar; ``None`` shows one only in an interactive terminal.

    Returns
    -------
    Tensor, shape ``(iterations,)``: the minibatch loss before each update.
    """
    iterations, batch, K = (check_whole(iterations, "iterations", 1), check_whole(batch, "batch", 1),
                            check_whole(rollout, "rollout", 1))
    lr = check_positive(lr, "lr")
    y = data.noisy
    if K >= y.shape[0]:
        raise ValueError(f"rollout = {K} needs runs longer than {K} samples; the data have {y.shape[0] - 1}")
    params = {k: p.detach().clone().requires_grad_(True) for k, p in model.params().items()}
    optimiser = torch.optim.Adam(list(params.values()), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    losses = torch.empty(iterations, dtype=torch.float64)
    for it in progress_range(iterations, progress, desc="fit_one_step"):
        k = torch.randint(0, y.shape[0] - K, (batch,), generator=generator)
        r = torch.randint(0, y.shape[1], (batch,), generator=generator)
        x, loss = y[k, r], 0.0
        for j in range(1, K + 1):
            x = model._call_with(params, x, 0)
            loss = loss + ((x - y[k + j, r]) ** 2).mean() / K
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses[it] = float(loss.detach())
    check_finite(losses, "one-step training loss")
    with torch.no_grad():
        for k, p in model.params().items():
            p.copy_(params[k])
    return losses


class TeacherForced(Map):
    r"""A model forced towards data: :math:`\tilde x_{n+1} = (1 - \alpha_n) f(\tilde x_n) + \alpha_n y_{n+1}`.

    Generalised teacher forcing :cite:`hess2023generalized` with a fixed :math:`\alpha`, or
    sparse teacher forcing :cite:`mikhaeil2022difficulty` with :math:`\alpha_n = 1` every
    ``every`` steps (:meth:`sparse`). The forcing is affine in the state, so the tangent and
    adjoint maps and the parameter derivatives are the model's times :math:`1 - \alpha_n`;
    backpropagation through it (:func:`~chaosgrad.derivatives.backprop_derivative`) is the
    teacher-forced gradient. Its parameters are the model's (same names). Member ``i`` of an
    ensemble ``(runs, dim)`` is forced by ``data[:, i]``.

    Parameters
    ----------
    model
        The map :math:`f`.
    data
        Forcing states ``(steps + 1, runs, dim)`` (or ``(steps + 1, dim)``); step ``n`` pulls
        towards ``data[n + 1]``.
    alpha
        :math:`\alpha` in [0, 1], a number or a schedule of shape ``(steps,)``.
    """

    def __init__(self, model: Map, data: Tensor, alpha: float | Tensor) -> None:
        super().__init__()
        self.map = model
        self.dim = model.dim
        data = torch.as_tensor(data, dtype=torch.float64)
        if data.ndim < 2 or data.shape[-1] != model.dim or data.shape[0] < 2:
            raise ValueError(f"data must have shape (steps + 1, ..., {model.dim}) with steps >= 1; "
                             f"got shape {tuple(data.shape)}")
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
        if alpha.shape not in ((), (data.shape[0] - 1,)):
            raise ValueError(f"alpha must be a number or a schedule of shape ({data.shape[0] - 1},), one per step of "
                             f"the forcing data; got shape {tuple(alpha.shape)}")
        alpha = alpha.expand(data.shape[0] - 1).clone()
        if not bool(((alpha >= 0) & (alpha <= 1)).all()):
            raise ValueError(f"alpha must lie in [0, 1]; got values from {float(alpha.min())} to {float(alpha.max())}")
        self.register_buffer("data", data)
        self.register_buffer("alpha", alpha)

    @classmethod
    def sparse(cls, model: Map, data: Tensor, every: int) -> TeacherForced:
        r"""Sparse teacher forcing: the state is replaced by the data after every ``every``-th
        step (:math:`\alpha_n = 1` when :math:`n + 1` is a multiple of ``every``), so no
        product of Jacobians is longer than ``every``."""
        every = check_whole(every, "every", 1)
        data = torch.as_tensor(data, dtype=torch.float64)
        if data.ndim < 2 or data.shape[0] < 2:
            raise ValueError(f"data must have shape (steps + 1, ..., dim) with steps >= 1; got shape {tuple(data.shape)}")
        n = torch.arange(1, data.shape[0])
        return cls(model, data, (n % every == 0).to(torch.float64))

    def params(self) -> dict[str, Tensor]:
        return self.map.params()

    def _a(self, n: int) -> float:
        if not 0 <= n < self.alpha.shape[0]:
            raise IndexError(f"step {n} is outside the forcing data's {self.alpha.shape[0]} steps")
        return float(self.alpha[n])

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        a = self._a(n)
        return (1 - a) * self.map.step(x, n) + a * self.data[n + 1]

    def _call_with(self, params: dict[str, Tensor], x: Tensor, n: int) -> Tensor:
        # params() are the model's names ("W0"), not this module's ("map.W0"), which functional_call would ignore
        a = self._a(n)
        return (1 - a) * self.map._call_with(params, x, n) + a * self.data[n + 1]

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return (1 - self._a(n)) * self.map._jvp(x, V, n)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        return (1 - self._a(n)) * self.map._vjp(x, W, n)

    def param_jvp(self, x: Tensor, dgamma: dict, n: int = 0) -> Tensor:
        return (1 - self._a(n)) * self.map.param_jvp(x, dgamma, n)

    def _param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> dict[str, Tensor]:
        return self.map._param_vjp(x, (1 - self._a(n)) * w, n, keep)

    def _vjp_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.map._vjp_param_vjp(x, (1 - self._a(n)) * w, n, keep)


#: The gradient estimators :func:`fine_tune` accepts: those of
#: :func:`~chaosgrad.gradients.average_gradient`, ``"teacher-forcing"``, and ``"none"`` (no
#: statistics gradient: the regulariser alone, a control).
ESTIMATORS = (*METHODS, "teacher-forcing", "none")


@dataclass(frozen=True)
class FineTuning:
    r"""The record of a :func:`fine_tune` run.

    Attributes
    ----------
    loss : Tensor, shape ``(iterations,)``
        The statistics loss :math:`L` of each iteration's free run (before its update).
    one_step : Tensor, shape ``(iterations,)``
        The regulariser's minibatch one-step loss (NaN-free; zeros without a regulariser).
    cost : Cost
        Every product of the run, counted: the free runs, the estimator's, the regulariser's.
    method : str
        The estimator.
    """

    loss: Tensor
    one_step: Tensor
    cost: Cost
    method: str


def fine_tune(model: Map, statistics: FourierStatistics, x0: Tensor, method: str, iterations: int,
              steps: int, lr: float = 1e-3, *, noise: float | None = None, forcing: Observations | None = None,
              alpha: float | None = None, every: int | None = None, regulariser: Observations | None = None,
              weight: float = 1.0, batch: int = 256, seed: int = 0, progress: bool | None = None,
              **options: Any) -> FineTuning:
    r"""Fine-tune every parameter of ``model`` (in place) to the statistics of the data.

    The objective is

    .. math:: \mathcal L(\theta) = L\big(\langle\phi\rangle_\theta\big)
              + \frac{w}{\ell_0}\,\ell(\theta),

    :math:`L` the statistics loss (:class:`~chaosgrad.climate.FourierStatistics`) of the
    model's averages over ``steps`` steps, :math:`\ell` the one-step loss on ``regulariser``'s
    observations (a minibatch of ``batch`` pairs per iteration), :math:`\ell_0` its value at the
    start, :math:`w` = ``weight``. Iteration :math:`k`:

    1. *free run*: the paths (``x0`` first, then the last states of the previous run, so they
       stay on the model's attractor) run ``steps`` steps; their feature means give
       :math:`L` and the observable :math:`\psi` whose average has the gradient of
       :math:`L` (:meth:`FourierStatistics.observable`);
    2. *gradient*: :math:`\nabla_\theta\langle\psi\rangle` by ``method`` from the last
       states, over ``steps`` more steps: a method of
       :func:`~chaosgrad.gradients.average_gradient` (with ``options``), or
       ``"teacher-forcing"``: backpropagation through :class:`TeacherForced` windows of
       ``forcing``'s noisy observations (as many as paths, drawn at random), with
       ``alpha`` (generalised) or ``every`` (sparse); or ``"none"``: no statistics
       gradient (the regulariser alone, a control);
    3. the regulariser's gradient, then one Adam step :cite:`kingma2015adam`.

    With ``noise`` (> 0) the model runs as :class:`~chaosgrad.systems.Noisy` with that
    standard deviation in both phases (the kernel methods need it); the two phases draw
    independent noise.

    Parameters
    ----------
    model, statistics, x0
        The model, the loss, the starting paths ``(paths, dim)``.
    method
        One of :data:`ESTIMATORS`.
    iterations, steps, lr
        Adam iterations, the length of each run, the learning rate.
    noise, forcing, alpha, every
        See above.
    regulariser, weight, batch
        Observations for the one-step loss (``None``: no regulariser), :math:`w`, pairs per
        iteration.
    seed
        Seed of the noise, the forcing windows and the regulariser's minibatches.
    **options
        The method's options (e.g. ``truncate=10``, ``clip_total=1.0``, ``segment_steps=20``).

    Returns
    -------
    FineTuning
    """
    if method not in ESTIMATORS:
        raise ValueError(f"method must be one of {list(ESTIMATORS)}; got {method!r}")
    iterations, T = check_whole(iterations, "iterations", 1), check_whole(steps, "steps", 1)
    lr = check_positive(lr, "lr")
    if method in ("kernel", "path-kernel") and noise is None:
        raise ValueError(f"method {method!r} differentiates a noisy model: pass noise > 0")
    if noise is not None:
        noise = check_positive(noise, "noise")
    if method != "teacher-forcing" and alpha is not None:
        options["alpha"] = alpha  # the path-kernel hybrid's alpha
    if method == "teacher-forcing":
        if forcing is None or (alpha is None) == (every is None):
            raise ValueError("teacher forcing needs forcing=<Observations> and exactly one of alpha (generalised) "
                             "or every (sparse)")
        if forcing.noisy.shape[0] <= T:
            raise ValueError(f"the forcing runs have {forcing.noisy.shape[0] - 1} samples; steps = {T} needs more")
    x = model.check_state(x0)
    params = model.params()
    optimiser = torch.optim.Adam(list(params.values()), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    pairs = regulariser.pairs() if regulariser is not None else None
    if pairs is not None:
        with torch.no_grad():
            base = float(((model.step(pairs[0]) - pairs[1]) ** 2).mean())
        if not base > 0:
            raise ValueError("the model fits the regulariser's observations exactly (one-step loss 0), so the "
                             "regulariser cannot be scaled by it: pass regulariser=None")
    losses, one_step, cost = torch.zeros(iterations), torch.zeros(iterations), Cost()
    losses, one_step = losses.double(), one_step.double()
    paths = x.shape[:-1].numel()
    for it in progress_range(iterations, progress, desc=f"fine_tune ({method})"):
        noisy = (lambda s: Noisy(model, noise, seed=int(seed) * 1_000_003 + 2 * it + s)) if noise else (lambda s: model)
        with torch.no_grad():
            orbit = noisy(0).trajectory(x, T)
        check_finite(orbit[-1], f"state of the free run in iteration {it}")
        means = statistics.means(orbit[1:])
        losses[it] = statistics.loss(means)
        psi = statistics.observable(means)
        cost = cost + Cost(steps=paths * T)
        if method == "none":
            g = None
        elif method == "teacher-forcing":
            y = forcing.noisy
            k = torch.randint(0, y.shape[0] - T, (paths,), generator=generator)
            r = torch.randint(0, y.shape[1], (paths,), generator=generator)
            window = y[k[None] + torch.arange(T + 1)[:, None], r[None]]
            forced = (TeacherForced(model, window, alpha) if alpha is not None
                      else TeacherForced.sparse(model, window, every))
            g = average_gradient(forced, window[0], T, psi, "backprop")
        else:
            g = average_gradient(noisy(1), orbit[-1], T, psi, method, **options)
        if g is None:
            grads = {k: torch.zeros_like(p) for k, p in params.items()}
        else:
            cost = cost + g.cost
            grads = {k: v.clone() for k, v in g.value.items()}
        if pairs is not None:
            i = torch.randint(0, pairs[0].shape[0], (batch,), generator=generator)
            xs, ys = pairs[0][i], pairs[1][i]
            with torch.no_grad():
                residual = model.step(xs) - ys
            one_step[it] = float((residual**2).mean())
            extra = model.param_vjp(xs, 2 * residual / residual.numel(), 0, keep=0)
            for k in grads:
                grads[k] += (weight / base) * extra[k]
            cost = cost + Cost(steps=batch, param_vjps=batch)
        for k, p in params.items():
            p.grad = check_finite(grads[k], f"gradient of {k} in iteration {it}")
        optimiser.step()
        for p in params.values():
            p.grad = None
        x = orbit[-1]
    return FineTuning(losses, one_step, cost, method)


def rollout_starts(data: Observations, starts: int, longest: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""The random starts of :func:`rollout_gradient_norms`: sample indices ``k`` and run indices ``r``.

    ``data.noisy[k, r]`` are the ``starts`` initial states, drawn from ``seed`` with
    ``k + longest`` inside the runs, so that other measurements (e.g. the finite-time
    Lyapunov exponent along the same rollouts) can use the same states.

    Returns
    -------
    (k, r): two integer tensors of shape ``(starts,)``.
    """
    y = data.noisy
    longest = check_whole(longest, "longest", 1)
    if longest >= y.shape[0]:
        raise ValueError(f"rollouts of {longest} steps do not fit in runs of {y.shape[0] - 1} samples")
    generator = torch.Generator().manual_seed(int(seed))
    k = torch.randint(0, y.shape[0] - longest, (check_whole(starts, "starts", 1),), generator=generator)
    r = torch.randint(0, y.shape[1], (starts,), generator=generator)
    return k, r


def rollout_gradient_norms(model: Map, data: Observations, horizons: Any, starts: int = 16, seed: int = 0) -> Tensor:
    r"""The norm of the gradient of the ``T``-step rollout loss with respect to every parameter, for each ``T``.

    For a start :math:`(k, r)` of ``data``'s noisy observations, the rollout loss is
    :math:`L_T(\theta) = \frac1{T d}\sum_{j=1}^{T} |f_\theta^{\,j}(y_k) - y_{k+j}|^2` (the loss of
    :func:`fit_one_step` with ``rollout = T``), and :math:`\nabla_\theta L_T` is computed by
    backpropagation through time (torch autograd). For a chaotic model the terms
    :math:`j` near :math:`T` carry products of :math:`j` Jacobians, so
    :math:`|\nabla_\theta L_T|` grows like :math:`e^{\lambda_1 T}` once :math:`T` exceeds a few
    Lyapunov times :cite:`mikhaeil2022difficulty`.

    Parameters
    ----------
    model, data
        The model and the observations.
    horizons
        The horizons :math:`T` (whole numbers >= 1, shorter than the runs).
    starts
        Number of random starts (the same for every horizon).
    seed
        Seed of the starts.

    Returns
    -------
    Tensor, shape ``(len(horizons), starts)``.

    See Also
    --------
    rollout_starts : the starts, for measurements along the same rollouts.
    growth_rate : the exponential rate fitted to these norms.
    """
    horizons = [check_whole(T, "horizon", 1) for T in horizons]
    y = data.noisy
    if not horizons or max(horizons) >= y.shape[0]:
        raise ValueError(f"horizons must be nonempty and shorter than the runs ({y.shape[0] - 1} samples); got {horizons}")
    k, r = rollout_starts(data, starts, max(horizons), seed)
    norms = torch.empty(len(horizons), starts, dtype=torch.float64)
    for i, T in enumerate(horizons):
        for s in range(starts):
            params = {n: p.detach().clone().requires_grad_(True) for n, p in model.params().items()}
            x, loss = y[k[s], r[s]], 0.0
            for j in range(1, T + 1):
                x = model._call_with(params, x, 0)
                loss = loss + ((x - y[k[s] + j, r[s]]) ** 2).mean() / T
            grads = torch.autograd.grad(loss, list(params.values()))
            norms[i, s] = torch.cat([g.reshape(-1) for g in grads]).norm()
    return check_finite(norms, "rollout gradient norms")


def fine_tune_each(bases: Sequence[Map], statistics: FourierStatistics, estimators: Mapping[str, Mapping[str, Any]],
                   x0: Tensor, iterations: int, steps: int, **common: Any) -> dict[str, list[tuple[Map, FineTuning]]]:
    r"""Fine-tune a copy of every model of ``bases`` with every estimator: independent runs.

    Run ``r`` of estimator ``name`` is :func:`fine_tune` on a deep copy of ``bases[r]`` with
    ``seed = r`` and the options ``{**common, **estimators[name]}`` (``method`` among them), so
    that the runs of one estimator are independent of each other and every estimator starts
    from the same models.

    Returns
    -------
    dict mapping each estimator's name to ``[(fine-tuned model, FineTuning), ...]``, one per base.
    """
    results: dict[str, list[tuple[Map, FineTuning]]] = {}
    for name, options in estimators.items():
        options = {**common, **options}
        if "method" not in options:
            raise ValueError(f"estimator {name!r} needs a 'method' among its options")
        runs = []
        for r, base in enumerate(bases):
            model = copy.deepcopy(base)
            runs.append((model, fine_tune(model, statistics, x0, iterations=iterations, steps=steps, seed=r,
                                          **options)))
        results[name] = runs
    return results


def growth_rate(horizons: Sequence[int], norms: Tensor, interval: float = 1.0, scale: bool = True) -> Estimate:
    r"""The exponential growth rate of gradient norms over horizons, per unit time, with its error bar.

    For each start (a column of ``norms``, as :func:`rollout_gradient_norms` returns them) the
    least-squares slope of :math:`\ln(T\,|\nabla L_T|)` against :math:`T\Delta` (``scale``:
    the factor :math:`T` undoes the loss's :math:`1/T`, so that the sum of the terms is
    fitted); the estimate is the mean over starts, the error bar their standard error (the
    starts are independent; the horizons of one start are not).
    """
    T = torch.as_tensor(list(horizons), dtype=torch.float64)
    norms = torch.as_tensor(norms, dtype=torch.float64)
    if T.numel() < 2 or norms.shape[0] != T.numel() or norms.ndim != 2 or norms.shape[1] < 2:
        raise ValueError(f"norms must have shape (horizons, starts) with >= 2 of each; got {tuple(norms.shape)} "
                         f"for {T.numel()} horizons")
    y = (norms * T[:, None]).log() if scale else norms.log()
    t = T * float(interval)
    tc = t - t.mean()
    return Estimate.of((tc[:, None] * (y - y.mean(0))).sum(0) / (tc**2).sum())
