r"""Training as a dynamical system: gradient descent is a map on parameter space.

Full-batch gradient descent with learning rate :math:`\alpha` on a loss :math:`L` is the map

.. math::  \theta_{t+1} = g(\theta_t) = \theta_t - \alpha \nabla L(\theta_t),

whose Jacobian is :math:`Dg(\theta) = I - \alpha \nabla^2 L(\theta)`: the identity minus the
learning rate times the Hessian, never the identity alone (the draft's eq. (27)-(30)).
Its tangent map is a Hessian-vector product, so Lyapunov exponents of training never need
the dense Hessian.

The module holds the map (:class:`GradientDescent`), the growth of training along both ends
of the Hessian's spectrum (:func:`hessian_ends`), the draft's network and loss
(:class:`SigmoidMLP`, :class:`TrainingLoss`, :func:`cross_entropy`), the full-batch training
loop (:func:`train_full_batch`) and derivatives through training
(:func:`derivatives_through_training`). The Hessian's linear algebra (products, Lanczos,
subspace iteration, sharpness) is in :mod:`chaosgrad.hessian`; minibatch SGD on deep
networks, chapter 3's trainer, is :func:`chaosgrad.mlp.train_minibatch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .hessian import Loss, hessian_eigenvalues, hvp
from .maps import Map, parameter
from .progress import progress_range
from .validation import check_finite, check_positive, check_whole

__all__ = ["FullBatchRun", "GradientDescent", "HessianEnds", "SigmoidMLP", "TrainingDerivatives", "TrainingLoss",
           "cross_entropy", "derivatives_through_training", "hessian_ends", "lr_finite_difference",
           "train_full_batch"]


@dataclass(frozen=True)
class HessianEnds:
    r"""The two ends of the Hessian's spectrum and how fast gradient descent grows along them
    (:func:`hessian_ends`).

    Attributes
    ----------
    eigenvalues : Tensor, shape ``(2,)``
        :math:`\lambda_{\max}` (the sharpness) and :math:`\lambda_{\min}` of :math:`\nabla^2 L(\theta)`.
    predicted : Tensor, shape ``(2,)``
        :math:`\ln|1 - \alpha\lambda|` at the two ends: the growth rate per step of the
        training map along each eigenvector while the Hessian stays what it is at
        :math:`\theta`.
    measured : Tensor, shape ``(2,)``
        The finite-time Lyapunov exponent over the next ``steps`` steps of the run from
        :math:`\theta`, started from each end's eigenvector (the Hessian moves with the run).
    steps : int
    """

    eigenvalues: Tensor
    predicted: Tensor
    measured: Tensor
    steps: int

    @property
    def dominant(self) -> str:
        r"""Which end grows faster over the run: ``"largest"`` (the sharp end, unstable when
        :math:`\alpha\lambda_{\max} > 2`) or ``"smallest"`` (a negative-curvature end)."""
        return "largest" if self.measured[0] >= self.measured[1] else "smallest"


def hessian_ends(loss: Loss, theta: Tensor, lr: float, steps: int = 20, tol: float = 1e-6) -> HessianEnds:
    r"""Both ends of the Hessian spectrum at :math:`\theta` and the training map's growth
    along them.

    The training map's Jacobian :math:`I - \alpha H` stretches the eigenvector of eigenvalue
    :math:`\lambda` by :math:`|1 - \alpha\lambda|`. Only the two ends can make this exceed 1:
    the top, when :math:`\alpha\lambda_{\max} > 2` (the edge of stability), and the bottom,
    when :math:`\lambda_{\min} < 0` (a saddle direction), for any learning rate. The bulk of
    near-zero eigenvalues gives :math:`|1 - \alpha\lambda| \approx 1`, so a random tangent
    vector in :math:`d` dimensions sees mostly the bulk for about
    :math:`\ln\sqrt d/\lambda_1` steps; starting from the ends' eigenvectors
    (:func:`~chaosgrad.lyapunov.lyapunov_spectrum` with ``basis``) measures their growth at
    once.

    Parameters
    ----------
    loss, theta
        As :func:`~chaosgrad.hessian.hvp`.
    lr
        Learning rate :math:`\alpha > 0` of the gradient-descent map.
    steps
        Length of the run over which each end's growth is measured.
    tol
        Lanczos tolerance of :func:`~chaosgrad.hessian.hessian_eigenvalues` for each end.

    Returns
    -------
    HessianEnds

    See Also
    --------
    GradientDescent : the training map.
    """
    from .lyapunov import lyapunov_spectrum  # lyapunov needs nothing from here; avoid a cycle at import

    lr = check_positive(lr, "lr")
    check_whole(steps, "steps", 1)
    gd = GradientDescent(loss, dim=theta.shape[0], lr=lr)
    values, measured = [], []
    for which in ("largest", "smallest"):
        value, vector = hessian_eigenvalues(loss, theta, k=1, which=which, tol=tol, return_vectors=True)
        values.append(value[0])
        measured.append(lyapunov_spectrum(gd, theta, steps, basis=vector, progress=False).exponents[0])
    eigenvalues = torch.stack(values)
    return HessianEnds(eigenvalues, torch.log((1 - lr * eigenvalues).abs()), torch.stack(measured), int(steps))


class GradientDescent(Map):
    r"""The gradient-descent map :math:`\theta \mapsto \theta - \alpha \nabla L(\theta)`.

    Parameters
    ----------
    loss
        :math:`L`, a function of one flat parameter vector of shape ``(dim,)`` returning a
        scalar tensor; it must be differentiable by :mod:`torch.func` (no in-place updates
        of captured tensors, no ``.item()``).
    dim
        Number of parameters.
    lr
        Learning rate :math:`\alpha > 0`; a map parameter, so derivatives with respect to
        it are available through :meth:`param_jvp`.

    Notes
    -----
    Ensembles of parameter vectors ``(..., dim)`` are handled by :func:`torch.func.vmap`;
    the tangent map (the default :meth:`Map.jvp`, forward over reverse mode) returns
    :math:`(I - \alpha H) V` column by column without forming :math:`H`.
    """

    def __init__(self, loss: Callable[[Tensor], Tensor], dim: int, lr: float) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be a callable of a flat parameter vector; got {type(loss).__name__}")
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a whole number >= 1; got dim = {dim}")
        self.loss = loss
        self.dim = int(dim)
        self.lr = parameter(check_positive(lr, "lr"))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, lr={self.lr.item():g}"

    def step(self, x: Tensor, n: int = 0) -> Tensor:
        flat = x.reshape(-1, self.dim)
        grads = torch.func.vmap(torch.func.grad(self.loss))(flat)
        return x - self.lr * grads.reshape(x.shape)

    def _jvp(self, x: Tensor, V: Tensor, n: int) -> Tensor:
        # (I - lr H) V by Hessian-vector products, one member at a time, columns batched
        flat_x, flat_V = x.reshape(-1, self.dim), V.reshape(-1, self.dim, V.shape[-1])
        out = torch.stack([Vm - self.lr * hvp(self.loss, xm, Vm) for xm, Vm in zip(flat_x, flat_V)])
        return out.reshape(V.shape)

    _vjp = _jvp  # the Hessian is symmetric, so (I - lr H)^T = I - lr H

    def _step_jvp(self, x: Tensor, V: Tensor, n: int) -> tuple[Tensor, Tensor]:
        # the gradient comes with the Hessian-vector products (the primal of their jvp)
        grad = torch.func.grad(self.loss)
        steps, tangents = [], []
        for xm, Vm in zip(x.reshape(-1, self.dim), V.reshape(-1, self.dim, V.shape[-1])):
            g, HV = torch.func.vmap(lambda u, xm=xm: torch.func.jvp(grad, (xm,), (u,)), in_dims=1,
                                    out_dims=(None, 1))(Vm)
            steps.append(xm - self.lr * g)
            tangents.append(Vm - self.lr * HV)
        return torch.stack(steps).reshape(x.shape), torch.stack(tangents).reshape(V.shape)


def cross_entropy(probs: Tensor, targets: Tensor) -> Tensor:
    r"""Mean cross-entropy :math:`L = -\frac1k \sum_{i=1}^k \sum_j t^i_j \log y^i_j`.

    Parameters
    ----------
    probs
        Predicted class probabilities :math:`Y`, shape ``(k, classes)``, rows summing to 1.
    targets
        One-hot (or probability) labels :math:`T`, the same shape.

    Notes
    -----
    The labels :math:`t` weight the log-probabilities. The draft's eq. (17) writes
    :math:`y \log y` instead, which is the entropy of the predictions and does not depend on
    the labels at all.
    """
    if probs.shape != targets.shape:
        raise ValueError(f"probs and targets must have the same shape (k, classes); got {tuple(probs.shape)} and {tuple(targets.shape)}")
    return -(targets * torch.log(probs)).sum(-1).mean()


class SigmoidMLP:
    r"""The draft's fully connected network with one sigmoid hidden layer and a softmax output.

    With the draft's row convention (a batch :math:`X \in \mathbb{R}^{k\times n_0}`, one sample
    per row) and sizes :math:`(n_0, n_1, n_2)`:

    .. math::
        A_1 = X W_1 + b_1,\quad Z_1 = \operatorname{sigmoid}(A_1) = \frac{1}{1 + e^{-A_1}},\quad
        A_2 = Z_1 W_2 + b_2,\quad Y = \operatorname{softmax}(A_2),

    with :math:`W_1 \in \mathbb{R}^{n_0\times n_1}`, :math:`W_2 \in \mathbb{R}^{n_1\times n_2}`.
    All parameters live in one flat vector :math:`\theta` ordered :math:`(W_1, b_1, W_2, b_2)`,
    as in the draft's eq. (18); for sizes ``(784, 50, 10)`` it has 39,760 entries.

    Parameters
    ----------
    sizes
        Layer widths :math:`(n_0, n_1, n_2)`.
    """

    def __init__(self, sizes: tuple[int, int, int] = (784, 50, 10)) -> None:
        if len(sizes) != 3 or any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"sizes must be three whole numbers >= 1 (input, hidden, output); got {sizes}")
        self.sizes = tuple(int(s) for s in sizes)
        n0, n1, n2 = self.sizes
        self.shapes = ((n0, n1), (n1,), (n1, n2), (n2,))
        self.num_params = n0 * n1 + n1 + n1 * n2 + n2

    def __repr__(self) -> str:
        return f"SigmoidMLP(sizes={self.sizes}, num_params={self.num_params})"

    def unflatten(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Split a flat parameter vector into :math:`(W_1, b_1, W_2, b_2)`."""
        if theta.shape != (self.num_params,):
            raise ValueError(f"theta must have shape ({self.num_params},) for {self!r}; got {tuple(theta.shape)}")
        parts, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            parts.append(theta[start : start + size].reshape(shape))
            start += size
        return tuple(parts)

    def init(self, seed: int = 0) -> Tensor:
        r"""Random parameters: weights :math:`N(0, 1/\text{fan-in})`, biases zero, float64."""
        g = torch.Generator().manual_seed(seed)
        parts = []
        for shape in self.shapes:
            if len(shape) == 2:
                parts.append(torch.randn(shape, generator=g, dtype=torch.float64).flatten() / shape[0] ** 0.5)
            else:
                parts.append(torch.zeros(shape, dtype=torch.float64))
        return torch.cat(parts)

    def probabilities(self, theta: Tensor, X: Tensor) -> Tensor:
        """Class probabilities :math:`Y`, shape ``(k, n_2)``, for inputs ``X`` of shape ``(k, n_0)``."""
        W1, b1, W2, b2 = self.unflatten(theta)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (k, {self.sizes[0]}); got {tuple(X.shape)}")
        Z1 = torch.sigmoid(X @ W1 + b1)
        return torch.softmax(Z1 @ W2 + b2, dim=-1)

    def loss(self, theta: Tensor, X: Tensor, T: Tensor) -> Tensor:
        """Mean cross-entropy of the predictions against one-hot labels ``T`` (shape ``(k, n_2)``)."""
        return cross_entropy(self.probabilities(theta, X), T)

    def objective(self, X: Tensor, T: Tensor) -> TrainingLoss:
        """The training loss :math:`\\theta \\mapsto L(\\theta)` on fixed data, with a closed-form
        Hessian-vector product (:class:`TrainingLoss`)."""
        return TrainingLoss(self, X, T)


