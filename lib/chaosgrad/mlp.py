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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .activations import activation as _activation

__all__ = ["INITS", "DeepMLP", "MinibatchRun", "half_precision_gradients", "init_variance", "layer_gradient_norms",
           "teacher_task", "train_minibatch"]

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


@dataclass(frozen=True)
class MinibatchRun:
    """What :func:`train_minibatch` recorded for one member: the minibatch loss at every step,
    the held-out accuracy (``None`` if it diverged) and ``diverged_at``, the first step whose
    loss was not finite.

    See Also
    --------
    chaosgrad.training.FullBatchRun : the record of full-batch gradient descent on chapter 6's
        network (losses, accuracies and the sharpness every few steps).
    """

    losses: Tensor
    test_accuracy: float | None
    diverged_at: int | None


class _Stacked:
    """The weights of several :class:`DeepMLP` of one architecture, stacked along a leading
    ensemble axis, with the forward pass written out in batched products (``baddbmm``): one
    call per layer for all members instead of one per member."""

    def __init__(self, models: Sequence[DeepMLP]) -> None:
        def signature(m: DeepMLP) -> tuple:
            return m.residual, m.phi, [type(n) for n in m.norms], [(k, p.shape) for k, p in m.named_parameters()]

        if any(signature(m) != signature(models[0]) for m in models):
            raise ValueError("train_minibatch needs models of one architecture (sizes, activation, batchnorm, "
                             "residual): train different architectures in separate calls")
        first = models[0]
        self.models, self.phi, self.residual, self.depth = list(models), first.phi, first.residual, len(first.hidden)
        self.batchnorm = any(isinstance(n, nn.BatchNorm1d) for n in first.norms)
        params = [dict(m.named_parameters()) for m in models]  # once per model, not once per tensor
        buffers = [dict(m.named_buffers()) for m in models]
        self.params = {k: torch.stack([p[k].detach() for p in params]).requires_grad_(True) for k in params[0]}
        self.buffers = {k: torch.stack([b[k] for b in buffers]).clone() for k in buffers[0]}

    def _linear(self, h: Tensor, name: str) -> Tensor:
        return torch.baddbmm(self.params[f"{name}.bias"].unsqueeze(1), h, self.params[f"{name}.weight"].mT)

    def _batchnorm(self, z: Tensor, layer: int, training: bool) -> Tensor:
        """nn.BatchNorm1d (eps 1e-5, momentum 0.1): batch statistics with the biased variance in
        training, where the running variance is updated with the unbiased one."""
        mean, var = self.buffers[f"norms.{layer}.running_mean"], self.buffers[f"norms.{layer}.running_var"]
        if training:
            mu, v = z.mean(1), z.var(1, correction=0)
            with torch.no_grad():
                n = z.shape[1]
                mean.mul_(0.9).add_(0.1 * mu)
                var.mul_(0.9).add_(0.1 * v * n / (n - 1))
                self.buffers[f"norms.{layer}.num_batches_tracked"].add_(1)
        else:
            mu, v = mean, var
        gamma, beta = self.params[f"norms.{layer}.weight"], self.params[f"norms.{layer}.bias"]
        return (z - mu.unsqueeze(1)) / torch.sqrt(v.unsqueeze(1) + 1e-5) * gamma.unsqueeze(1) + beta.unsqueeze(1)

    def forward(self, x: Tensor, training: bool) -> Tensor:
        """Logits of every member, shape ``(S, batch, classes)``, for inputs ``(S, batch, in_dim)``."""
        h = self._linear(x, "inp")
        for layer in range(self.depth):
            z = self._linear(h, f"hidden.{layer}")
            z = self.phi(self._batchnorm(z, layer, training) if self.batchnorm else z)
            h = h + z if self.residual else z
        return self._linear(h, "out")

    def write_back(self) -> None:
        """Copy the trained weights and running statistics into the member modules."""
        with torch.no_grad():
            for i, m in enumerate(self.models):
                for k, p in m.named_parameters():
                    p.copy_(self.params[k][i])
                for k, b in m.named_buffers():
                    b.copy_(self.buffers[k][i])


