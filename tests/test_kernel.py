"""Kernel differentiation and the path-kernel hybrid (chaosgrad.kernel) against exact values
on AR(1), and the hybrid's two ends against independent computations."""

from __future__ import annotations

import pytest
import torch
from chaosgrad.derivatives import backprop_derivative
from chaosgrad.kernel import (FitHistory, fit_average, fit_objective_gradient, kernel_derivative, kernel_horizon_samples,
                              path_kernel_derivative, settled_over_runs)
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Affine, Henon, Noisy

F64 = torch.float64


def ar1(a=0.5, sigma=0.3, seed=0):
    """x -> a x + gamma + sigma xi."""
    return Noisy(Affine([[a]], [1.0], gamma=0.2), sigma=sigma, seed=seed)


def identity(x):
    return x[..., 0]


def test_ar1_mean_and_variance_are_the_exact_ones():
    """dE[x_T]/dgamma = sum_{n<T} a^n = (1 - a^T)/(1 - a) = 1.998046875 for a = 1/2, T = 10.
    One path's estimate is U V with U = sum a^(T-1-n) xi_n, V = sum xi_n (sigma cancels), so by
    Isserlis its variance is T sum a^(2n) + (sum a^n)^2 = 17.3309... With 40000 paths the
    mean's standard error is 0.021 and the sample variance's relative error about 2%: the
    test fails by chance about once in 370 runs (3 sigma) for the mean, practically never for
    the 15% band on the variance."""
    a, T = 0.5, 10
    c = torch.tensor([a**n for n in range(T)], dtype=F64)
    exact_mean, exact_var = float(c.sum()), float(T * (c**2).sum() + c.sum() ** 2)
    assert exact_mean == 1.998046875
    est = kernel_derivative(ar1(a), torch.zeros(40000, 1, dtype=F64), T, identity, "gamma")
    assert abs(est.value - exact_mean) < 3 * est.stderr
    assert est.samples.var().item() == pytest.approx(exact_var, rel=0.15)


def test_ar1_average_and_ergodic_window():
    """The average of x_1..x_T has derivative (1/T) sum_m (1 - a^m)/(1 - a); the stationary
    average has 1/(1 - a) = 2, which the ergodic version reaches along 40 paths of 5000 steps
    with a window of 20 steps (truncation bias a^20 / (1 - a) = 2e-6)."""
    a, T = 0.5, 10
    exact = sum((1 - a**m) / (1 - a) for m in range(1, T + 1)) / T
    est = kernel_derivative(ar1(a, seed=1), torch.zeros(40000, 1, dtype=F64), T, identity, "gamma", average=True)
    assert abs(est.value - exact) < 3 * est.stderr
    ergodic = kernel_derivative(ar1(a, seed=2), torch.zeros(40, 1, dtype=F64), 5000, identity, "gamma", window=20, warmup=100)
    assert abs(ergodic.value - 2.0) < 3 * ergodic.stderr and ergodic.stderr < 0.05


def pathwise(map, x0, T, observable, parameter, seed):
    """The sum over paths of d Phi(x_T)/d gamma with the noise held fixed, by autograd."""
    noisy = Noisy(map, sigma=0.1, seed=seed)
    noise = [noisy.noise(x0) for _ in range(T)]
    gamma = map.params()[parameter].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        x = x0
        for n in range(T):
            x = torch.func.functional_call(map, {parameter: gamma}, (x, n)) + 0.1 * noise[n]
        (grad,) = torch.autograd.grad(observable(x).sum(), gamma)
    return grad


