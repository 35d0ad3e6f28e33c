r"""Backpropagation via adjoint shadowing: NILSAS for maps.

For a long-time average :math:`J_N = \frac1N\sum_{n=1}^{N}\Phi(x_n)` along
:math:`x_{n+1} = f_n(x_n;\gamma)`, plain backpropagation computes the adjoint

.. math::  \nu_n = Df_n(x_n)^\top \nu_{n+1} + \tfrac1N\nabla\Phi(x_n), \qquad \nu_{N+1} = 0,

and :math:`dJ_N/d\gamma = \sum_{n=0}^{N-1}\langle \nu_{n+1}, \partial_\gamma f_n(x_n)\rangle`.
On a chaotic orbit that :math:`\nu` grows like :math:`e^{\lambda_1 (N-n)}` backward, and the
per-orbit derivative explodes (chapter 3). Adjoint shadowing replaces it by the solution of
the same inhomogeneous equation that stays bounded: every solution is
:math:`\nu = \nu' + \sum_i a_i w^{(i)}` with :math:`w^{(i)}` homogeneous adjoint solutions,
and for a hyperbolic map exactly one choice of the components along the *unstable adjoint*
directions is bounded. Its pairing with :math:`\partial_\gamma f` is the shadowing
contribution to the linear response (Ni 2024 calls it the main term) :cite:`ni2024backpropagation`.

Non-intrusive least-squares adjoint shadowing (NILSAS, :cite:`ni2019adjoint`), for maps:

1. Run the orbit forward and store it; split the :math:`N` steps into ``segments`` of
   ``segment_steps`` steps, :math:`t_k = k\,L`.
2. Backward over each segment, propagate :math:`M` homogeneous adjoint solutions
   :math:`W_n` (columns) and one inhomogeneous solution :math:`\nu'_n` by the adjoint map,
   adding the source :math:`\nabla\Phi(x_n)/N` to :math:`\nu'`. Accumulate
   :math:`C_k = \sum W_n^\top W_n`, :math:`d_k = \sum W_n^\top\nu'_n` and the pairings with
   :math:`\partial_\gamma f`.
3. At the segment's start :math:`t_k`, renormalise: :math:`W = QR` (QR with positive
   diagonal), :math:`b_k = Q^\top\nu'`, :math:`\nu' \leftarrow \nu' - Q b_k`, and continue
   with :math:`W = Q`. The log-diagonals of the :math:`R` are the adjoint Lyapunov
   exponents, for free.
4. On segment :math:`k` the covector is :math:`\nu = \nu' + W a_k`; it is continuous at
   :math:`t_k` exactly when :math:`a_{k-1} = R_k a_k + b_k`. Choose the :math:`a_k` that
   minimise :math:`\sum_n \|\nu_n\|^2`, i.e. :math:`\sum_k \tfrac12 a_k^\top C_k a_k + d_k^\top a_k`
   under these constraints (:func:`shadowing_least_squares`).
5. :math:`dJ/d\gamma = \sum_k \big(g'_k + G_k^\top a_k\big)`.

The cost is that of backpropagating :math:`M + 1` covectors, plus one forward-mode
derivative with respect to each scalar parameter per step.

**Time-:math:`h` maps of flows** (maps with ``vector_field`` and ``dt``, e.g.
:class:`~chaosgrad.systems.Lorenz63`) have a neutral direction, the flow itself, with
exponent zero: shadowing is then defined up to a time dilation. Along any solution of the
inhomogeneous adjoint equation of the flow, :math:`\langle\nu, F\rangle + \Phi/(Nh)` is
constant (:math:`F` the vector field), and the time-dilation term of the linear response
cancels exactly when :math:`\langle \nu, F\rangle = -(\Phi - \bar\Phi)/(Nh)` (Ni & Talnikar
2019). So for flows :math:`M` counts the neutral direction too, and the least squares gets one
more constraint, that equality at the start of the run; the conserved quantity carries it
along the run (for the RK4 map, up to its truncation error).

What shadowing omits: the full linear response of a hyperbolic map (Ruelle) is the
shadowing term plus an *unstable divergence* term; the latter is small when the parameter
moves the attractor mostly along stable directions, and for wide random networks, but not
in general. The book's chapter 4 measures both situations.

References
----------
:cite:`ni2019adjoint` A. Ni, C. Talnikar, J. Comput. Phys. 395 (2019), arXiv:1801.08674;
:cite:`ni2024backpropagation` A. Ni, Nonlinearity 37 (2024), arXiv:2207.06648;
:cite:`wang2014least` Q. Wang, R. Hu, P. Blonigan, J. Comput. Phys. 267 (2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .adjoint import adjoint_lyapunov_spectrum
from .estimates import Estimate, batch_means
from .maps import Map
from .progress import progress_range
from .tangent import random_basis, renormalise
from .validation import check_finite, check_whole

__all__ = ["ShadowingResult", "nilsas", "shadowing_least_squares"]

Observable = Callable[[Tensor], Tensor]

#: Steps of the run over which ``n_unstable=None`` measures the adjoint spectrum (all
#: ``dim`` exponents, QR every step) to count the positive ones.
MAX_PILOT_STEPS = 2000


@dataclass(frozen=True)
class ShadowingResult:
    """The result of :func:`nilsas`.

    Attributes
    ----------
    gradient : dict of str to Estimate
        :math:`d\\langle\\Phi\\rangle/d\\gamma` for each scalar parameter of the map: the mean
        over ensemble members with its standard error (one member: batch means over segments).
    average : Estimate
        :math:`\\langle\\Phi\\rangle`, the time average over the run (mean over members).
    exponents : Tensor, shape (M,)
        The first ``M`` adjoint Lyapunov exponents per step, from the renormalisations.
    exponent_stderr : Tensor, shape (M,)
        Their batch-means standard errors over segments.
    n_unstable : int
        ``M``, the number of homogeneous adjoint solutions used (for a flow, including the
        neutral direction).
    per_member : dict of str to Tensor
        The derivative of each ensemble member, shape ``x0.shape[:-1]``, by parameter name.
    segment_steps : int
        Steps per segment.
    covector : Tensor or None, shape (N, ..., dim)
        The shadowing covector, ``covector[n - 1]`` :math:`= \\nu_n` for n = 1..N, when asked
        for with ``keep_covector``.
    covector_norm : Tensor or None, shape (N, ...)
        :math:`\\|\\nu_n\\|` for n = 1..N, when asked for with ``keep_norm`` (or
        ``keep_covector``).
    """

    gradient: dict[str, Estimate]
    average: Estimate
    exponents: Tensor
    exponent_stderr: Tensor
    n_unstable: int
    per_member: dict[str, Tensor]
    segment_steps: int
    covector: Tensor | None = None
    covector_norm: Tensor | None = None


def shadowing_least_squares(
    C: Tensor, d: Tensor, R: Tensor, b: Tensor, E: Tensor | None = None, e: Tensor | None = None
) -> Tensor:
    r"""Minimise :math:`\sum_k \tfrac12 a_k^\top C_k a_k + d_k^\top a_k` subject to the
    continuity conditions :math:`a_{k-1} = R_k a_k + b_k` (k = 1..K-1) and, optionally, one
    more linear condition :math:`E^\top a_0 = e`.

    Solved exactly by elimination: the constraints give every :math:`a_k` as an affine
    function of :math:`a_0`, computed forward with triangular solves
    (:math:`a_k = R_k^{-1}(a_{k-1} - b_k)`, a contraction when :math:`R_k` holds the growth of
    unstable directions), which leaves an :math:`M \times M` quadratic problem in :math:`a_0`
    (bordered by ``E``), at cost :math:`O(K M^3)` per member. If some :math:`R_k` shrink a
    direction so much that the recursion would amplify rounding by more than :math:`10^8`
    (stable directions included in :math:`M`), the dense KKT system is solved instead.

    Parameters
    ----------
    C : Tensor, shape (K, ..., M, M)
        Symmetric positive semidefinite Gram matrices :math:`\sum_n W_n^\top W_n` per segment.
    d : Tensor, shape (K, ..., M)
    R : Tensor, shape (K - 1, ..., M, M)
        ``R[k - 1]`` is :math:`R_k`, the triangular factor of the renormalisation at :math:`t_k`
        (upper triangular with a nonzero diagonal; only its upper triangle is read).
    b : Tensor, shape (K - 1, ..., M)
        ``b[k - 1]`` is :math:`b_k`.
    E : Tensor, shape (..., M), optional
    e : Tensor, shape (...,), optional

    Returns
    -------
    Tensor, shape (K, ..., M): the minimiser :math:`a_0, \dots, a_{K-1}`.

    Examples
    --------
    Two segments, one direction: minimise :math:`a_0^2 + a_0 + a_1^2/2 - a_1` subject to
    :math:`a_0 = 3 a_1 + 1/2`; substituting gives :math:`a_1 = -5/19`.

    >>> import torch
    >>> a = shadowing_least_squares(torch.tensor([[[2.0]], [[1.0]]], dtype=torch.float64),
    ...                             torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
    ...                             torch.tensor([[[3.0]]], dtype=torch.float64),
    ...                             torch.tensor([[0.5]], dtype=torch.float64))
    >>> [round(v, 12) for v in a.flatten().tolist()], [round(-11 / 38, 12), round(-5 / 19, 12)]
    ([-0.289473684211, -0.263157894737], [-0.289473684211, -0.263157894737])
    """
    K, M = C.shape[0], C.shape[-1]
    batch = C.shape[1:-2]
    if d.shape != (K, *batch, M) or R.shape != (K - 1, *batch, M, M) or b.shape != (K - 1, *batch, M):
        raise ValueError(
            f"shapes must be C (K, ..., M, M), d (K, ..., M), R (K-1, ..., M, M), b (K-1, ..., M); got "
            f"C {tuple(C.shape)}, d {tuple(d.shape)}, R {tuple(R.shape)}, b {tuple(b.shape)}"
        )
    # forward elimination multiplies by R_1^{-1}, R_2^{-1} R_1^{-1}, ...: safe while no such
    # product amplifies a direction by more than 1e8, i.e. when every direction is unstable or
    # neutral (the usual M)
    shrink = torch.cumsum(-torch.log(torch.diagonal(R, dim1=-2, dim2=-1)), 0)
    if K == 1 or float(shrink.max()) <= math.log(1e8):
        return _eliminate(C, d, R, b, E, e)
    return _kkt(C, d, R, b, E, e)


def _eliminate(C: Tensor, d: Tensor, R: Tensor, b: Tensor, E: Tensor | None, e: Tensor | None) -> Tensor:
    """:func:`shadowing_least_squares` by elimination, O(K M^3)."""
    K, M, batch = C.shape[0], C.shape[-1], C.shape[1:-2]
    # The constraints give every a_k as an affine function of a_0, forward in k:
    # a_k = R_k^{-1} (a_{k-1} - b_k) = P_k a_0 + q_k, a contraction (R_k holds the growth of the
    # unstable directions), so the recursion is stable. The cost is then a quadratic in a_0:
    # 1/2 a_0^T H a_0 + h^T a_0, with H = sum P_k^T C_k P_k and h = sum P_k^T (C_k q_k + d_k).
    P = torch.eye(M, dtype=C.dtype).expand(*batch, M, M)
    q = torch.zeros(*batch, M, 1, dtype=C.dtype)
    H = C[0].clone()
    h = d[0][..., None].clone()
    Ps, qs = [P], [q]
    for k in range(1, K):
        P = torch.linalg.solve_triangular(R[k - 1], P, upper=True)
        q = torch.linalg.solve_triangular(R[k - 1], q - b[k - 1][..., None], upper=True)
        Ps.append(P), qs.append(q)
        H = H + P.mT @ C[k] @ P
        h = h + P.mT @ (C[k] @ q + d[k][..., None])
    if E is None:
        a0 = torch.linalg.solve(H, -h)
    else:  # minimise subject to E^T a_0 = e: a bordered (M + 1) x (M + 1) system
        border = torch.zeros(*batch, M + 1, M + 1, dtype=C.dtype)
        border[..., :M, :M] = H
        border[..., :M, M] = E
        border[..., M, :M] = E
        rhs = torch.cat([-h, e[..., None, None]], -2)
        a0 = torch.linalg.solve(border, rhs)[..., :M, :]
    return torch.stack([(Pk @ a0 + qk)[..., 0] for Pk, qk in zip(Ps, qs)])


def _kkt(C: Tensor, d: Tensor, R: Tensor, b: Tensor, E: Tensor | None, e: Tensor | None) -> Tensor:
    """:func:`shadowing_least_squares` through its dense KKT system ((2K - 1) M unknowns): slower,
    but safe when some R_k shrink a direction (stable directions included in M)."""
    K, M, batch = C.shape[0], C.shape[-1], C.shape[1:-2]
    extra = 0 if E is None else 1
    n_a, n_c = K * M, (K - 1) * M + extra
    size = n_a + n_c
    A = torch.zeros(*batch, size, size, dtype=C.dtype)
    rhs = torch.zeros(*batch, size, dtype=C.dtype)
    for k in range(K):
        A[..., k * M:(k + 1) * M, k * M:(k + 1) * M] = C[k]
        rhs[..., k * M:(k + 1) * M] = -d[k]
    eye = torch.eye(M, dtype=C.dtype)
    for k in range(1, K):  # row block j: a_{k-1} - R_k a_k = b_k
        row = n_a + (k - 1) * M
        A[..., row:row + M, (k - 1) * M:k * M] = eye
        A[..., row:row + M, k * M:(k + 1) * M] = -R[k - 1]
        rhs[..., row:row + M] = b[k - 1]
    if E is not None:
        A[..., size - 1, 0:M] = E
        rhs[..., size - 1] = e
    constraints = A[..., n_a:, :n_a]
    A[..., :n_a, n_a:] = constraints.mT
    solution = torch.linalg.solve(A, rhs)
    return solution[..., :n_a].reshape(*batch, K, M).movedim(-2, 0)


def _flow(map: Map) -> bool:
    """Is ``map`` the time-``dt`` map of a flow with a known vector field?"""
    return callable(getattr(map, "vector_field", None)) and hasattr(map, "dt")


def _choose_m(exponents: Tensor, stderr: Tensor, flow: bool) -> int:
    """Number of positive adjoint exponents; for a flow, plus the neutral one (the exponent
    nearest zero within three standard errors, or the largest non-positive one)."""
    positive = exponents > 0
    if not flow:
        return int(positive.sum())
    neutral = int(torch.argmin(exponents.abs() / torch.clamp(stderr, min=1e-300)))
    return max(int(positive.sum()), neutral + 1)


def nilsas(
    map: Map,
    x0: Tensor,
    observable: Observable,
    segments: int,
    segment_steps: int,
    n_unstable: int | None = None,
    warmup: int = 0,
    n0: int = 0,
    seed: int = 0,
    keep_covector: bool = False,
    progress: bool | None = None,
    keep_norm: bool = False,
) -> ShadowingResult:
    r"""The derivative of a long-time average by non-intrusive least-squares adjoint shadowing.

    Parameters
    ----------
    map
        Any :class:`chaosgrad.Map`, autonomous or time-dependent; its scalar parameters
        (:meth:`Map.params`) are the :math:`\gamma` differentiated.
    x0
        Initial state(s), shape ``(..., dim)``; leading axes are independent runs (an
        ensemble), whose spread gives the standard error.
    observable
        :math:`\Phi`: maps states ``(..., dim)`` to values ``(...,)``; differentiable by torch.
    segments, segment_steps
        The run has ``N = segments * segment_steps`` steps after ``warmup``, split into
        segments at whose boundaries the adjoint basis is renormalised; ``segments >= 2``
        and ``segment_steps >= 1``. Choose ``segment_steps`` so that the homogeneous
        solutions grow by at most about ``1e8`` within a segment.
    n_unstable
        ``M``, the number of homogeneous adjoint solutions: at least the number of positive
        Lyapunov exponents (for a flow, plus one for the neutral direction). ``None``: the
        full adjoint spectrum is measured (:func:`~chaosgrad.adjoint_lyapunov_spectrum`, QR
        every step) along the first ``min(N, MAX_PILOT_STEPS)`` steps of this very run, and
        ``M`` is the number of positive exponents (for a flow, up to and including the one
        closest to zero in units of its standard error). That pilot costs about ``dim``
        backpropagations over those steps. ``M = 0`` is plain backpropagation of the average
        (right for a stable map).
    warmup
        Steps run first and discarded (the state settles on the attractor). The derivative
        is of the average over the ``N`` steps after it.
    n0
        Time index of ``x0`` (time-dependent maps).
    seed
        Seed of the random terminal basis of the homogeneous solutions.
    keep_covector
        Also return the shadowing covector along the run (memory ``N * dim * (M + 2)``
        numbers per member while it is assembled).
    progress
        Show a progress bar; ``None`` shows one only in an interactive terminal.
    keep_norm
        Also return :math:`\\|\\nu_n\\|` along the run, from
        :math:`\\|\\nu'_n + W_n a\\|^2 = \\|\\nu'_n\\|^2 + 2 a^\\top W_n^\\top\\nu'_n +
        a^\\top W_n^\\top W_n a`, whose pieces the least squares computes anyway: memory
        ``N * (M + 1)**2`` numbers per member instead of ``N * dim * (M + 2)``.

    Returns
    -------
    ShadowingResult

    Raises
    ------
    ValueError
        For ``segments < 2``, ``segment_steps < 1``, ``n_unstable`` outside ``0..dim``, an
        observable whose values do not have shape ``x0.shape[:-1]``, or a map without scalar
        parameters.
    NonFiniteStateError
        If a state, the observable or an adjoint becomes inf or NaN (the message names the
        step; an adjoint overflow means ``segment_steps`` is too long).

    See Also
    --------
    chaosgrad.derivatives.backprop_derivative : the per-orbit derivative that explodes.
    chaosgrad.derivatives.finite_difference : the reference where the average is smooth.
    shadowing_least_squares : step 4 above.
    """
    x = check_finite(map.check_state(x0, "x0"), "initial state x0", step=n0)
    segments = check_whole(segments, "segments", 2)
    L = check_whole(segment_steps, "segment_steps", 1)
    warmup = check_whole(warmup, "warmup", 0)
    dim, batch = map.dim, x.shape[:-1]
    if n_unstable is not None and (int(n_unstable) != n_unstable or not 0 <= n_unstable <= dim):
        raise ValueError(f"n_unstable must be a whole number with 0 <= n_unstable <= dim = {dim}; got {n_unstable}")
    names = [k for k, p in map.params().items() if p.numel() == 1]
    if not names:
        raise ValueError(f"{type(map).__name__} has no scalar parameters to differentiate")
    N = segments * L
    start = n0 + warmup
    flow = _flow(map)

    orbit = map.trajectory(x, warmup + N, n0, progress)[warmup:]  # x_0 .. x_N of the run
    with torch.enable_grad():
        states = orbit.detach().requires_grad_(True)
        phi = observable(states)
        if phi.shape != orbit.shape[:-1]:
            raise ValueError(
                f"observable must map states of shape (..., {dim}) to values of shape (...); "
                f"for states {tuple(orbit.shape)} it returned {tuple(phi.shape)}"
            )
        (sources,) = torch.autograd.grad(phi.sum(), states)
    phi = check_finite(phi.detach(), "observable", step=None)
    sources = sources / N  # sources[n] = grad Phi(x_n) / N, used for n = 1..N
    mean_phi = phi[1:].mean(0)  # (...,): the average of each member

    if map.autonomous:  # the derivatives of f with respect to each parameter, all steps at once
        with torch.no_grad():
            dfdg_all = torch.stack([map.param_jvp(orbit[:-1], {p: 1.0}, start) for p in names], -1)

    if n_unstable is None:  # count the positive adjoint exponents along this run's own orbit
        pilot = adjoint_lyapunov_spectrum(map, orbit[0], min(N, MAX_PILOT_STEPS), n0=start, seed=seed)
        n_unstable = _choose_m(pilot.exponents, pilot.stderr, flow)
    k = int(n_unstable)
    W = random_basis(dim, k, x.dtype, seed).expand(*batch, dim, k) if k else torch.zeros(*batch, dim, 0, dtype=x.dtype)
    nu = torch.zeros(*batch, dim, dtype=x.dtype)
    C, d, Rs, bs, logs = [], [], [], [], []
    g_prime, G = [], []  # per segment: (..., P) and (..., k, P)
    kept = [] if keep_covector else None
    grams = [] if keep_norm or keep_covector else None  # per segment: (L, ..., M + 1, M + 1)
    flow_row = None
    with torch.no_grad():
        for seg in progress_range(segments, progress, desc="NILSAS backward"):
            s = segments - 1 - seg  # segment s covers steps t_s .. t_{s+1} - 1
            Ck = torch.zeros(*batch, k, k, dtype=x.dtype)
            dk = torch.zeros(*batch, k, dtype=x.dtype)
            gk = torch.zeros(*batch, len(names), dtype=x.dtype)
            Gk = torch.zeros(*batch, k, len(names), dtype=x.dtype)
            pieces, gram = [], []
            for j in range(L * (s + 1) - 1, L * s - 1, -1):
                nu = nu + sources[j + 1]  # now (nu', W) hold index j + 1
                Ck = Ck + W.mT @ W
                dk = dk + (W.mT @ nu[..., None])[..., 0]
                if map.autonomous:
                    dfdg = dfdg_all[j]  # (..., dim, P)
                else:
                    dfdg = torch.stack([map.param_jvp(orbit[j], {p: 1.0}, start + j) for p in names], -1)
                gk = gk + (nu[..., None, :] @ dfdg)[..., 0, :]
                Gk = Gk + W.mT @ dfdg
                if kept is not None:
                    pieces.append((j + 1, nu, W))
                if grams is not None:  # [nu', W]^T [nu', W] at index j + 1
                    both = torch.cat([nu[..., None], W], -1)
                    gram.append(both.mT @ both)
                Y = map._vjp(orbit[j], torch.cat([nu[..., None], W], -1), start + j)
                check_finite(Y, "adjoint (lower segment_steps if it overflowed)", step=start + j)
                nu, W = Y[..., 0], Y[..., 1:]
            # renormalise at t_s
            if flow and s == 0:
                F = map.vector_field(orbit[0])
                flow_row = (W.mT @ F[..., None])[..., 0], -(phi[0] - mean_phi) / (N * map.dt) - (nu * F).sum(-1)
            if k:
                Q, lr, R = renormalise(W, step=start + L * s)
                bk = (Q.mT @ nu[..., None])[..., 0]
                nu = nu - (Q @ bk[..., None])[..., 0]
                W = Q
            else:
                lr, R, bk = torch.zeros(*batch, 0, dtype=x.dtype), torch.zeros(*batch, 0, 0, dtype=x.dtype), torch.zeros(*batch, 0, dtype=x.dtype)
            C.append(Ck), d.append(dk), g_prime.append(gk), G.append(Gk), logs.append(lr)
            Rs.append(R), bs.append(bk)
            if kept is not None:
                kept.append(pieces)
            if grams is not None:
                grams.append(torch.stack(gram[::-1]))  # steps t_s + 1 .. t_{s+1} in order
    # segments were visited last to first: put them in time order
    C, d, g_prime, G, logs = (torch.stack(v[::-1]) for v in (C, d, g_prime, G, logs))
    Rs, bs = torch.stack(Rs[::-1]), torch.stack(bs[::-1])  # Rs[s], bs[s]: renormalisation at t_s

    if k:
        exponents_all = logs.reshape(segments, -1, k).mean(1) / L  # (K, k): per segment, ensemble mean
        exps, exp_err = batch_means(exponents_all, min(20, segments))[:2]
        E, e = (None, None) if flow_row is None else flow_row
        a = shadowing_least_squares(C, d, Rs[1:], bs[1:], E, e)  # (K, ..., M); continuity at t_1..t_{K-1}
        contributions = g_prime + (a[..., None, :] @ G)[..., 0, :]  # (K, ..., P)
    else:  # plain backpropagation of the average
        exps = exp_err = torch.zeros(0, dtype=x.dtype)
        a, contributions = None, g_prime
    per_member = contributions.sum(0)  # (..., P)
    members = per_member.reshape(-1, len(names))
    gradient = {}
    for i, name in enumerate(names):
        if members.shape[0] >= 2:
            gradient[name] = Estimate.of(members[:, i])
        else:  # one run: batch means over its segments
            gradient[name] = Estimate.of_series(contributions[..., i].reshape(segments) * segments,
                                                blocks=min(20, segments))
    average = Estimate.of(mean_phi.reshape(-1)) if mean_phi.numel() >= 2 else Estimate.of_series(phi[1:].reshape(-1))
    covector = covector_norm = None
    if grams is not None:  # |nu' + W a|^2 with c = (1, a): c^T [nu', W]^T [nu', W] c
        gram = torch.cat(grams[::-1])  # (N, ..., M + 1, M + 1)
        ones = torch.ones(segments, *batch, 1, dtype=x.dtype)
        coef = torch.cat([ones, a], -1) if k else ones  # (K, ..., M + 1)
        coef = coef.repeat_interleave(L, 0)[..., None]
        covector_norm = (coef.mT @ gram @ coef)[..., 0, 0].clamp(min=0).sqrt()
    if kept is not None:  # covector[m - 1] = nu_m, m = 1..N
        covector = torch.zeros(N, *batch, dim, dtype=x.dtype)
        for s, pieces in enumerate(kept[::-1]):
            for m, nu_m, W_m in pieces:
                covector[m - 1] = nu_m + ((W_m @ a[s][..., None])[..., 0] if k else 0)
    return ShadowingResult(
        gradient=gradient,
        average=average,
        exponents=exps,
        exponent_stderr=exp_err,
        n_unstable=k,
        per_member={name: per_member[..., i] for i, name in enumerate(names)},
        segment_steps=L,
        covector=covector,
        covector_norm=covector_norm,
    )
