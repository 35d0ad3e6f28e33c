r"""Hessians of a loss without the dense matrix: products, Lanczos, subspace iteration.

For a scalar loss :math:`L(\theta)` of :math:`d` parameters, the Hessian
:math:`H = \nabla^2 L(\theta)` is a :math:`d\times d` matrix (:math:`1.6\times10^9` entries for
the 39,760 parameters of chapter 6's network), but every algorithm here needs only the
products :math:`v \mapsto Hv`:

- :func:`hvp`: :math:`Hv = \frac{d}{dt}\nabla L(\theta + tv)\big|_{t=0}`, the forward-mode
  derivative of the reverse-mode gradient (forward over reverse), a small multiple of one
  gradient evaluation :cite:`pearlmutter1994fast`; a loss with a closed-form product (a
  ``hessian_operator(theta)`` method, as :class:`~chaosgrad.training.TrainingLoss` has) is
  used instead by the iterative methods.
- :func:`hessian_eigenvalues`: Lanczos iteration :cite:`saad2011numerical`. From a unit
  vector :math:`q_1`, the three-term recurrence
  :math:`\beta_m q_{m+1} = Hq_m - \alpha_m q_m - \beta_{m-1}q_{m-1}`, with
  :math:`\alpha_m = q_m^\top Hq_m` (not a learning rate) and :math:`\beta_m` the norm that
  makes :math:`q_{m+1}` a unit vector, builds an orthonormal basis :math:`Q_m` of the Krylov
  space :math:`\operatorname{span}\{q_1, Hq_1, \dots, H^{m-1}q_1\}` in which
  :math:`Q_m^\top HQ_m = T_m` is tridiagonal. The eigenvalues of :math:`T_m` (Ritz values)
  converge to both ends of the spectrum first; an eigenpair :math:`(\mu_i, s_i)` of
  :math:`T_m` has the residual :math:`\|HQ_ms_i - \mu_iQ_ms_i\| = |\beta_m s_{mi}|`. Rounding
  destroys the orthogonality of :math:`Q_m`, so each new vector is reorthogonalised against
  all previous ones.
- :func:`subspace_iteration`: block power iteration :math:`V \leftarrow \operatorname{qr}(HV)`
  with a Rayleigh-Ritz step, an independent check that shares only the products.
- :func:`sharpness`: :math:`\lambda_{\max}(H)`; gradient descent with learning rate
  :math:`\alpha` is stable along its eigenvector only if :math:`\alpha\lambda_{\max} < 2`, the
  edge of stability :cite:`cohen2021gradient`.

The training map :math:`\theta \mapsto \theta - \alpha\nabla L(\theta)` that these spectra
describe, and the growth along both ends of the spectrum, are in :mod:`chaosgrad.training`.

References
----------
B. A. Pearlmutter, Neural Computation 6 (1994); Y. Saad, *Numerical Methods for Large
Eigenvalue Problems*, SIAM (2011); J. Cohen et al., ICLR (2021).

Examples
--------
The Hessian of :math:`L(\theta) = \frac12\sum_i i\,\theta_i^2` is
:math:`\operatorname{diag}(1, \dots, d)`:

>>> import torch
>>> from chaosgrad.hessian import hessian_eigenvalues, hvp, sharpness
>>> loss = lambda th: 0.5 * (torch.arange(1.0, 7.0, dtype=th.dtype) * th**2).sum()
>>> theta = torch.zeros(6, dtype=torch.float64)
>>> hvp(loss, theta, torch.ones(6, dtype=torch.float64)).tolist()
[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
>>> [round(v, 10) for v in hessian_eigenvalues(loss, theta, k=2, which="smallest").tolist()]
[2.0, 1.0]
>>> round(sharpness(loss, theta), 10)
6.0
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from .validation import check_finite, check_whole

__all__ = ["hessian_eigenvalues", "hvp", "sharpness", "subspace_iteration"]

#: a scalar loss of one flat parameter vector ``(d,)``, differentiable by :mod:`torch.func`
Loss = Callable[[Tensor], Tensor]


def hvp(loss: Loss, theta: Tensor, v: Tensor) -> Tensor:
    r"""Hessian-vector products :math:`\nabla^2 L(\theta)\, v` without forming the Hessian.

    Forward-over-reverse differentiation (:func:`torch.func.jvp` of :func:`torch.func.grad`):
    one product costs a small multiple of one gradient evaluation.

    Parameters
    ----------
    loss
        :math:`L`, a scalar function of a flat parameter vector (differentiable by torch.func).
    theta
        The point, shape ``(d,)``.
    v
        One vector ``(d,)`` or ``k`` of them as the columns of ``(d, k)``.

    Returns
    -------
    Tensor shaped like ``v``.

    Raises
    ------
    ValueError
        If ``theta`` is not a vector or ``v`` does not have ``d`` rows.

    See Also
    --------
    chaosgrad.training.TrainingLoss.hessian_operator : a closed-form product for chapter 6's network.
    chaosgrad.training.GradientDescent : the training map, whose tangent map is :math:`I - \alpha H`.
    """
    if theta.ndim != 1:
        raise ValueError(f"theta must be a flat parameter vector of shape (d,); got shape {tuple(theta.shape)}")
    if v.ndim not in (1, 2) or v.shape[0] != theta.shape[0]:
        raise ValueError(f"v must have shape (d,) or (d, k) with d = {theta.shape[0]}; got shape {tuple(v.shape)}")
    grad = torch.func.grad(loss)

    def product(u: Tensor) -> Tensor:
        return torch.func.jvp(grad, (theta,), (u,))[1]

    return product(v) if v.ndim == 1 else torch.func.vmap(product, in_dims=1, out_dims=1)(v)


def _hessian_operator(loss: Loss, theta: Tensor, linearize_after: int = 6) -> Callable[[Tensor], Tensor]:
    """``v -> H v`` at a fixed ``theta`` for an iterative method: :func:`hvp` for the first
    ``linearize_after`` products, then the gradient linearised by :func:`torch.func.linearize`, which
    stores the primal pass once and costs about half an :func:`hvp` per product (the
    tracing costs about six). A warm-started Lanczos run that converges in a few products
    never pays for the tracing."""
    if hasattr(loss, "hessian_operator"):  # a closed form (TrainingLoss)
        return loss.hessian_operator(theta)
    count, linear = 0, None

    def product(v: Tensor) -> Tensor:
        nonlocal count, linear
        count += 1
        if linear is None and count > linearize_after:
            with warnings.catch_warnings():  # torch.fx's constant folding warns about its own graph
                warnings.simplefilter("ignore", UserWarning)
                _, linear = torch.func.linearize(torch.func.grad(loss), theta)
        return hvp(loss, theta, v) if linear is None else linear(v)

    return product


def hessian_eigenvalues(loss: Loss, theta: Tensor, k: int = 1, which: str = "largest", tol: float = 1e-10,
                        max_iter: int = 300, seed: int = 0, start: Tensor | None = None,
                        return_vectors: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    r"""The ``k`` largest (or most negative) eigenvalues of :math:`\nabla^2 L(\theta)` by Lanczos.

    Lanczos iteration on Hessian-vector products (:func:`hvp`) with full
    reorthogonalisation, from a seeded random start (or ``start``); it stops when the residual bound
    :math:`|\beta_m s_{mi}|` of each of the ``k`` wanted Ritz values is below
    ``tol`` times the largest Ritz value in magnitude, or after ``max_iter`` products (or
    ``d``, where the Krylov space is the whole space and the values are exact). The dense
    Hessian is never formed: memory is ``max_iter`` vectors of length ``d``.

    Parameters
    ----------
    loss, theta
        As :func:`hvp`.
    k
        How many eigenvalues, ``1 <= k <= d``.
    which
        ``"largest"`` (the top of the spectrum, the sharpness first) or ``"smallest"`` (the
        most negative end: negative values mark saddle directions).
    tol, max_iter, seed
        Relative residual tolerance, iteration cap, seed of the start vector.
    start
        Start vector ``(d,)`` instead of a random one (like ``v0`` of
        :func:`scipy.sparse.linalg.eigsh`): an eigenvector of a nearby Hessian, for instance
        the previous one along a training run, converges in a few products.
    return_vectors
        Also return the Ritz vectors.

    Returns
    -------
    Tensor of shape ``(k,)``, largest first; with ``return_vectors``, also the unit
    eigenvectors as the columns of a ``(d, k)`` tensor, in the same order.

    Raises
    ------
    ValueError
        For ``k`` outside ``1..d`` or an unknown ``which``.

    See Also
    --------
    sharpness : the largest eigenvalue.
    subspace_iteration : an independent check of the eigenvalues largest in magnitude.
    chaosgrad.training.hessian_ends : both ends and how fast gradient descent grows along them.
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest'; got {which!r}")
    d = theta.shape[0]
    check_whole(k, "k", 1)
    if k > d:
        raise ValueError(f"k must be at most the number of parameters d = {d}; got k = {k}")
    steps = min(d, int(max_iter))
    product = _hessian_operator(loss, theta.detach())
    if start is None:
        q = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=theta.dtype)
    else:
        q = check_finite(torch.as_tensor(start, dtype=theta.dtype), "start vector")
        if q.shape != (d,) or not bool(q.any()):
            raise ValueError(f"start must be a nonzero vector of shape ({d},); got shape {tuple(q.shape)}")
    Q = theta.new_empty(steps + 1, d)  # the Lanczos vectors as rows, filled as they come
    Q[0] = q / torch.linalg.vector_norm(q)
    alphas, betas = [], []
    for m in range(steps):
        w = product(Q[m])
        alphas.append(torch.dot(w, Q[m]))
        basis = Q[: m + 1]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - basis.T @ (basis @ w)
        beta = torch.linalg.vector_norm(w)
        T = torch.diag(torch.stack(alphas))
        if m > 0:
            off = torch.stack(betas)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        ritz, S = torch.linalg.eigh(T)
        order = torch.arange(len(ritz) - 1, -1, -1) if which == "largest" else torch.arange(len(ritz))
        wanted = order[:k]
        if len(ritz) >= k:
            residual = (beta * S[-1, wanted]).abs()
            if m + 1 == d or bool((residual <= tol * ritz.abs().max()).all()) or beta == 0:
                break
        betas.append(beta)
        Q[m + 1] = w / beta
    values, order = ritz[wanted].sort(descending=True)
    if not return_vectors:
        return values
    return values, Q[: len(ritz)].T @ S[:, wanted[order]]


