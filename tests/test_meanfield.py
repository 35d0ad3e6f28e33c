"""Mean-field quantities against exact values and an independent Monte Carlo estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

import torch

from chaosgrad import meanfield
from chaosgrad.meanfield import (
    c_star,
    chi1,
    correlation_depth,
    critical_sigma_w2,
    gaussian_expectation,
    q_star,
    top_exponent,
)


def test_quadrature_moments_are_exact():
    assert gaussian_expectation(lambda z: z**2) == pytest.approx(1.0, abs=1e-13)
    assert gaussian_expectation(lambda z: z**4) == pytest.approx(3.0, abs=1e-12)
    assert gaussian_expectation(lambda z: (z > 0).double()) == pytest.approx(0.5, abs=1e-14)


def test_linear_and_relu_in_closed_form():
    # linear: q* = sigma_b2 / (1 - sigma_w2), chi1 = sigma_w2
    assert q_star("linear", 0.5, 0.1) == pytest.approx(0.2, rel=1e-12)
    assert chi1("linear", 0.5, 0.1) == pytest.approx(0.5, rel=1e-12)
    # relu: q* = sigma_b2 / (1 - sigma_w2/2), chi1 = sigma_w2 / 2 (He initialisation is critical)
    assert q_star("relu", 1.5, 0.1) == pytest.approx(0.4, rel=1e-12)
    assert chi1("relu", 1.5, 0.1) == pytest.approx(0.75, rel=1e-12)


def test_wide_pre_activations_are_integrated_accurately():
    """sigma_w2 = 256 (N(0, 1) weights at width 256): q* is about 250, so phi'(sqrt(q*) z) is a
    spike of width 0.06 in z. An independent fine trapezoid rule (spacing 2e-5) is the reference;
    a 200-point Gauss-Hermite rule is wrong by a factor 15 here."""
    z = np.linspace(-14, 14, 1_400_001)
    w = np.exp(-z * z / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    q = q_star("tanh", 256.0, 0.0)
    assert 256.0 * np.sum(w * np.tanh(math.sqrt(q) * z) ** 2) == pytest.approx(q, rel=1e-9)
    assert chi1("tanh", 256.0, 0.0) == pytest.approx(256.0 * np.sum(w * (1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2), rel=1e-9)
    # ReLU: chi1 = sigma_w2 / 2 whether or not the length map has a fixed point (q* = 0 or none)
    assert chi1("relu", 1.0, 0.0) == pytest.approx(0.5, rel=1e-12)
    assert chi1("relu", 256.0, 0.0) == pytest.approx(128.0, rel=1e-12)


def test_tanh_without_bias_is_critical_at_sigma_w2_one():
    """q* = 0 for sigma_w2 <= 1, so chi1 = sigma_w2 * tanh'(0)^2 = sigma_w2 and the line sits at 1."""
    assert q_star("tanh", 0.9, 0.0) == 0.0
    assert chi1("tanh", 0.9, 0.0) == pytest.approx(0.9, rel=1e-12)
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)


