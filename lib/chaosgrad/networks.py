r"""Deep random networks as maps: the layer index is time.

.. math::  x_{l+1} = \phi(W_l x_l + b_l), \qquad W_l = \sigma_w G_l, \quad b_l = \sigma_b g_l,

with :math:`G_l` either Gaussian, :math:`(G_l)_{ij} \sim N(0, 1/N)`, or Haar-orthogonal
(every singular value 1, where the Gaussian's mean squared singular value is 1), and
:math:`g_l \sim N(0, I)`. Untied networks draw a fresh
:math:`(G_l, g_l)` for every layer; tied networks (a recurrent network driven by its own
output) reuse layer 0's for every step and are autonomous maps.

Layer :math:`l` is drawn from its own random stream, seeded by ``(seed, l)``: a network of
depth 100 is the first 100 layers of the same network of depth 1000, and a layer can be
regenerated in any order. Drawn layers are kept in a cache of bounded size, and shared by
every network of the same width, weight law and seed (:data:`shared_layers`): the variances
only scale them, so a sweep over :math:`\sigma_w^2` draws each layer once.

The Jacobian of a layer is :math:`\operatorname{diag}(\phi'(a_l))\, W_l` with
:math:`a_l = W_l x_l + b_l`; ``jvp`` and ``vjp`` use it in closed form (one matrix product).
The parameters :math:`\gamma` are the scales ``sigma_w`` and ``sigma_b`` (standard
deviations, the square roots of the variances given to the constructor).

References
----------
B. Poole et al., NeurIPS 29 (2016); S. S. Schoenholz et al., ICLR (2017).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .activations import DERIVATIVE_FROM_OUTPUT
from .activations import activation as _activation
from .estimates import Estimate, fit_line
from .lyapunov import lyapunov_spectrum
from .maps import Map, parameter
from .validation import unknown_parameter_error

__all__ = ["PreactivationNetwork", "RandomNetwork", "measured_top_exponent", "shared_layers", "zero_crossing"]


class LayerStore:
    r"""Standard layers :math:`(G_n, g_n)` shared by the :class:`RandomNetwork`\ s that draw the
    same ones: same width, weight law and seed, whatever their variances and depth.

    A sweep over :math:`\sigma_w^2` or :math:`\sigma_b^2` with one seed (chapter 1's tables
    and phase diagram) then draws each layer once instead of once per network; drawing a
    layer (:math:`N^2` Gaussian numbers) costs more than the step that uses it. The layers are
    the same tensors a network would draw, so results do not change, only the speed.

    At most ``max_bytes`` are kept. When a new layer does not fit, the layers of the seed
    least recently used are dropped (all of them, never those of the seed being drawn); if it
    still does not fit, it is not kept. So a seed keeps its first layers: every network of a
    sweep runs layers 0, 1, 2, ... again, and a first-in-first-out store smaller than the
    sweep would have dropped each layer before the next network needed it.

    Parameters
    ----------
    max_bytes
        The memory for shared layers; 0 shares nothing.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._layers: dict[tuple, dict[int, tuple[Tensor, Tensor]]] = {}  # least recently used seed first
        self._bytes = 0

    def get(self, key: tuple, n: int) -> tuple[Tensor, Tensor] | None:
        """Layer ``n`` of the networks ``key`` (width, weights, seed), or ``None`` if it is not kept."""
        layers = self._layers.get(key)
        if layers is None or n not in layers:
            return None
        self._layers[key] = self._layers.pop(key)  # now the most recently used
        return layers[n]

    def put(self, key: tuple, n: int, layer: tuple[Tensor, Tensor]) -> None:
        """Keep layer ``n`` of the networks ``key`` if it fits (see the class docstring)."""
        size = _nbytes(layer)
        for other in [k for k in self._layers if k != key]:
            if self._bytes + size <= self.max_bytes:
                break
            self._bytes -= sum(_nbytes(dropped) for dropped in self._layers.pop(other).values())
        if self._bytes + size <= self.max_bytes:
            self._layers.setdefault(key, {})[n] = layer
            self._bytes += size

    def clear(self) -> None:
        """Drop every kept layer (to return the memory)."""
        self._layers.clear()
        self._bytes = 0


