"""chaosgrad.models.NeuralMap: closed-form derivatives against torch.func and finite differences,
the parameter layout, the seeded near-identity initialisation, scaling from data, bad input.

Tolerances. The closed forms and torch.func evaluate the same products in a different order
(and sum members in a different order when ``keep`` < the ensemble rank): they agree to a few
ulps of numbers of order one, so 1e-12. The dualities are exact up to rounding: 1e-12 relative
to the largest entry. Central differences with h = 1e-6 of a map whose third derivatives are of
order one have truncation error ~ h^2 = 1e-12 and rounding error ~ eps |f| / h ~ 1e-9 for states
of size ~5: a relative tolerance of 1e-6 leaves a thousandfold margin and still fails for any
wrong entry (every entry of the network's part of Df is at least ~1e-3 of the largest here).
"""

from __future__ import annotations

import math

import pytest
import torch

import chaosgrad
from chaosgrad.models import NeuralMap

EXACT = 1e-12
H = 1e-6
FD_RTOL = 1e-6


def neural_map(**options) -> NeuralMap:
    """A small map with nontrivial scalings and an order-one output layer, so the network's part
    of every derivative is not swamped by the identity."""
    options = {"widths": (7, 5), "dt": 0.1, "in_shift": [0.1, 0.2, -0.3], "in_scale": [1.0, 2.0, 0.5],
               "out_scale": [3.0, 1.0, 2.0], "seed": 1, "output_gain": 1.0} | options
    return NeuralMap(3, **options)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def direction(net: NeuralMap, seed: int) -> dict[str, torch.Tensor]:
    """A random direction in parameter space, one tensor per parameter."""
    return {k: randn(*p.shape, seed=seed + i) for i, (k, p) in enumerate(net.params().items())}


def shifted(net: NeuralMap, delta: dict[str, torch.Tensor], t: float, x: torch.Tensor) -> torch.Tensor:
    """f(x; theta + t delta)."""
    moved = {k: p + t * delta[k] for k, p in net.params().items()}
    return torch.func.functional_call(net, moved, (x,))


def assert_exact(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=EXACT, atol=EXACT)


SHAPES = [(5,), (2, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 4])
def test_state_derivatives_equal_torch_func(shape, k):
    net = neural_map()
    x, V = randn(*shape, 3, seed=0), randn(*shape, 3, k, seed=1)
    assert_exact(net._jvp(x, V, 0), chaosgrad.Map._jvp(net, x, V, 0))
    assert_exact(net._vjp(x, V, 0), chaosgrad.Map._vjp(net, x, V, 0))
    y, JV = net._step_jvp(x, V, 0)
    assert_exact(y, net.step(x))
    assert_exact(JV, chaosgrad.Map._jvp(net, x, V, 0))
    # the public doors broadcast one set of columns against the ensemble
    assert_exact(net.jvp(x, V[(0,) * len(shape)]), chaosgrad.Map._jvp(net, x, V[(0,) * len(shape)].expand_as(V), 0))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("keep", [None, 0, 1])
def test_parameter_gradients_equal_torch_func(shape, keep):
    net = neural_map()
    x, w = randn(*shape, 3, seed=2), randn(*shape, 3, seed=3)
    kept = len(shape) if keep is None else keep
    reference = chaosgrad.Map._param_vjp(net, x, w, 0, kept)
    grads = net.param_vjp(x, w, keep=keep)
    assert list(grads) == list(net.params())
    for name, p in net.params().items():
        assert grads[name].shape == (*shape[:kept], *p.shape)
        assert_exact(grads[name], reference[name])
    y, fused = net._step_param_vjp(x, w, 0, kept)
    assert_exact(y, net.step(x))
    pulled, both = net._vjp_param_vjp(x, w, 0, kept)
    assert_exact(pulled, chaosgrad.Map._vjp(net, x, w[..., None], 0)[..., 0])
    for name in net.params():
        assert_exact(fused[name], reference[name])
        assert_exact(both[name], reference[name])


@pytest.mark.parametrize("shape", SHAPES)
def test_param_jvp_equals_torch_func_and_central_differences(shape):
    net = neural_map()
    x = randn(*shape, 3, seed=4)
    delta = direction(net, seed=10)
    jv = net.param_jvp(x, delta)
    assert_exact(jv, chaosgrad.Map.param_jvp(net, x, delta))
    fd = (shifted(net, delta, H, x) - shifted(net, delta, -H, x)) / (2 * H)
    torch.testing.assert_close(jv, fd, rtol=FD_RTOL, atol=FD_RTOL * fd.abs().max().item())
    # a subset of the parameters, and a number as a direction (every entry of that parameter)
    partial = {"W1": delta["W1"], "b2": 0.5}
    assert_exact(net.param_jvp(x, partial), chaosgrad.Map.param_jvp(net, x, partial))
    assert_exact(net.param_jvp(x, {}), torch.zeros_like(x))


def test_jvp_matches_central_differences():
    net = neural_map()
    x, V = randn(4, 3, seed=5), randn(3, 3, seed=6)
    jv = net.jvp(x, V)
    for j in range(3):
        fd = (net.step(x + H * V[:, j]) - net.step(x - H * V[:, j])) / (2 * H)
        torch.testing.assert_close(jv[..., j], fd, rtol=FD_RTOL, atol=FD_RTOL * fd.abs().max().item())
        network_part = jv[..., j] - V[:, j]  # the check sees the network, not only the identity
        assert network_part.abs().max() > 1e-2


