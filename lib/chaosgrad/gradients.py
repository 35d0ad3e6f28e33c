r"""Gradients with respect to every parameter of a map, and what computing them cost.

A network is trained with respect to all of its weights at once, so the derivative
estimators of chaosgrad (:func:`~chaosgrad.derivatives.backprop_derivative`,
:func:`~chaosgrad.kernel.kernel_derivative`, :func:`~chaosgrad.kernel.path_kernel_derivative`,
:func:`~chaosgrad.shadowing.nilsas`) take ``parameter=None`` (every parameter of
:meth:`Map.params <chaosgrad.maps.Map.params>`, scalar or tensor) or a list of names, and then
return a :class:`Gradient`: for each parameter a tensor of its shape, with an elementwise
standard error over independent samples (paths, members, groups of paths or blocks). Every
one of them is reverse mode, so its cost does not grow with the number of parameters
:math:`P`, as backpropagation's does not.

The cost of an estimate is counted, not timed (:class:`Cost`): how many times the map was
stepped, and how many tangent (jvp) and adjoint (vjp) products, with respect to the state and
to the parameters, were taken, each counted per state (one ensemble member) and per vector.
:func:`counted` wraps a map so that every call is counted; :func:`average_gradient` does it for
every method it dispatches to, so that estimators can be compared at equal cost.

:class:`Line` restricts a map to the one-parameter family :math:`\gamma_0 + t\,v`: the
derivative with respect to :math:`t` at 0 is the directional derivative
:math:`\langle \nabla_\gamma J, v\rangle`, which is how the all-parameter estimators are
tested against the scalar ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from .estimates import Estimate
from .maps import Map, parameter
from .validation import no_parameters_error, unknown_parameter_error

__all__ = ["Cost", "Gradient", "Line", "METHODS", "average_gradient", "counted", "parameter_names", "random_directions"]


#: States per reverse-mode call when the all-parameter estimators (kernel differentiation,
#: backpropagation) take the parameter vjps of many stored steps at once (autonomous maps):
#: enough to amortise the per-call overhead, few enough that the reverse pass's activations
#: (states x the widest layer) stay in cache. On a NeuralMap with 256 paths
#: (benchmarks/bench_gradients.py), 2**10 states per call against all 200 steps in one call:
#: kernel differentiation 2.9 instead of 3.3 simulations at P = 995, 4.0 instead of 5.8 at
#: P = 20,723.
REVERSE_CHUNK_STATES = 2**10


def parameter_names(map: Map, parameter: str | Iterable[str] | None) -> list[str]:
    """The parameters an estimator differentiates: ``None`` for every parameter of ``map``
    (in the order of :meth:`Map.params <chaosgrad.maps.Map.params>`), a name, or a list of
    names.

    Raises
    ------
    KeyError
        For a name that ``map`` does not have (the message lists those it has).
    ValueError
        For an empty list, a name given twice, or a map without parameters.
    """
    params = map.params()
    if parameter is None:
        if not params:
            raise no_parameters_error(map)
        return list(params)
    names = [parameter] if isinstance(parameter, str) else list(parameter)
    if not names:
        raise ValueError("parameter must be None (every parameter), a name or a non-empty list of names; got []")
    seen: set[str] = set()
    twice = [name for name in names if name in seen or seen.add(name)]
    if twice:
        raise ValueError(f"parameter lists {sorted(set(twice))} more than once; name each parameter once")
    unknown = [name for name in names if name not in params]
    if unknown:
        raise unknown_parameter_error(map, unknown)
    return names


@dataclass(frozen=True)
class Cost:
    """What an estimate cost, counted per state (one ensemble member) and per vector.

    Attributes
    ----------
    steps : int
        Applications of the map :math:`f_n` to one state (a batch of 100 states stepped once
        counts 100).
    jvps, vjps : int
        Tangent products :math:`Df_n V` and adjoint products :math:`Df_n^\\top W` with respect
        to the state, one per column per state.
    param_jvps : int
        Directional derivatives :math:`\\partial_\\gamma f_n\\,\\delta\\gamma` with respect to
        the parameters, one per direction per state.
    param_vjps : int
        Parameter gradients :math:`(\\partial_\\gamma f_n)^\\top w`, one per covector per state
        (for every parameter at once: that is what makes reverse mode independent of P).
    """

    steps: int = 0
    jvps: int = 0
    vjps: int = 0
    param_jvps: int = 0
    param_vjps: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __str__(self) -> str:
        return ", ".join(f"{getattr(self, f.name):,} {f.name.replace('_', ' ')}" for f in fields(self))

    def per_step(self, states: int) -> dict[str, float]:
        """Each count divided by ``states`` (e.g. paths x steps): products per simulated state."""
        return {f.name: getattr(self, f.name) / states for f in fields(self)}


@dataclass(frozen=True)
class Gradient:
    r"""Derivatives of an expected or averaged observable with respect to several parameters.

    Attributes
    ----------
    value : dict of str to Tensor
        For each parameter name, the estimate: shape ``(*output, *param.shape)``, where
        ``output`` is the shape of one value of the observable (``()`` for a scalar
        observable, ``(m,)`` for ``m`` statistics at once).
    stderr : dict of str to Tensor, or None
        The elementwise standard error, same shapes; ``None`` when there is one sample (one
        orbit of plain backpropagation).
    samples : dict of str to Tensor, or None
        The independent samples the estimate is the mean of, shape
        ``(s, *output, *param.shape)``: one per path, member, group of paths or block (the
        estimator says which).
    cost : Cost or None
        What it cost (filled in by :func:`average_gradient` and by estimators that count).
    output_shape : tuple of int
        ``output`` above.
    info : dict
        What the estimator adds: ``"per"`` (what one sample is: ``"member"``, ``"path"``,
        ``"group"``, ``"segment"``, ``"block"``), ``"sizes"`` (paths or steps behind each
        sample, when they differ: the value is then their size-weighted mean), ``"method"``
        (from :func:`average_gradient`).
    """

    value: dict[str, Tensor]
    stderr: dict[str, Tensor] | None
    samples: dict[str, Tensor] | None
    cost: Cost | None = None
    output_shape: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: Mapping[str, Tensor], output_shape: tuple[int, ...] = (), cost: Cost | None = None,
           **info: Any) -> Gradient:
        """The mean over axis 0 of independent samples and its elementwise standard error."""
        samples = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in samples.items()}
        count = {v.shape[0] for v in samples.values()}
        if len(count) != 1:
            raise ValueError(f"every parameter needs the same number of samples; got {sorted(count)}")
        s = count.pop()
        if s < 1:
            raise ValueError("a gradient needs at least one sample")
        value = {k: v.mean(0) for k, v in samples.items()}
        stderr = {k: v.std(0, correction=1) / math.sqrt(s) for k, v in samples.items()} if s >= 2 else None
        return cls(value, stderr, samples, cost, tuple(output_shape), dict(info))

    @property
    def names(self) -> list[str]:
        """The parameter names, in order."""
        return list(self.value)

    def __getitem__(self, name: str) -> Tensor:
        """``gradient[name]``: the value for one parameter."""
        if name not in self.value:
            raise KeyError(f"no gradient for {name!r}; this Gradient has {self.names}")
        return self.value[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def estimate(self, name: str, index: tuple[int, ...] | int = ()) -> Estimate:
        """One entry as an :class:`~chaosgrad.estimates.Estimate` (``index`` into
        ``(*output, *param.shape)``)."""
        value = self[name][index]
        if value.numel() != 1:
            raise ValueError(f"index {index!r} selects {value.numel()} entries of {name!r} (shape "
                             f"{tuple(self[name].shape)}); give one index per axis")
        if self.samples is None or self.samples[name].shape[0] < 2:
            raise ValueError("an error bar needs at least two independent samples; this gradient has one")
        return self._summary(self.samples[name][(slice(None), *((index,) if isinstance(index, int) else index))],
                             float(value))

    def along(self, direction: Mapping[str, Any], index: tuple[int, ...] = ()) -> Estimate | float:
        r"""The directional derivative :math:`\sum_j \langle \partial J/\partial\gamma_j, v_j\rangle`.

        Parameters
        ----------
        direction
            :math:`v`, a tensor of each parameter's shape by name; parameters not named count
            as 0. A name without a gradient is an error.
        index
            For a vector observable, which output (an index into ``output_shape``).

        Returns
        -------
        Estimate (mean and standard error over the same samples) with two samples or more;
        otherwise the value as a float.
        """
        unknown = set(direction) - set(self.value)
        if unknown:
            raise KeyError(f"direction names {sorted(unknown)}, which this Gradient does not have; it has {self.names}")
        out = len(self.output_shape)

        def project(tensors: Mapping[str, Tensor], lead: int) -> Tensor:
            total = 0.0
            for name, v in direction.items():
                t = tensors[name]
                v = torch.as_tensor(v, dtype=t.dtype)
                if v.shape != t.shape[lead + out:]:
                    raise ValueError(f"direction[{name!r}] must have the parameter's shape "
                                     f"{tuple(t.shape[lead + out:])}; got {tuple(v.shape)}")
                total = total + (t * v).reshape(*t.shape[: lead + out], -1).sum(-1)
            return torch.as_tensor(total)[(slice(None),) * lead + tuple(index)] if out else torch.as_tensor(total)

        if self.samples is not None and next(iter(self.samples.values())).shape[0] >= 2:
            return self._summary(project(self.samples, 1), float(project(self.value, 0)))
        return float(project(self.value, 0))

    def _summary(self, samples: Tensor, value: float) -> Estimate:
        r"""An Estimate of one projection of the samples: their mean with ``Estimate.of``, or,
        for means of unequal groups or blocks (``info["sizes"]``), the size-weighted ``value``
        with the batch-means error :math:`\mathrm{std}/\sqrt s`."""
        if "sizes" not in self.info:
            return Estimate.of(samples)
        return Estimate(value, float(samples.std(correction=1)) / math.sqrt(samples.shape[0]))

    def flat(self) -> Tensor:
        """Every value concatenated into one vector of ``(*output, P)``, in the order of :attr:`names`."""
        out = len(self.output_shape)
        return torch.cat([v.reshape(*v.shape[:out], -1) for v in self.value.values()], -1)


# -- one-parameter families -----------------------------------------------------------------
def random_directions(map: Map, count: int = 3, seed: int = 0) -> list[dict[str, Tensor]]:
    """``count`` random unit vectors :math:`v` in the space of every parameter of ``map``
    (Gaussian entries, normalised over all parameters together), by name: directions for
    :class:`Line` and :meth:`Gradient.along`, e.g. to test an all-parameter gradient."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        v = {k: torch.randn(p.shape, generator=g, dtype=torch.float64) for k, p in map.params().items()}
        norm = math.sqrt(sum(float((t**2).sum()) for t in v.values()))
        out.append({k: t / norm for k, t in v.items()})
    return out