def test_fixed_point_and_chi1_against_monte_carlo():
    """An independent estimate: 4e6 Gaussian samples, standard errors about 3e-4."""
    z = np.random.default_rng(0).standard_normal(4_000_000)
    sw2, sb2 = 2.0, 0.05
    q = q_star("tanh", sw2, sb2)
    assert sw2 * np.mean(np.tanh(math.sqrt(q) * z) ** 2) + sb2 == pytest.approx(q, abs=2e-3)
    mc = sw2 * np.mean((1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2)
    assert chi1("tanh", sw2, sb2) == pytest.approx(mc, abs=2e-3)
    assert top_exponent("tanh", sw2, sb2) == pytest.approx(0.5 * math.log(mc), abs=2e-3)


def test_critical_line_is_where_chi1_is_one_and_grows_with_bias():
    lines = [critical_sigma_w2("tanh", sb2) for sb2 in (0.0, 0.05, 0.5)]
    for sb2, sw2 in zip((0.0, 0.05, 0.5), lines):
        assert chi1("tanh", sw2, sb2) == pytest.approx(1.0, abs=1e-8)
    assert lines[0] < lines[1] < lines[2]


def test_sigmoid_networks_are_deep_in_the_ordered_phase():
    """sigmoid'(0) = 1/4: chi1 < 1 until sigma_w2 is about 100."""
    assert chi1("sigmoid", 1.0, 0.0) < 0.1
    assert critical_sigma_w2("sigmoid", 0.0, hi=500.0) > 50


def test_correlation_depth_in_the_ordered_phase_is_that_of_chi1():
    assert c_star("tanh", 1.5, 0.05) == 1.0
    assert correlation_depth("tanh", 1.5, 0.05) == pytest.approx(-1 / math.log(chi1("tanh", 1.5, 0.05)), rel=1e-12)


def test_chaotic_correlation_fixed_point_and_depth_against_monte_carlo():
    """Independent estimate: the correlation map C(c) by 4e6 Gaussian pairs (common random
    numbers for the difference quotient). C(c*) = c* and C'(c*) = exp(-1/xi_c)."""
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal((2, 4_000_000))
    sw2, sb2 = 2.0, 0.05
    q, c = q_star("tanh", sw2, sb2), c_star("tanh", sw2, sb2)

    def corr_map(cc):
        u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (cc * z1 + math.sqrt(1 - cc * cc) * z2)
        return (sw2 * np.mean(np.tanh(u1) * np.tanh(u2)) + sb2) / q

    assert 0.5 < c < 0.95
    assert corr_map(c) == pytest.approx(c, abs=2e-3)
    slope = (corr_map(c + 0.01) - corr_map(c - 0.01)) / 0.02
    assert slope == pytest.approx(math.exp(-1 / correlation_depth("tanh", sw2, sb2)), abs=5e-3)


def test_correlation_depth_diverges_at_the_critical_line():
    crit = critical_sigma_w2("tanh", 0.05)
    depths = [correlation_depth("tanh", s, 0.05) for s in (crit - 0.3, crit - 0.03, crit + 0.03, crit + 0.3)]
    assert depths[1] > 5 * depths[0] and depths[2] > 5 * depths[3]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"activation must be one of \['linear', 'relu', 'sigmoid', 'tanh'\]; got 'gelu'"):
        chi1("gelu", 1.0, 0.0)
    with pytest.raises(ValueError, match=r"sigma_w2 must be a finite number > 0; got sigma_w2 = 0"):
        q_star("tanh", 0, 0.0)
    with pytest.raises(ValueError, match=r"sigma_b2 must be a finite number >= 0; got sigma_b2 = -1"):
        q_star("tanh", 1.0, -1)
    with pytest.raises(ValueError, match=r"has no finite fixed point"):
        q_star("relu", 2.5, 0.0)
    with pytest.raises(ValueError, match=r"chi1 - 1 does not change sign"):
        critical_sigma_w2("sigmoid", 0.0)


def test_width_correction_exact_cases():
    # linear: kappa = 1, c = -1/2, the first term of Newman's exact top exponent
    assert meanfield.width_correction("linear", 1.0, 0.0) == pytest.approx(-0.5, abs=1e-12)
    N = 4000
    newman = 0.5 * (math.log(2) + float(torch.digamma(torch.tensor(N / 2.0, dtype=torch.float64)))) - 0.5 * math.log(N)
    assert N * newman == pytest.approx(-0.5, abs=1e-3)  # -1/(2N) - 1/(6 N^2) + ...
    # ReLU: phi' is 0 or 1, E phi'^2 = E phi'^4 = 1/2, kappa = 2, c = -5/4
    assert meanfield.width_correction("relu", 2.0, 0.0) == pytest.approx(-1.25, abs=1e-12)


def test_width_correction_against_monte_carlo_of_one_layer():
    """E (1/2) ln ||D W v||^2 - (1/2) ln chi1 over 200,000 draws of one width-100 layer.

    Its standard error is 2.6e-4 and the O(1/N^2) remainder about 2e-4, against
    c/N = -0.0134 (tanh, sigma_w2 = 4): the tolerance 1.5e-3 is five standard errors plus the
    remainder. A variance without the factor 3 (c = -0.81) would miss by 5e-3.
    """
    N, draws, s2, b2 = 100, 200_000, 4.0, 0.05
    g = torch.Generator().manual_seed(0)
    q = meanfield.q_star("tanh", s2, b2)
    a = math.sqrt(q) * torch.randn(draws, N, generator=g, dtype=torch.float64)
    z = torch.randn(draws, N, generator=g, dtype=torch.float64)
    y = s2 * ((1 - torch.tanh(a) ** 2) ** 2 * z**2).mean(-1)
    excess = 0.5 * float(torch.log(y).mean()) - meanfield.top_exponent("tanh", s2, b2)
    assert excess == pytest.approx(meanfield.width_correction("tanh", s2, b2) / N, abs=1.5e-3)


