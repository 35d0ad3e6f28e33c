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
:math:`\chi_1 > 1` (Schoenholz et al. 2017). Expectations use Gauss-Hermite quadrature.

References
----------
B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, NeurIPS 29 (2016).
S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, ICLR (2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["ACTIVATIONS", "chi1", "critical_sigma_w2", "gaussian_expectation", "q_star", "top_exponent"]

Array = np.ndarray


def _sigmoid(u: Array) -> Array:
    return 0.5 * (1 + np.tanh(u / 2))


#: activation name -> (phi, phi')
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "tanh": (np.tanh, lambda u: 1 - np.tanh(u) ** 2),
    "sigmoid": (_sigmoid, lambda u: _sigmoid(u) * (1 - _sigmoid(u))),
    "relu": (lambda u: np.maximum(u, 0), lambda u: (u > 0).astype(float)),
    "linear": (lambda u: u, lambda u: np.ones_like(u)),
}

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(200)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)


def gaussian_expectation(g: Callable[[Array], Array]) -> float:
    r""":math:`\mathbb{E}[g(z)]`, :math:`z \sim N(0,1)`, by 200-point Gauss-Hermite quadrature.

    Exact for polynomials of degree up to 399; for the smooth activations here the error is
    at rounding level. The nodes are symmetric and avoid :math:`z = 0`, so ReLU's kink is
    handled exactly: :math:`\mathbb{E}[1\{z>0\}] = 1/2` and :math:`\mathbb{E}[\max(z,0)^2] = 1/2`
    up to rounding.
    """
    return float(np.dot(_WEIGHTS, g(_NODES)))


def _activation(name: str) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}") from None


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
        return sigma_w2 * gaussian_expectation(lambda z: phi(math.sqrt(q) * z) ** 2) + sigma_b2 - q

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
    q = q_star(activation, sigma_w2, sigma_b2)
    return sigma_w2 * gaussian_expectation(lambda z: dphi(math.sqrt(q) * z) ** 2)


def top_exponent(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    r"""Mean-field top Lyapunov exponent per layer, :math:`\lambda_1 = \tfrac12 \ln \chi_1`."""
    return 0.5 * math.log(chi1(activation, sigma_w2, sigma_b2))


def critical_sigma_w2(activation: str, sigma_b2: float, lo: float = 0.05, hi: float = 50.0, tol: float = 1e-10) -> float:
    r"""The weight variance on the order-to-chaos line, :math:`\chi_1(\sigma_w^2) = 1`, by bisection.

    Raises
    ------
    ValueError
        If :math:`\chi_1 - 1` does not change sign on ``[lo, hi]`` (no transition there).
    """
    f_lo, f_hi = chi1(activation, lo, sigma_b2) - 1, chi1(activation, hi, sigma_b2) - 1
    if f_lo * f_hi > 0:
        raise ValueError(
            f"chi1 - 1 does not change sign for sigma_w2 in [{lo}, {hi}] ({activation}, sigma_b2 = {sigma_b2}): "
            "no order-to-chaos transition in that range"
        )
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        f_mid = chi1(activation, mid, sigma_b2) - 1
        if (f_mid > 0) == (f_hi > 0):
            hi, f_hi = mid, f_mid
        else:
            lo = mid
    return 0.5 * (lo + hi)
