"""Kernel differentiation and the path-kernel hybrid for every parameter at once (issue 23):
directional derivatives against the scalar estimators on the one-parameter family
gradients.Line on the same noise, against finite differences, exact AR(1) values with a tensor
parameter, vector observables, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from chaosgrad.derivatives import finite_difference
from chaosgrad.gradients import Gradient, Line, counted
from chaosgrad.gradients import random_directions as directions
from chaosgrad.kernel import kernel_derivative, path_kernel_derivative
from chaosgrad.maps import Map, parameter
from chaosgrad.systems import Noisy

F64 = torch.float64
EXACT = dict(rel=1e-10, abs=1e-10)  # the same sums in another order: rounding only


class TinyMLP(Map):
    """x -> x + h (W2 tanh(W1 x + b1) + b2 - x): a damped two-layer network with tensor
    parameters (P = 22 for 4 hidden units), stable enough for finite differences."""

    autonomous = True
    dim = 2

    def __init__(self, hidden: int = 4, h: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W1 = parameter(0.8 * torch.randn(hidden, 2, generator=g, dtype=F64))
        self.b1 = parameter(0.1 * torch.randn(hidden, generator=g, dtype=F64))
        self.W2 = parameter(0.5 * torch.randn(2, hidden, generator=g, dtype=F64))
        self.b2 = parameter(torch.zeros(2, dtype=F64))
        self.h = h

    def step(self, x, n=0):
        return x + self.h * (torch.tanh(x @ self.W1.mT + self.b1) @ self.W2.mT + self.b2 - x)


class MatrixAR1(Map):
    """x -> W x + bias with a (1, 1) weight matrix and a (1,) bias as tensor parameters."""

    autonomous = True
    dim = 1

    def __init__(self, a: float = 0.5, bias: float = 0.2) -> None:
        super().__init__()
        self.weight = parameter([[a]])
        self.bias = parameter([bias])

    def step(self, x, n=0):
        return x @ self.weight.mT + self.bias


def start(paths, seed=0):
    return 0.5 * torch.randn(paths, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def activity(x):
    return x[..., 0] + 0.5 * x[..., 1] ** 2


def assert_same(estimate, scalar):
    """The directional derivative (an Estimate over the same paths or blocks) equals the
    scalar estimator's value and error bar to rounding."""
    assert estimate.value == pytest.approx(scalar.value, **EXACT)
    assert estimate.stderr == pytest.approx(scalar.stderr, **EXACT)


@pytest.mark.parametrize("options", [{}, {"average": True}, {"average": True, "warmup": 3},
                                     {"window": 4, "warmup": 5}, {"window": 4, "warmup": 5, "errors": "paths"},
                                     {"window": 25, "blocks": 5}])
def test_kernel_directional_derivatives_are_the_scalar_estimator_on_the_line(options):
    """Along three random unit directions v, <grad, v> is kernel_derivative on Line(map, v),
    the same noise (seed), to rounding; values and error bars (per path with groups=None, or
    per block for the window: T = 20 in 5 blocks of 4 steps, so the mean of the block means is
    the value)."""
    net, x0, sigma = TinyMLP(), start(30), 0.1
    gradient = kernel_derivative(Noisy(net, sigma, seed=1), x0, 20, activity, None, groups=None, **options)
    assert isinstance(gradient, Gradient) and gradient["W1"].shape == (4, 2)
    for v in directions(net):
        scalar = kernel_derivative(Noisy(Line(net, v), sigma, seed=1), x0, 20, activity, "t", **options)
        assert_same(gradient.along(v), scalar)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, [0.2] * 6 + [1.0] * 6])
@pytest.mark.parametrize("average", [False, True])
def test_hybrid_adjoint_is_the_forward_hybrid_on_the_line(alpha, average):
    """The adjoint sweep (one _vjp_param_vjp per step) gives, along each direction, the
    forward hybrid's tangent-and-score estimate on Line(map, v) with the same noise."""
    net, x0, sigma = TinyMLP(seed=2), start(20, seed=1), 0.1
    gradient = path_kernel_derivative(Noisy(net, sigma, seed=3), x0, 12, activity, None, alpha, average=average,
                                      groups=None)
    for v in directions(net, seed=1):
        scalar = path_kernel_derivative(Noisy(Line(net, v), sigma, seed=3), x0, 12, activity, "t", alpha,
                                        average=average)
        assert_same(gradient.along(v), scalar)


