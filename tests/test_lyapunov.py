"""Benettin/QR Lyapunov spectra against reference values and exact identities.

Reference values: Henon (0.4192, -1.6232) and Lorenz-63 (0.9056, 0, -14.5723 per unit
time) from Sprott (2003); logistic r = 4: ln 2 exactly. The tolerances are those of the
chapter-1 issue and sit at four or more standard errors of the runs used here.
"""

from __future__ import annotations

import math

import pytest
import torch

from chaosgrad import NonFiniteStateError
from chaosgrad.adjoint import adjoint_lyapunov_spectrum
from chaosgrad.lyapunov import kaplan_yorke_dimension, lyapunov_spectrum
from chaosgrad.networks import RandomNetwork
from chaosgrad.systems import Affine, Henon, Logistic, Lorenz63

F64 = torch.float64


def henon_ensemble(members=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([0.1, 0.1], dtype=F64) + 0.01 * torch.randn(members, 2, generator=g, dtype=F64)


@pytest.fixture(scope="module")
def henon_result():
    return lyapunov_spectrum(Henon(), henon_ensemble(), 4000, warmup=200)


def test_henon_exponents_and_their_exact_sum(henon_result):
    lam = henon_result.exponents
    assert abs(lam[0] - 0.4192) < 0.005 and abs(lam[1] + 1.6232) < 0.005
    # sum of log R_ii = log |det| of the product = steps * ln b, up to rounding
    assert abs(lam.sum() - math.log(0.3)) < 1e-10
    assert henon_result.stderr.max() < 0.002  # the error bar is small enough to mean something
    assert abs(henon_result.kaplan_yorke - (1 + lam[0] / abs(lam[1]))) < 1e-12


def test_logistic_exponent_is_ln2():
    x0 = torch.rand(50, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    result = lyapunov_spectrum(Logistic(4.0), x0, 4000, warmup=100)
    assert abs(result.exponents[0] - math.log(2)) < 0.005
    assert abs(result.exponents[0] - math.log(2)) < 4 * result.stderr[0]


def test_lorenz_exponents_per_unit_time():
    lorenz = Lorenz63(dt=0.01)
    x0 = torch.tensor([1.0, 1.0, 20.0], dtype=F64) + torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    result = lyapunov_spectrum(lorenz, x0, 10000, warmup=1000)
    lam = result.exponents / lorenz.dt
    assert abs(lam[0] - 0.9056) < 0.02
    assert abs(lam[1]) < 0.02
    assert abs(lam.sum() + (10 + 1 + 8 / 3)) < 0.01


def test_renormalising_less_often_changes_nothing_but_rounding():
    """diag(R2 R1) = diag(R2) diag(R1): QR every r steps gives the same exponents exactly."""
    x0 = henon_ensemble(members=5)
    every = lyapunov_spectrum(Henon(), x0, 600, renorm_every=1)
    sparse = lyapunov_spectrum(Henon(), x0, 600, renorm_every=7)
    auto = lyapunov_spectrum(Henon(), x0, 600, renorm_every="auto")
    assert auto.renorm_every > 1
    torch.testing.assert_close(sparse.exponents, every.exponents, rtol=0, atol=1e-10)
    torch.testing.assert_close(auto.exponents, every.exponents, rtol=0, atol=1e-10)


def test_ill_conditioned_segments_are_redone_step_by_step():
    """Products of 4 x 4 Gaussian matrices: a nearly singular factor makes the growth ratio
    over 18 steps reach 1e13 now and then, and a QR every 18 steps then got the bottom
    exponent wrong by 1e-6 to 1e-4, by a different amount under each CPU's kernels
    (measured before segments were redone). With the redo, QR
    every 18 steps and every step agree to rounding, forward and adjoint."""
    net = RandomNetwork(4, activation="linear", sigma_w2=1.0, seed=0)
    x0 = torch.zeros(4, dtype=F64)
    every = lyapunov_spectrum(net, x0, 20000)
    sparse = lyapunov_spectrum(net, x0, 20000, renorm_every=18)
    torch.testing.assert_close(sparse.exponents, every.exponents, rtol=0, atol=1e-7)
    adj_every = adjoint_lyapunov_spectrum(net, x0, 20000)
    adj_sparse = adjoint_lyapunov_spectrum(net, x0, 20000, renorm_every=18)
    torch.testing.assert_close(adj_sparse.exponents, adj_every.exponents, rtol=0, atol=1e-7)


def test_ensemble_size_changes_exponents_within_error_bars(henon_result):
    small = lyapunov_spectrum(Henon(), henon_ensemble(members=10, seed=1), 4000, warmup=200)
    diff = (small.exponents - henon_result.exponents).abs()
    bar = torch.sqrt(small.stderr**2 + henon_result.stderr**2)
    assert (diff < 4 * bar).all(), (diff, bar)


def test_result_fields_are_consistent(henon_result):
    r = henon_result
    assert r.finite_time.shape == (4000, 2) and r.finite_time_steps[-1] == 4000
    torch.testing.assert_close(r.finite_time[-1], r.exponents, rtol=0, atol=1e-12)
    assert r.basis.shape == (50, 2, 2) and r.final_state.shape == (50, 2)
    torch.testing.assert_close(r.basis.mT @ r.basis, torch.eye(2, dtype=F64).expand(50, 2, 2), rtol=0, atol=1e-12)
    assert (r.exponents[:-1] >= r.exponents[1:]).all()


def test_member_exponents_average_to_the_exponents(henon_result):
    r = henon_result
    assert r.member_exponents.shape == (50, 2)
    torch.testing.assert_close(r.member_exponents.mean(0), r.exponents, rtol=0, atol=1e-13)
    # each member's exponents sum to ln b exactly, like the ensemble's
    torch.testing.assert_close(r.member_exponents.sum(-1), torch.full((50,), math.log(0.3), dtype=F64),
                               rtol=0, atol=1e-12)
    single = lyapunov_spectrum(Henon(), henon_ensemble()[0], 200)
    with pytest.raises(ValueError, match="at least two ensemble members"):
        _ = single.member_estimates


def test_member_error_bars_are_calibrated_on_henon():
    """40 groups of 10 independent orbits, each group's mean against the long-run reference.

    (lambda_1, lambda_2) = (0.41922, ln 0.3 - 0.41922), known to 4e-5, far below the groups'
    error bars (about 2e-3). With 10 members a z-score is t-distributed with 9 degrees of
    freedom (root mean square 1.13); over 80 z-scores the root mean square falls outside
    [0.75, 1.6] with probability below 1e-3. Batch means of one group would hide a wrong
    error bar; here the spread across groups tests it.
    """
    x = torch.tensor([0.1, 0.1], dtype=F64) + 0.01 * torch.randn(40, 10, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    members = lyapunov_spectrum(Henon(), x, 1000, warmup=100).member_exponents  # (40, 10, 2)
    reference = torch.tensor([0.41922, math.log(0.3) - 0.41922], dtype=F64)
    z = (members.mean(1) - reference) / (members.std(1) / math.sqrt(10))
    rms = float(z.pow(2).mean().sqrt())
    assert 0.75 < rms < 1.6, rms


def test_batch_means_overestimate_lorenz_error_bars_and_member_spread_does_not():
    """Lorenz-63: blocks of 1 time unit carry boundary terms that cancel between neighbours.

    20 groups of 10 orbits over 20 time units: the root mean square of the groups' z-scores
    against the reference 0.9056 is about 1.1-1.4 with member error bars (t with 9 degrees
    of freedom has 1.13; the finite-time bias of order 1/T adds a little) and about 0.3 with
    batch-means error bars of the whole ensemble scaled to one group. Thresholds (below 2
    and a batch-means error bar at least twice the member one) hold with a wide margin.
    """
    lorenz = Lorenz63()
    x = torch.tensor([1.0, 1.0, 20.0], dtype=F64) + torch.randn(20, 10, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    r = lyapunov_spectrum(lorenz, x, 2000, warmup=500)
    members = r.member_exponents[..., 0] / lorenz.dt  # (20, 10)
    z = (members.mean(1) - 0.9056) / (members.std(1) / math.sqrt(10))
    rms = float(z.pow(2).mean().sqrt())
    assert rms < 2.0, rms
    member_bar, batch_bar = r.member_estimates[0].stderr, float(r.stderr[0])
    assert batch_bar > 2 * member_bar, (batch_bar, member_bar)


def test_kaplan_yorke_dimension():
    assert kaplan_yorke_dimension(torch.tensor([1.0, -2.0], dtype=F64)) == pytest.approx(1.5, abs=1e-15)
    assert kaplan_yorke_dimension(torch.tensor([0.5, 0.2, -1.4], dtype=F64)) == pytest.approx(2.5, abs=1e-15)
    assert kaplan_yorke_dimension(torch.tensor([-0.1, -1.0], dtype=F64)) == 0.0
    assert kaplan_yorke_dimension(torch.tensor([0.5, 0.1], dtype=F64)) is None  # needs more exponents


def test_initial_basis_measures_the_growth_of_its_own_directions():
    """x -> A x, A = diag(2, 1, 1/2): from e_2 the growth is exactly ln 1 = 0 and from e_3
    exactly ln(1/2), at every step, although the top exponent is ln 2 (which a random basis
    finds); a basis (e_3, e_1) keeps its first direction and orthonormalises the second."""
    A = Affine(torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=F64)), torch.zeros(3, dtype=F64))
    x0 = torch.zeros(3, dtype=F64)
    e = torch.eye(3, dtype=F64)
    assert lyapunov_spectrum(A, x0, 30, basis=e[:, 1]).exponents.item() == pytest.approx(0.0, abs=1e-14)
    both = lyapunov_spectrum(A, x0, 30, basis=3 * e[:, [2, 0]] + 0.5 * e[:, [0, 1]])  # (3e3 + e1/2, 3e1 + e2/2)
    growth = math.hypot(0.5 * 2.0**30, 3 * 0.5**30) / math.hypot(0.5, 3)  # |A^30 v| / |v|, v = (1/2, 0, 3)
    assert both.exponents[0].item() == pytest.approx(math.log(growth) / 30, abs=1e-13)
    assert lyapunov_spectrum(A, x0, 30, basis=e[:, 2]).exponents.item() == pytest.approx(math.log(0.5), abs=1e-14)
    assert lyapunov_spectrum(A, x0, 200, k=1).exponents.item() == pytest.approx(math.log(2), abs=0.02)


@pytest.mark.parametrize(
    ("basis", "k", "message"),
    [
        (torch.ones(2, 1), None, r"basis must be a \(dim, k\) matrix with dim = 3; got shape \(2, 1\)"),
        (torch.ones(3, 2), 1, r"basis must be a \(dim, k\) matrix with dim = 3 and k = 1; got shape \(3, 2\)"),
        (torch.ones(3, 2), None, r"basis must have linearly independent columns"),
        (torch.full((3, 1), float("nan")), None, r"non-finite initial basis"),
    ],
)
def test_bad_initial_basis(basis, k, message):
    A = Affine(torch.eye(3, dtype=F64) / 2, torch.zeros(3, dtype=F64))
    with pytest.raises((ValueError, NonFiniteStateError), match=message):
        lyapunov_spectrum(A, torch.zeros(3, dtype=F64), 5, k=k, basis=basis)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 3}, r"k must be a whole number with 1 <= k <= dim = 2; got k = 3"),
        ({"k": 0}, r"got k = 0"),
        ({"steps": 0}, r"steps must be a whole number >= 1; got steps = 0"),
        ({"warmup": -1}, r"warmup must be a whole number >= 0; got warmup = -1"),
        ({"renorm_every": 0}, r"renorm_every must be a whole number >= 1 or 'auto'; got 0"),
        ({"renorm_every": "often"}, r"got 'often'"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"steps": 10} | kwargs
    with pytest.raises(ValueError, match=message):
        lyapunov_spectrum(Henon(), torch.tensor([0.1, 0.1], dtype=F64), **args)


def test_diverging_state_and_overflowing_basis_name_the_step():
    with pytest.raises(NonFiniteStateError, match=r"non-finite state at step \d+"):
        lyapunov_spectrum(Henon(a=3.0), torch.tensor([1.0, 1.0], dtype=F64), 100)
    # logistic r = 4 doubles tangent vectors each step: 2^1100 overflows float64, and the
    # overflowing segment is redone with a QR every step instead of returning inf
    x0 = torch.tensor([0.3], dtype=F64)
    once = lyapunov_spectrum(Logistic(), x0, 1100, renorm_every=1100)
    torch.testing.assert_close(once.exponents, lyapunov_spectrum(Logistic(), x0, 1100).exponents, rtol=0, atol=1e-12)


def test_singular_jacobian_is_reported_not_turned_into_minus_infinity():
    # the logistic map's derivative vanishes at x = 1/2: the tangent vector collapses to zero
    with pytest.raises(NonFiniteStateError, match=r"log stretching factors .*singular.* at step 1"):
        lyapunov_spectrum(Logistic(), torch.tensor([0.5], dtype=F64), 10)