class Line(Map):
    r"""The map restricted to the line :math:`\gamma_0 + t\,v` in parameter space, with the
    one scalar parameter ``t`` (0 by default): :math:`x_{n+1} = f_n(x_n;\gamma_0 + t\,v)`.

    Its derivative with respect to ``t`` at :math:`t = 0` is the directional derivative of the
    original map's along :math:`v`, so every scalar estimator run on a ``Line`` gives
    :meth:`Gradient.along` of the all-parameter estimator on the same paths.

    Parameters
    ----------
    map
        The map (not a :class:`~chaosgrad.systems.Noisy`: wrap the deterministic map and put
        the noise around the line).
    direction
        :math:`v` by parameter name, tensors of each parameter's shape; parameters not named
        are held fixed.
    t
        Where on the line the map sits.
    """

    def __init__(self, map: Map, direction: Mapping[str, Any], t: float = 0.0) -> None:
        super().__init__()
        params = map.params()
        unknown = set(direction) - set(params)
        if unknown:
            raise unknown_parameter_error(map, unknown)
        self.map = map
        self.dim = map.dim
        self.autonomous = map.autonomous
        self._direction = {k: torch.as_tensor(v, dtype=params[k].dtype).expand_as(params[k]).clone()
                           for k, v in direction.items()}
        self.t = parameter(t)
        self.is_flow = map.is_flow
        for attribute in ("vector_field", "dt"):  # a flow stays a flow (the field at t = 0)
            if hasattr(map, attribute):
                setattr(self, attribute, getattr(map, attribute))

    def params(self) -> dict[str, Tensor]:
        return {"t": self.t}

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        moved = {k: p + self.t * self._direction[k] for k, p in self.map.params().items() if k in self._direction}
        return self.map._call_with(moved, x, n)


