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

from dataclasses import dataclass

import torch
from torch import Tensor

from .lyapunov import summarise_run
from .maps import Map
from .tangent import align_forward, check_run, random_basis, renormalise
from .progress import progress_range

__all__ = ["CovariantVectors", "covariant_lyapunov_vectors", "duality_errors", "principal_angles"]


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
    seed: int = 0,
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
    map, x0, k, n0, blocks, seed, progress
        As :func:`chaosgrad.lyapunov_spectrum` (``x0`` may be an ensemble).
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
    Q = random_basis(dim, k, x.dtype, seed).expand(*batch, dim, k)
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

        g = torch.Generator().manual_seed(seed + 1)
        C = torch.triu(torch.randn(*batch, k, k, generator=g, dtype=x.dtype))
        P = random_basis(dim, k, x.dtype, seed + 2).expand(*batch, dim, k)
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
