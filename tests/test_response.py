"""The whole linear response (chaosgrad.response): exact values on cat maps, the solenoid against
finite differences, the second-derivative terms against differences of first derivatives, and
bad input.

The statistical tests compare an estimate with an exact value at 3 standard errors of the mean
over 64 independent orbits: a correct estimator fails one of them by chance about 3 times in
1000 (they are seeded, so a given checkout passes or fails deterministically).
"""

import math

import pytest
import torch

from chaosgrad.maps import Map, parameter
from chaosgrad.response import linear_response, log_expansion_gradients
from chaosgrad.shadowing import nilsas
from chaosgrad.systems import ConjugateCat, ModifiedSolenoid, PerturbedCat


def cos_y(x):
    return torch.cos(2 * math.pi * x[..., 1])


def cos_x(x):
    return torch.cos(2 * math.pi * x[..., 0])


def starts(n, dim=2, seed=0, scale=1.0):
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


class TranslatedCat(Map):
    """The cat map moved by gamma * c: its Jacobian, hence its unstable direction and unstable
    Jacobian, does not depend on the state or on gamma, so the unstable contribution is exactly 0
    (and Lebesgue measure stays invariant: the whole response is 0 too)."""

    autonomous = True
    dim = 2

    def __init__(self, gamma=0.0):
        super().__init__()
        self.gamma = parameter(gamma)

    def step(self, x, n=0):
        y = torch.stack((2 * x[..., 0] + x[..., 1], x[..., 0] + x[..., 1]), -1)
        return torch.remainder(y + self.gamma * torch.tensor([0.3, 0.7], dtype=x.dtype), 1.0)


def test_area_preserving_cat_map_response_is_zero():
    # the draft's case: shadowing alone gives 0.2239; the unstable contribution cancels it
    r = linear_response(PerturbedCat(0.1), starts(64), cos_y, 100, 10, window=5)
    total, shadow = r.gradient["eps"], r.shadowing["eps"]
    assert total.stderr <= 0.01
    assert abs(total.value) <= 3 * total.stderr
    assert abs(shadow.value - 0.2239) <= 3 * shadow.stderr + 0.001  # chapter 4's limit, its O(1/N) term
    assert abs(r.unstable["eps"].value + shadow.value) <= 3 * total.stderr


def test_shadowing_part_is_nilsas():
    x = starts(16, seed=1)
    r = linear_response(PerturbedCat(0.1), x, cos_y, 20, 10, window=3, warmup=50)
    s = nilsas(PerturbedCat(0.1), x, cos_y, 20, 10, n_unstable=1, warmup=50)
    assert torch.allclose(r.per_member["eps"][0], s.per_member["eps"], rtol=1e-10, atol=1e-14)


def test_conjugacy_perturbation_shadowing_is_whole_response():
    # d<cos 2 pi x>/d gamma = 1/2 exactly; the unstable contribution vanishes
    r = linear_response(ConjugateCat(0.0), starts(64, seed=2), cos_x, 100, 10, window=5)
    for est in (r.gradient["gamma"], r.shadowing["gamma"]):
        assert abs(est.value - 0.5) <= 3 * est.stderr
    assert abs(r.unstable["gamma"].value) <= 3 * r.unstable["gamma"].stderr


def test_unstable_contribution_is_exactly_zero_when_the_unstable_jacobian_is_constant():
    r = linear_response(TranslatedCat(0.1), starts(8, seed=3), cos_y, 10, 10, window=3, warmup=20)
    assert r.unstable["gamma"].value == 0.0
    assert bool((r.per_member["gamma"][1] == 0).all())
    assert abs(r.gradient["gamma"].value) <= 3 * r.gradient["gamma"].stderr


def test_solenoid_against_finite_differences():
    # a 4-dimensional solenoid (3 unstable directions) where the unstable contribution is large
    sol = ModifiedSolenoid(0.1, 0.1, m=3)
    x = starts(64, 4, seed=7, scale=2 * math.pi)
    r = linear_response(sol, x, ModifiedSolenoid.observable, 120, 10, window=8, n_unstable=3)
    xs = starts(20000, 4, seed=5, scale=2 * math.pi)
    fd = {"gamma0": lambda v: ModifiedSolenoid(v, 0.1, m=3), "gamma1": lambda v: ModifiedSolenoid(0.1, v, m=3)}
    from chaosgrad.derivatives import finite_difference

    for name, make in fd.items():
        ref = finite_difference(make, 0.1, 0.02, xs, 500, ModifiedSolenoid.observable, warmup=20)
        est = r.gradient[name]
        assert abs(est.value - ref.value) <= 3 * math.hypot(est.stderr, ref.stderr), (name, est, ref)
    # shadowing alone misses gamma1's response by many error bars
    miss = r.shadowing["gamma1"] - r.gradient["gamma1"]
    assert abs(miss.value) > 5 * r.gradient["gamma1"].stderr


def log_det(map, x, E, W, n=0):
    return torch.linalg.slogdet(W.mT @ map.jvp(x, E, n))[1]


class SolenoidByTorchFunc(ModifiedSolenoid):
    """The solenoid without its closed-form second derivatives: torch.func differentiates it."""

    def _log_expansion_gradients(self, x, E, W, n, names):
        return None


