"""The Map contract on every shipped system: derivatives against finite differences,
closed forms against torch.func, tangent/adjoint duality, ensembles, and exact identities.

Tolerances. Central differences with step h have truncation error |f'''| h^2 / 6 and
rounding error ~ eps |f| / h; with h = 1e-6 and states of size O(1)-O(10) both are below
1e-8 relative, so 1e-6 leaves two orders of margin and still fails for any wrong entry.
Closed forms against torch.func, and the duality <W, Df V> = <Df^T W, V>, are exact up to
a few ulps: 1e-12.
"""

from __future__ import annotations

import pytest
import torch

import chaosgrad
from chaosgrad.models import NeuralMap
from chaosgrad.networks import PreactivationNetwork, RandomNetwork
from chaosgrad.systems import (
    Affine,
    ConjugateCat,
    ExpandingCircle,
    Henon,
    Logistic,
    Lorenz63,
    ModifiedSolenoid,
    Noisy,
    PerturbedCat,
    Tent,
)
from chaosgrad.training import GradientDescent

H = 1e-6
FD_RTOL = 1e-6
EXACT = 1e-12


def quadratic_plus_quartic(theta: torch.Tensor) -> torch.Tensor:
    """A small nonconvex loss: its Hessian depends on theta, so I - lr*H is not constant."""
    A = torch.arange(1.0, 17.0, dtype=theta.dtype).reshape(4, 4) / 10
    return 0.5 * theta @ (A @ A.T) @ theta + 0.25 * (theta**4).sum() - theta.prod()


def states(system: chaosgrad.Map, shape=(5,)) -> torch.Tensor:
    """Typical states: a short orbit from a generic point keeps each system in its domain."""
    g = torch.Generator().manual_seed(1)
    if isinstance(system, Logistic):
        return torch.rand(*shape, 1, generator=g, dtype=torch.float64)
    if isinstance(system, (GradientDescent, RandomNetwork, PreactivationNetwork, Affine, NeuralMap)):
        return torch.randn(*shape, system.dim, generator=g, dtype=torch.float64)
    if isinstance(system, Tent):  # away from the kinks at 0 and 1/2, in both halves
        u = 0.05 + 0.4 * torch.rand(*shape, 1, generator=g, dtype=torch.float64)
        return u + 0.5 * (torch.rand(*shape, 1, generator=g) < 0.5)
    if isinstance(system, ExpandingCircle):  # 2x + 0.1 + 0.1 sin 2 pi x stays inside (0, 1): no seam
        return 0.05 + 0.35 * torch.rand(*shape, 1, generator=g, dtype=torch.float64)
    if isinstance(system, (PerturbedCat, ConjugateCat)):  # away from the seams of the torus, where mod 1 jumps
        return 0.2 + 0.6 * torch.rand(*shape, 2, generator=g, dtype=torch.float64)
    if isinstance(system, ModifiedSolenoid):  # x_i away from the seams 0 and pi of 2 x_i mod 2 pi
        x = 0.3 + 2.5 * torch.rand(*shape, system.dim, generator=g, dtype=torch.float64)
        x[..., 0] = 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
        return x
    x0 = {2: [0.1, 0.1], 3: [1.0, 1.0, 20.0]}[system.dim]
    x0 = torch.tensor(x0, dtype=torch.float64) + 0.01 * torch.randn(*shape, system.dim, generator=g, dtype=torch.float64)
    deterministic = system.map if isinstance(system, Noisy) else system
    return deterministic.trajectory(x0, 50)[-1]


