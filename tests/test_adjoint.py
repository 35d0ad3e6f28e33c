"""Adjoint spectra, covariant Lyapunov vectors, duality, backpropagation growth, principal angles.

Duality: the adjoint recursion psi_n = Df_n^T psi_{n+1} has the forward exponents, so the
two runs must agree within their error bars. Ginelli's vectors are covariant and the adjoint
vectors dual by construction, so those identities hold to rounding (1e-8 leaves room for
the conditioning of the CLV basis).
"""

from __future__ import annotations

import math

import pytest
import torch

from chaosgrad import (
    NonFiniteStateError,
    adjoint_lyapunov_spectrum,
    backprop_growth,
    covariant_lyapunov_vectors,
    duality_errors,
    lyapunov_spectrum,
    principal_angles,
)
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Henon, Lorenz63

F64 = torch.float64


def ensemble(center, members, seed=0, scale=0.01):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(center, dtype=F64) + scale * torch.randn(members, len(center), generator=g, dtype=F64)


def assert_same_exponents(forward, adjoint, sigmas=4.0):
    bar = torch.sqrt(forward.stderr**2 + adjoint.stderr**2)
    assert ((forward.exponents - adjoint.exponents).abs() < sigmas * bar).all(), (forward.exponents, adjoint.exponents, bar)


def test_adjoint_spectrum_equals_forward_on_henon():
    x0 = ensemble([0.1, 0.1], 20)
    forward = lyapunov_spectrum(Henon(), x0, 3000, warmup=100)
    adjoint = adjoint_lyapunov_spectrum(Henon(), x0, 3000, warmup=100)
    assert_same_exponents(forward, adjoint)
    assert abs(adjoint.exponents.sum() - math.log(0.3)) < 1e-10  # |det Df^T| = b as well


def test_adjoint_spectrum_equals_forward_on_lorenz():
    lorenz = Lorenz63()
    x0 = ensemble([1.0, 1.0, 20.0], 8, scale=1.0)
    forward = lyapunov_spectrum(lorenz, x0, 4000, warmup=500)
    adjoint = adjoint_lyapunov_spectrum(lorenz, x0, 4000, warmup=500)
    assert_same_exponents(forward, adjoint)
    assert abs(adjoint.exponents[0] / lorenz.dt - 0.9056) < 0.1


def test_adjoint_spectrum_equals_forward_on_a_chaotic_tanh_network():
    net = RandomNetwork(32, sigma_w2=3.0, sigma_b2=0.05, seed=1)
    x0 = torch.randn(4, 32, generator=torch.Generator().manual_seed(0), dtype=F64)
    forward = lyapunov_spectrum(net, x0, 600, k=4, warmup=50)
    adjoint = adjoint_lyapunov_spectrum(net, x0, 600, k=4, warmup=50)
    assert forward.exponents[0] > 0.05  # chaotic
    assert_same_exponents(forward, adjoint)


@pytest.mark.parametrize(
    "system, x0, k",
    [
        (Henon(), torch.tensor([0.1, 0.1], dtype=F64), 2),
        (Lorenz63(), torch.tensor([1.0, 1.0, 20.0], dtype=F64), 3),
        (RandomNetwork(8, sigma_w2=4.0, sigma_b2=0.05, tied=True, seed=2), torch.full((8,), 0.3, dtype=F64), 3),
    ],
    ids=["henon", "lorenz63", "tied-tanh-8"],
)
def test_clvs_are_covariant_and_dual(system, x0, k):
    # A unit test of the algebra: biorthogonality and covariance hold by construction, at any
    # warm-up, even for vectors that have not converged. Whether the vectors are the right
    # ones is tested in tests/test_covariant.py (independent starts, Lorenz-63's flow
    # direction, the Henon fixed point's eigenvectors).
    clv = covariant_lyapunov_vectors(system, x0, 200, k=k, warmup=400)
    V, Theta = clv.vectors, clv.adjoint
    # duality: <theta_i, v_j> = delta_ij
    torch.testing.assert_close(Theta.mT @ V, torch.eye(k, dtype=F64).expand(200, k, k), rtol=0, atol=1e-8)
    # covariance: Df v_i(n) is parallel to v_i(n+1); Df^T theta_i(n+1) parallel to theta_i(n)
    pushed = system.jvp(clv.states[:-1], V[:-1], 0)
    pulled = system.vjp(clv.states[:-1], Theta[1:], 0)
    for i in range(k):
        assert principal_angles(pushed[..., i : i + 1], V[1:, :, i : i + 1]).max() < 1e-8
        assert principal_angles(pulled[..., i : i + 1], Theta[:-1, :, i : i + 1]).max() < 1e-6
    # the unit CLVs grow at the Lyapunov rates on average
    growth = torch.log(torch.linalg.vector_norm(pushed, dim=-2)).mean(0)
    assert (growth - clv.exponents).abs().max() < 0.3


