r"""Lyapunov spectra by the Benettin/QR algorithm.

For a map :math:`x_{n+1} = f_n(x_n)` with Jacobians :math:`A_n = Df_n(x_n)`, the Lyapunov
exponents :math:`\lambda_1 \ge \dots \ge \lambda_k` are the growth rates of
:math:`k`-dimensional volumes under the products :math:`A_{n-1}\cdots A_0`
(Oseledets 1968). Benettin et al. (1980) compute them stably: carry an orthonormal basis
:math:`Q_n \in \mathbb{R}^{d\times k}`, push it forward, :math:`V = A_n Q_n`, and every
``renorm_every`` steps factor :math:`V = Q R` (positive diagonal) and accumulate
:math:`\ln R_{ii}`. Then

.. math::  \lambda_i = \lim_{T\to\infty} \frac1T \sum_{\text{renormalisations}} \ln R_{ii}.

Renormalising every :math:`r > 1` steps saves QR factorisations and is exact in exact
arithmetic; in floating point it is safe while the columns' growth ratio
:math:`e^{(\lambda_1 - \lambda_k) r}` stays far below :math:`1/\varepsilon`.

References
----------
V. I. Oseledets, Trans. Moscow Math. Soc. 19 (1968) 197-231.
G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn, Meccanica 15 (1980) 9-20.
J. L. Kaplan, J. A. Yorke, Lecture Notes in Mathematics 730 (1979) 204-227.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .maps import Map
from .progress import progress_range
from .validation import check_finite

__all__ = ["LyapunovResult", "kaplan_yorke_dimension", "lyapunov_spectrum"]

#: Largest growth ratio between the first and last basis vector allowed between two QR
#: factorisations by ``renorm_every="auto"``: 1e8, eight orders of magnitude below 1/eps.
#: The smallest exponents then carry a rounding error of order eps * 1e8 per factorisation
#: (measured on a width-256 tanh network: 2e-8 per step against QR every step).
MAX_GROWTH_RATIO = 1e8


@dataclass(frozen=True)
class LyapunovResult:
    """Lyapunov exponents of a run, per step, in descending order.

    Attributes
    ----------
    exponents
        Shape ``(k,)``: the exponents per step, averaged over the ensemble.
    stderr
        Shape ``(k,)``: standard error by batch means: the run is cut into ``blocks``
        consecutive blocks, the exponents of each block are averaged over the ensemble, and
        the block means are treated as independent samples. Members may therefore share
        randomness (inputs to one random network) without the error bar being too small.
        ``None`` if the run has a single renormalisation (no spread to estimate).
    finite_time
        Shape ``(m, k)``: the running estimates (ensemble mean) after each of the ``m``
        renormalisations; ``finite_time_steps`` gives the step count of each row.
    finite_time_steps
        Shape ``(m,)``: number of steps behind each row of ``finite_time``.
    basis
        Shape ``(..., dim, k)``: the final orthonormal basis of each ensemble member
        (the backward Lyapunov vectors at the last state).
    final_state
        Shape ``(..., dim)``: the last state of each member.
    renorm_every
        Steps between QR factorisations actually used.
    """

    exponents: Tensor
    stderr: Tensor | None
    finite_time: Tensor
    finite_time_steps: Tensor
    basis: Tensor
    final_state: Tensor
    renorm_every: int

    @property
    def kaplan_yorke(self) -> float | None:
        """Kaplan-Yorke dimension of :attr:`exponents` (see :func:`kaplan_yorke_dimension`)."""
        return kaplan_yorke_dimension(self.exponents)


def kaplan_yorke_dimension(exponents: Tensor) -> float | None:
    r"""The Kaplan-Yorke (Lyapunov) dimension :math:`D = j + S_j / |\lambda_{j+1}|`.

    :math:`S_j = \lambda_1 + \dots + \lambda_j` and :math:`j` is the largest index with
    :math:`S_j \ge 0`. Returns 0 if :math:`\lambda_1 < 0`, and ``None`` if every partial sum
    of the given exponents is non-negative: then more exponents are needed to locate
    :math:`D` (it is at least ``len(exponents)``).
    """
    lam = torch.as_tensor(exponents, dtype=torch.float64).sort(descending=True).values
    sums = torch.cumsum(lam, 0)
    if lam[0] < 0:
        return 0.0
    nonneg = (sums >= 0).nonzero()
    j = int(nonneg[-1]) + 1  # number of exponents whose partial sum is still >= 0
    if j == len(lam):
        return None
    return j + float(sums[j - 1]) / abs(float(lam[j]))


def _random_basis(dim: int, k: int, dtype: torch.dtype, seed: int) -> Tensor:
    """A random orthonormal dim x k basis (QR of a Gaussian matrix), reproducible from seed."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, k, generator=g, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))


