"""The all-parameter machinery (chaosgrad.gradients): Map.param_vjp's summed form, the
Gradient result, the one-parameter family Line, cost counting and the one door
average_gradient. The estimators' own all-parameter tests are in test_kernel_gradients.py
and test_all_parameter_backprop.py.

Tolerances: sums of the same products in another order agree to a few ulps (1e-12);
a counted map runs exactly the same arithmetic as the map itself (equality).
"""

from __future__ import annotations

import math

import pytest
import torch

from chaosgrad.derivatives import backprop_derivative
from chaosgrad.estimates import Estimate
from chaosgrad.gradients import METHODS, Cost, Gradient, Line, average_gradient, counted, parameter_names
from chaosgrad.systems import Henon, Lorenz63, Noisy

F64 = torch.float64
EXACT = 1e-12


def henon_states(shape=(4, 3)):
    g = torch.Generator().manual_seed(0)
    return Henon().trajectory(torch.tensor([0.1, 0.1], dtype=F64) + 0.01 * torch.randn(*shape, 2, generator=g,
                                                                                       dtype=F64), 30)[-1]


def test_param_vjp_keep_sums_the_members_of_the_other_axes():
    x = henon_states()
    w = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    henon = Henon()
    each = henon.param_vjp(x, w)
    for keep, axes in ((0, (0, 1)), (1, (1,))):
        summed = henon.param_vjp(x, w, keep=keep)
        for name in each:
            torch.testing.assert_close(summed[name], each[name].sum(axes), rtol=EXACT, atol=EXACT)
    with pytest.raises(ValueError, match=r"keep must be a whole number of leading ensemble axes between 0 and 2 "
                                         r"\(the ensemble shape is \(4, 3\)\); got keep = 3"):
        henon.param_vjp(x, w, keep=3)


def test_gradient_of_samples_mean_stderr_and_directions():
    g = torch.Generator().manual_seed(2)
    samples = {"W": torch.randn(50, 2, 3, generator=g, dtype=F64), "b": torch.randn(50, generator=g, dtype=F64)}
    grad = Gradient.of(samples)
    torch.testing.assert_close(grad["W"], samples["W"].mean(0))
    torch.testing.assert_close(grad.stderr["b"], samples["b"].std() / math.sqrt(50))
    v = {"W": torch.randn(2, 3, generator=g, dtype=F64), "b": torch.tensor(0.5, dtype=F64)}
    along = grad.along(v)
    projected = (samples["W"] * v["W"]).sum((1, 2)) + 0.5 * samples["b"]
    assert isinstance(along, Estimate)
    assert along.value == pytest.approx(float(projected.mean()), abs=EXACT)
    assert along.stderr == pytest.approx(float(projected.std() / math.sqrt(50)), abs=EXACT)
    assert grad.estimate("W", (1, 2)).value == pytest.approx(float(samples["W"][:, 1, 2].mean()), abs=EXACT)
    assert grad.flat().shape == (7,)
    one = Gradient.of({"b": torch.tensor([2.0], dtype=F64)})
    assert one.stderr is None and one.along({"b": 3.0}) == 6.0
    with pytest.raises(KeyError, match=r"direction names \['c'\], which this Gradient does not have"):
        grad.along({"c": 1.0})
    with pytest.raises(ValueError, match=r"direction\['W'\] must have the parameter's shape \(2, 3\); got \(3,\)"):
        grad.along({"W": torch.ones(3, dtype=F64)})
    with pytest.raises(ValueError, match=r"error bar needs at least two independent samples"):
        one.estimate("b")
    with pytest.raises(KeyError, match=r"no gradient for 'c'; this Gradient has \['W', 'b'\]"):
        grad["c"]


def test_line_is_the_directional_derivative_and_keeps_a_flow():
    x = henon_states()
    henon = Henon()
    line = Line(henon, {"a": 0.6, "b": 0.8})
    assert list(line.params()) == ["t"]
    torch.testing.assert_close(line.param_jvp(x, {"t": 1.0}), henon.param_jvp(x, {"a": 0.6, "b": 0.8}),
                               rtol=EXACT, atol=EXACT)
    torch.testing.assert_close(Line(henon, {"a": 1.0}, t=0.25).step(x), Henon(a=1.65).step(x), rtol=EXACT, atol=EXACT)
    lorenz = Line(Lorenz63(), {"rho": 1.0})
    assert lorenz.dt == 0.01 and callable(lorenz.vector_field)
    with pytest.raises(KeyError, match=r"unknown parameter\(s\) \['c'\] for Henon; it has \['a', 'b'\]"):
        Line(henon, {"c": 1.0})


def test_parameter_names_refuses_unknown_duplicate_and_empty():
    assert parameter_names(Lorenz63(), None) == ["sigma", "rho", "beta"]
    assert parameter_names(Lorenz63(), "rho") == ["rho"]
    with pytest.raises(KeyError, match=r"unknown parameter\(s\) \['rh0'\] for Lorenz63; it has"):
        parameter_names(Lorenz63(), ["rho", "rh0"])
    with pytest.raises(ValueError, match=r"parameter lists \['rho'\] more than once; name each parameter once"):
        parameter_names(Lorenz63(), ["rho", "beta", "rho"])
    with pytest.raises(ValueError, match=r"non-empty list of names; got \[\]"):
        parameter_names(Lorenz63(), [])


