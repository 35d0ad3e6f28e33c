"""chaosgrad: Lyapunov spectra, adjoint shadowing and kernel differentiation for maps in torch.

The library behind the companion book to the thesis "Backpropagation in unstable neural
networks". Everything is a :class:`Map`, ``x_{n+1} = f_n(x_n; gamma)`` on float64 tensors
of shape ``(..., dim)``; every algorithm takes a map.
"""

from . import (
    activations,
    adjoint,
    covariant,
    estimates,
    kernel,
    lyapunov,
    meanfield,
    networks,
    plotting,
    shadowing,
    systems,
    tangent,
    training,
)
from .adjoint import BackpropGrowth, adjoint_lyapunov_spectrum, backprop_growth
from .covariant import (
    CovariantVectors,
    covariant_lyapunov_vectors,
    duality_errors,
    principal_angles,
)
from .estimates import Estimate, pm
from .lyapunov import LyapunovResult, kaplan_yorke_dimension, lyapunov_spectrum
from .maps import Map, parameter
from .shadowing import ShadowingResult, nilsas
from .validation import NonFiniteStateError

__version__ = "0.1.0"

__all__ = [
    "BackpropGrowth",
    "CovariantVectors",
    "Estimate",
    "LyapunovResult",
    "Map",
    "NonFiniteStateError",
    "ShadowingResult",
    "activations",
    "adjoint",
    "adjoint_lyapunov_spectrum",
    "backprop_growth",
    "covariant",
    "covariant_lyapunov_vectors",
    "duality_errors",
    "estimates",
    "kaplan_yorke_dimension",
    "kernel",
    "lyapunov",
    "lyapunov_spectrum",
    "meanfield",
    "networks",
    "nilsas",
    "parameter",
    "plotting",
    "pm",
    "shadowing",
    "principal_angles",
    "systems",
    "tangent",
    "training",
    "__version__",
]
