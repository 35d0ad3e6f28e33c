r"""Estimates with error bars: one type, one printed form, and the parser that reads it back.

Every statistical number in the book is an :class:`Estimate` and is printed as
``value ± error`` by :func:`pm`: the error rounded to one or two significant digits by the
Particle Data Group rule, the value to the same decimal place. The same text is what the
notebook tests read back (:func:`find_printed`): a re-executed notebook passes when every
printed estimate agrees with the stored one within its error bars (:func:`disagreement`),
and every other character agrees exactly. Chaotic computations make the last digits of an
estimate depend on the CPU's floating-point kernels; the error bar says how far they may move.

Error bars come from independent samples (:meth:`Estimate.of`), from batch means over
blocks of one long correlated run (:func:`batch_means`), from the jackknife over those
blocks for a function of block means (:func:`jackknife`), or from the bootstrap for
statistics such as medians (:func:`bootstrap`); :func:`fit_line` propagates error bars into a
weighted least-squares line.

References
----------
Particle Data Group, R. L. Workman et al., Prog. Theor. Exp. Phys. (2022) 083C01, introduction,
"Rounding" (`pdg2022review`).
B. Efron, R. J. Tibshirani, An Introduction to the Bootstrap, Chapman & Hall (1993)
(`efron1993bootstrap`).
H. Flyvbjerg, H. G. Petersen, J. Chem. Phys. 91 (1989) 461-466 (batch means, `flyvbjerg1989error`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Estimate",
    "PrintedEstimate",
    "batch_means",
    "bootstrap",
    "disagreement",
    "find_printed",
    "fit_line",
    "jackknife",
    "pm",
    "weighted_mean",
    "SIGMAS",
    "MAX_ERROR_RATIO",
]

#: Two printed estimates of the same quantity agree when their values differ by at most
#: ``SIGMAS`` combined standard errors (plus half a unit of each last printed digit). For
#: two independent runs with error bars from 20 blocks, a 5-sigma difference happens by
#: chance about once in 10^5 comparisons.
SIGMAS = 5.0

#: ... and when neither error bar is more than ``MAX_ERROR_RATIO`` times the other. An error
#: bar from 20 batch means is itself uncertain by about 16%; a ratio of 4 between two of
#: them happens by chance less than once in 10^6 comparisons.
MAX_ERROR_RATIO = 4.0


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error; prints as ``value ± error`` (see :func:`pm`).

    Attributes
    ----------
    value
        The estimate.
    stderr
        Its standard error (one standard deviation of the estimate), >= 0.
    samples
        Shape ``(n,)``: the independent samples it was computed from, when there are such
        (``None`` for estimates from batch means, the jackknife or a fit).
    """

    value: float
    stderr: float
    samples: Tensor | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and math.isfinite(self.stderr)):
            raise ValueError(f"an estimate needs a finite value and error bar; got {self.value} +- {self.stderr}")
        if self.stderr < 0:
            raise ValueError(f"a standard error must be >= 0; got {self.stderr}")

    @classmethod
    def of(cls, samples: Tensor) -> Estimate:
        """Mean and standard error of independent samples (a tensor, at least two entries)."""
        samples = torch.as_tensor(samples, dtype=torch.float64).reshape(-1)
        if samples.numel() < 2:
            raise ValueError(f"an error bar needs at least two samples (ensemble members); got {samples.numel()}")
        return cls(float(samples.mean()), float(samples.std(correction=1)) / math.sqrt(samples.numel()), samples)

    @classmethod
    def of_series(cls, series: Tensor, blocks: int = 20) -> Estimate:
        """Mean of a correlated series along axis 0 (e.g. an observable along one orbit), with
        its batch-means standard error over ``blocks`` blocks (see :func:`batch_means`)."""
        series = torch.as_tensor(series, dtype=torch.float64).reshape(len(series), -1).mean(1)
        mean, stderr, _, _ = batch_means(series, blocks)
        if stderr is None:
            raise ValueError("an error bar needs at least two blocks: pass a series of two or more values")
        return cls(float(mean), float(stderr))

    def __str__(self) -> str:
        return pm(self.value, self.stderr)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __neg__(self) -> Estimate:
        return Estimate(-self.value, self.stderr)

    def __sub__(self, other: Estimate | float) -> Estimate:
        """The difference of two *independent* estimates (errors added in quadrature)."""
        if isinstance(other, Estimate):
            return Estimate(self.value - other.value, math.hypot(self.stderr, other.stderr))
        return Estimate(self.value - float(other), self.stderr)

    def __mul__(self, factor: float) -> Estimate:
        """Scale by an exact number."""
        return Estimate(self.value * float(factor), self.stderr * abs(float(factor)))

    __rmul__ = __mul__

    def __truediv__(self, divisor: Estimate | float) -> Estimate:
        """Divide by an exact number, or by an *independent* estimate (relative errors added
        in quadrature, the first-order delta method)."""
        if isinstance(divisor, Estimate):
            if self.value == 0 or divisor.value == 0:
                raise ValueError(f"the ratio of estimates needs nonzero values for its relative errors; "
                                 f"got {self} / {divisor}")
            r = self.value / divisor.value
            return Estimate(r, abs(r) * math.hypot(self.stderr / self.value, divisor.stderr / divisor.value))
        return self * (1.0 / float(divisor))


