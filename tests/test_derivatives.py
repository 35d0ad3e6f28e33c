"""Backpropagated derivatives of averaged objectives against finite differences and exact values."""

from __future__ import annotations


import pytest
import torch

import chaosgrad
from chaosgrad.derivatives import (
    backprop_derivative,
    ensemble_adjoint,
    finite_difference,
    lag_contributions,
    time_average,
)
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


def _brute_force_terms(net, x0, T, warmup, h=1e-6):
    """Every term (n, m) of dJ_T/dsigma_w written out: grad Phi(x_m)^T Df_{m-1} ... Df_{n+1}
    df_n/dsigma_w / T, with dense Jacobians from torch.autograd.functional.jacobian and
    df_n/dsigma_w from a central difference in sigma_w at fixed x_n (independent of the
    library's adjoint and parameter derivatives). Returns {(n, m): term} for one orbit."""
    orbit = net.trajectory(x0, warmup + T)
    s = float(net.sigma_w)
    jac = [torch.autograd.functional.jacobian(lambda y, n=n: net.step(y, n), orbit[n]) for n in range(warmup + T)]
    dfdg = [(tied_width(s + h, net.dim).step(orbit[n], n) - tied_width(s - h, net.dim).step(orbit[n], n)) / (2 * h)
            for n in range(warmup + T)]
    terms = {}
    for m in range(warmup + 1, warmup + T + 1):
        row = 2 * orbit[m] / net.dim / T  # grad of (x^2).mean(-1), divided by T
        for n in range(m - 1, -1, -1):  # row = grad Phi(x_m)^T Df_{m-1} ... Df_{n+1}
            terms[n, m] = float(row @ dfdg[n])
            row = row @ jac[n]
    return terms


def tied_width(sigma_w: float, width: int) -> RandomNetwork:
    return RandomNetwork(width, sigma_w2=sigma_w**2, sigma_b2=0.05, tied=True, seed=3)


def test_sliding_window_keeps_exactly_the_terms_of_lag_at_most_K():
    """Against the explicit double sum over (n, m) of products of Jacobians on a chaotic
    3-unit network: lag d = m - n; the sliding window keeps d <= K, each column of
    lag_contributions is the sum over one lag, and K >= warmup + T is the exact derivative."""
    net, T, w = tied_width(2.5, 3), 9, 2
    x0 = torch.randn(3, generator=torch.Generator().manual_seed(5), dtype=F64)
    terms = _brute_force_terms(net, x0, T, w)
    lags = lag_contributions(net, x0, T, activity, "sigma_w", w + T, warmup=w)
    for d in range(1, w + T + 1):
        expected = sum(v for (n, m), v in terms.items() if m - n == d)
        assert float(lags[d - 1]) == pytest.approx(expected, rel=1e-6, abs=1e-10)
    for K in (1, 3, 5):
        kept = sum(v for (n, m), v in terms.items() if m - n <= K)
        got = float(backprop_derivative(net, x0, T, activity, "sigma_w", warmup=w, truncate=K, window="sliding"))
        assert got == pytest.approx(kept, rel=1e-6, abs=1e-10)
    exact = backprop_derivative(net, x0, T, activity, "sigma_w", warmup=w)
    assert float(exact) == pytest.approx(sum(terms.values()), rel=1e-6)
    torch.testing.assert_close(
        backprop_derivative(net, x0, T, activity, "sigma_w", warmup=w, truncate=w + T + 4, window="sliding"), exact)
    # block truncation keeps a term iff no multiple of K lies in (n, m - 1]: not the same set
    block = float(backprop_derivative(net, x0, T, activity, "sigma_w", warmup=w, truncate=3))
    kept = sum(v for (n, m), v in terms.items() if not any(j % 3 == 0 for j in range(n + 1, m)))
    assert block == pytest.approx(kept, rel=1e-6, abs=1e-10)


def test_sliding_and_block_windows_agree_at_K_1_and_lags_sum_per_member():
    x0 = torch.randn(6, 12, generator=torch.Generator().manual_seed(6), dtype=F64)
    net = tied(2.0)
    torch.testing.assert_close(
        backprop_derivative(net, x0, 30, activity, "sigma_w", truncate=1, window="sliding"),
        backprop_derivative(net, x0, 30, activity, "sigma_w", truncate=1))
    lags = lag_contributions(net, x0, 30, activity, "sigma_w", 7)
    assert lags.shape == (6, 7)
    torch.testing.assert_close(lags.sum(-1), backprop_derivative(net, x0, 30, activity, "sigma_w", truncate=7,
                                                                  window="sliding"))


