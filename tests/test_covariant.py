"""Covariant Lyapunov vectors checked against facts they could get wrong.

Biorthogonality and covariance (tests/test_adjoint.py) hold by construction in Ginelli's
algorithm, at any warm-up, so they test the algebra only. These tests compare the vectors
with independent knowledge instead: vectors from independent random starts must agree once
the warm-up is long enough (and must not agree without one); Lorenz-63's second CLV must be
the flow direction f(x); at a fixed point of the Henon map the CLVs must be the
eigenvectors of the Jacobian. Returning the Gram-Schmidt (QR) basis instead of the CLVs
would pass the first check and fail the other two.
"""

from __future__ import annotations

import math

import pytest
import torch

from chaosgrad import adjoint_lyapunov_spectrum, lyapunov_spectrum
from chaosgrad.adjoint import paired_difference
from chaosgrad.covariant import (
    column_angles,
    covariant_lyapunov_vectors,
    duality_errors,
    principal_angles,
    splitting_angles,
    unstable_dimension,
    unstable_dimension_of_orbits,
    warmup_convergence,
)
from chaosgrad.estimates import Estimate
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Affine, Henon, Lorenz63
from chaosgrad.tangent import random_basis

F64 = torch.float64


def henon_fixed_point(a=1.4, b=0.3):
    x = (-(1 - b) + math.sqrt((1 - b) ** 2 + 4 * a)) / (2 * a)  # a x^2 + (1 - b) x - 1 = 0
    return torch.tensor([x, b * x], dtype=F64)


def test_column_angles_exact():
    e = torch.eye(3, dtype=F64)
    a = 0.3
    A = torch.stack([e[0], e[1]], -1)
    B = torch.stack([-2.0 * e[0], math.cos(a) * e[1] + math.sin(a) * e[2]], -1)  # sign and length ignored
    torch.testing.assert_close(column_angles(A, B), torch.tensor([0.0, a], dtype=F64), rtol=0, atol=1e-15)
    tiny = (e[0] + 1e-11 * e[2])[:, None]
    assert column_angles(e[:, :1], tiny).item() == pytest.approx(1e-11, rel=1e-6)


def test_member_seeds_reproduce_single_runs():
    net = RandomNetwork(6, sigma_w2=4.0, sigma_b2=0.05, tied=True, seed=1)
    x0 = torch.full((6,), 0.3, dtype=F64)
    both = covariant_lyapunov_vectors(net, torch.stack([x0, x0]), 20, k=3, warmup=5, seed=[0, 7])
    for member, seed in enumerate([0, 7]):
        alone = covariant_lyapunov_vectors(net, x0, 20, k=3, warmup=5, seed=seed)
        torch.testing.assert_close(both.vectors[:, member], alone.vectors, rtol=0, atol=1e-12)  # batched LAPACK rounds differently
    assert (both.vectors[0, 0] - both.vectors[0, 1]).abs().max() > 0.1  # independent starts
    with pytest.raises(ValueError, match="ensemble's shape"):
        covariant_lyapunov_vectors(net, torch.stack([x0, x0]), 5, seed=[0, 3, 6])


