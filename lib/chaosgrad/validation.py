"""Input checks shared by every map and algorithm.

Each check raises an exception whose message names the offending argument, the shape or
value it expected and what it got, so that a user who passes a wrong shape or a diverging
state learns what went wrong without reading the library's source.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "ConstantParameterWarning",
    "FewSamplesWarning",
    "NonFiniteStateError",
    "as_state",
    "check_finite",
    "check_positive",
    "check_scalar_parameter",
    "check_tangent",
    "evaluate_observable",
    "no_parameters_error",
    "unknown_parameter_error",
    "warn_constant_parameters",
    "warn_few_samples",
]

DEFAULT_DTYPE = torch.float64


class NonFiniteStateError(FloatingPointError):
    """A state or a tangent became inf or NaN during a run.

    Raised instead of letting non-finite numbers propagate silently into exponents,
    gradients or figures. The message names the quantity and the step at which it first
    stopped being finite.
    """


class ConstantParameterWarning(UserWarning):
    """A parameter does not reach the map's output, so its derivative is exactly zero.

    Warned by :func:`warn_constant_parameters` (once per estimator run), typically because
    ``step`` turned the parameter into a Python number (``.item()``, ``float()``) or a NumPy
    array, which the derivatives see as a constant.
    """


class FewSamplesWarning(UserWarning):
    """An error bar comes from fewer than 8 independent samples (:func:`warn_few_samples`):
    its standard error is itself uncertain by about :math:`1/\\sqrt{2(s-1)}` (over 27% for
    :math:`s < 8`), and a 2-member error bar can be off by a factor of several."""


def as_state(x: Any, dim: int, name: str = "x", owner: str = "map") -> torch.Tensor:
    """Return ``x`` as a floating-point tensor of shape ``(..., dim)``.

    Python numbers, lists and NumPy arrays are converted to float64; a tensor must be
    float64 already (a float32 one would be promoted silently by the float64 parameters).

    Parameters
    ----------
    x
        The state, a single point of shape ``(dim,)`` or an ensemble ``(..., dim)``.
    dim
        The dimension of the map's state space.
    name, owner
        Used in error messages ("x for Henon must ...").

    Raises
    ------
    TypeError
        If ``x`` is an integer, boolean, complex or lower-precision tensor.
    ValueError
        If the last axis of ``x`` does not have length ``dim``.
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=DEFAULT_DTYPE)
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} for {owner} must be a real floating-point tensor (float64 by default); "
            f"got dtype {x.dtype}"
        )
    if x.dtype != torch.float64:
        raise TypeError(
            f"{name} for {owner} is {str(x.dtype).replace('torch.', '')}; chaosgrad computes in float64 "
            "(exponents and derivatives of unstable maps lose their digits in lower precision): pass "
            f"{name}.double(), or call torch.set_default_dtype(torch.float64) before creating it"
        )
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"{name} for {owner} must have shape (..., {dim}) (the last axis is the state, "
            f"leading axes are an ensemble); got shape {tuple(x.shape)}"
        )
    return x


def check_tangent(V: Any, x: torch.Tensor, dim: int, name: str = "V", owner: str = "map") -> torch.Tensor:
    """Check that ``V`` holds ``k`` tangent (or cotangent) vectors at the states ``x``.

    ``V`` must have shape ``(..., dim, k)``, its leading axes broadcastable against the
    ensemble axes ``x.shape[:-1]``. Returns ``V`` as a tensor of ``x``'s dtype.

    Raises
    ------
    ValueError
        If ``V`` has fewer than two axes, its second-to-last axis is not ``dim``, or its
        leading axes do not broadcast against the ensemble axes of ``x``.
    """
    if not isinstance(V, torch.Tensor):
        V = torch.as_tensor(V, dtype=x.dtype)
    expected = f"(..., {dim}, k) with leading axes matching the ensemble shape {tuple(x.shape[:-1])}"
    if V.ndim < 2 or V.shape[-2] != dim:
        raise ValueError(
            f"{name} for {owner} must have shape {expected} (one vector per column); "
            f"got shape {tuple(V.shape)}"
        )
    try:
        torch.broadcast_shapes(x.shape[:-1], V.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"{name} for {owner} must have shape {expected}; got shape {tuple(V.shape)}, "
            f"whose leading axes {tuple(V.shape[:-2])} do not broadcast against the "
            f"ensemble axes {tuple(x.shape[:-1])}"
        ) from None
    if V.dtype != x.dtype:
        V = V.to(x.dtype)
    return V


