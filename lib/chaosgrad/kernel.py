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
from .gradients import REVERSE_CHUNK_STATES, Gradient, parameter_names
from .progress import progress_range
from .systems import Noisy
from .validation import (check_finite, check_positive, check_scalar_parameter, check_whole, evaluate_observable,
                         warn_constant_parameters)

__all__ = ["FitHistory", "fit_average", "fit_objective_gradient", "kernel_derivative", "kernel_horizon_samples",
           "mercer_smoothing", "path_kernel_derivative", "settled_over_runs"]

Observable = Callable[[Tensor], Tensor]


def _check(noisy: Noisy, x0: Tensor, T: int, parameter: str | Sequence[str] | None, warmup: int,
           method: str = "kernel differentiation") -> Tensor:
    """Check the arguments every estimator shares; a name must be a scalar parameter, while
    ``None`` or a list (the all-parameter estimators) is checked by
    :func:`~chaosgrad.gradients.parameter_names`. Parameters that do not reach the map's
    output are warned about (:func:`~chaosgrad.validation.warn_constant_parameters`)."""
    if not isinstance(noisy, Noisy):
        raise TypeError(f"{method} needs a chaosgrad.systems.Noisy map (additive noise); got {type(noisy).__name__}")
    names = [check_scalar_parameter(noisy.map, parameter)] if isinstance(parameter, str) else \
        parameter_names(noisy.map, parameter)
    check_whole(T, "T", 1)
    check_whole(warmup, "warmup", 0)
    x = check_finite(noisy.check_state(x0, "x0"), "initial state x0", step=0)
    warn_constant_parameters(noisy.map, x, names, 0, int(warmup) + int(T) - 1)
    return x


def _observe(observable: Observable, x: Tensor, step: int, estimator: str = "kernel differentiation") -> Tensor:
    value = evaluate_observable(observable, x, estimator)
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
    return (_inside_span(noisy, dfdg, parameter, first) * xi).sum(-1) / noisy.sigma


def _inside_span(noisy: Noisy, dfdg: Tensor, parameter: str, first: int, hint: str = "") -> Tensor:
    r"""The coefficients :math:`c = B^+ \partial_\gamma f` of parameter derivatives ``dfdg`` (steps
    ``first, first + 1, ..`` along the leading axis) in the noise directions :math:`B`, or a
    ValueError naming the parameter and the first step where :math:`\partial_\gamma f` leaves span(B)."""
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
            "with foliated noise needs the perturbation inside that span; add its direction to the noise" + hint
        )
    return c


