"""NILSAS (chaosgrad.shadowing) against exact values: stable and hyperbolic affine maps,
plain backpropagation when M = 0, the least-squares step by hand, Lorenz-63's d<z>/d rho,
and its error messages."""

from __future__ import annotations

import chaosgrad
import pytest
import torch
from chaosgrad.derivatives import backprop_derivative
from chaosgrad.networks import RandomNetwork
from chaosgrad.shadowing import nilsas, shadowing_least_squares
from chaosgrad.systems import Affine, Logistic, Lorenz63
from chaosgrad.validation import NonFiniteStateError

F64 = torch.float64


def linear_observable(c):
    return lambda x: x @ c


@pytest.fixture(scope="module")
def stable():
    g = torch.Generator().manual_seed(0)
    A = 0.25 * torch.randn(4, 4, generator=g, dtype=F64)
    assert torch.linalg.eigvals(A).abs().max() < 0.8
    return Affine(A, torch.randn(4, generator=g, dtype=F64), gamma=0.7), torch.randn(4, generator=g, dtype=F64)


@pytest.fixture(scope="module")
def hyperbolic():
    """An affine map with one expanding direction (eigenvalue 1.38) and two contracting ones:
    the fixed point x* = (I - A)^{-1} b is its only bounded orbit."""
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    A = Q @ torch.diag(torch.tensor([1.3, 0.6, -0.4], dtype=F64)) @ Q.T + 0.1 * torch.randn(3, 3, generator=g, dtype=F64)
    b, c = torch.randn(3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    return Affine(A, b, gamma=1.0), c


def test_stable_map_with_m_0_is_backpropagation_and_the_exact_finite_run_derivative(stable):
    m, c = stable
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    r = nilsas(m, x0, linear_observable(c), segments=10, segment_steps=20, n_unstable=0)
    bp = backprop_derivative(m, x0, 200, linear_observable(c), "gamma")
    torch.testing.assert_close(r.per_member["gamma"], bp, rtol=0, atol=1e-12)
    assert r.per_member["gamma"][0].item() == pytest.approx(m.finite_run_derivative(c, 200), abs=1e-12)


def test_stable_map_error_is_the_boundary_term_and_falls_like_1_over_n(stable):
    """J_N from a fixed x_0 differs from <Phi>'s derivative by -(1/N) c^T A (I - A^N)(I - A)^-2 b."""
    m, c = stable
    x0 = torch.zeros(4, dtype=F64)
    eye = torch.eye(4, dtype=F64)
    for N in (100, 400):
        value = nilsas(m, x0, linear_observable(c), segments=N // 20, segment_steps=20, n_unstable=0).gradient["gamma"].value
        boundary = -float(c @ m.A @ (eye - torch.linalg.matrix_power(m.A, N)) @ torch.linalg.solve(eye - m.A, torch.linalg.solve(eye - m.A, m.b))) / N
        assert value - m.average_derivative(c) == pytest.approx(boundary, abs=1e-12)
    assert m.average_derivative(c) == pytest.approx(m.finite_run_derivative(c, 10**5), abs=1e-3)


def test_hyperbolic_affine_map_shadows_the_fixed_point_where_backpropagation_explodes(hyperbolic):
    """Started on the fixed point, the orbit stays there and <Phi>'s derivative is
    c^T (I - A)^{-1} b. NILSAS with M = 1 reaches it up to a boundary term that falls like 1/N
    (N times the error is the same at N = 100 and 200); backpropagation grows like 1.38^N."""
    m, c = hyperbolic
    x0 = torch.linalg.solve(torch.eye(3, dtype=F64) - m.A, m.b)
    exact = m.average_derivative(c)
    errors = {}
    for K in (10, 20):
        r = nilsas(m, x0, linear_observable(c), segments=K, segment_steps=10, n_unstable=1)
        errors[10 * K] = r.per_member["gamma"].item() - exact
        assert r.exponents[0].item() == pytest.approx(0.32, abs=0.01)  # ln 1.38
    assert 100 * errors[100] == pytest.approx(200 * errors[200], rel=1e-6)
    assert abs(errors[200]) < 0.2 * abs(exact)
    assert abs(backprop_derivative(m, x0, 200, linear_observable(c), "gamma").item()) > 1e20


def test_unstable_count_is_chosen_from_the_adjoint_exponents(stable, hyperbolic):
    m, c = stable
    assert nilsas(m, torch.zeros(4, dtype=F64), linear_observable(c), segments=4, segment_steps=10).n_unstable == 0
    m, c = hyperbolic
    x0 = torch.linalg.solve(torch.eye(3, dtype=F64) - m.A, m.b)
    assert nilsas(m, x0, linear_observable(c), segments=4, segment_steps=10).n_unstable == 1


def test_least_squares_step_on_a_hand_computed_case():
    """min a0^2 + a0 + a1^2/2 - a1 subject to a0 = 3 a1 + 1/2: substituting, 19 a1 = -5."""
    a = shadowing_least_squares(torch.tensor([[[2.0]], [[1.0]]], dtype=F64), torch.tensor([[1.0], [-1.0]], dtype=F64),
                                torch.tensor([[[3.0]]], dtype=F64), torch.tensor([[0.5]], dtype=F64))
    torch.testing.assert_close(a[:, 0], torch.tensor([-11 / 38, -5 / 19], dtype=F64), rtol=0, atol=1e-14)


def test_least_squares_extra_constraint_and_ensemble_axes():
    """Three segments, two directions, two independent members: the KKT solution satisfies
    the continuity and the extra constraint, and no feasible perturbation lowers the cost."""
    g = torch.Generator().manual_seed(0)
    B = torch.randn(3, 2, 2, 2, generator=g, dtype=F64)
    C = B @ B.mT + torch.eye(2, dtype=F64)
    d, R, b = (torch.randn(*s, generator=g, dtype=F64) for s in [(3, 2, 2), (2, 2, 2, 2), (2, 2, 2)])
    R = torch.triu(R)  # renormalisation factors: upper triangular, positive diagonal
    R.diagonal(dim1=-2, dim2=-1).abs_().add_(0.5)
    E, e = torch.randn(2, 2, generator=g, dtype=F64), torch.randn(2, generator=g, dtype=F64)
    a = shadowing_least_squares(C, d, R, b, E, e)
    for k in (1, 2):
        torch.testing.assert_close(a[k - 1], (R[k - 1] @ a[k][..., None])[..., 0] + b[k - 1], rtol=0, atol=1e-12)
    torch.testing.assert_close((E * a[0]).sum(-1), e, rtol=0, atol=1e-12)

    def cost(a):
        return sum(0.5 * (a[k][..., None, :] @ C[k] @ a[k][..., None])[..., 0, 0] + (d[k] * a[k]).sum(-1) for k in range(3))

    # feasible directions: choose delta a_2 with E . delta a_0 = 0, continuity fixes the rest
    for _ in range(5):
        step = torch.randn(2, 2, generator=g, dtype=F64)
        da = [None, None, step]
        da[1] = (R[1] @ da[2][..., None])[..., 0]
        da[0] = (R[0] @ da[1][..., None])[..., 0]
        s = (E * da[0]).sum(-1, keepdim=True) / (E * (R[0] @ R[1] @ E[..., None])[..., 0]).sum(-1, keepdim=True)
        da = [v - s * (M @ E[..., None])[..., 0] for v, M in zip(da, [R[0] @ R[1], R[1], torch.eye(2, dtype=F64).expand(2, 2, 2)])]
        # E . da_0 = E . (R0 R1 step) - s E . (R0 R1 E) = 0 by the choice of s
        torch.testing.assert_close((E * da[0]).sum(-1), torch.zeros(2, dtype=F64), rtol=0, atol=1e-12)
        assert (cost([a[k] + 1e-3 * da[k] for k in range(3)]) >= cost(a) - 1e-12).all()


def test_lorenz_sensitivity_of_mean_z_to_rho():
    """d<z>/d rho at rho = 28 is about 1.01 (Lea et al. 2000; Wang et al. 2014; Ni & Talnikar
    2019). A run of T = 40 time units (4 members) gives 1.039 +- 0.007 here; the bias of such a
    short run is O(1/T) (T = 50: 1.015), hence the 0.05 tolerance."""
    lorenz = Lorenz63()
    x0 = torch.tensor([1.0, 1.0, 20.0], dtype=F64) + torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    r = nilsas(lorenz, x0, lambda x: x[..., 2], segments=40, segment_steps=100, warmup=500, n_unstable=2)
    assert abs(r.gradient["rho"].value - 1.0) < 0.05
    assert r.gradient["rho"].stderr < 0.02
    assert r.exponents[0].item() / lorenz.dt == pytest.approx(0.906, abs=0.1)
    assert abs(r.exponents[1].item()) / lorenz.dt < 0.05  # the neutral (flow) direction


def test_covector_is_returned_and_satisfies_the_adjoint_equation(hyperbolic):
    """nu_n = A^T nu_{n+1} + c / N along the whole run, across segment boundaries."""
    m, c = hyperbolic
    x0 = torch.linalg.solve(torch.eye(3, dtype=F64) - m.A, m.b)
    r = nilsas(m, x0, linear_observable(c), segments=5, segment_steps=8, n_unstable=1, keep_covector=True)
    nu = r.covector  # nu[n - 1] = nu_n, n = 1..40
    torch.testing.assert_close(nu[:-1], nu[1:] @ m.A + c / 40, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(segments=1, segment_steps=10), "segments must be a whole number >= 2; got segments = 1"),
    (dict(segments=4, segment_steps=0), "segment_steps must be a whole number >= 1; got segment_steps = 0"),
    (dict(segments=2.5, segment_steps=10), "segments must be a whole number >= 2"),
    (dict(segments=4, segment_steps=10, n_unstable=5), "n_unstable must be a whole number with 0 <= n_unstable <= dim = 4"),
])
def test_bad_arguments_are_named(stable, kwargs, message):
    m, c = stable
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nilsas(m, torch.zeros(4, dtype=F64), linear_observable(c), **kwargs)


