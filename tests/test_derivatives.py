"""Backpropagated derivatives of averaged objectives against finite differences and exact values."""

from __future__ import annotations


import pytest
import torch

import chaosgrad
from chaosgrad.derivatives import backprop_derivative, finite_difference, time_average
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Lorenz63, Noisy

F64 = torch.float64


class Affine(chaosgrad.Map):
    """x -> a x + gamma, whose averaged objective has an exact derivative."""

    dim = 1

    def __init__(self, a: float, gamma: float) -> None:
        super().__init__()
        self.a = chaosgrad.parameter(a)
        self.gamma = chaosgrad.parameter(gamma)

    def step(self, x, n=0):
        return self.a * x + self.gamma


def activity(x):
    return (x**2).mean(-1)


def exact_affine_derivative(a: float, T: int) -> float:
    """x_n depends on gamma through sum_{j<n} a^j, so dJ_T/dgamma = (1/T) sum_n (1 - a^n)/(1 - a)."""
    return sum((1 - a**n) / (1 - a) for n in range(1, T + 1)) / T


def tied(sigma_w: float, seed: int = 0) -> RandomNetwork:
    return RandomNetwork(12, sigma_w2=sigma_w**2, sigma_b2=0.05, tied=True, seed=seed)


@pytest.mark.parametrize("sigma_w", [0.7, 2.0])
def test_backprop_equals_finite_differences_per_orbit(sigma_w):
    """Per orbit the derivative is exact: central differences agree to 1e-6 on a stable
    network, and on a chaotic one while T is short enough (e^{lambda T} h stays small)."""
    x0 = torch.randn(5, 12, generator=torch.Generator().manual_seed(0), dtype=F64)
    T, h = 30, 1e-6
    bp = backprop_derivative(tied(sigma_w), x0, T, activity, "sigma_w", warmup=10)
    fd = (time_average(tied(sigma_w + h), x0, T, activity, 10) - time_average(tied(sigma_w - h), x0, T, activity, 10)) / (2 * h)
    torch.testing.assert_close(bp, fd, rtol=1e-6, atol=1e-9)


def test_backprop_on_lorenz_parameter_rho():
    lorenz = Lorenz63()
    x0 = torch.tensor([1.0, 1.0, 20.0], dtype=F64) + torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    z = lambda x: x[..., 2]  # noqa: E731
    bp = backprop_derivative(lorenz, x0, 50, z, "rho")
    h = 1e-6
    fd = (time_average(Lorenz63(rho=28 + h), x0, 50, z) - time_average(Lorenz63(rho=28 - h), x0, 50, z)) / (2 * h)
    torch.testing.assert_close(bp, fd, rtol=1e-6, atol=1e-8)


def test_affine_map_exact_derivative_by_backprop_and_covered_by_finite_differences():
    a, T = 0.8, 40
    x0 = torch.randn(64, 1, generator=torch.Generator().manual_seed(3), dtype=F64)
    exact = exact_affine_derivative(a, T)
    ident = lambda x: x[..., 0]  # noqa: E731
    torch.testing.assert_close(backprop_derivative(Affine(a, 0.1), x0, T, ident, "gamma"), torch.full((64,), exact, dtype=F64))
    # with noise and common random numbers, J_T is linear in gamma: the difference is exact
    same = finite_difference(lambda g: Noisy(Affine(a, g), sigma=0.3, seed=7), 0.1, 0.05, x0, T, ident)
    assert abs(same.value - exact) <= max(3 * same.stderr, 1e-10)
    # with independent noise on the two sides the quotient scatters; its error bar must cover the truth
    indep = finite_difference(lambda g: Noisy(Affine(a, g), sigma=0.3, seed=int(g > 0.1)), 0.1, 0.05, x0, T, ident)
    assert indep.stderr > 100 * same.stderr + 1e-3
    assert abs(indep.value - exact) < 3 * indep.stderr


def test_clipping_and_truncation_behave_as_defined():
    x0 = torch.randn(4, 12, generator=torch.Generator().manual_seed(4), dtype=F64)
    net = tied(2.0)
    exact = backprop_derivative(net, x0, 25, activity, "sigma_w", warmup=10)
    torch.testing.assert_close(backprop_derivative(net, x0, 25, activity, "sigma_w", warmup=10, clip=1e300), exact)
    torch.testing.assert_close(backprop_derivative(net, x0, 25, activity, "sigma_w", warmup=10, truncate=35), exact)  # one window
    # truncate = 1 keeps only the immediate terms (df_n/dgamma)^T grad Phi(x_{n+1}) / T
    orbit = net.trajectory(x0, 35)
    immediate = sum(net.param_vjp(orbit[n], 2 * orbit[n + 1] / 12 / 25, n)["sigma_w"] for n in range(10, 35))
    torch.testing.assert_close(backprop_derivative(net, x0, 25, activity, "sigma_w", warmup=10, truncate=1), immediate)
    # the clipped estimate is bounded: at most T * clip * max |df/dgamma| per member
    clipped = backprop_derivative(net, x0, 25, activity, "sigma_w", warmup=10, clip=1e-3)
    assert clipped.abs().max() < exact.abs().max()


def test_bad_arguments_are_named():
    x0 = torch.zeros(2, 12, dtype=F64)
    with pytest.raises(ValueError, match=r"scalar parameter of RandomNetwork, one of \['sigma_b', 'sigma_w'\]; got 'W'"):
        backprop_derivative(tied(1.0), x0, 5, activity, "W")
    with pytest.raises(ValueError, match="clip must be a finite number > 0"):
        backprop_derivative(tied(1.0), x0, 5, activity, "sigma_w", clip=0)
    with pytest.raises(ValueError, match="truncate must be a whole number >= 1"):
        backprop_derivative(tied(1.0), x0, 5, activity, "sigma_w", truncate=0)
    with pytest.raises(ValueError, match="T must be a whole number >= 1"):
        time_average(tied(1.0), x0, 0, activity)
    with pytest.raises(ValueError, match="h must be a finite number > 0"):
        finite_difference(tied, 1.0, -0.1, x0, 5, activity)
