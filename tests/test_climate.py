"""Climate statistics of a learned model against noisy data (chaosgrad.climate).

Exact identities (shapes, hand-stepped orbits, hand-computed energy distances, valid times of
a drifting model, the loss's gradient identity) are checked to rounding: 1e-12. Statistical
checks compare with closed forms of Gaussian data; each states its standard deviation and
uses 5 of them (two-sided Gaussian tail 5.7e-7 per number checked), or a bound that holds for
the worst case of a skewed statistic, so that a random failure has chance < 1e-4 for the whole
file while a wrong factor (a missing noise correction, a wrong bandwidth) fails by many sigma.
Every random draw is seeded, so a run is reproducible.
"""

from __future__ import annotations

import math

import pytest
import torch

import chaosgrad
from chaosgrad.climate import (
    Assessment,
    FourierStatistics,
    Observations,
    assess,
    corrected_moments,
    energy_distance,
    observe,
    summarise,
    valid_time,
)
from chaosgrad.systems import Affine, Henon, Lorenz63

F64 = torch.float64
EXACT = 1e-12


def gaussian_observations(n: int, mean, cov, noise: float, seed: int = 0) -> Observations:
    """n clean points of N(mean, cov) (as one run of n - 1 intervals) plus N(0, noise^2 I)."""
    g = torch.Generator().manual_seed(seed)
    mean, cov = torch.as_tensor(mean, dtype=F64), torch.as_tensor(cov, dtype=F64)
    L = torch.linalg.cholesky(cov)
    clean = mean + torch.randn(n, 1, mean.shape[0], generator=g, dtype=F64) @ L.mT
    noisy = clean + noise * torch.randn(clean.shape, generator=g, dtype=F64)
    return Observations(clean, noisy, 1.0, noise)


MEAN = [1.0, -2.0, 0.5]
COV = [[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 1.5]]


# -- observe and Observations ---------------------------------------------------------------
def test_observe_shapes_interval_and_clean_orbit_equal_stepping_by_hand():
    system = Lorenz63(dt=0.01)
    x0 = torch.tensor([[1.0, 1.0, 20.0], [-3.0, 2.0, 25.0]], dtype=F64)
    obs = observe(system, x0, samples=5, every=3, noise=0.5, warmup=4, seed=1)
    assert obs.clean.shape == obs.noisy.shape == (6, 2, 3)
    assert obs.runs == 2 and obs.noise == 0.5
    assert obs.interval == pytest.approx(0.03, rel=1e-15)
    x = x0
    for n in range(4):
        x = system.step(x, n)
    expected = [x]
    for _ in range(5):
        for _ in range(3):
            x = system.step(x)
        expected.append(x)
    torch.testing.assert_close(obs.clean, torch.stack(expected), rtol=0, atol=EXACT)
    assert not torch.equal(obs.noisy, obs.clean)
    # a map without dt: the interval is counted in steps
    assert observe(Henon(), torch.full((1, 2), 0.1, dtype=F64), 2, every=4, noise=0.1).interval == 4.0


def test_observation_noise_has_the_stated_level_and_is_seeded():
    system = Henon()
    x0 = 0.1 + 0.01 * torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    obs = observe(system, x0, samples=3000, every=1, noise=0.2, warmup=100, seed=3)
    residual = (obs.noisy - obs.clean).reshape(-1)
    N = residual.numel()  # 30,010 independent N(0, 0.04) draws
    # the sample std has relative sd 1/sqrt(2N) = 0.0041 and the mean sd 0.2/sqrt(N) = 0.0012: 5 sd each
    assert residual.std().item() == pytest.approx(0.2, rel=5 / math.sqrt(2 * N))
    assert abs(residual.mean().item()) < 5 * 0.2 / math.sqrt(N)
    again = observe(system, x0, samples=3000, every=1, noise=0.2, warmup=100, seed=3)
    assert torch.equal(again.noisy, obs.noisy) and torch.equal(again.clean, obs.clean)
    other = observe(system, x0, samples=3000, every=1, noise=0.2, warmup=100, seed=4)
    assert torch.equal(other.clean, obs.clean) and not torch.equal(other.noisy, obs.noisy)