def test_clv_exponents_of_one_orbit_carry_calibrated_error_bars():
    """Henon, one orbit of 3000 steps: the exponents are within 4 error bars of the reference
    values (fails by chance about once in 10^4 runs per exponent), and the error bars are
    those of a 3000-step run (about 0.01), not of the rounding."""
    clv = covariant_lyapunov_vectors(Henon(), torch.tensor([0.1, 0.1], dtype=F64), 3000, warmup=500)
    ref = torch.tensor([0.4192, -1.6232], dtype=F64)
    assert ((clv.exponents - ref).abs() < 4 * clv.stderr).all(), (clv.exponents, clv.stderr)
    assert (0.002 < clv.stderr).all() and (clv.stderr < 0.05).all(), clv.stderr


def test_duality_errors_on_an_untied_network_and_a_broken_basis():
    net = RandomNetwork(8, sigma_w2=4.0, sigma_b2=0.05, seed=3)  # time-dependent: layer n at step n
    clv = covariant_lyapunov_vectors(net, torch.full((8,), 0.3, dtype=F64), 100, k=3, warmup=300)
    errors = duality_errors(net, clv)
    assert max(errors.values()) < 1e-8, errors
    swapped = type(clv)(clv.steps, clv.states, clv.vectors.flip(-1), clv.adjoint, clv.exponents, clv.stderr)
    broken = duality_errors(net, swapped)
    assert broken["biorthogonality"] > 0.5 and broken["covariance"] < 1e-8  # still covariant, no longer dual
    with pytest.raises(ValueError, match="consecutive steps"):
        duality_errors(net, covariant_lyapunov_vectors(net, torch.full((8,), 0.3, dtype=F64), 10, k=2, warmup=10, every=2))


def test_clv_memory_keeps_only_every_nth_step():
    clv = covariant_lyapunov_vectors(Henon(), torch.tensor([0.1, 0.1], dtype=F64), 100, warmup=50, every=10)
    assert clv.vectors.shape == (10, 2, 2) and clv.states.shape == (10, 2)
    assert clv.steps.tolist() == list(range(50, 150, 10))


@pytest.mark.parametrize("sigma_w2", [1.0, 4.0])
def test_backprop_growth_rate_is_the_top_exponent(sigma_w2):
    net = RandomNetwork(128, sigma_w2=sigma_w2, sigma_b2=0.05, seed=3)
    x0 = torch.randn(8, 128, generator=torch.Generator().manual_seed(1), dtype=F64)
    growth = backprop_growth(net, x0, 400)
    forward = lyapunov_spectrum(net, x0, 400, k=1)
    assert growth.log_norms.shape == (401, 8) and (growth.log_norms[-1] == 0).all()
    assert growth.rate == pytest.approx(growth.log_norms[0].mean().item() / 400, abs=1e-12)
    bar = math.hypot(growth.stderr, forward.stderr.item())
    assert abs(growth.rate - forward.exponents.item()) < 4 * bar


def test_principal_angles_exact_and_small():
    e = torch.eye(3, dtype=F64)
    a = 0.3
    plane = torch.stack([e[0], e[1]], -1)
    tilted = torch.stack([e[0], math.cos(a) * e[1] + math.sin(a) * e[2]], -1)
    torch.testing.assert_close(principal_angles(plane, tilted), torch.tensor([0.0, a], dtype=F64), rtol=0, atol=1e-14)
    tiny = torch.stack([e[0] + 1e-10 * e[1]], -1)
    assert principal_angles(e[:, :1], tiny).item() == pytest.approx(1e-10, rel=1e-6)  # arccos would give 0
    with pytest.raises(ValueError, match="same number of rows"):
        principal_angles(plane, torch.ones(4, 1, dtype=F64))


def test_bad_inputs():
    henon = Henon()
    x0 = torch.tensor([0.1, 0.1], dtype=F64)
    with pytest.raises(ValueError, match=r"k must be a whole number with 1 <= k <= dim = 2; got k = 3"):
        adjoint_lyapunov_spectrum(henon, x0, 10, k=3)
    with pytest.raises(ValueError, match="steps must be a whole number >= 1"):
        covariant_lyapunov_vectors(henon, x0, 0)
    with pytest.raises(ValueError, match="every must be a whole number >= 1; got every = 0"):
        covariant_lyapunov_vectors(henon, x0, 10, every=0)
    with pytest.raises(ValueError, match="steps must be a whole number >= 1; got steps = 0"):
        backprop_growth(henon, x0, 0)
    with pytest.raises(NonFiniteStateError, match="non-finite state at step"):
        adjoint_lyapunov_spectrum(Henon(a=3.0), torch.tensor([2.0, 0.0], dtype=F64), 200)
