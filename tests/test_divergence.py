"""The divergence method for noisy maps (chaosgrad.divergence): exact zeros, agreement with
kernel differentiation (an independent estimator of the same derivative), bad input."""

from __future__ import annotations

import math

import pytest
import torch

from chaosgrad.divergence import divergence_derivative
from chaosgrad.kernel import kernel_derivative
from chaosgrad.systems import ExpandingCircle, Henon, Logistic, Noisy


def cos2pi(x: torch.Tensor) -> torch.Tensor:
    return torch.cos(2 * math.pi * x[..., 0])


def uniform(paths: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(paths, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_exactly_zero_where_the_density_does_not_move():
    """Doubling + rotation keeps the uniform density for every rotation: every score term
    vanishes identically (ell is constant, nu stays 0), so the estimate is 0.0 exactly, while
    kernel differentiation on the same paths only scatters around 0."""
    noisy = lambda: Noisy(ExpandingCircle(gamma=0.3, eps=0.0), sigma=0.05, seed=1)  # noqa: E731
    x0 = uniform(200)
    est = divergence_derivative(noisy(), x0, 10, cos2pi, "gamma", initial_score=torch.zeros_like)
    assert float(est.value) == 0.0 and float(est.stderr) == 0.0
    kd = kernel_derivative(noisy(), x0, 10, cos2pi, "gamma")
    assert float(kd.stderr) > 0.1


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_agrees_with_kernel_differentiation(alpha):
    """d E cos(2 pi x_12) / d eps from uniform draws, sigma = 0.2, where the kernel's variance is
    moderate: the two estimators (independent noise) agree within 3 combined standard errors
    (a false failure about 0.3% of the time per alpha; seeds fixed, so deterministic here)."""
    x0 = uniform(20000)
    div = divergence_derivative(Noisy(ExpandingCircle(0.0, 0.1), 0.2, seed=1), x0, 12, cos2pi, "eps",
                                alpha=alpha, initial_score=torch.zeros_like)
    kd = kernel_derivative(Noisy(ExpandingCircle(0.0, 0.1), 0.2, seed=2), x0, 12, cos2pi, "eps")
    assert abs(float(div.value) - float(kd.value)) < 3 * math.hypot(float(div.stderr), float(kd.stderr))


def test_pure_divergence_keeps_its_variance_as_the_noise_shrinks():
    """At sigma = 0.02 the kernel's standard error is about 30 times the pure divergence's
    (which does not depend on sigma on an expanding map); the test asks for 5."""
    x0 = uniform(2000)
    div = divergence_derivative(Noisy(ExpandingCircle(0.0, 0.1), 0.02, seed=1), x0, 12, cos2pi, "eps",
                                initial_score=torch.zeros_like)
    kd = kernel_derivative(Noisy(ExpandingCircle(0.0, 0.1), 0.02, seed=2), x0, 12, cos2pi, "eps")
    assert 5 * float(div.stderr) < float(kd.stderr)


def test_given_points_use_the_kernel_for_the_first_step():
    """From fixed points (no initial score) the estimate is still unbiased: same test."""
    x0 = torch.full((20000, 1), 0.3, dtype=torch.float64)
    div = divergence_derivative(Noisy(ExpandingCircle(0.0, 0.1), 0.2, seed=3), x0, 8, cos2pi, "eps")
    kd = kernel_derivative(Noisy(ExpandingCircle(0.0, 0.1), 0.2, seed=4), x0, 8, cos2pi, "eps")
    assert abs(float(div.value) - float(kd.value)) < 3 * math.hypot(float(div.stderr), float(kd.stderr))


def test_the_stationary_window_agrees_with_long_finite_times():
    """The ergodic version (one window per measured step) estimates the stationary derivative,
    which E cos(2 pi x_T) reaches within its error bar by T = 12 (the map mixes in a few steps)."""
    noisy = lambda s: Noisy(ExpandingCircle(0.0, 0.1), 0.2, seed=s)  # noqa: E731
    ergodic = divergence_derivative(noisy(5), uniform(64, 1), 1000, cos2pi, "eps", window=10, warmup=20,
                                    errors="paths")
    finite = divergence_derivative(noisy(6), uniform(20000, 2), 12, cos2pi, "eps", initial_score=torch.zeros_like)
    assert abs(float(ergodic.value) - float(finite.value)) < 3 * math.hypot(float(ergodic.stderr), float(finite.stderr))


def test_bad_input():
    x0 = uniform(10)
    noisy = Noisy(ExpandingCircle(0.0, 0.1), 0.1)
    with pytest.raises(TypeError, match="the divergence method needs a chaosgrad.systems.Noisy map"):
        divergence_derivative(ExpandingCircle(), x0, 5, cos2pi, "eps")
    with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\]; got 1.5"):
        divergence_derivative(noisy, x0, 5, cos2pi, "eps", alpha=1.5)
    with pytest.raises(ValueError, match="needs noise in every direction"):
        divergence_derivative(Noisy(Henon(), 0.1, direction=torch.tensor([1.0, 0.0])),
                              torch.full((4, 2), 0.1, dtype=torch.float64), 5, lambda x: x[..., 0], "a")
    with pytest.raises(TypeError, match="divergence_derivative needs an observable written with torch"):
        divergence_derivative(noisy, x0, 5, lambda x: float(x[0, 0]), "eps")
    with pytest.raises(ValueError, match=r"initial_score must return the shape of x0, \(10, 1\); got \(10,\)"):
        divergence_derivative(noisy, x0, 5, cos2pi, "eps", initial_score=lambda x: x[..., 0])
    with pytest.raises(ValueError, match="Jacobian of Logistic is singular at step 1"):
        divergence_derivative(_kicked_to_the_critical_point(), torch.full((2, 1), 0.25, dtype=torch.float64), 3,
                              lambda x: x[..., 0], "r")


def _kicked_to_the_critical_point() -> Noisy:
    """A noisy logistic map (r = 4, sigma = 0.5) whose scripted noise sends x0 = 1/4 to
    f(x0) - 1/4 = 1/2 exactly, the critical point, and then stays off."""
    class Scripted(Noisy):
        calls = 0

        def noise(self, like):
            self.calls += 1
            return torch.full_like(like, -0.5 if self.calls == 1 else 0.0)

    return Scripted(Logistic(4.0), sigma=0.5)
