r"""Covariant Lyapunov vectors (Ginelli's algorithm), their adjoint duals, principal angles.

The covariant Lyapunov vectors (CLVs) :math:`v_i(n)` span the Oseledets splitting: they are
carried into each other by the tangent map, :math:`Df_n(x_n)\, v_i(n) \parallel v_i(n+1)`,
and grow at the rates :math:`\lambda_i`. Ginelli et al. (2007) find them from the Benettin
run: with :math:`Df_n Q_n = Q_{n+1} R_{n+1}`, the CLVs are :math:`V_n = Q_n C_n` with upper
triangular :math:`C_n`, obtained by iterating :math:`C_n = R_{n+1}^{-1} C_{n+1}` backward
from a random start (and normalising columns), which converges because backward in time the
CLVs' coefficients are attracted to the triangular structure.

The adjoint CLVs :math:`\theta_i(n)` are covariant for the adjoint map,
:math:`Df_n(x_n)^\top \theta_i(n+1) \parallel \theta_i(n)`, and dual to the CLVs:
:math:`\langle\theta_i, v_j\rangle = \delta_{ij}`. They span the orthogonal complement of the
CLVs :math:`v_{k+1}, \dots, v_d`, which is the span of the first :math:`k` *adjoint*
Gram-Schmidt vectors :math:`P_n` (QR of the adjoint recursion run backward), so
:math:`\Theta_n = P_n (V_n^\top P_n)^{-1}`.

References
----------
F. Ginelli, P. Poggi, A. Turchi, H. Chate, R. Livi, A. Politi, Phys. Rev. Lett. 99 (2007) 130601.
P. V. Kuptsov, U. Parlitz, J. Nonlinear Sci. 22 (2012) 727-762.
A. Bjorck, G. H. Golub, Math. Comp. 27 (1973) 579-594 (principal angles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .estimates import Estimate
from .lyapunov import LyapunovResult, summarise_run
from .maps import Map
from .tangent import align_forward, check_run, random_basis, renormalise
from .progress import progress_range

__all__ = [
    "CovariantVectors",
    "UnstableDimension",
    "WarmupConvergence",
    "column_angles",
    "covariant_lyapunov_vectors",
    "duality_errors",
    "principal_angles",
    "splitting_angles",
    "unstable_dimension",
    "unstable_dimension_of_orbits",
    "warmup_convergence",
]


@dataclass(frozen=True)
class CovariantVectors:
    """Covariant Lyapunov vectors and their adjoint duals at the kept steps of an orbit.

    Attributes
    ----------
    steps
        Shape ``(m,)``: the time indices ``n`` of the kept states.
    states
        Shape ``(m, ..., dim)``: the states :math:`x_n`.
    vectors
        Shape ``(m, ..., dim, k)``: the CLVs :math:`v_1(n), \\dots, v_k(n)` as unit columns.
    adjoint
        Shape ``(m, ..., dim, k)``: the adjoint CLVs, scaled so that
        :math:`\\langle\\theta_i(n), v_j(n)\\rangle = \\delta_{ij}`.
    exponents
        Shape ``(k,)``: the Lyapunov exponents per step over the kept window (ensemble mean).
    stderr
        Shape ``(k,)``: their standard errors by batch means over ``blocks`` blocks of the
        window (``None`` for a one-step window). A single orbit of a few thousand steps
        gives exponents good to a few units in the second or third decimal, not more.
    """

    steps: Tensor
    states: Tensor
    vectors: Tensor
    adjoint: Tensor
    exponents: Tensor
    stderr: Tensor | None


def covariant_lyapunov_vectors(
    map: Map,
    x0: Tensor,
    steps: int,
    k: int | None = None,
    warmup: int = 1000,
    every: int = 1,
    n0: int = 0,
    blocks: int = 20,
    seed: int | Sequence[int] | Tensor = 0,
    progress: bool | None = None,
) -> CovariantVectors:
    r"""The first ``k`` covariant Lyapunov vectors and adjoint CLVs along the orbit of ``x0``.

    The orbit runs ``warmup`` steps (the state settles and the Gram-Schmidt basis aligns),
    then ``steps`` steps that are kept, then ``warmup`` more steps whose only use is to let
    the two backward iterations (Ginelli's coefficients and the adjoint basis) converge
    before they reach the kept window; their errors shrink like
    :math:`e^{-(\lambda_i - \lambda_{i+1})\,\text{warmup}}`.

    Memory: the orbit and one ``k x k`` triangular factor per step of the last
    ``steps + warmup`` steps; vectors are stored only at every ``every``-th kept step.

    Parameters
    ----------
    map, x0, k, n0, blocks, progress
        As :func:`chaosgrad.lyapunov_spectrum` (``x0`` may be an ensemble).
    seed
        Seeds of the three random starts: the forward Gram-Schmidt basis (``seed``),
        Ginelli's triangular coefficients (``seed + 1``) and the adjoint basis
        (``seed + 2``). One integer gives every ensemble member the same starts; a tensor or
        nested sequence of the ensemble's shape (``x0.shape[:-1]``) gives each member its
        own, so that one run can compare vectors from independent starts on the same orbit
        (:func:`warmup_convergence`).
    steps
        Length of the kept window, >= 1.
    warmup
        Transient at both ends, >= 0.
    every
        Keep the vectors at steps ``0, every, 2 every, ...`` of the window, >= 1.

    Returns
    -------
    CovariantVectors

    Raises
    ------
    ValueError
        For ``k`` outside ``1..dim``, ``steps < 1``, ``warmup < 0`` or ``every < 1``.
    NonFiniteStateError
        If a state or a basis becomes inf or NaN.
    """
    x, k, steps, warmup = check_run(map, x0, steps, k, warmup, n0)
    if int(every) != every or every < 1:
        raise ValueError(f"every must be a whole number >= 1; got every = {every}")
    dim, batch = map.dim, x.shape[:-1]
    Q, C, P = _random_starts(dim, k, x.dtype, seed, batch)
    x, Q = align_forward(map, x, Q, warmup, n0, progress, desc="CLV warm-up")
    with torch.no_grad():
        start = n0 + warmup
        window = steps + warmup
        orbit = map.trajectory(x, window, start, progress)  # x_start ... x_{start + window}
        kept = list(range(0, steps, int(every)))
        Qs, Rs, logs = {}, [], []
        for i in progress_range(window, progress, desc="CLV forward"):
            if i in kept:
                Qs[i] = Q
            Q, lr, R = renormalise(map._jvp(orbit[i], Q, start + i), step=start + i + 1)
            Rs.append(R)
            if i < steps:
                logs.append(lr)

        vectors, adjoint = {}, {}
        for i in progress_range(window, progress, desc="CLV backward"):
            n = window - 1 - i  # C_{n+1} -> C_n, P_{n+1} -> P_n
            C = torch.linalg.solve_triangular(Rs[n], C, upper=True)
            C = C / torch.linalg.vector_norm(C, dim=-2, keepdim=True)
            P, _, _ = renormalise(map._vjp(orbit[n], P, start + n), step=start + n)
            if n in Qs:
                Vn = Qs[n] @ C
                vectors[n] = Vn
                adjoint[n] = P @ torch.linalg.inv(Vn.mT @ P)
    spectrum = summarise_run(logs, list(range(1, steps + 1)), blocks, basis=Q, final_state=x, renorm_every=1)
    return CovariantVectors(
        steps=torch.tensor([start + n for n in kept]),
        states=orbit[kept],
        vectors=torch.stack([vectors[n] for n in kept]),
        adjoint=torch.stack([adjoint[n] for n in kept]),
        exponents=spectrum.exponents,
        stderr=spectrum.stderr,
    )


def _random_starts(dim: int, k: int, dtype: torch.dtype, seed, batch: torch.Size) -> tuple[Tensor, Tensor, Tensor]:
    """The forward basis Q, Ginelli's coefficients C and the adjoint basis P at the start."""

    def starts(s: int) -> tuple[Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(s + 1)
        C = torch.triu(torch.randn(k, k, generator=g, dtype=dtype))
        return random_basis(dim, k, dtype, s), C, random_basis(dim, k, dtype, s + 2)

    if isinstance(seed, int):
        if not batch:
            return starts(seed)
        Q, _, P = starts(seed)
        g = torch.Generator().manual_seed(seed + 1)  # one triangle per member, as before
        C = torch.triu(torch.randn(*batch, k, k, generator=g, dtype=dtype))
        return Q.expand(*batch, dim, k), C, P.expand(*batch, dim, k)
    seeds = torch.as_tensor(seed)
    if seeds.shape != batch or seeds.is_floating_point():
        raise ValueError(f"seed must be an integer or integers of the ensemble's shape {tuple(batch)}; "
                         f"got shape {tuple(seeds.shape)}")
    Q, C, P = (torch.stack(t).reshape(*batch, *t[0].shape)
               for t in zip(*(starts(int(s)) for s in seeds.reshape(-1))))
    return Q, C, P


def principal_angles(A: Tensor, B: Tensor) -> Tensor:
    r"""Principal angles between the column spans of ``A`` (..., d, p) and ``B`` (..., d, q).

    Returns the :math:`\min(p, q)` angles in radians, ascending. Cosines come from the
    singular values of :math:`Q_A^\top Q_B` and sines from those of
    :math:`Q_B - Q_A Q_A^\top Q_B` (for :math:`q \le p`), combined by ``atan2``, so that small
    angles are accurate to rounding and not to its square root (Bjorck and Golub 1973).

    Raises
    ------
    ValueError
        If ``A`` and ``B`` do not have the same number of rows.
    """
    if A.shape[-2] != B.shape[-2]:
        raise ValueError(f"A and B must have the same number of rows (the dimension); got {A.shape[-2]} and {B.shape[-2]}")
    if A.shape[-1] < B.shape[-1]:
        A, B = B, A
    Qa, _ = torch.linalg.qr(A)
    Qb, _ = torch.linalg.qr(B)
    M = Qa.mT @ Qb
    cos = torch.linalg.svdvals(M)  # descending
    sin = torch.linalg.svdvals(Qb - Qa @ M).flip(-1)  # ascending
    return torch.atan2(sin, cos)


def splitting_angles(clv: CovariantVectors, u: int) -> Tensor:
    r"""The smallest angle between the unstable and the stable subspace at each kept step,
    from the first ``u`` CLVs and adjoint CLVs only.

    With :math:`E^u = \operatorname{span}(v_1, \dots, v_u)` and
    :math:`E^s = \operatorname{span}(v_{u+1}, \dots, v_d)`, the adjoint CLVs
    :math:`\theta_1, \dots, \theta_u` span :math:`(E^s)^\perp` (they annihilate every
    :math:`v_j`, :math:`j > u`). For complementary subspaces the sine of the smallest angle
    between them is :math:`\min_{x \in E^u, \|x\| = 1} \operatorname{dist}(x, E^s) =
    \min_x \|P_{(E^s)^\perp} x\|`, the cosine of the largest principal angle between
    :math:`E^u` and :math:`(E^s)^\perp`, so

    .. math::  \angle(E^u, E^s) = \tfrac{\pi}{2} - \max\angle\big(E^u, \operatorname{span}(\theta_1, \dots, \theta_u)\big).

    So ``clv`` needs only ``k >= u`` vectors, not all ``d``: on a network of width 128 with
    :math:`u = 18`, 18 instead of 128 (Kuptsov & Parlitz 2012 use the same duality). Small
    angles are accurate to rounding (:func:`principal_angles`). A near-tangency (an angle
    close to 0) rules uniform hyperbolicity out.

    Parameters
    ----------
    clv
        From :func:`covariant_lyapunov_vectors` with ``k >= u``.
    u
        The unstable dimension, ``1 <= u < dim``.

    Returns
    -------
    Tensor, shape ``clv.vectors.shape[:-2]``: the angle in radians, in :math:`[0, \pi/2]`.

    Raises
    ------
    ValueError
        If ``u`` is not a whole number with ``1 <= u <= k`` and ``u < dim``.

    See Also
    --------
    principal_angles : all principal angles between two spans (with all ``d`` CLVs,
        ``principal_angles(V[..., :u], V[..., u:]).min(-1)`` is the same angle).
    """
    dim, k = clv.vectors.shape[-2:]
    if int(u) != u or not 1 <= u <= k or u >= dim:
        raise ValueError(f"u must be a whole number with 1 <= u <= k = {k} and u < dim = {dim}; got u = {u}")
    u = int(u)
    largest = principal_angles(clv.vectors[..., :u], clv.adjoint[..., :u]).max(-1).values
    return (torch.pi / 2 - largest).clamp(min=0.0)


def duality_errors(map: Map, clv: CovariantVectors) -> dict[str, float]:
    r"""How exactly ``clv`` satisfies the defining identities, along the whole run.

    Returns the largest :math:`|\Theta^\top V - I|` entry (``"biorthogonality"``), the
    largest angle between :math:`Df_n v_i(n)` and :math:`v_i(n+1)` (``"covariance"``), and
    between :math:`Df_n^\top \theta_i(n+1)` and :math:`\theta_i(n)`
    (``"adjoint_covariance"``), in radians.

    Raises
    ------
    ValueError
        If the vectors were not kept at consecutive steps (``every > 1``).
    """
    if len(clv.steps) < 2 or not bool((clv.steps.diff() == 1).all()):
        raise ValueError("duality_errors needs vectors at consecutive steps: compute them with every=1")
    V, Theta, k = clv.vectors, clv.adjoint, clv.vectors.shape[-1]
    n = int(clv.steps[0])
    # time-dependent maps: the step index of each state, broadcast over the run
    pushed = torch.stack([map.jvp(clv.states[i], V[i], n + i) for i in range(len(V) - 1)])
    pulled = torch.stack([map.vjp(clv.states[i], Theta[i + 1], n + i) for i in range(len(V) - 1)])
    cov = max(float(principal_angles(pushed[..., i : i + 1], V[1:, ..., i : i + 1]).max()) for i in range(k))
    adj = max(float(principal_angles(pulled[..., i : i + 1], Theta[:-1, ..., i : i + 1]).max()) for i in range(k))
    eye = torch.eye(k, dtype=V.dtype)
    return {"biorthogonality": float((Theta.mT @ V - eye).abs().max()), "covariance": cov, "adjoint_covariance": adj}


def column_angles(A: Tensor, B: Tensor) -> Tensor:
    r"""Angles in radians between the lines spanned by corresponding columns of ``A`` and ``B``.

    ``A`` and ``B`` have shape ``(..., d, k)``; the result has shape ``(..., k)``, each
    angle in :math:`[0, \pi/2]` (a vector and its negative span the same line), accurate
    to rounding for small angles (``atan2`` of the sine and cosine, as
    :func:`principal_angles`).
    """
    A = A / torch.linalg.vector_norm(A, dim=-2, keepdim=True)
    B = B / torch.linalg.vector_norm(B, dim=-2, keepdim=True)
    cos = (A * B).sum(-2)
    sin = torch.linalg.vector_norm(A - B * cos[..., None, :], dim=-2)
    return torch.atan2(sin, cos.abs())


@dataclass(frozen=True)
class WarmupConvergence:
    """How CLVs from two independent random starts approach each other as the warm-up grows.

    Attributes
    ----------
    warmups
        Shape ``(w,)``: the warm-ups ``0, 1, ..., w - 1`` (steps in each direction of time).
    angles
        Shape ``(w, ..., k)``: for each warm-up, each ensemble member and each CLV, the angle
        (radians) between the vectors computed from the two starts: the larger of the two
        angles at the kept steps that had that many steps of forward and of backward
        iteration behind them.
    clvs
        The run itself: ``vectors`` and ``adjoint`` have shape ``(steps, 2, ..., dim, k)``,
        the second axis holding the two starts (``states`` has the same axis: the same orbit).
    """

    warmups: Tensor
    angles: Tensor
    clvs: CovariantVectors


def warmup_convergence(
    map: Map,
    x0: Tensor,
    steps: int,
    k: int | None = None,
    seeds: tuple[int, int] = (0, 3),
    n0: int = 0,
    progress: bool | None = None,
) -> WarmupConvergence:
    r"""CLVs from two independent random starts along the same orbit, and their disagreement.

    One run of :func:`covariant_lyapunov_vectors` with no warm-up keeps ``steps`` steps;
    every ensemble member is run twice, from the random starts of ``seeds[0]`` and of
    ``seeds[1]`` (forward basis, Ginelli's coefficients and adjoint basis all independent).
    At kept step ``n`` the forward iteration has run ``n`` steps and the backward one
    ``steps - n``, so kept step ``n = W`` shows the forward error of a warm-up ``W`` and
    kept step ``steps - 1 - W`` its backward error, each as the angle between the two
    starts' vectors. Both decay like :math:`e^{-\Delta\lambda\, W}` (the gaps between
    neighbouring exponents), down to the rounding of the vectors: a check of the algorithm
    that fails when the vectors do not converge, unlike the covariance and duality
    identities, which hold by construction at any warm-up.

    Parameters
    ----------
    map, x0, k, n0, progress
        As :func:`covariant_lyapunov_vectors` (``x0`` may be an ensemble).
    steps
        Length of the run, >= 2; warm-ups up to ``(steps - 1) // 2`` are measured.
    seeds
        The two seeds, which must differ by at least 3 (each start uses three seeds).
    """
    if abs(seeds[0] - seeds[1]) < 3:
        raise ValueError(f"the seeds must differ by at least 3 (each uses seed, seed + 1 and seed + 2); got {seeds}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be a whole number >= 2; got steps = {steps}")
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    both = torch.stack([x0, x0])
    member_seeds = torch.tensor(seeds).reshape(2, *[1] * (x0.ndim - 1)).expand(both.shape[:-1])
    clv = covariant_lyapunov_vectors(map, both, steps, k=k, warmup=0, n0=n0, seed=member_seeds, progress=progress)
    angles = column_angles(clv.vectors[:, 0], clv.vectors[:, 1])  # (steps, ..., k)
    w = (steps - 1) // 2 + 1
    worst = torch.maximum(angles[:w], angles.flip(0)[:w])
    return WarmupConvergence(warmups=torch.arange(w), angles=worst, clvs=clv)


@dataclass(frozen=True)
class UnstableDimension:
    """The number of positive Lyapunov exponents, with the evidence for it.

    Attributes
    ----------
    lower
        Exponents more than ``sigmas`` error bars above zero.
    upper
        Exponents not more than ``sigmas`` error bars below zero (``upper >= lower``).
    estimates
        The exponents the count came from, in descending order of value.
    sigmas
        The threshold in error bars.
    """

    lower: int
    upper: int
    estimates: tuple[Estimate, ...]
    sigmas: float

    @property
    def resolved(self) -> bool:
        """Whether every exponent is more than ``sigmas`` error bars from zero near the border."""
        return self.lower == self.upper

    @property
    def last_unstable(self) -> Estimate | None:
        r""":math:`\\lambda_u` for the smallest count ``u = lower`` (``None`` when ``lower = 0``)."""
        return self.estimates[self.lower - 1] if self.lower else None

    @property
    def first_stable(self) -> Estimate:
        r""":math:`\\lambda_{u+1}` for the largest count ``u = upper``: the first exponent
        clearly below zero."""
        return self.estimates[self.upper]

    def __str__(self) -> str:
        return str(self.lower) if self.resolved else f"{self.lower}-{self.upper}"


def unstable_dimension(estimates: Sequence[Estimate], sigmas: float = 3.0) -> UnstableDimension:
    r"""The unstable dimension :math:`u` from exponents with error bars, or its range.

    ``lower`` counts the exponents more than ``sigmas`` error bars above zero and ``upper``
    those not more than ``sigmas`` error bars below it; where they differ, an exponent near
    the border is consistent with zero (a neutral direction, such as the flow direction or
    a quasi-periodic attractor's, or one that needs a longer run) and :math:`u` is only
    known to lie in ``lower..upper``. The bordering exponents :math:`\lambda_u` and
    :math:`\lambda_{u+1}` are the evidence to quote with :math:`u`.

    Parameters
    ----------
    estimates
        Exponents (e.g. ``LyapunovResult.member_estimates``), sorted here by value: equal
        exponents (a complex pair) may come out of a finite run in either order.
    sigmas
        Threshold in error bars, > 0.

    Raises
    ------
    ValueError
        If ``sigmas <= 0`` or no exponent is
        clearly negative (more exponents are needed to find the border).
    """
    if sigmas <= 0:
        raise ValueError(f"sigmas must be > 0; got {sigmas}")
    estimates = tuple(sorted(estimates, key=lambda e: -e.value))
    lower = sum(e.value > sigmas * e.stderr for e in estimates)
    upper = sum(e.value >= -sigmas * e.stderr for e in estimates)
    if upper == len(estimates):
        raise ValueError(f"none of the {len(estimates)} exponents is more than {sigmas:g} error bars below zero: "
                         "compute more exponents (a larger k) or a longer run")
    return UnstableDimension(lower, upper, estimates, float(sigmas))


def unstable_dimension_of_orbits(result: LyapunovResult, chaotic_above: float | None = None,
                                 sigmas: float = 3.0) -> tuple[UnstableDimension, Tensor]:
    r"""The unstable dimension of a run of independent orbits, from the spread across them.

    Each exponent's error bar is the standard error over the ensemble members
    (:attr:`LyapunovResult.member_exponents`). A tied network may carry coexisting
    attractors: with ``chaotic_above``, only the orbits whose own :math:`\lambda_1` exceeds
    it are counted (all orbits if fewer than two do, as on a stable fixed point).

    Returns
    -------
    (UnstableDimension, Tensor)
        :func:`unstable_dimension` of the kept orbits, and the boolean mask (one entry per
        member) of the orbits above ``chaotic_above`` (all ``True`` without it).
    """
    members = result.member_exponents.reshape(-1, result.member_exponents.shape[-1])
    chaotic = torch.ones(len(members), dtype=torch.bool) if chaotic_above is None else members[:, 0] > chaotic_above
    kept = members[chaotic] if int(chaotic.sum()) > 1 else members
    return unstable_dimension([Estimate.of(v) for v in kept.T], sigmas), chaotic