@pytest.mark.parametrize(
    "system, x0, k, steps, converged",
    [
        (Henon(), torch.tensor([0.1, 0.1], dtype=F64), None, 81, 30),
        (RandomNetwork(8, sigma_w2=4.0, sigma_b2=0.05, tied=True, seed=3), torch.full((8,), 0.3, dtype=F64), 4, 1001, 450),
    ],
    ids=["henon", "tied-tanh-8"],
)
def test_clvs_from_independent_starts_agree_only_after_a_warm_up(system, x0, k, steps, converged):
    x0 = system.trajectory(x0, 200)[-1]  # on the attractor
    result = warmup_convergence(system, x0, steps, k=k)
    worst = result.angles.amax(-1)
    assert result.warmups.tolist() == list(range((steps - 1) // 2 + 1))
    assert worst[0] > 0.1  # no warm-up: the random starts show
    assert worst[converged:].max() < 1e-10  # converged: the starts are forgotten
    # the second half mirrors the first: kept step steps-1-W had W + 1 backward solves
    assert torch.equal(result.clvs.states[:, 0], result.clvs.states[:, 1])


def test_clvs_from_independent_starts_never_agree_where_they_are_not_defined():
    """This tied network sits at a stable fixed point whose Jacobian has complex eigenvalue
    pairs: equal exponents, so no unique covariant vectors, and the check fails as it must."""
    net = RandomNetwork(8, sigma_w2=4.0, sigma_b2=0.05, tied=True, seed=2)
    x0 = net.trajectory(torch.full((8,), 0.3, dtype=F64), 400)[-1]
    assert (net.step(x0) - x0).abs().max() < 1e-9
    result = warmup_convergence(net, x0, 401, k=2)
    assert result.angles[100:, 0].median() > 0.3  # the starts' angles persist at every warm-up


def test_lorenz_neutral_clv_is_the_flow_direction():
    """Lorenz-63 is a flow: its zero exponent's CLV is the vector field f(x_n), up to the RK4
    step's error; the Gram-Schmidt vector q_2 is orthogonal to v_1 and is not."""
    lorenz = Lorenz63()
    x0 = lorenz.trajectory(torch.tensor([1.0, 1.0, 20.0], dtype=F64), 500)[-1]
    clv = covariant_lyapunov_vectors(lorenz, x0, 50, warmup=1300)
    f = lorenz.vector_field(clv.states)[..., None]
    assert column_angles(clv.vectors[..., 1:2], f).max() < 1e-4
    assert column_angles(clv.vectors[..., 0:1], f).min() > 1e-3  # v_1 is not f
    gram_schmidt = torch.linalg.qr(clv.vectors).Q  # what a QR basis would return
    assert column_angles(gram_schmidt[..., 1:2], f).min() > 1e-3


def test_henon_clvs_at_the_fixed_point_are_the_jacobian_eigenvectors():
    henon, fixed = Henon(), henon_fixed_point()
    assert (henon.step(fixed) - fixed).abs().max() < 1e-15
    mu, E = torch.linalg.eig(henon.jvp(fixed, torch.eye(2, dtype=F64)))  # independent: LAPACK geev
    order = mu.abs().argsort(descending=True)
    mu, E = mu.real[order], E.real[:, order]
    clv = covariant_lyapunov_vectors(henon, fixed, 5, warmup=15)  # 35 steps: rounding stays below 1e-6
    assert column_angles(clv.vectors, E.expand_as(clv.vectors)).max() < 1e-9
    dual = torch.linalg.inv(E).mT  # left eigenvectors, scaled so that <theta_i, e_j> = delta_ij
    torch.testing.assert_close(clv.adjoint, dual.expand_as(clv.adjoint) * torch.sign(
        (clv.adjoint * dual).sum(-2, keepdim=True)), rtol=0, atol=1e-9)
    torch.testing.assert_close(clv.exponents, torch.log(mu.abs()), rtol=0, atol=1e-12)
    gram_schmidt = torch.linalg.qr(clv.vectors).Q
    assert column_angles(gram_schmidt[..., 1:], E[:, 1:]).min() > 0.1  # the mutation fails


def test_unstable_dimension_counts_and_borders():
    est = [Estimate(0.5, 0.01), Estimate(0.002, 0.001), Estimate(-0.0061, 0.0006), Estimate(-0.3, 0.01)]
    u = unstable_dimension(est)
    assert (u.lower, u.upper, u.resolved, str(u)) == (1, 2, False, "1-2")
    assert u.last_unstable == est[0] and u.first_stable == est[2]
    u = unstable_dimension(est, sigmas=1.5)
    assert (u.lower, u.upper, str(u)) == (2, 2, "2") and u.last_unstable == est[1]
    shuffled = unstable_dimension([est[2], est[0], est[3], est[1]], sigmas=1.5)  # sorted by value
    assert shuffled.estimates == tuple(est) and str(shuffled) == "2"
    stable = unstable_dimension([Estimate(-0.1, 0.01)])
    assert (stable.lower, stable.upper, stable.last_unstable) == (0, 0, None)
    with pytest.raises(ValueError, match="compute more exponents"):
        unstable_dimension(est[:2])
    with pytest.raises(ValueError, match="sigmas must be > 0"):
        unstable_dimension(est, sigmas=0)


@pytest.mark.parametrize("members", [True, False])
def test_paired_difference_pairs_the_same_stretch_of_orbit(members):
    """With k = dim the exponents of a stretch sum to its log |det| / T, the same forward and
    backward: the paired differences sum to zero exactly when the pairing is right (each
    member with itself, each forward block with the adjoint block of the same steps)."""
    net = RandomNetwork(6, sigma_w2=4.0, sigma_b2=0.05, seed=4)  # untied: a different layer per step
    x0 = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    forward = lyapunov_spectrum(net, x0, 200, warmup=30, blocks=10)
    adjoint = adjoint_lyapunov_spectrum(net, x0, 200, warmup=30, blocks=10)
    diff = paired_difference(forward, adjoint, members=members)
    total = torch.stack([d.samples for d in diff]).sum(0)
    assert total.abs().max() < 1e-12
    assert len(total) == (5 if members else 10)
    wrong = forward.block_exponents - adjoint.block_exponents  # unflipped blocks: other steps
    assert wrong.sum(-1).abs().max() > 1e-3
    with pytest.raises(ValueError):
        paired_difference(forward, lyapunov_spectrum(net, x0, 200, warmup=30, blocks=8), members=False)


def test_paired_differences_have_smaller_error_bars_than_unpaired_on_henon():
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.1, 0.1], dtype=F64) + 0.01 * torch.randn(20, 2, generator=g, dtype=F64)
    forward = lyapunov_spectrum(Henon(), x0, 1000, warmup=100)
    adjoint = adjoint_lyapunov_spectrum(Henon(), x0, 1000, warmup=100)
    paired = paired_difference(forward, adjoint)
    for p, f, a in zip(paired, forward.member_estimates, adjoint.member_estimates):
        assert abs(p.value) < 5 * p.stderr
        assert p.stderr < 0.2 * (f - a).stderr


