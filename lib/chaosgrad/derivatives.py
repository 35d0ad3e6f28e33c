r"""Derivatives of time-averaged objectives: backpropagation, its clipped and truncated
variants, and central finite differences with common random numbers.

For a map :math:`x_{n+1} = f_n(x_n; \gamma)` and an observable :math:`\Phi`, the averaged
objective over :math:`T` steps is

.. math::  J_T(\gamma) = \frac1T \sum_{n=1}^{T} \Phi(x_n).

Backpropagation computes :math:`dJ_T/d\gamma` for one orbit exactly, by the adjoint
recursion with sources,

.. math::  \psi_T = \tfrac1T\nabla\Phi(x_T), \qquad
           \psi_n = Df_n(x_n)^\top \psi_{n+1} + \tfrac1T \nabla\Phi(x_n), \qquad
           \frac{dJ_T}{d\gamma} = \sum_{n=0}^{T-1} \Big(\frac{\partial f_n}{\partial\gamma}\Big)^{\!\top} \psi_{n+1}.

For a chaotic map the adjoint grows like :math:`e^{\lambda_1 (T - n)}`, so the per-orbit
derivative grows exponentially with :math:`T` while the derivative of the long-time average
(when it exists) does not: that is the failure chapter 3 measures. Written out, the
derivative is a double sum over the step :math:`n` at which the parameter acts and the step
:math:`m > n` at which :math:`\Phi` is observed,

.. math::  \frac{dJ_T}{d\gamma} = \frac1T \sum_{m=1}^{T}\sum_{n=0}^{m-1}
           \nabla\Phi(x_m)^\top Df_{m-1}\cdots Df_{n+1}\,\frac{\partial f_n}{\partial\gamma},

whose term of lag :math:`d = m - n` carries :math:`d - 1` Jacobians. The remedies keep the
estimate finite and make it biased: clipping the adjoint (rescale :math:`\psi_n` to norm at
most ``clip`` at every step), clipping the total (``clip_total``: the per-orbit derivative
clamped to :math:`[-c, c]`, which is what ``torch.nn.utils.clip_grad_norm_`` does to one
scalar parameter), block truncation (drop the propagated part of :math:`\psi` every
``truncate`` steps: truncated backpropagation through time on non-overlapping windows) and
sliding-window truncation (keep exactly the terms of lag :math:`d \le K`,
:func:`lag_contributions`). Block truncation with windows of :math:`\tau` steps is the
ensemble adjoint of Lea, Allen & Haine (2000) (:func:`ensemble_adjoint`) with its windows
taken one after another along one orbit.

The reference is a central difference of :math:`J_T` over an ensemble of orbits. Sharing the
initial states (and noise) at :math:`\gamma \pm h` (common random numbers) removes the
spread of the starting point from the quotient, and for short or stable runs, where the two
orbits stay close, the quotient is then the derivative to :math:`O(h^2)`. For a long chaotic
run the two orbits decorrelate after about :math:`\ln(1/h)/\lambda_1` steps and sharing the
start no longer helps: the quotient's spread is that of
:math:`(J_T(\gamma+h) - J_T(\gamma-h))/(2h)` for independent orbits,
:math:`\approx \sqrt2\,\mathrm{std}(J_T)/(2h)`, growing like :math:`1/h`. What makes the
error bar small is then many orbits and a long :math:`T` (:math:`\mathrm{std}(J_T)
\sim T^{-1/2}`); :func:`finite_difference` takes independent starts for the two sides
(``x0_minus``) to measure this.

References
----------
D. J. Lea, M. R. Allen, T. W. N. Haine, Sensitivity analysis of the climate of a chaotic
system, Tellus A 52 (2000) 523-532 (`lea2000sensitivity`).
G. L. Eyink, T. W. N. Haine, D. J. Lea, Ruelle's linear response formula, ensemble adjoint
schemes and Levy flights, Nonlinearity 17 (2004) 1867-1889 (`eyink2004ruelle`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .estimates import Estimate
from .maps import Map
from .validation import check_finite, check_positive, check_scalar_parameter, check_whole

__all__ = ["backprop_derivative", "ensemble_adjoint", "finite_difference", "lag_contributions",
           "time_average"]

Observable = Callable[[Tensor], Tensor]


def _check_warmup(warmup: int) -> int:
    if int(warmup) != warmup or warmup < 0:
        raise ValueError(f"warmup must be a whole number >= 0; got warmup = {warmup}")
    return int(warmup)


def _settle(map: Map, x0: Tensor, warmup: int, n0: int) -> Tensor:
    return map.trajectory(x0, _check_warmup(warmup), n0)[-1]


def time_average(map: Map, x0: Tensor, T: int, observable: Observable, warmup: int = 0, n0: int = 0) -> Tensor:
    r""":math:`J_T = \frac1T\sum_{n=1}^T \Phi(x_n)` for every ensemble member, after ``warmup`` steps.

    ``observable`` maps states ``(..., dim)`` to values ``(...,)``. Returns shape ``(...,)``.
    """
    if int(T) != T or T < 1:
        raise ValueError(f"T must be a whole number >= 1; got T = {T}")
    x = _settle(map, x0, warmup, n0)
    orbit = map.trajectory(x, int(T), n0 + warmup)
    return observable(orbit[1:]).mean(0)


def finite_difference(
    make_map: Callable[[float], Map],
    gamma: float,
    h: float,
    x0: Tensor,
    T: int,
    observable: Observable,
    warmup: int = 0,
    average: bool = True,
    x0_minus: Tensor | None = None,
) -> Estimate:
    r"""Central difference :math:`(J_T(\gamma + h) - J_T(\gamma - h))/(2h)` per member, with an error bar.

    With shared starts (common random numbers) the spread of the per-member quotients is
    small while the two orbits stay close, i.e. for stable maps or short chaotic runs; for a
    long chaotic run the orbits decorrelate and the spread is
    :math:`\approx\sqrt2\,\mathrm{std}(J_T)/(2h)`, as with independent starts (module
    docstring). The error bar of the mean is correct either way.

    Parameters
    ----------
    make_map
        Builds the map at a parameter value. For common random numbers it must give both
        maps the same randomness (the same weights, the same noise seed).
    gamma, h
        The parameter value and the half-step, ``h > 0``.
    x0
        Initial states, shape ``(M, dim)`` with ``M >= 2`` members, shared by both sides
        unless ``x0_minus`` is given.
    T, observable, warmup
        As :func:`time_average`.
    average
        ``True``: difference the average :math:`J_T`; ``False``: difference the final value
        :math:`\Phi(x_T)` (e.g. a network's output), as :func:`~chaosgrad.kernel.kernel_derivative`
        with ``average=False``.
    x0_minus
        Initial states of the :math:`\gamma - h` side, the same shape as ``x0``; ``None``
        (default) shares ``x0``. Independent starts give an unbiased quotient with the
        spread of uncorrelated orbits: the comparison that shows what sharing does.

    Returns
    -------
    Estimate of the mean quotient; ``samples`` holds the per-member quotients.

    Raises
    ------
    ValueError
        For ``h <= 0``, or ``x0_minus`` of another shape than ``x0``.
    """
    h = check_positive(h, "h")
    if x0_minus is None:
        x0_minus = x0
    elif torch.as_tensor(x0_minus).shape != torch.as_tensor(x0).shape:
        raise ValueError(
            f"x0_minus must have the shape of x0, {tuple(torch.as_tensor(x0).shape)}; "
            f"got {tuple(torch.as_tensor(x0_minus).shape)}"
        )
    if average:
        plus = time_average(make_map(gamma + h), x0, T, observable, warmup)
        minus = time_average(make_map(gamma - h), x0_minus, T, observable, warmup)
    else:
        check_whole(T, "T", 1)
        plus = observable(_settle(make_map(gamma + h), x0, warmup + int(T), 0))
        minus = observable(_settle(make_map(gamma - h), x0_minus, warmup + int(T), 0))
    return Estimate.of((plus - minus) / (2 * h))


def _sources(map: Map, x0: Tensor, T: int, observable: Observable, warmup: int, n0: int) -> tuple[Tensor, Tensor]:
    """The orbit x_0 .. x_{w+T} and sources[n] = grad Phi(x_n) / T in the averaging window."""
    orbit = map.trajectory(x0, warmup + T, n0)
    with torch.enable_grad():
        states = orbit[warmup + 1 :].detach().requires_grad_(True)
        (grads,) = torch.autograd.grad(observable(states).sum(), states)
    sources = torch.zeros_like(orbit)
    sources[warmup + 1 :] = grads / T
    return orbit, sources


def _dfdgamma(map: Map, x: Tensor, parameter: str, n: int) -> Tensor:
    r""":math:`\partial f_n/\partial\gamma` at ``x`` for one scalar parameter, shape ``(..., dim)``:
    :math:`(\partial f_n/\partial\gamma)^\top w` is then ``(w * dfdgamma).sum(-1)``, which
    equals :meth:`Map.param_vjp` and avoids its per-member vmap."""
    return map.param_jvp(x, {parameter: 1.0}, n)


def backprop_derivative(
    map: Map,
    x0: Tensor,
    T: int,
    observable: Observable,
    parameter: str,
    warmup: int = 0,
    clip: float | None = None,
    truncate: int | None = None,
    n0: int = 0,
    window: str = "block",
    clip_total: float | None = None,
) -> Tensor:
    r""":math:`dJ_T/d\gamma` of every orbit by backpropagation (optionally clipped or truncated).

    Parameters
    ----------
    map
        The map; ``parameter`` names one of its scalar parameters (see :meth:`Map.params`).
    x0
        Initial states ``(..., dim)``; each member is differentiated separately.
    T, observable, warmup, n0
        As :func:`time_average`; the derivative includes the warm-up steps (the state at
        the start of the average depends on the parameter too), so it is the derivative of
        exactly the function :func:`finite_difference` differences. This differs from
        :func:`~chaosgrad.lyapunov.lyapunov_spectrum`, whose warm-up only settles the state
        and is no part of the result: a long warm-up here is backpropagated through and
        can explode.
    clip
        If given, after every backward step each member's adjoint :math:`\psi_n` is rescaled
        to norm ``clip`` when its norm exceeds it (the adjoint clipped per step).
    truncate
        If given, truncated backpropagation through time with windows of ``truncate`` steps,
        in the way ``window`` says.
    window
        ``"block"`` (default): the propagated part of :math:`\psi` is dropped at every step
        ``n`` that is a multiple of ``truncate`` (non-overlapping windows; a term's lag
        allowance depends on where it falls in its window). ``"sliding"``: every term of
        lag :math:`m - n \le` ``truncate`` is kept and every longer one dropped
        (:func:`lag_contributions` summed over lags); ``truncate = 1`` gives the same
        immediate terms either way.
    clip_total
        If given, each member's total derivative is clamped to ``[-clip_total, clip_total]``
        after backpropagation: the total gradient clipped, as
        ``torch.nn.utils.clip_grad_norm_`` clips the gradient of one scalar parameter.

    Returns
    -------
    Tensor of shape ``(...,)``: one derivative per member.

    Raises
    ------
    ValueError
        For an unknown or non-scalar parameter, ``T < 1``, ``clip <= 0``, ``clip_total <= 0``,
        ``truncate < 1``, an unknown ``window``, or ``clip`` with a sliding window.
    NonFiniteStateError
        If the adjoint overflows (the message names the step).
    """
    check_scalar_parameter(map, parameter)
    check_whole(T, "T", 1)
    if clip is not None:
        clip = check_positive(clip, "clip")
    if clip_total is not None:
        clip_total = check_positive(clip_total, "clip_total")
    if truncate is not None and (int(truncate) != truncate or truncate < 1):
        raise ValueError(f"truncate must be a whole number >= 1; got truncate = {truncate}")
    if window not in ("block", "sliding"):
        raise ValueError(f"window must be 'block' or 'sliding'; got {window!r}")
    if window == "sliding" and truncate is not None:
        if clip is not None:
            raise ValueError("clip cannot be combined with window='sliding' (clip the adjoint or truncate it)")
        total = lag_contributions(map, x0, T, observable, parameter, int(truncate), warmup, n0).sum(-1)
        return total if clip_total is None else total.clamp(-clip_total, clip_total)
    T = int(T)
    w = _check_warmup(warmup)
    orbit, sources = _sources(map, x0, T, observable, w, n0)
    psi = sources[-1]
    total = torch.zeros(orbit.shape[1:-1], dtype=orbit.dtype)
    for n in range(w + T - 1, -1, -1):
        total = total + (psi * _dfdgamma(map, orbit[n], parameter, n0 + n)).sum(-1)
        if n == 0:
            break
        propagated = map.vjp(orbit[n], psi[..., None], n0 + n)[..., 0]
        if truncate is not None and n % truncate == 0:
            propagated = torch.zeros_like(propagated)
        psi = check_finite(propagated + sources[n], "adjoint (backpropagated gradient)", step=n0 + n)
        if clip is not None:
            norm = torch.linalg.vector_norm(psi, dim=-1, keepdim=True)
            psi = psi * torch.clamp(clip / norm, max=1.0)
    return total if clip_total is None else total.clamp(-clip_total, clip_total)


def lag_contributions(
    map: Map,
    x0: Tensor,
    T: int,
    observable: Observable,
    parameter: str,
    lags: int,
    warmup: int = 0,
    n0: int = 0,
) -> Tensor:
    r"""The terms of :math:`dJ_T/d\gamma` grouped by lag: column :math:`d - 1` holds

    .. math::  c_d = \frac1T \sum_{n} \nabla\Phi(x_{n+d})^\top Df_{n+d-1}\cdots Df_{n+1}
               \,\frac{\partial f_n}{\partial\gamma}, \qquad d = 1, \dots, \text{lags},

    the effect of the parameter at step :math:`n` on the observation :math:`d` steps later,
    through :math:`d - 1` Jacobians (sum over the :math:`n` with :math:`n + d` in the
    averaging window). The cumulative sum over :math:`d \le K` is the sliding-window
    truncated derivative (``backprop_derivative(..., truncate=K, window="sliding")``): every
    term sees at most :math:`K - 1` Jacobians wherever it falls, unlike block truncation,
    whose allowance depends on the position inside the block. With ``lags >= warmup + T`` the
    sum over all columns is the exact :math:`dJ_T/d\gamma`.

    One backward pass carries ``lags`` adjoints side by side: column :math:`d` at step
    :math:`n` is the part of :math:`\psi_{n+1}` that came from the source at :math:`x_{n+d}`;
    stepping back, every column is pulled back by :math:`Df_n^\top` and moves one lag up,
    the column of lag ``lags`` is dropped, and the new source
    :math:`\nabla\Phi(x_n)/T` enters at lag 1. Cost: ``lags`` vector-Jacobian products per
    step, batched.

    Parameters
    ----------
    map, x0, T, observable, parameter, warmup, n0
        As :func:`backprop_derivative`.
    lags
        Largest lag :math:`D >= 1` kept.

    Returns
    -------
    Tensor of shape ``(..., lags)``.

    Raises
    ------
    ValueError
        For an unknown or non-scalar parameter, ``T < 1`` or ``lags < 1``.
    """
    check_scalar_parameter(map, parameter)
    T = check_whole(T, "T", 1)
    D = check_whole(lags, "lags", 1)
    w = _check_warmup(warmup)
    orbit, sources = _sources(map, x0, T, observable, w, n0)
    psi = torch.zeros(*sources.shape[1:], D, dtype=orbit.dtype)  # (..., dim, D): lags 1..D
    psi[..., 0] = sources[-1]
    total = torch.zeros(*orbit.shape[1:-1], D, dtype=orbit.dtype)
    for n in range(w + T - 1, -1, -1):
        total = total + (psi * _dfdgamma(map, orbit[n], parameter, n0 + n)[..., None]).sum(-2)
        if n == 0:
            break
        pulled = check_finite(map.vjp(orbit[n], psi[..., : D - 1], n0 + n),
                              "adjoint (backpropagated gradient)", step=n0 + n)
        psi = torch.cat([sources[n][..., None], pulled], dim=-1)
    return total


def ensemble_adjoint(
    map: Map,
    x0: Tensor,
    tau: int,
    observable: Observable,
    parameter: str,
    n0: int = 0,
) -> Estimate:
    r"""Ensemble adjoint estimate of :math:`dJ_\infty/d\gamma` (Lea, Allen & Haine 2000).

    The mean over windows of the exact derivative of a short average,

    .. math::  \widehat{\frac{dJ_\infty}{d\gamma}} = \frac1M\sum_{i=1}^M
               \frac{dJ_\tau^{(i)}}{d\gamma}, \qquad
               J_\tau^{(i)} = \frac1\tau\sum_{m=1}^{\tau}\Phi(x^{(i)}_m),

    each window started from a state :math:`x^{(i)}_0` on the attractor (a sample of the
    invariant measure). In terms of the mean lag terms :math:`a_d = \mathbb{E}[c_d]` of
    :func:`lag_contributions` its expectation is
    :math:`\sum_{d \le \tau}(1 - (d-1)/\tau)\,a_d`, against
    :math:`dJ_\infty/d\gamma = \sum_d a_d` (Ruelle's response series, where it converges):
    a bias of order :math:`1/\tau` plus the lags beyond :math:`\tau`, while each window's
    derivative carries :math:`e^{\lambda_1\tau}`, so the variance grows exponentially with
    :math:`\tau` and the distribution of the per-window derivatives is heavy-tailed (Eyink,
    Haine & Lea 2004). Block truncation with ``truncate = tau`` is the same estimator with the
    windows taken one after another along one orbit.

    Parameters
    ----------
    map, observable, parameter, n0
        As :func:`backprop_derivative`.
    x0
        Window starts, shape ``(M, dim)`` with ``M >= 2``.
    tau
        Window length, >= 1.

    Returns
    -------
    Estimate; ``samples`` holds the per-window derivatives :math:`dJ_\tau^{(i)}/d\gamma`.

    References
    ----------
    Lea, Allen & Haine, Tellus A 52 (2000) 523-532; Eyink, Haine & Lea, Nonlinearity 17
    (2004) 1867-1889.
    """
    tau = check_whole(tau, "tau", 1)
    return Estimate.of(backprop_derivative(map, x0, tau, observable, parameter, n0=n0))