def test_observable_of_the_wrong_shape_is_named(stable):
    m, _ = stable
    with pytest.raises(ValueError, match=r"observable must map states of shape \(\.\.\., 4\) to values of shape \(\.\.\.\)"):
        nilsas(m, torch.zeros(4, dtype=F64), lambda x: x, segments=4, segment_steps=10, n_unstable=0)


def test_non_finite_states_and_adjoints_name_the_step(hyperbolic):
    m, c = hyperbolic
    with pytest.raises(NonFiniteStateError, match="initial state x0"):
        nilsas(m, torch.tensor([float("nan"), 0.0, 0.0], dtype=F64), linear_observable(c), segments=4, segment_steps=10)
    # the logistic map at r = 4 doubles the adjoint every step (lambda = ln 2): 2^1100 overflows
    with pytest.raises(NonFiniteStateError, match=r"adjoint \(lower segment_steps if it overflowed\) at step"):
        nilsas(Logistic(4.0), torch.tensor([0.3], dtype=F64), lambda x: x[..., 0], segments=2, segment_steps=1100, n_unstable=0)


def test_exported_at_the_top_level():
    assert chaosgrad.nilsas is nilsas and chaosgrad.ShadowingResult is chaosgrad.shadowing.ShadowingResult


def test_time_dependent_map_with_m_0_is_backpropagation():
    """Untied layers: df/dgamma is taken step by step (the map is not autonomous)."""
    from chaosgrad.networks import RandomNetwork

    net = RandomNetwork(8, depth=60, sigma_w2=0.8, sigma_b2=0.05, seed=4)
    assert not net.autonomous
    x0 = torch.randn(3, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    activity = lambda x: (x**2).mean(-1)  # noqa: E731
    r = nilsas(net, x0, activity, segments=6, segment_steps=10, n_unstable=0)
    for name in ("sigma_w", "sigma_b"):
        bp = backprop_derivative(net, x0, 60, activity, name)
        torch.testing.assert_close(r.per_member[name], bp, rtol=0, atol=1e-12)


def test_shadowing_omits_the_unstable_term_on_the_perturbed_cat_map():
    """The map preserves area for every eps, so <cos 2 pi y> does not depend on eps: the
    linear response is exactly 0. Shadowing alone is not (0.2200 +- 0.0018 in chapter 4): the
    unstable divergence term cancels it. A short run must already be many error bars from 0."""
    from chaosgrad.systems import PerturbedCat

    x0 = torch.rand(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    r = nilsas(PerturbedCat(0.1), x0, lambda x: torch.cos(2 * torch.pi * x[..., 1]), 40, 10, warmup=100)
    assert r.n_unstable == 1
    assert r.gradient["eps"].value > 10 * r.gradient["eps"].stderr
    assert r.gradient["eps"].value == pytest.approx(0.22, abs=0.03)


def test_elimination_and_the_dense_kkt_system_agree():
    """Forward elimination (fast, for unstable and neutral directions) and the dense KKT
    system (used when an R_k shrinks a direction) solve the same problem."""
    from chaosgrad.shadowing import _eliminate, _kkt

    g = torch.Generator().manual_seed(1)
    K, M = 6, 3
    B = torch.randn(K, M, M, generator=g, dtype=F64)
    C = B @ B.mT + 0.1 * torch.eye(M, dtype=F64)
    d, b = torch.randn(K, M, generator=g, dtype=F64), torch.randn(K - 1, M, generator=g, dtype=F64)
    R = torch.triu(torch.randn(K - 1, M, M, generator=g, dtype=F64))
    R.diagonal(dim1=-2, dim2=-1).abs_().add_(1.0)
    E, e = torch.randn(M, generator=g, dtype=F64), torch.tensor(0.7, dtype=F64)
    torch.testing.assert_close(_eliminate(C, d, R, b, E, e), _kkt(C, d, R, b, E, e), rtol=0, atol=1e-10)
    torch.testing.assert_close(_eliminate(C, d, R, b, None, None), _kkt(C, d, R, b, None, None), rtol=0, atol=1e-10)
    # a strongly contracting direction (exponent -14 per segment over 5 segments) takes the KKT path
    R.diagonal(dim1=-2, dim2=-1)[:, -1] = 1e-6
    a = shadowing_least_squares(C, d, R, b)
    for k in range(1, K):
        torch.testing.assert_close(a[k - 1], R[k - 1] @ a[k] + b[k - 1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("m_unstable", [0, 2])
def test_covector_norm_without_the_covector_equals_the_norm_of_the_covector(m_unstable):
    """keep_norm assembles |nu_n| from Gram matrices of [nu', W]; keep_covector assembles nu_n
    itself: on a chaotic tied network (two orbits, segments of 5 steps) they must agree."""
    net = RandomNetwork(8, sigma_w2=9.0, sigma_b2=0.05, tied=True, seed=0)
    x0 = net.trajectory(torch.randn(2, 8, generator=torch.Generator().manual_seed(1), dtype=F64), 200)[-1]
    activity = lambda x: (x**2).mean(-1)  # noqa: E731
    full = nilsas(net, x0, activity, 12, 5, n_unstable=m_unstable, keep_covector=True)
    norms = nilsas(net, x0, activity, 12, 5, n_unstable=m_unstable, keep_norm=True)
    assert norms.covector is None and norms.covector_norm.shape == (60, 2)
    reference = full.covector.norm(dim=-1)
    torch.testing.assert_close(norms.covector_norm, reference, rtol=1e-9, atol=1e-14 * float(reference.max()))
    torch.testing.assert_close(full.covector_norm, reference, rtol=1e-9, atol=1e-14 * float(reference.max()))


def test_a_flow_is_declared_not_guessed_from_attribute_names():
    """A map with attributes named vector_field and dt is still a map unless it declares
    is_flow = True; a declared flow without them is refused with what it must define."""
    from chaosgrad.shadowing import _flow

    class Named(Lorenz63):
        is_flow = False

    class Declared(chaosgrad.Map):
        dim, is_flow = 2, True

        def step(self, x, n=0):
            return x

    assert _flow(Lorenz63()) and not _flow(Named())
    with pytest.raises(TypeError, match=r"Declared declares is_flow = True but has no vector_field or dt: a flow's "
                                        r"time-dt map must define vector_field\(x\)"):
        _flow(Declared())
