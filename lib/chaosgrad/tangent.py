r"""The tangent-space engine: carry a basis of tangent vectors forward, or of covectors
backward, along an orbit and keep it well conditioned by QR renormalisation.

Every tangent algorithm of the library is built on these pieces, as ChaosTools.jl builds
its tangent algorithms on one tangent integrator:

- :func:`lyapunov_spectrum` (forward vectors, Benettin/QR), :func:`adjoint_lyapunov_spectrum`
  and :func:`backprop_growth` (covectors pulled back by the adjoint map),
  :func:`covariant_lyapunov_vectors` (both directions, Ginelli's method), and
  :func:`chaosgrad.shadowing.nilsas` (homogeneous adjoint solutions, renormalised at segment
  boundaries).

Pushing a basis :math:`Q` (columns in :math:`\mathbb{R}^d`) through the Jacobian,
:math:`V = Df_n(x_n) Q`, or pulling it back through its transpose,
:math:`V = Df_n(x_n)^\top Q`, then factoring :math:`V = QR` with :math:`R_{ii} > 0` keeps the
column span and records the growth :math:`\ln R_{ii}` of each direction. Renormalising every
:math:`r > 1` steps is exact in exact arithmetic and safe in floating point while the
growth ratio between columns, :math:`e^{(\lambda_1 - \lambda_k) r}`, stays far below
:math:`1/\varepsilon`; a segment that breaks that bound is redone with a QR every step.

References
----------
:cite:`benettin1980lyapunov` G. Benettin et al., Meccanica 15 (1980) 9-20;
:cite:`kuptsov2012theory` P. V. Kuptsov, U. Parlitz, J. Nonlinear Sci. 22 (2012) 727-762.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .maps import Map
from .progress import progress_range
from .validation import check_finite

__all__ = [
    "MAX_GROWTH_RATIO",
    "REDO_GROWTH_RATIO",
    "align_forward",
    "backward_run",
    "check_run",
    "factor_segment",
    "forward_run",
    "qr_factors",
    "random_basis",
    "renormalise",
    "resolve_renorm_every",
    "step_by_step",
]

#: Largest growth ratio between the first and last basis vector allowed between two QR
#: factorisations by ``renorm_every="auto"``: 1e8, eight orders of magnitude below 1/eps.
#: The smallest exponents then carry a rounding error of order eps * 1e8 per factorisation
#: (measured on a width-256 tanh network: 2e-8 per step against QR every step).
MAX_GROWTH_RATIO = 1e8

#: The growth ratio is a random variable, and its fluctuations are heavy-tailed where a
#: Jacobian is nearly singular (products of 4 x 4 Gaussian matrices: with QR every 18 steps
#: the bottom exponent was off by 1e-4, and by a different amount on every CPU). So every
#: multi-step segment whose measured ratio max R_ii / min R_ii exceeds ``REDO_GROWTH_RATIO``
#: (or overflows) is redone from its start with a QR every step, from the stored states.
REDO_GROWTH_RATIO = 1e10


def random_basis(dim: int, k: int, dtype: torch.dtype, seed: int) -> Tensor:
    """A random orthonormal ``dim x k`` basis (QR of a Gaussian matrix), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, k, generator=g, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))


def qr_factors(V: Tensor) -> tuple[Tensor, Tensor]:
    """QR of each (dim x k) matrix with diag(R) > 0; returns (Q, R).

    R comes from Householder QR (LAPACK geqrf), which is backward stable column by column,
    so a column's log R_ii is accurate to about eps times the growth ratio of the columns.
    Q is then V R^{-1} by a triangular solve, half the cost of accumulating the Householder
    reflectors; it is orthonormal to about eps * cond(V), which ``MAX_GROWTH_RATIO`` keeps
    below 1e-8, and the next factorisation starts again from the true span.
    A single column (``k = 1``) is normalised directly: ``R`` is its norm (LAPACK's batched
    triangular solve costs 100 times more there).
    """
    k = V.shape[-1]
    if k == 1:
        R = torch.linalg.vector_norm(V, dim=-2, keepdim=True)  # (..., 1, 1)
        return V / R, R
    A, _ = torch.geqrf(V)
    R = torch.triu(A[..., :k, :])
    R = R * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-1)
    return torch.linalg.solve_triangular(R, V, upper=True, left=False), R


