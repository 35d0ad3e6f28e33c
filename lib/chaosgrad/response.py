r"""The whole linear response of a hyperbolic map: shadowing plus unstable contribution.

For a map :math:`f_\gamma` with an SRB measure :math:`\rho_\gamma` and an observable
:math:`\Phi`, Ruelle's linear response :cite:`ruelle1997differentiation` is

.. math::  \frac{d\rho_\gamma(\Phi)}{d\gamma} = \sum_{m \ge 0}\rho\big(X\cdot\nabla(\Phi\circ f^m)\big),
           \qquad X(f(x)) = \partial_\gamma f(x),

a sum whose terms grow like :math:`e^{\lambda_1 m}` along an orbit. Split the perturbation
:math:`X = X^u + X^s` along the unstable and stable subspaces. Adjoint shadowing
(:func:`~chaosgrad.shadowing.nilsas`) pairs the bounded adjoint covector with :math:`X`; that
is the *shadowing contribution*

.. math::  S = \sum_{m\ge0}\rho\big(X^s\cdot\nabla(\Phi\circ f^m)\big)
             - \sum_{m\ge1}\rho\big(X^u\cdot\nabla(\Phi\circ f^{-m})\big),

and the rest is the *unstable contribution* :math:`U = \sum_{m\in\mathbb Z}\rho\big(X^u\cdot
\nabla(\Phi\circ f^m)\big)`, which integration by parts along the unstable manifolds turns
into a correlation with the unstable divergence :math:`\operatorname{div}^u_\rho X^u`
(the divergence on the unstable leaves with respect to the conditional densities of
:math:`\rho`, which has mean zero):

.. math::  U = -\sum_{m\in\mathbb Z}\rho\big((\Phi\circ f^m)\,\operatorname{div}^u_\rho X^u\big).

Neither :math:`X^u` nor the conditional densities can be differentiated along an orbit
directly (the stable subspace is only Hölder along the unstable leaves). The equivariant
divergence formula of Ni and Tong :cite:`ni2023recursive`, as used by the fast adjoint
response algorithm :cite:`ni2021fast`, evaluates it on one orbit from first-order
objects and one scalar function. Let the columns of :math:`e_n` span the unstable subspace at
:math:`x_n` (tangent solutions pushed forward) and those of :math:`w_{n+1}` the adjoint
unstable subspace at :math:`x_{n+1}` (NILSAS's homogeneous adjoint solutions), and let

.. math::  \ell_n(x, \gamma) = \log\big|\det\big(w_{n+1}^\top\,D_xf(x;\gamma)\,e_n\big)\big|,

the logarithm of the unstable Jacobian at step :math:`n` seen through these frames (held
fixed: :math:`\ell_n` does not depend on their normalisation). Then, along the orbit,

.. math::  \operatorname{div}^u_\rho X^u(x_{n+1}) = \partial_\gamma\ell_n(x_n,\gamma)
           + \big\langle\tilde\nu_{n+1},\,\partial_\gamma f(x_n)\big\rangle,

where :math:`\tilde\nu` is the bounded (adjoint-shadowing) solution of
:math:`\tilde\nu_n = Df_n^\top\tilde\nu_{n+1} + \nabla_x\ell_n(x_n)`. The first term is
the explicit change of the unstable expansion with :math:`\gamma`; the second, its change
through the moved orbit, shadowed so that it stays bounded. Both derivatives of
:math:`\ell_n` come from one reverse pass through a forward-mode Jacobian product (second
derivatives of :math:`f`: :math:`\nabla_x\ell_n` is a Hessian-vector product contracted with
the frames, a jvp differentiated in reverse mode). The sum over :math:`m` is truncated to a
window :math:`|m|\le W` (the correlations decay exponentially on a hyperbolic attractor):

.. math::  U \approx -\frac1N\sum_{n=0}^{N-1}\psi_{n+1}\Big(\partial_\gamma\ell_n
           + \big\langle\tilde\nu_{n+1},\partial_\gamma f(x_n)\big\rangle\Big),\qquad
           \psi_n = \sum_{m=-W}^{W}\big(\Phi(x_{n+m}) - \bar\Phi\big).

:func:`linear_response` runs it in NILSAS's own backward sweep: :math:`\tilde\nu'` is one
more column of the pull-back, renormalised and projected with the same homogeneous
solutions, and its least squares reuses their Gram matrices. Cost per step, beyond NILSAS:
one tangent product with :math:`u` columns (the frames :math:`e_n`, with a QR every 10
steps), one adjoint product with :math:`u` columns (the frames :math:`w_n`), one more
adjoint column, and the gradients of :math:`\ell_n` (a closed form where the map has one,
otherwise a reverse pass through about :math:`u` tangent products); ``make bench`` measures
the ratio (2.9 on the 21-dimensional solenoid with :math:`u = 20`, 1.6 to 2.5 on the
book's other cases, on the development machine).

What it assumes: a uniformly hyperbolic attractor (Anosov or Axiom A), on which the
decomposition, the bounded :math:`\tilde\nu` and the decay of correlations exist. For the
time-:math:`h` map of a flow (``is_flow``), ``M`` counts the neutral direction for the
shadowing part, as in NILSAS (whose time-dilation condition handles the flow direction), and
the frames :math:`e_n`, :math:`w_{n+1}` span the unstable subspace only (``M - 1``
columns), so that :math:`X^u` is the projection along the centre and stable subspaces. The
bounded :math:`\tilde\nu`
is then unique only up to a multiple of the neutral adjoint solution; the multiple is fixed,
as NILSAS fixes its own, by one condition at the start of the run: the covector whose
pairing with :math:`X` gives the divergence is :math:`\sum_i\partial_{e_i}\varepsilon_i`
(:math:`\varepsilon = w(e^\top w)^{-1}`), and differentiating
:math:`\langle\varepsilon_i, F\rangle = 0` along :math:`e_i` gives
:math:`\langle\tilde\nu_0, F(x_0)\rangle = -\operatorname{tr}(\varepsilon_0^\top
DF(x_0)\,e_0)`. With it the run average of the divergence is zero within its error bar, as
:math:`\rho(\operatorname{div}^u_\rho X^u)` must be. This is the map version of the formula,
not the flow theory of Ni and Tong; the book checks it on Lorenz-63 against the published
derivative, where the correlations oscillate with the rotation around the foci and a taper
is needed (``taper``). Where hyperbolicity fails nothing guarantees a bounded
:math:`\tilde\nu` or a small :math:`\ell_n`, and the per-member values can scatter over orders
of magnitude, which the error bar over independent members shows (chapter 4 measures it on
the tanh networks, where the unstable contribution makes one orbit's error worse). The estimate has NILSAS's :math:`O(1/N)` boundary term and a bias from the
truncated window, which falls as the correlations decay: scan both.

References
----------
:cite:`ruelle1997differentiation` D. Ruelle, Commun. Math. Phys. 187 (1997);
:cite:`ni2021fast` A. Ni, Fast adjoint differentiation of chaos via computing unstable
perturbations of transfer operators, arXiv:2111.07692;
:cite:`ni2020fast` A. Ni, Fast differentiation of hyperbolic chaos, arXiv:2009.00595 (the
modified solenoid);
:cite:`ni2023recursive` A. Ni, Y. Tong, Recursive divergence formulas for perturbing unstable
transfer operators and physical measures, J. Stat. Phys. (2023), arXiv:2108.13863.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .estimates import Estimate
from .gradients import parameter_names
from .maps import Map
from .progress import progress_range
from .shadowing import (
    _backward_sweep,
    _flow,
    _observed,
    _least_squares,
    _pilot,
    shadowing_least_squares,
)
from .tangent import random_basis, renormalise
from .validation import check_finite, check_whole, evaluate_observable, warn_few_samples

__all__ = ["ResponseResult", "linear_response", "log_expansion_gradients"]

Observable = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ResponseResult:
    """The result of :func:`linear_response`.

    Attributes
    ----------
    gradient : dict of str to Estimate
        The linear response :math:`d\\langle\\Phi\\rangle/d\\gamma` (shadowing plus unstable
        contribution) for each scalar parameter: mean over ensemble members with its standard
        error (one member: batch means over segments).
    shadowing : dict of str to Estimate
        The shadowing contribution alone (what :func:`~chaosgrad.shadowing.nilsas` returns).
    unstable : dict of str to Estimate
        The unstable contribution alone, with the window ``window``.
    average : Estimate
        :math:`\\langle\\Phi\\rangle` over the run.
    per_member : dict of str to tuple of Tensor
        ``(shadowing, unstable)`` of each member, each of shape ``x0.shape[:-1]``.
    divergence : Tensor, shape (N, ..., P)
        :math:`\\operatorname{div}^u_\\rho X^u(x_{n+1})` for n = 0..N-1, per member and
        parameter (in the order of ``gradient``): its average over the run estimates
        :math:`\\rho(\\operatorname{div}^u_\\rho X^u) = 0`, a check.
    shadowing_segments : Tensor, shape (K, ..., P)
        The shadowing contribution of each segment (they sum to each member's value).
    observable : Tensor, shape (N + 2 * warmup + 1, ...)
        :math:`\\Phi` along the whole orbit (warm-up, run, and the steps after it), from
        which :meth:`unstable_at` forms the window sums.
    warmup : int
        Steps before the run (``observable[warmup + n]`` is :math:`\\Phi(x_n)`).
    exponents : Tensor, shape (M,)
        The adjoint exponents per step of the ``M`` homogeneous solutions.
    n_unstable : int
        ``M``, as in NILSAS (for a flow, including the neutral direction).
    window, taper : int
        ``W`` and ``T``: the correlation sum runs over :math:`|m| \\le W`, its weights falling
        linearly to zero over the last ``T`` lags.
    segment_steps : int
        Steps per segment.
    """

    gradient: dict[str, Estimate]
    shadowing: dict[str, Estimate]
    unstable: dict[str, Estimate]
    average: Estimate
    per_member: dict[str, tuple[Tensor, Tensor]]
    divergence: Tensor
    shadowing_segments: Tensor
    observable: Tensor
    warmup: int
    exponents: Tensor
    n_unstable: int
    window: int
    taper: int
    segment_steps: int

    def contributions(self, name: str, window: int | None = None, taper: int = 0) -> dict[str, Estimate]:
        """``{"shadowing S": ..., "unstable U": ..., "total S + U": ...}`` for parameter
        ``name``, with the run's window or another (:meth:`unstable_at`): a table row."""
        if name not in self.gradient:
            raise KeyError(f"no parameter {name!r} in this result; it has {', '.join(self.gradient)}")
        if window is None:
            return {"shadowing S": self.shadowing[name], "unstable U": self.unstable[name],
                    "total S + U": self.gradient[name]}
        i, segments = list(self.gradient).index(name), self.shadowing_segments.shape[0]
        unstable = self._unstable_segments(window, taper)[..., i]
        return {"shadowing S": self.shadowing[name], "unstable U": _estimate(unstable, segments),
                "total S + U": _estimate(self.shadowing_segments[..., i] + unstable, segments)}

    def unstable_at(self, window: int, taper: int = 0) -> dict[str, Estimate]:
        """The unstable contribution with another window ``0 <= window <= warmup`` and
        ``0 <= taper <= window``, from the stored divergence (no new run): by parameter."""
        per_segment, segments = self._unstable_segments(window, taper), self.shadowing_segments.shape[0]
        return {name: _estimate(per_segment[..., i], segments) for i, name in enumerate(self.gradient)}

    def _unstable_segments(self, window: int, taper: int) -> Tensor:
        window, taper = _check_window(window, taper, self.warmup)
        N = self.divergence.shape[0]
        psi = _windowed(self._sums, window, self.warmup, N, taper)
        return _unstable_per_segment(self.divergence, psi, self.shadowing_segments.shape[0])

    @cached_property
    def _sums(self) -> tuple[Tensor, Tensor]:
        """The cumulative sums of the centred observable behind every window (computed once)."""
        return _cumulative(self.observable, self.warmup, self.divergence.shape[0])


def log_expansion_gradients(map: Map, x: Tensor, E: Tensor, W: Tensor, n: int,
                            names: list[str]) -> tuple[Tensor, Tensor]:
    r"""Gradients of :math:`\ell(x, \gamma) = \log|\det(W^\top D_xf_n(x;\gamma)\,E)|`, with the
    frames ``E`` and ``W`` held fixed.

    Parameters
    ----------
    map
        The map :math:`f`: its closed form (``Map._log_expansion_gradients``) where it has one
        (:class:`~chaosgrad.systems.ModifiedSolenoid`), otherwise its ``step`` differentiated
        twice by :mod:`torch.func` (a forward-mode product with the ``u`` columns of ``E``,
        then reverse mode).
    x : Tensor, shape (..., dim)
        States; leading axes are independent members.
    E, W : Tensor, shape (..., dim, u)
        Tangent frame at ``x`` and adjoint frame at ``f(x)``; :math:`W^\top Df\,E` must be
        invertible (they span the unstable and adjoint unstable subspaces).
    n
        Step index.
    names
        Scalar parameters to differentiate with respect to.

    Returns
    -------
    (grad_x, grad_gamma)
        :math:`\nabla_x\ell`, shape ``(..., dim)``, and :math:`\partial_\gamma\ell` for each
        name, shape ``(..., len(names))``.

    Examples
    --------
    For the logistic map :math:`x \mapsto rx(1 - x)`, :math:`\ell = \log|r(1 - 2x)|` (up to
    the frames' constant): at :math:`x = 1/4`, :math:`\nabla_x\ell = -2/(1 - 2x) = -4` and
    :math:`\partial_r\ell = 1/r = 1/4`.

    >>> import torch
    >>> from chaosgrad.systems import Logistic
    >>> one = torch.ones(1, 1, 1, dtype=torch.float64)
    >>> gx, gr = log_expansion_gradients(Logistic(4.0), torch.full((1, 1), 0.25, dtype=torch.float64),
    ...                                  one, one, 0, ["r"])
    >>> float(gx), float(gr)
    (-4.0, 0.25)
    """
    closed = map._log_expansion_gradients(x, E, W, n, names)
    if closed is not None:
        return closed
    return _log_expansion_gradients_by_torch_func(map, x, E, W, n, names)


def _log_expansion_gradients_by_torch_func(map: Map, x: Tensor, E: Tensor, W: Tensor, n: int,
                                           names: list[str]) -> tuple[Tensor, Tensor]:
    """:func:`log_expansion_gradients` for a map without a closed form: reverse mode through a
    forward-mode product of ``step``, vmapped over the members."""
    params = {name: map.params()[name] for name in names}
    batch = x.shape[:-1]
    dim, u = E.shape[-2], E.shape[-1]

    def ell(xb: Tensor, Eb: Tensor, Wb: Tensor, p: dict[str, Tensor]) -> Tensor:
        def f(y: Tensor) -> Tensor:
            return map._call_with(p, y, n)

        JE = torch.func.vmap(lambda v: torch.func.jvp(f, (xb,), (v,))[1], in_dims=1, out_dims=1)(Eb)
        return torch.linalg.slogdet(Wb.mT @ JE)[1]

    both = torch.func.vmap(torch.func.grad(ell, argnums=(0, 3)), in_dims=(0, 0, 0, None))
    gx, gp = both(x.reshape(-1, dim), E.expand(*batch, dim, u).reshape(-1, dim, u),
                  W.expand(*batch, dim, u).reshape(-1, dim, u), params)
    grad_gamma = torch.stack([gp[name].reshape(-1) for name in names], -1) if names else gx[:, :0]
    return gx.reshape(*batch, dim), grad_gamma.reshape(*batch, len(names))


class _UnstableSource:
    r"""The second source of :func:`~chaosgrad.shadowing._backward_sweep`: at step ``j``,
    :math:`\nabla_x\ell_j` (computed before the sweep, from the adjoint frames of
    :func:`_adjoint_frames`, many steps per call), and the storage of the pairings of
    :math:`\tilde\nu'_{j+1}` and :math:`W_{j+1}` with :math:`\partial_\gamma f_j`."""

    def __init__(self, grad_x: Tensor, M: int, P: int) -> None:
        self.grad_x = grad_x
        self.p = torch.zeros(*grad_x.shape[:-1], P, dtype=grad_x.dtype)
        self.PW = torch.zeros(*grad_x.shape[:-1], M, P, dtype=grad_x.dtype)

    def source(self, j: int, W: Tensor) -> Tensor:
        return self.grad_x[j]

    def pair(self, j: int, p: Tensor, PW: Tensor) -> None:
        self.p[j], self.PW[j] = p, PW


def _adjoint_frames(map: Map, full: Tensor, first: int, M: int, N: int, L: int, n0: int, seed: int,
                    progress: bool | None = None) -> Tensor:
    r"""Homogeneous adjoint solutions pulled back from the end of the extended orbit ``full``
    (the run is ``full[first:first + N + 1]``), so that they have aligned with the adjoint
    unstable subspace before they reach the run, with a QR at the run's segment starts and
    every ``L`` steps after it: ``(N + 1, ..., dim, M)``, entry ``i`` at run index ``i``."""
    batch = full.shape[1:-1]
    W = random_basis(map.dim, M, full.dtype, seed).expand(*batch, map.dim, M)
    frames = torch.empty(N + 1, *batch, map.dim, M, dtype=full.dtype)
    with torch.no_grad():
        for back in progress_range(full.shape[0] - 1 - first, progress, desc="adjoint frames"):
            i = full.shape[0] - 2 - back  # pull back from state i + 1 to i
            if i + 1 - first <= N:
                frames[i + 1 - first] = W
            W = map._vjp(full[i], W, n0 + i)
            if (i - first) % L == 0:
                W = renormalise(W, step=n0 + i)[0]
        frames[0] = W
    return frames


def _ell_gradients(map: Map, orbit: Tensor, E: Tensor, W: Tensor, names: list[str], start: int,
                   chunk: int = 200) -> tuple[Tensor, Tensor]:
    """:func:`log_expansion_gradients` at every step of the run, ``chunk`` steps per call for
    an autonomous map (the steps as one more ensemble axis), one step per call otherwise."""
    N = E.shape[0]
    if not map.autonomous:
        chunk = 1
    gx, gg = [], []
    for lo in range(0, N, chunk):
        hi = min(N, lo + chunk)
        with torch.enable_grad():
            a, b = log_expansion_gradients(map, orbit[lo:hi], E[lo:hi], W[lo:hi], start + lo, names)
        gx.append(a), gg.append(b)
    gx, gg = torch.cat(gx), torch.cat(gg)
    check_finite(gx, "gradient of the log unstable Jacobian (the frames are nearly singular)", step=None)
    return gx, gg


def _frames(map: Map, orbit: Tensor, u: int, seed: int, n0: int, progress: bool | None,
            every: int = 1) -> Tensor:
    r"""Tangent frames :math:`e_n` (``(len(orbit) - 1, ..., dim, u)``) at the states
    ``orbit[:-1]``: a random basis pushed forward from the first state, with a QR every
    ``every`` steps; the caller discards the warm-up part, over which the frames align with
    the unstable subspace. Only the span matters: a frame :math:`eR` changes
    :math:`\ell = \log|\det(w^\top Df\,e)|` by the constant :math:`\log|\det R|`, so its
    gradients are the same, and the QR is there only to keep the columns well conditioned."""
    batch = orbit.shape[1:-1]
    Q = random_basis(map.dim, u, orbit.dtype, seed + 1).expand(*batch, map.dim, u)
    frames = torch.empty(orbit.shape[0] - 1, *batch, map.dim, u, dtype=orbit.dtype)
    with torch.no_grad():
        for n in progress_range(orbit.shape[0] - 1, progress, desc="unstable frames"):
            frames[n] = Q
            Q = map._jvp(orbit[n], Q, n0 + n)
            if (n + 1) % every == 0:
                Q = renormalise(Q, step=n0 + n + 1)[0]
    return frames


def _neutral_target(map: Map, x: Tensor, e: Tensor, w: Tensor) -> Tensor:
    r""":math:`-\operatorname{tr}(\varepsilon^\top DF(x)\,e)` with :math:`\varepsilon =
    w(e^\top w)^{-1}`: for a flow, the pairing of the exact :math:`\tilde\nu` with the field
    :math:`F` (differentiate :math:`\langle\varepsilon_i, F\rangle = 0` along :math:`e_i`),
    which fixes its component along the neutral adjoint solution."""
    eps = w @ torch.linalg.inv(e.mT @ w).mT
    DFe = torch.func.vmap(lambda v: torch.func.jvp(map.vector_field, (x,), (v,))[1], in_dims=-1, out_dims=-1)(e)
    return -torch.diagonal(eps.mT @ DFe, dim1=-2, dim2=-1).sum(-1)


def _cumulative(phi: Tensor, first: int, N: int) -> tuple[Tensor, Tensor]:
    r"""``cums[k]``, the sum of the first ``k`` values of :math:`\Phi - \bar\Phi` along the
    stored orbit (:math:`\bar\Phi` the mean over the run, ``phi[first + n]`` for n = 1..N),
    and ``twice[k]``, the sum of the first ``k`` of those."""
    centred = phi - phi[first + 1:first + N + 1].mean(0)
    cums = torch.cat([torch.zeros_like(centred[:1]), torch.cumsum(centred, 0)])
    return cums, torch.cat([torch.zeros_like(cums[:1]), torch.cumsum(cums, 0)])


def _windowed(sums: tuple[Tensor, Tensor], window: int, first: int, N: int, taper: int = 0) -> Tensor:
    r""":math:`\psi_n = \sum_{|m|\le W}(\Phi(x_{n+m}) - \bar\Phi)` for run indices n = 0..N,
    from the :func:`_cumulative` sums of :math:`\Phi` (``phi[first + n]`` is :math:`\Phi(x_n)`);
    with a ``taper`` T, the mean of these sums over the windows :math:`W - T, \dots, W` (weights
    falling linearly to zero over the last T lags)."""
    cums, twice = sums
    p = torch.arange(first, first + N + 1)  # phi index of run index n
    if not taper:
        return cums[p + window + 1] - cums[p - window]
    # the mean over w = a..b of cums[p + w + 1] - cums[p - w], by a second cumulative sum
    a, b = window - taper, window
    ahead = twice[p + b + 2] - twice[p + a + 1]
    behind = twice[p - a + 1] - twice[p - b]
    return (ahead - behind) / (taper + 1)


def _check_window(window: int, taper: int, warmup: int) -> tuple[int, int]:
    """Validate ``window`` (at most ``warmup``, the steps stored on either side of the run)
    and ``taper`` (at most ``window``)."""
    window = check_whole(window, "window", 0)
    taper = check_whole(taper, "taper", 0)
    if window > warmup:
        raise ValueError(f"window must be at most warmup = {warmup} (the orbit stored beyond the run); got {window}")
    if taper > window:
        raise ValueError(f"taper must be at most window = {window}; got {taper}")
    return window, taper


def _unstable_per_segment(divergence: Tensor, psi: Tensor, segments: int) -> Tensor:
    r""":math:`-\frac1N\sum_n\psi_{n+1}\operatorname{div}^u_\rho X^u(x_{n+1})` summed per
    segment: ``(K, ..., P)`` from ``divergence`` ``(N, ..., P)`` and ``psi`` ``(N + 1, ...)``."""
    N = divergence.shape[0]
    terms = -psi[1:, ..., None] * divergence / N
    return terms.reshape(segments, N // segments, *terms.shape[1:]).sum(1)


def _estimate(per_segment: Tensor, segments: int) -> Estimate:
    """Mean over members of the per-segment sums (one member: batch means over segments)."""
    members = per_segment.sum(0).reshape(-1)
    if members.numel() >= 2:
        return Estimate.of(members)
    return Estimate.of_series(per_segment.reshape(segments) * segments, blocks=min(20, segments))


def linear_response(
    map: Map,
    x0: Tensor,
    observable: Observable,
    segments: int,
    segment_steps: int,
    window: int,
    taper: int = 0,
    n_unstable: int | None = None,
    warmup: int | None = None,
    n0: int = 0,
    seed: int = 0,
    parameter: str | Iterable[str] | None = None,
    progress: bool | None = None,
) -> ResponseResult:
    r"""The linear response of a long-time average: shadowing plus unstable contribution.

    The algorithm of the module docstring: NILSAS's backward sweep with one more
    inhomogeneous adjoint solution :math:`\tilde\nu'` (source :math:`\nabla_x\ell_n`), the
    tangent frames :math:`e_n` from a forward pass, and the window sums :math:`\psi_n` of the
    observable.

    Parameters
    ----------
    map
        Any :class:`chaosgrad.Map` with a hyperbolic attractor; ``step`` must be
        differentiable twice by :mod:`torch.func`.
    x0
        Initial states, ``(..., dim)``; leading axes are independent members (use 8 or more
        for an error bar).
    observable
        :math:`\Phi`, states ``(..., dim)`` to values ``(...,)``.
    segments, segment_steps
        As in :func:`~chaosgrad.shadowing.nilsas`: the run has
        ``N = segments * segment_steps`` steps after the warm-up.
    window
        ``W >= 0``: the correlation sum runs over :math:`|m| \le W` steps. Choose it a few
        times the decay time of the correlations of :math:`\Phi`; a longer window costs no time
        but adds variance (:meth:`ResponseResult.unstable_at` recomputes the contribution for
        other windows from the same run).
    taper
        ``0 <= T <= W``: average the window sums over the windows :math:`W - T` to :math:`W`
        (a linear taper of the last ``T`` lags). Where the correlations oscillate (the rotation
        of Lorenz-63 around its foci), a taper of one period averages the oscillation of the
        truncated sum away.
    n_unstable
        ``M >= 1``, the unstable dimension (for a flow, plus the neutral direction);
        ``None`` measures it as :func:`~chaosgrad.shadowing.nilsas` does.
    warmup
        Steps run first, over which the states settle and the tangent frames align, and run
        again after the run, over which the adjoint frames align backward; at least ``window``
        (the window reaches that far). ``None``: ``max(window, 100)``.
    n0, seed, progress
        As in :func:`~chaosgrad.shadowing.nilsas`.
    parameter
        Scalar parameters to differentiate: ``None`` every scalar parameter of the map, a
        name, or a list of names.

    Returns
    -------
    ResponseResult
        ``gradient`` (the total), ``shadowing`` and ``unstable`` per parameter.

    Raises
    ------
    ValueError
        For ``window < 0``, ``warmup < window``, ``taper`` outside ``0..window``, ``n_unstable < 1`` or above ``dim``, a
        tensor (non-scalar) parameter, and the errors of :func:`~chaosgrad.shadowing.nilsas`.

    See Also
    --------
    chaosgrad.shadowing.nilsas : the shadowing contribution alone.
    chaosgrad.kernel.kernel_derivative : the whole response of a noisy map, without hyperbolicity.
    """
    x = check_finite(map.check_state(x0, "x0"), "initial state x0", step=n0)
    segments = check_whole(segments, "segments", 2)
    L = check_whole(segment_steps, "segment_steps", 1)
    window = check_whole(window, "window", 0)
    warmup = max(window, 100) if warmup is None else check_whole(warmup, "warmup", 0)
    if warmup < window:
        raise ValueError(f"warmup must be at least window = {window} (the window reaches back that far); "
                         f"got warmup = {warmup}")
    window, taper = _check_window(window, taper, warmup)
    if n_unstable is not None and (int(n_unstable) != n_unstable or not 1 <= n_unstable <= map.dim):
        raise ValueError(f"n_unstable must be a whole number with 1 <= n_unstable <= dim = {map.dim}; got {n_unstable}")
    params = map.params()
    names = parameter_names(map, parameter)
    tensors = [name for name in names if params[name].numel() != 1]
    if tensors:
        raise ValueError(f"linear_response differentiates scalar parameters; {', '.join(tensors)} "
                         "are tensors (ask for the scalar ones with parameter=...)")
    warn_few_samples(x.shape[:-1].numel(), "linear_response", "ensemble members (leading axes of x0)")
    N = segments * L
    start = n0 + warmup
    # the orbit from x0 through the warm-up, the run, and as many steps after it again (for
    # the window, and for the adjoint frames to align before they reach the run)
    full = map.trajectory(x, warmup + N + warmup, n0, progress)
    orbit = full[warmup:warmup + N + 1]  # x_0 .. x_N of the run
    phi, sources, mean_phi = _observed(observable, orbit, N)
    phi_all = check_finite(evaluate_observable(observable, full, "linear_response").detach(), "observable", step=None)
    psi = _windowed(_cumulative(phi_all, warmup, N), window, warmup, N, taper)  # psi[n], n = 0..N
    M = _pilot(map, orbit[0], N, start, seed, _flow(map)) if n_unstable is None else int(n_unstable)
    if M < 1:
        raise ValueError("the attractor has no positive exponent (M = 0): the response is backpropagation's, "
                         "and there is no unstable contribution; use nilsas")
    u = M - 1 if _flow(map) else M  # the unstable subspace, without the flow direction
    frames = _frames(map, full[:warmup + N + 1], u, seed, n0, progress, every=min(L, 10))[warmup:]  # e_0 .. e_{N-1}
    adjoint = _adjoint_frames(map, full, warmup, u, N, L, n0, seed, progress)  # spanning w_0 .. w_N
    grad_x, grad_gamma = _ell_gradients(map, orbit, frames, adjoint[1:], names, start)
    second = _UnstableSource(grad_x, M, len(names))
    sweep = _backward_sweep(map, orbit, phi, sources, mean_phi, names, M, segments, L, start, seed,
                            keep_pieces=False, keep_grams=False, progress=progress, second=second)
    a, exps, _ = _least_squares(sweep, segments, L, M)
    d2, b2, flow_pairing = sweep.second
    E2 = e2 = None
    if flow_pairing is not None:  # <tilde nu_0, F(x_0)> = -tr(eps^T DF e) at the start
        E2 = sweep.flow_row[0]
        e2 = _neutral_target(map, orbit[0], frames[0], adjoint[0]) - flow_pairing - (grad_x[0] * map.vector_field(
            orbit[0])).sum(-1)
    a2 = shadowing_least_squares(sweep.C, d2, sweep.R[1:], b2[1:], E2, e2)  # tilde nu's coefficients
    # div^u X^u at x_{n+1} = d ell_n / d gamma + <tilde nu_{n+1}, df/d gamma (x_n)>
    coefficients = a2.repeat_interleave(L, 0)[..., None, :]  # (N, ..., 1, M)
    divergence = grad_gamma + second.p + (coefficients @ second.PW)[..., 0, :]
    shadow = sweep.g_prime + (a[..., None, :] @ sweep.G)[..., 0, :]  # (K, ..., P)
    unstable = _unstable_per_segment(divergence, psi, segments)
    result = {}
    for i, name in enumerate(names):
        result[name] = tuple(_estimate(v[..., i], segments) for v in (shadow + unstable, shadow, unstable))
    average = Estimate.of(mean_phi.reshape(-1)) if mean_phi.numel() >= 2 else Estimate.of_series(phi[1:].reshape(-1))
    return ResponseResult(
        gradient={k: v[0] for k, v in result.items()},
        shadowing={k: v[1] for k, v in result.items()},
        unstable={k: v[2] for k, v in result.items()},
        average=average,
        per_member={name: (shadow[..., i].sum(0), unstable[..., i].sum(0)) for i, name in enumerate(names)},
        divergence=divergence,
        shadowing_segments=shadow,
        observable=phi_all,
        warmup=warmup,
        exponents=exps,
        n_unstable=M,
        window=window,
        taper=taper,
        segment_steps=L,
    )

