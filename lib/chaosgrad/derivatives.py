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
scalar parameter; for several parameters, the per-orbit gradient rescaled to norm at most
:math:`c`), block truncation (drop the propagated part of :math:`\psi` every
``truncate`` steps: truncated backpropagation through time on non-overlapping windows) and
sliding-window truncation (keep exactly the terms of lag :math:`d \le K`,
:func:`lag_contributions`). Block truncation with windows of :math:`\tau` steps is the
ensemble adjoint of Lea, Allen & Haine (2000) (:func:`ensemble_adjoint`) with its windows
taken one after another along one orbit.

Every parameter at once (``parameter=None`` or a list of names, tensors included): the
pairing :math:`(\partial f_n/\partial\gamma)^\top\psi_{n+1}` is one reverse-mode parameter
gradient per step for all of them, fused with the adjoint step, so the cost does not grow
with their number; the result is a :class:`~chaosgrad.gradients.Gradient` over the members.

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

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from .estimates import Estimate
from .gradients import REVERSE_CHUNK_STATES, Gradient, parameter_names
from .maps import Map
from .validation import (check_finite, check_positive, check_scalar_parameter, check_whole, evaluate_observable,
                         warn_constant_parameters)

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


def check_scalar_observable(values: Tensor, states: Tensor, estimator: str) -> None:
    """Raise a ValueError unless ``observable(states)`` gave one value per state.

    ``estimator`` names the function that needs a scalar observable; the message points to
    kernel differentiation, which differentiates several statistics (values ``(..., m)``)
    with one score.
    """
    if values.shape != states.shape[:-1]:
        raise ValueError(
            f"observable must map states of shape (..., {states.shape[-1]}) to values of shape (...); "
            f"for states {tuple(states.shape)} it returned {tuple(values.shape)}. {estimator} differentiates "
            "one scalar observable; for several statistics at once (values (..., m)) use "
            "chaosgrad.kernel.kernel_derivative, whose score serves every output, or call it once per statistic"
        )


def _sources(map: Map, x0: Tensor, T: int, observable: Observable, warmup: int, n0: int,
             check: str | None = None) -> tuple[Tensor, Tensor]:
    """The orbit x_0 .. x_{w+T} and sources[n] = grad Phi(x_n) / T in the averaging window.
    With ``check`` (the estimator's name) the observable must give one value per state."""
    orbit = map.trajectory(x0, warmup + T, n0)
    with torch.enable_grad():
        states = orbit[warmup + 1 :].detach().requires_grad_(True)
        values = evaluate_observable(observable, states, check or "backpropagation")
        if check is not None:
            check_scalar_observable(values, states, check)
        (grads,) = torch.autograd.grad(values.sum(), states)
    sources = torch.zeros_like(orbit)
    sources[warmup + 1 :] = grads / T
    return orbit, sources


def _dfdgamma(map: Map, x: Tensor, parameter: str, n: int) -> Tensor:
    r""":math:`\partial f_n/\partial\gamma` at ``x`` for one scalar parameter, shape ``(..., dim)``:
    :math:`(\partial f_n/\partial\gamma)^\top w` is then ``(w * dfdgamma).sum(-1)``, which
    equals :meth:`Map.param_vjp` and avoids its per-member vmap."""
    return map.param_jvp(x, {parameter: 1.0}, n)


class _ScalarPairing:
    r"""The pairing :math:`\sum_n \langle\psi_{n+1}, \partial f_n/\partial\gamma\rangle` for one
    scalar parameter, per member: one forward-mode derivative per step (the scalar path)."""

    def __init__(self, map: Map, orbit: Tensor, parameter: str, n0: int, lags: int | None = None) -> None:
        self.map, self.orbit, self.parameter, self.n0 = map, orbit, parameter, n0
        self.total = torch.zeros((*orbit.shape[1:-1], *(() if lags is None else (lags,))), dtype=orbit.dtype)

    def pair(self, n: int, psi: Tensor) -> Tensor | None:
        """Add the pairing of :math:`\\psi_{n+1}` (``(..., dim)``) at step ``n``; return
        :math:`Df_n^\\top\\psi_{n+1}` (``None`` at ``n = 0``, where none is needed)."""
        self.total = self.total + (psi * _dfdgamma(self.map, self.orbit[n], self.parameter, self.n0 + n)).sum(-1)
        return None if n == 0 else self.map.vjp(self.orbit[n], psi[..., None], self.n0 + n)[..., 0]

    def pair_lags(self, n: int, psi: Tensor) -> None:
        """Add the pairing of every lag column of ``psi`` (``(..., dim, D)``), lag by lag."""
        dfdgamma = _dfdgamma(self.map, self.orbit[n], self.parameter, self.n0 + n)
        self.total = self.total + (psi * dfdgamma[..., None]).sum(-2)

    def result(self, clip_total: float | None) -> Tensor:
        return self.total if clip_total is None else self.total.clamp(-clip_total, clip_total)