@pytest.mark.parametrize("kind", [ModifiedSolenoid, SolenoidByTorchFunc])
def test_log_expansion_gradients_against_differences_of_first_derivatives(kind):
    g = torch.Generator().manual_seed(6)
    sol = kind(0.1, 0.2, m=3)
    x = torch.rand(2, 4, generator=g, dtype=torch.float64) * 6
    E = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    W = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    gx, gg = log_expansion_gradients(sol, x, E, W, 0, ["gamma0", "gamma1"])
    h = 1e-5
    for i in range(4):
        dx = torch.zeros(4, dtype=torch.float64)
        dx[i] = h
        fd = (log_det(sol, x + dx, E, W) - log_det(sol, x - dx, E, W)) / (2 * h)
        assert torch.allclose(gx[:, i], fd, rtol=1e-6, atol=1e-8)
    assert torch.allclose(gg[:, 0], torch.zeros(2, dtype=torch.float64), atol=1e-12)  # gamma0 is a shift
    fd1 = (log_det(ModifiedSolenoid(0.1, 0.2 + h, m=3), x, E, W)
           - log_det(ModifiedSolenoid(0.1, 0.2 - h, m=3), x, E, W)) / (2 * h)
    assert torch.allclose(gg[:, 1], fd1, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kwargs, message", [
    ({"window": -1}, "window must be"),
    ({"window": 10, "warmup": 5}, "warmup must be at least window = 10"),
    ({"window": 2, "n_unstable": 0}, "n_unstable must be a whole number with 1 <= n_unstable <= dim = 2"),
    ({"window": 2, "n_unstable": 3}, "n_unstable must be a whole number with 1 <= n_unstable <= dim = 2"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        linear_response(PerturbedCat(0.1), starts(4), cos_y, 4, 5, **kwargs)


def test_unknown_parameter_is_named():
    with pytest.raises(KeyError, match="nope"):
        linear_response(PerturbedCat(0.1), starts(4), cos_y, 4, 5, window=2, parameter="nope")


def test_tensor_parameter_is_refused_by_name():
    class Shifted(Map):
        autonomous = True
        dim = 2

        def __init__(self):
            super().__init__()
            self.shift = parameter([0.1, 0.2])

        def step(self, x, n=0):
            return torch.remainder(torch.stack((2 * x[..., 0] + x[..., 1], x[..., 0] + x[..., 1]), -1) + self.shift, 1.0)

    with pytest.raises(ValueError, match="shift are tensors"):
        linear_response(Shifted(), starts(4), cos_y, 4, 5, window=2)


def test_unstable_at_another_window_matches_a_new_run():
    x = starts(8, seed=8)
    r5 = linear_response(PerturbedCat(0.1), x, cos_y, 10, 10, window=5, warmup=20)
    r3 = linear_response(PerturbedCat(0.1), x, cos_y, 10, 10, window=3, warmup=20)
    again = r5.unstable_at(3)["eps"]
    assert torch.allclose(again.samples, r3.unstable["eps"].samples, rtol=1e-12, atol=1e-15)
    # the divergence has mean zero under the physical measure (here: Lebesgue)
    mean_div = r5.divergence.mean((0, 1))
    assert abs(float(mean_div)) < 3 * float(r5.divergence.mean(0).std()) / math.sqrt(8)
    # a taper averages the window sums over the windows W - T .. W
    tapered = r5.unstable_at(5, taper=2)["eps"].samples
    mean = torch.stack([r5.unstable_at(w)["eps"].samples for w in (3, 4, 5)]).mean(0)
    assert torch.allclose(tapered, mean, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="window must be at most warmup = 20 "):
        r5.unstable_at(21)
    with pytest.raises(ValueError, match="taper must be at most window = 5; got 6"):
        r5.unstable_at(5, taper=6)


def test_contributions_with_another_window_add_up_per_member():
    x = starts(8, seed=9)
    r = linear_response(PerturbedCat(0.1), x, cos_y, 10, 10, window=4, warmup=20)
    same = r.contributions("eps")
    assert same["total S + U"] is r.gradient["eps"]
    other = r.contributions("eps", window=2, taper=1)
    s, u = r.per_member["eps"][0], r.unstable_at(2, taper=1)["eps"].samples
    assert torch.allclose(other["total S + U"].samples, s + u, rtol=1e-9, atol=1e-12)
    with pytest.raises(KeyError, match="no parameter 'gamma' in this result; it has eps"):
        r.contributions("gamma")


def test_flow_divergence_has_mean_zero():
    # rho(div^u X^u) = 0; for a flow it holds only with tilde nu's neutral component fixed by
    # <tilde nu_0, F> = -tr(eps^T DF e) (without it: 0.0014 +- 0.00002 on 1600 x 2000 steps)
    from chaosgrad.systems import Lorenz63

    x = torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64) + torch.randn(
        16, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    r = linear_response(Lorenz63(), x, lambda s: s[..., 2], 10, 50, window=50, n_unstable=2, warmup=500,
                        parameter="rho")
    per_member = r.divergence.mean(0)[..., 0]
    assert abs(float(per_member.mean())) <= 3 * float(per_member.std()) / 4