def _qr_factors(V: Tensor) -> tuple[Tensor, Tensor]:
    """QR of each (dim x k) matrix with diag(R) > 0; returns (Q, R).

    R comes from Householder QR (LAPACK geqrf), which is backward stable column by column,
    so a column's log R_ii is accurate to about eps times the growth ratio of the columns.
    Q is then V R^{-1} by a triangular solve, half the cost of accumulating the Householder
    reflectors; it is orthonormal to about eps * cond(V), which ``MAX_GROWTH_RATIO`` keeps
    below 1e-8, and the next factorisation starts again from the true span.
    """
    k = V.shape[-1]
    A, _ = torch.geqrf(V)
    R = torch.triu(A[..., :k, :])
    R = R * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-1)
    return torch.linalg.solve_triangular(R, V, upper=True, left=False), R


def _qr_positive(V: Tensor) -> tuple[Tensor, Tensor]:
    """QR of each (dim x k) matrix with diag(R) > 0; returns (Q, log diag R)."""
    Q, R = _qr_factors(V)
    return Q, torch.log(torch.diagonal(R, dim1=-2, dim2=-1))


def _auto_renorm_every(map: Map, x: Tensor, Q: Tensor, n0: int, pilot: int) -> int:
    """Largest r keeping exp((lambda_1 - lambda_k) r) below MAX_GROWTH_RATIO, from a short pilot.

    The pilot factorises every step; its first half lets a fresh basis align with the
    Lyapunov directions, and the spread is measured over the second half.
    """
    logs = torch.zeros(Q.shape[-1], dtype=Q.dtype)
    counted = 0
    with torch.no_grad():
        for i in range(pilot):
            x, V = map._step_jvp(x, Q, n0 + i)
            Q, lr = _qr_positive(V)
            if 2 * i >= pilot - 1:
                logs += lr.reshape(-1, Q.shape[-1]).mean(0)
                counted += 1
    spread = float(logs[0] - logs[-1]) / counted
    top = max(float(logs[0]) / counted, 0.0)
    # also keep the largest column far from overflow (e^{lambda_1 r} < 1e100)
    limits = [math.log(MAX_GROWTH_RATIO) / spread if spread > 0 else math.inf,
              100 * math.log(10) / top if top > 0 else math.inf, 1000.0]
    return max(1, int(min(limits)))


def lyapunov_spectrum(
    map: Map,
    x0: Tensor,
    steps: int,
    k: int | None = None,
    warmup: int = 0,
    renorm_every: int | str = 1,
    n0: int = 0,
    blocks: int = 20,
    seed: int = 0,
    progress: bool | None = None,
) -> LyapunovResult:
    r"""The first ``k`` Lyapunov exponents of ``map`` along orbits from ``x0`` (Benettin/QR).

    Parameters
    ----------
    map
        Any :class:`chaosgrad.Map`, autonomous or time-dependent (a network's layers).
    x0
        Initial state(s), shape ``(..., dim)``; leading axes are an ensemble, each member
        carrying its own basis.
    steps
        Number of steps over which exponents are averaged (after ``warmup``), >= 1.
    k
        Number of exponents, 1 <= k <= dim; default ``dim``.
    warmup
        Steps run first, state and basis alike, and discarded: the state settles on the
        attractor and the basis aligns with the Oseledets directions.
    renorm_every
        Steps between QR factorisations, or ``"auto"``: the largest interval for which a
        short pilot run predicts a growth ratio below ``MAX_GROWTH_RATIO`` between basis
        vectors (at most 1000 steps).
    n0
        Time index of ``x0`` (for time-dependent maps).
    blocks
        Number of blocks for the batch-means standard error.
    seed
        Seed of the random initial basis.
    progress
        Show a progress bar; ``None`` shows one only in an interactive terminal.

    Returns
    -------
    LyapunovResult

    Raises
    ------
    ValueError
        If ``k`` is not in ``1..dim``, ``steps < 1``, ``warmup < 0`` or ``renorm_every < 1``.
    NonFiniteStateError
        If a state or the tangent basis becomes inf or NaN (the message names the step).
    """
    x, k, steps, warmup = _check_run(map, x0, steps, k, warmup, n0)
    Q = _random_basis(map.dim, k, x.dtype, seed).expand(*x.shape[:-1], map.dim, k)

    with torch.no_grad():
        for i in progress_range(warmup, progress, desc="Lyapunov warm-up"):
            x, V = map._step_jvp(x, Q, n0 + i)
            check_finite(x, "state", step=n0 + i + 1)
            Q, _ = _qr_positive(V)
    start = n0 + warmup
    r = _resolve_renorm_every(renorm_every, map, x, Q, start, steps)

    logs = []  # one (..., k) tensor of log R_ii per renormalisation
    ends = []  # step count at each renormalisation
    with torch.no_grad():
        for i in progress_range(steps, progress, desc="Lyapunov spectrum"):
            n = start + i
            x, Q = map._step_jvp(x, Q, n)  # shapes were checked once, before the loop
            check_finite(x, "state", step=n + 1)
            if (i + 1) % r == 0 or i + 1 == steps:
                Q, lr, _ = _renormalise(Q, step=n + 1)
                logs.append(lr)
                ends.append(i + 1)
    return summarise_run(logs, ends, blocks, basis=Q, final_state=x, renorm_every=r)