def test_duality_identities_hold_by_construction_even_for_wrong_vectors():
    """Why biorthogonality and covariance are not evidence: with no warm-up the vectors from
    two random starts are far apart, and both sets satisfy the identities to rounding."""
    net = RandomNetwork(8, sigma_w2=4.0, sigma_b2=0.05, tied=True, seed=3)
    x0 = net.trajectory(torch.full((8,), 0.3, dtype=F64), 200)[-1]
    a = covariant_lyapunov_vectors(net, x0, 20, k=4, warmup=0, seed=0)
    b = covariant_lyapunov_vectors(net, x0, 20, k=4, warmup=0, seed=3)
    assert column_angles(a.vectors, b.vectors).amax(-1).min() > 0.1
    for clv in (a, b):
        assert max(duality_errors(net, clv).values()) < 1e-9


def test_unstable_dimension_of_orbits_counts_only_the_chaotic_ones():
    from chaosgrad.lyapunov import lyapunov_spectrum
    from chaosgrad.systems import Henon

    x0 = torch.tensor([0.1, 0.1], dtype=torch.float64) + 0.01 * torch.randn(
        20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    run = lyapunov_spectrum(Henon(), x0, 500, warmup=100)
    u, chaotic = unstable_dimension_of_orbits(run)
    assert int(u.lower) == int(u.upper) == 1 and bool(chaotic.all())
    assert u.last_unstable.value == pytest.approx(float(run.member_exponents[:, 0].mean()), abs=1e-14)
    # a threshold no orbit passes keeps them all; one that splits them keeps those above it
    _, none = unstable_dimension_of_orbits(run, chaotic_above=10.0)
    assert not bool(none.any())
    cut = float(run.member_exponents[:, 0].median())
    u_half, half = unstable_dimension_of_orbits(run, chaotic_above=cut)
    assert int(half.sum()) == 10
    assert u_half.last_unstable.value == pytest.approx(float(run.member_exponents[half, 0].mean()), abs=1e-14)


@pytest.mark.parametrize("rates, u", [((2.0, 0.5, 0.25), 1), ((2.0, 1.5, 0.25), 2)])
@pytest.mark.parametrize("angle", [0.7, 1e-3])
def test_splitting_angle_of_a_linear_map_is_the_angle_between_its_eigenspaces(rates, u, angle):
    """A constant Jacobian with chosen eigenvectors: E^u and E^s are its eigenspaces, at an
    angle fixed by construction (u = 1: v_2 tilted towards v_1 = e_1; u = 2: v_3 tilted
    towards the plane of v_1 = e_1 and v_2 = e_2)."""
    e = torch.eye(3, dtype=F64)
    tilted = math.cos(angle) * e[0] + math.sin(angle) * (e[1] if u == 1 else e[2])
    V = torch.stack([e[0], tilted, e[2]] if u == 1 else [e[0], e[1], tilted], -1)
    A = V @ torch.diag(torch.tensor(rates, dtype=F64)) @ torch.linalg.inv(V)
    linear = Affine(A, torch.zeros(3, dtype=F64))  # the orbit of 0 stays at 0 exactly
    clv = covariant_lyapunov_vectors(linear, torch.zeros(3, dtype=F64), 5, k=u, warmup=60)
    torch.testing.assert_close(splitting_angles(clv, u), torch.full((5,), angle, dtype=F64),
                               rtol=1e-9, atol=0)


def test_splitting_angles_from_u_vectors_equal_those_from_all_vectors_on_henon():
    henon, x0 = Henon(), torch.tensor([[0.1, 0.1], [-0.3, 0.2]], dtype=F64)
    full = covariant_lyapunov_vectors(henon, x0, 300, k=2, warmup=100)
    from_all = principal_angles(full.vectors[..., :1], full.vectors[..., 1:]).min(-1).values
    assert from_all.min() < 0.1 < from_all.max()  # near-tangencies and wide angles both occur
    torch.testing.assert_close(splitting_angles(full, 1), from_all, rtol=1e-8, atol=1e-14)
    reduced = covariant_lyapunov_vectors(henon, x0, 300, k=1, warmup=100, seed=5)  # 1 vector
    torch.testing.assert_close(splitting_angles(reduced, 1), from_all, rtol=1e-6, atol=1e-12)
    for bad in (0, 2, 1.5):
        with pytest.raises(ValueError, match="u must be a whole number"):
            splitting_angles(reduced if bad != 1.5 else full, bad)