def _deferred_steps(map, batch: Tensor) -> int:
    """How many steps' parameter derivatives to take in one call: 1 (with each step) on a map
    that is not autonomous, otherwise enough steps for about 2**20 numbers. The derivative does
    not feed back into the path, so one call of :meth:`~chaosgrad.maps.Map._step_param_jvp` on
    many stored states replaces many small calls, whose cost is mostly per-operation overhead
    on small maps (about 0.1 ms per operation in forward mode): see benchmarks/bench_kernel.py."""
    return max(1, 2**20 // max(1, batch.numel())) if map.autonomous else 1


def _schedule(noisy: Noisy, alpha: float | Sequence[float] | Tensor, T: int, dtype: torch.dtype) -> Tensor:
    r"""The hybrid's :math:`\alpha_0, .., \alpha_{T-1}` from a number or a schedule, checked."""
    schedule = torch.as_tensor(alpha, dtype=dtype).reshape(-1)
    if schedule.numel() == 1:
        schedule = schedule.expand(T)
    if schedule.numel() != T or not bool(((schedule >= 0) & (schedule <= 1)).all()):
        raise ValueError(f"alpha must be a number in [0, 1] or T = {T} of them; got {schedule.numel()} values "
                         f"from {float(schedule.min()):g} to {float(schedule.max()):g}")
    if noisy.direction is not None and bool((schedule > 0).any()):
        raise ValueError("path_kernel_derivative moves tangent perturbations onto the noise, which needs noise "
                         "in every direction; with foliated noise use alpha = 0 or kernel_derivative")
    return schedule


def _check_window(window: int | None, errors: str) -> int | None:
    """The ergodic window ``W`` (or ``None``) and the kind of error bar, checked."""
    if window is not None:
        check_whole(window, "window", 1)
    if errors not in ("blocks", "paths"):
        raise ValueError(f"errors must be 'blocks' or 'paths'; got {errors!r}")
    return None if window is None else int(window)


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
    parameter: str | Sequence[str] | None,
    average: bool = False,
    window: int | None = None,
    warmup: int = 0,
    blocks: int = 20,
    errors: str = "blocks",
    groups: int | None = 20,
) -> Estimate | Gradient:
    r"""The derivative of :math:`\mathbb{E}\Phi(x_T)` (or of the average of :math:`\Phi(x_1..x_T)`)
    with respect to a scalar parameter, or to every parameter at once, by kernel differentiation.

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
        :math:`\Phi`, states ``(..., dim)`` to values ``(...,)``; with ``parameter=None`` or a
        list also ``(..., m)``: ``m`` statistics differentiated at once with the same scores
        (no extra simulation). The all-parameter version passes the paths flattened to one
        axis, ``(paths, dim)``.
    parameter
        Name of a scalar parameter of the wrapped map (returns an :class:`Estimate`), or
        ``None`` for every parameter of :meth:`Map.params <chaosgrad.maps.Map.params>`, scalar
        or tensor, or a list of names (returns a :class:`~chaosgrad.gradients.Gradient`).
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
    groups
        All-parameter version only (ignored for a single name): the samples behind the error
        bar are the means over ``min(groups, paths)`` groups of consecutive paths (or down to
        half as many, where that many divide the paths into equal groups; otherwise nearly equal
        sizes; the value is the mean over all paths and the error bar their batch-means
        standard error, as :func:`~chaosgrad.estimates.batch_means`), so that the parameter
        gradients are summed within a group in one reverse pass and their cost does not grow
        with the number of parameters. ``None``: one sample per path, the scalar estimator's
        error bar exactly, at a cost of paths :math:`\times P` per step.

    Returns
    -------
    Estimate or Gradient
        The mean over paths with its standard error (ergodic version: over blocks, or over
        paths with ``errors="paths"``). Centring by the mean over :math:`n` paths would bias
        the estimate by the factor :math:`1 - 1/n`; it is multiplied by :math:`n/(n-1)`.
        For ``parameter=None`` or a list: a :class:`~chaosgrad.gradients.Gradient` whose
        ``value[name]`` has shape ``(*output, *param.shape)`` (``output`` is ``()`` or
        ``(m,)``), with ``samples`` one per group of paths (``info["per"] == "group"``, their sizes
        in ``info["sizes"]``), or one per block for the ergodic version's ``errors="blocks"``
        (``info["per"] == "block"``); the value is the mean weighted by the sizes, as
        :func:`~chaosgrad.estimates.batch_means`.
        Its directional derivatives equal the scalar estimates on
        :class:`~chaosgrad.gradients.Line` with the same noise.

    Raises
    ------
    TypeError
        If ``noisy`` is not a :class:`~chaosgrad.systems.Noisy` map.
    KeyError
        For a name in a list that the map does not have.
    ValueError
        For an unknown scalar parameter, a name listed twice, ``T < 1``, ``warmup < 0``,
        ``window < 1``, fewer than two paths without ``window``, an observable of the wrong
        shape, or (foliated noise) a parameter that moves the map outside the noise
        directions.

    Notes
    -----
    Cost: one simulation plus the parameter derivatives and one dot product per step. On an
    autonomous map (:attr:`~chaosgrad.maps.Map.autonomous`) the states of blocks of steps
    (about :math:`2^{20}` numbers each) are stored and their parameter derivatives taken in
    one call, so that a map without a closed form (the forward-mode default of
    ``Map._step_param_jvp``) costs about 1.3 to 1.8 simulations instead of several.

    **Every parameter at once.** The score of step :math:`n` for every parameter is one
    reverse product, :math:`s_n = (\partial_\gamma f(x_n))^\top w_n` with :math:`w_n = \xi_n/\sigma`
    (foliated noise :math:`x_{n+1} = f(x_n) + \sigma B\xi_n`: :math:`w_n = (B^+)^\top\xi_n/\sigma`, since
    the score is :math:`\langle c_n, \xi_n\rangle/\sigma` with :math:`B c_n = \partial_\gamma f`; valid only
    where :math:`\partial_\gamma f` lies in span(:math:`B`), which is checked for each named parameter
    along a random direction by :meth:`~chaosgrad.maps.Map.param_jvp` at steps 0, 1 and the last).
    Every estimate above is, per path :math:`i`, a sum :math:`\sum_n \omega^i_n \otimes s^i_n` whose
    weights come from the observable alone, so nothing of size paths :math:`\times P` per step is
    formed: the paths are simulated and their states and noises stored (*simulate*), the weights
    computed (*centre*), and :math:`(\partial_\gamma f(x^i_n))^\top(\omega^i_n w^i_n)` summed over the
    paths of each group in one parameter vjp per stored state (*summarise*; one reverse pass per
    group and output, many steps per call on an autonomous map). The weights:

    - ``average=False``: :math:`\omega^i_n = \frac{n}{n-1}(\Phi^i_T - \bar\Phi_T)` for every step.
    - ``average=True``: :math:`\frac1T\sum_m c^i_m S^i_m`, :math:`c_m = \Phi(x_m) - \bar\Phi_m` centred
      over paths at step :math:`m`, is :math:`\sum_n s_n \omega_n` with the suffix sums
      :math:`\omega^i_n = \frac{n}{n-1}\frac1T\sum_{m>n} c^i_m`.
    - ``window=W``: with :math:`S_m - S_{m-W} = \sum_{m-W\le n<m} s_n` and the time mean
      :math:`\langle\Phi\rangle^i` of path :math:`i`,
      :math:`\sum_{m\in b}(\Phi_m - \langle\Phi\rangle)(S_m - S_{m-W}) = \sum_n s_n
      \sum_{m\in b,\,n<m\le n+W}(\Phi_m - \langle\Phi\rangle)` for a block :math:`b` of measured
      steps (all of them with ``errors="paths"``): the scores of the steps whose windows reach
      :math:`b`, weighted by the centred values they reach; ``errors="blocks"`` takes
      about :math:`T + \text{blocks}\cdot W` parameter vjps per path.

    Cost in map primitives: one step and one parameter vjp per state (a vector observable:
    ``m`` covectors per state); memory: the stored paths, as :meth:`~chaosgrad.maps.Map.trajectory`
    (twice). With ``groups=None`` the parameter vjps are per path, and their cost and memory
    grow like paths :math:`\times P`.

    See Also
    --------
    path_kernel_derivative : the hybrid with the pathwise derivative.
    chaosgrad.derivatives.finite_difference : the reference.
    chaosgrad.gradients.Gradient : the all-parameter result.
    """
    if not isinstance(parameter, str):
        return _kernel_gradient(noisy, x0, T, observable, parameter, average, window, warmup, blocks, errors, groups)
    x = _check(noisy, x0, T, parameter, warmup)
    _check_window(window, errors)
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
    return _from_scores(torch.cat(scores), torch.stack(values), warmup, average, window, errors, blocks)