class _GradientPairing:
    r"""The pairing :math:`\sum_n (\partial f_n/\partial\gamma)^\top\psi_{n+1}` for every listed
    parameter, per member: one reverse-mode parameter gradient per step, whatever the number
    of parameters. On a map that is not autonomous it is fused with the step of the adjoint
    (:meth:`Map._vjp_param_vjp`). On an autonomous map the covectors are kept and paired with
    their states in calls of about ``REVERSE_CHUNK_STATES`` states, each member's steps summed
    inside the call (:meth:`Map._param_vjp` with the steps as a summed ensemble axis): the
    pairing does not feed back into the adjoint, and a few large calls cost less than one small
    call per step (per-call overhead, per-member outer products; benchmarks/bench_gradients.py)."""

    def __init__(self, map: Map, orbit: Tensor, names: list[str], n0: int) -> None:
        self.map, self.orbit, self.n0 = map, orbit, n0
        self.batch = orbit.shape[1:-1]
        params = map.params()
        self.total = {k: torch.zeros((*self.batch, *params[k].shape), dtype=orbit.dtype) for k in names}
        self.chunk = max(1, REVERSE_CHUNK_STATES // max(1, self.batch.numel())) if map.autonomous else 0
        self.pending: list[tuple[int, Tensor]] = []  # (n, psi_{n+1}) not yet paired

    def _add(self, grads: dict[str, Tensor]) -> None:
        for k in self.total:
            self.total[k] = self.total[k] + grads[k]

    def _defer(self, n: int, psi: Tensor) -> None:
        """Keep ``psi`` for step ``n``; pair the kept ones once there are ``chunk`` of them."""
        self.pending.append((n, psi))
        if len(self.pending) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        steps = [n for n, _ in self.pending]
        x = self.orbit[steps].movedim(0, -2)  # (..., c, dim): the c steps of each member side by side
        w = torch.stack([psi for _, psi in self.pending]).movedim(0, -2)
        self._add(self.map._param_vjp(x, w, self.n0, len(self.batch)))
        self.pending = []

    def pair(self, n: int, psi: Tensor) -> Tensor | None:
        """As :meth:`_ScalarPairing.pair`, for every parameter at once."""
        keep = len(self.batch)
        if self.chunk:
            self._defer(n, psi)
            return None if n == 0 else self.map._vjp(self.orbit[n], psi[..., None], self.n0 + n)[..., 0]
        if n == 0:
            self._add(self.map._param_vjp(self.orbit[0], psi, self.n0, keep))
            return None
        pulled, grads = self.map._vjp_param_vjp(self.orbit[n], psi, self.n0 + n, keep)
        self._add(grads)
        return pulled

    def pair_lags(self, n: int, psi: Tensor) -> None:
        """The lags summed before the pairing (it is linear): one parameter gradient per step."""
        if self.chunk:
            self._defer(n, psi.sum(-1))
        else:
            self._add(self.map._param_vjp(self.orbit[n], psi.sum(-1), self.n0 + n, len(self.batch)))

    def result(self, clip_total: float | None) -> Gradient:
        self._flush()
        total = self.total
        if clip_total is not None:  # each member's gradient, all listed parameters together, to norm <= c
            squares = sum(g.reshape(*self.batch, -1).square().sum(-1) for g in total.values())
            scale = torch.clamp(clip_total / squares.sqrt(), max=1.0)
            total = {k: g * scale.reshape(*self.batch, *(1,) * (g.dim() - len(self.batch))) for k, g in total.items()}
        samples = {k: g.reshape(-1, *g.shape[len(self.batch):]) for k, g in total.items()}
        return Gradient.of(samples, per="member")


_Pairing = _ScalarPairing | _GradientPairing


def _sweep(orbit: Tensor, sources: Tensor, n0: int, pairing: _Pairing, truncate: int | None, clip: float | None) -> None:
    r"""The adjoint recursion :math:`\psi_n = Df_n^\top\psi_{n+1} + s_n` backward from
    :math:`\psi_{w+T} = s_{w+T}`, its propagated part dropped at multiples of ``truncate`` and
    :math:`\psi_n` clipped to norm ``clip``; ``pairing`` accumulates the derivative."""
    psi = sources[-1]
    for n in range(orbit.shape[0] - 2, -1, -1):
        propagated = pairing.pair(n, psi)
        if n == 0:
            break
        if truncate is not None and n % truncate == 0:
            propagated = torch.zeros_like(propagated)
        psi = check_finite(propagated + sources[n], "adjoint (backpropagated gradient)", step=n0 + n)
        if clip is not None:
            norm = torch.linalg.vector_norm(psi, dim=-1, keepdim=True)
            psi = psi * torch.clamp(clip / norm, max=1.0)


def _sweep_lags(map: Map, orbit: Tensor, sources: Tensor, n0: int, pairing: _Pairing, lags: int) -> None:
    r"""The ``lags`` adjoints of :func:`lag_contributions` carried side by side backward: column
    :math:`d` at step :math:`n` is the part of :math:`\psi_{n+1}` from the source at
    :math:`x_{n+d}`; ``pairing.pair_lags`` accumulates the derivative."""
    D = lags
    psi = torch.zeros(*sources.shape[1:], D, dtype=orbit.dtype)  # (..., dim, D): lags 1..D
    psi[..., 0] = sources[-1]
    for n in range(orbit.shape[0] - 2, -1, -1):
        pairing.pair_lags(n, psi)
        if n == 0:
            break
        if D == 1:  # only the immediate term: nothing to carry back
            psi = sources[n][..., None]
            continue
        pulled = check_finite(map.vjp(orbit[n], psi[..., : D - 1], n0 + n),
                              "adjoint (backpropagated gradient)", step=n0 + n)
        psi = torch.cat([sources[n][..., None], pulled], dim=-1)


def backprop_derivative(
    map: Map,
    x0: Tensor,
    T: int,
    observable: Observable,
    parameter: str | Iterable[str] | None,
    warmup: int = 0,
    clip: float | None = None,
    truncate: int | None = None,
    n0: int = 0,
    window: str = "block",
    clip_total: float | None = None,
) -> Tensor | Gradient:
    r""":math:`dJ_T/d\gamma` of every orbit by backpropagation (optionally clipped or truncated).

    For one scalar parameter (``parameter`` a name) the pairing
    :math:`\langle\psi_{n+1}, \partial f_n/\partial\gamma\rangle` is one forward-mode
    derivative per step. For several parameters, tensors included (``parameter=None`` or a
    list), it is :math:`(\partial f_n/\partial\gamma)^\top\psi_{n+1}`, one reverse-mode
    parameter gradient per step for all of them at once, fused with the adjoint step
    (:meth:`Map._vjp_param_vjp`): the cost is that of backpropagation, independent of the
    number of parameters :math:`P`.

    Parameters
    ----------
    map
        The map (see :meth:`Map.params`).
    x0
        Initial states ``(..., dim)``; each member is differentiated separately.
    T, observable, warmup, n0
        As :func:`time_average`; the derivative includes the warm-up steps (the state at
        the start of the average depends on the parameter too), so it is the derivative of
        exactly the function :func:`finite_difference` differences. This differs from
        :func:`~chaosgrad.lyapunov.lyapunov_spectrum`, whose warm-up only settles the state
        and is no part of the result: a long warm-up here is backpropagated through and
        can explode. With several parameters the observable must be scalar (values
        ``(...,)``); kernel differentiation takes several statistics at once.
    parameter
        A name of one scalar parameter: a tensor of derivatives is returned, as always.
        ``None`` (every parameter of the map, scalar or tensor) or a list of names: a
        :class:`~chaosgrad.gradients.Gradient` is returned.
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
        (:func:`lag_contributions` summed over lags; for several parameters the lags are
        summed before the pairing, one parameter gradient per step); ``truncate = 1`` gives
        the same immediate terms either way.
    clip_total
        If given, each member's total derivative is clipped after backpropagation. One scalar
        parameter: clamped to ``[-clip_total, clip_total]``. Several parameters: the
        member's gradient :math:`g` over all the listed parameters together is rescaled by
        :math:`\min(1, c/\|g\|)` (:math:`\|g\|` the Euclidean norm over every entry of
        every listed parameter), which is what ``torch.nn.utils.clip_grad_norm_`` does (it
        adds :math:`10^{-6}` to the norm; this does not) and, for one scalar parameter,
        the clamp. A directional derivative of the clipped gradient is therefore not the
        clipped derivative of the family :class:`~chaosgrad.gradients.Line`.

    Returns
    -------
    Tensor of shape ``(...,)``, one derivative per member, for a ``parameter`` name; otherwise a
    :class:`~chaosgrad.gradients.Gradient` whose samples are the members' gradients, shape
    ``(members, *param.shape)`` (one sample, and ``stderr`` None, when ``x0`` is one state).
    Members are independent orbits only when their starts are: the standard error assumes it.

    Raises
    ------
    ValueError
        For an unknown or non-scalar parameter name, a list with an unknown or repeated name,
        ``T < 1``, ``clip <= 0``, ``clip_total <= 0``, ``truncate < 1``, an unknown
        ``window``, ``clip`` with a sliding window, or (several parameters) an observable
        whose values are not one per state.
    NonFiniteStateError
        If the adjoint overflows (the message names the step).

    See Also
    --------
    lag_contributions : the terms by lag (one scalar parameter).
    chaosgrad.gradients.Gradient.along : a directional derivative of the result.
    chaosgrad.shadowing.nilsas : a derivative of the long-time average that does not explode.
    """
    scalar = isinstance(parameter, str)
    names = [check_scalar_parameter(map, parameter)] if scalar else parameter_names(map, parameter)
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
        if scalar:
            total = lag_contributions(map, x0, T, observable, parameter, int(truncate), warmup, n0).sum(-1)
            return total if clip_total is None else total.clamp(-clip_total, clip_total)
    T = int(T)
    w = _check_warmup(warmup)
    orbit, sources = _sources(map, x0, T, observable, w, n0, None if scalar else "backprop_derivative")
    warn_constant_parameters(map, orbit[0], names, n0, n0 + w + T - 1)
    if scalar:
        pairing: _Pairing = _ScalarPairing(map, orbit, parameter, n0)
    else:
        pairing = _GradientPairing(map, orbit, names, n0)
    if window == "sliding" and truncate is not None:
        _sweep_lags(map, orbit, sources, n0, pairing, int(truncate))
    else:
        _sweep(orbit, sources, n0, pairing, truncate, clip)
    return pairing.result(clip_total)


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
        As :func:`backprop_derivative` (one scalar parameter: for every parameter, the sum
        over lags is ``backprop_derivative(..., parameter=None, truncate=K, window="sliding")``).
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
    warn_constant_parameters(map, orbit[0], [parameter], n0, n0 + w + T - 1)
    pairing = _ScalarPairing(map, orbit, parameter, n0, lags=D)
    _sweep_lags(map, orbit, sources, n0, pairing, D)
    return pairing.total


def ensemble_adjoint(
    map: Map,
    x0: Tensor,
    tau: int,
    observable: Observable,
    parameter: str | Iterable[str] | None,
    n0: int = 0,
) -> Estimate | Gradient:
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
        As :func:`backprop_derivative` (``parameter=None`` or a list: every parameter).
    x0
        Window starts, shape ``(M, dim)`` with ``M >= 2``.
    tau
        Window length, >= 1.

    Returns
    -------
    Estimate for a ``parameter`` name, ``samples`` holding the per-window derivatives
    :math:`dJ_\tau^{(i)}/d\gamma`; otherwise a :class:`~chaosgrad.gradients.Gradient` whose
    samples are the per-window gradients.

    References
    ----------
    Lea, Allen & Haine, Tellus A 52 (2000) 523-532; Eyink, Haine & Lea, Nonlinearity 17
    (2004) 1867-1889.
    """
    tau = check_whole(tau, "tau", 1)
    result = backprop_derivative(map, x0, tau, observable, parameter, n0=n0)
    return Estimate.of(result) if isinstance(parameter, str) else result