def test_estimates_agree_with_finite_differences():
    """The average of Phi over 8 steps of the noisy damped network from fixed starts:
    kernel differentiation and the hybrid (alpha = 0.5) along a random direction agree with
    central differences on Line(map, v) (h = 1e-3, common random numbers, whose error bar is
    tiny on this stable map) within 3 combined standard errors; 1500 paths give kernel
    differentiation an error bar near 0.007 (over 100 groups of 15 paths: nearly Gaussian)."""
    net, x0, sigma = TinyMLP(seed=4), start(1500, seed=2), 0.2
    v = directions(net, count=1, seed=3)[0]
    reference = finite_difference(lambda t: Noisy(Line(net, v, t), sigma, seed=7), 0.0, 1e-3, x0, 8, activity)
    for estimate in (kernel_derivative(Noisy(net, sigma, seed=5), x0, 8, activity, None, average=True, groups=100),
                     path_kernel_derivative(Noisy(net, sigma, seed=6), x0, 8, activity, None, 0.5, average=True,
                                            groups=100)):
        along = estimate.along(v)
        assert abs(along.value - reference.value) < 3 * math.hypot(along.stderr, reference.stderr)


def test_ar1_with_a_weight_matrix_gives_the_exact_derivatives():
    """x_{n+1} = w x_n + b + sigma xi from x_0 = 0, w = 1/2, T = 10: E x_T = b (1 - w^T)/(1 - w),
    so dE x_T/db = 1.998046875 and dE x_T/dw = b sum_{n<T} n w^(n-1) = 0.79140625 (b = 0.2).
    One path's estimate of d/db has variance 17.33 (tests/test_kernel.py), so 20000 paths give a
    standard error near 0.03: a 3-sigma band fails by chance once in 370 runs."""
    a, b, T = 0.5, 0.2, 10
    gradient = kernel_derivative(Noisy(MatrixAR1(a, b), 0.3, seed=8), torch.zeros(20000, 1, dtype=F64), T,
                                 lambda x: x[..., 0], None, groups=None)
    assert gradient["weight"].shape == (1, 1) and gradient["bias"].shape == (1,)
    exact = {"bias": (1,), "weight": (1, 1)}
    values = {"bias": 1.998046875, "weight": b * sum(n * a ** (n - 1) for n in range(1, T))}
    assert values["weight"] == pytest.approx(0.79140625, rel=1e-14)
    for name, index in exact.items():
        estimate = gradient.estimate(name, tuple(0 for _ in index))
        assert abs(estimate.value - values[name]) < 3 * estimate.stderr


def test_foliated_noise_scores_the_parameters_inside_its_span_and_refuses_the_others():
    """x -> A x + shift b + other e_2 with noise along b only: the shift's score is the
    foliated one (equal to the scalar path's on the line), `other` moves the map outside the
    noise and is refused by name, also when every parameter is asked for."""

    class Shifted(Map):
        autonomous = True
        dim = 2

        def __init__(self):
            super().__init__()
            self.register_buffer("A", torch.tensor([[0.6, 0.3], [-0.2, 0.5]], dtype=F64))
            self.shift = parameter([0.1])
            self.other = parameter(0.0)

        def step(self, x, n=0):
            return x @ self.A.mT + self.shift * torch.tensor([1.0, 1.0], dtype=F64) + self.other * torch.tensor(
                [0.0, 1.0], dtype=F64)

    b, x0, c = torch.tensor([1.0, 1.0], dtype=F64), start(40), torch.tensor([1.0, -2.0], dtype=F64)
    shifted = Shifted()
    for options in ({}, {"average": True}, {"window": 3}):
        gradient = kernel_derivative(Noisy(shifted, 0.2, seed=9, direction=b), x0, 10, lambda x: x @ c, ["shift"],
                                     groups=None, **options)
        v = {"shift": torch.tensor([1.0], dtype=F64)}
        scalar = kernel_derivative(Noisy(Line(shifted, v), 0.2, seed=9, direction=b), x0, 10, lambda x: x @ c, "t",
                                   **options)
        assert_same(gradient.along(v), scalar)
    with pytest.raises(ValueError, match="df/dother has a component outside the noise directions .* at step 0.*"
                                         "name only the parameters"):
        kernel_derivative(Noisy(shifted, 0.2, seed=9, direction=b), x0, 10, lambda x: x @ c, None)


