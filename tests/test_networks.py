"""Random networks: closed-form derivatives, exact spectra of Gaussian products, mean-field exponents.

Newman (1986): products of i.i.d. N x N matrices with N(0, s^2) entries have exponents
lambda_i = (ln 2 + psi((N - i + 1)/2))/2 + ln s. Mean field (Poole et al. 2016): a wide tanh
network has lambda_1 = (1/2) ln chi_1 per layer, with O(1/N) finite-width corrections.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chaosgrad import lyapunov_spectrum, meanfield
from chaosgrad.maps import Map
from chaosgrad.networks import LayerStore, RandomNetwork, measured_top_exponent, shared_layers, zero_crossing

F64 = torch.float64


def newman(N: int, s2: float) -> torch.Tensor:
    i = torch.arange(1, N + 1, dtype=F64)
    return (math.log(2) + torch.digamma((N - i + 1) / 2) + math.log(s2)) / 2


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_closed_form_derivatives_match_torch_func(activation, weights):
    net = RandomNetwork(7, depth=4, activation=activation, sigma_w2=2.0, sigma_b2=0.3, weights=weights, seed=3)
    g = torch.Generator().manual_seed(0)
    x, V = torch.randn(3, 7, generator=g, dtype=F64), torch.randn(3, 7, 2, generator=g, dtype=F64)
    torch.testing.assert_close(net.jvp(x, V, 2), Map._jvp(net, x, V, 2), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(net.vjp(x, V, 2), Map._vjp(net, x, V, 2), rtol=1e-12, atol=1e-13)


def test_layers_have_the_stated_distribution_and_are_reproducible():
    net = RandomNetwork(400, depth=3, sigma_w2=2.0, sigma_b2=0.5, seed=1)
    W, b = net.layer(1)
    # entries N(0, 2/400): the sample variance of 160,000 entries is within 1% (4 sigma = 1.4%)
    assert W.var().item() == pytest.approx(2.0 / 400, rel=0.015)
    assert b.var().item() == pytest.approx(0.5, rel=0.3)
    deeper = RandomNetwork(400, depth=10, sigma_w2=2.0, sigma_b2=0.5, seed=1, cache_bytes=0)
    torch.testing.assert_close(deeper.layer(1)[0], W, rtol=0, atol=0)  # layer l depends only on (seed, l)
    assert not torch.equal(net.layer(2)[0], W)
    tied = RandomNetwork(50, sigma_w2=2.0, tied=True, seed=1)
    assert torch.equal(tied.layer(0)[0], tied.layer(99)[0])
    O, _ = RandomNetwork(50, sigma_w2=3.0, weights="orthogonal").layer(0)
    torch.testing.assert_close(O @ O.T, 3.0 * torch.eye(50, dtype=F64), rtol=0, atol=1e-12)


def test_networks_of_one_seed_share_their_layers_and_results_do_not_change():
    shared_layers.clear()
    first = RandomNetwork(40, sigma_w2=2.0, sigma_b2=0.1, seed=11)
    other = RandomNetwork(40, depth=5, sigma_w2=3.0, sigma_b2=0.5, seed=11)
    assert other.standard_layer(3)[0] is first.standard_layer(3)[0]  # drawn once
    assert RandomNetwork(40, seed=12).standard_layer(3)[0] is not first.standard_layer(3)[0]
    x0 = torch.randn(2, 40, generator=torch.Generator().manual_seed(0), dtype=F64)
    shared = lyapunov_spectrum(RandomNetwork(40, sigma_w2=3.0, seed=11), x0, 20, k=3).exponents
    alone = lyapunov_spectrum(RandomNetwork(40, sigma_w2=3.0, seed=11, cache_bytes=0), x0, 20, k=3).exponents
    assert torch.equal(shared, alone)  # the same layers, bit for bit, as drawn afresh


def test_layer_store_keeps_first_layers_and_drops_the_least_recently_used_seed():
    layer = (torch.zeros(4, 4, dtype=F64), torch.zeros(4, dtype=F64))  # 160 bytes
    store = LayerStore(3 * 160)
    for n in range(5):
        store.put("a", n, layer)
    assert [store.get("a", n) is not None for n in range(5)] == [True, True, True, False, False]
    store.put("b", 0, layer)  # drops all of "a", the least recently used seed
    assert store.get("a", 0) is None and store.get("b", 0) is layer
    store.clear()
    assert store.get("b", 0) is None


def test_param_derivatives_match_differences():
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    h = 1e-6
    plus = RandomNetwork(6, sigma_w2=(1.3 + h) ** 2, sigma_b2=0.25).step(x, 2)
    minus = RandomNetwork(6, sigma_w2=(1.3 - h) ** 2, sigma_b2=0.25).step(x, 2)
    net = RandomNetwork(6, sigma_w2=1.3**2, sigma_b2=0.25)
    torch.testing.assert_close(net.param_jvp(x, {"sigma_w": 1.0}, 2), (plus - minus) / (2 * h), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("N", [2, 4, 10])
def test_gaussian_matrix_products_follow_newman(N):
    """A linear network with sigma_w2 = 1 is a product of N(0, 1/N) matrices.

    Each z = (measured - exact)/stderr is ~N(0, 1): with 16 exponents over the three sizes,
    |z| < 3 for all of them fails by chance about 4% of the time, while a biased exponent
    fails it for sure; the RMS of z checks the error bars are neither too small nor too large.
    """
    net = RandomNetwork(N, activation="linear", sigma_w2=1.0, seed=0)
    result = lyapunov_spectrum(net, torch.zeros(N, dtype=F64), 20000, renorm_every="auto")
    z = (result.exponents - newman(N, 1.0 / N)) / result.stderr
    assert z.abs().max() < 3, z
    assert result.stderr.max() < 0.02  # small enough for the z-test to detect a 0.06 bias
    if N == 10:
        assert 0.4 < z.pow(2).mean().sqrt() < 1.6, z


@pytest.mark.parametrize("sigma_w2", [1.0, 2.0, 4.0])
def test_wide_tanh_network_top_exponent_is_half_log_chi1(sigma_w2):
    lam, err = measured_top_exponent(sigma_w2, 0.05, width=500, layers=600, seed=1)
    assert err < 0.002
    assert lam == pytest.approx(meanfield.top_exponent("tanh", sigma_w2, 0.05), abs=0.01)


def test_measured_order_to_chaos_line_matches_mean_field():
    grid = [1.6, 1.7, 1.8, 1.9]
    lam, err = zip(*[measured_top_exponent(s, 0.05, width=500, layers=600, seed=2) for s in grid])
    crossing = zero_crossing(grid, lam, err)
    assert crossing.value == pytest.approx(meanfield.critical_sigma_w2("tanh", 0.05), abs=0.05)
    assert 0.001 < crossing.stderr < 0.03  # a few thousandths of lambda over a slope of about 0.1


def test_zero_crossing_and_its_error_bar():
    exact = zero_crossing([1, 2, 3], [-1, 0.5, 2], [0.1, 0.1, 0.1])
    assert exact.value == pytest.approx(5 / 3, abs=1e-12)
    # the delta-method error against 4000 noisy repetitions: the spread of their crossings
    # is known to 1.1%, so 8% is seven of its standard errors
    rng = np.random.default_rng(0)
    x, s = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.05, 0.08, 0.05, 0.1])
    y = 1.5 * (x - 2.2)
    crossings = [zero_crossing(x, y + s * rng.standard_normal(4), s).value for _ in range(4000)]
    assert zero_crossing(x, y, s).stderr == pytest.approx(np.std(crossings), rel=0.08)
    with pytest.raises(ValueError, match="do not change sign"):
        zero_crossing([1, 2], [0.1, 0.2], [0.01, 0.01])


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="width must be a whole number >= 1; got width = 0"):
        RandomNetwork(0)
    with pytest.raises(ValueError, match="depth must be a whole number >= 1 or None"):
        RandomNetwork(4, depth=0)
    with pytest.raises(ValueError, match="sigma_w2 must be a finite number > 0; got sigma_w2 = -1"):
        RandomNetwork(4, sigma_w2=-1)
    with pytest.raises(ValueError, match="sigma_b2 must be a finite number >= 0"):
        RandomNetwork(4, sigma_b2=float("nan"))
    with pytest.raises(ValueError, match="weights must be 'gaussian' or 'orthogonal'; got 'uniform'"):
        RandomNetwork(4, weights="uniform")
    with pytest.raises(ValueError, match=r"activation must be one of \['linear', 'relu', 'sigmoid', 'tanh'\]"):
        RandomNetwork(4, activation="gelu")
    with pytest.raises(ValueError, match=r"layer index must be a whole number in 0..2; got n = 3"):
        RandomNetwork(4, depth=3).step(torch.zeros(4, dtype=F64), 3)