def _from_scores(s: Tensor, phi: Tensor, warmup: int, average: bool, window: int | None, errors: str,
                 blocks: int) -> Estimate:
    r"""The estimate from per-step scores ``s`` (``(total, ...)``: step :math:`n`'s, whose
    perturbation first reaches :math:`x_{n+1}`) and the observed values ``phi``
    (:math:`\Phi(x_1), .., \Phi(x_{total})` where ``average`` or ``window`` is set, else
    :math:`\Phi(x_{total})` alone): :math:`\mathbb E[(\Phi - \bar\Phi)\sum_n s_n]` over the pairs
    that each mode keeps (see :func:`kernel_derivative`). Shared by the kernel and the
    divergence estimators (:func:`~chaosgrad.divergence.divergence_derivative`), which differ
    only in their scores."""
    total = s.shape[0]
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
    parameter: str | Sequence[str] | None,
    alpha: float | Sequence[float] | Tensor,
    average: bool = False,
    groups: int | None = 20,
) -> Estimate | Gradient:
    r"""The derivative of :math:`\mathbb{E}\Phi(x_T)` (or of the average of :math:`\Phi(x_1..x_T)`)
    by the path-kernel hybrid.

    At every step a fraction ``alpha`` of the tangent perturbation is moved onto the noise
    kernel (see the module docstring): ``alpha = 0`` is the pathwise derivative (a forward
    tangent, which explodes on an unstable map), ``alpha = 1`` is
    :func:`kernel_derivative` (variance growing like :math:`T/\sigma^2`); in between, the
    tangent is damped by :math:`(1-\alpha)` per step and the score grows more slowly.

    Parameters
    ----------
    noisy, x0, T, observable, parameter, groups
        As :func:`kernel_derivative` (no warm-up, no window): ``parameter=None`` or a list
        gives a :class:`~chaosgrad.gradients.Gradient` by the adjoint sweep below (samples per
        group of paths), and then ``observable`` may return ``(paths, m)`` (``m`` sweeps at once).
    alpha
        A float in ``[0, 1]``, or one value per step (length ``T``).
    average
        ``True``: the derivative of :math:`\mathbb{E}\frac1T\sum_{m=1}^T\Phi(x_m)`, each
        :math:`\Phi(x_m)` paired with the tangent :math:`v_m` and the score accumulated up to
        step :math:`m`.

    Returns
    -------
    Estimate or Gradient
        Mean over paths and its standard error (per parameter, of its shape, for a list or
        ``None``).

    Raises
    ------
    ValueError
        For ``alpha`` outside ``[0, 1]`` or a schedule whose length is not ``T``; see
        :func:`kernel_derivative` for names and observables.

    Notes
    -----
    **The adjoint form (every parameter at once).** Per path the estimate is linear in a
    parameter perturbation :math:`\delta`: with :math:`J_n = Df(x_n)`, :math:`F_n = \partial_\gamma f(x_n)`,
    :math:`u_n = J_n v_n + F_n\delta`, :math:`v_{n+1} = (1-\alpha_n)u_n`, :math:`v_0 = 0` and
    :math:`S_m = \sum_{n<m}\alpha_n\langle u_n, \xi_n\rangle/\sigma`, it is

    .. math:: E = \sum_m w_m\langle\nabla\Phi(x_m), v_m\rangle + \sum_m k_m S_m,\qquad
              k_m = \tfrac{n}{n-1}\,w_m(\Phi(x_m) - \bar\Phi_m),

    with :math:`w_m = 1/T` for every :math:`m` (``average=True``) or :math:`w_T = 1` only. Exchanging
    the sums, :math:`\sum_m k_m S_m = \sum_n \alpha_n K_n\langle u_n, \xi_n\rangle/\sigma` with
    :math:`K_n = \sum_{m>n}k_m`, and :math:`v_{n+1} = (1-\alpha_n)u_n`, so
    :math:`E = \sum_{n<T}\langle a_n, u_n\rangle` with
    :math:`a_n = w_{n+1}(1-\alpha_n)\nabla\Phi(x_{n+1}) + \alpha_n K_n\xi_n/\sigma`. Since
    :math:`u_{n+1} = (1-\alpha_n)J_{n+1}u_n + F_{n+1}\delta`, the covector
    :math:`\lambda_n = \partial E/\partial u_n` obeys

    .. math:: \lambda_{T-1} = a_{T-1},\qquad \lambda_n = a_n + (1-\alpha_n)J_{n+1}^\top\lambda_{n+1},

    and :math:`dE/d\delta = \sum_n F_n^\top\lambda_n`: after the simulation (states and noises
    stored) and the observable's values and gradients (:math:`K_n` needs every later value),
    one backward sweep of :meth:`~chaosgrad.maps.Map._vjp_param_vjp` per step gives every
    parameter's gradient, at a cost independent of :math:`P`. Along any direction it equals the
    forward estimator on :class:`~chaosgrad.gradients.Line` with the same noise.
    """
    if not isinstance(parameter, str):
        return _path_kernel_gradient(noisy, x0, T, observable, parameter, alpha, average, groups)
    x = _check(noisy, x0, T, parameter, 0)
    T = int(T)
    schedule = _schedule(noisy, alpha, T, x.dtype)
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


