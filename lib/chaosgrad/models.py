r"""Trainable maps: a residual neural network whose every weight is a parameter of the map.

:class:`NeuralMap` is the explicit Euler step of a learned vector field,

.. math::  x_{n+1} = f(x_n; \theta) = x_n + \Delta t\; c \odot \mathrm{MLP}_\theta\big((x_n - m) \oslash s\big),

where :math:`m` and :math:`s` standardise the state (``in_shift``, ``in_scale``), :math:`c`
(``out_scale``) is the typical size of :math:`(x_{n+1} - x_n)/\Delta t`, and the network is

.. math::  z_0 = u, \qquad a_l = W_l z_l + b_l, \qquad z_{l+1} = \tanh(a_l) \quad (l < L),
           \qquad \mathrm{MLP}_\theta(u) = a_L,

with :math:`L` hidden layers and a linear output layer :math:`a_L \in \mathbb R^d`. Every
:math:`W_l` and :math:`b_l` is a parameter of the :class:`~chaosgrad.maps.Map` (``W0, b0, W1, b1,
...``), so Lyapunov spectra, NILSAS, kernel differentiation and backpropagation through time all
apply to it, and ``param_vjp`` returns the gradient with respect to all :math:`P` of them.

All derivatives are closed forms sharing one forward pass (the activations :math:`z_l` and
:math:`\tanh' = 1 - z_{l+1}^2`), with :math:`D := \operatorname{diag}`:

- tangent map: :math:`Df\,V = V + D(\Delta t\,c)\, W_L D(1 - z_L^2) W_{L-1} \cdots D(1 - z_1^2) W_0 D(1/s) V`,
  evaluated from the input end, one matrix product per layer for all members and columns;
- adjoint map: the transpose, evaluated from the output end: with
  :math:`g_L = \Delta t\, c \odot w` and :math:`g_{l-1} = (W_l^\top g_l) \odot (1 - z_l^2)`,
  :math:`Df^\top w = w + (W_0^\top g_0) \oslash s`;
- parameter gradients: :math:`\partial\langle w, f\rangle/\partial W_l = g_l z_l^\top` and
  :math:`\partial\langle w, f\rangle/\partial b_l = g_l`; summed over members, the weight gradient
  of a layer is one matrix product :math:`G_l^\top Z_l` of the stacked :math:`g_l` and :math:`z_l`,
  so the gradient with respect to every parameter costs about two forward passes, whatever
  :math:`P`.

References
----------
:cite:`lecun2012efficient` Y. LeCun et al., Efficient BackProp (2012): the initialisation variance
:math:`1/\text{fan-in}` for tanh layers and the standardised inputs.
:cite:`glorot2010understanding` X. Glorot, Y. Bengio, AISTATS (2010).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .maps import Map, parameter
from .validation import check_positive, unknown_parameter_error

__all__ = ["NeuralMap"]


class NeuralMap(Map):
    r"""A residual tanh network as an autonomous map:
    :math:`x_{n+1} = x_n + \Delta t\, c \odot \mathrm{MLP}_\theta((x_n - m)\oslash s)`.

    The network has hidden layers of the given ``widths`` (tanh) and a linear output layer of
    size ``dim``; its weights :math:`W_l` (shape ``(out, in)``) and biases :math:`b_l` are the
    map's parameters ``W0, b0, W1, b1, ...`` in layer order, :math:`P = \sum_l (n_l + 1)
    n_{l+1}` numbers for the layer sizes :math:`n = (d, \text{widths}, d)` (995 for ``dim = 3``,
    ``widths = (32, 24)``). The scalings :math:`m, s, c` are buffers (constants, not
    parameters); :meth:`from_orbit` sets them from data.

    Initialisation, from a :class:`torch.Generator` seeded by ``seed`` (the same seed gives
    the same map): hidden weights LeCun-normal, :math:`(W_l)_{ij} \sim N(0, 1/n_l)`, which keeps
    the tanh pre-activations of standardised inputs of order one without saturating them
    :cite:`lecun2012efficient`; the output weights are LeCun-normal times ``output_gain``
    (0.1 by default) and every bias is zero. The network's output is then of order
    ``output_gain``, so the untrained map is near the identity, :math:`|f(x) - x| \approx
    \Delta t\, c \cdot \text{output\_gain}`, while every parameter still has a nonzero gradient
    (a zero output layer would make the gradients of all hidden layers vanish).

    Every derivative is a closed form (see :mod:`chaosgrad.models`): ``jvp``/``vjp`` for
    ensembles ``(..., dim)`` and columns ``(..., dim, k)``, ``param_jvp`` for a dictionary of
    directions, ``param_vjp`` per member or summed over members (one matrix product per layer),
    and the fused :meth:`_step_jvp`, :meth:`_step_param_vjp` and :meth:`_vjp_param_vjp` that
    share one forward pass.

    The map is the Euler step of the field :math:`c \odot \mathrm{MLP}_\theta`, not the exact
    time-:math:`\Delta t` map of a flow, so ``is_flow`` is False: NILSAS treats it as a map.

    Parameters
    ----------
    dim
        Length :math:`d` of the state, >= 1.
    widths
        Widths of the hidden tanh layers, whole numbers >= 1, e.g. ``(32, 24)``; ``()`` gives
        the affine map :math:`x + \Delta t\, c \odot (W_0 u + b_0)`.
    dt
        The Euler step :math:`\Delta t > 0`.
    in_shift, in_scale, out_scale
        :math:`m` (finite), :math:`s` and :math:`c` (finite, > 0): numbers or tensors of shape
        ``(dim,)``.
    seed
        Seed of the initial weights.
    output_gain
        Scale of the initial output weights relative to LeCun-normal, finite and >= 0.

    Raises
    ------
    ValueError
        For ``dim < 1``, widths that are not whole numbers >= 1, ``dt <= 0``, scales that are
        not finite and positive, a shift that is not finite, or a scale of the wrong shape.

    See Also
    --------
    chaosgrad.networks.RandomNetwork : random (untrained) networks, parametrised by scales.
    chaosgrad.gradients.Line : the map restricted to a line in parameter space.

    Examples
    --------
    >>> import torch
    >>> from chaosgrad.models import NeuralMap
    >>> net = NeuralMap(3, widths=(32, 24), dt=0.01, seed=0)
    >>> sum(p.numel() for p in net.params().values())
    995
    >>> list(net.params())
    ['W0', 'b0', 'W1', 'b1', 'W2', 'b2']
    """

    autonomous = True

    def __init__(self, dim: int, widths: Sequence[int] = (32, 24), dt: float = 0.01, *, in_shift: Any = 0.0,
                 in_scale: Any = 1.0, out_scale: Any = 1.0, seed: int = 0, output_gain: float = 0.1) -> None:
        super().__init__()
        if not _whole_positive(dim):
            raise ValueError(f"dim must be a whole number >= 1 (the length of the state); got dim = {dim!r}")
        self.dim = int(dim)
        self.widths = _check_widths(widths)
        self.dt = check_positive(dt, "dt")
        output_gain = float(output_gain)
        if not math.isfinite(output_gain) or output_gain < 0:
            raise ValueError(f"output_gain must be a finite number >= 0; got output_gain = {output_gain}")
        self.register_buffer("in_shift", self._scale(in_shift, "in_shift", positive=False))
        self.register_buffer("in_scale", self._scale(in_scale, "in_scale"))
        self.register_buffer("out_scale", self._scale(out_scale, "out_scale"))
        self.seed = int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        sizes = (self.dim, *self.widths, self.dim)
        for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            gain = output_gain if l == len(self.widths) else 1.0
            W = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64) * (gain / math.sqrt(fan_in))
            setattr(self, f"W{l}", parameter(W))
            setattr(self, f"b{l}", parameter(torch.zeros(fan_out, dtype=torch.float64)))

    @classmethod
    def from_orbit(cls, orbit: Any, widths: Sequence[int] = (32, 24), dt: float = 0.01, **options: Any) -> NeuralMap:
        r"""A :class:`NeuralMap` scaled to an orbit of the system it will learn.

        :math:`m` and :math:`s` are the mean and standard deviation (population, ``correction
        = 0``) of every state of ``orbit``, coordinate by coordinate; :math:`c` is the standard
        deviation of the one-step differences :math:`(x_{n+1} - x_n)/\Delta t`. Then the
        network's inputs are standardised and the one-step target
        :math:`(x_{n+1} - x_n)/(\Delta t\, c)` is of order one.

        Parameters
        ----------
        orbit
            States of shape ``(steps + 1, ..., dim)`` with ``steps >= 1``, consecutive along
            the first axis (as :meth:`Map.trajectory <chaosgrad.maps.Map.trajectory>` returns);
            other leading axes are independent orbits.
        widths, dt
            As for :class:`NeuralMap`.
        **options
            ``seed``, ``output_gain`` (as for :class:`NeuralMap`).

        Returns
        -------
        NeuralMap with ``dim = orbit.shape[-1]`` and the scalings set from ``orbit``.

        Raises
        ------
        ValueError
            For fewer than two states, a non-finite orbit, or a coordinate that does not
            vary (a zero standard deviation cannot standardise it).
        """
        orbit = torch.as_tensor(orbit, dtype=torch.float64)
        if orbit.ndim < 2 or orbit.shape[0] < 2:
            raise ValueError("orbit must have shape (steps + 1, ..., dim) with at least two consecutive states "
                             f"along the first axis; got shape {tuple(orbit.shape)}")
        if not bool(torch.isfinite(orbit).all()):
            raise ValueError("orbit contains inf or NaN: scale the map to a finite orbit")
        dt = check_positive(dt, "dt")
        states = orbit.reshape(-1, orbit.shape[-1])
        rates = ((orbit[1:] - orbit[:-1]) / dt).reshape(-1, orbit.shape[-1])
        for name, t in (("state", states), ("one-step difference", rates)):
            flat = t.std(0, correction=0) == 0
            if bool(flat.any()):
                raise ValueError(f"the {name} of orbit does not vary in coordinate(s) "
                                 f"{flat.nonzero().flatten().tolist()}, so it cannot be standardised: "
                                 "pass a longer orbit, or construct NeuralMap with in_scale/out_scale directly")
        return cls(orbit.shape[-1], widths, dt, in_shift=states.mean(0), in_scale=states.std(0, correction=0),
                   out_scale=rates.std(0, correction=0), **options)

    def _scale(self, value: Any, name: str, positive: bool = True) -> Tensor:
        """``value`` as a float64 tensor of shape ``(dim,)``, finite (and > 0 if ``positive``)."""
        t = torch.as_tensor(value, dtype=torch.float64)
        if t.shape not in ((), (self.dim,)):
            raise ValueError(f"{name} must be a number or a tensor of shape ({self.dim},); got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()) or (positive and not bool((t > 0).all())):
            raise ValueError(f"{name} must be finite{' and > 0' if positive else ''} in every coordinate; "
                             f"got {name} = {t.tolist()}")
        return t.expand(self.dim).clone()

    def extra_repr(self) -> str:
        P = sum(p.numel() for p in self.params().values())
        return f"dim={self.dim}, widths={self.widths}, dt={self.dt:g}, parameters={P}, seed={self.seed}"

    # -- the network --------------------------------------------------------------------
    def _layers(self, params: Mapping[str, Tensor] | None = None) -> list[tuple[Tensor, Tensor]]:
        """``[(W0, b0), (W1, b1), ...]``: those named in ``params``, the others read from the
        module's parameter table on every call, so that :func:`torch.func.functional_call`
        (which swaps the entries of that table) can substitute them. Reading the table directly
        skips ``nn.Module.__getattr__``, about a quarter of a step's time for the small networks
        of chapter 7."""
        table = self._parameters if not params else {**self._parameters, **params}
        return [(table[f"W{l}"], table[f"b{l}"]) for l in range(len(self.widths) + 1)]

    def _scales(self) -> tuple[Tensor, Tensor, Tensor]:
        r"""The buffers :math:`(m, s, c)` (``in_shift``, ``in_scale``, ``out_scale``), read from the
        module's buffer table as :meth:`_layers` reads the parameters (``nn.Module.__getattr__``
        costs about a tenth of a step here)."""
        table = self._buffers
        return table["in_shift"], table["in_scale"], table["out_scale"]

    def _forward(self, x: Tensor, layers: list[tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, list[Tensor]]:
        r"""The step and the inputs :math:`z_0 = u, z_1, \dots, z_L` of every layer, with the
        weights ``layers`` (default: the map's own, :meth:`_layers`)."""
        layers = self._layers() if layers is None else layers
        shift, scale, out_scale = self._scales()
        z = (x - shift) / scale
        inputs = [z]
        for W, b in layers[:-1]:
            z = torch.tanh(F.linear(z, W, b))
            inputs.append(z)
        W, b = layers[-1]
        return x + (self.dt * out_scale) * F.linear(z, W, b), inputs

    def _reverse(self, inputs: list[Tensor], G: Tensor, state: bool) -> tuple[list[Tensor], Tensor | None]:
        r"""Backpropagate covectors ``G`` of shape ``(..., k, dim)`` (rows) from the output.

        Returns the cotangents :math:`g_l` of every pre-activation :math:`a_l` (``(..., k,
        n_{l+1})``, the first :math:`g_L = \Delta t\, c \odot G`) and, if ``state``, the state
        part :math:`Df^\top G - G = (W_0^\top g_0) \oslash s` (else ``None``)."""
        layers = self._layers()
        _, scale, out_scale = self._scales()
        g = G * (self.dt * out_scale)
        cotangents: list[Tensor] = [g] * len(layers)
        for l in range(len(layers) - 1, 0, -1):
            g = (g @ layers[l][0]) * (1 - inputs[l] ** 2).unsqueeze(-2)
            cotangents[l - 1] = g
        return cotangents, (g @ layers[0][0]) / scale if state else None

    def _gradients(self, inputs: list[Tensor], cotangents: list[Tensor], keep: int) -> dict[str, Tensor]:
        r""":math:`\sum g_l z_l^\top` and :math:`\sum g_l` over the members after the first
        ``keep`` ensemble axes, one batched matrix product per layer (``cotangents`` as
        :meth:`_reverse` returns them for one row, ``k = 1``)."""
        batch = inputs[0].shape[:-1]
        kept = batch[:keep]
        grads = {}
        for l, (z, g) in enumerate(zip(inputs, cotangents)):
            z = z.reshape(kept.numel(), -1, z.shape[-1])
            g = g.reshape(kept.numel(), -1, g.shape[-1])
            grads[f"W{l}"] = torch.bmm(g.mT, z).reshape(*kept, g.shape[-1], z.shape[-1])
            grads[f"b{l}"] = g.sum(1).reshape(*kept, g.shape[-1])
        return grads

    # -- the map and its derivatives ------------------------------------------------------
    def step(self, x: Tensor, n: int = 0) -> Tensor:
        """One Euler step of the network's field, for states ``(..., dim)`` (``n`` is ignored)."""
        return self._forward(x)[0]

    def _step_jvp(self, x: Tensor, V: Tensor, n: int) -> tuple[Tensor, Tensor]:
        r"""(:math:`f(x)`, :math:`Df(x)\,V`) sharing one forward pass; the tangent pass runs from the input
        layer, one matrix product per layer for all members and columns."""
        layers = self._layers()
        y, inputs = self._forward(x, layers)
        _, scale, out_scale = self._scales()
        T = V.mT / scale  # rows (..., k, dim): each layer is one matrix product
        for l, (W, _) in enumerate(layers[:-1]):
            T = (T @ W.mT) * (1 - inputs[l + 1] ** 2).unsqueeze(-2)
        T = (T @ layers[-1][0].mT) * (self.dt * out_scale)
        return y, V + T.mT

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        return self._step_jvp(x, V, n)[1]

    def _call_with(self, params: Mapping[str, Tensor], x: Tensor, n: int) -> Tensor:
        """:meth:`step` with the parameters named in ``params`` in place of the map's own: the
        same operations on the given tensors, without the swapping of the module's tables by
        :func:`torch.func.functional_call` (a tenth of an iteration of :func:`~chaosgrad.learning.fit_one_step`)."""
        return self._forward(x, self._layers(params))[0]

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        r""":math:`Df(x)^\top W` for columns ``W`` ``(..., dim, k)``: one forward pass, one reverse pass."""
        _, inputs = self._forward(x)
        return W + self._reverse(inputs, W.mT, state=True)[1].mT

    def param_jvp(self, x: Tensor, dgamma: dict[str, Any], n: int = 0) -> Tensor:
        r"""Closed form of :meth:`Map.param_jvp <chaosgrad.maps.Map.param_jvp>`, forward through
        the layers: :math:`\delta a_l = W_l\,\delta z_l + \delta W_l\, z_l + \delta b_l`,
        :math:`\delta z_{l+1} = (1 - z_{l+1}^2) \odot \delta a_l`, :math:`\delta z_0 = 0`;
        returns :math:`\Delta t\, c \odot \delta a_L`, shape ``(..., dim)``. A direction may be
        a number (every entry of that parameter) or a tensor of the parameter's shape."""
        x = self.check_state(x)
        params = self.params()
        unknown = set(dgamma) - set(params)
        if unknown:
            raise unknown_parameter_error(self, unknown)
        delta = {k: torch.as_tensor(v, dtype=x.dtype).expand_as(params[k]) for k, v in dgamma.items()}
        z = (x - self.in_shift) / self.in_scale
        dz = torch.zeros_like(x)
        layers = self._layers()
        for l, (W, b) in enumerate(layers):
            a = F.linear(z, W, b)
            da = dz @ W.mT if l else torch.zeros_like(a)  # the input u does not depend on the parameters
            if f"W{l}" in delta:
                da = da + z @ delta[f"W{l}"].mT
            if f"b{l}" in delta:
                da = da + delta[f"b{l}"]
            if l < len(layers) - 1:
                z = torch.tanh(a)
                dz = da * (1 - z**2)
        return (self.dt * self.out_scale) * da

    def _param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> dict[str, Tensor]:
        return self._step_param_vjp(x, w, n, keep)[1]

    def _step_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        r"""(:math:`f(x)`, the gradients :math:`\sum g_l z_l^\top` and :math:`\sum g_l` of
        :math:`\langle w, f\rangle` for every parameter) from one forward and one reverse pass, summed over
        the members after the first ``keep`` ensemble axes (see :meth:`Map.param_vjp
        <chaosgrad.maps.Map.param_vjp>`)."""
        y, _, grads = self._backpropagate(x, w, keep, state=False)
        return y, grads

    def _vjp_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        r"""(:math:`Df(x)^\top w`, the parameter gradients of :math:`\langle w, f\rangle`) from one shared
        reverse pass: one step of backpropagation with respect to the state and every parameter."""
        _, pulled, grads = self._backpropagate(x, w, keep, state=True)
        return pulled, grads

    def _backpropagate(self, x: Tensor, w: Tensor, keep: int, state: bool) -> tuple[Tensor, Tensor | None, dict]:
        r"""(:math:`f(x)`, :math:`Df^\top w` if ``state`` else ``None``, the parameter gradients) for one
        covector ``w`` per member: one forward pass and one reverse pass."""
        x, w = torch.broadcast_tensors(x, w)
        y, inputs = self._forward(x)
        cotangents, pulled = self._reverse(inputs, w.unsqueeze(-2), state)
        grads = self._gradients(inputs, [g.squeeze(-2) for g in cotangents], keep)
        return y, None if pulled is None else w + pulled.squeeze(-2), grads


def _check_widths(widths: Any) -> tuple[int, ...]:
    """``widths`` as a tuple of whole numbers >= 1, or a ValueError naming the fix."""
    message = f"widths must be a sequence of whole numbers >= 1 (the hidden layer sizes, e.g. (32, 24)); got {widths!r}"
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise ValueError(message)
    for width in widths:
        if not _whole_positive(width):
            raise ValueError(message)
    return tuple(int(width) for width in widths)


def _whole_positive(value: Any) -> bool:
    """Whether ``value`` is a whole number >= 1 (an int, NumPy integer or whole float; not a bool)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and value == int(value) >= 1)