class TrainingLoss:
    r"""The cross-entropy of a :class:`SigmoidMLP` on fixed data as a function of
    :math:`\theta` alone, with a closed-form Hessian-vector product.

    Calling it gives :math:`L(\theta)` (differentiable by :mod:`torch.func`, like any loss
    here). :meth:`hessian_operator` returns :math:`v \mapsto \nabla^2L(\theta)v` by
    Pearlmutter's R-operator :cite:`pearlmutter1994fast` written out for this network: the
    forward and backward passes at :math:`\theta` are computed once and every product then
    costs two products with the data matrix, about one gradient, against about three for
    :func:`~chaosgrad.hessian.hvp`'s forward-over-reverse pass.
    :func:`~chaosgrad.hessian.hessian_eigenvalues` uses it when the loss has it.

    With :math:`S = Z_1\circ(1 - Z_1)`, :math:`G_2 = (Y - T)/k`, :math:`D = G_2W_2^\top` and
    :math:`G_1 = D\circ S` (the gradient's intermediate quantities), the directional
    derivatives along :math:`v = (V_1, c_1, V_2, c_2)` are

    .. math::
        \dot A_1 = XV_1 + c_1,\quad \dot Z = S\circ\dot A_1,\quad
        \dot A_2 = \dot ZW_2 + Z_1V_2 + c_2,\quad
        \dot G_2 = Y\circ(\dot A_2 - (Y\circ\dot A_2)\mathbf 1\mathbf 1^\top)/k,

        \dot G_1 = (\dot G_2W_2^\top + G_2V_2^\top)\circ S + D\circ(1 - 2Z_1)\circ\dot Z,

    and :math:`Hv = (X^\top\dot G_1,\ \mathbf 1^\top\dot G_1,\ \dot Z^\top G_2 + Z_1^\top\dot G_2,\
    \mathbf 1^\top\dot G_2)`.

    Parameters
    ----------
    net
        The network.
    X, T
        Inputs ``(k, n_0)`` and one-hot labels ``(k, n_2)``.
    """

    def __init__(self, net: SigmoidMLP, X: Tensor, T: Tensor) -> None:
        if X.ndim != 2 or X.shape[1] != net.sizes[0] or T.shape != (X.shape[0], net.sizes[2]):
            raise ValueError(f"X must be (k, {net.sizes[0]}) and T (k, {net.sizes[2]}); got {tuple(X.shape)} and "
                             f"{tuple(T.shape)}")
        self.net, self.X, self.T = net, X, T
        # inputs that are zero in every sample (MNIST's border pixels) add exact zeros to every
        # product with X and get exactly zero gradient rows: the products skip them
        self._used = torch.nonzero(X.ne(0).any(0)).flatten()
        self._X_used = X[:, self._used].contiguous()

    def _times_data_T(self, G: Tensor) -> Tensor:
        r""":math:`X^\top G`, the rows of unused inputs exactly zero, from the used columns alone."""
        out = G.new_zeros(self.X.shape[1], G.shape[1])
        out[self._used] = self._X_used.T @ G
        return out

    def __repr__(self) -> str:
        return f"TrainingLoss({self.net!r}, k={self.X.shape[0]})"

    def __call__(self, theta: Tensor) -> Tensor:
        return self.net.loss(theta, self.X, self.T)

    def hessian_operator(self, theta: Tensor) -> Callable[[Tensor], Tensor]:
        """:math:`v \\mapsto \\nabla^2 L(\\theta)\\,v` for vectors ``v`` of shape ``(d,)``."""
        X, T, k, used = self._X_used, self.T, self.X.shape[0], self._used
        W1, b1, W2, b2 = self.net.unflatten(theta.detach())
        Z = torch.sigmoid(X @ W1[used] + b1)
        Y = torch.softmax(Z @ W2 + b2, dim=-1)
        S = Z * (1 - Z)
        G2 = (Y - T) / k
        D = G2 @ W2.T
        DZ = D * (1 - 2 * Z)  # the factor of dZ in dG1, the same for every v

        def product(v: Tensor) -> Tensor:
            V1, c1, V2, c2 = self.net.unflatten(v)
            dZ = S * (X @ V1[used] + c1)
            dA2 = dZ @ W2 + Z @ V2 + c2
            dG2 = Y * (dA2 - (Y * dA2).sum(-1, keepdim=True)) / k
            dG1 = (dG2 @ W2.T + G2 @ V2.T) * S + DZ * dZ
            return torch.cat([self._times_data_T(dG1).flatten(), dG1.sum(0), (dZ.T @ G2 + Z.T @ dG2).flatten(),
                              dG2.sum(0)])

        return product

    def gradient_and_products(self, theta: Tensor, V: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""The loss, its gradient and Hessian-vector products at one point, in one pass.

        The same formulas as :meth:`hessian_operator`, with the products with the data
        matrix of the gradient and of all ``k`` directions gathered into one matrix product
        each way, :math:`X[W_1, V_1^{(1)}, \dots, V_1^{(k)}]` and
        :math:`X^\top[G_1, \dot G_1^{(1)}, \dots, \dot G_1^{(k)}]`: a wider product costs
        less per column, so a gradient with two directions costs well under three gradients.

        Parameters
        ----------
        theta
            The point, shape ``(d,)``.
        V
            Directions as the columns of ``(d, k)``.

        Returns
        -------
        ``(L, g, HV)``: the loss (a scalar tensor), :math:`\nabla L(\theta)` of shape ``(d,)``
        and :math:`\nabla^2L(\theta)V` of shape ``(d, k)``.
        """
        d = self.net.num_params
        if theta.shape != (d,) or V.ndim != 2 or V.shape[0] != d:
            raise ValueError(f"theta must have shape ({d},) and V shape ({d}, k); got {tuple(theta.shape)} and "
                             f"{tuple(V.shape)}")
        X, T, k, used = self._X_used, self.T, self.X.shape[0], self._used
        n0, n1, n2 = self.net.sizes
        W1, b1, W2, b2 = self.net.unflatten(theta)
        parts = [self.net.unflatten(v) for v in V.T]
        A = X @ torch.cat([W1, *[p[0] for p in parts]], dim=1)[used]  # one product for all directions
        Z = torch.sigmoid(A[:, :n1] + b1)
        Y = torch.softmax(Z @ W2 + b2, dim=-1)
        S = Z * (1 - Z)
        G2 = (Y - T) / k
        D = G2 @ W2.T
        G1s, tails = [D * S], []
        DZ = D * (1 - 2 * Z) if parts else None  # the factor of dZ in dG1, the same for every direction
        for j, (_, c1, V2, c2) in enumerate(parts):
            dZ = S * (A[:, n1 * (j + 1) : n1 * (j + 2)] + c1)
            dA2 = dZ @ W2 + Z @ V2 + c2
            dG2 = Y * (dA2 - (Y * dA2).sum(-1, keepdim=True)) / k
            G1s.append((dG2 @ W2.T + G2 @ V2.T) * S + DZ * dZ)
            tails.append(((dZ.T @ G2 + Z.T @ dG2).flatten(), dG2.sum(0)))
        B = self._times_data_T(torch.cat(G1s, dim=1))  # and one back
        columns = [torch.cat([B[:, n1 * i : n1 * (i + 1)].flatten(), G.sum(0), *rest])
                   for i, (G, rest) in enumerate(zip(G1s, [((Z.T @ G2).flatten(), G2.sum(0)), *tails]))]
        value = -(T * torch.log(Y)).sum(-1).mean()
        return value, columns[0], torch.stack(columns[1:], dim=1) if parts else V.new_zeros(d, 0)


@dataclass(frozen=True)
class FullBatchRun:
    r"""What :func:`train_full_batch` recorded, every ``record_every`` steps (and at the start).

    See Also
    --------
    chaosgrad.mlp.MinibatchRun : the record of minibatch SGD on deep networks (a loss per step
        and the step of divergence, no Hessian).

    Attributes
    ----------
    steps : Tensor, shape ``(r,)``
        The step numbers recorded (0 is the initial point).
    loss : Tensor, shape ``(r,)``
        Training loss.
    loss_per_step : Tensor, shape ``(steps + 1,)``
        Training loss at every step (it comes with each gradient at no extra cost), to see
        the non-monotone descent that ``loss`` samples too coarsely.
    train_accuracy, test_accuracy : Tensor, shape ``(r,)``
        Fraction of correctly classified training and held-out samples (``test_accuracy``
        is ``None`` without held-out data).
    sharpness : Tensor, shape ``(r,)`` or None
        Largest Hessian eigenvalue of the training loss (with ``with_sharpness=True``).
    theta : Tensor, shape ``(d,)``
        The final parameters.
    parameters : Tensor, shape ``(r, d)`` or None
        The parameters at every record (with ``keep_parameters=True``).
    """

    steps: Tensor
    loss: Tensor
    loss_per_step: Tensor
    train_accuracy: Tensor
    test_accuracy: Tensor | None
    sharpness: Tensor | None
    theta: Tensor
    parameters: Tensor | None = None

    def edge_of_stability(self, lr: float, band: float = 0.05) -> tuple[int, int] | None:
        r"""The longest stretch of consecutive records with :math:`|\alpha S - 2| \le` ``band``:
        where gradient descent hovers at the edge of stability :cite:`cohen2021gradient`.

        Returns
        -------
        ``(first, last)``: the step numbers of its first and last record, or ``None`` if no
        record is in the band. Needs a history recorded ``with_sharpness``.
        """
        if self.sharpness is None:
            raise ValueError("this run recorded no sharpness; call train_full_batch with with_sharpness=True")
        inside = ((lr * self.sharpness - 2).abs() <= band).tolist()
        best, start = None, None
        for i, flag in enumerate([*inside, False]):
            if flag and start is None:
                start = i
            elif not flag and start is not None:
                if best is None or i - start > best[1] - best[0] + 1:
                    best = (start, i - 1)
                start = None
        return None if best is None else (int(self.steps[best[0]]), int(self.steps[best[1]]))


def train_full_batch(net: SigmoidMLP, theta0: Tensor, X: Tensor, labels: Tensor, lr: float, steps: int,
                     record_every: int = 10, X_test: Tensor | None = None, labels_test: Tensor | None = None,
                     with_sharpness: bool = False, sharpness_tol: float = 1e-8, keep_parameters: bool = False,
                     progress: bool | None = None) -> FullBatchRun:
    r"""Full-batch gradient descent :math:`\theta \leftarrow \theta - \alpha\nabla L(\theta)` on the
    cross-entropy of ``net``, recording loss, accuracies and (optionally) the sharpness.

    Every step uses the gradient of the loss on the whole training set, so the run is the
    deterministic orbit of the map :class:`GradientDescent` from ``theta0`` (chapter 6): one
    network with flat parameters, no minibatches, no clipping, and the Hessian's top
    eigenvalue recorded along the way to compare with the stability limit :math:`2/\alpha`.

    Parameters
    ----------
    net, theta0
        The network and its initial flat parameters.
    X, labels
        Training inputs ``(k, n_0)`` and integer labels ``(k,)`` in ``0..n_2-1``.
    lr, steps
        Learning rate :math:`\alpha > 0` and number of steps.
    record_every
        Record every this many steps (and at step 0).
    X_test, labels_test
        Optional held-out data.
    with_sharpness
        Also record the sharpness :func:`~chaosgrad.hessian.sharpness` of the training loss: one
        Lanczos run per record (:func:`~chaosgrad.hessian.hessian_eigenvalues`), started from the
        previous record's top eigenvector.
    sharpness_tol
        Its relative residual tolerance.
    keep_parameters
        Also keep the parameters at every record (``r`` vectors of length ``d``).
    progress
        Progress bar; ``None`` shows one only in an interactive terminal.

    Returns
    -------
    FullBatchRun

    Raises
    ------
    ValueError
        For labels outside ``0..n_2-1`` or of the wrong length.
    NonFiniteStateError
        If the parameters become inf or NaN (the message names the step).

    See Also
    --------
    chaosgrad.mlp.train_minibatch : minibatch SGD (optionally clipped, with weight decay) on an
        ensemble of deep :class:`~chaosgrad.mlp.DeepMLP` modules, chapter 3's trainer: a loss per
        step and the step of divergence, no Hessian.
    derivatives_through_training : the same orbit differentiated with respect to :math:`\alpha`
        and :math:`\theta_0`.
    """
    check_whole(steps, "steps", 1)
    check_whole(record_every, "record_every", 1)
    classes = net.sizes[2]

    def targets(data: Tensor, y: Tensor) -> Tensor:
        if y.shape != data.shape[:1] or bool((y < 0).any()) or bool((y >= classes).any()):
            raise ValueError(f"labels must be {data.shape[0]} integers in 0..{classes - 1}; got shape "
                             f"{tuple(y.shape)}, range {int(y.min())}..{int(y.max())}")
        return torch.nn.functional.one_hot(y.long(), classes).to(data.dtype)

    T = targets(X, labels)
    if X_test is not None:
        targets(X_test, labels_test)  # checks the held-out labels
    loss = net.objective(X, T)
    lr = check_positive(lr, "lr")
    gradient_and_loss = torch.func.grad_and_value(loss)

    def accuracy(th: Tensor, data: Tensor, y: Tensor) -> float:
        return float((net.probabilities(th, data).argmax(-1) == y).double().mean())

    theta, rows, top = theta0.detach(), [], None

    def current_sharpness() -> float:
        nonlocal top  # each Lanczos run starts from the previous top eigenvector
        if not with_sharpness:
            return float("nan")
        value, top = hessian_eigenvalues(loss, theta, k=1, tol=sharpness_tol, max_iter=100, start=top,
                                         return_vectors=True)
        top = top[:, 0]
        return float(value[0])

    losses, kept = [], []
    for n in progress_range(int(steps) + 1, progress, desc="train"):
        if n < steps:  # the step of GradientDescent, with the loss that comes with the gradient
            gradient, value = gradient_and_loss(theta)
            losses.append(float(value))
        else:
            losses.append(float(loss(theta)))
        if n % record_every == 0 or n == steps:
            rows.append((n, losses[-1], accuracy(theta, X, labels),
                         accuracy(theta, X_test, labels_test) if X_test is not None else float("nan"),
                         current_sharpness()))
            if keep_parameters:
                kept.append(theta)
        if n < steps:
            theta = check_finite(theta - lr * gradient, "parameters", step=n + 1)
    table = torch.tensor(rows, dtype=torch.float64)
    return FullBatchRun(table[:, 0].long(), table[:, 1], torch.tensor(losses, dtype=torch.float64), table[:, 2],
                        table[:, 3] if X_test is not None else None,
                        table[:, 4] if with_sharpness else None, theta,
                        torch.stack(kept) if keep_parameters else None)


def _run_gradient_descent(loss: TrainingLoss, theta: Tensor, lr: float, steps: int,
                          V: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``steps`` steps of gradient descent on a :class:`TrainingLoss`; the loss at every step."""
    losses = []
    empty = theta.new_zeros(theta.shape[0], 0) if V is None else V
    for n in range(steps + 1):
        value, gradient, _ = loss.gradient_and_products(theta, empty)
        losses.append(value)
        if n < steps:
            theta = check_finite(theta - lr * gradient, "parameters", step=n + 1)
    return torch.stack(losses), theta


def lr_finite_difference(loss: TrainingLoss, theta0: Tensor, lr: float, steps: int,
                         h: float | list[float] | tuple[float, ...]) -> Tensor:
    r"""Central differences :math:`[L(\theta_t(\alpha + h)) - L(\theta_t(\alpha - h))]/2h` of the
    loss after :math:`t` steps of gradient descent from :math:`\theta_0`, for every
    :math:`t \le` ``steps`` at once: the check of
    :attr:`TrainingDerivatives.lr_derivative`.

    Their error is :math:`O(h^2)` from truncation plus about :math:`\epsilon|L|/h` from
    rounding, both amplified where the derivative grows: several ``h`` show the plateau
    where the two are small.

    Parameters
    ----------
    loss
        A :class:`TrainingLoss`.
    theta0, lr, steps
        Initial parameters ``(d,)``, learning rate :math:`\alpha > 0`, number of steps.
    h
        One step size or several, each in ``(0, lr)``.

    Returns
    -------
    Tensor of shape ``(len(h), steps + 1)`` (``(steps + 1,)`` for one ``h``).

    See Also
    --------
    derivatives_through_training : the same derivative by forward mode.
    """
    if not isinstance(loss, TrainingLoss):
        raise TypeError(f"loss must be a TrainingLoss (SigmoidMLP.objective); got {type(loss).__name__}")
    lr = check_positive(lr, "lr")
    check_whole(steps, "steps", 1)
    sizes = [h] if isinstance(h, (int, float)) else list(h)
    for size in sizes:
        if not 0 < size < lr:
            raise ValueError(f"each step size h must lie in (0, lr = {lr:g}); got h = {size}")
    rows = [(_run_gradient_descent(loss, theta0, lr + size, int(steps))[0]
             - _run_gradient_descent(loss, theta0, lr - size, int(steps))[0]) / (2 * size) for size in sizes]
    return rows[0] if isinstance(h, (int, float)) else torch.stack(rows)


@dataclass(frozen=True)
class TrainingDerivatives:
    r"""Derivatives through a run of gradient descent (:func:`derivatives_through_training`).

    Attributes
    ----------
    lr : float
        The learning rate :math:`\alpha`.
    loss : Tensor, shape ``(steps + 1,)``
        :math:`L(\theta_t)`.
    lr_derivative : Tensor, shape ``(steps + 1,)``
        :math:`dL(\theta_t)/d\alpha = \nabla L(\theta_t)\cdot w_t` with
        :math:`w_t = d\theta_t/d\alpha`.
    lr_tangent_norm : Tensor, shape ``(steps + 1,)``
        :math:`\|d\theta_t/d\alpha\|_2`.
    log_growth : Tensor, shape ``(steps + 1,)``
        :math:`\ln\|(d\theta_t/d\theta_0)\,v\|_2` for the unit direction ``direction``: the
        Jacobian-vector product of the :math:`t`-fold training map.
    direction : Tensor, shape ``(d,)``
        :math:`v`.
    ends_steps : Tensor, shape ``(r,)``
        The steps at which the Hessian's ends were computed.
    ends : Tensor, shape ``(r, 2)``
        :math:`\lambda_{\max}` and :math:`\lambda_{\min}` of :math:`\nabla^2L(\theta_t)` there.
    theta : Tensor, shape ``(d,)``
        :math:`\theta_T`.
    """

    lr: float
    loss: Tensor
    lr_derivative: Tensor
    lr_tangent_norm: Tensor
    log_growth: Tensor
    direction: Tensor
    ends_steps: Tensor
    ends: Tensor
    theta: Tensor

    def finite_time_exponent(self, start: int, stop: int) -> float:
        r"""The finite-time exponent of the tangent over steps ``start`` to ``stop``:
        :math:`[\ln\|v_{\mathrm{stop}}\| - \ln\|v_{\mathrm{start}}\|]/(\mathrm{stop} - \mathrm{start})`."""
        if not 0 <= start < stop < len(self.log_growth):
            raise ValueError(f"need 0 <= start < stop <= {len(self.log_growth) - 1}; got {start}, {stop}")
        return float(self.log_growth[stop] - self.log_growth[start]) / (stop - start)

    def local_rates(self, end: str = "smallest") -> Tensor:
        r""":math:`\ln|1 - \alpha\lambda|` at each of :attr:`ends_steps` for one end
        (``"largest"`` or ``"smallest"``): the growth per step along that end's eigenvector
        while the Hessian stays as it is."""
        if end not in ("largest", "smallest"):
            raise ValueError(f"end must be 'largest' or 'smallest'; got {end!r}")
        return torch.log((1 - self.lr * self.ends[:, 0 if end == "largest" else 1]).abs())

    def integrated_rate(self, start: int, stop: int, end: str = "smallest") -> float:
        r""":math:`\sum_{t=\mathrm{start}}^{\mathrm{stop}-1}\ln|1 - \alpha\lambda(t)|` along one end,
        with :math:`\lambda(t)` interpolated between the records as a power law (linearly in
        :math:`\ln|\lambda|` against :math:`\ln t`; records at :math:`t \ge 1` of one sign):
        the growth along that end if the tangent followed its eigenvector.

        Raises
        ------
        ValueError
            If the records do not bracket ``start..stop`` or change sign there.
        """
        t = self.ends_steps.double()
        lam = self.ends[:, 0 if end == "largest" else 1]
        inside = (t >= start) & (t <= stop)
        if start < 1 or not bool((t == start).any()) or not bool((t == stop).any()):
            raise ValueError(f"start and stop must be recorded steps >= 1; recorded: {self.ends_steps.tolist()}")
        if not (bool((lam[inside] < 0).all()) or bool((lam[inside] > 0).all())):
            raise ValueError(f"the {end} eigenvalue changes sign between steps {start} and {stop}")
        steps = torch.arange(start, stop, dtype=torch.float64)
        k = torch.searchsorted(t, steps, right=True).clamp(1, len(t) - 1)
        x0, x1 = t[k - 1].log(), t[k].log()
        y0, y1 = lam[k - 1].abs().log(), lam[k].abs().log()
        interpolated = lam.sign()[k] * torch.exp(y0 + (y1 - y0) * (steps.log() - x0) / (x1 - x0))
        return float(torch.log((1 - self.lr * interpolated).abs()).sum())


def derivatives_through_training(loss: TrainingLoss, theta0: Tensor, lr: float, steps: int,
                                 direction: Tensor | None = None, ends_at: tuple[int, ...] = (),
                                 tol: float = 1e-4) -> TrainingDerivatives:
    r"""Forward-mode derivatives of a run of gradient descent with respect to the learning rate
    and to the initial parameters, and the Hessian's ends along it.

    Differentiating :math:`\theta_{t+1} = \theta_t - \alpha\nabla L(\theta_t)` gives two tangent
    recursions, each one Hessian-vector product per step
    (:meth:`TrainingLoss.gradient_and_products`, shared with the gradient):

    .. math::
        w_{t+1} = (I - \alpha H_t)\,w_t - \nabla L(\theta_t),\ w_0 = 0,\qquad
        v_{t+1} = (I - \alpha H_t)\,v_t,

    with :math:`H_t = \nabla^2L(\theta_t)`, so that :math:`w_t = d\theta_t/d\alpha`,
    :math:`dL(\theta_t)/d\alpha = \nabla L(\theta_t)\cdot w_t`, and
    :math:`v_t = (d\theta_t/d\theta_0)\,v_0` is the Jacobian-vector product of the
    :math:`t`-fold training map (renormalised every step, its log-norm accumulated).
    :math:`\frac1t\ln\|v_t\|` is a finite-time exponent, a lower bound of
    :math:`\frac1t\ln\|d\theta_t/d\theta_0\|_2`; training has no invariant measure, so no
    limit :math:`t \to \infty` of it is a Lyapunov exponent of a stationary state.

    Parameters
    ----------
    loss, theta0, lr, steps
        As :func:`lr_finite_difference`: a :class:`TrainingLoss`, the initial parameters,
        the learning rate and the number of steps.
    direction
        :math:`v_0`; by default the eigenvector of :math:`H_0` with the largest
        :math:`|1 - \alpha\lambda|`, the direction the first step stretches most (the
        top singular vector of :math:`Dg(\theta_0)`), from both ends by Lanczos.
    ends_at
        Steps at which to compute :math:`\lambda_{\max}` and :math:`\lambda_{\min}` by
        :func:`~chaosgrad.hessian.hessian_eigenvalues` (each started from the previous record's eigenvector).
    tol
        Their Lanczos tolerance.

    Returns
    -------
    TrainingDerivatives

    Raises
    ------
    NonFiniteStateError
        If the parameters or tangents overflow (the message names the step).

    See Also
    --------
    lr_finite_difference : central differences of the same :math:`dL/d\alpha`.
    hessian_ends : the two ends' growth over a short run.
    """
    if not isinstance(loss, TrainingLoss):
        raise TypeError(f"loss must be a TrainingLoss (SigmoidMLP.objective); got {type(loss).__name__}")
    lr = check_positive(lr, "lr")
    check_whole(steps, "steps", 1)
    d = theta0.shape[0]
    wanted = sorted({int(check_whole(t, "ends_at step", 0)) for t in ends_at})
    if wanted and wanted[-1] > steps:
        raise ValueError(f"ends_at steps must be at most steps = {steps}; got {wanted[-1]}")
    starts, ends, theta = {}, [], theta0.detach()

    def record() -> None:
        pair = []
        for which in ("largest", "smallest"):
            value, vector = hessian_eigenvalues(loss, theta, k=1, which=which, tol=tol, max_iter=300,
                                                start=starts.get(which), return_vectors=True)
            starts[which] = vector[:, 0]
            pair.append(value[0])
        ends.append(torch.stack(pair))

    if direction is None:
        record()
        top = int((1 - lr * ends[-1]).abs().argmax())
        direction = starts["largest" if top == 0 else "smallest"]
    direction = check_finite(torch.as_tensor(direction, dtype=theta0.dtype), "direction")
    if direction.shape != (d,) or not bool(direction.any()):
        raise ValueError(f"direction must be a nonzero vector of shape ({d},); got shape {tuple(direction.shape)}")
    done = {0} if ends and wanted and wanted[0] == 0 else set()  # step 0's ends, computed above
    ends = ends if done else []
    v = direction / torch.linalg.vector_norm(direction)
    w, log_norm = torch.zeros_like(v), 0.0
    losses, derivative, norms, logs = [], [], [], []
    for n in range(int(steps) + 1):
        if n in wanted and n not in done:
            record()
        value, gradient, HV = loss.gradient_and_products(theta, torch.stack([w, v], dim=1))
        losses.append(value)
        derivative.append(torch.dot(gradient, w))
        norms.append(torch.linalg.vector_norm(w))
        logs.append(log_norm)
        if n == steps:
            break
        theta = check_finite(theta - lr * gradient, "parameters", step=n + 1)
        w = check_finite(w - lr * HV[:, 0] - gradient, "learning-rate tangent", step=n + 1)
        v = v - lr * HV[:, 1]
        size = torch.linalg.vector_norm(v)
        log_norm += float(torch.log(size))
        v = check_finite(v / size, "tangent", step=n + 1)
    return TrainingDerivatives(lr, torch.stack(losses), torch.stack(derivative), torch.stack(norms),
                               torch.tensor(logs, dtype=theta0.dtype), direction / torch.linalg.vector_norm(direction),
                               torch.tensor(wanted, dtype=torch.long),
                               torch.stack(ends) if ends else theta0.new_zeros(0, 2), theta)
