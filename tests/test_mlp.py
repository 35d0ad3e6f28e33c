"""Deep MLPs for the remedies of chapter 3: initialisations, gradients, training, float16."""

from __future__ import annotations

import math

import pytest
import torch

from chaosgrad.mlp import DeepMLP, half_precision_gradients, init_variance, layer_gradient_norms, teacher_task, train

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
    run = train(DeepMLP(16, 32, 2, 4, activation="tanh", init="xavier"), data, test, steps=300, lr=0.1)
    assert run.diverged_at is None and run.losses[-30:].mean() < 0.8 * math.log(4) and run.test_accuracy > 0.6
    bad = train(DeepMLP(16, 32, 6, 4, activation="linear", init="normal"), data, test, steps=50, lr=1e6)
    assert bad.diverged_at is not None and bad.test_accuracy is None and len(bad.losses) == bad.diverged_at


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