SYSTEMS = {
    "henon": lambda: Henon(),
    "logistic": lambda: Logistic(),
    "lorenz63": lambda: Lorenz63(),
    "noisy-henon": lambda: Noisy(Henon(), sigma=0.05),
    "gradient-descent": lambda: GradientDescent(quadratic_plus_quartic, dim=4, lr=0.1),
    "tanh-network": lambda: RandomNetwork(6, sigma_w2=2.0, sigma_b2=0.1),
    "affine": lambda: Affine(torch.arange(9.0).reshape(3, 3) / 20 - 0.2, [1.0, -2.0, 0.5], gamma=0.3),
    "perturbed-cat": lambda: PerturbedCat(0.1),
    "conjugate-cat": lambda: ConjugateCat(0.05),
    "modified-solenoid": lambda: ModifiedSolenoid(0.1, 0.1, m=4),
    "tent": lambda: Tent(0.8),
    "expanding-circle": lambda: ExpandingCircle(0.1, 0.1),
    "preactivation-network": lambda: PreactivationNetwork(5, depth=10, sigma_w2=3.0, bias=0.2),
    "neural-map": lambda: NeuralMap(3, widths=(8, 6), dt=0.1, seed=2, output_gain=1.0),
}


def step_with_common_noise(system: chaosgrad.Map, x: torch.Tensor) -> torch.Tensor:
    """One step; for a noisy map, the same noise every call (common random numbers)."""
    if isinstance(system, Noisy):
        state = system.generator.get_state()
        out = system.step(x)
        system.generator.set_state(state)
        return out
    return system.step(x)


@pytest.fixture(params=sorted(SYSTEMS))
def system(request) -> chaosgrad.Map:
    return SYSTEMS[request.param]()