def _significant(stderr: float) -> tuple[float, int]:
    """The PDG rounding of an error: (rounded error, number of decimals to print)."""
    exponent = math.floor(math.log10(stderr))
    three = round(stderr / 10 ** (exponent - 2))  # the three leading digits, 100..1000
    if three >= 1000:
        three, exponent = 100, exponent + 1
    if three <= 354:
        digits = 2
    elif three <= 949:
        digits = 1
    else:  # 950..999 rounds up to 1000: two digits, "1.0"
        digits, exponent = 2, exponent + 1
    decimals = digits - 1 - exponent
    return round(stderr, decimals), decimals


def pm(value: float, stderr: float) -> str:
    """``value ± stderr`` rounded by the Particle Data Group rule.

    The error keeps two significant digits when its three leading digits are 100-354 and
    one when they are 355-949 (950-999 round up to two digits, 1.0); the value is rounded
    to the same decimal place. Numbers of magnitude 1e6 and more, or with errors below
    1e-5, are written in scientific notation, each with its own exponent.

    Examples
    --------
    >>> pm(0.41992, 0.00078)
    '0.4199 ± 0.0008'
    >>> pm(-1.32487, 0.0076)
    '-1.325 ± 0.008'
    >>> pm(1.0188, 0.0120)
    '1.019 ± 0.012'
    >>> pm(12.3456, 0.96)
    '12.3 ± 1.0'
    >>> pm(-3.0174e13, 2.14e13)
    '-3.0e+13 ± 2.1e+13'
    >>> pm(0.5, 0.0)
    '0.5 ± 0'
    >>> pm(-0.00001, 0.0022)
    '0.0000 ± 0.0022'
    """
    value, stderr = float(value), float(stderr)
    if not (math.isfinite(value) and math.isfinite(stderr)) or stderr < 0:
        raise ValueError(f"pm needs a finite value and a finite error >= 0; got {value} +- {stderr}")
    if stderr == 0:
        return f"{value!r} ± 0"
    rounded, decimals = _significant(stderr)
    if max(abs(value), rounded) >= 1e6 or rounded < 1e-5:
        exponent = math.floor(math.log10(max(abs(value), rounded)))
        error_digits = decimals + 1 + math.floor(math.log10(rounded))
        return f"{value:.{max(0, exponent + decimals)}e} ± {rounded:.{error_digits - 1}e}"
    places = max(decimals, 0)
    text, error = f"{round(value, decimals):.{places}f}", f"{rounded:.{places}f}"
    if float(text) == 0:
        text = text.lstrip("-")  # -0.0000 prints as 0.0000
    return f"{text} ± {error}"


# -- reading printed estimates back -------------------------------------------------------
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_PRINTED = re.compile(rf"(?<![\w.])(?P<value>{_NUMBER})\s*(?:±|\+-|\+/-|&plusmn;)\s*(?P<error>{_NUMBER})(?![\w.])")


@dataclass(frozen=True)
class PrintedEstimate:
    """An estimate as printed: its text, position and the unit of each last digit."""

    text: str
    start: int
    end: int
    value: float
    error: float
    value_unit: float
    error_unit: float


def _unit(number: str) -> float:
    """The place value of the last printed digit: '0.0420' -> 1e-4, '3.1e+13' -> 1e12, '12' -> 1."""
    mantissa, _, exponent = number.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def find_printed(text: str) -> list[PrintedEstimate]:
    """Every ``value ± error`` (also ``+-``) in ``text``, in order.

    >>> [(p.value, p.error, p.value_unit) for p in find_printed("lambda = 0.4199 ± 0.0008 per step")]
    [(0.4199, 0.0008, 0.0001)]
    """
    found = []
    for m in _PRINTED.finditer(text):
        value, error = m.group("value"), m.group("error")
        found.append(
            PrintedEstimate(m.group(0), m.start(), m.end(), float(value), float(error), _unit(value), _unit(error))
        )
    return found


