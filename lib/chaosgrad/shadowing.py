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
5. Pair the covector with the parameters: :math:`dJ/d\gamma = \sum_k \big(g'_k + G_k^\top
   a_k\big)` for each scalar parameter (the pairings accumulated in step 2); for every
   parameter at once, tensors included, :math:`\sum_n (\partial_\gamma f_n)^\top \nu_{n+1}`
   with :math:`\nu_n = \nu'_n + W_n a_k` assembled from the stored :math:`(\nu'_n, W_n)`,
   one reverse-mode parameter gradient per step.

The cost is that of backpropagating :math:`M + 1` covectors, plus one forward-mode
derivative with respect to each scalar parameter per step, or one parameter gradient per step
for all parameters together: at most about :math:`1.5\,(M + 1)` backpropagations whatever
the number of parameters (a backpropagation being a step, a vjp and a parameter vjp).

**Time-:math:`h` maps of flows** (maps that declare ``is_flow = True`` and define ``vector_field`` and ``dt``, e.g.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from .adjoint import adjoint_lyapunov_spectrum
from .derivatives import check_scalar_observable
from .estimates import Estimate, batch_means
from .gradients import Gradient, parameter_names
from .maps import Map
from .progress import progress_range
from .tangent import random_basis, renormalise
from .validation import check_finite, check_whole, evaluate_observable, warn_constant_parameters, warn_few_samples

__all__ = ["ShadowingResult", "nilsas", "shadowing_least_squares"]

Observable = Callable[[Tensor], Tensor]

#: Steps of the run over which ``n_unstable=None`` measures the adjoint spectrum (all
#: ``dim`` exponents, QR every step) to count the positive ones.
MAX_PILOT_STEPS = 2000

#: Largest growth of a homogeneous adjoint solution within one segment that :func:`nilsas`
#: accepts. The shadowing covector :math:`\nu = \nu' + W a` cancels terms as large as that
#: growth times :math:`\|\nu\|`, so float64's rounding (:math:`1.1\times10^{-16}`) comes
#: back amplified by it: :math:`10^{12}` leaves a relative error of about :math:`10^{-4}`, below
#: any error bar of the book; beyond about :math:`10^{16}` the derivative is rounding noise
#: (a segment growing by :math:`e^{90}` gave :math:`6.3\times10^{31}\pm6.3\times10^{31}`).
MAX_SEGMENT_GROWTH = 1e12

#: The growth per segment that the ``segment_steps`` suggested by the error aims at (the
#: docstring's advice).
TARGET_SEGMENT_GROWTH = 1e8


@dataclass(frozen=True)
class ShadowingResult:
    """The result of :func:`nilsas`.

    Attributes
    ----------
    gradient : dict of str to Estimate
        :math:`d\\langle\\Phi\\rangle/d\\gamma` for each requested scalar parameter (by default
        every scalar parameter of the map): the mean
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
    gradients : Gradient
        Every requested parameter, scalar (as a tensor of its shape, the same numbers as
        ``gradient``) or tensor, its samples one per ensemble member, shape
        ``(members, *param.shape)``; with one member, one per block of consecutive segments
        (batch means: the block means of the segments' contributions times ``segments``,
        over equal blocks, as many as possible up to 20, so that their mean is the run's
        derivative; ``gradient`` uses ``min(20, segments)`` blocks, the same ones when that
        divides ``segments``).
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
    gradients: Gradient | None = None


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
    """Is ``map`` the time-``dt`` map of a flow (declared by :attr:`Map.is_flow
    <chaosgrad.maps.Map.is_flow>`)? A declared flow must have ``vector_field`` and ``dt``."""
    if not map.is_flow:
        return False
    missing = [name for name in ("vector_field", "dt") if not hasattr(map, name)]
    if missing or not callable(map.vector_field):
        raise TypeError(f"{type(map).__name__} declares is_flow = True but has no {' or '.join(missing or ['callable vector_field'])}: "
                        "a flow's time-dt map must define vector_field(x) (the field F, states (..., dim) to (..., dim)) "
                        "and dt (the time step)")
    return True


def _choose_m(exponents: Tensor, stderr: Tensor, flow: bool) -> int:
    """Number of positive adjoint exponents; for a flow, plus the neutral one (the exponent
    nearest zero within three standard errors, or the largest non-positive one)."""
    positive = exponents > 0
    if not flow:
        return int(positive.sum())
    neutral = int(torch.argmin(exponents.abs() / torch.clamp(stderr, min=1e-300)))
    return max(int(positive.sum()), neutral + 1)


def _forward_run(map: Map, x: Tensor, observable: Observable, warmup: int, N: int, n0: int,
                 progress: bool | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Step 1: the stored orbit and the sources.

    Returns
    -------
    (orbit, phi, sources, mean_phi)
        ``orbit`` :math:`x_0 \dots x_N` of the run (after the warm-up), shape
        ``(N + 1, ..., dim)``; ``phi`` :math:`\Phi(x_n)`, ``(N + 1, ...)``; ``sources``
        :math:`\nabla\Phi(x_n)/N`, used for n = 1..N; ``mean_phi`` each member's average.
    """
    orbit = map.trajectory(x, warmup + N, n0, progress)[warmup:]  # x_0 .. x_N of the run
    return (orbit, *_observed(observable, orbit, N))


def _observed(observable: Observable, orbit: Tensor, N: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(phi, sources, mean_phi)`` of :func:`_forward_run` along a stored ``orbit`` of the run."""
    with torch.enable_grad():
        states = orbit.detach().requires_grad_(True)
        phi = evaluate_observable(observable, states, "nilsas")
        check_scalar_observable(phi, states, "nilsas")
        (sources,) = torch.autograd.grad(phi.sum(), states)
    phi = check_finite(phi.detach(), "observable", step=None)
    sources = sources / N  # sources[n] = grad Phi(x_n) / N, used for n = 1..N
    mean_phi = phi[1:].mean(0)  # (...,): the average of each member
    return phi, sources, mean_phi


def _pilot(map: Map, x0: Tensor, N: int, start: int, seed: int, flow: bool) -> int:
    """The ``M`` of ``n_unstable=None``: the full adjoint spectrum along the first
    ``min(N, MAX_PILOT_STEPS)`` steps of the run from ``x0``, and :func:`_choose_m`."""
    pilot = adjoint_lyapunov_spectrum(map, x0, min(N, MAX_PILOT_STEPS), n0=start, seed=seed)
    return _choose_m(pilot.exponents, pilot.stderr, flow)


@dataclass(frozen=True)
class _Sweep:
    r"""What the backward sweep (steps 2 and 3) leaves for the least squares and the pairing,
    segments in time order (:math:`K` segments, :math:`P` scalar parameters).

    Attributes
    ----------
    C, d : Tensor
        :math:`C_k = \sum_n W_n^\top W_n`, ``(K, ..., M, M)``, and
        :math:`d_k = \sum_n W_n^\top\nu'_n`, ``(K, ..., M)``.
    R, b : Tensor
        The renormalisation at :math:`t_k`: ``R[k]``, ``(K, ..., M, M)``, and ``b[k]``,
        ``(K, ..., M)`` (index 0, at the start of the run, enters no constraint).
    g_prime, G : Tensor
        :math:`g'_k = \sum_n (\partial_\gamma f_n)^\top\nu'_{n+1}`, ``(K, ..., P)``, and
        :math:`G_k = \sum_n W_{n+1}^\top\partial_\gamma f_n`, ``(K, ..., M, P)``.
    logs : Tensor
        Log-diagonals of the ``R``, ``(K, ..., M)``.
    flow_row : tuple or None
        :math:`(E, e)` of the flow's time-dilation condition :math:`E^\top a_0 = e`.
    pieces : list or None
        Per segment, :math:`(m, \nu'_m, W_m)` for its steps, latest first.
    grams : list or None
        Per segment, :math:`[\nu', W]^\top[\nu', W]` at its steps in time order.
    second : tuple or None
        With a ``second`` source (:func:`_backward_sweep`), :math:`(\tilde d_k, \tilde b_k)`
        of the second inhomogeneous solution :math:`\tilde\nu'`, shaped as ``(d, b)``, and
        for a flow :math:`\langle\tilde\nu'_0, F(x_0)\rangle` (else ``None``).
    """

    C: Tensor
    d: Tensor
    R: Tensor
    b: Tensor
    g_prime: Tensor
    G: Tensor
    logs: Tensor
    flow_row: tuple[Tensor, Tensor] | None
    pieces: list | None
    grams: list | None
    second: tuple[Tensor, Tensor, Tensor | None] | None = None


def _backward_sweep(map: Map, orbit: Tensor, phi: Tensor, sources: Tensor, mean_phi: Tensor, names: list[str],
                    k: int, segments: int, L: int, start: int, seed: int, keep_pieces: bool, keep_grams: bool,
                    progress: bool | None, second=None) -> _Sweep:
    r"""Steps 2 and 3: :math:`M = k` homogeneous adjoint solutions :math:`W` and one
    inhomogeneous :math:`\nu'` pulled back over each segment, last segment first, the Gram
    sums and the pairings with :math:`\partial_\gamma f` (one forward-mode derivative per
    scalar parameter in ``names`` per step) accumulated, and the basis renormalised at the
    segment's start. ``keep_pieces`` stores :math:`(\nu'_n, W_n)` for every step (for the
    covector, or for pairing tensor parameters after the least squares), ``keep_grams`` the
    Gram matrices of ``keep_norm``.

    ``second`` (used by :func:`chaosgrad.response.linear_response`) carries a second
    inhomogeneous solution :math:`\tilde\nu'` in the same pull-back, renormalisation and
    Gram sums, whose source is computed during the sweep: ``second.source(j, W)`` returns the
    source at index ``j`` from the homogeneous solutions :math:`W_{j+1}` (added, as
    :math:`\nabla\Phi/N` is, before the pairings at index ``j``), and
    ``second.pair(j, p, P)`` receives its pairings with :math:`\partial_\gamma f_j`:
    :math:`p = (\partial_\gamma f_j)^\top\tilde\nu'_{j+1}`, ``(..., P)``, and
    :math:`P = W_{j+1}^\top\partial_\gamma f_j`, ``(..., M, P)``."""
    x = orbit[0]
    dim, batch = map.dim, x.shape[:-1]
    N = segments * L
    flow = _flow(map)
    if map.autonomous and names:  # the derivatives of f with respect to each parameter, all steps at once
        with torch.no_grad():
            dfdg_all = torch.stack([map.param_jvp(orbit[:-1], {p: 1.0}, start) for p in names], -1)
    W = random_basis(dim, k, x.dtype, seed).expand(*batch, dim, k) if k else torch.zeros(*batch, dim, 0, dtype=x.dtype)
    nu = torch.zeros(*batch, dim, dtype=x.dtype)
    C, d, Rs, bs, logs = [], [], [], [], []
    g_prime, G = [], []  # per segment: (..., P) and (..., k, P)
    kept = [] if keep_pieces else None
    grams = [] if keep_grams else None  # per segment: (L, ..., M + 1, M + 1)
    flow_row = None
    nu2 = pending = torch.zeros(*batch, dim, dtype=x.dtype)
    second_flow = None
    d2, b2 = [], []
    with torch.no_grad():
        for seg in progress_range(segments, progress, desc="NILSAS backward"):
            s = segments - 1 - seg  # segment s covers steps t_s .. t_{s+1} - 1
            Ck = torch.zeros(*batch, k, k, dtype=x.dtype)
            dk = torch.zeros(*batch, k, dtype=x.dtype)
            gk = torch.zeros(*batch, len(names), dtype=x.dtype)
            Gk = torch.zeros(*batch, k, len(names), dtype=x.dtype)
            d2k = torch.zeros_like(dk)
            pieces, gram = [], []
            for j in range(L * (s + 1) - 1, L * s - 1, -1):
                nu = nu + sources[j + 1]  # now (nu', W) hold index j + 1
                Ck = Ck + W.mT @ W
                dk = dk + (W.mT @ nu[..., None])[..., 0]
                if second is not None:
                    nu2 = nu2 + pending  # the second source at index j + 1
                    d2k = d2k + (W.mT @ nu2[..., None])[..., 0]
                if names:
                    if map.autonomous:
                        dfdg = dfdg_all[j]  # (..., dim, P)
                    else:
                        dfdg = torch.stack([map.param_jvp(orbit[j], {p: 1.0}, start + j) for p in names], -1)
                    WX = W.mT @ dfdg
                    gk = gk + (nu[..., None, :] @ dfdg)[..., 0, :]
                    Gk = Gk + WX
                    if second is not None:
                        second.pair(j, (nu2[..., None, :] @ dfdg)[..., 0, :], WX)
                if kept is not None:
                    pieces.append((j + 1, nu, W))
                if grams is not None:  # [nu', W]^T [nu', W] at index j + 1
                    both = torch.cat([nu[..., None], W], -1)
                    gram.append(both.mT @ both)
                if second is None:
                    Y = map._vjp(orbit[j], torch.cat([nu[..., None], W], -1), start + j)
                else:
                    pending = second.source(j, W)
                    Y = map._vjp(orbit[j], torch.cat([nu[..., None], nu2[..., None], W], -1), start + j)
                    nu2, Y = Y[..., 1], Y[..., [0, *range(2, k + 2)]]
                check_finite(Y, "adjoint (lower segment_steps if it overflowed)", step=start + j)
                nu, W = Y[..., 0], Y[..., 1:]
            # renormalise at t_s
            if flow and s == 0:
                F = map.vector_field(orbit[0])
                flow_row = (W.mT @ F[..., None])[..., 0], -(phi[0] - mean_phi) / (N * map.dt) - (nu * F).sum(-1)
                if second is not None:
                    second_flow = (nu2 * F).sum(-1)
            if k:
                Q, lr, R = renormalise(W, step=start + L * s)
                bk = (Q.mT @ nu[..., None])[..., 0]
                nu = nu - (Q @ bk[..., None])[..., 0]
                if second is not None:
                    b2k = (Q.mT @ nu2[..., None])[..., 0]
                    nu2 = nu2 - (Q @ b2k[..., None])[..., 0]
                    d2.append(d2k), b2.append(b2k)
                W = Q
            else:
                lr = torch.zeros(*batch, 0, dtype=x.dtype)
                R, bk = torch.zeros(*batch, 0, 0, dtype=x.dtype), torch.zeros(*batch, 0, dtype=x.dtype)
            C.append(Ck), d.append(dk), g_prime.append(gk), G.append(Gk), logs.append(lr)
            Rs.append(R), bs.append(bk)
            if kept is not None:
                kept.append(pieces)
            if grams is not None:
                grams.append(torch.stack(gram[::-1]))  # steps t_s + 1 .. t_{s+1} in order
    # segments were visited last to first: put them in time order
    C, d, g_prime, G, logs = (torch.stack(v[::-1]) for v in (C, d, g_prime, G, logs))
    Rs, bs = torch.stack(Rs[::-1]), torch.stack(bs[::-1])  # Rs[s], bs[s]: renormalisation at t_s
    second_pieces = (torch.stack(d2[::-1]), torch.stack(b2[::-1]), second_flow) if second is not None else None
    return _Sweep(C, d, Rs, bs, g_prime, G, logs, flow_row,
                  None if kept is None else kept[::-1], None if grams is None else grams[::-1], second_pieces)


def _least_squares(sweep: _Sweep, segments: int, L: int, k: int) -> tuple[Tensor | None, Tensor, Tensor]:
    """Step 4: the coefficients ``a`` (``(K, ..., M)``, ``None`` for ``M = 0``) of
    :func:`shadowing_least_squares` under continuity at :math:`t_1 .. t_{K-1}` (and, for a
    flow, the time-dilation condition), and the adjoint exponents with their batch-means
    errors over segments."""
    if not k:  # plain backpropagation of the average
        exps = exp_err = torch.zeros(0, dtype=sweep.C.dtype)
        return None, exps, exp_err
    _check_segment_growth(sweep.logs, L)
    exponents_all = sweep.logs.reshape(segments, -1, k).mean(1) / L  # (K, k): per segment, ensemble mean
    exps, exp_err = batch_means(exponents_all, min(20, segments))[:2]
    E, e = (None, None) if sweep.flow_row is None else sweep.flow_row
    a = shadowing_least_squares(sweep.C, sweep.d, sweep.R[1:], sweep.b[1:], E, e)  # (K, ..., M)
    return a, exps, exp_err


def _check_segment_growth(logs: Tensor, L: int) -> None:
    r"""Raise a ValueError naming ``segment_steps`` if a homogeneous adjoint solution grew by
    more than :data:`MAX_SEGMENT_GROWTH` within a segment: ``logs`` are the log-diagonals of
    the renormalisations' :math:`R` (``(K, ..., M)``), the growth of each solution over its
    segment of ``L`` steps. The suggested ``segment_steps`` brings the growth down to
    :data:`TARGET_SEGMENT_GROWTH` at the measured rate."""
    largest = float(logs.max())
    if largest <= math.log(MAX_SEGMENT_GROWTH):
        return
    suggested = max(1, int(L * math.log(TARGET_SEGMENT_GROWTH) / largest))
    raise ValueError(
        f"segment_steps = {L} is too long for float64: a homogeneous adjoint solution grew by about "
        f"1e{largest / math.log(10):.0f} (e^{largest:.0f}) within one segment, above 1e{math.log10(MAX_SEGMENT_GROWTH):.0f}, and the least squares would amplify "
        f"rounding errors by that factor. Use segment_steps <= {suggested} (growth about "
        f"1e{math.log10(TARGET_SEGMENT_GROWTH):.0f} per segment at the measured rate of {largest / L:.3g} per step), with "
        "proportionally more segments for the same run length")


def _segment_covector(pieces: list, a_s: Tensor | None) -> Tensor:
    r""":math:`\nu_m = \nu'_m + W_m a_s` over one segment's steps, in time order, ``(L, ..., dim)``."""
    return torch.stack([nu_m + ((W_m @ a_s[..., None])[..., 0] if a_s is not None else 0)
                        for _, nu_m, W_m in pieces[::-1]])


def _pair_tensors(map: Map, orbit: Tensor, pieces: list, a: Tensor | None, names: list[str], start: int,
                  L: int) -> list[dict[str, Tensor]]:
    r"""Step 5 for any parameter: :math:`\sum_n (\partial_\gamma f_n)^\top\nu_{n+1}` per segment
    and member, with the shadowing covector assembled after the least squares: one
    parameter gradient (:meth:`Map.param_vjp`) per step, whatever the number of parameters;
    for an autonomous map, one batched call per segment. Returns, per segment in time order,
    the sums by name, each ``(..., *param.shape)``."""
    batch = orbit.shape[1:-1]
    keep = len(batch)
    out = []
    with torch.no_grad():
        for s, segment in enumerate(pieces):
            nu = _segment_covector(segment, None if a is None else a[s])  # nu_{j+1} for j = L s .. L (s+1) - 1
            xs = orbit[L * s: L * (s + 1)]
            if map.autonomous:  # the segment's steps as the last ensemble axis, summed in one pass
                grads = map._param_vjp(xs.movedim(0, -2), nu.movedim(0, -2), start, keep)
                out.append({k: grads[k] for k in names})
            else:
                total = {k: 0.0 for k in names}
                for i in range(L):
                    grads = map._param_vjp(xs[i], nu[i], start + L * s + i, keep)
                    total = {k: total[k] + grads[k] for k in names}
                out.append(total)
    return out


def _block_samples(per_segment: Tensor, segments: int) -> Tensor:
    """One member's derivative as independent samples: block means of the segments'
    contributions (axis 0) times ``segments``, over blocks of consecutive segments of equal
    length, as many as possible up to 20 (the largest divisor of ``segments`` up to 20), so
    that the samples' mean is the member's derivative. A prime number of segments above 20
    gets the 20 near-equal blocks of :func:`~chaosgrad.estimates.batch_means`, whose plain
    mean weights the segments slightly unequally."""
    blocks = max(b for b in range(1, min(20, segments) + 1) if segments % b == 0)
    if blocks == 1:
        blocks = min(20, segments)
    edges = torch.linspace(0, segments, blocks + 1).round().long().tolist()
    return torch.stack([per_segment[lo:hi].mean(0) * segments for lo, hi in zip(edges[:-1], edges[1:])])


def _assemble(map: Map, x: Tensor, orbit: Tensor, phi: Tensor, mean_phi: Tensor, sweep: _Sweep, a: Tensor | None,
              exps: Tensor, exp_err: Tensor, requested: list[str], scalars: list[str], start: int, segments: int,
              L: int, k: int, keep_covector: bool) -> ShadowingResult:
    r"""Step 5 and the result: :math:`dJ/d\gamma = \sum_k (g'_k + G_k^\top a_k)` for the scalar
    parameters (as always), :func:`_pair_tensors` for the others, every requested one in
    :attr:`ShadowingResult.gradients`, and the covector or its norm when asked for."""
    dim, batch, N = map.dim, x.shape[:-1], segments * L
    # (K, ..., P): the scalar parameters' contributions per segment
    contributions = sweep.g_prime if a is None else sweep.g_prime + (a[..., None, :] @ sweep.G)[..., 0, :]
    per_member = contributions.sum(0)  # (..., P)
    one = batch.numel() < 2  # one run: batch means over its segments
    members = per_member.reshape(batch.numel(), len(scalars))
    gradient = {}
    for i, name in enumerate(scalars):
        if not one:
            gradient[name] = Estimate.of(members[:, i])
        else:
            gradient[name] = Estimate.of_series(contributions[..., i].reshape(segments) * segments,
                                                blocks=min(20, segments))
    params = map.params()
    per_segment = {name: contributions[..., i] for i, name in enumerate(scalars)}  # (K, ...) by name
    totals = {name: per_member[..., i] for i, name in enumerate(scalars)}  # (...) by name
    tensors = [name for name in requested if name not in scalars]
    if tensors:
        pairs = _pair_tensors(map, orbit, sweep.pieces, a, tensors, start, L)
        per_segment.update({name: torch.stack([p[name] for p in pairs]) for name in tensors})
        totals.update({name: per_segment[name].sum(0) for name in tensors})
    samples = {name: _block_samples(per_segment[name].reshape(segments, *params[name].shape), segments) if one
               else totals[name].reshape(-1, *params[name].shape) for name in requested}
    gradients = Gradient.of(samples, per="block" if one else "member")
    average = Estimate.of(mean_phi.reshape(-1)) if mean_phi.numel() >= 2 else Estimate.of_series(phi[1:].reshape(-1))
    covector = covector_norm = None
    if sweep.grams is not None:  # |nu' + W a|^2 with c = (1, a): c^T [nu', W]^T [nu', W] c
        gram = torch.cat(sweep.grams)  # (N, ..., M + 1, M + 1)
        ones = torch.ones(segments, *batch, 1, dtype=x.dtype)
        coef = torch.cat([ones, a], -1) if k else ones  # (K, ..., M + 1)
        coef = coef.repeat_interleave(L, 0)[..., None]
        covector_norm = (coef.mT @ gram @ coef)[..., 0, 0].clamp(min=0).sqrt()
    if keep_covector:  # covector[m - 1] = nu_m, m = 1..N
        covector = torch.zeros(N, *batch, dim, dtype=x.dtype)
        for s, pieces in enumerate(sweep.pieces):
            for m, nu_m, W_m in pieces:
                covector[m - 1] = nu_m + ((W_m @ a[s][..., None])[..., 0] if k else 0)
    return ShadowingResult(
        gradient=gradient,
        average=average,
        exponents=exps,
        exponent_stderr=exp_err,
        n_unstable=k,
        per_member={name: per_member[..., i] for i, name in enumerate(scalars)},
        segment_steps=L,
        covector=covector,
        covector_norm=covector_norm,
        gradients=gradients,
    )


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
    parameter: str | Iterable[str] | None = None,
) -> ShadowingResult:
    r"""The derivative of a long-time average by non-intrusive least-squares adjoint shadowing.

    The five steps of the module docstring, each a named phase: the forward run and the
    sources (:func:`_forward_run`), the pilot that chooses ``M`` when ``n_unstable`` is
    ``None`` (:func:`_pilot`), the backward sweep (:func:`_backward_sweep`), the least
    squares (:func:`shadowing_least_squares`, through :func:`_least_squares`) and the pairing
    of the shadowing covector with :math:`\partial_\gamma f` (:func:`_assemble`).

    Parameters
    ----------
    map
        Any :class:`chaosgrad.Map`, autonomous or time-dependent; its parameters
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

        Choosing ``M`` with margin: count the positive exponents with their error bars
        (:func:`~chaosgrad.adjoint_lyapunov_spectrum`, or ``exponents`` and
        ``exponent_stderr`` of a first run); an exponent within its error bars of zero must
        be included, and so must a flow's neutral one. Too small an ``M`` leaves an unstable
        direction in the covector, which then grows along the run and biases the derivative
        (and inflates its per-member scatter); a larger ``M`` than needed does not bias it (the
        least squares gives the extra stable directions coefficients near zero) and costs only
        ``M + 1`` vjps per step instead of the minimum. When in doubt take ``M`` a few above the
        count (the issue's 40-dimensional flow: automatic ``M = 14`` had three times the
        scatter of ``M = 16``). With 2 to 7 members the error bar is unreliable and a
        :class:`~chaosgrad.validation.FewSamplesWarning` is issued: use 8 or more.
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
    parameter
        The parameters differentiated: ``None`` (default) every parameter of the map, scalar
        or tensor; a name; or a list of names. Scalar parameters (one entry) are paired as
        they always were, :math:`\sum_k (g'_k + G_k^\top a_k)` with one forward-mode
        derivative per parameter per step. Any other is paired after the least squares:
        :math:`(\nu'_n, W_n)` are stored along the run (memory ``N * dim * (M + 1)`` numbers
        per member, as ``keep_covector``), :math:`\nu_n = \nu'_n + W_n a_k` assembled and
        :math:`\sum_n (\partial_\gamma f_n)^\top \nu_{n+1}` taken by one
        :meth:`Map.param_vjp` per step for all of them at once (batched over a segment's steps
        for an autonomous map): the cost does not grow with their number.

    Returns
    -------
    ShadowingResult
        ``gradient`` and ``per_member`` for the requested scalar parameters, ``gradients`` (a
        :class:`~chaosgrad.gradients.Gradient`) for every requested parameter.

    Raises
    ------
    ValueError
        For ``segments < 2``, ``segment_steps < 1``, ``n_unstable`` outside ``0..dim``, an
        observable whose values do not have shape ``x0.shape[:-1]``, a map without
        parameters, or a ``parameter`` the map does not have or a list naming one twice; and
        for ``segment_steps`` too long for float64 (a homogeneous solution grew by more than
        :data:`MAX_SEGMENT_GROWTH` within a segment: the message suggests a shorter one).
    TypeError
        For an observable not written with torch operations
        (:func:`~chaosgrad.validation.evaluate_observable`).

    Warns
    -----
    ConstantParameterWarning
        For a requested parameter that does not reach the map's output (``.item()`` in ``step``).
    FewSamplesWarning
        For 2 to 7 ensemble members.
    NonFiniteStateError
        If a state, the observable or an adjoint becomes inf or NaN (the message names the
        step; an adjoint overflow means ``segment_steps`` is too long).

    See Also
    --------
    chaosgrad.derivatives.backprop_derivative : the per-orbit derivative that explodes.
    chaosgrad.derivatives.finite_difference : the reference where the average is smooth.
    shadowing_least_squares : step 4 of the module docstring.
    """
    x = check_finite(map.check_state(x0, "x0"), "initial state x0", step=n0)
    segments = check_whole(segments, "segments", 2)
    L = check_whole(segment_steps, "segment_steps", 1)
    warmup = check_whole(warmup, "warmup", 0)
    dim = map.dim
    if n_unstable is not None and (int(n_unstable) != n_unstable or not 0 <= n_unstable <= dim):
        raise ValueError(f"n_unstable must be a whole number with 0 <= n_unstable <= dim = {dim}; got {n_unstable}")
    params = map.params()
    requested = parameter_names(map, parameter)
    scalars = [name for name in requested if params[name].numel() == 1]
    N = segments * L
    start = n0 + warmup

    orbit, phi, sources, mean_phi = _forward_run(map, x, observable, warmup, N, n0, progress)  # step 1
    warn_constant_parameters(map, orbit[0], requested, start, start + N - 1)
    warn_few_samples(x.shape[:-1].numel(), "nilsas", "ensemble members (leading axes of x0)")
    if n_unstable is None:  # count the positive adjoint exponents along this run's own orbit
        n_unstable = _pilot(map, orbit[0], N, start, seed, _flow(map))
    k = int(n_unstable)
    sweep = _backward_sweep(map, orbit, phi, sources, mean_phi, scalars, k, segments, L, start, seed,  # steps 2-3
                            keep_pieces=keep_covector or len(scalars) < len(requested),
                            keep_grams=keep_norm or keep_covector, progress=progress)
    a, exps, exp_err = _least_squares(sweep, segments, L, k)  # step 4
    return _assemble(map, x, orbit, phi, mean_phi, sweep, a, exps, exp_err, requested, scalars, start,  # step 5
                     segments, L, k, keep_covector)