def _nbytes(layer: tuple[Tensor, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in layer)


#: The layers shared by all :class:`RandomNetwork`\ s of this process: at most 512 MiB, the
#: first 418 layers of width 400 or 267 of width 500. ``shared_layers.clear()`` returns the
#: memory; ``shared_layers.max_bytes = 0`` turns sharing off.
shared_layers = LayerStore(2**29)


class RandomNetwork(Map):
    r"""A deep random network :math:`x_{l+1} = \phi(W_l x_l + b_l)` of width ``width``.

    Parameters
    ----------
    width
        Number of units per layer :math:`N` (the state dimension).
    depth
        Number of layers, or ``None`` for an unbounded network (layers are drawn on demand).
    activation
        ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"linear"``.
    sigma_w2, sigma_b2
        Weight and bias variances: :math:`W_{ij} \sim N(0, \sigma_w^2/N)`,
        :math:`b_i \sim N(0, \sigma_b^2)`.
    weights
        ``"gaussian"`` or ``"orthogonal"`` (:math:`W = \sigma_w O`, :math:`O` Haar-orthogonal).
    tied
        Reuse one layer's weights and biases at every step (a recurrent network).
    seed
        Seed of the weights.
    cache_bytes
        Memory for drawn layers (default 256 MiB; the newest layer is always kept); the
        oldest layers are dropped first and redrawn if needed again. Layers are also looked
        up in, and given to, :data:`shared_layers` unless ``cache_bytes = 0``, which draws
        every layer afresh. Results do not depend on it, only the speed does.

    Examples
    --------
    >>> import torch
    >>> from chaosgrad.networks import RandomNetwork
    >>> net = RandomNetwork(width=4, depth=3, sigma_w2=2.0)
    >>> net.trajectory(torch.ones(4, dtype=torch.float64), 3).shape
    torch.Size([4, 4])
    """

    @property
    def autonomous(self) -> bool:
        """A tied network applies the same layer at every step."""
        return self.tied

    def __init__(
        self,
        width: int,
        depth: int | None = None,
        activation: str = "tanh",
        sigma_w2: float = 1.0,
        sigma_b2: float = 0.0,
        weights: str = "gaussian",
        tied: bool = False,
        seed: int = 0,
        cache_bytes: int = 2**28,
    ) -> None:
        super().__init__()
        if int(width) != width or width < 1:
            raise ValueError(f"width must be a whole number >= 1; got width = {width}")
        if depth is not None and (int(depth) != depth or depth < 1):
            raise ValueError(f"depth must be a whole number >= 1 or None; got depth = {depth}")
        if not (math.isfinite(sigma_w2) and sigma_w2 > 0):
            raise ValueError(f"sigma_w2 must be a finite number > 0; got sigma_w2 = {sigma_w2}")
        if not (math.isfinite(sigma_b2) and sigma_b2 >= 0):
            raise ValueError(f"sigma_b2 must be a finite number >= 0; got sigma_b2 = {sigma_b2}")
        if weights not in ("gaussian", "orthogonal"):
            raise ValueError(f"weights must be 'gaussian' or 'orthogonal'; got {weights!r}")
        self.dim = int(width)
        self.depth = None if depth is None else int(depth)
        self.activation = activation
        self.phi, self.dphi = _activation(activation)
        self._dphi_of_phi = DERIVATIVE_FROM_OUTPUT[activation]
        self.sigma_w = parameter(math.sqrt(sigma_w2))
        self.sigma_b = parameter(math.sqrt(sigma_b2))
        self.weights = weights
        self.tied = bool(tied)
        self.seed = int(seed)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def extra_repr(self) -> str:
        return (
            f"width={self.dim}, depth={self.depth}, activation={self.activation!r}, "
            f"sigma_w2={self.sigma_w.item() ** 2:g}, sigma_b2={self.sigma_b.item() ** 2:g}, "
            f"weights={self.weights!r}, tied={self.tied}, seed={self.seed}"
        )

    # -- the layers ---------------------------------------------------------------------
    def standard_layer(self, n: int) -> tuple[Tensor, Tensor]:
        r"""The unscaled layer :math:`(G_n, g_n)`: ``W_n = sigma_w * G_n``, ``b_n = sigma_b * g_n``."""
        if int(n) != n or n < 0 or (self.depth is not None and n >= self.depth):
            top = "infinity" if self.depth is None else self.depth - 1
            raise ValueError(f"layer index must be a whole number in 0..{top}; got n = {n}")
        n = 0 if self.tied else int(n)
        if n in self._cache:
            return self._cache[n]
        key = (self.dim, self.weights, self.seed)  # every network with these draws the same layers
        layer = shared_layers.get(key, n) if self.cache_bytes > 0 else None
        if layer is None:
            layer = self._draw(n)
            if self.cache_bytes > 0:
                shared_layers.put(key, n, layer)
        self._cache[n] = layer
        N = self.dim
        while len(self._cache) > 1 and len(self._cache) * (N * N + N) * 8 > self.cache_bytes:
            del self._cache[next(iter(self._cache))]  # first in, first out; keep the newest
        return layer

    def _draw(self, n: int) -> tuple[Tensor, Tensor]:
        r"""Draw :math:`(G_n, g_n)` from the stream seeded by ``(seed, n)``."""
        rng = np.random.default_rng([self.seed, n])  # NumPy draws also work inside torch.func.vmap
        N = self.dim
        G = torch.from_numpy(rng.standard_normal((N, N)))
        if self.weights == "orthogonal":
            G, R = torch.linalg.qr(G)  # Haar measure once the signs of diag(R) are fixed
            G = G * torch.sign(torch.diagonal(R))
        else:
            G = G / math.sqrt(N)
        g = torch.from_numpy(rng.standard_normal(N))
        return G, g

    def layer(self, n: int) -> tuple[Tensor, Tensor]:
        """Weights and biases ``(W_n, b_n)`` of layer ``n``, shapes ``(N, N)`` and ``(N,)``."""
        G, g = self.standard_layer(n)
        return self.sigma_w * G, self.sigma_b * g

    def preactivation(self, x: Tensor, n: int = 0) -> Tensor:
        r""":math:`a_n = W_n x + b_n` for states ``x`` of shape ``(..., N)``."""
        G, g = self.standard_layer(n)
        return self.sigma_w * (x @ G.mT) + self.sigma_b * g

    # -- the map ------------------------------------------------------------------------
    def step(self, x: Tensor, n: int = 0) -> Tensor:
        return self.phi(self.preactivation(x, n))

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return self._step_jvp(x, V, n)[1]

    def _step_jvp(self, x: Tensor, V: Tensor, n: int) -> tuple[Tensor, Tensor]:
        G, _ = self.standard_layer(n)
        y = self.phi(self.preactivation(x, n))
        return y, _matmul_batched(G, V).mul_((self.sigma_w * self._dphi_of_phi(y)).unsqueeze(-1))

    def param_jvp(self, x: Tensor, dgamma: dict, n: int = 0) -> Tensor:
        r"""Closed form of :meth:`Map.param_jvp`:
        :math:`\phi'(a_n) \odot (\delta\sigma_w\, G_n x + \delta\sigma_b\, g_n)`."""
        x = self.check_state(x)
        unknown = set(dgamma) - set(self.params())
        if unknown:
            raise unknown_parameter_error(self, unknown)
        G, g = self.standard_layer(n)
        direction = torch.zeros_like(x)
        if "sigma_w" in dgamma:
            direction = direction + torch.as_tensor(dgamma["sigma_w"], dtype=x.dtype) * (x @ G.mT)
        if "sigma_b" in dgamma:
            direction = direction + torch.as_tensor(dgamma["sigma_b"], dtype=x.dtype) * g
        return self._dphi_of_phi(self.step(x, n)) * direction

    def _step_param_jvp(self, x: Tensor, parameter: str, n: int) -> tuple[Tensor, Tensor]:
        G, g = self.standard_layer(n)
        Gx = x @ G.mT
        y = self.phi(self.sigma_w * Gx + self.sigma_b * g)
        if parameter not in ("sigma_w", "sigma_b"):
            raise unknown_parameter_error(self, parameter)
        return y, self._dphi_of_phi(y) * (Gx if parameter == "sigma_w" else g)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        G, _ = self.standard_layer(n)
        d = self.sigma_w * self.dphi(self.preactivation(x, n))
        return _matmul_batched(G.mT, d[..., :, None] * W)


def _matmul_batched(A: Tensor, V: Tensor) -> Tensor:
    """``A @ V`` for one ``(N, N)`` matrix and a batch ``V`` of shape ``(..., N, k)``, as one GEMM.

    Broadcasting ``A @ V`` runs one matrix product per batch member, each reading all of
    ``A``; with ``k = 1`` these are matrix-vector products limited by memory bandwidth (an
    ensemble of 128 vectors at ``N = 800`` runs 17 times slower than one GEMM, 4 vectors at
    ``N = 256`` 4 times). For wide ``V`` (``k > 8``) the broadcast products are already
    GEMMs and the copy would cost more than it saves.
    """
    if V.ndim <= 2 or V.shape[-1] > 8:
        return A @ V
    N = V.shape[-2]
    flat = V.movedim(-2, 0).reshape(N, -1)  # (N, batch * k)
    return (A @ flat).reshape(A.shape[0], *V.shape[:-2], V.shape[-1]).movedim(0, -2)


class PreactivationNetwork(Map):
    r"""A deep random network in pre-activation form with one shared bias :math:`\beta`:

    .. math::  a_{l+1} = \sigma_w G_l\, \phi(a_l) + \beta\,\mathbf 1, \qquad (G_l)_{ij} \sim N(0, 1/N).

    The bias moves every layer along the same fixed direction :math:`\mathbf 1`,
    :math:`\partial_\beta f_l = \mathbf 1`, so noise along that direction alone (foliated noise,
    ``Noisy(net, sigma, direction=torch.ones(N))``) is enough for kernel differentiation with
    respect to :math:`\beta` :cite:`ni2025ergodic`. The layers :math:`G_l` are those of
    :class:`RandomNetwork` with the same ``seed`` (layer :math:`l` from the stream
    ``(seed, l)``). Closed-form ``jvp`` (:math:`\sigma_w G_l \operatorname{diag}\phi'(a_l)`),
    ``vjp`` and parameter derivatives (:math:`G_l\phi(a_l)` for ``sigma_w``, :math:`\mathbf 1`
    for ``bias``).

    Parameters
    ----------
    width
        Number of units :math:`N`.
    depth
        Number of layers (steps), or ``None``.
    sigma_w2
        Weight variance :math:`\sigma_w^2`.
    bias
        The shared bias :math:`\beta`.
    activation
        As :class:`RandomNetwork`.
    seed
        Seed of the weights.
    """

    def __init__(self, width: int, depth: int | None = None, sigma_w2: float = 1.0, bias: float = 0.0,
                 activation: str = "tanh", seed: int = 0) -> None:
        super().__init__()
        source = RandomNetwork(width, depth, activation, sigma_w2=sigma_w2, seed=seed)
        self.dim, self.depth, self.activation, self.seed = source.dim, source.depth, activation, seed
        self.phi, self.dphi = source.phi, source.dphi
        self._layers = [source]  # a list, so that source's sigma_w and sigma_b are not parameters here
        self.sigma_w = parameter(math.sqrt(sigma_w2))
        if not math.isfinite(bias):
            raise ValueError(f"bias must be a finite number; got bias = {bias}")
        self.bias = parameter(bias)

    def extra_repr(self) -> str:
        return (f"width={self.dim}, depth={self.depth}, sigma_w2={self.sigma_w.item() ** 2:g}, "
                f"bias={self.bias.item():g}, activation={self.activation!r}, seed={self.seed}")

    def weights(self, n: int) -> Tensor:
        """The unscaled weights :math:`G_n`, shape ``(N, N)``."""
        return self._layers[0].standard_layer(n)[0]

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        return self.sigma_w * (self.phi(x) @ self.weights(n).mT) + self.bias

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return self.sigma_w * (self.weights(n) @ (self.dphi(x)[..., None] * V))

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        return self.dphi(x)[..., None] * (self.sigma_w * (self.weights(n).mT @ W))

    def param_jvp(self, x: Tensor, dgamma: dict, n: int = 0) -> Tensor:
        r"""Closed form: :math:`\delta\sigma_w\, G_n\phi(a) + \delta\beta\,\mathbf 1`."""
        x = self.check_state(x)
        unknown = set(dgamma) - set(self.params())
        if unknown:
            raise unknown_parameter_error(self, unknown)
        out = torch.zeros_like(x)
        if "sigma_w" in dgamma:
            out = out + torch.as_tensor(dgamma["sigma_w"], dtype=x.dtype) * (self.phi(x) @ self.weights(n).mT)
        if "bias" in dgamma:
            out = out + torch.as_tensor(dgamma["bias"], dtype=x.dtype)
        return out

    def _step_param_jvp(self, x: Tensor, parameter: str, n: int) -> tuple[Tensor, Tensor]:
        if parameter not in ("sigma_w", "bias"):
            raise unknown_parameter_error(self, parameter)
        Gphi = self.phi(x) @ self.weights(n).mT
        y = self.sigma_w * Gphi + self.bias
        return y, (Gphi if parameter == "sigma_w" else torch.ones_like(y))


def measured_top_exponent(
    sigma_w2: float,
    sigma_b2: float,
    width: int = 500,
    layers: int = 600,
    warmup: int = 30,
    inputs: int = 4,
    activation: str = "tanh",
    weights: str = "gaussian",
    tied: bool = False,
    seed: int = 0,
) -> tuple[float, float]:
    r"""The top Lyapunov exponent per layer of one random network, measured by Benettin/QR.

    ``inputs`` standard-normal inputs go through the same network (``warmup`` layers
    discarded, then ``layers`` layers measured); returns :math:`(\lambda_1, \text{stderr})`,
    the error bar by batch means over blocks of layers. Compare with
    :func:`chaosgrad.meanfield.top_exponent`.
    """
    net = RandomNetwork(width, None, activation, sigma_w2, sigma_b2, weights, tied, seed)
    x0 = torch.randn(inputs, width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    result = lyapunov_spectrum(net, x0, layers, k=1, warmup=warmup)
    return float(result.exponents[0]), float(result.stderr[0])


def zero_crossing(x: Sequence[float], y: Sequence[float], yerr: Sequence[float]) -> Estimate:
    r"""Where the weighted least-squares line through the points ``(x, y ± yerr)`` crosses zero.

    Used for the measured order-to-chaos line: ``x`` are weight variances around the
    transition, ``y`` the measured top exponents and ``yerr`` their standard errors. With
    the line :math:`y = a + b x` from :func:`chaosgrad.estimates.fit_line`, the crossing is
    :math:`x_0 = -a/b` and its error follows from the covariance of :math:`(a, b)` by the
    delta method, :math:`\operatorname{var} x_0 = (\operatorname{var} a + 2 x_0
    \operatorname{cov}(a, b) + x_0^2 \operatorname{var} b)/b^2`.

    Raises
    ------
    ValueError
        If ``y`` does not change sign (the points do not bracket a crossing), or as
        :func:`~chaosgrad.estimates.fit_line` for bad lengths or error bars.
    """
    y_arr = np.asarray(y, dtype=float)
    if not (y_arr.min() < 0 < y_arr.max()):
        raise ValueError(f"the values do not change sign, so they bracket no crossing: {y_arr.tolist()}")
    a, b, cov = fit_line(x, y_arr, yerr)
    x0 = -a.value / b.value
    variance = (a.stderr**2 + 2 * x0 * cov + x0**2 * b.stderr**2) / b.value**2
    return Estimate(x0, math.sqrt(max(variance, 0.0)))
