r"""Activation functions :math:`\phi` and their derivatives :math:`\phi'`, on torch tensors.

One table serves the networks (:mod:`chaosgrad.networks`) and the mean-field theory
(:mod:`chaosgrad.meanfield`), so both always mean the same function. The sigmoid is
:math:`1/(1 + e^{-u})` (the draft writes :math:`1/(1 + e^{u})`, see the corrections appendix).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ACTIVATIONS", "DERIVATIVE_FROM_OUTPUT", "activation"]

Fn = Callable[[Tensor], Tensor]


def _dtanh(u: Tensor) -> Tensor:
    return 1 - torch.tanh(u) ** 2


def _dsigmoid(u: Tensor) -> Tensor:
    s = torch.sigmoid(u)
    return s * (1 - s)


def _drelu(u: Tensor) -> Tensor:
    return (u > 0).to(u.dtype)


def _identity(u: Tensor) -> Tensor:
    return u


#: activation name -> (phi, phi')
ACTIVATIONS: dict[str, tuple[Fn, Fn]] = {
    "tanh": (torch.tanh, _dtanh),
    "sigmoid": (torch.sigmoid, _dsigmoid),
    "relu": (torch.relu, _drelu),
    "linear": (_identity, torch.ones_like),
}


#: activation name -> phi' expressed through y = phi(u): saves recomputing phi in a layer's Jacobian
DERIVATIVE_FROM_OUTPUT: dict[str, Fn] = {
    "tanh": lambda y: 1 - y * y,
    "sigmoid": lambda y: y * (1 - y),
    "relu": _drelu,
    "linear": torch.ones_like,
}


def activation(name: str) -> tuple[Fn, Fn]:
    """``(phi, phi')`` for an activation name; a ``ValueError`` lists the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}") from None
