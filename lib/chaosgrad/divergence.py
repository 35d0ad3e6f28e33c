r"""The divergence method for noisy maps: the linear response through the transfer operator,
with the score of the density carried along the path.

Of the three basic ways to differentiate an average of a random dynamical system
:cite:`ni2025ergodic` (last section), path perturbation differentiates the path
(:func:`~chaosgrad.derivatives.backprop_derivative`, or
:func:`~chaosgrad.kernel.path_kernel_derivative` with ``alpha = 0``; exploding on an unstable map), kernel
differentiation the transition density (:func:`~chaosgrad.kernel.kernel_derivative`, a variance
growing like :math:`1/\sigma^2`), and the divergence method the density of the state itself.
For :math:`x_{n+1} = f(x_n;\gamma) + \sigma\xi_n` (:class:`~chaosgrad.systems.Noisy`) let
:math:`\rho_n` be the density of :math:`x_n` and :math:`\hat\rho_{n+1} = f_*\rho_n` that of
:math:`z_{n+1} = f(x_n)`, so :math:`\rho_{n+1} = \hat\rho_{n+1} * g_\sigma`. Moving :math:`f` by
:math:`\delta\gamma\,\partial_\gamma f` moves :math:`\hat\rho_{n+1}` by
:math:`-\delta\gamma\,\mathrm{div}(\hat\rho_{n+1}X)`, where :math:`X(f(x)) = \partial_\gamma f(x)` (pushed
forward along each branch of a local diffeomorphism). For any later observable
:math:`\Psi(x_{n+1}) = \mathbb E[\Phi(x_m)\mid x_{n+1}]`, integrating by parts,

.. math::  \frac{d}{d\gamma}\bigg|_{\text{step }n}\mathbb E\,\Phi(x_m)
           = \mathbb E\big[\Phi(x_m)\,D_{n+1}\big],\qquad
           D_{n+1} = -\mathrm{div}X(z_{n+1}) - \langle X(z_{n+1}), \nabla\log\hat\rho_{n+1}(z_{n+1})\rangle .

Both terms are per-step quantities of the map. With :math:`J = D_xf(x_n)` and
:math:`\ell(x,\gamma) = \log|\det D_xf(x;\gamma)|`: :math:`\mathrm{div}X(f(x)) = \mathrm{tr}(D_x\partial_\gamma f\,J^{-1})
= \partial_\gamma\ell` (Jacobi's formula), and the change of variables
:math:`\hat\rho_{n+1}(f(x))|\det J| = \rho_n(x)` gives
:math:`\nabla\log\hat\rho_{n+1}(f(x)) = J^{-\top}(\nabla\log\rho_n(x) - \nabla_x\ell)` on one branch (and,
as a conditional expectation given :math:`z_{n+1}`, over the branches of a non-invertible
:math:`f`). So

.. math::  D_{n+1} = -\partial_\gamma\ell(x_n) - \langle J^{-1}\partial_\gamma f(x_n),\; \nu_n - \nabla_x\ell(x_n)\rangle,

with :math:`\nu_n` any estimate of the score :math:`\nabla\log\rho_n(x_n)` that is unbiased given
:math:`x_n`. Two are available along the path (:cite:`ni2025scores`, additive noise):
the *kernel* score :math:`-\xi_{n-1}/\sigma` (since :math:`\rho_n = \hat\rho_n * g_\sigma`,
:math:`\nabla\log\rho_n(y) = \mathbb E[-\xi_{n-1}/\sigma \mid x_n = y]`) and the *divergence* score
:math:`J_{n-1}^{-\top}(\nu_{n-1} - \nabla_x\ell(x_{n-1}))` (the same identity
:math:`\nabla\log\rho_n(y) = \mathbb E[\nabla\log\hat\rho_n(z_n)\mid x_n = y]` with the change of variables
above). Any fixed mixture is unbiased too:

.. math::  \nu_{n+1} = \alpha\,(-\xi_n/\sigma) + (1 - \alpha)\,J_n^{-\top}(\nu_n - \nabla_x\ell(x_n)).

Since everything in :math:`\nu_n` is measured before :math:`x_{n+1}` and the path is Markov,
the conditional expectations survive multiplication by any function of the later path,
which is what :math:`\mathbb E[\Phi(x_m)D_{n+1}]` needs.

What it assumes and what it does otherwise: :math:`D_xf` invertible everywhere on the
path (a local diffeomorphism; a singular Jacobian stops the run with an error). With
:math:`\alpha = 0` (pure divergence) no :math:`1/\sigma` appears, and the recursion is stable
exactly when :math:`J^{-\top}` contracts, i.e. when :math:`f` expands in every direction
(:class:`~chaosgrad.systems.ExpandingCircle`): then the variance does not grow as the noise
shrinks. A map with contracting directions (a hyperbolic map, a network) makes :math:`J^{-\top}`
expand there, and :math:`\alpha` must satisfy :math:`(1 - \alpha)\max\|J^{-1}\| < 1` roughly; the kernel
part then brings back a :math:`1/\sigma`, in the unstable directions as well, which is what the
divergence-kernel method of :cite:`ni2025divergence` avoids by splitting the score along
the Oseledets subspaces (not implemented here). A map whose image has edges (the tent map
with :math:`h < 1`, whose :math:`\hat\rho` jumps at the fold's image) violates the integration by
parts: the jumps carry a boundary term that the pathwise :math:`D` misses, and the estimate is
biased (chapter 5 measures this).

References
----------
:cite:`ni2025ergodic` A. Ni, arXiv:2410.10138 (the three basic linear-response methods);
:cite:`ni2025divergence` A. Ni, arXiv:2509.03992 (the divergence-kernel formula for linear
responses); :cite:`ni2025scores` A. Ni, arXiv:2507.04035 (the divergence-kernel formula for
scores; for additive noise, the kernel score used here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .estimates import Estimate
from .kernel import _check, _check_window, _deferred_steps, _from_scores, _observe
from .response import log_expansion_gradients
from .systems import Noisy
from .validation import check_finite

__all__ = ["divergence_derivative"]

Observable = Callable[[Tensor], Tensor]


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha (the kernel's share of the score) must be in [0, 1]; got {a:g}")
    return a


def _per_step(noisy: Noisy, states: Tensor, parameter: str, first: int) -> tuple[Tensor, ...]:
    r"""For states ``(steps, ..., dim)`` of consecutive steps ``first, ..``: the Jacobian
    :math:`J`, :math:`J^{-1}\partial_\gamma f`, :math:`\nabla_x\ell` and :math:`\partial_\gamma\ell`, with a
    ValueError at the first step whose Jacobian is singular."""
    f, dim = noisy.map, noisy.dim
    eye = torch.eye(dim, dtype=states.dtype)
    per = [states[i] for i in range(states.shape[0])] if not f.autonomous else [states]
    J, Jinv_X, gx, gg = [], [], [], []
    for i, x in enumerate(per):
        n = first + i
        _, dfdg = f._step_param_jvp(x, parameter, n)
        jac = f.jvp(x, eye, n)
        solved, info = torch.linalg.solve_ex(jac, dfdg[..., None])
        bad = (info != 0) | ~torch.isfinite(solved).all(-1).all(-1)
        if bool(bad.any()):
            step = n + (int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0]) if f.autonomous else 0)
            raise ValueError(f"the Jacobian of {type(f).__name__} is singular at step {step}: the divergence "
                             "method needs a local diffeomorphism (an invertible Jacobian along the path); "
                             "use kernel_derivative")
        g_x, g_g = log_expansion_gradients(f, x, eye, eye, n, [parameter])
        J.append(jac)
        Jinv_X.append(solved[..., 0])
        gx.append(g_x)
        gg.append(g_g[..., 0])
    if f.autonomous:
        return J[0], Jinv_X[0], gx[0], gg[0]
    return torch.stack(J), torch.stack(Jinv_X), torch.stack(gx), torch.stack(gg)


def divergence_derivative(
    noisy: Noisy,
    x0: Tensor,
    T: int,
    observable: Observable,
    parameter: str,
    alpha: float = 0.0,
    average: bool = False,
    window: int | None = None,
    warmup: int = 0,
    blocks: int = 20,
    errors: str = "blocks",
    initial_score: Callable[[Tensor], Tensor] | None = None,
) -> Estimate:
    r"""The derivative of :math:`\mathbb{E}\Phi(x_T)` (or of an average, or of the stationary
    average) with respect to a scalar parameter by the divergence method (module docstring).

    The same estimator as :func:`~chaosgrad.kernel.kernel_derivative` with a different
    score per step: kernel differentiation pairs :math:`\Phi` with
    :math:`\langle\partial_\gamma f(x_n), \xi_n\rangle/\sigma`, this function with
    :math:`D_{n+1} = -\partial_\gamma\ell(x_n) - \langle J_n^{-1}\partial_\gamma f(x_n), \nu_n - \nabla_x\ell(x_n)\rangle`,
    :math:`\ell = \log|\det D_xf|`, :math:`\nu` the score recursion with kernel share ``alpha``.

    Parameters
    ----------
    noisy
        :class:`~chaosgrad.systems.Noisy` with noise in every direction; its map must have an
        invertible Jacobian along the path.
    x0 : Tensor, shape (..., dim)
        Initial states, one path per row.
    T, observable, average, window, warmup, blocks, errors
        As :func:`~chaosgrad.kernel.kernel_derivative` (finite time, average, or the ergodic
        window with its error bars).
    parameter
        Name of a scalar parameter of the wrapped map.
    alpha
        The kernel's share of the score recursion, in ``[0, 1]``: 0 is the pure divergence
        method (stable on an expanding map; no :math:`1/\sigma`), 1 uses the last noise alone.
    initial_score
        :math:`\nabla\log\rho_0`, the score of the law the rows of ``x0`` are drawn from, as a
        function of states (e.g. zero for uniform draws on a torus). ``None``: ``x0`` are
        given points, whose density has no score; the first step is then differentiated by
        the kernel (score :math:`\langle\partial_\gamma f(x_0), \xi_0\rangle/\sigma`, and
        :math:`\nu_1 = -\xi_0/\sigma`, the exact score of a Gaussian around :math:`f(x_0)`).

    Returns
    -------
    Estimate
        Mean over paths (or blocks) with its standard error, as
        :func:`~chaosgrad.kernel.kernel_derivative`.

    Raises
    ------
    TypeError
        If ``noisy`` is not :class:`~chaosgrad.systems.Noisy`.
    ValueError
        For foliated noise, ``alpha`` outside ``[0, 1]``, a singular Jacobian (naming the
        step), an initial score of the wrong shape, or the arguments
        :func:`~chaosgrad.kernel.kernel_derivative` rejects.
    chaosgrad.NonFiniteStateError
        If the state or the score estimate becomes inf or NaN (naming the step; for the score:
        the recursion diverged, raise ``alpha``).

    Notes
    -----
    Cost per state: one step, one parameter derivative, the Jacobian (``dim`` products) and
    one solve with it, and :func:`~chaosgrad.response.log_expansion_gradients` with full
    frames (second derivatives by :mod:`torch.func`); states of many steps of an autonomous
    map go through the derivatives in one call. Meant for small ``dim``.

    Examples
    --------
    The doubling map followed by a rotation keeps Lebesgue measure for every rotation, so
    the derivative is exactly zero, and from uniform draws the divergence method returns
    exactly zero, not zero within an error bar (kernel differentiation would not):

    >>> import math, torch
    >>> from chaosgrad.systems import ExpandingCircle, Noisy
    >>> noisy = Noisy(ExpandingCircle(gamma=0.3, eps=0.0), sigma=0.05, seed=1)
    >>> x0 = torch.rand(100, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> est = divergence_derivative(noisy, x0, 10, lambda x: torch.cos(2 * math.pi * x[..., 0]), "gamma",
    ...                             initial_score=torch.zeros_like)
    >>> est.value, est.stderr
    (0.0, 0.0)

    See Also
    --------
    chaosgrad.kernel.kernel_derivative : the kernel method, same modes.
    chaosgrad.kernel.path_kernel_derivative : the path-kernel hybrid.
    chaosgrad.response.linear_response : the deterministic (hyperbolic) response, whose
        unstable contribution is the same divergence restricted to the unstable subspace.
    """
    x = _check(noisy, x0, T, parameter, warmup, "the divergence method")
    window = _check_window(window, errors)
    a = _check_alpha(alpha)
    if noisy.direction is not None:
        raise ValueError("divergence_derivative needs noise in every direction (Noisy without direction): the "
                         "score of a foliated-noise density need not exist")
    sigma, total = noisy.sigma, warmup + int(T)
    states, draws, values = [], [], []
    with torch.no_grad():
        for n in range(total):
            xi = noisy.noise(x)
            states.append(x)
            draws.append(xi)
            x = check_finite(noisy.map.step(x, n) + sigma * xi, "state", step=n + 1)
            if average or window is not None or n + 1 == total:
                values.append(_observe(observable, x, n + 1, "divergence_derivative"))
        scores, xs, noise = [], torch.stack(states), torch.stack(draws)
        chunk = _deferred_steps(noisy.map, xs[0])
        parts = [_per_step(noisy, xs[i:i + chunk], parameter, i) for i in range(0, total, chunk)]
        J, Jinv_X, gx, gg = (torch.cat([p[k] for p in parts]) for k in range(4))
        if initial_score is None:
            first = 1
            _, dfdg = noisy.map._step_param_jvp(xs[0], parameter, 0)
            scores.append((dfdg * noise[0]).sum(-1) / sigma)
            nu = -noise[0] / sigma
        else:
            first = 0
            nu = check_finite(torch.as_tensor(initial_score(xs[0]), dtype=xs.dtype), "initial score", step=0)
            if nu.shape != xs[0].shape:
                raise ValueError(f"initial_score must return the shape of x0, {tuple(xs[0].shape)}; "
                                 f"got {tuple(nu.shape)}")
        for n in range(first, total):
            r = nu - gx[n]
            scores.append(-gg[n] - (Jinv_X[n] * r).sum(-1))
            pulled = torch.linalg.solve(J[n].mT, r[..., None])[..., 0]
            nu = check_finite(a * (-noise[n] / sigma) + (1 - a) * pulled, "score estimate", step=n + 1)
    return _from_scores(torch.stack(scores), torch.stack(values), warmup, average, window, errors, blocks)