def test_dualities():
    """<W, Df V> = <Df^T W, V> and <w, (df/dtheta) delta> = sum over parameters of <param_vjp, delta>."""
    net = neural_map()
    x, V, W = randn(2, 3, 3, seed=7), randn(2, 3, 3, 4, seed=8), randn(2, 3, 3, 4, seed=9)
    lhs = torch.einsum("...ik,...ik->...k", W, net.jvp(x, V))
    rhs = torch.einsum("...ik,...ik->...k", net.vjp(x, W), V)
    torch.testing.assert_close(lhs, rhs, rtol=EXACT, atol=EXACT * lhs.abs().max().item())
    w, delta = W[..., 0], direction(net, seed=20)
    grads = net.param_vjp(x, w, keep=0)
    lhs = (w * net.param_jvp(x, delta)).sum()
    rhs = sum((grads[k] * delta[k]).sum() for k in delta)
    torch.testing.assert_close(lhs, rhs, rtol=EXACT, atol=EXACT * lhs.abs().item())


@pytest.mark.parametrize("dim,widths", [(3, (32, 24)), (2, (5,)), (4, ()), (1, (3, 4, 5))])
def test_parameter_layout_and_count(dim, widths):
    net = NeuralMap(dim, widths)
    sizes = (dim, *widths, dim)
    assert list(net.params()) == [f"{kind}{l}" for l in range(len(widths) + 1) for kind in "Wb"]
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        assert net.params()[f"W{l}"].shape == (fan_out, fan_in)
        assert net.params()[f"b{l}"].shape == (fan_out,)
        assert net.params()[f"W{l}"].dtype == torch.float64
    count = sum(p.numel() for p in net.params().values())
    assert count == sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    assert dict(net.named_buffers()).keys() == {"in_shift", "in_scale", "out_scale"}
    if (dim, widths) == (3, (32, 24)):
        assert count == 995


def test_initialisation_is_seeded_and_near_the_identity():
    x = randn(1000, 3, seed=11)
    a, b, c = NeuralMap(3, seed=5), NeuralMap(3, seed=5), NeuralMap(3, seed=6)
    for name, p in a.params().items():
        torch.testing.assert_close(p, b.params()[name], rtol=0, atol=0)
    assert (a.step(x) - c.step(x)).abs().max() > 1e-4
    assert all(float(p.abs().max()) == 0 for k, p in a.params().items() if k.startswith("b"))
    # LeCun-normal hidden weights: the variance of W0's 96 entries is 1/3 within its sampling error
    # (relative standard error sqrt(2/96) = 0.14: 4 of them allowed)
    assert abs(a.W0.var().item() * 3 - 1) < 4 * math.sqrt(2 / 96)
    # |f(x) - x| = dt * |MLP|, the MLP's output of order output_gain = 0.1: about 1e-3 at dt = 0.01
    moved = (a.step(x) - x).abs()
    assert moved.max() < 0.01 and moved.mean() > 1e-5
    zero = NeuralMap(3, seed=5, output_gain=0.0)
    assert_exact(zero.step(x), x)


def test_scaling_from_an_orbit():
    g = torch.Generator().manual_seed(12)
    orbit = torch.cumsum(torch.randn(200, 2, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1],
                         dtype=torch.float64), 0) + torch.tensor([0.0, 10.0, -3.0], dtype=torch.float64)
    net = NeuralMap.from_orbit(orbit, widths=(6,), dt=0.5, seed=3)
    states = orbit.reshape(-1, 3)
    assert_exact(net.in_shift, states.mean(0))
    assert_exact(net.in_scale, states.std(0, correction=0))
    assert_exact(net.out_scale, ((orbit[1:] - orbit[:-1]) / 0.5).reshape(-1, 3).std(0, correction=0))
    u = (states - net.in_shift) / net.in_scale
    assert_exact(u.mean(0), torch.zeros(3, dtype=torch.float64))
    assert (net.dt, net.widths, net.seed) == (0.5, (6,), 3)
    # the scalings enter the derivatives (buffers, not parameters): closed form = torch.func
    V = randn(5, 3, 2, seed=13)
    assert_exact(net.jvp(orbit[0, 0], V[0]), chaosgrad.Map._jvp(net, orbit[0, 0], V[0], 0))
    assert "in_scale" not in net.params()


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="dim must be a whole number >= 1"):
        NeuralMap(0)
    with pytest.raises(ValueError, match=r"widths must be a sequence of whole numbers >= 1 .*e\.g\. \(32, 24\)"):
        NeuralMap(3, widths=32)
    with pytest.raises(ValueError, match="widths must be"):
        NeuralMap(3, widths=(32, 0))
    with pytest.raises(ValueError, match="widths must be"):
        NeuralMap(3, widths=(2.5,))
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        NeuralMap(3, dt=0.0)
    with pytest.raises(ValueError, match="in_scale must be finite and > 0"):
        NeuralMap(3, in_scale=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="out_scale must be finite and > 0"):
        NeuralMap(3, out_scale=math.inf)
    with pytest.raises(ValueError, match="in_shift must be finite"):
        NeuralMap(3, in_shift=math.nan)
    with pytest.raises(ValueError, match=r"out_scale must be a number or a tensor of shape \(3,\)"):
        NeuralMap(3, out_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="output_gain must be a finite number >= 0"):
        NeuralMap(3, output_gain=-1.0)
    with pytest.raises(ValueError, match=r"does not vary in coordinate\(s\) \[1\]"):
        NeuralMap.from_orbit(torch.tensor([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least two consecutive states"):
        NeuralMap.from_orbit(torch.zeros(1, 3, dtype=torch.float64))
    with pytest.raises(KeyError, match=r"unknown parameter\(s\) \['W9'\] for NeuralMap"):
        NeuralMap(3).param_jvp(torch.zeros(3, dtype=torch.float64), {"W9": 1.0})