def test_vector_observable_is_each_scalar_observable():
    """Phi = (x_0, x_1^2): each component of the gradient (shape (2, *param.shape)) is the run
    with that scalar observable on the same noise, for kernel differentiation and the hybrid."""
    net, x0 = TinyMLP(seed=5), start(25, seed=4)
    pair = lambda x: torch.stack([x[..., 0], x[..., 1] ** 2], -1)  # noqa: E731
    singles = [lambda x: x[..., 0], lambda x: x[..., 1] ** 2]
    runs = [lambda obs: kernel_derivative(Noisy(net, 0.1, seed=10), x0, 9, obs, ["W2", "b1"], average=True),
            lambda obs: kernel_derivative(Noisy(net, 0.1, seed=10), x0, 30, obs, ["W2", "b1"], window=5, blocks=3),
            lambda obs: path_kernel_derivative(Noisy(net, 0.1, seed=10), x0, 9, obs, ["W2", "b1"], 0.4,
                                               average=True)]
    for run in runs:
        both = run(pair)
        assert both.output_shape == (2,) and both["W2"].shape == (2, 2, 4)
        for j, single in enumerate(singles):
            one = run(single)
            for name in ("W2", "b1"):
                torch.testing.assert_close(both[name][j], one[name], rtol=1e-10, atol=1e-12)
                torch.testing.assert_close(both.stderr[name][j], one.stderr[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("groups", [4, 7])
def test_groups_of_paths_are_the_means_of_the_per_path_samples(groups):
    """groups=G: the value is the per-path estimate's (the same sums, grouped), and the samples
    are the means of G groups of consecutive paths (28 paths: 4 groups of 7, or 7 of 4) of
    the per-path samples, for kernel differentiation and the hybrid."""
    net, x0 = TinyMLP(seed=6), start(28, seed=5)
    runs = [lambda g: kernel_derivative(Noisy(net, 0.1, seed=11), x0, 10, activity, None, average=True, groups=g),
            lambda g: kernel_derivative(Noisy(net, 0.1, seed=11), x0, 30, activity, None, window=4, errors="paths",
                                        groups=g),
            lambda g: path_kernel_derivative(Noisy(net, 0.1, seed=11), x0, 10, activity, None, 0.3, groups=g)]
    for run in runs:
        grouped, single = run(groups), run(None)
        assert grouped.info["per"] == "group" and grouped.samples["W1"].shape == (groups, 4, 2)
        for name in net.params():
            torch.testing.assert_close(grouped[name], single[name], rtol=1e-10, atol=1e-12)
            means = single.samples[name].reshape(groups, -1, *single[name].shape).mean(1)
            torch.testing.assert_close(grouped.samples[name], means, rtol=1e-10, atol=1e-12)


class StepByStepMLP(TinyMLP):
    """The same network declared non-autonomous: its parameter vjps are taken one step per call."""

    autonomous = False


@pytest.mark.parametrize("options", [{"average": True}, {"window": 3, "blocks": 4}])
def test_many_steps_per_call_equal_one_step_per_call(options):
    """On an autonomous map the stored states of many steps go into one parameter vjp; the
    same estimate as one call per step, to rounding."""
    x0 = start(12, seed=6)
    runs = [kernel_derivative(Noisy(cls(seed=7), 0.1, seed=12), x0, 16, activity, None, groups=3, **options)
            for cls in (TinyMLP, StepByStepMLP)]
    for name in runs[0]:
        torch.testing.assert_close(runs[0][name], runs[1][name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(runs[0].stderr[name], runs[1].stderr[name], rtol=1e-10, atol=1e-12)


def test_one_parameter_gradient_per_step_and_path():
    """Cost independent of P: kernel differentiation takes one step and one param_vjp per state;
    the hybrid one step, one vjp and one param_vjp (the last step needs no vjp)."""
    net, x0, T = TinyMLP(), start(6), 5
    with counted(Noisy(net, 0.1, seed=0)) as (noisy, counter):
        kernel_derivative(noisy, x0, T, activity, None)
    assert (counter.cost.steps, counter.cost.param_vjps, counter.cost.jvps, counter.cost.vjps) == (30, 30, 0, 0)
    with counted(Noisy(net, 0.1, seed=0)) as (noisy, counter):
        path_kernel_derivative(noisy, x0, T, activity, None, 0.5)
    assert (counter.cost.steps, counter.cost.param_vjps, counter.cost.vjps) == (30, 30, 24)


@pytest.mark.parametrize("call, error, message", [
    (lambda n, x: kernel_derivative(n, x, 5, activity, ["W1", "nope"]), KeyError, "unknown parameter.*'nope'"),
    (lambda n, x: kernel_derivative(n, x, 5, activity, ["W1", "W1"]), ValueError, "more than once; name each"),
    (lambda n, x: kernel_derivative(n, x, 5, lambda y: y[..., None] * y[..., None, :], None), ValueError,
     "Stack several statistics along one last axis"),
    (lambda n, x: kernel_derivative(n, x, 5, lambda y: y[1:, 0], None), ValueError, "keep the paths axis first"),
    (lambda n, x: path_kernel_derivative(n, x, 5, lambda y: y[..., None] * y[..., None, :], None, 0.5), ValueError,
     "Stack several statistics"),
    (lambda n, x: path_kernel_derivative(n, x, 5, activity, ["b3"], 0.5), KeyError, "it has \\['W1', 'W2', 'b1'"),
    (lambda n, x: kernel_derivative(n, x[:1], 5, activity, None), ValueError, "at least 2 independent paths"),
    (lambda n, x: kernel_derivative(n, x, 5, activity, None, groups=1), ValueError,
     "groups must be a whole number >= 2"),
])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call(Noisy(TinyMLP(), 0.1, seed=0), start(4))