# -- counting ---------------------------------------------------------------------------------
def _states(x: Tensor) -> int:
    return x.shape[:-1].numel()


class _Counted(Map):
    """A map that forwards every primitive to ``map`` and counts it in ``tally``."""

    def __init__(self, map: Map, tally: dict[str, int]) -> None:
        super().__init__()
        self.map = map
        self.dim = map.dim
        self.autonomous = map.autonomous
        self._tally = tally
        self.is_flow = map.is_flow
        for attribute in ("vector_field", "dt"):
            if hasattr(map, attribute):
                setattr(self, attribute, getattr(map, attribute))

    def _add(self, **counts: int) -> None:
        for k, v in counts.items():
            self._tally[k] += int(v)

    def params(self) -> dict[str, Tensor]:
        return self.map.params()

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        self._add(steps=_states(x))
        return self.map.step(x, n)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        self._add(jvps=_states(x) * V.shape[-1])
        return self.map._jvp(x, V, n)

    def _vjp(self, x: Tensor, W: Tensor, n: int) -> Tensor:
        self._add(vjps=_states(x) * W.shape[-1])
        return self.map._vjp(x, W, n)

    def _step_jvp(self, x: Tensor, V: Tensor, n: int) -> tuple[Tensor, Tensor]:
        self._add(steps=_states(x), jvps=_states(x) * V.shape[-1])
        return self.map._step_jvp(x, V, n)

    def param_jvp(self, x: Tensor, dgamma: dict[str, Any], n: int = 0) -> Tensor:
        self._add(param_jvps=_states(self.check_state(x)))
        return self.map.param_jvp(x, dgamma, n)

    def _step_param_jvp(self, x: Tensor, parameter: str, n: int) -> tuple[Tensor, Tensor]:
        self._add(steps=_states(x), param_jvps=_states(x))
        return self.map._step_param_jvp(x, parameter, n)

    def _param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> dict[str, Tensor]:
        self._add(param_vjps=_states(x))
        return self.map._param_vjp(x, w, n, keep)

    def _step_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        self._add(steps=_states(x), param_vjps=_states(x))
        return self.map._step_param_vjp(x, w, n, keep)

    def _vjp_param_vjp(self, x: Tensor, w: Tensor, n: int, keep: int) -> tuple[Tensor, dict[str, Tensor]]:
        self._add(vjps=_states(x), param_vjps=_states(x))
        return self.map._vjp_param_vjp(x, w, n, keep)