# -- every parameter at once ------------------------------------------------------------------
# The all-parameter estimators (parameter=None or a list of names) run in three phases:
# simulate (store the states and noises), centre (the weight of each step's score per path,
# from the observable's values), summarise (one parameter vjp per stored state of the weighted
# noise covectors, summed over the paths of each group). Paths are flattened to one axis,
# (paths, dim), and the named parameters' gradients to one axis of P numbers.


def _outputs(observable: Observable, x: Tensor, step: int, shape: tuple[int, ...] | None
             ) -> tuple[Tensor, tuple[int, ...]]:
    r""":math:`\Phi` at states ``x`` of shape ``(paths, dim)`` as ``(paths, m)``, and the shape of one
    value: ``()`` for a scalar observable, ``(m,)`` for ``m`` statistics at once. ``shape`` is
    what the earlier steps returned (``None`` at the first), which must not change."""
    value = evaluate_observable(observable, x, "kernel differentiation")
    batch = tuple(x.shape[:-1])
    if tuple(value.shape) == batch:
        out: tuple[int, ...] = ()
    elif value.dim() == len(batch) + 1 and tuple(value.shape[:-1]) == batch:
        out = (value.shape[-1],)
    else:
        raise ValueError(f"observable must map states of shape (paths, dim) to values of shape (paths,), or (paths, m) "
                         f"for m statistics at once; for states {tuple(x.shape)} it returned {tuple(value.shape)}. "
                         "Stack several statistics along one last axis (torch.stack([...], -1)) and keep the paths "
                         "axis first")
    if shape is not None and out != shape:
        raise ValueError(f"observable returned one value of shape {out} at step {step} but {shape} before; "
                         "return the same statistics at every step")
    check_finite(value.detach(), "observable", step=step)
    return (value if out else value[..., None]), out


def _outputs_with_gradient(observable: Observable, x: Tensor, step: int, shape: tuple[int, ...] | None
                           ) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    r""":func:`_outputs` and the gradients :math:`\nabla\Phi_j(x)` of each of the ``m`` outputs,
    shape ``(m, paths, dim)``, by autograd."""
    with torch.enable_grad():
        state = x.detach().requires_grad_(True)
        phi, out = _outputs(observable, state, step, shape)
        rows = []
        for j in range(phi.shape[1]):
            (row,) = torch.autograd.grad(phi[:, j].sum(), state, retain_graph=j + 1 < phi.shape[1], allow_unused=True)
            rows.append(torch.zeros_like(state) if row is None else row)
    return phi.detach(), torch.stack(rows), out