def renormalise(V: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """QR of a pushed (or pulled-back) basis with the checks every algorithm needs;
    returns (Q, log diag R, R). ``step`` names the step in the error message."""
    Q, R = qr_factors(V)
    lr = torch.log(torch.diagonal(R, dim1=-2, dim2=-1))
    if not math.isfinite(float(lr.sum())):
        check_finite(V, "tangent basis (renormalise more often: lower renorm_every)", step=step)
        check_finite(lr, "log stretching factors (a tangent vector collapsed: the Jacobian is singular here)", step=step)
    return Q, lr, R


def factor_segment(V: Tensor, redo: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """QR at the end of a multi-step segment, or ``redo()`` (QR every step) if it is ill-conditioned.

    Returns (Q, log diag R). The segment counts as ill-conditioned when a factor is not
    finite or the growth ratio between columns exceeds ``REDO_GROWTH_RATIO``.
    """
    if bool(torch.isfinite(V).all()):
        Q, R = qr_factors(V)
        lr = torch.log(torch.diagonal(R, dim1=-2, dim2=-1))
        if bool(torch.isfinite(lr).all()) and float((lr.amax(-1) - lr.amin(-1)).max()) <= math.log(REDO_GROWTH_RATIO):
            return Q, lr
    return redo()


def step_by_step(product: Callable[[Tensor, Tensor, int], Tensor], Q: Tensor, states: list[Tensor], n: int,
                 direction: int) -> tuple[Tensor, Tensor]:
    """Push ``Q`` through the stored ``states`` with a QR every step; return (Q, summed log diag R).

    ``product(x, Q, n)`` is ``map._jvp`` (``direction = +1``: states at steps n, n+1, ...)
    or ``map._vjp`` (``direction = -1``: states at steps n, n-1, ...).
    """
    total = 0
    for j, x in enumerate(states):
        m = n + direction * j
        Q, lr, _ = renormalise(product(x, Q, m), step=m + (direction > 0))
        total = total + lr
    return Q, total


def check_run(map: Map, x0: Tensor, steps: int, k: int | None, warmup: int, n0: int) -> tuple[Tensor, int, int, int]:
    """Validate the arguments shared by the tangent algorithms; return (x0, k, steps, warmup)."""
    x = check_finite(map.check_state(x0, "x0"), "initial state x0", step=n0)
    dim = map.dim
    k = dim if k is None else k
    if int(k) != k or not 1 <= k <= dim:
        raise ValueError(f"k must be a whole number with 1 <= k <= dim = {dim}; got k = {k}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1; got steps = {steps}")
    if int(warmup) != warmup or warmup < 0:
        raise ValueError(f"warmup must be a whole number >= 0; got warmup = {warmup}")
    return x, int(k), int(steps), int(warmup)


def align_forward(map: Map, x: Tensor, Q: Tensor, steps: int, n0: int, progress: bool | None,
                  desc: str) -> tuple[Tensor, Tensor]:
    """Run state and basis forward ``steps`` steps from time ``n0`` with a QR every step and
    discard the growth: the state settles on its attractor and the basis aligns with the
    Oseledets (backward Lyapunov) directions. Returns (state, basis)."""
    with torch.no_grad():
        for i in progress_range(steps, progress, desc=desc):
            x, V = map._step_jvp(x, Q, n0 + i)
            check_finite(x, "state", step=n0 + i + 1)
            Q, _, _ = renormalise(V, step=n0 + i + 1)
    return x, Q


def auto_renorm_every(map: Map, x: Tensor, Q: Tensor, n0: int, pilot: int) -> int:
    """Largest r keeping exp((lambda_1 - lambda_k) r) below MAX_GROWTH_RATIO, from a short pilot.

    The pilot factorises every step; its first half lets a fresh basis align with the
    Lyapunov directions, and the spread is measured over the second half.
    """
    logs = torch.zeros(Q.shape[-1], dtype=Q.dtype)
    counted = 0
    with torch.no_grad():
        for i in range(pilot):
            x, V = map._step_jvp(x, Q, n0 + i)
            Q, lr, _ = renormalise(V, step=n0 + i + 1)
            if 2 * i >= pilot - 1:
                logs += lr.reshape(-1, Q.shape[-1]).mean(0)
                counted += 1
    spread = float(logs[0] - logs[-1]) / counted
    top = max(float(logs[0]) / counted, 0.0)
    # also keep the largest column far from overflow (e^{lambda_1 r} < 1e100)
    limits = [math.log(MAX_GROWTH_RATIO) / spread if spread > 0 else math.inf,
              100 * math.log(10) / top if top > 0 else math.inf, 1000.0]
    return max(1, int(min(limits)))


def resolve_renorm_every(renorm_every: int | str, map: Map, x: Tensor, Q: Tensor, n: int, steps: int) -> int:
    """``renorm_every`` as a whole number (``"auto"`` runs the pilot of :func:`auto_renorm_every`)."""
    if renorm_every == "auto":
        renorm_every = auto_renorm_every(map, x, Q, n, pilot=min(steps, 40))
    if isinstance(renorm_every, str) or int(renorm_every) != renorm_every or renorm_every < 1:
        raise ValueError(f"renorm_every must be a whole number >= 1 or 'auto'; got {renorm_every!r}")
    return int(renorm_every)


def forward_run(map: Map, x: Tensor, Q: Tensor, steps: int, n0: int, r: int, progress: bool | None,
                desc: str) -> tuple[list[Tensor], list[int], Tensor, Tensor]:
    """Push state and basis ``steps`` steps forward from time ``n0``, renormalising every
    ``r`` steps (a segment that breaks :data:`REDO_GROWTH_RATIO` is redone step by step).

    Returns (logs, ends, state, basis): ``logs[j]`` is the ``(..., k)`` tensor of log R_ii
    at renormalisation ``j`` and ``ends[j]`` the number of steps done by then.
    """
    logs, ends = [], []
    segment = []  # (basis at its start, states) of the current segment, kept for a redo
    with torch.no_grad():
        for i in progress_range(steps, progress, desc=desc):
            n = n0 + i
            if r > 1:
                segment = segment or [Q, []]
                segment[1].append(x)
            x, Q = map._step_jvp(x, Q, n)
            check_finite(x, "state", step=n + 1)
            if (i + 1) % r == 0 or i + 1 == steps:
                if r > 1:
                    Q0, states = segment
                    Q, lr = factor_segment(Q, lambda: step_by_step(map._jvp, Q0, states, n + 1 - len(states), +1))
                    segment = []
                else:
                    Q, lr, _ = renormalise(Q, step=n + 1)
                logs.append(lr)
                ends.append(i + 1)
    return logs, ends, x, Q


def backward_run(map: Map, orbit: Tensor, P: Tensor, top: int, steps: int, n0: int, r: int,
                 progress: bool | None, desc: str) -> tuple[list[Tensor], list[int], Tensor]:
    """Pull a basis of covectors back by the adjoint map through the stored states
    ``orbit[top], orbit[top - 1], ..., orbit[top - steps + 1]`` (time index ``n0 + n`` for
    ``orbit[n]``), renormalising every ``r`` steps as :func:`forward_run` does.

    Returns (logs, ends, basis), with ``logs`` and ``ends`` as in :func:`forward_run`.
    """
    logs, ends = [], []
    with torch.no_grad():
        P0, first = P, top  # the segment starts with P0 at orbit[first]
        for i in progress_range(steps, progress, desc=desc):
            n = top - i
            P = map._vjp(orbit[n], P, n0 + n)
            if (i + 1) % r == 0 or i + 1 == steps:
                if r > 1:
                    states = [orbit[m] for m in range(first, n - 1, -1)]
                    P, lr = factor_segment(P, lambda: step_by_step(map._vjp, P0, states, n0 + first, -1))
                else:
                    P, lr, _ = renormalise(P, step=n0 + n)
                logs.append(lr)
                ends.append(i + 1)
                P0, first = P, n - 1
    return logs, ends, P