class CostCounter:
    """The running :class:`Cost` of a :func:`counted` map."""

    def __init__(self) -> None:
        self._tally = {f.name: 0 for f in fields(Cost)}

    @property
    def cost(self) -> Cost:
        return Cost(**self._tally)


@contextmanager
def counted(map: Map) -> Iterator[tuple[Map, CostCounter]]:
    """``with counted(map) as (m, counter):`` run an estimator on ``m``; ``counter.cost`` is
    then what it cost (:class:`Cost`). A :class:`~chaosgrad.systems.Noisy` map is rebuilt
    around the counted deterministic map with the same noise generator, amplitude and
    directions, so that its noise is drawn exactly as before.

    Only the primitives of :class:`~chaosgrad.maps.Map` are counted (``step``, ``_jvp``,
    ``_vjp``, ``_step_jvp``, ``param_jvp``, ``_step_param_jvp``, ``_param_vjp``,
    ``_step_param_vjp``, ``_vjp_param_vjp``); an estimator that called the map's own
    methods by another name would go uncounted.
    """
    from .systems import Noisy  # systems imports maps; gradients is imported after both

    counter = CostCounter()
    if isinstance(map, Noisy):
        inner = _Counted(map.map, counter._tally)
        wrapped: Map = Noisy(inner, map.sigma, generator=map.generator, direction=map.direction)
    else:
        wrapped = _Counted(map, counter._tally)
    yield wrapped, counter


# -- one door -----------------------------------------------------------------------------------
#: The methods of :func:`average_gradient`, the options each one takes, and those it requires.
METHODS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "backprop": (frozenset({"warmup", "n0"}), frozenset()),
    "clipped": (frozenset({"warmup", "n0", "clip", "clip_total"}), frozenset()),
    "truncated": (frozenset({"warmup", "n0", "truncate", "window"}), frozenset({"truncate"})),
    "nilsas": (frozenset({"segment_steps", "n_unstable", "warmup", "n0", "seed", "progress"}),
               frozenset({"segment_steps"})),
    "kernel": (frozenset({"window", "warmup", "blocks", "errors", "groups"}), frozenset()),
    "path-kernel": (frozenset({"alpha", "groups"}), frozenset({"alpha"})),
}