def _flatten(grads: dict[str, Tensor], names: list[str], lead: int) -> Tensor:
    """The gradients of ``names`` with ``lead`` leading axes, flattened and concatenated: ``(*lead, P)``."""
    return torch.cat([grads[k].reshape(*grads[k].shape[:lead], -1) for k in names], -1)


def _split(flat: Tensor, noisy: Noisy, names: list[str], out: tuple[int, ...]) -> dict[str, Tensor]:
    """Inverse of :func:`_flatten` for ``flat`` of shape ``(s, m, P)``: ``(s, *out, *param.shape)``
    per name (the axis ``m`` dropped for a scalar observable)."""
    params = noisy.map.params()
    pieces = flat.split([params[k].numel() for k in names], -1)
    return {k: piece.reshape(flat.shape[0], *out, *params[k].shape) for k, piece in zip(names, pieces)}


def _noise_covector(noisy: Noisy, xi: Tensor, pinv: Tensor | None) -> Tensor:
    r"""The covector :math:`w_n` whose parameter gradient :math:`(\partial_\gamma f)^\top w_n` is the
    score of step ``n`` for every parameter: :math:`\xi_n/\sigma`, or with foliated noise
    :math:`(B^+)^\top\xi_n/\sigma` (then :math:`\langle c_n, \xi_n\rangle = \langle \partial_\gamma f,
    (B^+)^\top\xi_n\rangle` for the coefficients :math:`c_n = B^+\partial_\gamma f`)."""
    return (xi if pinv is None else xi @ pinv) / noisy.sigma


def _foliation_checked(noisy: Noisy, x: Tensor, names: list[str], n: int) -> None:
    r"""With foliated noise, refuse parameters whose :math:`\partial f/\partial\gamma` at the states
    ``x`` of step ``n`` leaves the span of the noise directions: each parameter is moved along a
    random direction (a generator seeded by ``n``, not the noise's) and :meth:`Map.param_jvp
    <chaosgrad.maps.Map.param_jvp>` checked, which is inside the span for almost every
    direction only if every component is."""
    if noisy.direction is None:
        return
    generator = torch.Generator().manual_seed(n)
    params = noisy.map.params()
    for name in names:
        v = torch.randn(params[name].shape, generator=generator, dtype=torch.float64)
        _inside_span(noisy, noisy.map.param_jvp(x, {name: v}, n)[None], name, n,
                     hint="; or name only the parameters that move the map inside it (parameter=[...])")