def test_jvp_matches_central_differences(system):
    x = states(system)
    V = torch.randn(x.shape[-1], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    jv = system.jvp(x, V)
    assert jv.shape == (*x.shape, 3)
    for j in range(3):
        v = V[:, j]
        fd = (step_with_common_noise(system, x + H * v) - step_with_common_noise(system, x - H * v)) / (2 * H)
        torch.testing.assert_close(jv[..., j], fd, rtol=FD_RTOL, atol=FD_RTOL * fd.abs().max().item())


def test_step_jvp_is_step_and_jvp(system):
    x = states(system)
    V = torch.randn(system.dim, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    if isinstance(system, Noisy):
        state = system.generator.get_state()
    y, JV = system.step_jvp(x, V, 1)
    if isinstance(system, Noisy):
        system.generator.set_state(state)
    torch.testing.assert_close(y, system.step(x, 1), rtol=0, atol=EXACT)
    torch.testing.assert_close(JV, system.jvp(x, V, 1), rtol=EXACT, atol=EXACT)
    with pytest.raises(ValueError, match="V for"):
        system.step_jvp(x, V[:-1], 1)


def test_vjp_is_the_transpose_of_jvp(system):
    x = states(system)
    g = torch.Generator().manual_seed(3)
    V = torch.randn(*x.shape, 4, dtype=torch.float64, generator=g)
    W = torch.randn(*x.shape, 4, dtype=torch.float64, generator=g)
    lhs = torch.einsum("...ik,...il->...kl", W, system.jvp(x, V))
    rhs = torch.einsum("...ik,...il->...kl", system.vjp(x, W), V)
    torch.testing.assert_close(lhs, rhs, rtol=EXACT, atol=EXACT * lhs.abs().max().item())


def test_vjp_matches_central_differences_of_the_dual_pairing(system):
    """<w, Df^T-pulled> against d/dh <w, f(x + h e_i)>, coordinate by coordinate."""
    x = states(system, shape=())
    w = torch.randn(system.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    pulled = system.vjp(x, w[:, None])[:, 0]
    eye = torch.eye(system.dim, dtype=torch.float64)
    fd = torch.stack(
        [
            w @ (step_with_common_noise(system, x + H * e) - step_with_common_noise(system, x - H * e)) / (2 * H)
            for e in eye
        ]
    )
    torch.testing.assert_close(pulled, fd, rtol=FD_RTOL, atol=FD_RTOL * fd.abs().max().item())


@pytest.mark.parametrize("name", ["henon", "logistic", "lorenz63", "affine", "perturbed-cat"])
def test_closed_forms_equal_torch_func(name):
    system = SYSTEMS[name]()
    x = states(system)
    V = torch.randn(*x.shape, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(system._jvp(x, V, 0), chaosgrad.Map._jvp(system, x, V, 0), rtol=EXACT, atol=EXACT)
    torch.testing.assert_close(system._vjp(x, V, 0), chaosgrad.Map._vjp(system, x, V, 0), rtol=EXACT, atol=EXACT)


def test_ensemble_axes_are_independent(system):
    """A (2, 3) ensemble gives, member by member, what single states give."""
    x = states(system, shape=(2, 3))
    V = torch.randn(system.dim, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    jv, vj = system.jvp(x, V), system.vjp(x, V)
    assert jv.shape == vj.shape == (2, 3, system.dim, 2)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(jv[i, j], system.jvp(x[i, j], V), rtol=EXACT, atol=EXACT)
            torch.testing.assert_close(vj[i, j], system.vjp(x[i, j], V), rtol=EXACT, atol=EXACT)
    traj = (system.map if isinstance(system, Noisy) else system).trajectory(x, 4)
    assert traj.shape == (5, 2, 3, system.dim)


def test_param_jvp_matches_central_differences_and_param_vjp(system):
    x = states(system, shape=(3,))
    params = system.params()
    assert params, "every shipped system has parameters"
    deterministic = system.map if isinstance(system, Noisy) else system
    w = torch.randn(*x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    grads = system.param_vjp(x, w)
    for name, p in params.items():
        assert grads[name].shape == (3, *p.shape)
        analytic = system.param_jvp(x, {name: 1.0})
        with torch.no_grad():
            p += H
            plus = deterministic.step(x)
            p -= 2 * H
            minus = deterministic.step(x)
            p += H
        fd = (plus - minus) / (2 * H)
        torch.testing.assert_close(analytic, fd, rtol=FD_RTOL, atol=FD_RTOL * fd.abs().max().item())
        # param_jvp({name: 1.0}) moves every entry of a tensor parameter: pair it with the summed gradient
        torch.testing.assert_close(grads[name].reshape(3, -1).sum(-1), (w * analytic).sum(-1), rtol=EXACT,
                                   atol=EXACT * 100)


def test_henon_jacobian_determinant_is_minus_b():
    henon = Henon(a=1.4, b=0.3)
    x = states(henon, shape=(10,))
    J = henon.jvp(x, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.det(J), torch.full((10,), -0.3, dtype=torch.float64), rtol=0, atol=EXACT)


def test_lorenz_rk4_step_contracts_volume_like_the_flow():
    """det Df = exp(-(sigma + 1 + beta) dt) + O(dt^5): the RK4 local error, below 1e-6 at dt = 0.01."""
    lorenz = Lorenz63(dt=0.01)
    x = states(lorenz, shape=(10,))
    det = torch.linalg.det(lorenz.jvp(x, torch.eye(3, dtype=torch.float64)))
    exact = torch.exp(torch.tensor(-(10 + 1 + 8 / 3) * 0.01, dtype=torch.float64))
    assert (det - exact).abs().max() < 1e-6
    assert (det - exact).abs().max() > 0  # RK4 is not the exact flow: the check can see a difference


def test_logistic_at_r4_stays_in_the_unit_interval():
    orbit = Logistic(4.0).trajectory(torch.tensor([0.3141], dtype=torch.float64), 1000)
    assert orbit.min() >= 0 and orbit.max() <= 1


def test_gradient_descent_jacobian_is_identity_minus_lr_times_hessian():
    gd = GradientDescent(quadratic_plus_quartic, dim=4, lr=0.1)
    theta = states(gd, shape=())
    eye = torch.eye(4, dtype=torch.float64)
    hessian = torch.func.hessian(quadratic_plus_quartic)(theta)
    J = gd.jvp(theta, eye)
    torch.testing.assert_close(J, eye - 0.1 * hessian, rtol=EXACT, atol=EXACT)
    assert (J - eye).abs().max() > 0.01  # and not the identity (the draft's eq. (27))


def test_noise_is_reproducible_from_the_seed_and_additive():
    x0 = torch.tensor([0.1, 0.1], dtype=torch.float64)
    a = Noisy(Henon(), sigma=0.01, seed=42).trajectory(x0, 20)
    b = Noisy(Henon(), sigma=0.01, seed=42).trajectory(x0, 20)
    c = Noisy(Henon(), sigma=0.01, seed=43).trajectory(x0, 20)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4
    noisy = Noisy(Henon(), sigma=0.5, seed=0)
    x = torch.zeros(20000, 2, dtype=torch.float64)
    xi = (noisy.step(x) - noisy.map.step(x)) / 0.5
    # sample mean and variance of 40,000 N(0,1) draws: standard errors 0.005 and 0.007
    assert xi.mean().abs() < 0.03 and (xi.var() - 1).abs() < 0.04


def test_doc_example_map_has_default_derivatives():
    """A user map with only step() gets jvp, vjp and parameter derivatives."""

    class Tent(chaosgrad.Map):
        dim = 1

        def __init__(self, mu=1.9):
            super().__init__()
            self.mu = chaosgrad.parameter(mu)

        def step(self, x, n=0):
            return self.mu * torch.minimum(x, 1 - x)

    tent = Tent()
    x = torch.tensor([[0.2], [0.7]], dtype=torch.float64)
    torch.testing.assert_close(tent.jvp(x, torch.ones(1, 1, dtype=torch.float64))[..., 0, 0], torch.tensor([1.9, -1.9], dtype=torch.float64))
    torch.testing.assert_close(tent.param_jvp(x, {"mu": 1.0})[..., 0], torch.tensor([0.2, 0.3], dtype=torch.float64))


def test_perturbed_cat_preserves_area_and_its_exponents_sum_to_zero():
    """det Df = det A det S = 1 at every point: Lebesgue measure is invariant for every eps."""
    cat = PerturbedCat(0.3)
    x = states(cat, shape=(50,))
    J = cat.jvp(x, torch.eye(2, dtype=torch.float64).expand(50, 2, 2))
    torch.testing.assert_close(torch.linalg.det(J), torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-13)
    spectrum = chaosgrad.lyapunov_spectrum(cat, x[:4], 2000)
    assert abs(spectrum.exponents.sum().item()) < 1e-12
    assert spectrum.exponents[0].item() == pytest.approx(0.9624, abs=0.01)  # ln((3 + sqrt 5)/2) at eps = 0


def test_network_param_jvp_closed_form_equals_torch_func():
    net = RandomNetwork(6, sigma_w2=2.0, sigma_b2=0.1, seed=3)
    x = states(net)
    for dgamma in ({"sigma_w": 1.0}, {"sigma_b": 1.0}, {"sigma_w": 0.3, "sigma_b": -2.0}):
        torch.testing.assert_close(net.param_jvp(x, dgamma, 2), chaosgrad.Map.param_jvp(net, x, dgamma, 2), rtol=EXACT, atol=EXACT)


def test_step_and_param_jvp_in_one_go(system):
    """Closed-form overrides (the network, Lorenz-63's RK4 stages) equal the step and torch.func."""
    x = states(system)
    deterministic = system.map if isinstance(system, Noisy) else system
    for name in system.params():
        y, dfdg = deterministic._step_param_jvp(x, name, 4)
        torch.testing.assert_close(y, deterministic.step(x, 4), rtol=EXACT, atol=EXACT)
        reference = chaosgrad.Map.param_jvp(deterministic, x, {name: 1.0}, 4)
        torch.testing.assert_close(dfdg, reference, rtol=EXACT, atol=EXACT * reference.abs().max().item())