def average_gradient(
    map: Map,
    x0: Tensor,
    steps: int,
    observable: Any,
    method: str = "backprop",
    parameter: str | Iterable[str] | None = None,
    **options: Any,
) -> Gradient:
    r"""The gradient of a time average with respect to every parameter, by the method named.

    The objective is :math:`J = \frac1T\sum_{n=1}^{T}\Phi(x_n)` with :math:`T` = ``steps``
    (for the noisy maps of kernel differentiation, its expectation over the noise); one
    argument swaps the estimator, so that a training loop can compare them:

    ========================  ===========================================================
    ``method``                estimator (options)
    ========================  ===========================================================
    ``"backprop"``            exact backpropagation through the run,
                              :func:`~chaosgrad.derivatives.backprop_derivative`
                              (``warmup``, ``n0``)
    ``"clipped"``             the same with the adjoint clipped per step (``clip``) and/or
                              the total gradient's norm clipped (``clip_total``)
    ``"truncated"``           truncated backpropagation (``truncate`` = K, ``window`` =
                              ``"block"`` or ``"sliding"``)
    ``"nilsas"``              adjoint shadowing, :func:`~chaosgrad.shadowing.nilsas`
                              (``segment_steps`` dividing ``steps``; ``n_unstable``,
                              ``warmup``, ``n0``, ``seed``, ``progress``)
    ``"kernel"``              kernel differentiation of the expected average on a
                              :class:`~chaosgrad.systems.Noisy` map,
                              :func:`~chaosgrad.kernel.kernel_derivative` with
                              ``average=True`` (``window``, ``warmup``, ``blocks``,
                              ``errors``, ``groups``)
    ``"path-kernel"``         the path-kernel hybrid,
                              :func:`~chaosgrad.kernel.path_kernel_derivative` with
                              ``average=True`` (``alpha``, ``groups``)
    ========================  ===========================================================

    Parameters
    ----------
    map
        The map (a :class:`~chaosgrad.systems.Noisy` map for the two kernel methods).
    x0
        Initial states ``(..., dim)``: independent paths or members.
    steps
        :math:`T`.
    observable
        :math:`\Phi`, states ``(..., dim)`` to values ``(...,)`` (kernel differentiation also
        takes ``(..., m)``: ``m`` statistics at once).
    method
        One of the names above.
    parameter
        ``None`` (every parameter of the map), a name or a list of names.
    **options
        The chosen method's options (see the table); any other is refused.

    Returns
    -------
    Gradient
        With :attr:`Gradient.cost`, the products the estimate took (:class:`Cost`), and
        ``info["method"]``.

    Raises
    ------
    ValueError
        For an unknown method or a missing required option.
    TypeError
        For an option the method does not take.

    See Also
    --------
    Gradient.along : a directional derivative with its error bar.
    """
    from . import derivatives, kernel, shadowing  # they import this module's helpers

    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; got {method!r}")
    allowed, required = METHODS[method]
    extra = sorted(set(options) - allowed)
    if extra:
        raise TypeError(f"method {method!r} takes the options {sorted(allowed)}; got {extra}")
    missing = sorted(required - set(options))
    if method == "clipped" and not {"clip", "clip_total"} & set(options):
        missing = ["clip or clip_total"]
    if missing:
        raise ValueError(f"method {method!r} needs the option(s) {missing}")
    names = [parameter] if isinstance(parameter, str) else parameter  # a list: always a Gradient
    T = int(steps)
    with counted(map) as (m, counter):
        if method in ("backprop", "clipped", "truncated"):
            result = derivatives.backprop_derivative(m, x0, T, observable, names, **options)
        elif method == "nilsas":
            L = int(options.pop("segment_steps"))
            if L < 1 or T % L:
                raise ValueError(f"segment_steps must divide steps = {T}; got segment_steps = {L}")
            result = shadowing.nilsas(m, x0, observable, T // L, L, parameter=names, **options).gradients
        elif method == "kernel":
            result = kernel.kernel_derivative(m, x0, T, observable, names, average=True, **options)
        else:
            result = kernel.path_kernel_derivative(m, x0, T, observable, names, average=True, **options)
    return replace(result, cost=counter.cost, info={**result.info, "method": method})
