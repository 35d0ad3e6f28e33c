r"""Mean-field theory of wide random networks: order, chaos and the top Lyapunov exponent.

For :math:`x_{l+1} = \phi(W_l x_l + b_l)` with :math:`W_{ij} \sim N(0, \sigma_w^2/N)` and
:math:`b_i \sim N(0, \sigma_b^2)`, as the width :math:`N \to \infty` the pre-activation
variance follows the *length map* (Poole et al. 2016)

.. math::  q_{l+1} = \sigma_w^2\, \mathbb{E}_z\big[\phi(\sqrt{q_l}\, z)^2\big] + \sigma_b^2,
           \qquad z \sim N(0, 1),

with a fixed point :math:`q^*`. The mean squared singular value of one layer's Jacobian at
the fixed point is

.. math::  \chi_1 = \sigma_w^2\, \mathbb{E}_z\big[\phi'(\sqrt{q^*}\, z)^2\big],

so tangent vectors (and backpropagated gradients) grow like :math:`\chi_1^{l/2}`: the top
Lyapunov exponent per layer is :math:`\lambda_1 = \tfrac12 \ln \chi_1`. The network is
ordered (vanishing gradients) for :math:`\chi_1 < 1` and chaotic (exploding gradients) for
:math:`\chi_1 > 1` (Schoenholz et al. 2017).

Two inputs with correlation :math:`c_l` follow the *correlation map*
:math:`c_{l+1} = (\sigma_w^2 \mathbb{E}[\phi(u_1)\phi(u_2)] + \sigma_b^2)/q^*`, with
:math:`u_1 = \sqrt{q^*} z_1`, :math:`u_2 = \sqrt{q^*}(c_l z_1 + \sqrt{1 - c_l^2}\, z_2)`. Its
stable fixed point :math:`c^*` is 1 in the ordered phase and below 1 in the chaotic phase;
correlations approach it like :math:`e^{-l/\xi_c}`, with the *correlation depth*
:math:`\xi_c = -1/\ln \chi_c`, :math:`\chi_c = \sigma_w^2 \mathbb{E}[\phi'(u_1)\phi'(u_2)]` at
:math:`c^*`. It diverges on the order-to-chaos line: only there can signals cross arbitrarily
many layers. Expectations use composite Gauss-Legendre quadrature on [-9, 9] (see
:func:`gaussian_expectation`).

References
----------
B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, NeurIPS 29 (2016).
S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, ICLR (2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .activations import activation as _activation

__all__ = [
    "c_star",
    "chi1",
    "correlation_depth",
    "critical_sigma_w2",
    "gaussian_expectation",
    "q_star",
    "top_exponent",
    "width_correction",
]

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_CUTOFF = 9.0  # |z| > 9 carries probability 2e-19
_MAX_SCALE = 100.0  # refine up to q = 1e4; beyond, only the bracket search of q* goes
_RULES: dict[int, tuple[Tensor, Tensor]] = {}


def _rule(scale: float) -> tuple[Tensor, Tensor]:
    """Nodes and weights for E[g(scale * z)], z ~ N(0, 1): composite 8-point Gauss-Legendre.

    Panels of width 0.5 / max(1, scale) on [-9, 9] (scale capped at 100), with z = 0 a panel boundary, so that
    features of g of width 1 in u = scale * z are resolved however wide the Gaussian is, and
    kinks at u = 0 (ReLU) fall between panels and are integrated exactly.
    """
    panels_per_side = int(math.ceil(2 * _CUTOFF * min(max(1.0, scale), _MAX_SCALE)))
    if panels_per_side not in _RULES:
        width = _CUTOFF / panels_per_side
        left = np.arange(-panels_per_side, panels_per_side) * width
        nodes = (left[:, None] + width * (_GL_NODES[None, :] + 1) / 2).ravel()
        weights = np.tile(_GL_WEIGHTS * width / 2, 2 * panels_per_side) * np.exp(-nodes**2 / 2) / math.sqrt(2 * math.pi)
        _RULES[panels_per_side] = (torch.from_numpy(nodes), torch.from_numpy(weights))
    return _RULES[panels_per_side]


def gaussian_expectation(g: Callable[[Tensor], Tensor], scale: float = 1.0) -> float:
    r""":math:`\mathbb{E}[g(z)]`, :math:`z \sim N(0,1)`, by composite Gauss-Legendre quadrature.

    ``scale`` announces that ``g`` varies on the scale ``1/scale`` in ``z`` (``g(z) = h(scale z)``
    with ``h`` varying on the scale 1), and refines the panels to match: a plain 200-point
    Gauss-Hermite rule gets :math:`\chi_1` of a tanh network with :math:`\sigma_w^2 = 256`
    wrong by a factor 15. The rule is accurate to rounding for smooth ``g``, and ReLU's kink
    at 0 is handled exactly: :math:`\mathbb{E}[1\{z>0\}] = 1/2`,
    :math:`\mathbb{E}[\max(z,0)^2] = 1/2` up to rounding. ``g`` maps a float64 tensor of nodes
    to values at those nodes.
    """
    nodes, weights = _rule(scale)
    return float(weights @ g(nodes))


def _pair_expectation(f: Callable[[Tensor], Tensor], q: float, c: float) -> float:
    r""":math:`\mathbb{E}[f(u_1) f(u_2)]` for centred Gaussians of variance ``q`` and correlation ``c``
    (tensor product of the rule of :func:`gaussian_expectation`)."""
    s = math.sqrt(q)
    nodes, weights = _rule(s)
    z1, z2 = nodes[:, None], nodes[None, :]
    u2 = s * (c * z1 + math.sqrt(max(1 - c * c, 0.0)) * z2)
    return float(weights @ (f(s * z1) * f(u2)) @ weights)


def _check_variances(sigma_w2: float, sigma_b2: float) -> None:
    if not (math.isfinite(sigma_w2) and sigma_w2 > 0):
        raise ValueError(f"sigma_w2 must be a finite number > 0; got sigma_w2 = {sigma_w2}")
    if not (math.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ValueError(f"sigma_b2 must be a finite number >= 0; got sigma_b2 = {sigma_b2}")


def q_star(activation: str, sigma_w2: float, sigma_b2: float, tol: float = 1e-15) -> float:
    r"""Fixed point :math:`q^*` of the length map, the root of
    :math:`G(q) = \sigma_w^2\,\mathbb{E}[\phi(\sqrt q z)^2] + \sigma_b^2 - q` on :math:`q \ge 0`.

    Found by bisection between :math:`q = 0` (where :math:`G = \sigma_b^2 + \sigma_w^2\phi(0)^2 \ge 0`)
    and the first :math:`q = 2^j` with :math:`G(q) < 0`; near the critical line the length
    map converges only algebraically, and bisection does not care. For tanh with
    :math:`\sigma_b^2 = 0` and :math:`\sigma_w^2 \le 1` it returns :math:`q^* = 0`.

    Raises
    ------
    ValueError
        For an unknown activation or invalid variances, or if :math:`G > 0` up to
        :math:`q = 10^{12}`: no finite fixed point (e.g. ReLU with :math:`\sigma_w^2 > 2`).
    """
    _check_variances(sigma_w2, sigma_b2)
    phi, _ = _activation(activation)

    def G(q: float) -> float:
        return sigma_w2 * gaussian_expectation(lambda z: phi(math.sqrt(q) * z) ** 2, math.sqrt(q)) + sigma_b2 - q

    lo, hi = 0.0, 1.0
    while G(hi) >= 0:
        lo, hi = hi, 2 * hi
        if hi > 1e12:
            raise ValueError(
                f"the length map of a {activation} network with sigma_w2 = {sigma_w2}, sigma_b2 = {sigma_b2} "
                "has no finite fixed point: activations grow without bound"
            )
    while hi - lo > tol * hi and hi > 1e-30:  # below 1e-30, q* = 0 for every purpose here
        mid = 0.5 * (lo + hi)
        if G(mid) >= 0:
            lo = mid
        else:
            hi = mid
    return lo


def chi1(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    r""":math:`\chi_1 = \sigma_w^2\, \mathbb{E}[\phi'(\sqrt{q^*} z)^2]`: the per-layer growth of squared gradient norms."""
    _, dphi = _activation(activation)
    if activation in ("relu", "linear"):
        # phi' does not depend on the scale of its argument: E[phi'(sqrt(q) z)^2] is the same
        # for every q > 0, including where the length map has no finite fixed point
        _check_variances(sigma_w2, sigma_b2)
        return sigma_w2 * gaussian_expectation(lambda z: dphi(z) ** 2)
    q = q_star(activation, sigma_w2, sigma_b2)
    return sigma_w2 * gaussian_expectation(lambda z: dphi(math.sqrt(q) * z) ** 2, math.sqrt(q))


def top_exponent(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    r"""Mean-field top Lyapunov exponent per layer, :math:`\lambda_1 = \tfrac12 \ln \chi_1`."""
    return 0.5 * math.log(chi1(activation, sigma_w2, sigma_b2))


def width_correction(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    r"""The coefficient :math:`c` of the finite-width correction :math:`\lambda_1 \approx \tfrac12\ln\chi_1 + c/N`.

    One layer multiplies a unit tangent vector :math:`v` by :math:`J = D W`, with
    :math:`D = \operatorname{diag}(\phi'(a_i))`, so
    :math:`\|Jv\|^2 = \tfrac{\sigma_w^2}{N}\sum_i \phi'(a_i)^2 g_i^2` with
    :math:`g = \sqrt{N/\sigma_w^2}\,Wv` standard normal. Treating the :math:`N` terms as
    independent (pre-activations :math:`a_i \sim N(0, q^*)`, independent of :math:`g_i` at
    leading order), the mean is :math:`\chi_1` and the relative variance
    :math:`(3\kappa - 1)/N`, with :math:`\kappa = \mathbb E\phi'^4/(\mathbb E\phi'^2)^2`;
    the second-order expansion of :math:`\tfrac12\,\mathbb E\ln\|Jv\|^2` gives

    .. math::  \lambda_1 = \tfrac12\ln\chi_1 - \frac{3\kappa - 1}{4N} + O(N^{-2}),

    so :math:`c = -(3\kappa - 1)/4`. For a linear network (:math:`\kappa = 1`) this is
    :math:`-1/(2N)`, the first term of the expansion of Newman's exact
    :math:`\tfrac12(\ln 2 + \Psi(N/2)) - \tfrac12\ln N`. Corrections from the
    fluctuations of :math:`q` around :math:`q^*` are left out (they are also :math:`O(1/N)`):
    compare with measurements (chapter 1 scans the width).
    """
    _, dphi = _activation(activation)
    scale = 1.0
    if activation not in ("relu", "linear"):
        scale = math.sqrt(q_star(activation, sigma_w2, sigma_b2))
    else:
        _check_variances(sigma_w2, sigma_b2)
    m2 = gaussian_expectation(lambda z: dphi(scale * z) ** 2, scale)
    m4 = gaussian_expectation(lambda z: dphi(scale * z) ** 4, scale)
    return -(3 * m4 / m2**2 - 1) / 4


def critical_sigma_w2(activation: str, sigma_b2: float, lo: float = 0.05, hi: float = 50.0, tol: float = 1e-10,
                      width: int | None = None) -> float:
    r"""The weight variance on the order-to-chaos line, :math:`\chi_1(\sigma_w^2) = 1`, by bisection.

    With ``width`` :math:`N`, the line where the finite-width exponent
    :math:`\tfrac12\ln\chi_1 + c/N` of :func:`width_correction` vanishes instead: it lies
    to the right of the mean-field line, since :math:`c < 0`.

    Raises
    ------
    ValueError
        If :math:`\chi_1 - 1` (or the finite-width exponent) does not change sign on
        ``[lo, hi]`` (no transition there), or ``width`` is not a whole number >= 1.
    """
    if width is not None and (int(width) != width or width < 1):
        raise ValueError(f"width must be a whole number >= 1 (or None for mean field); got width = {width}")

    def f(s: float) -> float:
        if width is None:
            return chi1(activation, s, sigma_b2) - 1
        return top_exponent(activation, s, sigma_b2) + width_correction(activation, s, sigma_b2) / width

    f_lo, f_hi = f(lo), f(hi)
    if f_lo * f_hi > 0:
        raise ValueError(
            f"chi1 - 1 does not change sign for sigma_w2 in [{lo}, {hi}] ({activation}, sigma_b2 = {sigma_b2}): "
            "no order-to-chaos transition in that range"
        )
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if (f_mid > 0) == (f_hi > 0):
            hi, f_hi = mid, f_mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def c_star(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    r"""Stable fixed point :math:`c^*` of the correlation map (1 in the ordered phase).

    In the chaotic phase (:math:`\chi_1 > 1`) the fixed point :math:`c = 1` is unstable and
    :math:`c^* < 1` is the root of :math:`C(c) - c` on :math:`[0, 1)`, found by bisection
    (:math:`C(0) \ge 0`; just below 1, :math:`C(c) < c`).
    """
    if chi1(activation, sigma_w2, sigma_b2) <= 1:
        return 1.0
    phi, _ = _activation(activation)
    q = q_star(activation, sigma_w2, sigma_b2)

    def gap(c: float) -> float:
        return (sigma_w2 * _pair_expectation(phi, q, c) + sigma_b2) / q - c

    lo, hi = 0.0, 0.5
    while gap(hi) >= 0:  # walk hi towards 1 until C(hi) < hi
        lo, hi = hi, 1 - 0.5 * (1 - hi)
        if 1 - hi < 1e-12:
            return 1.0  # numerically on the critical line
    while hi - lo > 1e-13:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gap(mid) >= 0 else (lo, mid)
    return 0.5 * (lo + hi)


def correlation_depth(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    r"""Correlation depth :math:`\xi_c = -1/\ln \chi_c`, in layers (``inf`` on the critical line).

    :math:`\chi_c = \sigma_w^2\,\mathbb{E}[\phi'(u_1)\phi'(u_2)]` at the stable fixed point
    :math:`c^*` of the correlation map is the slope of that map there, so correlations
    relax to :math:`c^*` like :math:`e^{-l/\xi_c}` (Schoenholz et al. 2017, eq. 9). In the
    ordered phase :math:`c^* = 1` and :math:`\chi_c = \chi_1`.
    """
    c = c_star(activation, sigma_w2, sigma_b2)
    if c == 1.0:
        chi_c = chi1(activation, sigma_w2, sigma_b2)
    else:
        _, dphi = _activation(activation)
        chi_c = sigma_w2 * _pair_expectation(dphi, q_star(activation, sigma_w2, sigma_b2), c)
    return math.inf if chi_c >= 1 else -1.0 / math.log(chi_c)


def finite_depth_exponent(activation: str, sigma_w2: float, sigma_b2: float, q0: float, depth: int) -> float:
    r"""Mean-field growth rate of backpropagated gradients over the first ``depth`` layers.

    The pre-activation variance starts at :math:`q_0` and follows the length map,
    :math:`q_{l+1} = \sigma_w^2\,\mathbb{E}[\phi(\sqrt{q_l} z)^2] + \sigma_b^2`; layer
    :math:`l` multiplies squared gradient norms by :math:`\chi_1(q_l) = \sigma_w^2\,
    \mathbb{E}[\phi'(\sqrt{q_l} z)^2]`, so over layers :math:`0, \dots, L-1`

    .. math::  \bar\lambda_L = \frac1L \sum_{l=0}^{L-1} \tfrac12 \ln \chi_1(q_l),

    the rate that :func:`~chaosgrad.adjoint.backprop_growth` fits to a depth-:math:`L`
    network (its rate is the total log growth over the ``depth`` layers divided by
    ``depth``). As :math:`L \to \infty` it tends to :func:`top_exponent`, the value at the
    fixed point :math:`q^*`; at finite depth it remembers the approach to :math:`q^*`, which
    is slow (algebraic, :math:`q_l \approx 1/(2l)` for tanh with :math:`\sigma_w^2 = 1`,
    :math:`\sigma_b^2 = 0`) on the critical line. For :math:`x_{l+1} = \phi(W_l x_l + b_l)`
    with input :math:`x_0`, the first pre-activation has
    :math:`q_0 = \sigma_w^2 \|x_0\|^2/N + \sigma_b^2`. Expectations by the quadrature of
    :func:`gaussian_expectation`.

    Parameters
    ----------
    activation, sigma_w2, sigma_b2
        As :func:`chi1`.
    q0
        Variance of the first layer's pre-activations, >= 0.
    depth
        Number of layers :math:`L`, >= 1.

    Returns
    -------
    float: :math:`\bar\lambda_L`, per layer.

    Raises
    ------
    ValueError
        For an unknown activation, invalid variances, ``q0 < 0`` or not finite, or
        ``depth < 1``.
    """
    _check_variances(sigma_w2, sigma_b2)
    if not (math.isfinite(q0) and q0 >= 0):
        raise ValueError(f"q0 must be a finite number >= 0; got q0 = {q0}")
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be a whole number >= 1; got depth = {depth}")
    phi, dphi = _activation(activation)
    q, total = float(q0), 0.0
    for _ in range(int(depth)):
        s = math.sqrt(q)
        total += 0.5 * math.log(sigma_w2 * gaussian_expectation(lambda z: dphi(s * z) ** 2, s))
        q = sigma_w2 * gaussian_expectation(lambda z: phi(s * z) ** 2, s) + sigma_b2
    return total / int(depth)
