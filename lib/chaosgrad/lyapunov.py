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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .estimates import Estimate, batch_means, jackknife
from .maps import Map
from .progress import progress_range
from .validation import check_finite

__all__ = ["LyapunovResult", "kaplan_yorke_dimension", "lyapunov_spectrum"]

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
    block_exponents
        Shape ``(b, k)``: the exponents of each block (ensemble mean), from which
        ``stderr`` and the error bars of :meth:`derived` come.
    block_steps
        Shape ``(b,)``: the number of steps in each block.
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
    block_exponents: Tensor
    block_steps: Tensor
    finite_time: Tensor
    finite_time_steps: Tensor
    basis: Tensor
    final_state: Tensor
    renorm_every: int

    @property
    def kaplan_yorke(self) -> float | None:
        """Kaplan-Yorke dimension of :attr:`exponents` (see :func:`kaplan_yorke_dimension`)."""
        return kaplan_yorke_dimension(self.exponents)

    @property
    def estimates(self) -> list[Estimate]:
        """The exponents as :class:`~chaosgrad.estimates.Estimate` s (value ± batch-means error).

        Raises
        ------
        ValueError
            If the run had a single block (``stderr`` is ``None``).
        """
        if self.stderr is None:
            raise ValueError("this run has a single block, so its exponents have no error bar: use a longer run")
        return [Estimate(float(v), float(e)) for v, e in zip(self.exponents, self.stderr)]

    def derived(self, statistic: Callable[[Tensor], float | None]) -> Estimate:
        """A function of the spectrum (e.g. ``kaplan_yorke_dimension``), with a jackknife error bar.

        The jackknife leaves out one block of the run at a time
        (:func:`chaosgrad.estimates.jackknife`); ``statistic`` gets a ``(k,)`` tensor of
        exponents and must return a finite number for each.
        """
        return jackknife(statistic, self.block_exponents, self.block_steps)


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
    segment = []  # (basis at its start, states) of the current segment, kept for a redo
    with torch.no_grad():
        for i in progress_range(steps, progress, desc="Lyapunov spectrum"):
            n = start + i
            if r > 1:
                segment = segment or [Q, []]
                segment[1].append(x)
            x, Q = map._step_jvp(x, Q, n)  # shapes were checked once, before the loop
            check_finite(x, "state", step=n + 1)
            if (i + 1) % r == 0 or i + 1 == steps:
                if r > 1:
                    Q0, states = segment
                    Q, lr = _factor_segment(Q, lambda: _step_by_step(map._jvp, Q0, states, n + 1 - len(states), +1))
                    segment = []
                else:
                    Q, lr, _ = _renormalise(Q, step=n + 1)
                logs.append(lr)
                ends.append(i + 1)
    return summarise_run(logs, ends, blocks, basis=Q, final_state=x, renorm_every=r)


def _step_by_step(product: Callable[[Tensor, Tensor, int], Tensor], Q: Tensor, states: list[Tensor], n: int,
                  direction: int) -> tuple[Tensor, Tensor]:
    """Push ``Q`` through the stored ``states`` with a QR every step; return (Q, summed log diag R).

    ``product(x, Q, n)`` is ``map._jvp`` (``direction = +1``: states at steps n, n+1, ...)
    or ``map._vjp`` (``direction = -1``: states at steps n, n-1, ...).
    """
    total = 0
    for j, x in enumerate(states):
        m = n + direction * j
        Q, lr, _ = _renormalise(product(x, Q, m), step=m + (direction > 0))
        total = total + lr
    return Q, total


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


def _factor_segment(V: Tensor, redo: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """QR at the end of a multi-step segment, or ``redo()`` (QR every step) if it is ill-conditioned.

    Returns (Q, log diag R). The segment counts as ill-conditioned when a factor is not
    finite or the growth ratio between columns exceeds ``REDO_GROWTH_RATIO``.
    """
    if bool(torch.isfinite(V).all()):
        Q, R = _qr_factors(V)
        lr = torch.log(torch.diagonal(R, dim1=-2, dim2=-1))
        if bool(torch.isfinite(lr).all()) and float((lr.amax(-1) - lr.amin(-1)).max()) <= math.log(REDO_GROWTH_RATIO):
            return Q, lr
    return redo()


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
    log_r = torch.stack(logs)  # (m, ..., k)
    ends_t = torch.tensor(ends)
    per_renorm = log_r.reshape(len(ends), -1, k).mean(1)  # (m, k): ensemble means
    running = torch.cumsum(per_renorm, 0) / ends_t[:, None].to(log_r.dtype)
    lengths = torch.diff(ends_t, prepend=torch.zeros(1, dtype=ends_t.dtype)).to(log_r.dtype)
    # batch means: blocks of consecutive renormalisations with (nearly) equal step counts
    exponents, stderr, block_exponents, block_steps = batch_means(per_renorm / lengths[:, None], blocks, lengths)
    return LyapunovResult(
        exponents=exponents,
        stderr=stderr,
        block_exponents=block_exponents,
        block_steps=block_steps,
        finite_time=running,
        finite_time_steps=ends_t,
        basis=basis,
        final_state=final_state,
        renorm_every=renorm_every,
    )
