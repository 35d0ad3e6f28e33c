r"""Classical chaotic maps with known Lyapunov exponents, and additive noise for any map.

These are the benchmarks every algorithm of the book is validated on:

==============  ====================================  ==========================
map             Lyapunov exponents (reference)         source
==============  ====================================  ==========================
Henon 1.4, 0.3  0.4192, -1.6232 per step (sum ln 0.3)  Henon (1976); Sprott (2003)
logistic r = 4  ln 2 per step                          exact (conjugate to the tent map)
Lorenz-63       0.9056, 0, -14.5723 per unit time      Lorenz (1963); Sprott (2003)
==============  ====================================  ==========================

References
----------
M. Henon, "A two-dimensional mapping with a strange attractor", Commun. Math. Phys. 50 (1976).
E. N. Lorenz, "Deterministic nonperiodic flow", J. Atmos. Sci. 20 (1963).
J. C. Sprott, *Chaos and Time-Series Analysis*, Oxford University Press (2003).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .maps import Map, parameter
from .validation import check_positive, unknown_parameter_error

__all__ = ["Affine", "ConjugateCat", "ExpandingCircle", "Henon", "Logistic", "Lorenz63", "ModifiedSolenoid", "Noisy",
           "PerturbedCat", "Tent"]


class Affine(Map):
    r"""The affine map :math:`x \mapsto A x + \gamma\, b` with a scalar parameter :math:`\gamma`.

    With spectral radius :math:`\rho(A) < 1` it is stable: every orbit converges to the
    fixed point :math:`x^* = \gamma (I - A)^{-1} b`, and for :math:`\Phi(x) = c^\top x` the
    long-time average has the exact derivative
    :math:`d\langle\Phi\rangle/d\gamma = c^\top (I - A)^{-1} b`. The average over a finite run
    :math:`J_N = \frac1N\sum_{n=1}^N c^\top x_n` from a fixed :math:`x_0` has derivative
    :math:`c^\top (I - A)^{-1} b - \frac1N c^\top A (I - A^N)(I - A)^{-2} b`, the second term
    being the :math:`O(1/N)` boundary term (see :meth:`finite_run_derivative`). Closed-form
    ``jvp``/``vjp``.

    Parameters
    ----------
    A : array_like, shape (dim, dim)
    b : array_like, shape (dim,)
    gamma : float
    """

    autonomous = True

    def __init__(self, A, b, gamma: float = 0.0) -> None:
        super().__init__()
        A = torch.as_tensor(A, dtype=torch.float64)
        b = torch.as_tensor(b, dtype=A.dtype)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or b.shape != A.shape[:1]:
            raise ValueError(f"A must be (dim, dim) and b (dim,); got A {tuple(A.shape)} and b {tuple(b.shape)}")
        self.dim = A.shape[0]
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.gamma = parameter(gamma)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, gamma={self.gamma.item():g}"

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        return x @ self.A.mT + self.gamma * self.b

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return (self.A @ V).expand(*x.shape[:-1], *V.shape[-2:])

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        return (self.A.mT @ W).expand(*x.shape[:-1], *W.shape[-2:])

    def average_derivative(self, c: Tensor) -> float:
        r""":math:`c^\top (I - A)^{-1} b`, the derivative of :math:`\langle c^\top x\rangle` (for :math:`\rho(A) < 1`)."""
        eye = torch.eye(self.dim, dtype=self.A.dtype)
        return float(c @ torch.linalg.solve(eye - self.A, self.b))

    def finite_run_derivative(self, c: Tensor, N: int) -> float:
        r""":math:`dJ_N/d\gamma` for :math:`J_N = \frac1N\sum_{n=1}^N c^\top x_n` from a fixed :math:`x_0`:
        :math:`\frac1N \sum_{n=1}^{N} c^\top (I + A + \dots + A^{n-1})\, b`, summed exactly."""
        total, power_sum, term = 0.0, torch.zeros_like(self.b), self.b.clone()
        for _ in range(N):
            power_sum = power_sum + term  # (I + A + ... + A^{n-1}) b
            total += float(c @ power_sum)
            term = self.A @ term
        return total / N


class Henon(Map):
    r"""The Hénon map :math:`(x, y) \mapsto (1 - a x^2 + y,\; b x)`.

    Its Jacobian :math:`\begin{pmatrix} -2ax & 1 \\ b & 0 \end{pmatrix}` has determinant
    :math:`-b`, so the exponents sum to :math:`\ln b` exactly. Closed-form ``jvp``/``vjp``.

    Parameters
    ----------
    a, b
        Parameters; the classical chaotic values are ``a = 1.4``, ``b = 0.3``.
    """

    autonomous = True

    dim = 2

    def __init__(self, a: float = 1.4, b: float = 0.3) -> None:
        super().__init__()
        self.a = parameter(a)
        self.b = parameter(b)

    def extra_repr(self) -> str:
        return f"a={self.a.item():g}, b={self.b.item():g}"

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        return torch.stack((1 - self.a * u**2 + v, self.b * u), dim=-1)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        u = x[..., 0, None]
        return torch.stack((-2 * self.a * u * V[..., 0, :] + V[..., 1, :], self.b * V[..., 0, :]), dim=-2)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        u = x[..., 0, None]
        return torch.stack((-2 * self.a * u * W[..., 0, :] + self.b * W[..., 1, :], W[..., 0, :]), dim=-2)


class Logistic(Map):
    r"""The logistic map :math:`x \mapsto r x (1 - x)` on :math:`[0, 1]`, ``dim = 1``.

    At ``r = 4`` it is conjugate to the tent map and its Lyapunov exponent is
    :math:`\ln 2` exactly. Closed-form ``jvp``/``vjp``: :math:`Df = r(1 - 2x)`.
    """

    autonomous = True

    dim = 1

    def __init__(self, r: float = 4.0) -> None:
        super().__init__()
        self.r = parameter(r)

    def extra_repr(self) -> str:
        return f"r={self.r.item():g}"

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        return self.r * x * (1 - x)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return (self.r * (1 - 2 * x))[..., None] * V

    _vjp = _jvp  # a 1 x 1 Jacobian is its own transpose


class Tent(Map):
    r"""The tent map of height :math:`h` on the circle :math:`\mathbb R/\mathbb Z`:

    .. math::  f(x) = 2h\,\min(u, 1 - u), \qquad u = x - \lfloor x\rfloor .

    :math:`f` is continuous on the circle (:math:`f(0) = f(1) = 0`), so additive noise
    (:class:`Noisy`) gives a random map of the circle; observables should be periodic
    (e.g. :math:`\cos 2\pi x`). For :math:`1/2 < h \le 1` the deterministic map is chaotic
    with exponent :math:`\ln 2h` per step, but its long-time averages are not differentiable
    functions of :math:`h`; with noise they are, which is the case the ergodic
    kernel-differentiation method was demonstrated on :cite:`ni2025ergodic`. Closed-form
    ``jvp`` (:math:`\pm 2h`) and parameter derivative (:math:`2\min(u, 1-u)`).

    Parameters
    ----------
    height : float
        The peak :math:`h = f(1/2)`.
    """

    autonomous = True

    dim = 1

    def __init__(self, height: float = 0.8) -> None:
        super().__init__()
        self.height = parameter(height)

    def extra_repr(self) -> str:
        return f"height={self.height.item():g}"

    @staticmethod
    def _fold(x: Tensor) -> Tensor:
        u = x - torch.floor(x)
        return torch.minimum(u, 1 - u)

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        return 2 * self.height * self._fold(x)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        u = x - torch.floor(x)
        return (2 * self.height * torch.where(u < 0.5, 1.0, -1.0))[..., None] * V

    _vjp = _jvp  # a 1 x 1 Jacobian is its own transpose

    def param_jvp(self, x: Tensor, dgamma: dict, n: int = 0) -> Tensor:
        x = self.check_state(x)
        if set(dgamma) - {"height"}:
            raise unknown_parameter_error(self, set(dgamma) - {'height'})
        return torch.as_tensor(dgamma.get("height", 0.0), dtype=x.dtype) * 2 * self._fold(x)

    def _step_param_jvp(self, x: Tensor, parameter: str, n: int) -> tuple[Tensor, Tensor]:
        if parameter != "height":
            raise unknown_parameter_error(self, parameter)
        fold = self._fold(x)
        return 2 * self.height * fold, 2 * fold


class Lorenz63(Map):
    r"""The time-``dt`` map of the Lorenz-63 flow by one classical Runge–Kutta (RK4) step.

    .. math::  \dot x = \sigma (y - x), \quad \dot y = x(\rho - z) - y, \quad \dot z = x y - \beta z.

    Exponents of the map are per step; divide by ``dt`` for exponents per unit time. The
    divergence of the flow is :math:`-(\sigma + 1 + \beta)`, so the exponents per unit time
    sum to that (up to the RK4 error, :math:`O(dt^4)`). The tangent map is the exact
    derivative of the RK4 step in closed form (the RK4 stages of the linearised flow, each
    at its own stage point); the adjoint map is its exact transpose, also in closed form
    (the same stages in reverse order).
    """

    autonomous = True
    is_flow = True

    dim = 3

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0, dt: float = 0.01) -> None:
        super().__init__()
        self.sigma = parameter(sigma)
        self.rho = parameter(rho)
        self.beta = parameter(beta)
        self.dt = check_positive(dt, "dt")

    def extra_repr(self) -> str:
        return f"sigma={self.sigma.item():g}, rho={self.rho.item():g}, beta={self.beta.item():.6g}, dt={self.dt:g}"

    def vector_field(self, x: Tensor) -> Tensor:
        """The Lorenz-63 vector field at states ``x`` of shape ``(..., 3)``."""
        u, v, w = x[..., 0], x[..., 1], x[..., 2]
        return torch.stack((self.sigma * (v - u), u * (self.rho - w) - v, u * v - self.beta * w), dim=-1)

    def field_jvp(self, x: Tensor, V: Tensor) -> Tensor:
        """The Jacobian of the vector field at ``x`` (shape ``(..., 3)``) times ``V`` (``(..., 3, k)``)."""
        u, v, w = (x[..., i, None] for i in range(3))
        V0, V1, V2 = V[..., 0, :], V[..., 1, :], V[..., 2, :]
        return torch.stack(
            (self.sigma * (V1 - V0), (self.rho - w) * V0 - V1 - u * V2, v * V0 + u * V1 - self.beta * V2), dim=-2
        )

    def field_vjp(self, x: Tensor, W: Tensor) -> Tensor:
        """The transposed Jacobian of the vector field at ``x`` times ``W`` (``(..., 3, k)``)."""
        u, v, w = (x[..., i, None] for i in range(3))
        W0, W1, W2 = W[..., 0, :], W[..., 1, :], W[..., 2, :]
        return torch.stack(
            (-self.sigma * W0 + (self.rho - w) * W1 + v * W2, self.sigma * W0 - W1 + u * W2, -u * W1 - self.beta * W2),
            dim=-2,
        )

    def _stages(self, x: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """RK4 stage slopes (k1, k2, k3, k4) and the points where they are taken."""
        h = self.dt
        k1 = self.vector_field(x)
        y2 = x + 0.5 * h * k1
        k2 = self.vector_field(y2)
        y3 = x + 0.5 * h * k2
        k3 = self.vector_field(y3)
        y4 = x + h * k3
        return (k1, k2, k3, self.vector_field(y4)), (x, y2, y3, y4)

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        (k1, k2, k3, k4), _ = self._stages(x)
        return x + (self.dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        h = self.dt
        _, (y1, y2, y3, y4) = self._stages(x)
        K1 = self.field_jvp(y1, V)
        K2 = self.field_jvp(y2, V + 0.5 * h * K1)
        K3 = self.field_jvp(y3, V + 0.5 * h * K2)
        K4 = self.field_jvp(y4, V + h * K3)
        return V + (h / 6.0) * (K1 + 2 * K2 + 2 * K3 + K4)

    def field_param(self, x: Tensor, parameter: str) -> Tensor:
        """The derivative of the vector field at ``x`` with respect to one parameter:
        :math:`(y - x, 0, 0)` for sigma, :math:`(0, x, 0)` for rho, :math:`(0, 0, -z)` for beta."""
        u, v, w = x[..., 0], x[..., 1], x[..., 2]
        zero = torch.zeros_like(u)
        columns = {"sigma": (v - u, zero, zero), "rho": (zero, u, zero), "beta": (zero, zero, -w)}
        if parameter not in columns:
            raise unknown_parameter_error(self, parameter)
        return torch.stack(columns[parameter], dim=-1)

    def _step_param_jvp(self, x: Tensor, parameter: str, n: int) -> tuple[Tensor, Tensor]:
        # the RK4 step differentiated with respect to the parameter, stage by stage (closed form)
        h = self.dt
        (k1, k2, k3, k4), (y1, y2, y3, y4) = self._stages(x)
        d1 = self.field_param(y1, parameter)
        d2 = self.field_jvp(y2, (0.5 * h * d1)[..., None])[..., 0] + self.field_param(y2, parameter)
        d3 = self.field_jvp(y3, (0.5 * h * d2)[..., None])[..., 0] + self.field_param(y3, parameter)
        d4 = self.field_jvp(y4, (h * d3)[..., None])[..., 0] + self.field_param(y4, parameter)
        return x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4), (h / 6.0) * (d1 + 2 * d2 + 2 * d3 + d4)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        # the tangent RK4 step above, transposed: its stages in reverse order
        h = self.dt
        _, (y1, y2, y3, y4) = self._stages(x)
        g4 = self.field_vjp(y4, (h / 6.0) * W)
        g3 = self.field_vjp(y3, (h / 3.0) * W + h * g4)
        g2 = self.field_vjp(y2, (h / 3.0) * W + (h / 2.0) * g3)
        g1 = self.field_vjp(y1, (h / 6.0) * W + (h / 2.0) * g2)
        return W + g1 + g2 + g3 + g4


class PerturbedCat(Map):
    r"""Arnold's cat map after an area-preserving shear, on the torus :math:`[0, 1)^2`:

    .. math::  (x, y) \mapsto A \begin{pmatrix} x + \frac{\varepsilon}{2\pi}\sin 2\pi y \\ y
               \end{pmatrix} \bmod 1, \qquad A = \begin{pmatrix} 2 & 1 \\ 1 & 1 \end{pmatrix}.

    Both factors have determinant 1, so the map preserves area for every :math:`\varepsilon`,
    and for small :math:`\varepsilon` it is Anosov (uniformly hyperbolic). Its physical (SRB)
    measure is then Lebesgue measure for every :math:`\varepsilon`: every long-time average
    :math:`\langle\Phi\rangle = \int\Phi\,dx` is independent of :math:`\varepsilon`, and
    :math:`d\langle\Phi\rangle/d\varepsilon = 0` exactly. The shadowing contribution to that
    derivative need not vanish; the unstable divergence contribution cancels it, which makes
    this map the book's test case for what shadowing omits. Exponents sum to 0; closed-form
    ``jvp``/``vjp`` (:math:`Df = A S`, :math:`S` the shear's Jacobian).

    Parameters
    ----------
    eps : float
        Strength of the shear, the parameter :math:`\varepsilon`.
    """

    autonomous = True
    dim = 2

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        self.eps = parameter(eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps.item():g}"

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        u = x[..., 0] + self.eps * torch.sin(2 * math.pi * x[..., 1]) / (2 * math.pi)
        v = x[..., 1]
        return torch.remainder(torch.stack((2 * u + v, u + v), dim=-1), 1.0)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        shear = self.eps * torch.cos(2 * math.pi * x[..., 1, None])
        u = V[..., 0, :] + shear * V[..., 1, :]  # S V
        return torch.stack((2 * u + V[..., 1, :], u + V[..., 1, :]), dim=-2)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        shear = self.eps * torch.cos(2 * math.pi * x[..., 1, None])
        a = 2 * W[..., 0, :] + W[..., 1, :]  # A^T W, first row
        b = W[..., 0, :] + W[..., 1, :]
        return torch.stack((a, shear * a + b), dim=-2)  # S^T A^T W


class ConjugateCat(Map):
    r"""Arnold's cat map :math:`f(x) = Ax \bmod 1` perturbed by a smooth change of coordinates:

    .. math::  f_\gamma(x) = Ax + \gamma\big(A\,g(x) - g(Ax)\big) \bmod 1, \qquad
               g(x, y) = \frac{1}{2\pi}\begin{pmatrix}\sin 2\pi x\\ 0\end{pmatrix},
               \quad A = \begin{pmatrix} 2 & 1\\ 1 & 1\end{pmatrix}.

    To first order in :math:`\gamma` it is conjugate to the cat map: with
    :math:`h_\gamma = \mathrm{id} + \gamma g`, :math:`h_\gamma\circ f_\gamma = f\circ h_\gamma
    + O(\gamma^2)` (the identity it satisfies). So :math:`h_\gamma` carries its physical
    measure to Lebesgue measure, :math:`\langle\Phi\rangle_\gamma = \int\Phi\circ
    h_\gamma^{-1}\,dx\,dy + O(\gamma^2)`, and at :math:`\gamma = 0`

    .. math::  \frac{d\langle\Phi\rangle}{d\gamma} = -\int\nabla\Phi\cdot g\,dx\,dy

    exactly; for :math:`\Phi = \cos 2\pi x` that is :math:`\int\sin^2 2\pi x\,dx = 1/2`.
    The perturbation :math:`X = Df\,g\circ f^{-1} - g` is a coboundary: the shadowing
    direction is :math:`-g` itself, the unstable divergence of :math:`X^u` telescopes along the
    orbit, and the unstable contribution to the response vanishes, so shadowing alone is the
    whole response (the book's test of :func:`~chaosgrad.response.linear_response`).

    Parameters
    ----------
    gamma : float
        Strength of the perturbation (the exact derivative above holds at 0).
    """

    autonomous = True
    dim = 2

    def __init__(self, gamma: float = 0.0) -> None:
        super().__init__()
        self.gamma = parameter(gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma.item():g}"

    @staticmethod
    def _g(x: Tensor) -> Tensor:
        return torch.stack((torch.sin(2 * math.pi * x[..., 0]) / (2 * math.pi), torch.zeros_like(x[..., 0])), -1)

    @staticmethod
    def _cat(x: Tensor) -> Tensor:
        return torch.stack((2 * x[..., 0] + x[..., 1], x[..., 0] + x[..., 1]), -1)

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        y = self._cat(x)
        return torch.remainder(y + self.gamma * (self._cat(self._g(x)) - self._g(y)), 1.0)


class ExpandingCircle(Map):
    r"""A smooth expanding map of the circle :math:`\mathbb R/\mathbb Z` (a perturbed doubling map):

    .. math::  f(x) = 2x + \gamma + \varepsilon\sin 2\pi x \bmod 1, \qquad
               f'(x) = 2 + 2\pi\varepsilon\cos 2\pi x .

    For :math:`2\pi|\varepsilon| < 1` it is uniformly expanding (:math:`f' \ge 2 - 2\pi|\varepsilon| > 1`),
    a local diffeomorphism of degree 2, and its physical measure has a smooth density, with or
    without additive noise (:class:`Noisy`): the case where the divergence (transfer-operator)
    form of the linear response needs no kernel at all
    (:func:`~chaosgrad.divergence.divergence_derivative`). The identity it satisfies: for
    :math:`\varepsilon = 0` Lebesgue measure is invariant for every :math:`\gamma` (a doubling
    followed by a rotation), with or without Gaussian noise (a convolution keeps the uniform
    density), so every stationary average has :math:`d\langle\Phi\rangle/d\gamma = 0` exactly.
    Closed-form ``jvp`` and parameter derivatives (:math:`\partial_\gamma f = 1`,
    :math:`\partial_\varepsilon f = \sin 2\pi x`).

    Parameters
    ----------
    gamma : float
        The rotation :math:`\gamma`.
    eps : float
        The strength :math:`\varepsilon` of the nonlinearity; :math:`|\varepsilon| < 1/2\pi`.

    Raises
    ------
    ValueError
        If :math:`2\pi|\varepsilon| \ge 1` (the map would not be expanding everywhere).
    """

    autonomous = True
    dim = 1

    def __init__(self, gamma: float = 0.0, eps: float = 0.1) -> None:
        super().__init__()
        if not abs(float(eps)) < 1 / (2 * math.pi):
            raise ValueError(f"ExpandingCircle needs |eps| < 1/(2 pi) = {1 / (2 * math.pi):.4f} to expand "
                             f"everywhere (f' = 2 + 2 pi eps cos 2 pi x > 1); got eps = {float(eps):g}")
        self.gamma = parameter(gamma)
        self.eps = parameter(eps)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma.item():g}, eps={self.eps.item():g}"

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        return torch.remainder(2 * x + self.gamma + self.eps * torch.sin(2 * math.pi * x), 1.0)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return (2 + 2 * math.pi * self.eps * torch.cos(2 * math.pi * x))[..., None] * V

    _vjp = _jvp  # a 1 x 1 Jacobian is its own transpose


class ModifiedSolenoid(Map):
    r"""The modified solenoid of Ni's fast response papers :cite:`ni2020fast,ni2021fast`, in
    :math:`1 + m` dimensions (:math:`m = 20` there):

    .. math::  x_0' = 0.05\,x_0 + 0.1\sum_{i=1}^{m}\cos(5x_i) + \gamma_0, \qquad
               x_i' = 2x_i + \gamma_1(1 + x_0)\sin(2x_i) \bmod 2\pi .

    For small :math:`\gamma_1` every :math:`x_i` doubles (:math:`m` unstable directions) and
    :math:`x_0` contracts by 0.05 (one stable direction): a uniformly hyperbolic attractor
    whose unstable directions, and whose physical measure along them, depend on both
    parameters, so the unstable contribution to the response does not vanish. The observable
    of the papers is :math:`\Phi = x_0^3 + 0.005\sum_i(x_i - \pi)^2`. Closed-form
    ``jvp``/``vjp``: the Jacobian is an arrowhead matrix, a diagonal with a first row and column
    (:meth:`_diagonal`).

    Parameters
    ----------
    gamma0, gamma1 : float
        The parameters (0.1 and 0.1 in the papers).
    m : int
        Number of expanding coordinates.
    """

    autonomous = True

    def __init__(self, gamma0: float = 0.1, gamma1: float = 0.1, m: int = 20) -> None:
        super().__init__()
        if int(m) != m or m < 1:
            raise ValueError(f"m must be a whole number >= 1; got {m}")
        self.dim = int(m) + 1
        self.gamma0 = parameter(gamma0)
        self.gamma1 = parameter(gamma1)

    def extra_repr(self) -> str:
        return f"m={self.dim - 1}, gamma0={self.gamma0.item():g}, gamma1={self.gamma1.item():g}"

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        x0, xi = x[..., :1], x[..., 1:]
        y0 = 0.05 * x0 + 0.1 * torch.cos(5 * xi).sum(-1, keepdim=True) + self.gamma0
        yi = torch.remainder(2 * xi + self.gamma1 * (1 + x0) * torch.sin(2 * xi), 2 * math.pi)
        return torch.cat((y0, yi), -1)

    def _diagonal(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""The Jacobian's pieces at ``x``, each ``(..., m, 1)``: the row :math:`\partial x_0'/\partial x_i
        = -0.5\sin 5x_i`, the column :math:`\partial x_i'/\partial x_0 = \gamma_1\sin 2x_i` and the
        diagonal :math:`\partial x_i'/\partial x_i = 2 + 2\gamma_1(1 + x_0)\cos 2x_i`."""
        x0, xi = x[..., :1, None], x[..., 1:, None]
        return (-0.5 * torch.sin(5 * xi), self.gamma1 * torch.sin(2 * xi),
                2 + 2 * self.gamma1 * (1 + x0) * torch.cos(2 * xi))

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        row, column, diagonal = self._diagonal(x)
        v0, vi = V[..., :1, :], V[..., 1:, :]
        return torch.cat((0.05 * v0 + (row * vi).sum(-2, keepdim=True), column * v0 + diagonal * vi), -2)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        row, column, diagonal = self._diagonal(x)
        w0, wi = W[..., :1, :], W[..., 1:, :]
        return torch.cat((0.05 * w0 + (column * wi).sum(-2, keepdim=True), row * w0 + diagonal * wi), -2)

    def _log_expansion_gradients(self, x: Tensor, E: Tensor, W: Tensor, n: int,
                                 names: list[str]) -> tuple[Tensor, Tensor]:
        r"""Closed form of :func:`~chaosgrad.response.log_expansion_gradients`: with
        :math:`B = E(W^\top Df\,E)^{-1}W^\top`, :math:`\partial\log|\det(W^\top Df\,E)| =
        \operatorname{tr}(B\,\partial Df) = \sum_{ij}B_{ji}\,\partial(Df)_{ij}`, and only the
        arrowhead's entries vary: :math:`\partial_k` of the row entry :math:`-0.5\sin 5x_k` is
        :math:`-2.5\cos 5x_k`, of the column entry :math:`\gamma_1\sin 2x_k` is
        :math:`2\gamma_1\cos 2x_k`, of the diagonal entry :math:`-4\gamma_1(1 + x_0)\sin 2x_k`
        (and :math:`\partial_0` of the diagonal :math:`2\gamma_1\cos 2x_k`); :math:`\partial_{\gamma_1}`
        gives :math:`\sin 2x_k` and :math:`2(1 + x_0)\cos 2x_k`, :math:`\partial_{\gamma_0}` nothing."""
        for name in names:
            if name not in ("gamma0", "gamma1"):
                raise unknown_parameter_error(self, name)
        B = E @ torch.linalg.solve(W.mT @ self.jvp(x, E, n), W.mT)
        b_row, b_column = B[..., 1:, 0], B[..., 0, 1:]  # pair with the row and the column entries
        b_diagonal = torch.diagonal(B[..., 1:, 1:], dim1=-2, dim2=-1)
        x0, xi = x[..., :1], x[..., 1:]
        sin2, cos2 = torch.sin(2 * xi), torch.cos(2 * xi)
        g1 = self.gamma1.detach()
        gk = b_row * (-2.5 * torch.cos(5 * xi)) + b_column * (2 * g1 * cos2) - b_diagonal * (4 * g1 * (1 + x0) * sin2)
        gx = torch.cat(((b_diagonal * 2 * g1 * cos2).sum(-1, keepdim=True), gk), -1)
        d1 = (b_column * sin2 + b_diagonal * 2 * (1 + x0) * cos2).sum(-1)
        grads = [d1 if name == "gamma1" else torch.zeros_like(d1) for name in names]
        return gx, torch.stack(grads, -1) if grads else gx[..., :0]

    @staticmethod
    def observable(x: Tensor) -> Tensor:
        r""":math:`\Phi = x_0^3 + 0.005\sum_i(x_i - \pi)^2`."""
        return x[..., 0] ** 3 + 0.005 * ((x[..., 1:] - math.pi) ** 2).sum(-1)


class Noisy(Map):
    r"""Additive Gaussian noise on any map: :math:`x_{n+1} = f_n(x_n) + \sigma B \xi_n`.

    :math:`\xi_n \sim N(0, I_m)` are drawn from an explicit :class:`torch.Generator`, so a run
    is reproducible from its seed. :math:`B` is the identity (noise in every direction,
    :math:`m = d`) unless ``direction`` gives its ``m`` columns (*foliated* noise, only along
    some directions, e.g. a network's bias). The noise is additive, so the tangent and adjoint
    maps and the parameter derivatives are those of the wrapped map, and the parameters
    :math:`\gamma` are the wrapped map's (same names).

    Parameters
    ----------
    map
        The deterministic map :math:`f`.
    sigma
        Noise amplitude, > 0.
    generator
        Source of the noise; ``None`` makes a new CPU generator seeded with ``seed``.
    seed
        Seed used when ``generator`` is ``None``.
    direction
        Optional ``(dim, m)`` matrix :math:`B` with linearly independent columns (a vector is
        one column).
    """

    def __init__(self, map: Map, sigma: float, generator: torch.Generator | None = None, seed: int = 0,
                 direction: Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(map, Map):
            raise TypeError(f"Noisy wraps a chaosgrad.Map; got {type(map).__name__}")
        self.map = map
        self.dim = map.dim
        self.sigma = check_positive(sigma, "sigma")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        if direction is not None:
            direction = torch.as_tensor(direction, dtype=torch.float64)
            direction = direction[:, None] if direction.ndim == 1 else direction
            if direction.ndim != 2 or direction.shape[0] != map.dim or direction.shape[1] < 1:
                raise ValueError(f"direction must be a (dim, m) matrix with dim = {map.dim}; got shape {tuple(direction.shape)}")
            if int(torch.linalg.matrix_rank(direction)) < direction.shape[1]:
                raise ValueError("direction must have linearly independent columns")
        self.register_buffer("direction", direction)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}" + ("" if self.direction is None else f", m={self.direction.shape[1]}")

    def noise(self, like: Tensor) -> Tensor:
        r"""A draw of :math:`\xi \sim N(0, I_m)` for states shaped like ``like``: shape ``(..., m)``."""
        m = self.dim if self.direction is None else self.direction.shape[1]
        return torch.randn((*like.shape[:-1], m), generator=self.generator, dtype=like.dtype, device=like.device)

    def kick(self, xi: Tensor) -> Tensor:
        r""":math:`B\xi`: the state-space displacement of a noise draw (before the factor :math:`\sigma`)."""
        return xi if self.direction is None else xi @ self.direction.mT

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        return self.map.step(x, n) + self.sigma * self.kick(self.noise(x))

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return self.map._jvp(x, V, n)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        return self.map._vjp(x, W, n)

    def params(self) -> dict[str, Tensor]:
        return self.map.params()

    def param_jvp(self, x: Tensor, dgamma: dict, n: int = 0) -> Tensor:
        return self.map.param_jvp(x, dgamma, n)

    def _param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> dict[str, Tensor]:
        return self.map._param_vjp(x, w, n, keep)

    def _vjp_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.map._vjp_param_vjp(x, w, n, keep)