def subspace_iteration(loss: Loss, theta: Tensor, k: int = 5, block: int | None = None, tol: float = 1e-10,
                       max_iter: int = 500, seed: int = 1) -> Tensor:
    r"""The ``k`` eigenvalues of :math:`\nabla^2 L(\theta)` largest in magnitude, by subspace
    iteration: an independent check of :func:`hessian_eigenvalues`.

    Block power iteration :math:`V \leftarrow \operatorname{qr}(HV)` on ``block`` vectors
    with a Rayleigh-Ritz step (the eigenvalues of :math:`V^\top H V`) at every iteration
    :cite:`saad2011numerical`. It shares with Lanczos only the Hessian-vector products
    (:func:`hvp`, batched over the block): no Krylov basis, no tridiagonal matrix. The
    :math:`i`-th Ritz value converges like :math:`|\lambda_{b+1}/\lambda_i|^{2m}` after
    :math:`m` iterations; it stops when no wanted Ritz value moved by more than ``tol``
    times the largest in one iteration.

    Parameters
    ----------
    loss, theta
        As :func:`hvp`.
    k
        How many eigenvalues, ``1 <= k <= d``.
    block
        Block size ``b >= k``; default ``2k``.
    tol, max_iter, seed
        Relative change that stops it, iteration cap, seed of the random start block.

    Returns
    -------
    Tensor of shape ``(k,)``: the ``k`` eigenvalues of largest magnitude, largest first.

    Raises
    ------
    ValueError
        For ``k`` or ``block`` out of range.

    See Also
    --------
    hessian_eigenvalues : Lanczos, the faster method (and the most negative end).
    """
    d = theta.shape[0]
    check_whole(k, "k", 1)
    b = 2 * int(k) if block is None else block
    check_whole(b, "block", 1)
    if not k <= b <= d:
        raise ValueError(f"need k <= block <= d = {d}; got k = {k}, block = {b}")
    V = torch.linalg.qr(torch.randn(d, b, generator=torch.Generator().manual_seed(seed), dtype=theta.dtype))[0]
    previous = None
    for _ in range(int(max_iter)):
        HV = hvp(loss, theta.detach(), V)
        ritz = torch.linalg.eigvalsh(0.5 * (V.T @ HV + HV.T @ V))
        top = ritz[ritz.abs().argsort(descending=True)[:k]]
        if previous is not None and bool(((top - previous).abs() <= tol * top.abs().max()).all()):
            break
        previous = top
        V = torch.linalg.qr(HV)[0]
    return top.sort(descending=True).values


def sharpness(loss: Loss, theta: Tensor, **kwargs) -> float:
    r"""The largest Hessian eigenvalue :math:`\lambda_{\max}(\nabla^2 L(\theta))`
    (:func:`hessian_eigenvalues` with ``k = 1``); gradient descent with learning rate
    :math:`\alpha` is stable along its eigenvector only if :math:`\alpha\lambda_{\max} < 2`
    :cite:`cohen2021gradient`. Keyword arguments go to :func:`hessian_eigenvalues`."""
    return float(hessian_eigenvalues(loss, theta, k=1, which="largest", **kwargs)[0])