def test_hybrid_at_alpha_0_is_the_pathwise_derivative_and_at_1_kernel_differentiation():
    net = RandomNetwork(6, sigma_w2=2.0, sigma_b2=0.1, tied=True, seed=0)
    x0 = torch.randn(50, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    activity = lambda x: (x**2).mean(-1)  # noqa: E731
    T = 15
    path = path_kernel_derivative(Noisy(net, sigma=0.1, seed=3), x0, T, activity, "sigma_w", 0.0)
    total = pathwise(net, x0, T, activity, "sigma_w", seed=3)
    assert path.value * len(x0) == pytest.approx(total.item(), abs=1e-10)
    kernel = kernel_derivative(Noisy(net, sigma=0.1, seed=4), x0, T, activity, "sigma_w")
    hybrid = path_kernel_derivative(Noisy(net, sigma=0.1, seed=4), x0, T, activity, "sigma_w", 1.0)
    torch.testing.assert_close(hybrid.samples, kernel.samples, rtol=0, atol=1e-10)


def test_hybrid_is_unbiased_for_every_alpha_on_ar1():
    x0 = torch.zeros(40000, 1, dtype=F64)
    for alpha in (0.0, 0.3, [0.5] * 5 + [1.0] * 5):
        est = path_kernel_derivative(ar1(seed=5), x0, 10, identity, "gamma", alpha)
        assert abs(est.value - 1.998046875) < 3 * est.stderr + 1e-12


@pytest.mark.parametrize("call, error, message", [
    (lambda: kernel_derivative(Henon(), torch.zeros(2, 2, dtype=F64), 5, identity, "a"), TypeError, "needs a chaosgrad.systems.Noisy"),
    (lambda: kernel_derivative(ar1(), torch.zeros(4, 1, dtype=F64), 5, identity, "b"), ValueError, "one of \\['gamma'\\]; got 'b'"),
    (lambda: kernel_derivative(ar1(), torch.zeros(4, 1, dtype=F64), 5, identity, "gamma", window=0), ValueError, "window must be a whole number >= 1"),
    (lambda: kernel_derivative(ar1(), torch.zeros(1, dtype=F64), 5, identity, "gamma"), ValueError, "at least 2 independent paths"),
    (lambda: path_kernel_derivative(ar1(), torch.zeros(4, 1, dtype=F64), 5, identity, "gamma", 1.5), ValueError, "alpha must be a number in \\[0, 1\\]"),
    (lambda: Noisy(Henon(), sigma=0.0), ValueError, "sigma"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_foliated_noise_along_the_perturbation_gives_the_exact_derivative():
    """x -> A x + gamma b + sigma b xi (noise only along b, the direction gamma moves the
    map): dE[c^T x_T]/dgamma = c^T (I + A + ... + A^(T-1)) b exactly."""
    A = torch.tensor([[0.6, 0.3], [-0.2, 0.5]], dtype=F64)
    b, c = torch.tensor([1.0, 1.0], dtype=F64), torch.tensor([1.0, -2.0], dtype=F64)
    T = 8
    exact = float(c @ sum(torch.linalg.matrix_power(A, n) for n in range(T)) @ b)
    noisy = Noisy(Affine(A, b, gamma=0.1), sigma=0.2, seed=6, direction=b)
    est = kernel_derivative(noisy, torch.zeros(40000, 2, dtype=F64), T, lambda x: x @ c, "gamma")
    assert abs(est.value - exact) < 3 * est.stderr
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    kick = noisy.step(x) - noisy.map.step(x)  # sigma b xi: parallel to b
    torch.testing.assert_close(kick[:, 0] * b[1] - kick[:, 1] * b[0], torch.zeros(5, dtype=F64), rtol=0, atol=1e-15)


def test_foliated_noise_refuses_a_perturbation_outside_its_span():
    b = torch.tensor([1.0, 1.0], dtype=F64)
    noisy = Noisy(Affine(torch.eye(2, dtype=F64) / 2, b, gamma=0.1), sigma=0.2, direction=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="df/dgamma has a component outside the noise directions"):
        kernel_derivative(noisy, torch.zeros(4, 2, dtype=F64), 3, lambda x: x[..., 0], "gamma")
    with pytest.raises(ValueError, match="direction must be a \\(dim, m\\) matrix with dim = 2"):
        Noisy(Henon(), sigma=0.1, direction=torch.ones(3))


class _StepByStep(RandomNetwork):
    """The tied network, declared non-autonomous: kernel_derivative then takes the parameter
    derivative with every step instead of deferring it to one call per block of steps."""

    autonomous = False


@pytest.mark.parametrize("options", [{}, {"average": True}, {"window": 7, "warmup": 5}])
def test_deferred_parameter_derivatives_equal_the_step_by_step_ones(options):
    """On an autonomous map the scores are taken for blocks of 2**20 // (paths * dim) = 128
    steps at once (300 steps: blocks of 128, 128 and 44); the same noise, the same paths and
    the same estimate as one call per step, to rounding."""
    kwargs = {"width": 8, "sigma_w2": 4.0, "sigma_b2": 0.05, "tied": True, "seed": 3}
    x0 = torch.randn(4096, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    est = [kernel_derivative(Noisy(cls(**kwargs), sigma=0.1, seed=1), x0, 300, lambda x: (x**2).mean(-1),
                             "sigma_w", **options) for cls in (RandomNetwork, _StepByStep)]
    assert RandomNetwork(**kwargs).autonomous and not _StepByStep(**kwargs).autonomous
    assert est[0].value == pytest.approx(est[1].value, rel=1e-10, abs=1e-12)
    assert est[0].stderr == pytest.approx(est[1].stderr, rel=1e-10)


@pytest.mark.parametrize("autonomous", [True, False])
def test_foliated_noise_error_names_the_first_step_outside_its_span(autonomous):
    """Henon with noise along x only: df/db = (0, x) is inside that span at x = 0 (step 0)
    and leaves it at step 1, in the deferred blocks as step by step."""
    henon = Henon() if autonomous else type("StepByStepHenon", (Henon,), {"autonomous": False})()
    noisy = Noisy(henon, sigma=0.01, seed=0, direction=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="df/db has a component outside the noise directions .* at step 1:"):
        kernel_derivative(noisy, torch.zeros(4, 2, dtype=F64), 5, lambda x: x[..., 0], "b")


def test_hybrid_average_ends_are_the_pathwise_average_and_kernel_average():
    net = RandomNetwork(6, sigma_w2=2.0, sigma_b2=0.1, tied=True, seed=0)
    x0 = torch.randn(50, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    activity = lambda x: (x**2).mean(-1)  # noqa: E731
    kernel = kernel_derivative(Noisy(net, sigma=0.1, seed=4), x0, 12, activity, "sigma_w", average=True)
    hybrid = path_kernel_derivative(Noisy(net, sigma=0.1, seed=4), x0, 12, activity, "sigma_w", 1.0, average=True)
    torch.testing.assert_close(hybrid.samples, kernel.samples, rtol=0, atol=1e-10)
    path = path_kernel_derivative(Noisy(net, sigma=0.1, seed=5), x0, 12, activity, "sigma_w", 0.0, average=True)
    backprop = backprop_derivative(Noisy(net, sigma=0.1, seed=5), x0, 12, activity, "sigma_w")
    torch.testing.assert_close(path.samples, backprop, rtol=1e-9, atol=1e-12)


def test_hybrid_average_is_unbiased_on_ar1():
    """The average of x_1..x_10 has derivative (1/T) sum_m (1 - a^m)/(1 - a) = 1.3004...;
    40000 paths give a standard error near 0.01 (3-sigma band: fails once in 370 runs)."""
    a, T = 0.5, 10
    exact = sum((1 - a**m) / (1 - a) for m in range(1, T + 1)) / T
    est = path_kernel_derivative(ar1(seed=7), torch.zeros(40000, 1, dtype=F64), T, identity, "gamma", 0.3, average=True)
    assert abs(est.value - exact) < 3 * est.stderr


def test_fit_average_settles_where_the_mean_field_says():
    """AR(1) from its stationary mean: J(gamma) = gamma/(1 - a) = 2 gamma, dJ/dgamma = 2.
    SGD on (J - t)^2/2 + kappa gamma^2/2 settles at 2t/(4 + kappa) = 0.4444 with an unbiased
    derivative, and at t/(2 + kappa) = 0.4 with one biased by a factor 1/2. The last 40 of
    200 iterates average to within 0.01 of each (their spread is about 0.005, lr = 0.05)."""
    a, t, kappa = 0.5, 1.0, 0.5

    def make(gamma, seed):
        return Noisy(Affine([[a]], [1.0], gamma=gamma), sigma=0.3, seed=seed)

    x0 = torch.full((400, 1), 2 * 0.45, dtype=F64)
    exact = lambda noisy, x: kernel_derivative(noisy, x, 20, identity, "gamma", average=True).value  # noqa: E731
    for scale, settles in ((1.0, 2 * t / (4 + kappa)), (0.5, t / (2 + kappa))):
        history = fit_average(make, 0.45, x0, 20, identity, t, lambda m, x: scale * 2.0, lr=0.05, steps=200,
                              weight_decay=kappa)
        assert abs(history.settled(40).value - settles) < 0.01
    kernel = fit_average(make, 0.45, x0, 20, identity, t, exact, lr=0.05, steps=200, weight_decay=kappa)
    assert abs(kernel.settled(40).value - 2 * t / (4 + kappa)) < 0.02
    assert kernel.gamma.shape == (201,) and kernel.objective.shape == (200,)


def test_fit_objective_gradient_on_ar1_is_the_exact_one():
    """Started at its stationary mean x_0 = 2 gamma, AR(1) has E x_n = 2 gamma for every n, so
    J = 2 gamma; with x_0 held fixed, dJ/dgamma = (1/T) sum_m (1 - a^m)/(1 - a). The
    gradient is (J - t) dJ/dgamma + kappa gamma; 4000 paths give an error bar near 0.005
    (a 3-sigma band: fails by chance once in 370 runs)."""
    a, T, gamma, t, kappa = 0.5, 10, 0.4, 1.0, 0.5
    dJ = sum((1 - a**m) / (1 - a) for m in range(1, T + 1)) / T
    exact = (2 * gamma - t) * dJ + kappa * gamma

    def make(g, seed):
        return Noisy(Affine([[a]], [1.0], gamma=g), sigma=0.3, seed=seed)

    est = fit_objective_gradient(make, gamma, torch.full((4000, 1), 2 * gamma, dtype=F64), T, identity, t, kappa)
    assert abs(est.value - exact) < 3 * est.stderr and est.stderr < 0.02


def test_centring_by_the_mean_of_two_paths_is_unbiased():
    """Centring by the mean of n paths multiplies E[(Phi - mean) S] by 1 - 1/n (the other
    paths' values are independent of S_i, which has mean 0); kernel_derivative undoes it with
    n/(n - 1). With n = 2 the uncorrected estimate would average half the derivative, 0.999
    instead of 1.998 (AR(1), T = 10). 1000 independent pairs give a standard error near 0.1,
    so the test separates the two by about 9 error bars and fails by chance once in 370 runs."""
    pairs = torch.tensor([kernel_derivative(ar1(seed=100 + r), torch.zeros(2, 1, dtype=F64), 10, identity,
                                            "gamma").value for r in range(1000)])
    mean, stderr = pairs.mean().item(), pairs.std().item() / 1000**0.5
    assert stderr < 0.15
    assert abs(mean - 1.998046875) < 3 * stderr


def test_horizon_samples_are_kernel_derivative_samples_with_the_same_noise():
    net = RandomNetwork(6, sigma_w2=2.0, sigma_b2=0.1, tied=True, seed=0)
    x0 = torch.randn(30, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    activity = lambda x: (x**2).mean(-1)  # noqa: E731
    terminal, average = kernel_horizon_samples(Noisy(net, sigma=0.1, seed=4), x0, [3, 7], activity, "sigma_w")
    assert terminal.shape == average.shape == (2, 30)
    for i, T in enumerate((3, 7)):
        for mean, samples in ((False, terminal[i]), (True, average[i])):
            est = kernel_derivative(Noisy(net, sigma=0.1, seed=4), x0, T, activity, "sigma_w", average=mean)
            torch.testing.assert_close(samples, est.samples, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="horizons must be increasing"):
        kernel_horizon_samples(Noisy(net, sigma=0.1), x0, [7, 3], activity, "sigma_w")


def test_horizon_variances_on_ar1_terminal_grows_average_does_not():
    """AR(1), a = 1/2: one path's terminal estimate has variance T sum a^(2n) + (sum a^n)^2,
    about 4T/3 + 4 (17.3 at T = 10, 137 at T = 100), exactly; the full-window average's stays
    bounded (its scores are weighted by centred sums of about sqrt(T - n) values over T).
    4000 paths: sample variances within 15%, and the average's at T = 100 within a factor
    1.5 of its value at T = 10 while the terminal one grows about 8-fold."""
    a = 0.5
    terminal, average = kernel_horizon_samples(ar1(seed=9), torch.zeros(4000, 1, dtype=F64), [10, 100], identity,
                                               "gamma")
    for i, T in enumerate((10, 100)):
        c = torch.tensor([a**n for n in range(T)], dtype=F64)
        assert terminal[i].var().item() == pytest.approx(float(T * (c**2).sum() + c.sum() ** 2), rel=0.15)
    assert average[1].var() < 1.5 * average[0].var()


def test_ergodic_error_bars_from_independent_paths():
    """errors="paths" gives the same point estimate as the batch means, with the spread of the
    per-path estimates: 40 AR(1) paths of 5000 steps, window 20, reach 1/(1 - a) = 2."""
    kwargs = dict(window=20, warmup=100)
    paths = kernel_derivative(ar1(seed=2), torch.zeros(40, 1, dtype=F64), 5000, identity, "gamma", errors="paths", **kwargs)
    blocks = kernel_derivative(ar1(seed=2), torch.zeros(40, 1, dtype=F64), 5000, identity, "gamma", **kwargs)
    assert paths.value == pytest.approx(blocks.value, rel=1e-12)
    assert paths.samples.shape == (40,) and abs(paths.value - 2.0) < 3 * paths.stderr < 0.15
    with pytest.raises(ValueError, match="errors must be 'blocks' or 'paths'"):
        kernel_derivative(ar1(), torch.zeros(4, 1, dtype=F64), 50, identity, "gamma", window=5, errors="orbits")


def test_settled_over_runs_uses_the_run_means():
    def run(values):
        g = torch.tensor(values, dtype=F64)
        return FitHistory(g, g[:-1], g[:-1], g[:-1])

    runs = [run([5.0, 1.0, 2.0, 3.0]), run([5.0, 3.0, 4.0, 5.0]), run([5.0, 0.0, 0.0, 0.0])]
    est = settled_over_runs(runs, 3)  # run means 2, 4, 0
    assert est.value == pytest.approx(2.0) and est.stderr == pytest.approx(2.0 / 3**0.5)
    with pytest.raises(ValueError, match="at least two runs"):
        settled_over_runs(runs[:1], 3)
    with pytest.raises(ValueError, match="exceeds the 4 iterates"):
        settled_over_runs(runs, 5)