def _check_run(map: Map, x0: Tensor, steps: int, k: int | None, warmup: int, n0: int) -> tuple[Tensor, int, int, int]:
    """Validate the arguments shared by the spectrum algorithms; return (x0, k, steps, warmup)."""
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


def _resolve_renorm_every(renorm_every: int | str, map: Map, x: Tensor, Q: Tensor, n: int, steps: int) -> int:
    """``renorm_every`` as a whole number (``"auto"`` runs the pilot of :func:`_auto_renorm_every`)."""
    if renorm_every == "auto":
        renorm_every = _auto_renorm_every(map, x, Q, n, pilot=min(steps, 40))
    if isinstance(renorm_every, str) or int(renorm_every) != renorm_every or renorm_every < 1:
        raise ValueError(f"renorm_every must be a whole number >= 1 or 'auto'; got {renorm_every!r}")
    return int(renorm_every)


def _renormalise(V: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """QR of the pushed basis with the checks every algorithm needs; returns (Q, log diag R, R)."""
    Q, R = _qr_factors(V)
    lr = torch.log(torch.diagonal(R, dim1=-2, dim2=-1))
    if not math.isfinite(float(lr.sum())):
        check_finite(V, "tangent basis (renormalise more often: lower renorm_every)", step=step)
        check_finite(lr, "log stretching factors (a tangent vector collapsed: the Jacobian is singular here)", step=step)
    return Q, lr, R


def summarise_run(
    logs: list[Tensor], ends: list[int], blocks: int, basis: Tensor, final_state: Tensor, renorm_every: int
) -> LyapunovResult:
    """Exponents, batch-means error bars and running estimates from the log stretching factors.

    ``logs[j]`` has shape ``(..., k)``: the log growth factors of the ``k`` directions over the
    steps between renormalisation ``j - 1`` and ``j``; ``ends[j]`` is the step count at
    renormalisation ``j``. Shared by the forward, adjoint and backpropagation algorithms.
    """
    k = logs[0].shape[-1]
    steps = ends[-1]
    log_r = torch.stack(logs)  # (m, ..., k)
    exponents = (log_r.sum(0) / steps).reshape(-1, k).mean(0)
    ends_t = torch.tensor(ends)
    running = torch.cumsum(log_r.reshape(len(ends), -1, k).mean(1), 0) / ends_t[:, None].to(log_r.dtype)

    # batch means: split the renormalisations into blocks of (nearly) equal step counts
    nblocks = max(1, min(blocks, len(ends)))
    edges = torch.linspace(0, len(ends), nblocks + 1).round().long()
    samples = []
    prev_end = 0
    for b in range(nblocks):
        lo, hi = int(edges[b]), int(edges[b + 1])
        length = ends[hi - 1] - prev_end
        samples.append(log_r[lo:hi].sum(0).reshape(-1, k).mean(0) / length)
        prev_end = ends[hi - 1]
    samples = torch.stack(samples)  # (nblocks, k): ensemble means per block
    count = samples.shape[0]
    stderr = samples.std(0, correction=1) / math.sqrt(count) if count > 1 else None
    return LyapunovResult(
        exponents=exponents,
        stderr=stderr,
        finite_time=running,
        finite_time_steps=ends_t,
        basis=basis,
        final_state=final_state,
        renorm_every=renorm_every,
    )
