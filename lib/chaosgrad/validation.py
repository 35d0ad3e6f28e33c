"""Input checks shared by every map and algorithm.

Each check raises an exception whose message names the offending argument, the shape or
value it expected and what it got, so that a user who passes a wrong shape or a diverging
state learns what went wrong without reading the library's source.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "NonFiniteStateError",
    "as_state",
    "check_finite",
    "check_positive",
    "check_scalar_parameter",
    "check_tangent",
    "unknown_parameter_error",
]

DEFAULT_DTYPE = torch.float64


class NonFiniteStateError(FloatingPointError):
    """A state or a tangent became inf or NaN during a run.

    Raised instead of letting non-finite numbers propagate silently into exponents,
    gradients or figures. The message names the quantity and the step at which it first
    stopped being finite.
    """


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
