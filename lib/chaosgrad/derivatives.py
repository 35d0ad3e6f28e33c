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
(when it exists) does not: that is the failure chapter 3 measures. Clipping (rescale
:math:`\psi_n` to norm at most ``clip``) and truncation (drop the propagated part of
:math:`\psi` every ``truncate`` steps, truncated backpropagation through time) keep the
estimate finite and make it biased.

The reference is a central difference of :math:`J_T` over an ensemble of orbits, with the
same initial states (and noise) at :math:`\gamma \pm h`: common random numbers make the
difference quotient's spread that of the derivative, not of :math:`J_T` itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .estimates import Estimate
from .maps import Map
from .validation import check_finite, check_positive, check_scalar_parameter, check_whole

__all__ = ["backprop_derivative", "finite_difference", "time_average"]

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
) -> Estimate:
    r"""Central difference :math:`(J_T(\gamma + h) - J_T(\gamma - h))/(2h)` per member, with an error bar.

    Parameters
    ----------
    make_map
        Builds the map at a parameter value. For common random numbers it must give both
        maps the same randomness (the same weights, the same noise seed).
    gamma, h
        The parameter value and the half-step, ``h > 0``.
    x0
        Initial states, shape ``(M, dim)`` with ``M >= 2`` members, shared by both sides.
    T, observable, warmup
        As :func:`time_average`.
    average
        ``True``: difference the average :math:`J_T`; ``False``: difference the final value
        :math:`\Phi(x_T)` (e.g. a network's output), as :func:`~chaosgrad.kernel.kernel_derivative`
        with ``average=False``.
    """
    h = check_positive(h, "h")
    if average:
        plus = time_average(make_map(gamma + h), x0, T, observable, warmup)
        minus = time_average(make_map(gamma - h), x0, T, observable, warmup)
    else:
        check_whole(T, "T", 1)
        plus = observable(_settle(make_map(gamma + h), x0, warmup + int(T), 0))
        minus = observable(_settle(make_map(gamma - h), x0, warmup + int(T), 0))
    return Estimate.of((plus - minus) / (2 * h))


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
        to norm ``clip`` when its norm exceeds it (gradient clipping applied per step).
    truncate
        If given, the propagated part of :math:`\psi` is dropped at every step ``n`` that is a
        multiple of ``truncate``: backpropagation through non-overlapping windows of that many
        steps (truncated backpropagation through time).

    Returns
    -------
    Tensor of shape ``(...,)``: one derivative per member.

    Raises
    ------
    ValueError
        For an unknown or non-scalar parameter, ``T < 1``, ``clip <= 0`` or ``truncate < 1``.
    NonFiniteStateError
        If the adjoint overflows (the message names the step).
    """
    check_scalar_parameter(map, parameter)
    check_whole(T, "T", 1)
    if clip is not None:
        clip = check_positive(clip, "clip")
    if truncate is not None and (int(truncate) != truncate or truncate < 1):
        raise ValueError(f"truncate must be a whole number >= 1; got truncate = {truncate}")
    T = int(T)
    w = _check_warmup(warmup)
    orbit = map.trajectory(x0, w + T, n0)
    with torch.enable_grad():
        states = orbit[w + 1 :].detach().requires_grad_(True)
        (grads,) = torch.autograd.grad(observable(states).sum(), states)
    sources = torch.zeros_like(orbit)
    sources[w + 1 :] = grads / T  # sources[n] = grad Phi(x_n) / T for n in the averaging window
    psi = sources[-1]
    total = torch.zeros(orbit.shape[1:-1], dtype=orbit.dtype)
    for n in range(w + T - 1, -1, -1):
        total = total + map.param_vjp(orbit[n], psi, n0 + n)[parameter].reshape(total.shape)
        if n == 0:
            break
        propagated = map.vjp(orbit[n], psi[..., None], n0 + n)[..., 0]
        if truncate is not None and n % truncate == 0:
            propagated = torch.zeros_like(propagated)
        psi = check_finite(propagated + sources[n], "adjoint (backpropagated gradient)", step=n0 + n)
        if clip is not None:
            norm = torch.linalg.vector_norm(psi, dim=-1, keepdim=True)
            psi = psi * torch.clamp(clip / norm, max=1.0)
    return total