def check_finite(t: torch.Tensor, what: str, step: int | None = None) -> torch.Tensor:
    """Raise :class:`NonFiniteStateError` if ``t`` contains inf or NaN.

    Parameters
    ----------
    t
        The tensor to check.
    what
        What ``t`` is, for the message (e.g. ``"state"``, ``"tangent vectors"``).
    step
        The step (layer, time index) at which ``t`` was produced, if any.
    """
    if math.isfinite(float(t.sum())):  # fast path: one reduction (a finite sum means no inf or NaN)
        return t
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).sum().item()
        where = f" at step {step}" if step is not None else ""
        raise NonFiniteStateError(
            f"non-finite {what}{where}: {bad} of {t.numel()} entries are inf or NaN "
            "(the run diverged; check the map's parameters, the initial state and the step size)"
        )
    return t


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float if it is finite and > 0; raise ``ValueError`` otherwise."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {name} = {value}")
    return value


def check_whole(value: Any, name: str, low: int = 0) -> int:
    """Return ``value`` as an int if it is a whole number ``>= low``; otherwise raise a
    ValueError naming it: ``"segments must be a whole number >= 2; got segments = 1"``."""
    if int(value) != value or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}; got {name} = {value}")
    return int(value)


def _plain_attribute_hint(map: Any, names: Any) -> str:
    """A hint for names that are attributes of ``map`` but not registered parameters."""
    plain = [name for name in sorted(names) if name in getattr(map, "__dict__", {})]
    if not plain:
        return ""
    return (f" ({', '.join(repr(name) for name in plain)} is a plain attribute, which derivatives treat as a "
            f"constant: register it with self.{plain[0]} = chaosgrad.parameter(value))")


def unknown_parameter_error(map: Any, names: Any) -> KeyError:
    """The KeyError for parameter names that ``map`` does not have (see ``Map.params``),
    listing those it has and pointing to ``chaosgrad.parameter`` for a plain attribute."""
    names = [names] if isinstance(names, str) else sorted(names)
    return KeyError(f"unknown parameter(s) {names} for {type(map).__name__}; it has {sorted(map.params())}"
                    + _plain_attribute_hint(map, names))


def check_scalar_parameter(map: Any, parameter: str) -> str:
    """Return ``parameter`` if it names a scalar parameter of ``map`` (see ``Map.params``);
    otherwise raise a ValueError listing the scalar parameters it has."""
    params = map.params()
    if parameter not in params or params[parameter].numel() != 1:
        scalars = sorted(k for k, p in params.items() if p.numel() == 1)
        raise ValueError(f"parameter must name a scalar parameter of {type(map).__name__}, one of {scalars}; "
                         f"got {parameter!r}" + _plain_attribute_hint(map, [parameter]))
    return parameter


def _plain_float_attributes(map: Any) -> list[str]:
    """Attributes of ``map`` that look like parameters but are not registered: Python floats
    and floating-point tensors that are neither parameters nor buffers."""
    return sorted(name for name, value in getattr(map, "__dict__", {}).items()
                  if not name.startswith("_") and (type(value) is float or (
                      isinstance(value, torch.Tensor) and torch.is_floating_point(value))))


def no_parameters_error(map: Any) -> ValueError:
    """The ValueError for a map without registered parameters (every estimator asked for all
    of its parameters raises it), naming its plain float attributes, if any, and how to
    register them (:func:`chaosgrad.parameter`)."""
    return ValueError(f"{type(map).__name__} has no parameters to differentiate: register them with "
                      "chaosgrad.parameter(value)" + _plain_attribute_hint(map, _plain_float_attributes(map)))


def evaluate_observable(observable: Callable[[torch.Tensor], Any], states: torch.Tensor, estimator: str) -> torch.Tensor:
    r"""``observable(states)``, or a clear error if the observable is not written in torch.

    The estimators differentiate :math:`\Phi` by autograd or evaluate it on tensors, so it
    must be a function of its input written with torch operations and return a tensor. A
    failure inside it (NumPy on a tensor that requires grad, ``.item()``) is re-raised with
    what it must do, the original error chained, as ``step``'s are
    (``chaosgrad.maps._differentiating``).

    Parameters
    ----------
    observable
        :math:`\Phi`, states ``(..., dim)`` to values ``(...,)`` (or ``(..., m)`` where an
        estimator takes several statistics).
    states
        The states; when they require grad, the values must depend on them through autograd.
    estimator
        The estimator's name, for the message.

    Returns
    -------
    Tensor
        The values.

    Raises
    ------
    TypeError
        If the observable fails with a TypeError or RuntimeError, returns something other than
        a tensor, or (``states`` requiring grad) returns values autograd cannot differentiate.
    """
    fix = (f"{estimator} needs an observable written with torch operations on its input (torch.cos(x[..., 0]), "
           "not np.cos; no .item(), float(), .numpy() or .detach()), returning a tensor of shape (...,)")
    try:
        values = observable(states)
    except (RuntimeError, TypeError) as error:
        raise TypeError(f"evaluating the observable failed: {error}. {fix}") from error
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"the observable returned a {type(values).__name__}, not a torch tensor. {fix}")
    if states.requires_grad and not values.requires_grad:
        raise TypeError(f"the observable's values do not depend on its input through torch, so they cannot be "
                        f"differentiated. {fix}")
    return values


