"""The README's "writing your own map" example runs, and its numbers are right.

The code block under "### Writing your own map: a flow" is extracted from README.md and
executed as written (so the README cannot rot), then checked against what does not depend on
the library's tangent or adjoint machinery:

* the sum of all Lyapunov exponents of Lorenz-96 is its phase-space contraction rate, the
  divergence :math:`\\sum_i \\partial \\dot x_i / \\partial x_i = -N`, exactly for the flow
  and up to the RK4 error for the time-``dt`` map (measured 5e-6 of 8 at dt = 0.01);
* :math:`d\\langle \\bar x\\rangle/dF` by NILSAS and by kernel differentiation against central
  finite differences of long averages over many plain orbits of the same map.

Also :meth:`LyapunovResult.unstable_dimension` and the warning of :meth:`LyapunovResult.derived`
on a count. The whole file takes about 25 s on one core.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

import chaosgrad
from chaosgrad.systems import Henon

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### Writing your own map: a flow"


def readme_example() -> str:
    """The first ```python block after :data:`HEADING` in README.md."""
    text = README.read_text(encoding="utf-8")
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    match = re.search(r"```python\n(.*?)```", text[text.index(HEADING):], re.S)
    assert match, f"no python block under {HEADING!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def example() -> dict:
    namespace: dict = {"__name__": "readme_own_map"}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    return namespace


def plain_average(map: chaosgrad.Map, F: float, orbits: int, steps: int, warmup: int) -> torch.Tensor:
    """The time average of the mean of x over ``steps`` steps of each of ``orbits`` orbits."""
    generator = torch.Generator().manual_seed(1)
    x = 8 + torch.randn(orbits, map.dim, dtype=torch.float64, generator=generator)
    total = torch.zeros(orbits, dtype=torch.float64)
    with torch.no_grad():
        map.F.fill_(F)
        for n in range(warmup + steps):
            x = map.step(x)
            if n >= warmup:
                total += x.mean(-1)
    return total / steps


def test_exponents_sum_to_the_divergence(example):
    l96, res = example["l96"], example["res"]
    assert res.exponents.shape == (l96.dim,)
    # The divergence of Lorenz-96 is -N; RK4's local error O(dt^5) moves the per-step log
    # determinant by 5e-8 (measured), so the sum per unit time is -N within 1e-4 (20 times
    # the measured 5e-6). Missing an exponent or a wrong Jacobian would be off by >= 1e-2.
    assert abs(float(example["total"]) + l96.dim) < 1e-4
    assert torch.all(res.exponents[:-1] >= res.exponents[1:])
    # lambda_1 per unit time: 1.69 +- 0.12 here; a loose range that a wrong tangent map would miss
    assert 1.2 < example["lam1"].value / l96.dt < 2.2


def test_unstable_dimension_brackets_the_neutral_exponent(example):
    # two clearly positive exponents and the flow's neutral one (within its error bar of zero)
    u = example["u"]
    assert (u.lower, u.upper) == (2, 3) and str(u) == "2-3"
    assert abs(u.estimates[2].value) < 3 * u.estimates[2].stderr


def test_derivatives_agree_with_finite_differences(example):
    l96 = example["l96"]
    reference = type(l96)(N=l96.dim)  # a fresh copy of the README's class
    step = 0.5
    # 512 orbits of 10,000 steps: central difference 0.172 +- 0.003 (its O(step^2) bias is
    # below that error: 0.25 gives the same within it), far below the estimators' error bars
    fd = (plain_average(reference, 8 + step, 512, 10000, 1000)
          - plain_average(reference, 8 - step, 512, 10000, 1000)) / (2 * step)
    fd_value, fd_error = float(fd.mean()), float(fd.std() / len(fd) ** 0.5)
    for name, estimate in (("nilsas", example["dF"]), ("kernel", example["kd"])):
        sigma = (estimate.stderr**2 + fd_error**2) ** 0.5
        assert abs(estimate.value - fd_value) < 3 * sigma, (name, estimate, fd_value, fd_error)
    grad = example["grad"]
    assert torch.allclose(grad["F"], torch.tensor(example["dF"].value, dtype=torch.float64), rtol=1e-12)


def test_derived_warns_on_a_count():
    henon = Henon(a=1.4, b=0.3)
    x0 = torch.tensor([0.1, 0.1], dtype=torch.float64) + 0.01 * torch.randn(
        8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = chaosgrad.lyapunov_spectrum(henon, x0, 2000, warmup=100)
    with pytest.warns(UserWarning, match="unstable_dimension"):
        count = res.derived(lambda l: (l > 0).sum())
    assert (count.value, count.stderr) == (1.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a smooth statistic is not warned about
        assert res.derived(chaosgrad.kaplan_yorke_dimension).stderr > 0
    u = res.unstable_dimension()
    assert (u.lower, u.upper, str(u)) == (1, 1, "1")
    assert u.first_stable.value == pytest.approx(float(res.exponents[1]))
    with pytest.raises(ValueError, match="errors must be"):
        res.unstable_dimension(errors="orbits")
