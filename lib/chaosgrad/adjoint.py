r"""Backpropagation as the adjoint system, and its Lyapunov spectrum.

Backpropagation through a map :math:`x_{n+1} = f_n(x_n)` carries a covector (a gradient)
from :math:`x_{n+1}` back to :math:`x_n` by the transposed Jacobian,

.. math::  \psi_n = Df_n(x_n)^\top \psi_{n+1},

run backward along a stored forward orbit. For a network this is the delta recursion
:math:`\delta_l = \operatorname{diag}(\phi'(a_l))\,W_{l+1}^\top \delta_{l+1}` (up to where the
derivative of the activation is applied). Its growth rates backward in time are the
Lyapunov exponents of the forward map (the singular values of a product and of its
transpose agree), so gradients grow like :math:`e^{\lambda_1 L}` over :math:`L` layers.

References
----------
G. Benettin et al., Meccanica 15 (1980); P. V. Kuptsov, U. Parlitz, J. Nonlinear Sci. 22 (2012).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .estimates import Estimate
from .lyapunov import LyapunovResult, summarise_run
from .maps import Map
from .tangent import backward_run, check_run, random_basis, renormalise, resolve_renorm_every
from .progress import progress_range

__all__ = ["BackpropGrowth", "adjoint_lyapunov_spectrum", "backprop_growth", "paired_difference"]


def adjoint_lyapunov_spectrum(
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
    r"""The first ``k`` exponents of the adjoint (backpropagation) recursion, by QR.

    The orbit from ``x0`` is run forward for ``2 * warmup + steps`` steps and stored. A
    random orthonormal set of ``k`` covectors starts at its end and is pulled back by
    :meth:`Map.vjp`, re-orthonormalised every ``renorm_every`` steps: the last ``warmup``
    steps of the orbit align it with the adjoint Lyapunov directions and are discarded, the
    next ``steps`` are measured, and the first ``warmup`` steps only bring the state onto its
    attractor. The exponents are per step backward and, by duality, equal those of
    :func:`chaosgrad.lyapunov_spectrum`.

    Parameters and result are those of :func:`chaosgrad.lyapunov_spectrum`; ``basis`` holds
    the adjoint (forward-Lyapunov) vectors at ``final_state``, the state ``warmup`` steps
    after ``x0``, where the backward run ends. ``finite_time`` runs over the steps counted
    backward from the end of the measured window.

    Raises
    ------
    ValueError, NonFiniteStateError
        As :func:`chaosgrad.lyapunov_spectrum`.
    """
    x, k, steps, warmup = check_run(map, x0, steps, k, warmup, n0)
    orbit = map.trajectory(x, 2 * warmup + steps, n0, progress)
    P = random_basis(map.dim, k, x.dtype, seed).expand(*x.shape[:-1], map.dim, k)
    r = resolve_renorm_every(renorm_every, map, orbit[warmup], P, n0 + warmup, steps)
    last = 2 * warmup + steps - 1
    with torch.no_grad():
        for j in progress_range(warmup, progress, desc="adjoint warm-up"):
            P, _, _ = renormalise(map._vjp(orbit[last - j], P, n0 + last - j), step=n0 + last - j)
    logs, ends, P = backward_run(map, orbit, P, warmup + steps - 1, steps, n0, r, progress, desc="adjoint spectrum")
    return summarise_run(logs, ends, blocks, basis=P, final_state=orbit[warmup], renorm_every=r)


def paired_difference(forward: LyapunovResult, adjoint: LyapunovResult, members: bool = True) -> list[Estimate]:
    r"""Forward minus adjoint exponents, paired along the same stretch of each orbit.

    ``forward`` and ``adjoint`` must come from :func:`chaosgrad.lyapunov_spectrum` and
    :func:`adjoint_lyapunov_spectrum` with the same ``x0``, ``steps``, ``warmup`` and
    ``blocks``: both then measure the same ``steps`` steps of each member's orbit (states
    ``warmup`` to ``warmup + steps``), one forward and one backward. Their errors are
    correlated, so the difference's error bar comes from the spread of the paired
    differences, not from the two error bars combined.

    Parameters
    ----------
    members
        Pair by ensemble member (each member's exponents over the whole run; the members
        must be independent orbits). With ``False``, pair by blocks of the run (batch means
        of the difference), for members that share randomness (inputs to one network): the
        adjoint run's blocks run backward in time, so its last block is paired with the
        forward run's first.

    Raises
    ------
    ValueError
        If the runs have different shapes, or (blocks) blocks of different lengths.
    """
    if members:
        fw, ad = forward.member_exponents, adjoint.member_exponents
        k = fw.shape[-1]
        if fw.shape != ad.shape:
            raise ValueError(f"the runs have members of shapes {tuple(fw.shape)} and {tuple(ad.shape)}")
        fw, ad = fw.reshape(-1, k), ad.reshape(-1, k)
    else:
        fw, ad = forward.block_exponents, adjoint.block_exponents.flip(0)
        if fw.shape != ad.shape or not torch.equal(forward.block_steps, adjoint.block_steps.flip(0)):
            raise ValueError("the runs' blocks differ: pair runs of the same steps and blocks")
    return [Estimate.of(fw[:, i] - ad[:, i]) for i in range(fw.shape[-1])]


@dataclass(frozen=True)
class BackpropGrowth:
    """Norms of backpropagated covectors, layer by layer.

    Attributes
    ----------
    log_norms
        Shape ``(depth + 1, ...)``: :math:`\\ln\\|\\psi_l\\| - \\ln\\|\\psi_{\\text{depth}}\\|` at
        every layer ``l`` for every ensemble member (0 at the last layer, where the unit
        covector starts).
    rate
        Growth rate per layer of backpropagation: ensemble mean of
        :math:`\\ln\\|\\psi_0\\|/\\text{depth}`.
    stderr
        Its standard error by batch means over blocks of layers (``None`` for one layer).
    """

    log_norms: Tensor
    rate: float
    stderr: float | None


def backprop_growth(map: Map, x0: Tensor, depth: int, n0: int = 0, blocks: int = 20, seed: int = 0) -> BackpropGrowth:
    r"""Backpropagate a random unit covector from layer ``depth`` to layer 0 and record its norm.

    For a generic covector the norm grows like :math:`e^{\lambda_1 (\text{depth} - l)}`, with
    :math:`\lambda_1` the top Lyapunov exponent: exploding gradients in the chaotic phase,
    vanishing ones in the ordered phase. The covector is renormalised every layer and the
    logarithms accumulated, so no norm overflows however deep the network.

    Parameters
    ----------
    map
        A map; for a network, ``n`` is the layer.
    x0
        Inputs, shape ``(..., dim)``; every member gets its own random covector.
    depth
        Number of layers, >= 1.
    n0, blocks, seed
        Index of the first layer, number of blocks for the error bar, seed of the covectors.
    """
    x, _, depth, _ = check_run(map, x0, depth, 1, 0, n0)
    orbit = map.trajectory(x, depth, n0)
    g = torch.Generator().manual_seed(seed)
    psi = torch.randn(*x.shape, 1, generator=g, dtype=x.dtype)
    psi = psi / torch.linalg.vector_norm(psi, dim=-2, keepdim=True)
    increments = []
    with torch.no_grad():
        for n in range(depth - 1, -1, -1):
            psi, lr, _ = renormalise(map._vjp(orbit[n], psi, n0 + n), step=n0 + n)
            increments.append(lr)
    result = summarise_run(increments, list(range(1, depth + 1)), blocks, basis=psi, final_state=orbit[0], renorm_every=1)
    log_norms = torch.cat([torch.zeros_like(increments[0])[None], torch.cumsum(torch.stack(increments), 0)])
    return BackpropGrowth(
        log_norms=log_norms.flip(0).squeeze(-1),
        rate=float(result.exponents[0]),
        stderr=None if result.stderr is None else float(result.stderr[0]),
    )