#: Members (states of the ensemble) of the first state on which :func:`warn_constant_parameters` checks.
CONSTANT_CHECK_MEMBERS = 16


def warn_constant_parameters(map: Any, x: torch.Tensor, names: Sequence[str], n: int = 0,
                             last: int | None = None) -> list[str]:
    r"""Warn (:class:`ConstantParameterWarning`) about parameters that do not reach the output of ``step``.

    A ``step`` that turns a parameter into a Python number (``.item()``, ``float()``) gives it
    a derivative of exactly zero, silently. Once per estimator run, this takes
    :math:`(\partial f_n/\partial\gamma)^\top w` (:meth:`Map.param_vjp`, summed over the
    first :data:`CONSTANT_CHECK_MEMBERS` members of ``x``) for a random Gaussian covector
    :math:`w` (a fixed seed, a generator of its own: the run's random numbers are untouched)
    and warns about every parameter in ``names`` whose gradient is zero in every entry. A
    parameter that does reach the output gives zero for such a :math:`w` only on a set of
    states of measure zero (where :math:`\partial f_n/\partial\gamma = 0`). A map that is not
    autonomous may use a parameter at some steps only (a layer's own weights), so there a
    parameter counts as constant only if it is zero at step ``n`` and at step ``last`` too.

    Parameters
    ----------
    map
        The map (a :class:`~chaosgrad.maps.Map`).
    x
        The run's first states, ``(..., dim)``.
    names
        The parameters the estimator differentiates.
    n, last
        The step index of ``x``, and the run's last step (time-dependent maps).

    Returns
    -------
    list of str
        The names warned about (empty if none).
    """
    if not names:
        return []
    while hasattr(map, "_tally"):  # a counted map (chaosgrad.gradients.counted): check, uncounted, what it wraps
        map = map.map
    states = x.detach().reshape(-1, x.shape[-1])[:CONSTANT_CHECK_MEMBERS]
    w = torch.randn(states.shape, generator=torch.Generator().manual_seed(0), dtype=states.dtype)

    def zero_at(step: int, candidates: Sequence[str]) -> list[str]:
        with torch.no_grad():
            grads = map.param_vjp(states, w, step, keep=0)
        return [name for name in candidates if not bool(grads[name].ne(0).any())]

    zero = zero_at(n, names)
    if zero and not map.autonomous and last is not None and last != n:
        zero = zero_at(last, zero)
    if zero:
        warnings.warn(
            f"{type(map).__name__}.step does not depend on parameter(s) {zero}: their derivative is exactly zero at "
            f"the first state. step must use each parameter tensor in torch operations (self.{zero[0]} * x), not "
            f"self.{zero[0]}.item(), float(self.{zero[0]}) or a NumPy copy, which derivatives see as constants",
            ConstantParameterWarning, stacklevel=3)
    return zero


#: Fewer independent samples than this behind an error bar get a :class:`FewSamplesWarning`.
MIN_SAMPLES = 8


def warn_few_samples(samples: int, estimator: str, what: str = "members") -> None:
    r"""Warn (:class:`FewSamplesWarning`) when an error bar comes from ``2 <= samples < 8``
    independent samples: the relative error of a standard error from :math:`s` samples is
    about :math:`1/\sqrt{2(s-1)}`, and with 2 of them the interval of two standard errors
    covers the truth only about 70% of the time (Student's t with one degree of freedom)."""
    if 2 <= samples < MIN_SAMPLES:
        warnings.warn(
            f"{estimator}'s error bar comes from {samples} independent {what}: a standard error from fewer than "
            f"{MIN_SAMPLES} is unreliable (itself uncertain by about {100 / math.sqrt(2 * (samples - 1)):.0f}%); "
            f"use at least {MIN_SAMPLES} {what}", FewSamplesWarning, stacklevel=3)
