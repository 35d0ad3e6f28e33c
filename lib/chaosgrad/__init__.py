"""chaosgrad: Lyapunov spectra, adjoint shadowing and kernel differentiation for maps in torch.

The library behind the companion book to the thesis "Backpropagation in unstable neural
networks". Everything is a :class:`Map`, ``x_{n+1} = f_n(x_n; gamma)`` on float64 tensors
of shape ``(..., dim)``; every algorithm takes a map.
"""

from . import (
    activations,
    adjoint,
    climate,
    covariant,
    divergence,
    estimates,
    gradients,
    hessian,
    kernel,
    learning,
    lyapunov,
    meanfield,
    models,
    networks,
    plotting,
    response,
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
from .gradients import Cost, Gradient, average_gradient
from .lyapunov import LyapunovResult, kaplan_yorke_dimension, lyapunov_spectrum
from .maps import Map, parameter
from .models import NeuralMap
from .response import ResponseResult, linear_response
from .shadowing import ShadowingResult, nilsas
from .validation import ConstantParameterWarning, FewSamplesWarning, NonFiniteStateError

__version__ = "0.1.0"

__all__ = [
    "BackpropGrowth",
    "ConstantParameterWarning",
    "Cost",
    "CovariantVectors",
    "Estimate",
    "FewSamplesWarning",
    "Gradient",
    "LyapunovResult",
    "Map",
    "NeuralMap",
    "NonFiniteStateError",
    "ResponseResult",
    "ShadowingResult",
    "activations",
    "adjoint",
    "adjoint_lyapunov_spectrum",
    "average_gradient",
    "backprop_growth",
    "covariant",
    "covariant_lyapunov_vectors",
    "divergence",
    "duality_errors",
    "estimates",
    "gradients",
    "hessian",
    "kaplan_yorke_dimension",
    "kernel",
    "linear_response",
    "lyapunov",
    "lyapunov_spectrum",
    "meanfield",
    "models",
    "networks",
    "nilsas",
    "parameter",
    "plotting",
    "pm",
    "response",
    "shadowing",
    "principal_angles",
    "systems",
    "tangent",
    "training",
    "__version__",
]
