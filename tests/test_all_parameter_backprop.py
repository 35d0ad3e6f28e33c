"""All-parameter gradients of backpropagation (exact, clipped, truncated) and NILSAS.

Every all-parameter estimate is checked three ways: its directional derivative along random
unit directions v equals the scalar estimator run on the one-parameter family
``Line(map, v)`` on the same paths (the same arithmetic up to rounding: 1e-10 relative); it
agrees with central finite differences along v on a contracting map, where those are a
reference; and a tensor parameter holding Lorenz-63's (sigma, rho, beta) gives the scalar
d<z>/drho. Maps are small (Henon, Lorenz-63 and a 3-unit tanh network with weight-matrix
parameters) so that the file runs in seconds.
"""

from __future__ import annotations

import math

import chaosgrad
import pytest
import torch
from chaosgrad.derivatives import backprop_derivative, ensemble_adjoint, finite_difference
from chaosgrad.gradients import Cost, Gradient, Line, counted
from chaosgrad.gradients import random_directions as directions
from chaosgrad.shadowing import nilsas
from chaosgrad.systems import Henon, Lorenz63

F64 = torch.float64


class TanhNet(chaosgrad.Map):
    """x -> scale x + 0.3 W2 tanh(W1 x + b1): weight matrices, a bias vector and a scalar as
    parameters; contracting for small ``gain`` (the finite-difference reference), chaotic
    for large."""

    autonomous = True

    def __init__(self, dim: int = 3, hidden: int = 5, gain: float = 1.0, scale: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.W1 = chaosgrad.parameter(gain * torch.randn(hidden, dim, generator=g, dtype=F64) / math.sqrt(dim))
        self.b1 = chaosgrad.parameter(0.1 * torch.randn(hidden, generator=g, dtype=F64))
        self.W2 = chaosgrad.parameter(torch.randn(dim, hidden, generator=g, dtype=F64) / math.sqrt(hidden))
        self.scale = chaosgrad.parameter(scale)

    def step(self, x, n=0):
        return self.scale * x + 0.3 * torch.tanh(x @ self.W1.mT + self.b1) @ self.W2.mT


class Lorenz3(chaosgrad.Map):
    """Lorenz-63 with (sigma, rho, beta) as ONE (3,) tensor parameter ``theta``: the same RK4
    step and closed-form adjoint as :class:`Lorenz63` (delegated), so only the pairing with
    the parameters differs."""

    dim = 3
    autonomous = True
    is_flow = True  # with vector_field and dt below: NILSAS adds the neutral direction

    def __init__(self) -> None:
        super().__init__()
        self.inner = Lorenz63()
        self.theta = chaosgrad.parameter([10.0, 28.0, 8.0 / 3.0])
        self.dt = self.inner.dt

    def params(self):
        return {"theta": self.theta}

    def vector_field(self, x):
        return self.inner.vector_field(x)

    def step(self, x, n=0):
        sigma, rho, beta = self.theta
        return torch.func.functional_call(self.inner, {"sigma": sigma, "rho": rho, "beta": beta}, (x, n))

    def _vjp(self, x, W, n):
        return self.inner._vjp(x, W, n)


def squares(x):
    return (x**2).sum(-1)


def starts(map, members, seed, settle=0):
    x = 0.1 * torch.randn(members, map.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return map.trajectory(x, settle)[-1] if settle else x


MODES = {
    "exact": {},
    "clip": dict(clip=0.3),
    "block": dict(truncate=4),
    "sliding": dict(truncate=4, window="sliding"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["henon", "tanh"])
def test_backprop_direction_equals_the_scalar_estimator_on_the_line(name, mode):
    """Along three unit directions, every member's directional derivative is the scalar
    estimator's on Line(map, v) from the same starts: the same terms summed in another order,
    so equal to rounding (1e-10 relative, over derivatives of order 1-100)."""
    map = Henon() if name == "henon" else TanhNet(gain=3.0)
    x0 = starts(map, 5, seed=1, settle=20)
    G = backprop_derivative(map, x0, 12, squares, None, warmup=3, **MODES[mode])
    assert isinstance(G, Gradient) and G.names == list(map.params())
    assert all(G.samples[k].shape == (5, *p.shape) for k, p in map.params().items())
    for v in directions(map, seed=11):
        line = backprop_derivative(Line(map, v), x0, 12, squares, "t", warmup=3, **MODES[mode])
        torch.testing.assert_close(G.along(v).samples, line, rtol=1e-10, atol=1e-12)
    if mode == "clip":  # the clip acts: the clipped gradient is not the exact one
        exact = backprop_derivative(map, x0, 12, squares, None, warmup=3)
        assert (G.flat() - exact.flat()).abs().max() > 1e-3


def test_backprop_agrees_with_central_differences_on_a_contracting_map():
    """Exact backpropagation along v against central differences of J_T on Line(map, v, t)
    with shared starts (contracting map: the quotient's error is O(h^2) ~ 1e-8): within 3
    combined standard errors over 16 members."""
    map = TanhNet(gain=0.8)
    x0 = starts(map, 16, seed=2)
    G = backprop_derivative(map, x0, 20, squares, None, warmup=2)
    for v in directions(map, seed=11):
        fd = finite_difference(lambda t, v=v: Line(map, v, t), 0.0, 1e-4, x0, 20, squares, warmup=2)
        bp = G.along(v)
        assert abs(bp.value - fd.value) <= 3 * math.hypot(bp.stderr, fd.stderr)
        assert abs(bp.value - fd.value) <= 1e-6 * max(1.0, abs(fd.value))  # and much closer than that


def test_total_clipping_rescales_each_members_gradient_norm():
    """clip_total for several parameters: each member's gradient, all listed parameters together,
    rescaled to norm min(|g|, c) (clip_grad_norm_); for one scalar parameter in a list, the
    scalar path's clamp."""
    map = TanhNet(gain=3.0)
    x0 = starts(map, 6, seed=3, settle=20)
    exact = backprop_derivative(map, x0, 15, squares, ["W1", "scale"])
    norms = torch.cat([exact.samples["W1"].reshape(6, -1), exact.samples["scale"][:, None]], -1).norm(dim=-1)
    c = float(norms.median())  # so that some members are clipped and others not
    clipped = backprop_derivative(map, x0, 15, squares, ["W1", "scale"], clip_total=c)
    factor = torch.clamp(c / norms, max=1.0)
    # two runs of the same sums: the default derivatives' first call on a map runs torch.func, later
    # calls the batched path, whose roundings differ by ulps per step (measured 2e-14 over 15 steps)
    torch.testing.assert_close(clipped.samples["W1"], exact.samples["W1"] * factor[:, None, None], rtol=1e-12, atol=0)
    torch.testing.assert_close(clipped.samples["scale"], exact.samples["scale"] * factor, rtol=1e-12, atol=0)
    one = backprop_derivative(Henon(), starts(Henon(), 6, 4, 20), 15, squares, ["a"], clip_total=0.5)
    scalar = backprop_derivative(Henon(), starts(Henon(), 6, 4, 20), 15, squares, "a", clip_total=0.5)
    torch.testing.assert_close(one.samples["a"], scalar, rtol=1e-12, atol=0)
    assert scalar.abs().max() == 0.5  # the clamp acted


def test_one_state_gives_one_sample_and_ensemble_adjoint_passes_the_list_through():
    map = TanhNet()
    G = backprop_derivative(map, starts(map, 1, seed=5)[0], 10, squares, None)
    assert G.stderr is None and G.samples["W2"].shape == (1, 3, 5)
    x0 = starts(map, 4, seed=6)
    ea = ensemble_adjoint(map, x0, 5, squares, ["W2", "b1"])
    bp = backprop_derivative(map, x0, 5, squares, ["W2", "b1"])
    assert ea.names == ["W2", "b1"]
    torch.testing.assert_close(ea.samples["W2"], bp.samples["W2"], rtol=0, atol=0)


def test_backprop_cost_is_one_reverse_pass_per_step_whatever_the_parameters():
    """Counted: T steps forward, T - 1 adjoint steps and T parameter gradients per member,
    for every parameter at once (no forward-mode derivative per parameter)."""
    map, T = TanhNet(), 10
    with counted(map) as (m, counter):
        backprop_derivative(m, starts(map, 4, seed=7), T, squares, None)
    assert counter.cost == Cost(steps=4 * T, vjps=4 * (T - 1), param_vjps=4 * T)


@pytest.mark.parametrize("name", ["henon", "tanh"])
def test_nilsas_direction_equals_the_scalar_estimator_on_the_line(name):
    """NILSAS's gradients along three unit directions against nilsas on Line(map, v): the same
    least squares (M, the seed and the orbit shared), the pairing with the parameters made
    once per direction by forward mode there and for all parameters by reverse mode here
    (tensors) or by the scalar path (scalars): equal to 1e-10 relative."""
    if name == "henon":  # chaotic: M = 1, per-member derivatives of order 1
        map, M, x0 = Henon(), 1, starts(Henon(), 4, seed=8, settle=50)
    else:  # chaotic tanh network with tensor parameters
        map, M, x0 = TanhNet(gain=3.0), 1, starts(TanhNet(gain=3.0), 4, seed=8, settle=50)
    r = nilsas(map, x0, squares, 8, 10, n_unstable=M)
    assert r.gradients.names == list(map.params())
    scalars = [k for k, p in map.params().items() if p.numel() == 1]
    assert list(r.gradient) == scalars  # the scalar results as always...
    for k in scalars:  # ...and the same numbers in gradients
        torch.testing.assert_close(r.gradients.samples[k], r.per_member[k], rtol=0, atol=0)
    for v in directions(map, seed=11):
        line = nilsas(Line(map, v), x0, squares, 8, 10, n_unstable=M)
        torch.testing.assert_close(r.gradients.along(v).samples, line.per_member["t"], rtol=1e-10, atol=1e-12)


def test_nilsas_agrees_with_central_differences_on_a_contracting_map():
    """M = 0 on a contracting map: NILSAS is backpropagation of the average over the run
    (start held), which central differences of J_N along v with shared starts reproduce to
    O(h^2): within 3 combined standard errors over 16 members, and equal to the exact
    all-parameter backpropagation."""
    map = TanhNet(gain=0.8)
    x0 = starts(map, 16, seed=9)
    r = nilsas(map, x0, squares, 5, 8, n_unstable=0)
    bp = backprop_derivative(map, x0, 40, squares, None)
    torch.testing.assert_close(r.gradients.flat(), bp.flat(), rtol=1e-10, atol=1e-14)
    for v in directions(map, seed=11):
        fd = finite_difference(lambda t, v=v: Line(map, v, t), 0.0, 1e-4, x0, 40, squares)
        got = r.gradients.along(v)
        assert abs(got.value - fd.value) <= 3 * math.hypot(got.stderr, fd.stderr)


def test_lorenz_with_one_tensor_parameter_gives_the_scalar_drho():
    """(sigma, rho, beta) as one (3,) tensor: entry 1 of its gradient is d<z>/drho of the
    scalar Lorenz63, by NILSAS (M = 2 with the flow's time-dilation condition; the tensor
    is paired by reverse mode after the least squares) and by backpropagation."""
    scalar_map, tensor_map = Lorenz63(), Lorenz3()
    x0 = scalar_map.trajectory(torch.tensor([[1.0, 1.0, 20.0], [-3.0, 2.0, 25.0]], dtype=F64), 500)[-1]
    z = lambda x: x[..., 2]  # noqa: E731
    scalar = nilsas(scalar_map, x0, z, 10, 50, n_unstable=2)
    tensor = nilsas(tensor_map, x0, z, 10, 50, n_unstable=2)
    assert tensor.gradient == {} and tensor.gradients.samples["theta"].shape == (2, 3)
    for i, name in enumerate(["sigma", "rho", "beta"]):
        torch.testing.assert_close(tensor.gradients.samples["theta"][:, i], scalar.per_member[name],
                                   rtol=1e-9, atol=1e-12)
    bp_tensor = backprop_derivative(tensor_map, x0, 30, z, None)
    bp_scalar = backprop_derivative(scalar_map, x0, 30, z, "rho")
    torch.testing.assert_close(bp_tensor.samples["theta"][:, 1], bp_scalar, rtol=1e-10, atol=1e-12)


def test_nilsas_with_one_member_samples_blocks_of_segments():
    """One run: the samples are block means over equal blocks of segments (12 segments: 12
    blocks), whose mean is the run's derivative, the scalar result's value."""
    r = nilsas(Henon(), starts(Henon(), 1, seed=10, settle=50)[0], squares, 12, 10, n_unstable=1)
    assert r.gradients.samples["a"].shape == (12,)
    assert float(r.gradients["a"]) == pytest.approx(r.gradient["a"].value, rel=1e-12)
    assert float(r.gradients.stderr["a"]) == pytest.approx(r.gradient["a"].stderr, rel=1e-10)
    r = nilsas(Henon(), starts(Henon(), 1, seed=10, settle=50), squares, 30, 5, n_unstable=1)  # 30 = 15 x 2
    assert r.gradients.samples["b"].shape == (15,)
    assert float(r.gradients["b"]) == pytest.approx(r.gradient["b"].value, rel=1e-12)


def test_nilsas_with_every_parameter_costs_at_most_one_and_a_half_m_plus_one_backpropagations():
    """Counted products (steps, vjps, parameter jvps and vjps, each per state and vector) of
    NILSAS with every parameter of the tanh network (M = 1, the pilot skipped) over those of
    M + 1 backpropagations of the same members and steps (T steps, T vjps, T param_vjps)."""
    map, M, members, N = TanhNet(gain=3.0), 1, 4, 60
    x0 = starts(map, members, seed=12, settle=30)
    with counted(map) as (m, counter):
        nilsas(m, x0, squares, 6, 10, n_unstable=M)
    cost = counter.cost
    backprop = 3 * members * N
    ratio = (cost.steps + cost.jvps + cost.vjps + cost.param_jvps + cost.param_vjps) / ((M + 1) * backprop)
    assert cost.param_vjps == members * N and cost.vjps == (M + 1) * members * N
    assert ratio <= 1.5, cost


def test_bad_input_is_named():
    map, x0 = TanhNet(), starts(TanhNet(), 2, seed=13)
    known = r"for TanhNet; it has \['W1', 'W2', 'b1', 'scale'\]"
    with pytest.raises(KeyError, match=r"unknown parameter\(s\) \['W3'\] " + known):
        backprop_derivative(map, x0, 5, squares, ["W1", "W3"])
    with pytest.raises(KeyError, match=r"unknown parameter\(s\) \['W3'\]"):
        nilsas(map, x0, squares, 2, 3, n_unstable=0, parameter=["W3"])
    with pytest.raises(ValueError, match=r"parameter lists \['W1'\] more than once; name each parameter once"):
        backprop_derivative(map, x0, 5, squares, ["W1", "b1", "W1"])
    with pytest.raises(ValueError, match=r"parameter lists \['W1'\] more than once"):
        nilsas(map, x0, squares, 2, 3, n_unstable=0, parameter=["W1", "W1"])
    vector = lambda x: x**2  # noqa: E731
    with pytest.raises(ValueError, match=r"backprop_derivative differentiates one scalar observable.*kernel_deriv"):
        backprop_derivative(map, x0, 5, vector, None)
    with pytest.raises(ValueError, match=r"values of shape \(\.\.\.\); for states \(5, 2, 3\) it returned "
                                         r"\(5, 2, 3\)\. nilsas differentiates one scalar observable.*kernel_deriv"):
        nilsas(map, x0, vector, 2, 2, n_unstable=0, parameter=None)


class StepByStep(TanhNet):
    """The same map declared time-dependent: backpropagation then pairs each step's parameter
    gradient with the adjoint step in one fused call instead of batching many steps."""

    autonomous = False


@pytest.mark.parametrize("options", [{}, {"clip": 0.5}, {"truncate": 4}, {"truncate": 3, "window": "sliding"}])
def test_batched_and_step_by_step_pairing_agree(options):
    """On an autonomous map the parameter vjps of many steps go into one call (about 1,000
    states); step by step, fused with the adjoint, gives the same sums in another order: equal
    to rounding (1e-12), at the same counted cost."""
    x0 = 0.5 * torch.randn(6, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    observable = lambda x: (x**2).sum(-1)  # noqa: E731
    results = []
    for map in (TanhNet(gain=2.0), StepByStep(gain=2.0)):
        with counted(map) as (m, counter):
            results.append((backprop_derivative(m, x0, 300, observable, None, **options), counter.cost))
    (batched, cost), (stepwise, cost_stepwise) = results
    assert cost == cost_stepwise
    for name in batched:
        torch.testing.assert_close(batched.samples[name], stepwise.samples[name], rtol=1e-12, atol=1e-12)