def test_counted_map_counts_per_state_and_changes_nothing():
    x0 = torch.full((5, 2), 0.1, dtype=F64)
    noisy = Noisy(Henon(), sigma=0.01, seed=3)
    with counted(noisy) as (m, counter):
        orbit = m.trajectory(x0, 7)
    torch.testing.assert_close(orbit, Noisy(Henon(), sigma=0.01, seed=3).trajectory(x0, 7), rtol=0, atol=0)
    assert counter.cost == Cost(steps=35)
    T = 12
    with counted(Henon()) as (m, counter):
        counted_value = backprop_derivative(m, x0, T, lambda s: s[..., 0], "a")
    torch.testing.assert_close(counted_value, backprop_derivative(Henon(), x0, T, lambda s: s[..., 0], "a"),
                               rtol=0, atol=0)
    # T steps forward, T - 1 adjoint steps, one parameter derivative per step (scalar path)
    assert counter.cost == Cost(steps=5 * T, vjps=5 * (T - 1), param_jvps=5 * T)
    assert str(Cost(steps=1200, vjps=3)) == "1,200 steps, 0 jvps, 3 vjps, 0 param jvps, 0 param vjps"


def test_average_gradient_refuses_unknown_methods_and_options():
    x0 = torch.full((2, 2), 0.1, dtype=F64)
    observable = lambda s: s[..., 0]  # noqa: E731
    with pytest.raises(ValueError, match=r"method must be one of \["):
        average_gradient(Henon(), x0, 10, observable, method="adjoint")
    with pytest.raises(TypeError, match=r"method 'backprop' takes the options \['n0', 'warmup'\]; got \['clip'\]"):
        average_gradient(Henon(), x0, 10, observable, clip=1.0)
    with pytest.raises(ValueError, match=r"method 'truncated' needs the option\(s\) \['truncate'\]"):
        average_gradient(Henon(), x0, 10, observable, method="truncated")
    with pytest.raises(ValueError, match=r"needs the option\(s\) \['clip or clip_total'\]"):
        average_gradient(Henon(), x0, 10, observable, method="clipped")
    with pytest.raises(ValueError, match=r"segment_steps must divide steps = 10; got segment_steps = 3"):
        average_gradient(Henon(), x0, 10, observable, method="nilsas", segment_steps=3)
    assert set(METHODS) == {"backprop", "clipped", "truncated", "nilsas", "kernel", "path-kernel"}


def test_average_gradient_is_each_estimator_with_its_cost_counted():
    """The door returns exactly what the estimator returns on the same paths, and the products
    it took: backpropagation of T steps takes T steps, T - 1 adjoint steps and T parameter vjps
    per member whatever the number of parameters; kernel differentiation one step and one
    parameter vjp per path and step, and no Jacobian product."""
    from chaosgrad.kernel import kernel_derivative, path_kernel_derivative
    from chaosgrad.shadowing import nilsas

    x0, T = henon_states((4,)), 12
    observable = lambda s: s[..., 0]  # noqa: E731
    cases = [
        ("backprop", {}, lambda: backprop_derivative(Henon(), x0, T, observable, None)),
        ("clipped", {"clip": 0.5}, lambda: backprop_derivative(Henon(), x0, T, observable, None, clip=0.5)),
        ("truncated", {"truncate": 3, "window": "sliding"},
         lambda: backprop_derivative(Henon(), x0, T, observable, None, truncate=3, window="sliding")),
        ("nilsas", {"segment_steps": 4, "n_unstable": 1},
         lambda: nilsas(Henon(), x0, observable, 3, 4, n_unstable=1, parameter=None).gradients),
    ]
    for method, options, direct in cases:
        door, reference = average_gradient(Henon(), x0, T, observable, method, **options), direct()
        assert door.info["method"] == method and door.names == ["a", "b"]
        for name in door:
            torch.testing.assert_close(door[name], reference[name], rtol=0, atol=0)
    cost = average_gradient(Henon(), x0, T, observable).cost
    assert cost == Cost(steps=4 * T, vjps=4 * (T - 1), param_vjps=4 * T)
    noisy = lambda: Noisy(Henon(), sigma=0.05, seed=5)  # noqa: E731
    for method, options, direct in [
        ("kernel", {}, lambda: kernel_derivative(noisy(), x0, T, observable, None, average=True)),
        ("path-kernel", {"alpha": 0.5},
         lambda: path_kernel_derivative(noisy(), x0, T, observable, None, 0.5, average=True)),
    ]:
        door, reference = average_gradient(noisy(), x0, T, observable, method, **options), direct()
        for name in door:
            torch.testing.assert_close(door[name], reference[name], rtol=0, atol=0)
            torch.testing.assert_close(door.stderr[name], reference.stderr[name], rtol=0, atol=0)
    assert average_gradient(noisy(), x0, T, observable, "kernel").cost == Cost(steps=4 * T, param_vjps=4 * T)