def chapter3_network(sigma_w: float = 3.0) -> RandomNetwork:
    """The chaotic network of chapter 3: width 32, lambda_1 = 0.21 per step at sigma_w = 3."""
    return RandomNetwork(32, sigma_w2=sigma_w**2, sigma_b2=0.05, tied=True, seed=0)


def test_total_clipping_clamps_each_orbits_derivative():
    x0 = torch.randn(8, 32, generator=torch.Generator().manual_seed(7), dtype=F64)
    net = chapter3_network()
    exact = backprop_derivative(net, x0, 40, activity, "sigma_w")
    assert exact.abs().max() > 1.0  # so that c = 1 clips some members and not others...
    assert exact.abs().min() < 1.0  # ...checked here, not assumed
    clipped = backprop_derivative(net, x0, 40, activity, "sigma_w", clip_total=1.0)
    torch.testing.assert_close(clipped, exact.clamp(-1.0, 1.0))


def test_ensemble_adjoint_with_consecutive_windows_is_block_truncation():
    """Exact identity: windows of tau steps taken one after another along one orbit, each
    differentiated with its start held fixed, average to the block-truncated derivative."""
    net, tau, k = tied(2.5), 6, 5
    x0 = torch.randn(12, generator=torch.Generator().manual_seed(8), dtype=F64)
    starts = net.trajectory(x0, tau * k)[::tau][:k]
    ea = ensemble_adjoint(net, starts, tau, activity, "sigma_w")
    block = backprop_derivative(net, x0, tau * k, activity, "sigma_w", truncate=tau)
    assert ea.value == pytest.approx(float(block), rel=1e-10)
    torch.testing.assert_close(ea.samples, backprop_derivative(net, starts, tau, activity, "sigma_w"))


def test_common_random_numbers_help_only_while_the_orbits_stay_close():
    """Chapter 3's chaotic network (lambda_1 = 0.21). T = 5: shared starts give a spread far
    below independent starts. T = 300: the orbits decorrelate and the spreads of 300 quotients
    agree; each spread is uncertain by about 4% (std of a std over 300 samples) so a ratio
    outside [0.75, 1.33] is over 5 combined standard errors: by chance less than once in 10^5."""
    g = torch.Generator().manual_seed(9)
    net = chapter3_network()
    xa = net.trajectory(torch.randn(300, 32, generator=g, dtype=F64), 200)[-1]
    xb = net.trajectory(torch.randn(300, 32, generator=g, dtype=F64), 200)[-1]
    short = [finite_difference(chapter3_network, 3.0, 0.01, xa, 5, activity, x0_minus=x).samples.std()
             for x in (None, xb)]
    assert short[0] < 0.05 * short[1]
    long = [finite_difference(chapter3_network, 3.0, 0.01, xa, 300, activity, x0_minus=x).samples.std()
            for x in (None, xb)]
    assert 0.75 < float(long[0] / long[1]) < 1.33


def test_new_arguments_are_checked():
    x0 = torch.zeros(2, 12, dtype=F64)
    with pytest.raises(ValueError, match="window must be 'block' or 'sliding'; got 'overlapping'"):
        backprop_derivative(tied(1.0), x0, 5, activity, "sigma_w", truncate=2, window="overlapping")
    with pytest.raises(ValueError, match="clip cannot be combined with window='sliding'"):
        backprop_derivative(tied(1.0), x0, 5, activity, "sigma_w", truncate=2, window="sliding", clip=1.0)
    with pytest.raises(ValueError, match="clip_total must be a finite number > 0"):
        backprop_derivative(tied(1.0), x0, 5, activity, "sigma_w", clip_total=0)
    with pytest.raises(ValueError, match="lags must be a whole number >= 1; got lags = 0"):
        lag_contributions(tied(1.0), x0, 5, activity, "sigma_w", 0)
    with pytest.raises(ValueError, match="tau must be a whole number >= 1; got tau = 0"):
        ensemble_adjoint(tied(1.0), x0, 0, activity, "sigma_w")
    with pytest.raises(ValueError, match=r"x0_minus must have the shape of x0, \(2, 12\); got \(3, 12\)"):
        finite_difference(tied, 1.0, 0.1, x0, 5, activity, x0_minus=torch.zeros(3, 12, dtype=F64))