def train_minibatch(
    model: DeepMLP | Sequence[DeepMLP],
    data: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    steps: int,
    lr: float,
    batch: int = 128,
    clip: float | None = None,
    weight_decay: float = 0.0,
    seed: int | Sequence[int] = 0,
) -> MinibatchRun | list[MinibatchRun]:
    """Minibatch SGD on the cross-entropy, optionally with gradient-norm clipping and L2.

    ``model`` is one :class:`DeepMLP` or a list of them with one architecture (an ensemble,
    e.g. several initialisation seeds), trained together in batched products, each member on
    its own minibatches (drawn from ``seed``: one per member, or an int s for s, s + 1, ...). The
    update is that of ``torch.optim.SGD`` with ``weight_decay`` and, with ``clip``, of
    ``clip_grad_norm_`` applied to each member separately. A member stops at its first
    non-finite loss and reports the step (``diverged_at``, ``test_accuracy`` ``None``)
    instead of carrying NaNs; the others go on. The trained weights are written back into
    the modules.

    Training an unstable network is itself chaotic: the last bits of a matrix product (which
    differ between CPUs and thread counts) grow into different losses, so one run is one
    sample; compare configurations by the mean and standard error over several seeds.

    Returns one :class:`MinibatchRun`, or a list of them for a list of models.

    See Also
    --------
    chaosgrad.training.train_full_batch : full-batch gradient descent on chapter 6's one-hidden-layer
        network with flat parameters, the deterministic orbit of a map, recording the sharpness.
    """
    single = isinstance(model, DeepMLP)
    models = [model] if single else list(model)
    if single:
        seeds = [seed]
    elif isinstance(seed, int):  # the default 0: seeds 0, 1, ... for the members
        seeds = [seed + i for i in range(len(models))]
    else:
        seeds = list(seed)
    if len(seeds) != len(models):
        raise ValueError(f"train_minibatch needs one seed per model; got {len(seeds)} seeds for {len(models)} models")
    X, y = data
    net = _Stacked(models)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    S = len(models)
    losses = torch.full((S, steps), math.nan, dtype=torch.float64)
    diverged: list[int | None] = [None] * S
    alive = torch.ones(S, dtype=torch.bool)
    for step in range(steps):
        idx = torch.stack([torch.randint(0, len(X), (batch,), generator=g) for g in gens])
        logits = net.forward(X[idx], training=True)
        per_member = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1),
                                                 reduction="none").reshape(S, batch).mean(1)
        for i in torch.nonzero(alive & ~torch.isfinite(per_member)).flatten().tolist():
            alive[i], diverged[i] = False, step
        if not alive.any():
            break
        losses[alive, step] = per_member[alive].detach()
        params = list(net.params.values())
        grads = torch.autograd.grad(per_member[alive].sum(), params)
        with torch.no_grad():
            if clip is not None:  # clip_grad_norm_ per member: scale by clip / (norm + 1e-6), at most 1
                norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads))
                grads = [g * torch.clamp(clip / (norm + 1e-6), max=1.0).reshape(-1, *[1] * (g.dim() - 1)) for g in grads]
            everyone = bool(alive.all())
            for p, g in zip(params, grads):
                update = g.add(p, alpha=weight_decay) if weight_decay else g
                if everyone:
                    p.sub_(update, alpha=lr)
                else:
                    p[alive] -= lr * update[alive]
    net.write_back()
    with torch.no_grad():
        predictions = net.forward(test[0].expand(S, *test[0].shape), training=False).argmax(-1)
    runs = [MinibatchRun(losses[i, : diverged[i] if diverged[i] is not None else steps].clone(),
                         None if diverged[i] is not None else (predictions[i] == test[1]).double().mean().item(),
                         diverged[i]) for i in range(S)]
    return runs[0] if single else runs


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
