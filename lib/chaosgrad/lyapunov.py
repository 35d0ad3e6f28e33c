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

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .estimates import Estimate, batch_means, jackknife
from .maps import Map
from .validation import check_finite
from .tangent import (  # noqa: F401  (MAX_GROWTH_RATIO, REDO_GROWTH_RATIO: documented here too)
    MAX_GROWTH_RATIO,
    REDO_GROWTH_RATIO,
    align_forward,
    check_run,
    forward_run,
    random_basis,
    resolve_renorm_every,
)

if TYPE_CHECKING:
    from .covariant import UnstableDimension

__all__ = ["LyapunovResult", "kaplan_yorke_dimension", "lyapunov_spectrum"]

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
    member_exponents
        Shape ``(..., k)``: the exponents of each ensemble member over the whole run; their
        mean is ``exponents``. When the members are independent orbits (an autonomous map
        started from states far apart on the attractor), their spread gives the error bar of
        :attr:`member_estimates`, which needs no assumption about block lengths.
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
    member_exponents: Tensor

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

    @property
    def member_estimates(self) -> list[Estimate]:
        """The exponents with error bars from the spread across ensemble members.

        The error bar is the standard error of the mean of :attr:`member_exponents`, valid
        when the members are independent (independent orbits of an autonomous map; not the
        inputs to one random network, which share its weights: use :attr:`estimates`). Batch
        means over short blocks of a flow overestimate the error, because each block's
        exponent carries boundary terms (the angle between the basis and the Oseledets
        directions at its two ends) that cancel between neighbouring blocks.

        Raises
        ------
        ValueError
            If the run has fewer than two members.
        """
        members = self.member_exponents.reshape(-1, self.member_exponents.shape[-1])
        if members.shape[0] < 2:
            raise ValueError("member_estimates needs at least two ensemble members (a batch of "
                             f"initial states); this run has {members.shape[0]}")
        return [Estimate.of(members[:, i]) for i in range(members.shape[1])]

    def unstable_dimension(self, sigmas: float = 3.0, errors: str = "blocks") -> UnstableDimension:
        r"""The number of positive exponents :math:`u`, or the range ``lower..upper`` it lies in.

        A count is not an estimate with an error bar: an exponent within ``sigmas`` error bars
        of zero (the neutral direction of a flow, or one that needs a longer run) may be
        either side of it, so :math:`u` is known only to lie in a range (printed ``"13-14"``).
        This is :func:`chaosgrad.covariant.unstable_dimension` of this run's exponents.

        Parameters
        ----------
        sigmas
            Threshold in error bars, > 0.
        errors
            Whose error bars: ``"blocks"`` (:attr:`estimates`, batch means; valid for
            ensemble members that share randomness, such as inputs to one network) or
            ``"members"`` (:attr:`member_estimates`, the spread across independent orbits).

        Returns
        -------
        UnstableDimension
            ``lower``, ``upper`` and the bordering exponents; ``str()`` gives the count or range.

        Raises
        ------
        ValueError
            For another ``errors``, a run without error bars (see :attr:`estimates`,
            :attr:`member_estimates`), ``sigmas <= 0``, or when no exponent is clearly
            negative (compute more exponents).

        See Also
        --------
        chaosgrad.covariant.unstable_dimension_of_orbits : the same from independent orbits,
            keeping only the chaotic ones.
        """
        from .covariant import unstable_dimension  # covariant imports this module

        if errors not in ("blocks", "members"):
            raise ValueError(f'errors must be "blocks" or "members"; got {errors!r}')
        return unstable_dimension(self.estimates if errors == "blocks" else self.member_estimates, sigmas)

    def derived(self, statistic: Callable[[Tensor], float | None]) -> Estimate:
        """A function of the spectrum (e.g. ``kaplan_yorke_dimension``), with a jackknife error bar.

        The jackknife leaves out one block of the run at a time
        (:func:`chaosgrad.estimates.jackknife`); ``statistic`` gets a ``(k,)`` tensor of
        exponents and must return a finite number for each. The statistic should be a smooth
        function of the exponents: a count such as ``(l > 0).sum()`` comes out as ``13.0 ± 0``
        when every block agrees, which hides an exponent near zero. A statistic that returns a
        whole-number type (an ``int``, ``bool`` or integer tensor) is computed but warned about:
        use :meth:`unstable_dimension` for the number of positive exponents.

        Warns
        -----
        UserWarning
            If ``statistic`` returns a whole-number type (a count).
        """
        counted: list[bool] = []

        def recorded(exponents: Tensor) -> float | None:
            value = statistic(exponents)
            counted.append(isinstance(value, (bool, int)) or (
                isinstance(value, Tensor) and not (value.is_floating_point() or value.is_complex())))
            return value

        estimate = jackknife(recorded, self.block_exponents, self.block_steps)
        if any(counted):
            warnings.warn(f"derived: the statistic returns a count ({estimate}), whose jackknife error bar is "
                          "not an error bar (it is 0 when every block agrees); for the number of positive "
                          "exponents use LyapunovResult.unstable_dimension(), which gives its range", stacklevel=2)
        return estimate


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
    basis: Tensor | None = None,
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
        attractor and the basis aligns with the Oseledets directions. (The warm-up of
        :func:`~chaosgrad.derivatives.backprop_derivative` is different: it is part of
        the function differentiated.)
    renorm_every
        Steps between QR factorisations, or ``"auto"``: the largest interval for which a
        short pilot run predicts a growth ratio below ``MAX_GROWTH_RATIO`` between basis
        vectors (at most 1000 steps). It saves QR factorisations only, so it pays where a
        ``(dim, k)`` QR is a fair share of a tangent step, and costs the pilot (up to 40
        steps with a QR each) plus every segment whose growth ratio breaks
        ``REDO_GROWTH_RATIO`` (redone with a QR every step). Measured (one thread, all
        exponents, QR every step against ``"auto"``): a width-256 ``RandomNetwork``, 400
        layers, 4 inputs: 5.5 s against 3.3 s (r = 3); Lorenz-96 by RK4 with ``torch.func``
        derivatives (the README's own-map example), N = 256, 2 orbits, 200 steps: 3.0 s
        against 2.1 s (r = 266; a QR about half a step), N = 40, 4 orbits, 1500 steps: 4.9 s
        against 3.7 s (r = 250); ``Lorenz63`` (closed-form tangent map, QR 8 % of a step),
        4 orbits, 8000 steps: 3.75 s against 3.9 s (r = 128, 15 of 63 segments redone: its
        finite-time growth is heavy-tailed). Use it for many exponents of a large map whose
        tangent step is cheap; keep 1 for small maps, for short runs, and where a step costs
        far more than a QR.
    n0
        Time index of ``x0`` (for time-dependent maps).
    blocks
        Number of blocks for the batch-means standard error.
    seed
        Seed of the random initial basis.
    progress
        Show a progress bar; ``None`` shows one only in an interactive terminal.
    basis
        Initial tangent vectors as the columns of a ``(dim, k)`` matrix (orthonormalised by
        QR, so the first column keeps its direction) instead of a random basis. Over a
        finite run the exponents then measure the growth of these directions: a random
        start in a high-dimensional space needs about :math:`\ln\sqrt{d}/(\lambda_1 -
        \lambda_{k+1})` steps to find the fastest-growing ones.

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
    if basis is not None:
        basis = check_finite(torch.as_tensor(basis, dtype=torch.float64), "initial basis")
        basis = basis[:, None] if basis.ndim == 1 else basis
        if basis.ndim != 2 or basis.shape[0] != map.dim or (k is not None and basis.shape[1] != k):
            raise ValueError(f"basis must be a (dim, k) matrix with dim = {map.dim}"
                             + ("" if k is None else f" and k = {k}") + f"; got shape {tuple(basis.shape)}")
        k = basis.shape[1]
    x, k, steps, warmup = check_run(map, x0, steps, k, warmup, n0)
    if basis is None:
        Q = random_basis(map.dim, k, x.dtype, seed)
    else:
        Q, R = torch.linalg.qr(basis.to(x.dtype))
        if bool((R.diagonal().abs() <= 1e-12 * R.diagonal().abs().max()).any()):
            raise ValueError("basis must have linearly independent columns")
        Q = Q * torch.sign(R.diagonal())  # the first column keeps its direction
    Q = Q.expand(*x.shape[:-1], map.dim, k)
    x, Q = align_forward(map, x, Q, warmup, n0, progress, desc="Lyapunov warm-up")
    start = n0 + warmup
    r = resolve_renorm_every(renorm_every, map, x, Q, start, steps)
    logs, ends, x, Q = forward_run(map, x, Q, steps, start, r, progress, desc="Lyapunov spectrum")
    return summarise_run(logs, ends, blocks, basis=Q, final_state=x, renorm_every=r)


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
    members = log_r.sum(0) / float(ends[-1])  # (..., k): each member over the whole run
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
        member_exponents=members,
    )
