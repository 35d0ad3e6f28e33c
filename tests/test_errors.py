"""Bad input raises an error that names the problem; nothing turns silently into inf or NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chaosgrad import Map, NonFiniteStateError
from chaosgrad.derivatives import backprop_derivative
from chaosgrad.lyapunov import lyapunov_spectrum
from chaosgrad.systems import Henon, Logistic, Lorenz63, Noisy
from chaosgrad.training import GradientDescent


def test_state_with_wrong_last_axis():
    with pytest.raises(ValueError, match=r"x for Henon must have shape \(\.\.\., 2\).*got shape \(4, 3\)"):
        Henon()(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x0 for Lorenz63 must have shape \(\.\.\., 3\).*got shape \(\)"):
        Lorenz63().trajectory(torch.tensor(1.0, dtype=torch.float64), 3)


def test_integer_state_is_rejected():
    with pytest.raises(TypeError, match=r"x for Logistic must be a real floating-point tensor.*torch.int64"):
        Logistic().jvp(torch.tensor([1]), torch.ones(1, 1))


@pytest.mark.parametrize(
    ("V_shape", "fragment"),
    [((2,), r"got shape \(2,\)"), ((3, 1), r"got shape \(3, 1\)"), ((4, 2, 1), r"do not broadcast")],
)
def test_tangent_with_wrong_shape(V_shape, fragment):
    x = torch.zeros(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"V for Henon must have shape \(\.\.\., 2, k\).*" + fragment):
        Henon().jvp(x, torch.zeros(V_shape, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"W for Henon must have shape"):
        Henon().vjp(x, torch.zeros(V_shape, dtype=torch.float64))


def test_nonfinite_state_names_the_step():
    # Henon with a = 3 escapes to infinity from (1, 1): x overflows float64 after about 10 steps
    with pytest.raises(NonFiniteStateError, match=r"non-finite state at step \d+"):
        Henon(a=3.0).trajectory(torch.tensor([1.0, 1.0], dtype=torch.float64), 100)
    with pytest.raises(NonFiniteStateError, match=r"non-finite initial state x0 at step 0"):
        Henon().trajectory(torch.tensor([math.nan, 0.0], dtype=torch.float64), 5)


def test_nonfinite_state_reports_the_first_bad_step():
    henon = Henon(a=3.0)
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    first_bad = 0
    with torch.no_grad():
        while torch.isfinite(x).all():
            x = henon.step(x)
            first_bad += 1
    with pytest.raises(NonFiniteStateError, match=rf"at step {first_bad}:"):
        henon.trajectory(torch.tensor([1.0, 1.0], dtype=torch.float64), 100)


@pytest.mark.parametrize("sigma", [0.0, -0.1, math.nan, math.inf])
def test_noise_amplitude_must_be_positive_and_finite(sigma):
    with pytest.raises(ValueError, match=r"sigma must be a finite number > 0; got sigma = "):
        Noisy(Henon(), sigma=sigma)


def test_other_positive_parameters():
    with pytest.raises(ValueError, match=r"dt must be a finite number > 0; got dt = 0.0"):
        Lorenz63(dt=0.0)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0; got lr = -1.0"):
        GradientDescent(lambda t: (t**2).sum(), dim=2, lr=-1.0)


def test_noisy_wraps_only_maps():
    with pytest.raises(TypeError, match=r"Noisy wraps a chaosgrad.Map; got function"):
        Noisy(lambda x: x, sigma=0.1)


def test_negative_steps_and_unknown_parameters():
    with pytest.raises(ValueError, match=r"steps must be a whole number >= 0; got steps = -1"):
        Henon().trajectory(torch.zeros(2, dtype=torch.float64), -1)
    with pytest.raises(KeyError, match=r"unknown parameter\(s\) \['c'\] for Henon; it has \['a', 'b'\]"):
        Henon().param_jvp(torch.zeros(2, dtype=torch.float64), {"c": 1.0})


def test_base_class_requires_step():
    from chaosgrad import Map

    class Empty(Map):
        dim = 1

    with pytest.raises(NotImplementedError, match=r"Empty must define step"):
        Empty()(torch.zeros(1, dtype=torch.float64))


class GaussianProduct(Map):
    """x -> A_n x with A_n Gaussian, drawn from a generator seeded by n (Newman's products,
    written as a new user would)."""

    dim = 4

    def matrix(self, n):
        return torch.randn(4, 4, generator=torch.Generator().manual_seed(int(n)), dtype=torch.float64) / 2

    def step(self, x, n=0):
        return x @ self.matrix(n).T


def test_a_map_that_draws_its_matrix_from_a_generator_seeded_by_n():
    """Item 21 of the review: the default derivatives vmap over columns with the same random
    draw for every column, so the Jacobian is A_n exactly; the exponents of the product sum
    to the mean of ln|det A_n| exactly (the QR factors multiply to the determinant)."""
    m, x = GaussianProduct(), torch.ones(4, dtype=torch.float64)
    V = torch.randn(4, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    torch.testing.assert_close(m.jvp(x, V, n=7), m.matrix(7) @ V, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(m.vjp(x, V, n=7), m.matrix(7).T @ V, rtol=1e-14, atol=1e-14)
    spectrum = lyapunov_spectrum(m, x, 200)
    log_det = sum(torch.linalg.slogdet(m.matrix(n))[1] for n in range(200)) / 200
    assert spectrum.exponents.sum().item() == pytest.approx(log_det.item(), abs=1e-10)


class NoDim(Map):
    def step(self, x, n=0):
        return x


class PlainFloat(Map):
    dim = 1

    def __init__(self):
        super().__init__()
        self.rate = 2.0  # should have been chaosgrad.parameter(2.0)

    def step(self, x, n=0):
        return self.rate * x


class UsesNumpy(Map):
    dim = 2

    def step(self, x, n=0):
        return torch.as_tensor(np.tanh(x.numpy()))


def test_a_new_users_mistakes_get_messages_that_name_the_fix():
    """Item 22 of the review: no dim, a parameter stored as a float, NumPy inside step,
    float32 states."""
    with pytest.raises(AttributeError, match=r"NoDim has no dim: set the length of its state vector"):
        NoDim().trajectory(torch.zeros(2, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match=r"one of \[\]; got 'rate' \('rate' is a plain attribute.*"
                                         r"self.rate = chaosgrad.parameter\(value\)"):
        backprop_derivative(PlainFloat(), torch.ones(1, dtype=torch.float64), 5, lambda x: x[..., 0], "rate")
    with pytest.raises(KeyError, match=r"'rate' is a plain attribute"):
        PlainFloat().param_jvp(torch.ones(1, dtype=torch.float64), {"rate": 1.0})
    with pytest.raises(RuntimeError, match=r"differentiating UsesNumpy.step with torch.func failed: .*no NumPy"):
        UsesNumpy().jvp(torch.ones(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x0 for Henon is float32; chaosgrad computes in float64.*x0.double\(\)"):
        Henon().trajectory(torch.zeros(2, dtype=torch.float32), 3)
