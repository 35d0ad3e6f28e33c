"""The draft's MLP and its training map."""

from __future__ import annotations

import pytest
import torch

from chaosgrad.training import GradientDescent, SigmoidMLP, cross_entropy


def small_problem(k=6, sizes=(5, 4, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(k, sizes[0], generator=g, dtype=torch.float64)
    labels = torch.randint(0, sizes[2], (k,), generator=g)
    T = torch.nn.functional.one_hot(labels, sizes[2]).to(torch.float64)
    return SigmoidMLP(sizes), X, T


def test_parameter_count_of_the_draft_network():
    assert SigmoidMLP((784, 50, 10)).num_params == 39_760 == 784 * 50 + 50 + 50 * 10 + 10


def test_unflatten_round_trips_and_orders_w1_b1_w2_b2():
    net = SigmoidMLP((5, 4, 3))
    theta = torch.arange(net.num_params, dtype=torch.float64)
    W1, b1, W2, b2 = net.unflatten(theta)
    assert (W1.shape, b1.shape, W2.shape, b2.shape) == ((5, 4), (4,), (4, 3), (3,))
    assert W1[0, 0] == 0 and b1[0] == 20 and W2[0, 0] == 24 and b2[-1] == net.num_params - 1
    torch.testing.assert_close(torch.cat([p.flatten() for p in (W1, b1, W2, b2)]), theta)


def test_forward_pass_matches_the_formulas():
    net, X, T = small_problem()
    theta = net.init(seed=1)
    W1, b1, W2, b2 = net.unflatten(theta)
    Z1 = 1 / (1 + torch.exp(-(X @ W1 + b1)))
    A2 = Z1 @ W2 + b2
    Y = torch.exp(A2) / torch.exp(A2).sum(1, keepdim=True)
    torch.testing.assert_close(net.probabilities(theta, X), Y, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(net.loss(theta, X, T), -(T * torch.log(Y)).sum() / X.shape[0], rtol=1e-14, atol=0)


def test_softmax_cross_entropy_gradient_is_y_minus_t_over_k():
    """dL/dA2 = (Y - T)/k: the classical closed form, against torch.func."""
    _, _, T = small_problem()
    A2 = torch.randn(T.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grad = torch.func.grad(lambda a: cross_entropy(torch.softmax(a, -1), T))(A2)
    torch.testing.assert_close(grad, (torch.softmax(A2, -1) - T) / T.shape[0], rtol=1e-12, atol=1e-15)


def test_gradient_descent_on_the_mlp_matches_finite_differences_of_the_loss():
    net, X, T = small_problem()
    theta = net.init(seed=2)
    gd = GradientDescent(lambda th: net.loss(th, X, T), dim=net.num_params, lr=0.1)
    e = torch.zeros(net.num_params, dtype=torch.float64)
    e[7] = 1.0
    h = 1e-6
    fd = (net.loss(theta + h * e, X, T) - net.loss(theta - h * e, X, T)) / (2 * h)
    step = gd.step(theta)
    torch.testing.assert_close((theta - step)[7] / 0.1, fd, rtol=1e-7, atol=1e-10)


def test_training_map_jacobian_is_not_the_identity():
    net, X, T = small_problem()
    theta = net.init(seed=2)
    gd = GradientDescent(lambda th: net.loss(th, X, T), dim=net.num_params, lr=0.1)
    eye = torch.eye(net.num_params, dtype=torch.float64)
    J = gd.jvp(theta, eye)
    H = torch.func.hessian(lambda th: net.loss(th, X, T))(theta)
    torch.testing.assert_close(J, eye - 0.1 * H, rtol=1e-12, atol=1e-12)
    w1 = slice(0, 5 * 4)
    assert (J[w1, w1] - eye[w1, w1]).abs().max() > 1e-4  # the W1-W1 block the draft sets to I


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"sizes must be three whole numbers"):
        SigmoidMLP((784, 10))
    net, X, T = small_problem()
    with pytest.raises(ValueError, match=r"theta must have shape \(39,\)"):
        net.loss(torch.zeros(40, dtype=torch.float64), X, T)
    with pytest.raises(ValueError, match=r"X must have shape \(k, 5\); got \(6, 4\)"):
        net.loss(net.init(), X[:, :4], T)
    with pytest.raises(ValueError, match=r"probs and targets must have the same shape"):
        cross_entropy(torch.ones(2, 3), torch.ones(2, 4))
