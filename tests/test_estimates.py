"""Estimates with error bars: PDG rounding, reading printed estimates back, batch means,
jackknife, bootstrap and weighted line fits, against exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chaosgrad.estimates import (
    Estimate,
    batch_means,
    bootstrap,
    disagreement,
    find_printed,
    fit_line,
    jackknife,
    pm,
)

F64 = torch.float64


@pytest.mark.parametrize(
    "value, error, printed",
    [
        (0.41992, 0.00078, "0.4199 ± 0.0008"),  # 780: one significant digit
        (0.41992, 0.00034, "0.41992 ± 0.00034"),  # 340: two digits
        (-14.5714, 0.0127, "-14.571 ± 0.013"),
        (25.06, 0.951, "25.1 ± 1.0"),  # 951 rounds up to 1.0, two digits
        (1234.5, 35.6, "1230 ± 40"),  # 356: one digit, tens
        (0.0457, 2.13e-5, "0.045700 ± 0.000021"),
        (-3.0174e13, 2.14e13, "-3.0e+13 ± 2.1e+13"),
        (0.5, 3e-7, "5.0000000e-01 ± 3.0e-07"),
    ],
)
def test_pm_rounds_by_the_pdg_rule(value, error, printed):
    assert pm(value, error) == printed


def test_pm_and_estimate_refuse_non_finite_numbers():
    with pytest.raises(ValueError, match=r"finite value and a finite error >= 0; got nan"):
        pm(float("nan"), 0.1)
    with pytest.raises(ValueError, match=r"got 1.0 \+- -0.1"):
        pm(1.0, -0.1)
    with pytest.raises(ValueError, match=r"finite value and error bar; got inf"):
        Estimate(float("inf"), 1.0)
    with pytest.raises(ValueError, match=r"at least two samples .*got 1"):
        Estimate.of(torch.tensor([1.0], dtype=F64))


def test_estimate_of_samples_prints_and_combines():
    e = Estimate.of(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    assert (e.value, e.stderr) == (2.0, pytest.approx(1 / math.sqrt(3), abs=1e-15))
    assert str(e) == "2.0 ± 0.6" and f"{e:>12}" == "   2.0 ± 0.6"
    d = e - Estimate(1.0, 0.5)
    assert d.value == 1.0 and d.stderr == pytest.approx(math.hypot(1 / math.sqrt(3), 0.5))
    assert (2 * e).stderr == pytest.approx(2 / math.sqrt(3)) and (e / 4).value == 0.5


def test_ratio_of_independent_estimates_against_monte_carlo():
    """The delta method's error of a / b against the spread of 200,000 ratios of Gaussian
    draws (relative errors 2% and 3%, where the first-order formula is good to about 0.1%;
    the spread itself is known to 0.16%, so 1% is six of its standard errors)."""
    a, b = Estimate(2.0, 0.04), Estimate(-0.5, 0.015)
    r = a / b
    rng = np.random.default_rng(0)
    draws = (2.0 + 0.04 * rng.standard_normal(200_000)) / (-0.5 + 0.015 * rng.standard_normal(200_000))
    assert r.value == -4.0 and r.stderr == pytest.approx(4.0 * math.hypot(0.02, 0.03), rel=1e-12)
    assert r.stderr == pytest.approx(draws.std(), rel=0.01)
    with pytest.raises(ValueError, match="nonzero values"):
        a / Estimate(0.0, 0.1)


def test_printed_estimates_are_read_back_with_their_last_digit():
    text = "Henon: 0.4199 ± 0.0008, -1.6239 +- 0.0008; big -3.0e+13 ± 2.1e+13; not x1 ± 2y"
    found = find_printed(text)
    assert [(p.value, p.error) for p in found] == [(0.4199, 0.0008), (-1.6239, 0.0008), (-3.0e13, 2.1e13)]
    assert [p.value_unit for p in found] == pytest.approx([1e-4, 1e-4, 1e12])
    assert text[found[1].start : found[1].end] == "-1.6239 +- 0.0008"


def one(text):
    (p,) = find_printed(text)
    return p


def test_disagreement_within_and_beyond_five_error_bars():
    stored = one("0.4199 ± 0.0008")
    assert disagreement(stored, one("0.4199 ± 0.0008")) is None
    # 5 * hypot(0.0008, 0.0008) + 1e-4 = 0.00576: 0.0056 away agrees, 0.0060 does not
    assert disagreement(stored, one("0.4255 ± 0.0008")) is None
    why = disagreement(stored, one("0.4259 ± 0.0008"))
    assert "differs from the stored '0.4199 ± 0.0008' by 0.006" in why and "5 combined error bars" in why
    why = disagreement(stored, one("0.4199 ± 0.0040"))
    assert why is not None and "5.0 times" in why
    # an error printed as zero counts as half a unit of its last digit
    assert disagreement(one("0.0457 ± 0.0000"), one("0.0458 ± 0.0000")) is None
    assert disagreement(one("0.0457 ± 0.0000"), one("0.0462 ± 0.0000")) is not None


def test_batch_means_of_blocks_and_weights():
    x = torch.arange(12, dtype=F64)
    mean, stderr, blocks, weights = batch_means(x, blocks=3)
    assert mean == 5.5 and blocks.tolist() == [1.5, 5.5, 9.5] and weights.tolist() == [4, 4, 4]
    assert stderr == pytest.approx(4 / math.sqrt(3))  # sd of (1.5, 5.5, 9.5) is 4
    w = torch.tensor([1.0, 3.0], dtype=F64)
    mean, stderr, blocks, _ = batch_means(torch.tensor([2.0, 6.0], dtype=F64), blocks=1, weights=w)
    assert mean == 5.0 and stderr is None
    with pytest.raises(ValueError, match="blocks must be a whole number >= 1; got blocks = 0"):
        batch_means(x, blocks=0)


def test_series_mean_error_bar_grows_with_correlation():
    """An AR(1) series x_n = 0.9 x_{n-1} + e_n has integrated autocorrelation time
    (1 + 0.9)/(1 - 0.9) = 19: batch means over blocks of 1000 steps find an error about
    sqrt(19) = 4.4 times the naive one (within 40%: 20 blocks estimate it to about 16%)."""
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(20000, generator=g, dtype=F64)
    x = torch.empty_like(noise)
    x[0] = noise[0]
    for n in range(1, len(x)):
        x[n] = 0.9 * x[n - 1] + noise[n]
    est = Estimate.of_series(x)
    naive = float(x.std()) / math.sqrt(len(x))
    assert est.stderr / naive == pytest.approx(math.sqrt(19), rel=0.4)
    with pytest.raises(ValueError, match="at least two blocks"):
        Estimate.of_series(torch.ones(1, dtype=F64))


def test_jackknife_of_a_mean_is_the_batch_means_error_and_handles_nonlinear_statistics():
    g = torch.Generator().manual_seed(0)
    blocks = torch.randn(20, generator=g, dtype=F64) + 3.0
    est = jackknife(lambda m: float(m), blocks)
    assert est.value == pytest.approx(float(blocks.mean()), abs=1e-14)
    assert est.stderr == pytest.approx(float(blocks.std() / math.sqrt(20)), rel=1e-12)
    # a square of the mean: delta method gives 2 |mean| stderr
    sq = jackknife(lambda m: float(m) ** 2, blocks)
    assert sq.stderr == pytest.approx(2 * abs(est.value) * est.stderr, rel=0.05)
    with pytest.raises(ValueError, match="finite number for every block"):
        jackknife(lambda m: None, blocks)


def test_bootstrap_error_of_a_mean_matches_the_standard_error():
    """400 resamples estimate the standard error to about 1/sqrt(800) = 3.5%: 15% is 4 sigma."""
    samples = torch.randn(500, generator=torch.Generator().manual_seed(1), dtype=F64)
    boot = bootstrap(lambda s: s.mean(), samples)
    exact = Estimate.of(samples)
    assert boot.value == exact.value and boot.stderr == pytest.approx(exact.stderr, rel=0.15)
    q = bootstrap(lambda s: torch.quantile(s, torch.tensor([0.1, 0.5, 0.9], dtype=F64)), samples)
    assert len(q) == 3 and q[0].value < q[1].value < q[2].value


def test_fit_line_is_exact_on_a_line_and_matches_weighted_least_squares():
    x, y = [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0]
    a, b, cov = fit_line(x, y, [0.1] * 4)
    assert (a.value, b.value) == (pytest.approx(1.0, abs=1e-12), pytest.approx(2.0, abs=1e-12))
    # equal errors: var(b) = s^2 / sum (x - xbar)^2 = 0.01 / 5
    assert b.stderr == pytest.approx(math.sqrt(0.01 / 5)) and cov < 0
    rng = np.random.default_rng(0)
    xs, s = np.linspace(0, 1, 9), rng.uniform(0.1, 0.3, 9)
    ys = 0.5 - xs + s * rng.standard_normal(9)
    _, b, _ = fit_line(xs, ys, s)
    assert b.value == pytest.approx(np.polyfit(xs, ys, 1, w=1 / s)[0], rel=1e-12)
    with pytest.raises(ValueError, match="every error bar must be > 0"):
        fit_line(x, y, [0.1, 0.0, 0.1, 0.1])


def test_weighted_mean():
    from chaosgrad.estimates import weighted_mean
    m = weighted_mean([Estimate(1.0, 0.1), Estimate(2.0, 0.2)])
    # weights 100 and 25: (100 + 50) / 125 = 1.2, error 1/sqrt(125)
    assert m.value == pytest.approx(1.2, abs=1e-14) and m.stderr == pytest.approx(125**-0.5, abs=1e-14)
    assert weighted_mean([Estimate(3.0, 0.5)]).value == 3.0
    with pytest.raises(ValueError, match="at least one estimate"):
        weighted_mean([])
    with pytest.raises(ValueError, match="every error bar must be > 0"):
        weighted_mean([Estimate(1.0, 0.1), Estimate(1.0, 0.0)])