def test_observe_refuses_bad_arguments():
    system = Lorenz63()
    x0 = torch.tensor([[1.0, 1.0, 20.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"x0 must have shape \(runs, dim\); got shape \(3,\)"):
        observe(system, x0[0], 5, 1, 0.1)
    with pytest.raises(ValueError, match=r"x0 must have shape \(runs, dim\)"):
        observe(system, x0[None], 5, 1, 0.1)
    with pytest.raises(ValueError, match="noise must be a finite number > 0"):
        observe(system, x0, 5, 1, 0.0)
    with pytest.raises(ValueError, match="noise must be a finite number > 0"):
        observe(system, x0, 5, 1, -0.1)
    with pytest.raises(ValueError, match="samples must be a whole number >= 1; got samples = 0"):
        observe(system, x0, 0, 1, 0.1)
    with pytest.raises(ValueError, match="every must be a whole number >= 1"):
        observe(system, x0, 5, 0, 0.1)
    with pytest.raises(ValueError, match="x0 for Lorenz63"):
        observe(system, torch.zeros(2, 2, dtype=F64), 5, 1, 0.1)


def test_split_and_pairs():
    x0 = 0.1 + 0.01 * torch.arange(6, dtype=F64).reshape(3, 2)
    obs = observe(Henon(), x0, samples=7, every=1, noise=0.1, seed=2)
    train, held = obs.split(2)
    assert train.clean.shape == train.noisy.shape == (8, 2, 2) and held.clean.shape == (8, 1, 2)
    assert torch.equal(train.clean, obs.clean[:, :2]) and torch.equal(train.noisy, obs.noisy[:, :2])
    assert torch.equal(held.clean, obs.clean[:, 2:]) and torch.equal(held.noisy, obs.noisy[:, 2:])
    assert (train.interval, train.noise, held.interval, held.noise) == (1.0, 0.1, 1.0, 0.1)
    x, y = obs.pairs()
    assert x.shape == y.shape == (7 * 3, 2)
    for k in (0, 3, 6):
        for r in range(3):
            assert torch.equal(x[k * 3 + r], obs.noisy[k, r]) and torch.equal(y[k * 3 + r], obs.noisy[k + 1, r])
    with pytest.raises(ValueError, match=r"train must leave at least one held-out run: 1 <= train < 3; got 3"):
        obs.split(3)
    with pytest.raises(ValueError, match="train must be a whole number >= 1"):
        obs.split(0)


# -- corrected_moments ------------------------------------------------------------------------
def test_corrected_moments_recover_the_clean_moments_of_gaussian_data():
    n, s = 200_000, 0.7
    obs = gaussian_observations(n, MEAN, COV, s, seed=1)
    mean, cov = corrected_moments(obs.noisy, s)
    S = torch.tensor(COV, dtype=F64) + s**2 * torch.eye(3, dtype=F64)  # the covariance of the observations
    # sd of the sample mean: sqrt(S_ii / n); of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n) (Gaussian)
    sd_mean = (torch.diagonal(S) / n).sqrt()
    sd_cov = ((torch.diagonal(S)[:, None] * torch.diagonal(S)[None] + S**2) / n).sqrt()
    assert bool(((mean - torch.tensor(MEAN, dtype=F64)).abs() < 5 * sd_mean).all())
    assert bool(((cov - torch.tensor(COV, dtype=F64)).abs() < 5 * sd_cov).all())
    # without the correction the diagonal is off by s^2 = 0.49, over 100 sd: the check can fail
    _, plain = corrected_moments(obs.noisy)
    assert bool(((torch.diagonal(plain) - torch.diagonal(torch.tensor(COV, dtype=F64))).abs()
                 > 50 * torch.diagonal(sd_cov)).all())


def test_corrected_moments_without_noise_are_the_population_moments():
    x = torch.randn(40, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    mean, cov = corrected_moments(x)
    flat = x.reshape(-1, 2)
    torch.testing.assert_close(mean, flat.mean(0), rtol=0, atol=EXACT)
    torch.testing.assert_close(cov, torch.cov(flat.T, correction=0), rtol=0, atol=EXACT)
    _, corrected = corrected_moments(x, 0.3)
    torch.testing.assert_close(corrected, cov - 0.09 * torch.eye(2, dtype=F64), rtol=0, atol=EXACT)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="noise must be >= 0"):
            corrected_moments(x, bad)


# -- FourierStatistics ------------------------------------------------------------------------
def gaussian_feature_means(stats: FourierStatistics, mean, cov) -> torch.Tensor:
    """E sqrt2 cos(w.u + b) = sqrt2 cos(w.m_u + b) exp(-w^T C_u w / 2) for u = (x - shift)/scale, x ~ N(mean, cov)."""
    m_u = (torch.as_tensor(mean, dtype=F64) - stats.shift) / stats.scale
    C_u = torch.as_tensor(cov, dtype=F64) / (stats.scale[:, None] * stats.scale[None])
    quad = (stats.omega * (C_u @ stats.omega)).sum(0)
    return math.sqrt(2) * torch.cos(m_u @ stats.omega + stats.phase) * torch.exp(-quad / 2)


def test_target_is_the_clean_distributions_feature_means():
    n, s = 100_000, 0.8
    obs = gaussian_observations(n, MEAN, COV, s, seed=2)
    stats = FourierStatistics(obs, features=32, bandwidth=1.0, seed=5)
    assert stats.count == 32 and stats.omega.shape == (3, 32) and stats.target.shape == (32,)
    exact = gaussian_feature_means(stats, MEAN, COV)
    damping = torch.exp(-0.5 * ((stats.omega * (s / stats.scale)[:, None]) ** 2).sum(0))
    # each noisy feature has variance <= 2, so the target's sd is at most sqrt(2/n)/damping: 5 such sd
    # per feature, 32 features: a random failure has chance < 32 * 5.7e-7 = 2e-5
    tolerance = 5 * math.sqrt(2 / n) / damping
    assert bool(((stats.target - exact).abs() < tolerance).all())
    # the noisy data's own feature means (no deconvolution) miss it: the check can fail
    raw = stats.means(obs.noisy)
    assert bool(((raw - exact).abs() > tolerance).any())


def test_features_approximate_the_gaussian_kernel():
    obs = gaussian_observations(1000, MEAN, COV, 0.3, seed=3)
    ell = 1.5
    stats = FourierStatistics(obs, features=100_000, bandwidth=ell, seed=1)
    g = torch.Generator().manual_seed(4)
    u = torch.randn(8, 3, generator=g, dtype=F64)
    v = u + torch.linspace(0.0, 3.0, 8, dtype=F64)[:, None] * torch.randn(8, 3, generator=g, dtype=F64) / math.sqrt(3)
    raw = lambda w: stats.shift + stats.scale * w  # noqa: E731  (standardised -> raw units)
    approx = (stats.features(raw(u)) * stats.features(raw(v))).mean(-1)
    exact = torch.exp(-((u - v) ** 2).sum(-1) / (2 * ell**2))
    # phi(u) phi(v) = cos(w.(u-v)) + cos(w.(u+v) + 2b) has variance <= 1 + 1/2: sd <= 1.23/sqrt(J) = 0.0039;
    # 5 sd for each of 8 pairs. A bandwidth applied as 1/ell^2 or not at all misses by > 0.1.
    assert bool(((approx - exact).abs() < 5 * 1.23 / math.sqrt(100_000)).all())
    assert float(exact.min()) < 0.5  # the pairs span the kernel, not only its top


def test_observable_has_the_gradient_of_the_loss():
    obs = gaussian_observations(500, MEAN, COV, 0.3, seed=4)
    stats = FourierStatistics(obs, features=16, bandwidth=0.7, seed=2)
    g = torch.Generator().manual_seed(6)
    x = torch.tensor(MEAN, dtype=F64) + 1.3 * torch.randn(300, 3, generator=g, dtype=F64)
    means = stats.means(x)
    psi = stats.observable(means)
    assert psi(x).shape == (300,)
    # psi(x) = features(x) @ c: recover c by least squares (300 points, 16 features: exact to rounding)
    c = torch.linalg.lstsq(stats.features(x), psi(x)[:, None]).solution[:, 0]
    torch.testing.assert_close(stats.features(x) @ c, psi(x), rtol=0, atol=EXACT)
    # L is quadratic in the means, so central differences are exact up to rounding (~1e-12)
    eps = 1e-4
    for delta in torch.randn(3, 16, generator=g, dtype=F64):
        fd = (stats.loss(means + eps * delta) - stats.loss(means - eps * delta)) / (2 * eps)
        assert fd == pytest.approx(float(c @ delta), abs=1e-8)
    # the chain rule the estimators rely on: moving the states, dL = d<psi> with c held fixed
    V = torch.randn(300, 3, generator=g, dtype=F64)
    h = 1e-6
    dL = (stats.loss(stats.means(x + h * V)) - stats.loss(stats.means(x - h * V))) / (2 * h)
    dpsi = (psi(x + h * V).mean() - psi(x - h * V).mean()).item() / (2 * h)
    assert dL == pytest.approx(dpsi, rel=1e-6, abs=1e-10)  # central differences: O(h^2) + rounding/h


def test_error_is_a_jackknife_around_the_whole_orbits_loss():
    obs = gaussian_observations(2000, MEAN, COV, 0.3, seed=5)
    stats = FourierStatistics(obs, features=16, bandwidth=1.0, seed=0)
    g = torch.Generator().manual_seed(7)
    model_mean = torch.tensor(MEAN, dtype=F64) + 0.8  # a different distribution: L well above 0
    orbit = model_mean + torch.randn(103, 4, 3, generator=g, dtype=F64)  # 103 steps: blocks of 5 and 6 states
    estimate = stats.error(orbit, blocks=20)
    assert estimate.value == pytest.approx(math.sqrt(stats.loss(stats.means(orbit))), rel=EXACT)
    # the error bar is the sd of sqrt(L) over independent orbits: compare with 200 replicates. The mean of 200
    # jackknife errors (each with relative sd ~ 1/sqrt(2*19) = 16%) has relative sd 1.2%, the replicates' sd 5%:
    # 30% is 5 sd of their ratio
    values, errors = [], []
    for _ in range(200):
        orbit = model_mean + torch.randn(100, 4, 3, generator=g, dtype=F64)
        e = stats.error(orbit, blocks=20)
        values.append(e.value)
        errors.append(e.stderr)
    ratio = sum(errors) / len(errors) / torch.tensor(values).std().item()
    assert ratio == pytest.approx(1.0, rel=0.3)


def test_fourier_statistics_refuse_bad_arguments():
    obs = gaussian_observations(100, MEAN, COV, 0.3, seed=6)
    with pytest.raises(ValueError, match=r"noise 3.0 exceeds the spread of the data in coordinate\(s\) \[0, 1, 2\]"):
        FourierStatistics(Observations(obs.clean, obs.noisy, 1.0, 3.0))
    with pytest.raises(ValueError, match="features must be a whole number >= 1; got features = 0"):
        FourierStatistics(obs, features=0)
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        FourierStatistics(obs, bandwidth=0.0)
    a, b = FourierStatistics(obs, seed=3), FourierStatistics(obs, seed=3)
    assert torch.equal(a.omega, b.omega) and torch.equal(a.target, b.target)


# -- energy_distance ----------------------------------------------------------------------------
def test_energy_distance_on_hand_computed_samples():
    t = lambda *v: torch.tensor(v, dtype=F64)  # noqa: E731
    # {0,1} vs {2,3}: E|A-B| = (2+3+1+2)/4 = 2; E|A-A'| = E|B-B'| = 1 (U-statistics): 2*2 - 1 - 1 = 2
    assert energy_distance(t([0.0], [1.0]), t([2.0], [3.0])) == pytest.approx(2.0, abs=EXACT)
    # {0,1,3} vs {1,2}: cross 7/6, within a 12/6 = 2, within b 1: 7/3 - 3 = -2/3 (negative: unbiased)
    assert energy_distance(t([0.0], [1.0], [3.0]), t([1.0], [2.0])) == pytest.approx(-2 / 3, abs=EXACT)
    # Euclidean in 2-D: cross (10+8+5+5)/4 = 7, within a 5, within b 6: 14 - 5 - 6 = 3
    assert energy_distance(t([0.0, 0.0], [3.0, 4.0]), t([6.0, 8.0], [0.0, 8.0])) == pytest.approx(3.0, abs=EXACT)


def test_energy_distance_is_symmetric_and_near_zero_for_equal_distributions():
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(2000, 2, generator=g, dtype=F64), torch.randn(2000, 2, generator=g, dtype=F64)
    assert energy_distance(a, b) == pytest.approx(energy_distance(b, a), abs=EXACT)
    # under equal distributions n*E is a weighted sum of (chi^2_1 - 1): mean 0, sd 0.0018 at n = m = 1000
    # (300 replicates), 0.0009 here. Its right tail is at worst chi^2_1's, for which 15 sd (0.0135) has chance
    # < 1e-5; a shift of 0.5 (E = 0.14) fails it.
    assert abs(energy_distance(a, b)) < 0.0135
    assert energy_distance(a, b + torch.tensor([0.5, 0.0], dtype=F64)) > 0.0135


def test_energy_distance_of_shifted_gaussians_matches_the_closed_form():
    def folded_mean(mu: float, s: float) -> float:  # E|Z|, Z ~ N(mu, s^2)
        return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * math.erf(mu / (s * math.sqrt(2)))

    mu, n = 1.0, 4000
    exact = 2 * folded_mean(mu, math.sqrt(2)) - 2 * folded_mean(0.0, math.sqrt(2))  # 0.5418
    assert exact == pytest.approx(0.5418, abs=1e-4)
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(n, 1, generator=g, dtype=F64), mu + torch.randn(n, 1, generator=g, dtype=F64)
    # sd 0.0475 at n = m = 1000 (300 replicates), asymptotically normal: 0.024 here, 5 sd = 0.12
    assert energy_distance(a, b) == pytest.approx(exact, abs=0.12)


def test_energy_distance_refuses_bad_shapes():
    x = torch.zeros(5, 2, dtype=F64)
    for a, b in ((x[:, 0], x), (x, x[:, :1]), (x[:1], x), (x, x[None])):
        with pytest.raises(ValueError, match=r"needs samples \(n, dim\) and \(m, dim\) with n, m >= 2"):
            energy_distance(a, b)


# -- valid_time ---------------------------------------------------------------------------------
class Translation(chaosgrad.Map):
    """x -> x + v + c: the truth (c = 0) moves on a line; c != 0 drifts from it by n c after n steps."""

    dim = 2
    autonomous = True

    def __init__(self, c=(0.0, 0.0)) -> None:
        super().__init__()
        self.register_buffer("v", torch.tensor([0.3, -0.1], dtype=F64))
        self.register_buffer("c", torch.as_tensor(c, dtype=F64))

    def step(self, x, n=0):
        return x + self.v + self.c


def truth_orbit(samples: int = 40, runs: int = 3) -> torch.Tensor:
    x0 = torch.randn(runs, 2, generator=torch.Generator().manual_seed(10), dtype=F64)
    return Translation().trajectory(x0, samples)


def test_valid_time_of_the_true_map_is_the_horizon():
    rotation = Affine([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]], [1.0, 0.5], gamma=0.2)
    truth = rotation.trajectory(torch.randn(4, 2, generator=torch.Generator().manual_seed(11), dtype=F64), 50)
    starts = torch.tensor([0, 7, 30])
    valid = valid_time(rotation, truth, starts, horizon=20)
    assert valid.shape == (3, 4) and valid.dtype == torch.long
    assert bool((valid == 20).all())


def test_valid_time_of_a_drifting_model_is_exact():
    truth = truth_orbit()
    spread = math.sqrt(float(((truth - truth.reshape(-1, 2).mean(0)) ** 2).sum(-1).mean()))
    c = torch.tensor([0.09, 0.12], dtype=F64)  # |c| = 0.15
    ratio = 0.15 / spread  # the error after n steps is n |c| / spread
    expected = math.floor(0.4 / ratio) + 1
    assert abs(0.4 / ratio - round(0.4 / ratio)) > 1e-6  # no tie at the threshold
    starts = torch.tensor([0, 5, 9])
    valid = valid_time(Translation(c), truth, starts, horizon=30, threshold=0.4)
    assert expected < 30 and bool((valid == expected).all()), (expected, valid)
    # a shorter horizon caps it; a larger threshold lengthens it in proportion
    assert bool((valid_time(Translation(c), truth, starts, horizon=expected - 1) == expected - 1).all())
    assert bool((valid_time(Translation(c), truth, starts, 30, threshold=0.8) == math.floor(0.8 / ratio) + 1).all())


def test_valid_time_refuses_bad_arguments():
    truth = truth_orbit(samples=20)
    model = Translation()
    assert bool((valid_time(model, truth, [10], horizon=10) == 10).all())  # start + horizon = samples: allowed
    for starts in ([11], [-1], [0, 12], []):
        with pytest.raises(ValueError, match=r"starts must lie in \[0, 10\] so that every forecast of 10 steps"):
            valid_time(model, truth, starts, horizon=10)
    with pytest.raises(ValueError, match="horizon must be a whole number >= 1; got horizon = 0"):
        valid_time(model, truth, [0], horizon=0)
    with pytest.raises(ValueError, match="threshold must be a finite number > 0"):
        valid_time(model, truth, [0], horizon=5, threshold=0.0)


# -- assess ---------------------------------------------------------------------------------
def henon_data(samples: int) -> tuple[Observations, FourierStatistics]:
    """Three noisy Henon runs: the held-out third and a statistics loss fitted to the other two."""
    x0 = 0.1 + 0.01 * torch.randn(3, 2, generator=torch.Generator().manual_seed(12), dtype=F64)
    obs = observe(Henon(), x0, samples=samples, every=1, noise=0.05, warmup=100, seed=1)
    train, held = obs.split(2)
    return held, FourierStatistics(train, features=16, bandwidth=1.0)


def test_assess_scores_the_true_map_above_a_wrong_one():
    held, stats = henon_data(3000)
    kwargs = dict(steps=3000, burn=50, thin=1, starts=4, horizon=10)
    true = assess(Henon(), held, stats, **kwargs)
    wrong = assess(Henon(a=1.3), held, stats, **kwargs)  # a periodic orbit instead of the attractor
    for a in (true, wrong):
        assert isinstance(a, Assessment)
        assert all(math.isfinite(v) for v in (a.energy, a.mmd, a.valid))
        assert a.mean.shape == (2,) and a.cov.shape == (2, 2) and bool(torch.isfinite(a.cov).all())
    # the true map started from the held-out run's true state reproduces it: the valid time is the horizon,
    # and its energy distance to the data compares two noisy copies of one orbit (-0.0009; it varies by ~1e-4
    # over noise seeds, so 0.004 is far outside). The periodic Henon(a=1.3) scores 0.013, with a similar spread
    # over seeds: 0.008 is ~25 of them below.
    assert true.valid == 10.0
    orbit = Henon().trajectory(held.clean[0], 3000)[51:]
    assert true.mmd == pytest.approx(math.sqrt(stats.loss(stats.means(orbit))), rel=EXACT)
    torch.testing.assert_close(true.mean, orbit.reshape(-1, 2).mean(0), rtol=0, atol=EXACT)
    assert abs(true.energy) < 0.004 and wrong.energy > 0.008 and wrong.mmd > 3 * true.mmd and wrong.valid < 10
    with pytest.raises(ValueError, match="burn = 600 must be less than steps = 600"):
        assess(Henon(), held, stats, steps=600, burn=600)


# -- summarise ----------------------------------------------------------------------------------
def test_summarise_is_the_mean_and_standard_error_of_assess_over_the_models():
    held, stats = henon_data(800)
    kwargs = dict(steps=600, burn=50, thin=2, starts=3, horizon=10)
    models = [Henon(), Henon(a=1.38), Henon(b=0.28)]
    summary, rows = summarise(models, held, stats, time_unit=0.5, **kwargs)
    assert list(summary) == ["energy", "mmd", "valid", "mean z", "var z"] and len(rows) == 3
    for r, (model, row) in enumerate(zip(models, rows)):  # model r is assessed with seed r
        again = assess(model, held, stats, seed=r, **kwargs)
        assert row.energy == again.energy and row.valid == again.valid
    energies = torch.tensor([a.energy for a in rows], dtype=F64)
    assert summary["energy"].value == pytest.approx(float(energies.mean()), rel=EXACT)
    assert summary["energy"].stderr == pytest.approx(float(energies.std() / math.sqrt(3)), rel=1e-10)
    assert summary["valid"].value == pytest.approx(0.5 * sum(a.valid for a in rows) / 3, rel=EXACT)
    assert summary["mean z"].value == pytest.approx(sum(float(a.mean[-1]) for a in rows) / 3, rel=EXACT)
    assert summary["var z"].value == pytest.approx(sum(float(a.cov[-1, -1]) for a in rows) / 3, rel=EXACT)
    with pytest.raises(ValueError, match="a summary over independent models needs at least two; got 1"):
        summarise(models[:1], held, stats, **kwargs)