def test_finite_width_critical_line_lies_right_of_mean_field():
    mean_field = meanfield.critical_sigma_w2("tanh", 0.05)
    wide = meanfield.critical_sigma_w2("tanh", 0.05, width=500)
    assert mean_field < wide < mean_field + 0.03
    # at the finite-width line the corrected exponent vanishes
    c = meanfield.width_correction("tanh", wide, 0.05)
    assert abs(meanfield.top_exponent("tanh", wide, 0.05) + c / 500) < 1e-9
    with pytest.raises(ValueError, match="width must be a whole number >= 1"):
        meanfield.critical_sigma_w2("tanh", 0.05, width=0)


def test_finite_depth_exponent_is_the_fixed_point_value_when_started_there_and_for_relu():
    """Started at q* the length map stays there, so every layer has chi1(q*): the average is
    top_exponent for any depth. ReLU's chi1 does not depend on q: (1/2) ln(sigma_w2 / 2)."""
    from chaosgrad.meanfield import finite_depth_exponent

    for sw2, sb2 in ((2.0, 0.05), (1.5, 0.3)):
        q = q_star("tanh", sw2, sb2)
        assert finite_depth_exponent("tanh", sw2, sb2, q, 7) == pytest.approx(top_exponent("tanh", sw2, sb2), abs=1e-9)
    assert finite_depth_exponent("relu", 1.7, 0.0, 0.3, 11) == pytest.approx(0.5 * math.log(1.7 / 2), abs=1e-12)


def test_finite_depth_exponent_against_monte_carlo_of_the_length_map():
    """Independent estimate: the length map and chi1 by 10^6 Gaussian samples per layer
    (standard error about 1e-3 of each expectation), tanh from q0 = 2 for 6 layers; and the
    approach to q* from far away shows in the finite-depth rate: He-initialised tanh
    (sigma_w2 = 2) from q0 = 2 over 50 layers sits below the fixed-point rate 0.0502."""
    from chaosgrad.meanfield import finite_depth_exponent

    rng = np.random.default_rng(3)
    sw2, sb2, q, rates = 2.0, 0.1, 2.0, []
    for _ in range(6):
        z = rng.standard_normal(1_000_000)
        rates.append(0.5 * math.log(sw2 * np.mean((1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2)))
        q = sw2 * np.mean(np.tanh(math.sqrt(q) * z) ** 2) + sb2
    assert finite_depth_exponent("tanh", sw2, sb2, 2.0, 6) == pytest.approx(np.mean(rates), abs=3e-3)
    he = finite_depth_exponent("tanh", 2.0, 0.0, 2.0, 50)
    assert 0.03 < he < top_exponent("tanh", 2.0, 0.0) - 0.005


def test_finite_depth_exponent_tends_to_top_exponent_like_one_over_depth():
    """The deviations chi1(q_l) - chi1(q*) decay geometrically off the critical line, so
    depth * (rate - top_exponent) converges: equal at depths 400 and 800 to 1e-9."""
    from chaosgrad.meanfield import finite_depth_exponent

    top = top_exponent("tanh", 2.0, 0.05)
    excess = [L * (finite_depth_exponent("tanh", 2.0, 0.05, 0.2, L) - top) for L in (400, 800)]
    assert abs(excess[0]) > 0.05  # the start at q0 = 0.2, far from q* = 0.72, leaves a finite excess
    assert excess[0] == pytest.approx(excess[1], abs=1e-9)


def test_finite_depth_exponent_bad_inputs():
    from chaosgrad.meanfield import finite_depth_exponent

    with pytest.raises(ValueError, match=r"q0 must be a finite number >= 0; got q0 = -1"):
        finite_depth_exponent("tanh", 1.0, 0.0, -1, 5)
    with pytest.raises(ValueError, match=r"depth must be a whole number >= 1; got depth = 0"):
        finite_depth_exponent("tanh", 1.0, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match=r"sigma_w2 must be a finite number > 0; got sigma_w2 = 0"):
        finite_depth_exponent("tanh", 0, 0.0, 1.0, 5)
