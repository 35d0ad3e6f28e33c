"""No silent failures (issue 24 item 3): each mistake a new user makes on their own map raises
or warns with a message that names the fix.

- a segment too long for float64 in NILSAS (the homogeneous solutions overflow the least squares);
- a ``step`` that calls ``.item()`` on a parameter (a silent zero gradient);
- a parameter stored as a plain float (the same message from every estimator);
- an observable written in NumPy;
- an error bar from fewer than 8 members.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

import chaosgrad
from chaosgrad.derivatives import backprop_derivative
from chaosgrad.kernel import kernel_derivative, path_kernel_derivative
from chaosgrad.models import NeuralMap
from chaosgrad.networks import PreactivationNetwork, RandomNetwork
from chaosgrad.shadowing import MAX_SEGMENT_GROWTH, nilsas
from chaosgrad.systems import Affine, Henon, Logistic, Lorenz63, Noisy, PerturbedCat, Tent
from chaosgrad.validation import ConstantParameterWarning, FewSamplesWarning, warn_constant_parameters

F64 = torch.float64
first = lambda x: x[..., 0]  # noqa: E731


def henon_states(members: int, seed: int = 0) -> torch.Tensor:
    """States near the Henon attractor (200 steps from small random starts)."""
    g = torch.Generator().manual_seed(seed)
    x0 = 0.1 * torch.randn(members, 2, generator=g, dtype=F64)
    return Henon().trajectory(x0, 200)[-1]


# -- 1. NILSAS with a segment too long for float64 ---------------------------------------------
def test_nilsas_names_segment_steps_when_a_segment_grows_beyond_float64():
    """Henon's adjoint exponent is 0.42 per step: a segment of 100 steps grows by e^42 = 1.7e18 or
    more (the largest over members and segments, e^49 here, is what counts) > 1e12, so the least
    squares would work on rounding noise (the issue's 6.3e31 +- 6.3e31); the suggested length,
    8 ln(10) / rate = 43 steps at 0.42 per step, fewer at the largest rate, must be named. 20 steps (e^8.4)
    pass and agree with a run of 10-step segments within their joint error bars."""
    x = henon_states(8)
    with pytest.raises(ValueError, match=r"segment_steps = 100 is too long for float64: a homogeneous adjoint "
                                         r"solution grew by about 1e(1[89]|2[0-9]) \(e\^[4-6][0-9]\) within one segment, "
                                         r"above 1e12.*Use segment_steps <= (3[0-9]|4[0-4]) \(growth about 1e8"):
        nilsas(Henon(), x, first, 2, 100, n_unstable=1)
    ok = nilsas(Henon(), x, first, 20, 20, n_unstable=1).gradient["a"]
    short = nilsas(Henon(), x, first, 40, 10, n_unstable=1).gradient["a"]
    assert math.isfinite(ok.value) and ok.stderr < 1.0
    assert abs(ok.value - short.value) < 4 * math.hypot(ok.stderr, short.stderr)


def test_growth_threshold_is_between_the_advice_and_float64():
    """The threshold sits between the docstring's advice (1e8) and float64's 1/eps (9e15)."""
    assert 1e8 < MAX_SEGMENT_GROWTH < 1 / torch.finfo(F64).eps


# -- 2. a parameter that does not reach the output ---------------------------------------------
class ItemHenon(Henon):
    """Henon whose step reads ``a`` as a Python number: its derivative in ``a`` is silently zero."""

    def step(self, x, n=0):
        u, v = x[..., 0], x[..., 1]
        return torch.stack((1 - self.a.item() * u**2 + v, self.b * u), dim=-1)

    _jvp = _vjp = chaosgrad.Map._jvp  # the default (torch.func) derivatives, as a new user's map


ITEM_MESSAGE = r"ItemHenon.step does not depend on parameter\(s\) \['a'\].*not self.a.item\(\)"


def test_a_step_that_calls_item_is_warned_by_every_estimator():
    """One warning per run naming 'a' (and not 'b', which does reach the output), from
    backpropagation (scalar and all-parameter), kernel differentiation, the hybrid and NILSAS."""
    x = henon_states(8)
    runs = [
        lambda: backprop_derivative(ItemHenon(), x, 5, first, "a"),
        lambda: backprop_derivative(ItemHenon(), x, 5, first, None),
        lambda: backprop_derivative(ItemHenon(), x, 5, first, "a", truncate=2, window="sliding"),
        lambda: kernel_derivative(Noisy(ItemHenon(), 0.01), x, 5, first, "a"),
        lambda: kernel_derivative(Noisy(ItemHenon(), 0.01), x, 5, first, None),
        lambda: path_kernel_derivative(Noisy(ItemHenon(), 0.01), x, 5, first, None, 0.5),
        lambda: nilsas(ItemHenon(), x, first, 2, 5, n_unstable=1),
        lambda: nilsas(ItemHenon(), x, first, 2, 5, n_unstable=1, parameter=["a", "b"]),
    ]
    for run in runs:
        with pytest.warns(ConstantParameterWarning, match=ITEM_MESSAGE) as record:
            run()
        assert len([w for w in record if w.category is ConstantParameterWarning]) == 1


def test_shipped_maps_do_not_warn_at_typical_states():
    """Every parameter of the book's maps reaches the output at the states they are run from
    (a warning would be printed into a chapter's stored output)."""
    g = torch.Generator().manual_seed(1)
    A = 0.25 * torch.randn(4, 4, generator=g, dtype=F64)
    cases = [
        (Affine(A, torch.randn(4, generator=g, dtype=F64), gamma=0.7), torch.zeros(4, dtype=F64)),
        (Henon(), henon_states(3)),
        (Logistic(), torch.full((1,), 0.3, dtype=F64)),
        (Tent(), torch.full((1,), 0.3, dtype=F64)),
        (Lorenz63(), torch.tensor([1.0, 1.0, 20.0], dtype=F64)),
        (PerturbedCat(0.1), torch.rand(4, 2, generator=g, dtype=F64)),
        (RandomNetwork(8, 5, sigma_w2=3.0), torch.randn(4, 8, generator=g, dtype=F64)),
        (RandomNetwork(8, sigma_w2=3.0, tied=True), torch.randn(4, 8, generator=g, dtype=F64)),
        (PreactivationNetwork(8, 5, sigma_w2=3.0), torch.randn(4, 8, generator=g, dtype=F64)),
        (NeuralMap(4, (16,)), torch.randn(4, 4, generator=g, dtype=F64)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConstantParameterWarning)
        for map, x in cases:
            assert warn_constant_parameters(map, x, list(map.params()), 0, 4) == []


# -- 3. a plain-float parameter: one message everywhere ----------------------------------------
class PlainFloat(chaosgrad.Map):
    dim = 1

    def __init__(self):
        super().__init__()
        self.rate = 0.5  # should be chaosgrad.parameter(0.5)

    def step(self, x, n=0):
        return self.rate * x


def test_a_plain_float_parameter_gets_the_same_message_from_every_estimator():
    """parameter=None: backpropagation, kernel differentiation, the hybrid and NILSAS raise the
    same ValueError, naming the plain attribute and chaosgrad.parameter; a name gets the same hint."""
    x = torch.ones(8, 1, dtype=F64)
    expected = ("PlainFloat has no parameters to differentiate: register them with chaosgrad.parameter(value) "
                "('rate' is a plain attribute, which derivatives treat as a constant: register it with "
                "self.rate = chaosgrad.parameter(value))")
    runs = [lambda p: backprop_derivative(PlainFloat(), x, 5, first, p),
            lambda p: kernel_derivative(Noisy(PlainFloat(), 0.1), x, 5, first, p),
            lambda p: path_kernel_derivative(Noisy(PlainFloat(), 0.1), x, 5, first, p, 0.5),
            lambda p: nilsas(PlainFloat(), x, first, 2, 5, parameter=p)]
    for run in runs:
        with pytest.raises(ValueError) as error:
            run(None)
        assert str(error.value) == expected
        with pytest.raises((KeyError, ValueError), match=re.escape(expected[expected.index("('rate'"):])):
            run("rate")


# -- 4. an observable in NumPy -----------------------------------------------------------------
def numpy_cos(x):
    return torch.as_tensor(np.cos(x[..., 0]))


def numpy_array(x):
    return np.cos(x.detach().numpy()[..., 0])


def test_a_numpy_observable_is_reraised_with_the_fix():
    """Each estimator that differentiates or evaluates the observable says what it must do; the
    original error is chained."""
    x = henon_states(8)
    fix = r"needs an observable written with torch operations on its input .*not np.cos"
    runs = [
        lambda phi: backprop_derivative(Henon(), x, 5, phi, "a"),
        lambda phi: backprop_derivative(Henon(), x, 5, phi, None),
        lambda phi: nilsas(Henon(), x, phi, 2, 5, n_unstable=1),
        lambda phi: path_kernel_derivative(Noisy(Henon(), 0.01), x, 5, phi, "a", 0.5),
        lambda phi: path_kernel_derivative(Noisy(Henon(), 0.01), x, 5, phi, None, 0.5),
    ]
    for run in runs:
        with pytest.raises(TypeError, match=fix) as error:
            run(numpy_cos)
        assert error.value.__cause__ is not None or "do not depend on its input" in str(error.value)
    for run in runs + [lambda phi: kernel_derivative(Noisy(Henon(), 0.01), x, 5, phi, "a"),
                       lambda phi: kernel_derivative(Noisy(Henon(), 0.01), x, 5, phi, None)]:
        with pytest.raises(TypeError, match=r"returned a ndarray, not a torch tensor.*" + fix):
            run(numpy_array)


# -- 5. few members --------------------------------------------------------------------------
def test_nilsas_warns_when_the_error_bar_comes_from_fewer_than_8_members():
    """2 to 7 members: warned (a standard error from 4 is itself uncertain by 41%); 1 member
    (batch means over segments) and 8 members: not."""
    with pytest.warns(FewSamplesWarning, match=r"nilsas's error bar comes from 4 independent ensemble members.*"
                                               r"uncertain by about 41%.*at least 8"):
        nilsas(Henon(), henon_states(4), first, 4, 5, n_unstable=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewSamplesWarning)
        nilsas(Henon(), henon_states(8), first, 4, 5, n_unstable=1)
        nilsas(Henon(), henon_states(1)[0], first, 4, 5, n_unstable=1)
