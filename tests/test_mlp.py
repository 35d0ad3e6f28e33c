"""Deep MLPs for the remedies of chapter 3: initialisations, gradients, training, float16."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from chaosgrad.mlp import (DeepMLP, half_precision_gradients, init_variance, layer_gradient_norms, teacher_task,
                          train_minibatch)

F64 = torch.float64


@pytest.mark.parametrize("init, variance", [("normal", 1.0), ("xavier", 1 / 200), ("he", 2 / 200)])
def test_initial_weight_variances(init, variance):
    model = DeepMLP(16, 200, 3, 4, init=init, seed=1)
    w = model.hidden[1].weight
    # 40,000 entries: the sample variance is within 2% (about 3 standard errors)
    assert w.var().item() == pytest.approx(variance, rel=0.02)
    assert (model.hidden[1].bias == 0).all()
    W = DeepMLP(16, 50, 2, 4, init="orthogonal").hidden[0].weight
    torch.testing.assert_close(W @ W.T, torch.eye(50, dtype=F64), rtol=0, atol=1e-12)
    assert init_variance(init, 200)[0] * (1 / 200) == pytest.approx(variance)


def test_layer_gradient_norms_match_autograd():
    X, y = teacher_task(64, seed=1)
    model = DeepMLP(16, 8, 4, 4, activation="tanh", init="xavier")
    norms = layer_gradient_norms(model, X, y)
    loss = torch.nn.functional.cross_entropy(model(X), y)
    grads = torch.autograd.grad(loss, [layer.weight for layer in model.hidden])
    torch.testing.assert_close(norms, torch.stack([g.norm() for g in grads]))


def test_teacher_task_shares_the_teacher_between_train_and_test():
    (X1, y1), (X2, _) = teacher_task(500, seed=0), teacher_task(500, seed=1)
    assert not torch.equal(X1, X2)
    assert 0.1 < (y1 == 0).double().mean() < 0.5  # four classes, none empty or dominant
    _, ya = teacher_task(1000, seed=0)
    assert torch.equal(ya[:500], y1)  # the labels do not depend on n


def test_training_learns_and_reports_divergence():
    data, test = teacher_task(2000, seed=0), teacher_task(1000, seed=1)
    run = train_minibatch(DeepMLP(16, 32, 2, 4, activation="tanh", init="xavier"), data, test, steps=300, lr=0.1)
    assert run.diverged_at is None and run.losses[-30:].mean() < 0.8 * math.log(4) and run.test_accuracy > 0.6
    bad = train_minibatch(DeepMLP(16, 32, 6, 4, activation="linear", init="normal"), data, test, steps=50, lr=1e6)
    assert bad.diverged_at is not None and bad.test_accuracy is None and len(bad.losses) == bad.diverged_at


def sgd_reference(model, data, test, steps, lr, batch=128, clip=None, weight_decay=0.0, seed=0):
    """The textbook loop: nn modules, torch.optim.SGD and clip_grad_norm_, one model at a time."""
    (X, y), g = data, torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        model.train()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        return torch.tensor(losses, dtype=F64), (model(test[0]).argmax(-1) == test[1]).double().mean().item()


@pytest.mark.parametrize("arch, opt", [
    (dict(activation="tanh", init="xavier"), {}),
    (dict(activation="relu", init="he", residual=True, batchnorm=True), dict(clip=1.0, weight_decay=1e-3)),
], ids=["plain", "residual-batchnorm-clip-l2"])
def test_ensemble_training_is_the_textbook_loop_for_each_member(arch, opt):
    data, test = teacher_task(1000, seed=0), teacher_task(500, seed=1)
    models = [DeepMLP(16, 16, 5, 4, seed=s, **arch) for s in range(3)]
    references = [sgd_reference(copy.deepcopy(m), data, test, 25, 0.05, seed=s, **opt) for s, m in enumerate(models)]
    runs = train_minibatch(models, data, test, steps=25, lr=0.05, **opt)
    for (losses, accuracy), run in zip(references, runs):
        torch.testing.assert_close(run.losses, losses, rtol=0, atol=1e-12)
        assert run.test_accuracy == accuracy
    # the trained weights (and running statistics) are written back into the modules
    again = sgd_reference(copy.deepcopy(models[0]), data, test, 0, 0.05)
    assert again[1] == runs[0].test_accuracy


def test_ensemble_members_diverge_separately_and_bad_ensembles_are_refused():
    data, test = teacher_task(500, seed=0), teacher_task(200, seed=1)
    tame, wild = DeepMLP(16, 8, 2, 4, init="xavier"), DeepMLP(16, 8, 2, 4, init="xavier", seed=1)
    with torch.no_grad():
        wild.out.weight.mul_(1e308)  # logits overflow to inf at the first step
    runs = train_minibatch([tame, wild], data, test, steps=20, lr=0.05)
    assert runs[0].diverged_at is None and len(runs[0].losses) == 20 and runs[0].test_accuracy is not None
    assert runs[1].diverged_at == 0 and runs[1].test_accuracy is None and len(runs[1].losses) == 0
    with pytest.raises(ValueError, match="one architecture"):
        train_minibatch([tame, DeepMLP(16, 8, 3, 4)], data, test, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="one seed per model; got 1 seeds for 2 models"):
        train_minibatch([tame, wild], data, test, steps=1, lr=0.1, seed=[3])


def test_half_precision_overflow_and_underflow():
    x = torch.ones(4, dtype=F64)
    big = [torch.eye(4, dtype=F64) * 8.0] * 8  # linear growth 8^8 = 1.7e7 > 65504
    stats = half_precision_gradients(big, [torch.zeros(4, dtype=F64)] * 8, x, "linear")
    assert stats[0, 0] == pytest.approx(2 * 8.0**8) and stats[0, 1] == 1.0 and stats[-1, 1] == 0.0
    small = [torch.eye(4, dtype=F64) / 16.0] * 8  # 16^-8 = 2.3e-10 < smallest float16 subnormal 6e-8
    stats = half_precision_gradients(small, [torch.zeros(4, dtype=F64)] * 8, x, "linear")
    assert stats[0, 2] == 1.0 and stats[-1, 2] == 0.0


def test_bad_init():
    with pytest.raises(ValueError, match=r"init must be one of \['he', 'normal', 'orthogonal', 'xavier'\]"):
        DeepMLP(4, 4, 1, 2, init="kaiming")
    with pytest.raises(ValueError, match="init must be one of"):
        init_variance("lecun", 4)