def disagreement(stored: PrintedEstimate, new: PrintedEstimate, sigmas: float = SIGMAS,
                 max_ratio: float = MAX_ERROR_RATIO) -> str | None:
    """Why two printed estimates of the same quantity disagree, or ``None`` if they agree.

    They agree when the values differ by at most ``sigmas`` combined error bars plus half a
    unit of each value's last digit, and neither error bar exceeds ``max_ratio`` times the
    other. An error bar printed as 0 counts as half a unit of its last digit.
    """
    e_stored = max(stored.error, stored.error_unit / 2)
    e_new = max(new.error, new.error_unit / 2)
    allowed = sigmas * math.hypot(e_stored, e_new) + (stored.value_unit + new.value_unit) / 2
    difference = abs(new.value - stored.value)
    if difference > allowed:
        return (f"{new.text!r} differs from the stored {stored.text!r} by {difference:.3g}, "
                f"more than {sigmas:g} combined error bars ({allowed:.3g})")
    ratio = max(e_stored, e_new) / min(e_stored, e_new)
    if ratio > max_ratio:
        return (f"the error bar of {new.text!r} is {ratio:.1f} times that of the stored "
                f"{stored.text!r} (at most {max_ratio:g} allowed)")
    return None


# -- error bars ---------------------------------------------------------------------------
def batch_means(values: Tensor, blocks: int = 20, weights: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    r"""Mean of a correlated series and its standard error by batch means.

    The series (axis 0 of ``values``, shape ``(m, ...)``) is cut into ``blocks``
    consecutive blocks of (nearly) equal numbers of entries; the block means are treated as
    independent samples, which holds when a block is much longer than the correlation time.

    Parameters
    ----------
    values
        Shape ``(m, ...)``: the series; trailing axes are separate quantities.
    blocks
        Number of blocks, >= 1 (at most ``m`` are used).
    weights
        Shape ``(m,)``: the weight of each entry (e.g. the steps it covers); default 1.

    Returns
    -------
    (mean, stderr, block_means, block_weights)
        ``mean`` and ``stderr`` have shape ``values.shape[1:]``; ``stderr`` is ``None`` with
        a single block. ``block_means`` has shape ``(b, ...)``, ``block_weights`` ``(b,)``.
    """
    if int(blocks) != blocks or blocks < 1:
        raise ValueError(f"blocks must be a whole number >= 1; got blocks = {blocks}")
    m = values.shape[0]
    if m < 1:
        raise ValueError("batch_means needs at least one value")
    w = torch.ones(m, dtype=values.dtype) if weights is None else torch.as_tensor(weights, dtype=values.dtype)
    nblocks = max(1, min(int(blocks), m))
    edges = torch.linspace(0, m, nblocks + 1).round().long().tolist()
    shape = (-1,) + (1,) * (values.dim() - 1)
    means, totals = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        total = w[lo:hi].sum()
        means.append((values[lo:hi] * w[lo:hi].reshape(shape)).sum(0) / total)
        totals.append(total)
    block_means, block_weights = torch.stack(means), torch.stack(totals)
    mean = (values * w.reshape(shape)).sum(0) / w.sum()
    stderr = block_means.std(0, correction=1) / math.sqrt(nblocks) if nblocks > 1 else None
    return mean, stderr, block_means, block_weights


def jackknife(statistic: Callable[[Tensor], float], block_means: Tensor, block_weights: Tensor | None = None) -> Estimate:
    r"""A function of a mean, with its error bar by the delete-one-block jackknife.

    ``statistic`` maps a mean of shape ``block_means.shape[1:]`` to a number (e.g. the
    Kaplan-Yorke dimension of a spectrum). With :math:`\theta_{(i)}` the statistic of the
    (weighted) mean of all blocks but :math:`i`, the error is
    :math:`\sqrt{\tfrac{b-1}{b}\sum_i (\theta_{(i)} - \bar\theta)^2}`; the value is the
    statistic of the mean of all blocks.
    """
    b = block_means.shape[0]
    if b < 2:
        raise ValueError(f"the jackknife needs at least two blocks; got {b}")
    w = torch.ones(b, dtype=block_means.dtype) if block_weights is None else block_weights.to(block_means.dtype)
    shape = (-1,) + (1,) * (block_means.dim() - 1)
    weighted = block_means * w.reshape(shape)
    total, wsum = weighted.sum(0), w.sum()
    value = _checked(statistic(total / wsum), "the statistic of the mean")
    loo = torch.tensor([_checked(statistic((total - weighted[i]) / (wsum - w[i])), f"the statistic without block {i}")
                        for i in range(b)], dtype=torch.float64)
    return Estimate(value, math.sqrt((b - 1) / b * float(((loo - loo.mean()) ** 2).sum())))


def _checked(x: object, what: str) -> float:
    if x is None or not math.isfinite(float(x)):
        raise ValueError(f"{what} is {x}: the statistic must return a finite number for every block")
    return float(x)


def bootstrap(statistic: Callable[[Tensor], Tensor | float], samples: Tensor, resamples: int = 400,
              seed: int = 0) -> Estimate | list[Estimate]:
    """A statistic of independent samples with its bootstrap standard error.

    ``samples`` has shape ``(n, ...)`` (axis 0 indexes the independent samples, e.g. orbits);
    ``statistic`` maps such a tensor to a number or a 1-D tensor of numbers. The samples are
    drawn with replacement ``resamples`` times (reproducibly, from ``seed``); the value is
    the statistic of the original samples and the error the standard deviation over the
    resamples. Returns an :class:`Estimate`, or a list of them for a vector statistic.
    """
    samples = torch.as_tensor(samples)
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"the bootstrap needs at least two samples; got {n}")
    g = torch.Generator().manual_seed(seed)
    full = torch.as_tensor(statistic(samples), dtype=torch.float64)
    draws = torch.stack([torch.as_tensor(statistic(samples[torch.randint(0, n, (n,), generator=g)]), dtype=torch.float64)
                         for _ in range(int(resamples))])
    errors = draws.std(0, correction=1)
    if full.dim() == 0:
        return Estimate(float(full), float(errors))
    return [Estimate(float(v), float(e)) for v, e in zip(full.reshape(-1), errors.reshape(-1))]


