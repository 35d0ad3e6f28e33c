r"""Deep multilayer perceptrons for measuring the traditional remedies of exploding and
vanishing gradients: initialisations, clipping, weight decay, ReLU, batch normalisation and
residual connections, on one synthetic task with one training budget.

The network is :math:`h_0 = W_{\text{in}} x`, then for :math:`l = 1, \dots, L`

.. math::  h_l = h_{l-1} + \phi(\mathrm{BN}(W_l h_{l-1} + b_l)) \quad\text{(residual)}, \qquad
           h_l = \phi(\mathrm{BN}(W_l h_{l-1} + b_l)) \quad\text{(plain)},

with batch normalisation BN optional, and logits :math:`W_{\text{out}} h_L`. Hidden weights
are initialised as ``"normal"`` (:math:`N(0, 1)` entries), ``"xavier"`` (Glorot:
:math:`N(0, 2/(n_{\text{in}} + n_{\text{out}}))`), ``"he"`` (:math:`N(0, 2/n_{\text{in}})`)
or ``"orthogonal"``; biases start at zero.

References
----------
X. Glorot, Y. Bengio, AISTATS (2010); K. He et al., ICCV (2015) and CVPR (2016);
S. Ioffe, C. Szegedy, ICML (2015); R. Pascanu, T. Mikolov, Y. Bengio, ICML (2013).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .activations import activation as _activation

__all__ = ["INITS", "DeepMLP", "init_variance", "TrainingRun", "half_precision_gradients", "layer_gradient_norms", "teacher_task", "train"]

#: initialisation name -> its hidden-weight distribution
INITS: dict[str, str] = {
    "normal": "N(0, 1) entries",
    "xavier": "N(0, 2/(fan_in + fan_out))",
    "he": "N(0, 2/fan_in)",
    "orthogonal": "orthogonal, gain 1",
}


def init_variance(init: str, width: int) -> tuple[float, str]:
    """``(sigma_w2, weights)`` of a square hidden layer of ``width`` units under ``init``, in the
    parametrisation of :class:`chaosgrad.networks.RandomNetwork` (W_ij ~ N(0, sigma_w2/width))."""
    table = {"normal": (float(width), "gaussian"), "xavier": (1.0, "gaussian"), "he": (2.0, "gaussian"), "orthogonal": (1.0, "orthogonal")}
    if init not in table:
        raise ValueError(f"init must be one of {sorted(table)}; got {init!r}")
    return table[init]


class DeepMLP(nn.Module):
    """A deep MLP with ``depth`` hidden layers of ``width`` units (see the module docstring)."""

    def __init__(
        self,
        in_dim: int,
        width: int,
        depth: int,
        classes: int,
        activation: str = "tanh",
        init: str = "xavier",
        batchnorm: bool = False,
        residual: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)}; got {init!r}")
        self.phi, _ = _activation(activation)
        self.residual = residual
        g = torch.Generator().manual_seed(seed)
        self.inp = nn.Linear(in_dim, width, dtype=torch.float64)
        self.hidden = nn.ModuleList(nn.Linear(width, width, dtype=torch.float64) for _ in range(depth))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(width, dtype=torch.float64) if batchnorm else nn.Identity() for _ in range(depth)
        )
        self.out = nn.Linear(width, classes, dtype=torch.float64)
        with torch.no_grad():
            for layer in [self.inp, *self.hidden, self.out]:
                fan_out, fan_in = layer.weight.shape
                w = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64)
                if init == "orthogonal":  # orthonormal rows or columns, whichever are fewer
                    tall = w if fan_out >= fan_in else w.T
                    q, r = torch.linalg.qr(tall)
                    q = q * torch.sign(torch.diagonal(r))
                    w = q if fan_out >= fan_in else q.T
                elif init == "xavier":
                    w = w * math.sqrt(2 / (fan_in + fan_out))
                elif init == "he":
                    w = w * math.sqrt(2 / fan_in)
                layer.weight.copy_(w)
                layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for layer, norm in zip(self.hidden, self.norms):
            z = self.phi(norm(layer(h)))
            h = h + z if self.residual else z
        return self.out(h)


def teacher_task(n: int, dim: int = 16, classes: int = 4, seed: int = 0, teacher: int = 0) -> tuple[Tensor, Tensor]:
    """A synthetic classification task: ``n`` Gaussian inputs (drawn from ``seed``) labelled by a
    random two-layer tanh network (drawn from ``teacher``); a test set is another ``seed``."""
    g = torch.Generator().manual_seed(teacher)
    W1 = torch.randn(dim, 32, generator=g, dtype=torch.float64) / math.sqrt(dim)
    W2 = torch.randn(32, classes, generator=g, dtype=torch.float64) / math.sqrt(32)
    X = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return X, (torch.tanh(2 * X @ W1) @ W2).argmax(-1)


def layer_gradient_norms(model: DeepMLP, X: Tensor, y: Tensor) -> Tensor:
    """Frobenius norms of the cross-entropy gradient for each hidden layer's weights, first to last."""
    model.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    return torch.stack([layer.weight.grad.norm() for layer in model.hidden])


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, restoring the thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class TrainingRun:
    """Losses of a training run; ``diverged_at`` is the first step whose loss was not finite."""

    losses: Tensor
    test_accuracy: float | None
    diverged_at: int | None


def train(
    model: DeepMLP,
    data: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    steps: int,
    lr: float,
    batch: int = 128,
    clip: float | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> TrainingRun:
    """Minibatch SGD on the cross-entropy, optionally with gradient-norm clipping and L2.

    Stops at the first non-finite loss and reports the step (``diverged_at``) instead of
    carrying NaNs; ``test_accuracy`` is then ``None``. Runs on one thread: parallel reductions
    round differently for different thread counts, and training an unstable network
    amplifies that difference into different losses.
    """
    X, y = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    with _one_thread():
        for step in range(steps):
            idx = torch.randint(0, len(X), (batch,), generator=g)
            model.train()
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            if not math.isfinite(loss.item()):
                return TrainingRun(torch.tensor(losses, dtype=torch.float64), None, step)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            accuracy = (model(test[0]).argmax(-1) == test[1]).double().mean().item()
    return TrainingRun(torch.tensor(losses, dtype=torch.float64), accuracy, None)


def half_precision_gradients(weights: list[Tensor], biases: list[Tensor], x: Tensor, activation: str) -> Tensor:
    r"""A real backward pass in float16 through :math:`x_{l+1} = \phi(W_l x_l + b_l)`.

    The loss is the sum of the last layer's outputs. Returns shape ``(L + 1, 3)``: for each
    layer's activations, the float64 gradient norm, and the fractions of float16 gradient
    entries that are ``inf``/NaN (overflow) and exactly zero (underflow).
    """
    phi, _ = _activation(activation)
    results = []
    for dtype in (torch.float64, torch.float16):
        h = x.detach().to(dtype).clone().requires_grad_(True)
        acts = [h]
        for W, b in zip(weights, biases):
            h = phi(h @ W.to(dtype).T + b.to(dtype))
            h.retain_grad()
            acts.append(h)
        h.sum().backward()
        results.append([a.grad for a in acts])
    exact, half = results
    return torch.tensor(
        [[e.norm().item(), (~torch.isfinite(g)).double().mean().item(), (g == 0).double().mean().item()] for e, g in zip(exact, half)]
    )
