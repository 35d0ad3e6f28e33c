r"""Kernel differentiation (the likelihood-ratio method) and the path-kernel hybrid.

For a noisy map :math:`x_{n+1} = f(x_n;\gamma) + \sigma\xi_n`, :math:`\xi_n \sim N(0, I)`
(:class:`~chaosgrad.systems.Noisy`), the law of one step is the Gaussian kernel
:math:`p_\gamma(y \mid x) \propto \exp(-\|y - f(x;\gamma)\|^2 / 2\sigma^2)`, whose score is
:math:`\partial_\gamma \ln p_\gamma(x_{n+1}\mid x_n) = \langle \partial_\gamma f(x_n), \xi_n\rangle/\sigma`.
Differentiating the expectation over the path's density instead of the path gives

.. math::  \frac{d}{d\gamma}\mathbb{E}[\Phi(x_T)] = \mathbb{E}\big[(\Phi(x_T) - \mathbb{E}\Phi(x_T))\, S_T\big],
           \qquad S_T = \frac1\sigma \sum_{n=0}^{T-1} \langle \partial_\gamma f(x_n), \xi_n\rangle ,

(centring is free because :math:`\mathbb{E}S_T = 0`, and it lowers the variance). No
Jacobian product appears, so nothing explodes on an unstable map; the price is a variance
that grows like :math:`T/\sigma^2`. For a long-time average the correlation between
:math:`\Phi(x_m)` and the scores of steps long before :math:`m` decays on a mixing system,
and truncating it to a window of ``W`` steps (the *ergodic* version) lets one long path give
the derivative of the stationary average :cite:`ni2025ergodic`.

The *path-kernel hybrid* moves a fraction :math:`\alpha_n` of the pathwise perturbation onto
the kernel at every step: with :math:`v_0 = 0`,

.. math::  u_n = Df(x_n)\,v_n + \partial_\gamma f(x_n), \qquad
           S \mathrel{+}= \alpha_n\langle u_n, \xi_n\rangle/\sigma, \qquad v_{n+1} = (1 - \alpha_n)\,u_n,

and :math:`d\mathbb{E}\Phi(x_T)/d\gamma = \mathbb{E}[\nabla\Phi(x_T)\cdot v_T + (\Phi(x_T) - \mathbb{E}\Phi)\,S]`:
a perturbation :math:`\alpha u` of :math:`x_{n+1}` is the same as shifting the noise by
:math:`\alpha u/\sigma`, whose likelihood ratio has derivative :math:`\langle\alpha u, \xi\rangle/\sigma`.
:math:`\alpha = 0` is the pathwise (tangent) derivative, :math:`\alpha = 1` pure kernel
differentiation.

References
----------
:cite:`ni2025ergodic` A. Ni, arXiv:2410.10138 (ergodic and foliated kernel differentiation);
A. Ni, arXiv:2503.00718 (the path-kernel method).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .derivatives import finite_difference, time_average
from .estimates import Estimate
from .progress import progress_range
from .systems import Noisy
from .validation import check_finite, check_positive, check_scalar_parameter, check_whole

__all__ = ["FitHistory", "fit_average", "fit_objective_gradient", "kernel_derivative", "kernel_horizon_samples",
           "mercer_smoothing", "path_kernel_derivative", "settled_over_runs"]

Observable = Callable[[Tensor], Tensor]


def _check(noisy: Noisy, x0: Tensor, T: int, parameter: str, warmup: int) -> Tensor:
    if not isinstance(noisy, Noisy):
        raise TypeError(f"kernel differentiation needs a chaosgrad.systems.Noisy map (additive noise); got {type(noisy).__name__}")
    check_scalar_parameter(noisy.map, parameter)
    check_whole(T, "T", 1)
    check_whole(warmup, "warmup", 0)
    return check_finite(noisy.check_state(x0, "x0"), "initial state x0", step=0)


def _observe(observable: Observable, x: Tensor, step: int) -> Tensor:
    value = observable(x)
    if value.shape != x.shape[:-1]:
        raise ValueError(f"observable must map states of shape (..., dim) to values of shape (...); "
                         f"for states {tuple(x.shape)} it returned {tuple(value.shape)}")
    check_finite(value.detach(), "observable", step=step)
    return value


def _score(noisy: Noisy, dfdg: Tensor, xi: Tensor, parameter: str, first: int) -> Tensor:
    r"""The scores :math:`\langle c, \xi_n\rangle/\sigma` of consecutive steps ``first, first + 1, ..``
    (leading axis of ``dfdg`` and ``xi``), where :math:`Bc = \partial_\gamma f` (:math:`B = I`
    without foliation); foliated noise needs :math:`\partial_\gamma f` in span(B)."""
    if noisy.direction is None:
        return (dfdg * xi).sum(-1) / noisy.sigma
    B = noisy.direction
    c = dfdg @ torch.linalg.pinv(B).mT
    outside = torch.linalg.vector_norm(dfdg - c @ B.mT, dim=-1)
    size = torch.linalg.vector_norm(dfdg, dim=-1)
    bad = (outside > 1e-9 * size + 1e-300).reshape(outside.shape[0], -1).any(1)
    if bool(bad.any()):
        worst = float((outside / size.clamp_min(1e-300)).max())
        raise ValueError(
            f"df/d{parameter} has a component outside the noise directions (the span of Noisy.direction) "
            f"at step {first + int(bad.nonzero()[0])}: relative size {worst:.2g}. Kernel differentiation "
            "with foliated noise needs the perturbation inside that span; add its direction to the noise"
        )
    return (c * xi).sum(-1) / noisy.sigma


def _deferred_steps(map, batch: Tensor) -> int:
    """How many steps' parameter derivatives to take in one call: 1 (with each step) on a map
    that is not autonomous, otherwise enough steps for about 2**20 numbers. The derivative does
    not feed back into the path, so one call of :meth:`~chaosgrad.maps.Map._step_param_jvp` on
    many stored states replaces many small calls, whose cost is mostly per-operation overhead
    on small maps (about 0.1 ms per operation in forward mode): see benchmarks/bench_kernel.py."""
    return max(1, 2**20 // max(1, batch.numel())) if map.autonomous else 1


def _unbias(n: int) -> float:
    r"""The factor :math:`n/(n-1)` that removes the bias of centring by the sample mean of
    :math:`n` independent paths: :math:`\mathbb E[(\Phi_i - \bar\Phi)S_i] = (1 - 1/n)\,\mathbb E[\Phi S]`,
    since :math:`\mathbb E[\Phi_j S_i] = \mathbb E\Phi_j\,\mathbb E S_i = 0` for :math:`j \ne i`."""
    if n < 2:
        raise ValueError("kernel differentiation centres by the mean over paths and needs at least 2 "
                         "independent paths (leading axes of x0), or window=W on one long path")
    return n / (n - 1)


def _summary(samples: Tensor) -> Estimate:
    """Mean and standard error over paths (the leading axes)."""
    flat = samples.reshape(-1)
    if flat.numel() < 2:
        raise ValueError("kernel_derivative needs at least 2 independent paths for an error bar "
                         "(leading axes of x0), or window=W on one long path")
    return Estimate.of(flat)


def kernel_derivative(
    noisy: Noisy,
    x0: Tensor,
    T: int,
    observable: Observable,
    parameter: str,
    average: bool = False,
    window: int | None = None,
    warmup: int = 0,
    blocks: int = 20,
    errors: str = "blocks",
) -> Estimate:
    r"""The derivative of :math:`\mathbb{E}\Phi(x_T)` (or of the average of :math:`\Phi(x_1..x_T)`)
    with respect to a scalar parameter, by kernel differentiation.

    Parameters
    ----------
    noisy
        :class:`~chaosgrad.systems.Noisy`: the map and its additive Gaussian noise (drawn
        from the map's own generator, so runs are reproducible).
    x0
        Initial states ``(..., dim)``: leading axes are independent paths.
    T
        Steps after ``warmup``.
    observable
        :math:`\Phi`, states ``(..., dim)`` to values ``(...,)``.
    parameter
        Name of a scalar parameter of the wrapped map.
    average
        ``False``: :math:`d\mathbb{E}\Phi(x_T)/d\gamma`; ``True``: the derivative of
        :math:`\mathbb{E}\frac1T\sum_{m=1}^T \Phi(x_m)`. Both from the fixed ``x0``, with the
        scores of the warm-up steps included (the derivative of exactly what
        :func:`~chaosgrad.derivatives.finite_difference` differences).
    window
        ``W``: the ergodic version. Each :math:`\Phi(x_m) - \bar\Phi` is paired with the
        scores of the ``W`` steps before it only, and the result estimates the derivative of
        the stationary average; the error bar comes from ``blocks`` batch means along the
        path (averaged over paths). Truncation biases the result by the correlations beyond
        ``W`` steps, which decay on a mixing system.
    warmup
        Steps run first (their scores count unless ``window`` is given).
    blocks
        Number of blocks for the ergodic version's error bar.
    errors
        Ergodic version only: ``"blocks"`` (default) for batch means along the paths,
        ``"paths"`` for the spread of the per-path estimates over independent paths (needs at
        least two); ``samples`` then holds one estimate per path, whose variance falls like
        :math:`W/T` once :math:`T` exceeds the correlation time.

    Returns
    -------
    Estimate
        The mean over paths with its standard error (ergodic version: over blocks, or over
        paths with ``errors="paths"``). Centring by the mean over :math:`n` paths would bias
        the estimate by the factor :math:`1 - 1/n`; it is multiplied by :math:`n/(n-1)`.

    Raises
    ------
    TypeError
        If ``noisy`` is not a :class:`~chaosgrad.systems.Noisy` map.
    ValueError
        For an unknown parameter, ``T < 1``, ``warmup < 0``, ``window < 1``, fewer than two
        paths without ``window``, or an observable of the wrong shape.

    Notes
    -----
    Cost: one simulation plus the parameter derivatives and one dot product per step. On an
    autonomous map (:attr:`~chaosgrad.maps.Map.autonomous`) the states of blocks of steps
    (about :math:`2^{20}` numbers each) are stored and their parameter derivatives taken in
    one call, so that a map without a closed form (the forward-mode default of
    ``Map._step_param_jvp``) costs about 1.3 to 1.8 simulations instead of several.

    See Also
    --------
    path_kernel_derivative : the hybrid with the pathwise derivative.
    chaosgrad.derivatives.finite_difference : the reference.
    """
    x = _check(noisy, x0, T, parameter, warmup)
    if window is not None:
        check_whole(window, "window", 1)
    if errors not in ("blocks", "paths"):
        raise ValueError(f"errors must be 'blocks' or 'paths'; got {errors!r}")
    sigma, total = noisy.sigma, warmup + int(T)
    scores, values = [], []  # s_n = <df/dgamma(x_n), xi_n> / sigma; Phi(x_m), m = 1..total (or m = total)
    chunk = _deferred_steps(noisy.map, x)
    states, draws = [], []  # the steps whose scores are still to be taken (chunk > 1)
    with torch.no_grad():
        for n in range(total):
            xi = noisy.noise(x)
            if chunk == 1:
                y, dfdg = noisy.map._step_param_jvp(x, parameter, n)
                scores.append(_score(noisy, dfdg[None], xi[None], parameter, n))
            else:
                y = noisy.map.step(x, n)
                states.append(x)
                draws.append(xi)
                if len(states) == chunk or n + 1 == total:
                    first = n + 1 - len(states)
                    _, dfdg = noisy.map._step_param_jvp(torch.stack(states), parameter, first)
                    scores.append(_score(noisy, dfdg, torch.stack(draws), parameter, first))
                    states, draws = [], []
            x = check_finite(y + sigma * noisy.kick(xi), "state", step=n + 1)
            if average or window is not None or n + 1 == total:  # Phi only where it is used
                values.append(_observe(observable, x, n + 1))
    s, phi = torch.cat(scores), torch.stack(values)  # (total, ...) or (1, ...)
    cumulative = torch.cumsum(s, 0)  # cumulative[m - 1] = S_m = sum_{n < m} s_n
    if window is None:
        factor = _unbias(phi[-1].numel())
        if not average:
            centred = phi[-1] - phi[-1].mean()
            return _summary(factor * centred * cumulative[-1])
        measured = slice(warmup, total)  # x_{warmup+1} .. x_total
        centred = phi[measured] - phi[measured].mean(dim=tuple(range(1, phi.dim())), keepdim=True)
        return _summary(factor * (centred * cumulative[measured]).mean(0))
    W = int(window)
    # the scores of the W steps before m: S_m - S_{m-W}
    shifted = torch.cat([torch.zeros_like(cumulative[:W]), cumulative[:-W]]) if W < total else torch.zeros_like(cumulative)
    recent = (cumulative - shifted)[warmup:]
    phi_run = phi[warmup:]
    per_step = (phi_run - phi_run.mean(0, keepdim=True)) * recent  # (T, ...)
    if errors == "paths":
        return _summary(per_step.mean(0))
    return Estimate.of_series(per_step.reshape(per_step.shape[0], -1).mean(1), blocks=blocks)


def kernel_horizon_samples(
    noisy: Noisy,
    x0: Tensor,
    horizons: Sequence[int],
    observable: Observable,
    parameter: str,
) -> tuple[Tensor, Tensor]:
    r"""Per-path kernel-differentiation estimates at several horizons from one run: of the
    terminal value :math:`\Phi(x_T)` and of the average :math:`\frac1T\sum_{m=1}^T\Phi(x_m)`.

    For each :math:`T` in ``horizons`` path :math:`i` gives
    :math:`\frac{n}{n-1}(\Phi(x^i_T) - \bar\Phi_T)\,S^i_T` and
    :math:`\frac{n}{n-1}\frac1T\sum_{m\le T}(\Phi(x^i_m) - \bar\Phi_m)\,S^i_m`, exactly what
    :func:`kernel_derivative` returns as ``samples`` with ``average=False`` and ``True`` for
    the same noise. Their variances over paths behave differently: the terminal one grows
    like :math:`T/\sigma^2`, since :math:`S_T` is a sum of :math:`T` uncorrelated scores while
    :math:`\Phi(x_T)` forgets them; the average, rearranged as
    :math:`\sum_n s_n\,\frac1T\sum_{m>n}(\Phi_m - \bar\Phi_m)`, weights each score by a
    centred sum of about :math:`\sqrt{T-n}` decorrelated terms divided by :math:`T`, so its
    variance stays bounded in :math:`T` on a mixing system (it does not fall either: that is
    what the ergodic window buys, see ``window`` in :func:`kernel_derivative`).

    Parameters
    ----------
    noisy, x0, observable, parameter
        As :func:`kernel_derivative` (``x0`` with at least two paths along its leading axes).
    horizons
        Increasing positive horizons; the run has ``max(horizons)`` steps.

    Returns
    -------
    (terminal, average)
        Two tensors of shape ``(len(horizons), paths)``.

    Raises
    ------
    ValueError
        For horizons that are not increasing positive whole numbers, or fewer than 2 paths.

    See Also
    --------
    kernel_derivative : one horizon, with the mean and its standard error.
    """
    horizons = [check_whole(T, "horizon", 1) for T in horizons]
    if not horizons or any(b <= a for a, b in zip(horizons, horizons[1:])):
        raise ValueError(f"horizons must be increasing positive whole numbers; got {horizons}")
    x = _check(noisy, x0, horizons[-1], parameter, 0)
    paths = x.shape[:-1].numel()
    factor = _unbias(paths)
    scores, values = [], []
    with torch.no_grad():
        for n in range(horizons[-1]):
            xi = noisy.noise(x)
            y, dfdg = noisy.map._step_param_jvp(x, parameter, n)
            scores.append(_score(noisy, dfdg[None], xi[None], parameter, n)[0].reshape(-1))
            x = check_finite(y + noisy.sigma * noisy.kick(xi), "state", step=n + 1)
            values.append(_observe(observable, x, n + 1).reshape(-1))
    S, phi = torch.cumsum(torch.stack(scores), 0), torch.stack(values)  # (steps, paths)
    products = factor * (phi - phi.mean(1, keepdim=True)) * S  # step m: (Phi_m - mean) S_m
    running = torch.cumsum(products, 0)
    terminal = torch.stack([products[T - 1] for T in horizons])
    average = torch.stack([running[T - 1] / T for T in horizons])
    return terminal, average


def path_kernel_derivative(
    noisy: Noisy,
    x0: Tensor,
    T: int,
    observable: Observable,
    parameter: str,
    alpha: float | Sequence[float] | Tensor,
    average: bool = False,
) -> Estimate:
    r"""The derivative of :math:`\mathbb{E}\Phi(x_T)` (or of the average of :math:`\Phi(x_1..x_T)`)
    by the path-kernel hybrid.

    At every step a fraction ``alpha`` of the tangent perturbation is moved onto the noise
    kernel (see the module docstring): ``alpha = 0`` is the pathwise derivative (a forward
    tangent, which explodes on an unstable map), ``alpha = 1`` is
    :func:`kernel_derivative` (variance growing like :math:`T/\sigma^2`); in between, the
    tangent is damped by :math:`(1-\alpha)` per step and the score grows more slowly.

    Parameters
    ----------
    noisy, x0, T, observable, parameter
        As :func:`kernel_derivative` (no warm-up, no average).
    alpha
        A float in ``[0, 1]``, or one value per step (length ``T``).
    average
        ``True``: the derivative of :math:`\mathbb{E}\frac1T\sum_{m=1}^T\Phi(x_m)`, each
        :math:`\Phi(x_m)` paired with the tangent :math:`v_m` and the score accumulated up to
        step :math:`m`.

    Returns
    -------
    Estimate
        Mean over paths and its standard error.

    Raises
    ------
    ValueError
        For ``alpha`` outside ``[0, 1]`` or a schedule whose length is not ``T``.
    """
    x = _check(noisy, x0, T, parameter, 0)
    T = int(T)
    schedule = torch.as_tensor(alpha, dtype=x.dtype).reshape(-1)
    if schedule.numel() == 1:
        schedule = schedule.expand(T)
    if schedule.numel() != T or not bool(((schedule >= 0) & (schedule <= 1)).all()):
        raise ValueError(f"alpha must be a number in [0, 1] or T = {T} of them; got {schedule.numel()} values "
                         f"from {float(schedule.min()):g} to {float(schedule.max()):g}")
    if noisy.direction is not None and bool((schedule > 0).any()):
        raise ValueError("path_kernel_derivative moves tangent perturbations onto the noise, which needs noise "
                         "in every direction; with foliated noise use alpha = 0 or kernel_derivative")
    sigma = noisy.sigma
    v = torch.zeros_like(x)
    score = torch.zeros(x.shape[:-1], dtype=x.dtype)
    path_terms, values, scores = [], [], []  # per measured step m: grad Phi(x_m) . v_m, Phi(x_m), S_m
    for n in range(T):
        with torch.no_grad():
            xi = noisy.noise(x)
            y, dfdg = noisy.map._step_param_jvp(x, parameter, n)
            u = noisy.map._jvp(x, v[..., None], n)[..., 0] + dfdg
            score = score + schedule[n] * (u * xi).sum(-1) / sigma
            v = (1 - schedule[n]) * u
            x = check_finite(y + sigma * noisy.kick(xi), "state", step=n + 1)
            check_finite(v, "path tangent", step=n + 1)
        if average or n + 1 == T:
            with torch.enable_grad():
                state = x.detach().requires_grad_(True)
                phi = _observe(observable, state, n + 1)
                (grad,) = torch.autograd.grad(phi.sum(), state)
            path_terms.append((grad * v).sum(-1))
            values.append(phi.detach())
            scores.append(score)
    path, phi, S = torch.stack(path_terms), torch.stack(values), torch.stack(scores)  # (measured, ...)
    centred = phi - phi.mean(dim=tuple(range(1, phi.dim())), keepdim=True)
    return _summary((path + _unbias(phi[0].numel()) * centred * S).mean(0))


@dataclass(frozen=True)
class FitHistory:
    r"""The iterates of :func:`fit_average`.

    Attributes
    ----------
    gamma : Tensor, shape ``(steps + 1,)``
        The parameter before each step and after the last.
    average : Tensor, shape ``(steps,)``
        The estimate of :math:`J(\gamma_k)` used at step ``k`` (mean over the batch).
    derivative : Tensor, shape ``(steps,)``
        The estimate of :math:`dJ/d\gamma` at :math:`\gamma_k`.
    objective : Tensor, shape ``(steps,)``
        :math:`\frac12 (J - J^\ast)^2 + \frac\kappa2 \gamma^2` from the batch estimate of ``J``.
    """

    gamma: Tensor
    average: Tensor
    derivative: Tensor
    objective: Tensor

    def settled(self, last: int) -> Estimate:
        """Mean and standard error of the last ``last`` iterates of ``gamma`` (treated as
        independent: an underestimate when successive iterates are correlated; use
        :func:`settled_over_runs` on independent reruns for an honest error bar)."""
        return Estimate.of(self.gamma[-last:])


def settled_over_runs(runs: Sequence[FitHistory], last: int) -> Estimate:
    r"""Where independent SGD runs settle: each run's mean of its last ``last`` iterates of
    :math:`\gamma`, and the mean and standard error of those run means.

    Successive iterates of one run are correlated (near the fixed point the error contracts by
    about :math:`1 - \text{lr}\,(J'^2 + \kappa)` per step), so :meth:`FitHistory.settled`
    underestimates the error; runs with independent noise give independent run means.

    Parameters
    ----------
    runs
        At least two :class:`FitHistory` from runs with independent noise.
    last
        How many final iterates of each run to average (``1 <= last <= steps + 1``).

    Returns
    -------
    Estimate
        ``samples`` holds the run means.

    Raises
    ------
    ValueError
        For fewer than two runs or ``last`` outside that range.
    """
    runs = list(runs)
    if len(runs) < 2:
        raise ValueError(f"an error bar from independent runs needs at least two runs; got {len(runs)}")
    last = check_whole(last, "last", 1)
    shortest = min(len(run.gamma) for run in runs)
    if last > shortest:
        raise ValueError(f"last = {last} exceeds the {shortest} iterates of the shortest run")
    return Estimate.of(torch.stack([run.gamma[-last:].mean() for run in runs]))


def fit_average(
    make_noisy: Callable[[float, int], Noisy],
    gamma0: float,
    x0: Tensor,
    T: int,
    observable: Observable,
    target: float,
    derivative: Callable[[Noisy, Tensor], float],
    lr: float,
    steps: int,
    weight_decay: float = 0.0,
    progress: bool | None = None,
) -> FitHistory:
    r"""Stochastic gradient descent on :math:`L(\gamma) = \frac12 (J(\gamma) - J^\ast)^2 + \frac\kappa2\gamma^2`,
    :math:`J` the expected average of :math:`\Phi` over ``T`` steps of a noisy map.

    Step ``k`` runs the batch ``x`` for ``T`` steps with the map
    ``make_noisy(gamma_k, 2k)`` to estimate :math:`J`, and calls
    ``derivative(make_noisy(gamma_k, 2k + 1), x)`` for :math:`dJ/d\gamma` on independent noise
    (so the product of the two estimates is unbiased when each is);
    :math:`\gamma_{k+1} = \gamma_k - \text{lr}\,[(J - J^\ast)\,dJ/d\gamma + \kappa\gamma_k]`. The batch
    carries on from its final states, so it stays on the attractor. A biased derivative moves
    the point where the iteration settles whenever :math:`\kappa > 0`: that point solves
    :math:`(J - J^\ast)\,\mathbb E[\widehat{dJ/d\gamma}] = -\kappa\gamma`.

    Parameters
    ----------
    make_noisy
        ``(gamma, seed) -> Noisy``: the noisy map at a parameter value with a noise seed.
    gamma0
        Starting value.
    x0
        The batch of states ``(M, dim)``.
    T, observable
        The average :math:`J = \frac1T\sum_{n=1}^T \Phi(x_n)`.
    target
        :math:`J^\ast`.
    derivative
        ``(noisy, x) -> float``: an estimator of :math:`dJ/d\gamma` over the batch, e.g.
        ``lambda m, x: kernel_derivative(m, x, T, obs, "sigma_w", average=True).value``.
    lr, steps, weight_decay
        Learning rate (> 0), number of steps, :math:`\kappa \ge 0`.
    progress
        Progress bar; ``None`` shows one only in an interactive terminal.

    Returns
    -------
    FitHistory
    """
    check_whole(T, "T", 1)
    check_whole(steps, "steps", 1)
    lr = check_positive(lr, "lr")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
    gamma, x = float(gamma0), x0
    gammas, averages, derivatives, objectives = [gamma], [], [], []
    for k in progress_range(int(steps), progress, desc="fit_average"):
        orbit = make_noisy(gamma, 2 * k).trajectory(x, int(T))
        J = float(observable(orbit[1:]).mean())
        x = orbit[-1]
        dJ = float(derivative(make_noisy(gamma, 2 * k + 1), x))
        check_finite(torch.tensor([J, dJ]), "average and derivative estimates", step=k)
        averages.append(J)
        derivatives.append(dJ)
        objectives.append(0.5 * (J - target) ** 2 + 0.5 * weight_decay * gamma**2)
        gamma = gamma - lr * ((J - target) * dJ + weight_decay * gamma)
        gammas.append(gamma)
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return FitHistory(as_tensor(gammas), as_tensor(averages), as_tensor(derivatives), as_tensor(objectives))


def fit_objective_gradient(
    make_noisy: Callable[[float, int], Noisy],
    gamma: float,
    x0: Tensor,
    T: int,
    observable: Observable,
    target: float,
    weight_decay: float = 0.0,
    h: float = 0.01,
    seed: int = 0,
) -> Estimate:
    r"""The gradient :math:`(J - J^\ast)\,dJ/d\gamma + \kappa\gamma` of :func:`fit_average`'s objective,
    measured independently of any derivative estimator: :math:`J` from the paths ``x0`` run
    with ``make_noisy(gamma, seed)``, :math:`dJ/d\gamma` by central differences
    (:func:`~chaosgrad.derivatives.finite_difference`, step ``h``, common random numbers from
    ``seed + 1``). The error bar propagates both standard errors to first order (the two
    estimates use independent noise). Where an SGD run settled, this should vanish within it.
    """
    J = Estimate.of(time_average(make_noisy(float(gamma), seed), x0, T, observable))
    dJ = finite_difference(lambda g: make_noisy(g, seed + 1), float(gamma), h, x0, T, observable)
    value = (J.value - target) * dJ.value + weight_decay * float(gamma)
    return Estimate(value, math.hypot(J.stderr * dJ.value, (J.value - target) * dJ.stderr))


def mercer_smoothing(points: Tensor, values: Tensor, width: float) -> Tensor:
    r"""The draft's "kernel differentiation" (file ``001``, section 4): per-sample gradients
    :math:`g` smoothed by a Gaussian (Mercer) kernel matrix over the samples,
    :math:`(Kg)_i = \sum_j k(x_i, x_j)\, g_j / \sum_j k(x_i, x_j)`, with
    :math:`k(x, y) = \exp(-\|x - y\|^2 / 2w^2)` (rows normalised, so that a constant gradient
    is left unchanged; the draft writes :math:`K g` without normalisation).

    It is kept to show, in chapter 5, why it is not kernel differentiation: :math:`Kg` is a
    weighted average of the same backpropagated gradients, so it inherits their explosion,
    whereas kernel differentiation differentiates the transition kernel of the noise and
    never forms :math:`g`.

    Parameters
    ----------
    points
        Samples ``(M, d)``.
    values
        Their gradients ``(M,)``.
    width
        :math:`w > 0`.

    Returns
    -------
    Tensor of shape ``(M,)``.
    """
    width = check_positive(width, "width")
    if points.ndim != 2 or values.shape != points.shape[:1]:
        raise ValueError(f"points must be (M, d) and values (M,); got {tuple(points.shape)} and {tuple(values.shape)}")
    K = torch.exp(-torch.cdist(points, points) ** 2 / (2 * width**2))
    return (K @ values) / K.sum(1)
