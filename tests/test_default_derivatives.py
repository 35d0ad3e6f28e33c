"""The fast default derivatives of a Map (columns as ensemble members, reverse mode) against the
torch.func versions they replace, their fallback, and random time-dependent maps.

Tolerances. Both ways evaluate the same exact derivative of the same step; they differ only in
the order of floating-point sums (a Jacobian times V against a pass per column), a few ulps of
the largest entry: 1e-12 relative to it. Maps with exact Jacobians (a matrix draw) compare to
the matrix at the same 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_maps import SYSTEMS, states

import chaosgrad
from chaosgrad import maps
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Noisy

EXACT = 1e-12
Map = chaosgrad.Map


def assert_equal_to_ulps(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=EXACT, atol=EXACT * scale)


@pytest.fixture(params=["jacobian", "members"])
def branch(request, monkeypatch) -> str:
    """Force one of the two strategies of the fast path (the Jacobian times the columns, or the
    columns as members: one reverse pass for vjp, double backward for jvp)."""
    monkeypatch.setattr(maps, "_jacobian_pays", lambda x, k, passes: request.param == "jacobian")
    return request.param


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_fast_defaults_equal_torch_func_on_every_system(name, branch):
    system = SYSTEMS[name]()
    system = system.map if isinstance(system, Noisy) else system  # Noisy delegates its derivatives
    g = torch.Generator().manual_seed(3)
    for shape in [(5,), (2, 3)]:
        x = states(system, shape)
        for k in (1, 4):
            V = torch.randn(*shape, system.dim, k, generator=g, dtype=torch.float64)
            assert_equal_to_ulps(Map._jvp(system, x, V, 2), Map._jvp_torch_func(system, x, V, 2))
            assert_equal_to_ulps(Map._vjp(system, x, V, 2), Map._vjp_torch_func(system, x, V, 2))
            fast = Map._param_vjp(system, x, V[..., 0], 2, 0)
            reference = Map._param_vjp_torch_func(system, x, V[..., 0], 2, 0)
            assert fast.keys() == reference.keys()
            for key in fast:
                assert_equal_to_ulps(fast[key], reference[key])
    assert system._default_derivatives == {"jvp": "fast", "vjp": "fast", "param_vjp": "fast"}


class RandomMatrices(Map):
    """x_{n+1} = A_n x_n with A_n drawn from a generator seeded by n: Df_n = A_n exactly."""

    dim = 5

    def matrix(self, n: int) -> torch.Tensor:
        return torch.randn(self.dim, self.dim, generator=torch.Generator().manual_seed(n), dtype=torch.float64)

    def step(self, x, n=0):
        return x @ self.matrix(n).mT


def test_a_random_time_dependent_map_gets_the_same_draw_for_every_column(branch):
    m = RandomMatrices()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    V = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    for n in (0, 7):
        A = m.matrix(n)
        assert_equal_to_ulps(m.jvp(x, V, n), A @ V)
        assert_equal_to_ulps(m.vjp(x, V, n), A.mT @ V)
        assert_equal_to_ulps(m.step_jvp(x, V, n)[0], x @ A.mT)
    # an untied random network (weights drawn per layer from seeded generators): torch.func agrees
    net = RandomNetwork(7, sigma_w2=2.0, sigma_b2=0.1)
    x, V = torch.randn(4, 7, generator=g, dtype=torch.float64), torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    assert_equal_to_ulps(Map._jvp(net, x, V, 3), Map._jvp_torch_func(net, x, V, 3))
    assert_equal_to_ulps(Map._vjp(net, x, V, 3), Map._vjp_torch_func(net, x, V, 3))


class FixedEnsembleShape(Map):
    """A step written for states of shape (members, dim) only (einsum with one batch letter):
    legal under torch.func's vmap, which hides the column axis, but not with the columns as an
    extra ensemble axis, so the fast path raises and the default falls back to torch.func."""

    dim = 3

    def __init__(self):
        super().__init__()
        self.A = chaosgrad.parameter(torch.arange(9.0).reshape(3, 3) / 10 - 0.4)

    def step(self, x, n=0):
        return torch.tanh(torch.einsum("bj,ij->bi", x, self.A))


def test_a_step_the_fast_path_refuses_falls_back_to_torch_func():
    m = FixedEnsembleShape()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    V = torch.randn(6, 3, 2, generator=g, dtype=torch.float64)
    with pytest.raises(RuntimeError):  # the fast path itself does raise
        maps._jvp_by_reverse_mode(m, x, V, 0)
    J = (1 - m.step(x) ** 2)[..., None] * m.A  # diag(1 - tanh^2) A, exactly
    assert_equal_to_ulps(m.jvp(x, V), J @ V)
    assert_equal_to_ulps(m.vjp(x, V), J.mT @ V)
    assert m._default_derivatives == {"jvp": "torch.func", "vjp": "torch.func"}  # later calls go there directly
    assert_equal_to_ulps(m.jvp(x, V), J @ V)


class UsesNumpy(Map):
    dim = 2

    def step(self, x, n=0):
        return torch.as_tensor(np.tanh(x.numpy()))


def test_a_step_neither_path_can_differentiate_keeps_the_clear_message():
    x, V = torch.ones(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    for derivative in (UsesNumpy().jvp, UsesNumpy().vjp):
        with pytest.raises(RuntimeError, match=r"differentiating UsesNumpy.step with torch.func failed: .*"
                                               r"no NumPy.*override _jvp and _vjp"):
            derivative(x, V)


class MixesMembers(Map):
    """Breaks the contract: each member is centred on the ensemble mean."""

    dim = 2

    def step(self, x, n=0):
        return torch.sin(x - x.mean(-2, keepdim=True))


def test_a_step_that_mixes_members_is_caught_once_and_kept_on_torch_func(branch):
    m, g = MixesMembers(), torch.Generator().manual_seed(4)
    x, V = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"default jvp of MixesMembers.step .* disagrees with torch.func's: "
                                            r"step mixes ensemble members"):
        first = m.jvp(x, V)
    assert m._default_derivatives == {"jvp": "torch.func"}
    assert_equal_to_ulps(first, Map._jvp_torch_func(m, x, V, 0))
    assert_equal_to_ulps(m.jvp(x, V), first)


class Constant(Map):
    dim = 2

    def step(self, x, n=0):
        return torch.zeros_like(x) + 1.0


def test_a_step_that_ignores_its_state_has_zero_derivatives_and_no_parameters(branch):
    """The fast path alone (torch.func's vjp fails on this map inside vmap, a PyTorch limitation)."""
    x, V = torch.ones(3, 2, dtype=torch.float64), torch.ones(3, 2, 4, dtype=torch.float64)
    assert torch.equal(maps._jvp_by_reverse_mode(Constant(), x, V, 0), torch.zeros_like(V))
    assert torch.equal(maps._vjp_by_reverse_mode(Constant(), x, V, 0), torch.zeros_like(V))
    assert maps._param_vjp_summed(Constant(), x, x, 0) == {}