def fit_line(x: Sequence[float], y: Sequence[float], yerr: Sequence[float]) -> tuple[Estimate, Estimate, float]:
    r"""Weighted least-squares line :math:`y = a + b x` through points with independent errors.

    Returns ``(intercept, slope, covariance)``: the two estimates with standard errors
    from the weights :math:`1/\sigma_i^2`, and the covariance of intercept and slope
    (needed to propagate errors into, e.g., the zero crossing :math:`-a/b`).

    Raises
    ------
    ValueError
        With fewer than two points, mismatched lengths, or an error bar that is not > 0.
    """
    x_arr, y_arr, s = (np.asarray(v, dtype=float) for v in (x, y, yerr))
    if not (x_arr.shape == y_arr.shape == s.shape) or x_arr.ndim != 1 or len(x_arr) < 2:
        raise ValueError(f"fit_line needs x, y and yerr of one common length >= 2; got {x_arr.shape}, {y_arr.shape}, {s.shape}")
    if not np.all(s > 0):
        raise ValueError(f"every error bar must be > 0; got {s.tolist()}")
    w = 1 / s**2
    design = np.stack([np.ones_like(x_arr), x_arr], 1)
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    a, b = cov @ design.T @ (w * y_arr)
    return Estimate(float(a), math.sqrt(cov[0, 0])), Estimate(float(b), math.sqrt(cov[1, 1])), float(cov[0, 1])


def weighted_mean(estimates: Sequence[Estimate]) -> Estimate:
    r"""Inverse-variance weighted mean of independent estimates of one quantity.

    :math:`\bar x = \sum_i w_i x_i / \sum_i w_i` with :math:`w_i = 1/\sigma_i^2`, and standard
    error :math:`(\sum_i w_i)^{-1/2}`. It assumes the estimates measure the same value; check
    that their scatter agrees with their error bars (:math:`\chi^2` about the number of
    estimates minus one) before trusting it.

    Raises
    ------
    ValueError
        With no estimates, or an error bar that is not > 0.
    """
    if len(estimates) == 0:
        raise ValueError("weighted_mean needs at least one estimate")
    s = np.array([e.stderr for e in estimates], dtype=float)
    if not np.all(s > 0):
        raise ValueError(f"every error bar must be > 0; got {s.tolist()}")
    w = 1 / s**2
    value = float(np.sum(w * np.array([e.value for e in estimates])) / w.sum())
    return Estimate(value, float(1 / math.sqrt(w.sum())))
