"""The draft's MLP and its training map."""

from __future__ import annotations

import pytest
import torch

from chaosgrad import lyapunov_spectrum
from chaosgrad.hessian import hessian_eigenvalues, hvp, sharpness, subspace_iteration
from chaosgrad.training import (FullBatchRun, GradientDescent, SigmoidMLP, TrainingDerivatives, cross_entropy,
                                derivatives_through_training, hessian_ends, lr_finite_difference, train_full_batch)


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


def test_hvp_matches_dense_hessian_and_finite_differences_of_the_gradient():
    """Closed against torch.func.hessian to 1e-12; against central differences of the
    gradient with step 1e-5 (truncation ~1e-10, rounding ~1e-11) to 1e-7."""
    net, X, T = small_problem()
    theta = net.init(seed=4)
    loss = lambda th: net.loss(th, X, T)  # noqa: E731
    H = torch.func.hessian(loss)(theta)
    V = torch.randn(net.num_params, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(hvp(loss, theta, V), H @ V, rtol=1e-12, atol=1e-12)
    grad, h = torch.func.grad(loss), 1e-5
    fd = (grad(theta + h * V[:, 0]) - grad(theta - h * V[:, 0])) / (2 * h)
    torch.testing.assert_close(hvp(loss, theta, V[:, 0]), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_eigenvalues_match_eigvalsh_of_the_dense_hessian(which):
    net, X, T = small_problem(k=20, sizes=(8, 6, 4))
    theta = net.init(seed=6)
    loss = lambda th: net.loss(th, X, T)  # noqa: E731
    dense = torch.linalg.eigvalsh(torch.func.hessian(loss)(theta))
    expected = dense.flip(0)[:5] if which == "largest" else dense[:5].flip(0)
    got = hessian_eigenvalues(loss, theta, k=5, which=which)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-8)
    assert sharpness(loss, theta) == pytest.approx(dense[-1].item(), abs=1e-8)
    if which == "smallest":
        assert got[-1] < 0  # this network at this point has a saddle direction


def test_subspace_iteration_matches_eigvalsh_and_lanczos_warm_start_returns_eigenvectors():
    """The k eigenvalues largest in magnitude, against the dense Hessian to 1e-8; Lanczos
    from a start vector returns unit Ritz vectors with residual |Hv - lambda v| < 1e-6."""
    net, X, T = small_problem(k=20, sizes=(8, 6, 4))
    theta = net.init(seed=6)
    loss = lambda th: net.loss(th, X, T)  # noqa: E731
    dense = torch.linalg.eigvalsh(torch.func.hessian(loss)(theta))
    expected = dense[dense.abs().argsort(descending=True)[:4]].sort(descending=True).values
    torch.testing.assert_close(subspace_iteration(loss, theta, k=4, block=12, tol=1e-13), expected,
                               rtol=0, atol=1e-8)
    values, vectors = hessian_eigenvalues(loss, theta, k=2, start=torch.ones(net.num_params, dtype=torch.float64),
                                          return_vectors=True)
    torch.testing.assert_close(values, dense.flip(0)[:2], rtol=0, atol=1e-8)
    torch.testing.assert_close(torch.linalg.vector_norm(vectors, dim=0), torch.ones(2, dtype=torch.float64))
    residual = hvp(loss, theta, vectors) - vectors * values
    assert torch.linalg.vector_norm(residual, dim=0).max() < 1e-6
    with pytest.raises(ValueError, match=r"start must be a nonzero vector of shape \(\d+,\)"):
        hessian_eigenvalues(loss, theta, start=torch.zeros(net.num_params, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"need k <= block <= d"):
        subspace_iteration(loss, theta, k=4, block=3)


def test_closed_form_hessian_operator_matches_hvp_and_lanczos_uses_it():
    """TrainingLoss.hessian_operator (Pearlmutter's R-operator written out) against
    torch.func's forward-over-reverse hvp at a random point, to rounding; Lanczos on the
    objective (which uses the closed form) against eigvalsh of the dense Hessian."""
    net, X, T = small_problem(k=20, sizes=(8, 6, 4))
    theta = net.init(seed=6) + 0.3 * torch.randn(net.num_params, generator=torch.Generator().manual_seed(2),
                                                 dtype=torch.float64)
    objective = net.objective(X, T)
    assert objective(theta).item() == net.loss(theta, X, T).item()
    product = objective.hessian_operator(theta)
    for seed in range(3):
        v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(product(v), hvp(lambda th: net.loss(th, X, T), theta, v), rtol=1e-12, atol=1e-13)
    dense = torch.linalg.eigvalsh(torch.func.hessian(objective)(theta))
    torch.testing.assert_close(hessian_eigenvalues(objective, theta, k=3), dense.flip(0)[:3], rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match=r"X must be \(k, 8\) and T \(k, 4\)"):
        net.objective(X[:, :3], T)


def test_training_map_exponents_on_a_quadratic_are_log_abs_one_minus_lr_a():
    """L = theta^T A theta / 2: the training map is the linear map I - lr A, whose exponents
    are ln|1 - lr a_i| for the eigenvalues a_i (the orbit sits at the fixed point 0; one
    direction is unstable, |1 - 3| = 2). Their sum is ln|det(I - lr A)| exactly, since the
    QR factors multiply to the determinant. Each one carries a transient c_i / T from the
    random initial basis, and for a constant linear map c_i is the same for every T once the
    basis has aligned: (estimate - ln|1 - lr a_i|) T agrees at T = 60 and T = 180."""
    a = torch.tensor([30.0, 12.0, 3.0, -1.0], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7)))
    A = Q @ torch.diag(a) @ Q.T
    gd = GradientDescent(lambda th: 0.5 * th @ A @ th, dim=4, lr=0.1)
    expected = torch.log((1 - 0.1 * a).abs()).sort(descending=True).values
    transients = []
    for T in (60, 180):
        spectrum = lyapunov_spectrum(gd, torch.zeros(4, dtype=torch.float64), T, k=4)
        assert spectrum.exponents.sum().item() == pytest.approx(expected.sum().item(), abs=1e-12)
        transients.append((spectrum.exponents - expected) * T)
    torch.testing.assert_close(transients[0], transients[1], rtol=0, atol=1e-8)
    # started from A's eigenvectors (largest |1 - lr a| first), each exponent is exact
    order = (1 - 0.1 * a).abs().argsort(descending=True)
    aligned = lyapunov_spectrum(gd, torch.zeros(4, dtype=torch.float64), 25, basis=Q[:, order])
    torch.testing.assert_close(aligned.exponents, expected, rtol=0, atol=1e-10)
    V = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(gd.jvp(torch.ones(4, dtype=torch.float64), V), V - 0.1 * A @ V, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: hvp(lambda t: (t**2).sum(), torch.ones(2, 2, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), "theta must be a flat"),
    (lambda: hvp(lambda t: (t**2).sum(), torch.ones(3, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), "v must have shape"),
    (lambda: hessian_eigenvalues(lambda t: (t**2).sum(), torch.ones(3, dtype=torch.float64), k=4), "k must be at most"),
    (lambda: hessian_eigenvalues(lambda t: (t**2).sum(), torch.ones(3, dtype=torch.float64), which="top"), "which must be"),
])
def test_hessian_tools_name_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(("lr", "dominant"), [(0.1, "largest"), (0.05, "smallest")])
def test_hessian_ends_on_a_quadratic_grow_at_log_abs_one_minus_lr_lambda(lr, dominant):
    """L = theta^T A theta / 2 with eigenvalues 30, 12, 3, -1: the ends are 30 and -1, the
    Hessian is constant, and the growth from each end's eigenvector is ln|1 - lr lambda|
    exactly: ln 2 against ln 1.1 at lr = 0.1 (the sharp end wins, lr * 30 > 2), ln 0.5 against
    ln 1.05 at lr = 0.05 (the saddle direction wins)."""
    a = torch.tensor([30.0, 12.0, 3.0, -1.0], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    A = Q @ torch.diag(a) @ Q.T
    ends = hessian_ends(lambda th: 0.5 * th @ A @ th, torch.zeros(4, dtype=torch.float64), lr, steps=15)
    torch.testing.assert_close(ends.eigenvalues, torch.tensor([30.0, -1.0], dtype=torch.float64), rtol=0, atol=1e-10)
    expected = torch.log((1 - lr * ends.eigenvalues).abs())
    torch.testing.assert_close(ends.predicted, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(ends.measured, expected, rtol=0, atol=1e-10)
    assert ends.dominant == dominant and ends.steps == 15


def test_edge_of_stability_finds_the_longest_stretch_in_the_band():
    S = torch.tensor([1.0, 0.52, 0.5, 0.49, 0.3, 0.5, 0.51, 0.505, 0.499, 0.2], dtype=torch.float64)
    steps = torch.arange(10) * 5
    h = FullBatchRun(steps, S, S, S, None, S, torch.zeros(1))
    assert h.edge_of_stability(4.0, band=0.05) == (25, 40)  # 4 S = 2.0, 2.04, 2.02, 1.996
    assert h.edge_of_stability(4.0, band=0.001) == (10, 10)
    assert h.edge_of_stability(1.0) is None
    with pytest.raises(ValueError, match="recorded no sharpness; call train_full_batch with with_sharpness=True"):
        FullBatchRun(steps, S, S, S, None, None, torch.zeros(1)).edge_of_stability(4.0)


def test_train_full_batch_records_loss_accuracy_and_sharpness():
    """Gradient descent with a small step lowers the loss at every record (the loss is smooth
    and lr * sharpness < 2 here); the recorded sharpness is the dense Hessian's top eigenvalue."""
    net, X, T = small_problem(k=30, sizes=(6, 5, 3))
    labels = T.argmax(-1)
    theta0 = net.init(seed=8)
    history = train_full_batch(net, theta0, X, labels, lr=0.5, steps=40, record_every=10, X_test=X[:10],
                               labels_test=labels[:10], with_sharpness=True, keep_parameters=True, progress=False)
    assert history.steps.tolist() == [0, 10, 20, 30, 40]
    assert bool((history.loss.diff() < 0).all())
    assert history.loss[0].item() == pytest.approx(net.loss(theta0, X, T).item(), rel=1e-14)
    gd = GradientDescent(lambda th: net.loss(th, X, T), dim=net.num_params, lr=0.5)
    orbit = gd.trajectory(theta0, 40)  # the same iterates by the training map
    torch.testing.assert_close(history.theta, orbit[-1], rtol=1e-13, atol=1e-13)
    per_step = torch.stack([net.loss(th, X, T) for th in orbit])
    torch.testing.assert_close(history.loss_per_step, per_step, rtol=1e-13, atol=0)
    assert history.loss_per_step[::10].tolist() == history.loss.tolist()
    torch.testing.assert_close(history.parameters, orbit[::10], rtol=1e-13, atol=1e-13)
    dense = torch.linalg.eigvalsh(torch.func.hessian(lambda th: net.loss(th, X, T))(history.theta))
    assert history.sharpness[-1].item() == pytest.approx(dense[-1].item(), abs=1e-7)
    assert 0 <= history.train_accuracy.min() and history.test_accuracy.max() <= 1
    with pytest.raises(ValueError, match="labels must be 30 integers in 0..2"):
        train_full_batch(net, theta0, X, labels + 3, lr=0.5, steps=2)


def test_gradient_and_products_match_torch_func():
    """One pass for the loss, the gradient and k Hessian-vector products: equal to
    torch.func's gradient and hvp up to rounding (1e-14)."""
    net, X, T = small_problem(k=12)
    loss, theta = net.objective(X, T), net.init(seed=3)
    V = torch.randn(net.num_params, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    value, gradient, HV = loss.gradient_and_products(theta, V)
    assert value.item() == pytest.approx(loss(theta).item(), rel=1e-14)
    torch.testing.assert_close(gradient, torch.func.grad(loss)(theta), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(HV, hvp(loss, theta, V), rtol=1e-13, atol=1e-14)
    assert loss.gradient_and_products(theta, V[:, :0])[2].shape == (net.num_params, 0)
    with pytest.raises(ValueError, match=r"V shape \(39, k\)"):
        loss.gradient_and_products(theta, V[:5])


def unrolled(loss, lr, steps):
    """theta_0 -> theta_T by plain torch.func gradients: an independent implementation."""
    grad = torch.func.grad(loss)

    def run(theta):
        for _ in range(steps):
            theta = theta - lr * grad(theta)
        return theta
    return run


def test_derivatives_through_training_against_autodiff_of_the_unrolled_run():
    """The tangent recursions against torch.func.jvp of the 25-fold map (rounding only,
    1e-11); the lr derivative also against central differences (h = 1e-4: truncation about
    h^2 = 1e-8 times the third derivative, so atol 1e-8); the default direction is the top
    singular vector of Dg(theta_0) = I - lr H_0 and the ends at step 0 are the dense
    Hessian's extreme eigenvalues (Lanczos tolerance 1e-4 relative on the residual)."""
    net, X, T = small_problem(k=10)
    loss, theta0, lr, steps = net.objective(X, T), net.init(seed=5), 2.0, 25
    result = derivatives_through_training(loss, theta0, lr, steps, ends_at=(0, 10, 25))
    H0 = torch.func.hessian(loss)(theta0)
    singular = torch.linalg.eigh(torch.eye(net.num_params, dtype=torch.float64) - lr * H0)
    top = singular.eigenvectors[:, singular.eigenvalues.abs().argmax()]
    assert abs(torch.dot(top, result.direction).item()) == pytest.approx(1, abs=1e-6)
    dense = torch.linalg.eigvalsh(H0)
    torch.testing.assert_close(result.ends[0], torch.stack([dense[-1], dense[0]]), rtol=0, atol=1e-6)
    assert result.ends.shape == (3, 2) and result.ends_steps.tolist() == [0, 10, 25]
    _, jvp = torch.func.jvp(unrolled(loss, lr, steps), (theta0,), (result.direction,))
    assert result.log_growth[-1].item() == pytest.approx(torch.linalg.vector_norm(jvp).log().item(), abs=1e-11)
    run_of_lr = lambda a: loss(unrolled(loss, a, steps)(theta0))  # noqa: E731
    one = torch.tensor(1.0, dtype=torch.float64)
    _, exact = torch.func.jvp(run_of_lr, (torch.tensor(lr, dtype=torch.float64),), (one,))
    assert result.lr_derivative[-1].item() == pytest.approx(exact.item(), rel=1e-11)
    fd = lr_finite_difference(loss, theta0, lr, steps, [1e-4, 1e-3])
    torch.testing.assert_close(fd[0], result.lr_derivative, rtol=1e-5, atol=1e-8)
    assert result.loss[0].item() == pytest.approx(loss(theta0).item(), rel=1e-14)
    assert result.finite_time_exponent(0, steps) == pytest.approx(result.log_growth[-1].item() / steps, rel=1e-14)


def test_integrated_rate_is_exact_for_a_power_law():
    """lambda_min(t) = -0.5 t^-0.8 recorded at a few steps: the power-law interpolation
    reproduces it between the records, so the sum of ln(1 - lr lambda) is exact (1e-12)."""
    t = torch.tensor([1, 10, 100, 400, 2000])
    lam = -0.5 * t.double() ** -0.8
    ends = torch.stack([torch.ones(5, dtype=torch.float64), lam], dim=1)
    zeros = torch.zeros(2001, dtype=torch.float64)
    result = TrainingDerivatives(0.1, zeros, zeros, zeros, zeros, zeros[:3], t, ends, zeros[:3])
    steps = torch.arange(400, 2000, dtype=torch.float64)
    expected = torch.log(1 + 0.1 * 0.5 * steps ** -0.8).sum().item()
    assert result.integrated_rate(400, 2000) == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(result.local_rates("largest"), torch.log(torch.full((5,), 0.9, dtype=torch.float64)))
    with pytest.raises(ValueError, match="recorded steps"):
        result.integrated_rate(300, 2000)
    with pytest.raises(ValueError, match="start < stop"):
        result.finite_time_exponent(5, 5)


@pytest.mark.parametrize("call, message", [
    (lambda loss, th: derivatives_through_training(lambda t: (t**2).sum(), th, 0.1, 3), "must be a TrainingLoss"),
    (lambda loss, th: derivatives_through_training(loss, th, 0.1, 3, ends_at=(5,)), "at most steps = 3"),
    (lambda loss, th: derivatives_through_training(loss, th, 0.1, 3, direction=th[:4]), "direction must be"),
    (lambda loss, th: lr_finite_difference(loss, th, 0.1, 3, 0.2), r"h must lie in \(0, lr = 0.1\)"),
    (lambda loss, th: lr_finite_difference(loss, th, -0.1, 3, 0.01), "lr"),
])
def test_derivatives_through_training_name_bad_arguments(call, message):
    net, X, T = small_problem()
    with pytest.raises((ValueError, TypeError), match=message):
        call(net.objective(X, T), net.init(seed=0))