def _groups(paths: int, groups: int | None) -> tuple[Tensor, Tensor]:
    """The partition of ``paths`` into ``G = min(groups, paths)`` groups of consecutive paths of
    nearly equal sizes (``None``: one per path; the largest ``G`` between half that and that
    which divides ``paths`` where there is one, so that every group has the same size), as an index ``(G, k)`` into the paths padded
    with one extra row (index ``paths``) where a group is shorter than ``k``, and the sizes ``(G,)``."""
    if groups is not None and (int(groups) != groups or groups < 2):
        raise ValueError(f"groups must be a whole number >= 2 (the samples behind the error bar) or None for one "
                         f"per path; got groups = {groups}")
    count = paths if groups is None else min(int(groups), paths)
    if groups is not None:  # prefer equal groups (nothing padded, no wasted vjps) down to half as many
        count = next((d for d in range(count, (count + 1) // 2 - 1, -1) if paths % d == 0), count)
    edges = torch.linspace(0, paths, count + 1).round().long().tolist()
    k = max(hi - lo for lo, hi in zip(edges[:-1], edges[1:]))
    index = torch.full((count, k), paths, dtype=torch.long)
    for g, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        index[g, : hi - lo] = torch.arange(lo, hi)
    return index, torch.tensor([hi - lo for lo, hi in zip(edges[:-1], edges[1:])], dtype=torch.float64)


def _grouped(t: Tensor, index: Tensor, state: bool = False) -> Tensor:
    """``t`` of shape ``(..., paths, dim)`` rearranged to ``(..., G, k, dim)`` by :func:`_groups`'
    index; the padding is zero for a covector and the first path for a state (``state=True``)."""
    padded = torch.cat([t, t[..., :1, :] if state else torch.zeros_like(t[..., :1, :])], -2)
    return padded[..., index, :]


def _batch_gradient(noisy: Noisy, means: Tensor, weights: Tensor, names: list[str], out: tuple[int, ...],
                    per: str) -> Gradient:
    r"""A :class:`~chaosgrad.gradients.Gradient` from the means ``(s, m, P)`` of ``s`` groups of
    paths (or blocks of steps) of sizes ``weights``: the value is their weighted mean (the mean
    over every path or step), the standard error :math:`\mathrm{std}/\sqrt s`, as
    :func:`~chaosgrad.estimates.batch_means`."""
    if means.shape[0] < 2:
        raise ValueError("kernel_derivative needs at least 2 independent paths for an error bar "
                         "(leading axes of x0), or window=W on one long path")
    value = (means * weights[:, None, None]).sum(0) / weights.sum()
    stderr = means.std(0, correction=1) / math.sqrt(means.shape[0])
    one = lambda t: {k: v[0] for k, v in _split(t[None], noisy, names, out).items()}  # noqa: E731
    return Gradient(one(value), one(stderr), _split(means, noisy, names, out), None, out,
                    {"per": per, "sizes": weights})


def _simulate(noisy: Noisy, x: Tensor, T: int, first: int = 0, names: Sequence[str] = ()
              ) -> tuple[list[Tensor], list[Tensor]]:
    r"""Phase 1: the noisy paths, :math:`x_{\text{first}}..x_T` and the noises
    :math:`\xi_{\text{first}}..\xi_{T-1}` (drawn in the order of the scalar estimators). With
    foliated noise the parameters ``names`` are checked at steps 0, 1 and ``T - 1``."""
    states, draws = [], []
    with torch.no_grad():
        for n in range(T):
            if names and n in (0, 1, T - 1):
                _foliation_checked(noisy, x, list(names), n)
            xi = noisy.noise(x)
            if n >= first:
                states.append(x)
                draws.append(xi)
            x = check_finite(noisy.map.step(x, n) + noisy.sigma * noisy.kick(xi), "state", step=n + 1)
    return states + [x], draws


def _kernel_gradient(noisy: Noisy, x0: Tensor, T: int, observable: Observable, parameter: Sequence[str] | None,
                     average: bool, window: int | None, warmup: int, blocks: int, errors: str,
                     groups: int | None) -> Gradient:
    """:func:`kernel_derivative` for ``parameter=None`` or a list of names (see its Notes)."""
    x = _check(noisy, x0, T, parameter, warmup)
    names = parameter_names(noisy.map, parameter)
    W = _check_window(window, errors)
    x = x.reshape(-1, noisy.dim)  # the paths along one axis (the noise is drawn in the same order)
    T, paths = int(T), x.shape[0]
    total = warmup + T
    index, sizes = _groups(paths, groups)
    if W is None and paths < 2 or W is not None and errors == "paths" and paths < 2:
        raise ValueError("kernel_derivative needs at least 2 independent paths for an error bar "
                         "(leading axes of x0), or window=W with errors='blocks' on one long path")
    first = 0 if W is None else max(0, warmup + 1 - W)  # earlier scores reach no measured step
    states, draws = _simulate(noisy, x, total, first, names)
    values, out = {}, None
    for m in range(warmup + 1 if average or W is not None else total, total + 1):
        values[m], out = _outputs(observable, states[m - first], m, out)
    pinv = None if noisy.direction is None else torch.linalg.pinv(noisy.direction)
    covectors = [_noise_covector(noisy, xi, pinv) for xi in draws]
    if W is not None and errors == "blocks":
        return _blocks_gradient(noisy, states, covectors, values, first, W, blocks, names, out)
    weights = _step_weights(values, first, total, average, W)
    sums = _weighted_scores(noisy, states, covectors, weights, first, names, index)  # (m, G, P)
    return _batch_gradient(noisy, sums.transpose(0, 1) / sizes[:, None, None], sizes, names, out, "group")


def _step_weights(values: dict[int, Tensor], first: int, total: int, average: bool, W: int | None) -> list[Tensor]:
    r"""Phase 2 (centre): the weight :math:`\omega^i_n` of the score of step :math:`n` of path
    :math:`i`, ``(paths, m)`` for ``n = first..total-1``, such that path :math:`i`'s estimate is
    :math:`\sum_n \omega^i_n \otimes s^i_n` (see the Notes of :func:`kernel_derivative`)."""
    measured = sorted(values)
    if W is None:  # c_m centred over paths, weights the suffix sums of n/(n-1) c_m / (number of measured steps)
        factor = _unbias(values[measured[0]].shape[0]) / len(measured)
        suffix, weights = 0.0, []
        for n in range(total - 1, first - 1, -1):
            if n + 1 in values:
                suffix = suffix + factor * (values[n + 1] - values[n + 1].mean(0))
            weights.append(suffix)
        return weights[::-1]
    phi = torch.stack([values[m] for m in measured])  # the window: every measured step in one block
    return _window_weights(phi - phi.mean(0), measured[0], 0, len(measured), first, W, 1 / len(measured))[1]


def _window_weights(centred: Tensor, start: int, lo: int, hi: int, first: int, W: int, scale: float
                    ) -> tuple[range, list[Tensor]]:
    r"""The steps :math:`n` whose windows :math:`(n, n+W]` meet the measured steps
    ``start + lo .. start + hi - 1`` (``centred[j]`` is :math:`\Phi - \langle\Phi\rangle` at step
    ``start + j``), and their weights: ``scale`` times the sum of ``centred`` over the steps of the
    window in that range, from prefix sums."""
    prefix = torch.cat([torch.zeros_like(centred[:1]), torch.cumsum(centred[lo:hi], 0)])
    steps = range(max(first, start + lo - W), start + hi - 1)
    weights = []
    for n in steps:  # the window's first and last measured step in the range, as indices into centred[lo:hi]
        a, z = max(n + 1, start + lo) - start - lo, min(n + W, start + hi - 1) - start - lo
        weights.append(scale * (prefix[z + 1] - prefix[a]))
    return steps, weights


def _blocks_gradient(noisy: Noisy, states: list[Tensor], covectors: list[Tensor], values: dict[int, Tensor],
                     first: int, W: int, blocks: int, names: list[str], out: tuple[int, ...]) -> Gradient:
    r"""Phases 2 and 3 of the ergodic estimate with batch-means error bars: for each block
    :math:`b` of measured steps, :math:`\frac{1}{\text{paths}\,|b|}\sum_{m\in b}\sum_i
    (\Phi^i_m - \langle\Phi\rangle^i)(S^i_m - S^i_{m-W})`, rearranged as the scores of the steps
    :math:`n` whose windows :math:`(n, n+W]` reach :math:`b`, weighted by the centred values
    they reach."""
    measured = sorted(values)
    T, start = len(measured), measured[0]
    nblocks = max(1, min(check_whole(blocks, "blocks", 1), T))
    if nblocks < 2:
        raise ValueError("an error bar needs at least two blocks: pass a series of two or more values (T >= 2)")
    edges = torch.linspace(0, T, nblocks + 1).round().long().tolist()  # as estimates.batch_means
    phi = torch.stack([values[m] for m in measured])
    centred = phi - phi.mean(0)  # (T, paths, m)
    paths = phi.shape[1]
    index = torch.arange(paths)[None]  # every path in one group
    means = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        steps, weights = _window_weights(centred, start, lo, hi, first, W, 1 / (paths * (hi - lo)))
        sums = _weighted_scores(noisy, states, covectors, weights, first, names, index, steps[0])
        means.append(sums[:, 0])
    lengths = torch.tensor([hi - lo for lo, hi in zip(edges[:-1], edges[1:])], dtype=torch.float64)
    return _batch_gradient(noisy, torch.stack(means), lengths, names, out, "block")


def _weighted_scores(noisy: Noisy, states: list[Tensor], covectors: list[Tensor], weights: list[Tensor],
                     first: int, names: list[str], index: Tensor, begin: int | None = None) -> Tensor:
    r"""Phase 3 (summarise): :math:`\sum_n \sum_{i\in g} \omega^i_n \otimes (\partial_\gamma f(x^i_n))^\top w^i_n`
    for the steps ``begin, begin + 1, ..`` (one per weight; ``states[n - first]``) and each group
    ``g`` of ``index``: shape ``(m, G, P)``. One :meth:`~chaosgrad.maps.Map._param_vjp` per step,
    summed over the members of each group and kept per output; on an autonomous map the
    states of many steps go into one call (about ``REVERSE_CHUNK_STATES`` states)."""
    begin = first if begin is None else begin
    m = weights[0].shape[-1]
    chunk = max(1, REVERSE_CHUNK_STATES // (m * index.numel())) if noisy.map.autonomous else 1
    total = None
    with torch.no_grad():
        for lo in range(0, len(weights), chunk):
            hi = min(lo + chunk, len(weights))
            # the c steps side by side: states (paths, c, dim) -> (G, k c, dim), covectors -> (m, G, k c, dim)
            xs = torch.stack([states[begin - first + j] for j in range(lo, hi)], -2)
            ws = torch.stack([weights[j].mT[:, :, None] * covectors[begin - first + j] for j in range(lo, hi)], -2)
            x = _grouped(xs.flatten(-2), index, state=True).unflatten(-1, xs.shape[-2:]).flatten(-3, -2)
            w = _grouped(ws.flatten(-2), index).unflatten(-1, ws.shape[-2:]).flatten(-3, -2)
            g = _flatten(noisy.map._param_vjp(x.expand_as(w), w, begin + lo, 2), names, 2)
            total = g if total is None else total + g
    return total


def _path_kernel_gradient(noisy: Noisy, x0: Tensor, T: int, observable: Observable, parameter: Sequence[str] | None,
                          alpha: float | Sequence[float] | Tensor, average: bool, groups: int | None) -> Gradient:
    """:func:`path_kernel_derivative` for ``parameter=None`` or a list of names: the adjoint
    sweep derived in its Notes, in three phases."""
    x = _check(noisy, x0, T, parameter, 0)
    names = parameter_names(noisy.map, parameter)
    T = int(T)
    schedule = _schedule(noisy, alpha, T, x.dtype)
    x = x.reshape(-1, noisy.dim)
    if x.shape[0] < 2:
        raise ValueError("path_kernel_derivative needs at least 2 independent paths (leading axes of x0)")
    index, sizes = _groups(x.shape[0], groups)
    states, draws = _simulate(noisy, x, T)
    covectors, out = _hybrid_covectors(noisy, states, draws, observable, schedule, average, _unbias(x.shape[0]))
    sums = _adjoint_sweep(noisy, states, covectors, schedule, names, index)  # (m, G, P)
    return _batch_gradient(noisy, sums.transpose(0, 1) / sizes[:, None, None], sizes, names, out, "group")


def _hybrid_covectors(noisy: Noisy, states: list[Tensor], draws: list[Tensor], observable: Observable,
                      schedule: Tensor, average: bool, factor: float) -> tuple[list[Tensor], tuple[int, ...]]:
    r"""Phase 2 of the adjoint hybrid: the covectors :math:`a_n` on :math:`u_n`, ``n = 0..T-1``,
    each of shape ``(m, paths, dim)``, and the shape of one value of the observable:
    :math:`a_n = w_{n+1}(1-\alpha_n)\nabla\Phi(x_{n+1}) + \alpha_n K_n\,\xi_n/\sigma` with
    :math:`K_n = \sum_{m>n} k_m`, :math:`k_m = \frac{n}{n-1} w_m (\Phi(x_m) - \bar\Phi_m)`."""
    T = len(draws)
    weight = 1.0 / T if average else 1.0
    values, gradients, out = {}, {}, None
    for m in range(1, T + 1) if average else [T]:
        values[m], gradients[m], out = _outputs_with_gradient(observable, states[m], m, out)
    covectors, K = [None] * T, torch.zeros_like(values[T])  # K: (paths, m)
    for n in range(T - 1, -1, -1):
        if n + 1 in values:
            K = K + factor * weight * (values[n + 1] - values[n + 1].mean(0))
        a = weight * (1 - schedule[n]) * gradients[n + 1] if n + 1 in gradients else 0.0
        if schedule[n] > 0:
            a = a + schedule[n] * K.mT[:, :, None] * draws[n] / noisy.sigma
        covectors[n] = torch.as_tensor(a).expand(K.shape[1], *states[n].shape)
    return covectors, out


def _adjoint_sweep(noisy: Noisy, states: list[Tensor], covectors: list[Tensor], schedule: Tensor,
                   names: list[str], index: Tensor) -> Tensor:
    r"""Phase 3 of the adjoint hybrid: :math:`\lambda_{T-1} = a_{T-1}`,
    :math:`\lambda_n = a_n + (1-\alpha_n)\,Df(x_{n+1})^\top\lambda_{n+1}`, and
    :math:`\sum_n (\partial_\gamma f(x_n))^\top\lambda_n` summed over the paths of each group of
    ``index``, ``(m, G, P)``: one :meth:`~chaosgrad.maps.Map._vjp_param_vjp` per step (a
    :meth:`~chaosgrad.maps.Map._param_vjp` where :math:`\alpha = 1` carries nothing back, and at
    step 0), on the paths laid out by group (padding paths carry a zero covector). Unlike
    :func:`_weighted_scores` the parameter vjps are not batched over steps: the adjoint step
    needs the same reverse pass, and sharing it costs less than a separate vjp plus batched
    parameter vjps (benchmarks/bench_gradients.py: 4.8 against 6.0 simulations at P = 995)."""
    T = len(covectors)
    lam, total = _grouped(covectors[T - 1], index), None
    with torch.no_grad():
        for n in range(T - 1, -1, -1):
            x = _grouped(states[n], index, state=True).expand_as(lam)
            carry = n > 0 and bool(schedule[n - 1] < 1)
            if carry:
                pulled, grads = noisy.map._vjp_param_vjp(x, lam, n, 2)
            else:
                grads = noisy.map._param_vjp(x, lam, n, 2)
            g = _flatten(grads, names, 2)
            total = g if total is None else total + g
            if n > 0:
                lam = _grouped(covectors[n - 1], index)
                if carry:
                    lam = lam + (1 - schedule[n - 1]) * check_finite(pulled, "adjoint covector", step=n)
    return total


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
