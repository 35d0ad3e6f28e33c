r"""Long-time statistics ("climate") of a learned model against noisy data.

A model :math:`x_{n+1} = f_\theta(x_n)` learned from observations of a chaotic system is judged
twice: by its short forecasts (the *valid prediction time*) and by the statistics of its free
run, which, for an ergodic model, are averages over its invariant measure :math:`\mu_\theta`.
The data are observations :math:`y_n = x_n + \sigma\varepsilon_n`, :math:`\varepsilon_n \sim
N(0, I)`, of the system's orbit, so their empirical measure is the system's invariant measure
:math:`\mu` convolved with :math:`N(0, \sigma^2 I)`. This module holds

- :func:`observe` / :class:`Observations`: sampled orbits of a system with Gaussian observation
  noise, clean and noisy, split into training and held-out runs;
- :func:`corrected_moments`: means and covariance of :math:`\mu` from noisy data (the
  covariance of :math:`y` is that of :math:`x` plus :math:`\sigma^2 I`);
- :class:`FourierStatistics`: a statistics loss, the squared maximum mean discrepancy (MMD)
  between :math:`\mu_\theta` and :math:`\mu` for a Gaussian kernel, by random Fourier features
  :cite:`rahimi2007random` :cite:`gretton2012kernel`, with the observation noise divided out
  exactly: for :math:`\phi_j(u) = \sqrt2\cos(\omega_j\cdot u + b_j)`,

  .. math:: \mathbb E\,\phi_j(u + \eta) = e^{-\frac12 \sum_i \omega_{ji}^2 s_i^2}\;
            \mathbb E\,\phi_j(u), \qquad \eta \sim N(0, \operatorname{diag}(s^2)),

  so the features' means under :math:`\mu` are those of the data times
  :math:`e^{+\frac12\sum_i\omega_{ji}^2 s_i^2}`. The loss :math:`L(\theta) = \sum_j
  (\langle\phi_j\rangle_{\mu_\theta} - \bar\phi_j)^2` is a function of long-time averages,
  and its gradient is the derivative of the one long-time average
  :math:`\langle\sum_j c_j\phi_j\rangle` with :math:`c = 2(\langle\phi\rangle - \bar\phi)` held
  fixed (:meth:`FourierStatistics.observable`): exactly the objective of chapters 3–5;
- :func:`energy_distance`: the distance between two samples by which models are judged,
  independent of the loss's features :cite:`szekely2013energy`;
- :func:`valid_time`: how long a forecast from a true state stays within a fraction of the
  climate's spread of the truth :cite:`pathak2018model`.

References
----------
:cite:`rahimi2007random` A. Rahimi, B. Recht, Random features for large-scale kernel machines,
NeurIPS (2007). :cite:`gretton2012kernel` A. Gretton et al., A kernel two-sample test, JMLR 13
(2012). :cite:`szekely2013energy` G. J. Székely, M. L. Rizzo, Energy statistics, J. Stat. Plan.
Inference 143 (2013). :cite:`pathak2018model` J. Pathak et al., Model-free prediction of large
spatiotemporally chaotic systems from data, Phys. Rev. Lett. 120 (2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .estimates import Estimate
from .maps import Map
from .validation import check_finite, check_positive, check_whole

__all__ = ["Assessment", "FourierStatistics", "Observations", "assess", "corrected_moments", "energy_distance", "observe",
           "summarise", "valid_time"]


@dataclass(frozen=True)
class Observations:
    r"""Sampled orbits of a system, clean and with Gaussian observation noise.

    Attributes
    ----------
    clean : Tensor, shape ``(samples + 1, runs, dim)``
        The true states :math:`x(t_0 + k\Delta)`, consecutive along axis 0.
    noisy : Tensor, same shape
        The observations :math:`y_k = x_k + \sigma\varepsilon_k`.
    interval : float
        :math:`\Delta`, the time between samples.
    noise : float
        :math:`\sigma`, the standard deviation of the noise in every coordinate.
    """

    clean: Tensor
    noisy: Tensor
    interval: float
    noise: float

    @property
    def runs(self) -> int:
        """The number of independent runs (axis 1)."""
        return self.clean.shape[1]

    def split(self, train: int) -> tuple[Observations, Observations]:
        """The first ``train`` runs and the others: a training set and a held-out set."""
        train = check_whole(train, "train", 1)
        if train >= self.runs:
            raise ValueError(f"train must leave at least one held-out run: 1 <= train < {self.runs}; got {train}")
        part = lambda s: Observations(self.clean[:, s], self.noisy[:, s], self.interval, self.noise)  # noqa: E731
        return part(slice(None, train)), part(slice(train, None))

    def pairs(self) -> tuple[Tensor, Tensor]:
        """The noisy one-step pairs :math:`(y_k, y_{k+1})`, each ``(samples * runs, dim)``."""
        d = self.noisy.shape[-1]
        return self.noisy[:-1].reshape(-1, d), self.noisy[1:].reshape(-1, d)


def observe(system: Map, x0: Tensor, samples: int, every: int, noise: float, warmup: int = 0,
            seed: int = 0) -> Observations:
    r"""Observe orbits of ``system`` every ``every`` steps with Gaussian noise of standard deviation ``noise``.

    Parameters
    ----------
    system
        The true map (e.g. :class:`~chaosgrad.systems.Lorenz63` with a small ``dt``).
    x0
        Initial states ``(runs, dim)``, one run each.
    samples
        Number of intervals observed: ``samples + 1`` states per run.
    every
        Steps of ``system`` between samples: the interval is ``every * system.dt`` (or
        ``every`` steps for a map without ``dt``).
    noise
        :math:`\sigma > 0`.
    warmup
        Steps run first and discarded (to reach the attractor).
    seed
        Seed of the noise.

    Returns
    -------
    Observations
    """
    x = system.check_state(x0, "x0")
    if x.ndim != 2:
        raise ValueError(f"x0 must have shape (runs, dim); got shape {tuple(x.shape)}")
    samples, every = check_whole(samples, "samples", 1), check_whole(every, "every", 1)
    noise = check_positive(noise, "noise")
    with torch.no_grad():
        for n in range(check_whole(warmup, "warmup")):
            x = system.step(x, n)
        n = warmup
        states = [x]
        for k in range(samples):
            for _ in range(every):
                x = system.step(x, n)
                n += 1
            states.append(check_finite(x, "observed state", step=k + 1))
    clean = torch.stack(states)
    generator = torch.Generator().manual_seed(int(seed))
    noisy = clean + noise * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
    return Observations(clean, noisy, every * float(getattr(system, "dt", 1.0)), noise)


def corrected_moments(points: Tensor, noise: float = 0.0) -> tuple[Tensor, Tensor]:
    r"""Mean and covariance of points ``(..., dim)``, the covariance less :math:`\sigma^2 I`.

    For observations :math:`y = x + \sigma\varepsilon` with independent noise the mean is
    unbiased and :math:`\operatorname{Cov} y = \operatorname{Cov} x + \sigma^2 I`, so the
    correction returns an unbiased estimate of the clean covariance (population normalisation:
    the bias of order 1/count is negligible for long records). ``noise = 0`` gives the plain
    moments.
    """
    flat = torch.as_tensor(points, dtype=torch.float64).reshape(-1, points.shape[-1])
    if not float(noise) >= 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / flat.shape[0] - float(noise) ** 2 * torch.eye(flat.shape[1], dtype=flat.dtype)
    return mean, cov


class FourierStatistics:
    r"""The squared MMD between a model's invariant measure and the data's, by random Fourier features.

    States are standardised, :math:`u = (x - m) \oslash s`, with the data's mean :math:`m` and
    noise-corrected standard deviation :math:`s` (:func:`corrected_moments`). The features
    are :math:`\phi_j(u) = \sqrt2 \cos(\omega_j \cdot u + b_j)`, :math:`j = 1..J`, with
    :math:`\omega_j \sim N(0, I/\ell^2)` and :math:`b_j \sim U[0, 2\pi)` drawn once from
    ``seed``; then :math:`\frac1J\sum_j \phi_j(u)\phi_j(v) \approx e^{-|u - v|^2/2\ell^2}`, and
    :math:`\frac1J\sum_j(\langle\phi_j\rangle_\mu - \langle\phi_j\rangle_\nu)^2` approximates
    the squared MMD of that Gaussian kernel :cite:`rahimi2007random` :cite:`gretton2012kernel`.
    The target :math:`\bar\phi` is the data's feature means with the observation noise divided
    out exactly (module docstring). The loss is :math:`L = \frac1J\sum_j (\langle\phi_j\rangle -
    \bar\phi_j)^2`.

    Parameters
    ----------
    observations
        The training data (:class:`Observations`; its noisy states and ``noise`` are used).
    features
        :math:`J`, the number of random features (>= 1).
    bandwidth
        :math:`\ell > 0`, in standardised units: the scale of the differences in density that
        the loss sees.
    seed
        Seed of :math:`\omega, b`.

    Attributes
    ----------
    shift, scale : Tensor, shape ``(dim,)``
        :math:`m` and :math:`s`.
    omega : Tensor, shape ``(dim, J)``; phase : Tensor, shape ``(J,)``
    target : Tensor, shape ``(J,)``
        :math:`\bar\phi`.
    """

    def __init__(self, observations: Observations, features: int = 32, bandwidth: float = 1.0, seed: int = 0) -> None:
        J = check_whole(features, "features", 1)
        ell = check_positive(bandwidth, "bandwidth")
        noisy, sigma = observations.noisy, float(observations.noise)
        mean, cov = corrected_moments(noisy, sigma)
        var = torch.diagonal(cov)
        if not bool((var > 0).all()):
            raise ValueError(f"the noise {sigma} exceeds the spread of the data in coordinate(s) "
                             f"{(var <= 0).nonzero().flatten().tolist()}: the corrected variance is {var.tolist()}")
        self.shift, self.scale = mean, var.sqrt()
        generator = torch.Generator().manual_seed(int(seed))
        self.omega = torch.randn(noisy.shape[-1], J, generator=generator, dtype=torch.float64) / ell
        self.phase = 2 * math.pi * torch.rand(J, generator=generator, dtype=torch.float64)
        damping = torch.exp(-0.5 * ((self.omega * (sigma / self.scale)[:, None]) ** 2).sum(0))
        self.target = self.features(noisy).reshape(-1, J).mean(0) / damping
        self.bandwidth = ell

    @property
    def count(self) -> int:
        """:math:`J`."""
        return self.phase.shape[0]

    def features(self, x: Tensor) -> Tensor:
        r""":math:`\phi(u(x))` for states ``(..., dim)``: shape ``(..., J)``."""
        u = (x - self.shift) / self.scale
        return math.sqrt(2.0) * torch.cos(u @ self.omega + self.phase)

    def means(self, orbit: Tensor) -> Tensor:
        """The feature means over every state of ``orbit`` (any leading axes): shape ``(J,)``."""
        return self.features(orbit).reshape(-1, self.count).mean(0)

    def loss(self, means: Tensor) -> float:
        r""":math:`L = \frac1J\|\langle\phi\rangle - \bar\phi\|^2` for feature means ``(J,)``."""
        return float(((means - self.target) ** 2).mean())

    def observable(self, means: Tensor) -> Any:
        r"""The scalar observable :math:`\psi(x) = \sum_j c_j \phi_j(x)`, :math:`c = \frac2J(\langle\phi\rangle - \bar\phi)`,
        whose long-time average has the gradient of :math:`L` at ``means``: since :math:`L`
        depends on :math:`\theta` only through the averages,
        :math:`\nabla_\theta L = \sum_j c_j\, \nabla_\theta\langle\phi_j\rangle = \nabla_\theta\langle\psi\rangle`
        with :math:`c` held fixed."""
        c = 2.0 * (means - self.target) / self.count
        return lambda x: self.features(x) @ c

    def error(self, orbit: Tensor, blocks: int = 20) -> Estimate:
        r""":math:`\sqrt{L}` of the states of ``orbit`` ``(steps, runs, dim)``, with a jackknife error bar over
        ``blocks`` blocks of steps (consecutive states are correlated; blocks of many steps are not)."""
        from .estimates import batch_means, jackknife

        phi = self.features(orbit).reshape(orbit.shape[0], -1, self.count).mean(1)
        _, _, block, weights = batch_means(phi, blocks)  # blocks of unequal sizes: weighted as in the mean
        return jackknife(lambda m: math.sqrt(self.loss(m)), block, weights)


def energy_distance(a: Tensor, b: Tensor) -> float:
    r"""The energy distance :math:`\mathcal E(a, b) = 2\,\mathbb E|A - B| - \mathbb E|A - A'| - \mathbb E|B - B'|` of two samples.

    U-statistics (the diagonal :math:`|A_i - A_i| = 0` excluded), so the estimate is unbiased
    and can be slightly negative when the two distributions are equal. :math:`\mathcal E \ge 0`
    with equality only for equal distributions :cite:`szekely2013energy`; it needs no bandwidth
    and no binning, and it is not the MMD the training loss uses, so it judges the models
    independently of the loss. Convolving both distributions with the same Gaussian (as
    observation noise does) keeps them distinct, since the Gaussian's characteristic function
    never vanishes.

    Parameters
    ----------
    a, b
        Samples ``(n, dim)`` and ``(m, dim)``, n, m >= 2, in the same (standardised) units.
    """
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"energy_distance needs samples (n, dim) and (m, dim) with n, m >= 2; "
                         f"got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    within = lambda s: torch.cdist(s, s).sum() / (s.shape[0] * (s.shape[0] - 1))  # noqa: E731
    return float(2 * torch.cdist(a, b).mean() - within(a) - within(b))


def valid_time(model: Map, truth: Tensor, starts: Tensor, horizon: int, threshold: float = 0.4) -> Tensor:
    r"""Steps until a forecast from a true state leaves the truth: the valid prediction time.

    From each start :math:`k` (an index along axis 0 of ``truth``), the model runs from the true
    state :math:`x_k` and the normalised error
    :math:`e_n = |\hat x_{k+n} - x_{k+n}| \,/\, \sqrt{\langle |x - \langle x\rangle|^2\rangle}`
    is followed; the valid time is the first :math:`n` with :math:`e_n > \text{threshold}`
    (``horizon`` if none) :cite:`pathak2018model`. Starting from the true state measures the
    model's error alone; multiply by the sampling interval and :math:`\lambda_1` for Lyapunov
    times.

    Parameters
    ----------
    model
        The learned map (one step = one sampling interval).
    truth
        True states ``(samples + 1, runs, dim)`` (e.g. :attr:`Observations.clean` of held-out runs).
    starts
        Start indices ``(s,)`` with ``start + horizon <= samples``.
    horizon
        Longest forecast in steps (>= 1).
    threshold
        Error at which the forecast stops being valid (> 0; 0.4 as in Pathak et al.).

    Returns
    -------
    Tensor, shape ``(s, runs)``: valid times in steps.
    """
    horizon = check_whole(horizon, "horizon", 1)
    threshold = check_positive(threshold, "threshold")
    starts = torch.as_tensor(starts, dtype=torch.long).reshape(-1)
    if starts.numel() == 0 or int(starts.min()) < 0 or int(starts.max()) + horizon >= truth.shape[0]:
        raise ValueError(f"starts must lie in [0, {truth.shape[0] - 1 - horizon}] so that every forecast of "
                         f"{horizon} steps has a truth to compare with; got {starts.tolist()}")
    spread = math.sqrt(float(((truth - truth.reshape(-1, truth.shape[-1]).mean(0)) ** 2).sum(-1).mean()))
    x = truth[starts]
    valid = torch.full(x.shape[:-1], horizon, dtype=torch.long)
    alive = torch.ones(x.shape[:-1], dtype=torch.bool)
    with torch.no_grad():
        for n in range(1, horizon + 1):
            x = model.step(x)
            left = alive & ((x - truth[starts + n]).norm(dim=-1) / spread > threshold)
            valid[left] = n
            alive &= ~left
            if not bool(alive.any()):
                break
    return valid


@dataclass(frozen=True)
class Assessment:
    r"""How a model's free run compares with held-out data (:func:`assess`).

    Attributes
    ----------
    energy : float
        :func:`energy_distance` between the model's states with observation noise added and
        the held-out observations, both standardised by the statistics' shift and scale.
    mmd : float
        :math:`\sqrt{L}` of :class:`FourierStatistics` over the free run.
    valid : float
        Mean valid prediction time in steps (:func:`valid_time`).
    mean : Tensor, shape ``(dim,)``; cov : Tensor, shape ``(dim, dim)``
        Moments of the free run.
    """

    energy: float
    mmd: float
    valid: float
    mean: Tensor
    cov: Tensor


def assess(model: Map, held: Observations, statistics: FourierStatistics, steps: int = 3000, burn: int = 300,
           thin: int = 10, starts: int = 8, horizon: int = 60, threshold: float = 0.4, seed: int = 0) -> Assessment:
    r"""Run ``model`` free from the held-out runs' first true states and compare (:class:`Assessment`).

    The free run has ``steps`` steps per held-out run, of which the first ``burn`` are
    discarded; every ``thin``-th state enters the energy distance (with Gaussian noise of the
    data's level, seeded by ``seed``), against every ``thin``-th held-out observation after
    ``burn``. ``starts`` forecasts per run, evenly spaced, give the valid time.
    """
    steps, burn, thin = check_whole(steps, "steps", 2), check_whole(burn, "burn"), check_whole(thin, "thin", 1)
    if horizon >= held.clean.shape[0] - 1:
        raise ValueError(f"horizon = {horizon} must be shorter than the held-out runs ({held.clean.shape[0] - 1} samples)")
    if burn >= steps:
        raise ValueError(f"burn = {burn} must be less than steps = {steps}")
    with torch.no_grad():
        orbit = model.trajectory(held.clean[0], steps)[burn + 1:]
    check_finite(orbit[-1], "state of the model's free run")
    generator = torch.Generator().manual_seed(int(seed))
    sample = orbit[::thin].reshape(-1, orbit.shape[-1])
    sample = sample + held.noise * torch.randn(sample.shape, generator=generator, dtype=sample.dtype)
    data = held.noisy[burn + 1::thin].reshape(-1, orbit.shape[-1])
    standard = lambda x: (x - statistics.shift) / statistics.scale  # noqa: E731
    energy = energy_distance(standard(sample), standard(data))
    mmd = statistics.loss(statistics.means(orbit)) ** 0.5
    last = held.clean.shape[0] - 1 - check_whole(horizon, "horizon", 1)
    index = torch.linspace(0, last, check_whole(starts, "starts", 1)).round().long()
    valid = float(valid_time(model, held.clean, index, horizon, threshold).double().mean())
    mean, cov = corrected_moments(orbit)
    return Assessment(energy, mmd, valid, mean, cov)


def summarise(models: Sequence[Map], held: Observations, statistics: FourierStatistics, time_unit: float = 1.0,
              **options: Any) -> tuple[dict[str, Estimate], list[Assessment]]:
    r"""Assess each model (:func:`assess`, with ``options``) and summarise over the models.

    The models are independent runs of one procedure, so each summary is the mean over them
    with the standard error of that mean (:meth:`Estimate.of`): ``"energy"``, ``"mmd"``,
    ``"valid"`` (valid time in steps times ``time_unit``, e.g. ``interval * lambda_1`` for
    Lyapunov times), ``"mean z"`` and ``"var z"`` (the last coordinate's mean and variance).

    Returns
    -------
    (summary, assessments): the dict of estimates and the per-model :class:`Assessment`.
    """
    if len(models) < 2:
        raise ValueError(f"a summary over independent models needs at least two; got {len(models)}")
    rows = [assess(m, held, statistics, seed=r, **options) for r, m in enumerate(models)]
    column = lambda f: Estimate.of(torch.tensor([f(a) for a in rows], dtype=torch.float64))  # noqa: E731
    summary = {"energy": column(lambda a: a.energy), "mmd": column(lambda a: a.mmd),
               "valid": column(lambda a: a.valid * float(time_unit)), "mean z": column(lambda a: float(a.mean[-1])),
               "var z": column(lambda a: float(a.cov[-1, -1]))}
    return summary, rows
