"""Learning a map from data (chaosgrad.learning): teacher forcing, one-step fits, fine-tuning.

TeacherForced's step and derivatives are affine in the model's, so they are checked exactly
against the formula and against torch.func on the forced step: 1e-12. Backpropagation through
it is checked against central differences along a random parameter direction (h = 1e-5 on a
10-step window of an O(1) map: truncation ~ h^2 = 1e-10, rounding ~ 1e-16/h = 1e-11 relative,
so 1e-6 leaves a wide margin and still fails for a wrong factor 1 - alpha). fine_tune's first
Adam step is recomputed independently (torch autograd through the run): Adam's first step is
lr * g / (|g| + eps) exactly, so 1e-12 absolute. Costs are counted, hence exact. The one-step
fit is deterministic given its seed; "reduces the loss by a large factor" is a property of
this seeded problem (a 300-fold reduction observed; 20-fold asserted).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import chaosgrad
from chaosgrad.climate import FourierStatistics, Observations, observe
from chaosgrad.derivatives import backprop_derivative
from chaosgrad.gradients import Cost, Line, average_gradient, random_directions
from chaosgrad.learning import (
    ESTIMATORS,
    FineTuning,
    TeacherForced,
    fine_tune,
    fine_tune_each,
    fit_one_step,
    growth_rate,
    one_step_loss,
    rollout_gradient_norms,
    rollout_starts,
)
from chaosgrad.systems import Affine, Noisy

F64 = torch.float64
EXACT = 1e-12


def small_model(seed: int = 0) -> chaosgrad.NeuralMap:
    return chaosgrad.NeuralMap(3, (5, 4), dt=0.1, seed=seed, output_gain=1.0)


def teacher_data(samples: int = 60, runs: int = 3, noise: float = 0.05) -> Observations:
    x0 = torch.randn(runs, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    return observe(small_model(seed=1), x0, samples, 1, noise, seed=1)


def forcing_data(steps: int = 10, runs: int = 4) -> torch.Tensor:
    return torch.randn(steps + 1, runs, 3, generator=torch.Generator().manual_seed(2), dtype=F64)


# -- TeacherForced ------------------------------------------------------------------------------
def test_forced_step_is_the_convex_combination():
    model, data = small_model(), forcing_data()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    forced = TeacherForced(model, data, 0.3)
    assert forced.params().keys() == model.params().keys() and forced.dim == 3
    for n in (0, 4, 9):
        torch.testing.assert_close(forced.step(x, n), 0.7 * model.step(x) + 0.3 * data[n + 1], rtol=0, atol=EXACT)
    assert torch.equal(TeacherForced(model, data, 0.0).step(x, 2), model.step(x))
    assert torch.equal(TeacherForced(model, data, 1.0).step(x, 2), data[3])
    schedule = torch.linspace(0, 1, 10, dtype=F64)
    scheduled = TeacherForced(model, data, schedule)
    for n in (0, 3, 9):
        a = float(schedule[n])
        torch.testing.assert_close(scheduled.step(x, n), (1 - a) * model.step(x) + a * data[n + 1], rtol=0, atol=EXACT)
    # one state (dim,) forced by a single run (steps + 1, dim)
    single = TeacherForced(model, data[:, 0], 0.5)
    torch.testing.assert_close(single.step(x[0], 1), 0.5 * model.step(x[0]) + 0.5 * data[2, 0], rtol=0, atol=EXACT)


def test_sparse_forcing_resets_to_the_data_every_few_steps():
    model, data = small_model(), forcing_data()
    forced = TeacherForced.sparse(model, data, every=3)
    expected = torch.tensor([0, 0, 1, 0, 0, 1, 0, 0, 1, 0], dtype=F64)  # alpha_n = 1 when n + 1 is a multiple of 3
    assert torch.equal(forced.alpha, expected)
    orbit = forced.trajectory(data[0], 10)
    for n in (3, 6, 9):
        assert torch.equal(orbit[n], data[n])
        torch.testing.assert_close(orbit[n + 1], model.step(data[n]), rtol=0, atol=EXACT)
    torch.testing.assert_close(orbit[2], model.step(model.step(data[0])), rtol=0, atol=EXACT)


def test_forced_derivatives_match_torch_func():
    model, data = small_model(), forcing_data()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, generator=g, dtype=F64)
    V = torch.randn(4, 3, 2, generator=g, dtype=F64)
    w = torch.randn(4, 3, generator=g, dtype=F64)
    n, a = 5, 0.35
    forced = TeacherForced(model, data, a)
    params = {k: p.detach() for k, p in model.params().items()}
    step = lambda p, y: (1 - a) * torch.func.functional_call(model, p, (y,)) + a * data[n + 1]  # noqa: E731
    close = dict(rtol=EXACT, atol=EXACT)
    jvp = torch.stack([torch.func.jvp(lambda y: step(params, y), (x,), (V[..., j],))[1] for j in range(2)], -1)
    torch.testing.assert_close(forced.jvp(x, V, n), jvp, **close)
    _, pull = torch.func.vjp(lambda y: step(params, y), x)
    vjp = torch.stack([pull(V[..., j])[0] for j in range(2)], -1)
    torch.testing.assert_close(forced.vjp(x, V, n), vjp, **close)
    _, pull = torch.func.vjp(lambda p: step(p, x), params)
    summed = pull(w)[0]
    got = forced.param_vjp(x, w, n, keep=0)
    for k in params:
        torch.testing.assert_close(got[k], summed[k], **close)
    per_member = forced.param_vjp(x, w, n)  # one gradient per member
    for i in range(4):
        _, pull = torch.func.vjp(lambda p: step(p, x)[i], params)
        for k, v in pull(w[i])[0].items():
            torch.testing.assert_close(per_member[k][i], v, **close)
    direction = random_directions(model, 1, seed=1)[0]
    param_jvp = torch.func.jvp(lambda p: step(p, x), (params,), (direction,))[1]
    torch.testing.assert_close(forced.param_jvp(x, direction, n), param_jvp, **close)
    # the fused adjoint step of backpropagation
    back, grads = forced._vjp_param_vjp(x, w, n, 0)
    torch.testing.assert_close(back, pull_state(step, params, x, w), **close)
    for k in params:
        torch.testing.assert_close(grads[k], summed[k], **close)


def pull_state(step, params, x, w):
    return torch.func.vjp(lambda y: step(params, y), x)[1](w)[0]


def test_forced_scalar_parameter_derivative_by_forward_mode():
    """The default forward-mode _step_param_jvp (kernel differentiation's) sees the model's parameter names."""
    model = Affine([[0.5, 0.1], [0.0, 0.3]], [1.0, 2.0], gamma=0.5)
    data = torch.randn(6, 4, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    forced = TeacherForced(model, data, 0.25)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    y, dfdg = forced._step_param_jvp(x, "gamma", 2)
    torch.testing.assert_close(y, forced.step(x, 2), rtol=0, atol=EXACT)
    torch.testing.assert_close(dfdg, 0.75 * model.b.expand(4, 2), rtol=0, atol=EXACT)
    torch.testing.assert_close(forced.param_jvp(x, {"gamma": 1.0}, 2), dfdg, rtol=0, atol=EXACT)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_backprop_through_forcing_matches_finite_differences(alpha):
    model, data = small_model(), forcing_data(steps=10)
    T = 10
    observable = lambda x: torch.sin(x).sum(-1) + 0.1 * (x**2).sum(-1)  # noqa: E731
    gradient = backprop_derivative(TeacherForced(model, data, alpha), data[0], T, observable, None)
    assert gradient.names == list(model.params())
    h = 1e-5
    for v in random_directions(model, 2, seed=3):
        def average(t: float) -> float:
            forced = TeacherForced(Line(model, v, t), data, alpha)
            return float(observable(forced.trajectory(data[0], T)[1:]).mean())

        fd = (average(h) - average(-h)) / (2 * h)
        along = gradient.along(v)
        assert along.value == pytest.approx(fd, rel=1e-6, abs=1e-10)
    # full forcing cuts every derivative: the gradient is that of the observable at the data alone (zero)
    with pytest.warns(chaosgrad.ConstantParameterWarning, match="TeacherForced.step does not depend on parameter"):
        full = backprop_derivative(TeacherForced(model, data, 1.0), data[0], T, observable, None)
    assert all(float(g.abs().max()) == 0.0 for g in full.value.values())


def test_teacher_forced_refuses_bad_arguments():
    model, data = small_model(), forcing_data()
    for alpha in (1.5, -0.1):
        with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
            TeacherForced(model, data, alpha)
    with pytest.raises(ValueError, match=r"data must have shape \(steps \+ 1, \.\.\., 3\) with steps >= 1; got shape"):
        TeacherForced(model, torch.zeros(11, 4, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match=r"data must have shape"):
        TeacherForced(model, data[:1], 0.5)
    with pytest.raises(ValueError, match=r"data must have shape"):
        TeacherForced(model, data[0, 0], 0.5)
    forced = TeacherForced(model, data, 0.5)
    for n in (10, -1):
        with pytest.raises(IndexError, match=f"step {n} is outside the forcing data's 10 steps"):
            forced.step(data[0], n)
    with pytest.raises(ValueError, match="every must be a whole number >= 1"):
        TeacherForced.sparse(model, data, 0)


# -- fit_one_step -------------------------------------------------------------------------------
def test_fit_one_step_learns_the_teacher():
    data = teacher_data(samples=200, runs=4, noise=1e-6)
    student = small_model(seed=2)
    before = one_step_loss(student, data)
    losses = fit_one_step(student, data, 300, lr=1e-2, batch=64, seed=0)
    assert losses.shape == (300,) and bool(torch.isfinite(losses).all())
    after = one_step_loss(student, data)
    assert after < before / 20, (before, after)  # 3e-3 -> 7e-6 observed
    assert all(not p.requires_grad for p in student.params().values())


def test_fit_one_step_first_loss_is_the_minibatch_loss_and_runs_are_reproducible():
    data = teacher_data()
    a, b = small_model(seed=2), small_model(seed=2)
    start = {k: p.clone() for k, p in a.params().items()}
    losses = fit_one_step(a, data, 5, lr=1e-3, batch=16, rollout=3, seed=7)
    assert bool(torch.isfinite(losses).all())
    fit_one_step(b, data, 5, lr=1e-3, batch=16, rollout=3, seed=7)
    for k in start:
        assert torch.equal(a.params()[k], b.params()[k]) and not torch.equal(a.params()[k], start[k])
    # recompute the first minibatch loss: the mean over K = 3 steps of the forecast error
    g = torch.Generator().manual_seed(7)
    y = data.noisy
    k = torch.randint(0, y.shape[0] - 3, (16,), generator=g)
    r = torch.randint(0, y.shape[1], (16,), generator=g)
    model, x, expected = small_model(seed=2), y[k, r], 0.0
    for j in range(1, 4):
        x = model.step(x)
        expected += float(((x - y[k + j, r]) ** 2).mean()) / 3
    assert float(losses[0]) == pytest.approx(expected, rel=EXACT)
    c = small_model(seed=2)
    fit_one_step(c, data, 5, lr=1e-3, batch=16, rollout=3, seed=8)
    assert not torch.equal(c.params()["W0"], a.params()["W0"])


def test_fit_one_step_refuses_bad_arguments():
    data, model = teacher_data(samples=5), small_model()
    with pytest.raises(ValueError, match="rollout = 6 needs runs longer than 6 samples; the data have 5"):
        fit_one_step(model, data, 1, rollout=6)
    with pytest.raises(ValueError, match="iterations must be a whole number >= 1; got iterations = 0"):
        fit_one_step(model, data, 0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        fit_one_step(model, data, 1, lr=0.0)
    with pytest.raises(ValueError, match="rollout must be a whole number >= 1"):
        fit_one_step(model, data, 1, rollout=0)


# -- fine_tune ----------------------------------------------------------------------------------
PATHS, STEPS = 8, 10
CASES = {
    "truncated": dict(truncate=5),
    "clipped": dict(clip_total=1.0),
    "backprop": {},
    "nilsas": dict(segment_steps=5, n_unstable=1),
    "kernel": dict(noise=0.3),
    "path-kernel": dict(noise=0.3, alpha=0.5),
    "teacher-forcing": dict(every=3),
}


def fine_tune_setup():
    data = teacher_data()
    train, _ = data.split(2)
    statistics = FourierStatistics(train, features=8, bandwidth=1.0, seed=0)
    x0 = data.clean[-1, :, :].repeat(3, 1)[:PATHS] + 0.01 * torch.arange(PATHS * 3, dtype=F64).reshape(PATHS, 3)
    return train, statistics, x0


def estimator_cost(method: str, options: dict, model, statistics, x0, train) -> Cost:
    """The cost of one gradient of the average by ``method`` on states shaped like x0: counts depend on shapes only."""
    psi = statistics.observable(statistics.means(x0))
    options = dict(options)
    if method == "teacher-forcing":
        window = train.noisy[: STEPS + 1, :1].expand(STEPS + 1, PATHS, 3)
        forced = TeacherForced.sparse(model, window, options["every"])
        return average_gradient(forced, window[0], STEPS, psi, "backprop").cost
    noise = options.pop("noise", None)
    mapped = Noisy(model, noise) if noise else model
    return average_gradient(mapped, x0, STEPS, psi, method, **options).cost


@pytest.mark.parametrize("method", sorted(CASES))
def test_fine_tune_runs_every_estimator_and_counts_its_cost(method):
    train, statistics, x0 = fine_tune_setup()
    model = small_model()
    reference = estimator_cost(method, CASES[method], copy.deepcopy(model), statistics, x0, train)
    start = {k: p.clone() for k, p in model.params().items()}
    options = dict(CASES[method], forcing=train) if method == "teacher-forcing" else CASES[method]
    result = fine_tune(model, statistics, x0, method, 2, STEPS, lr=1e-3, regulariser=train, batch=16, **options)
    assert isinstance(result, FineTuning) and result.method == method
    assert result.loss.shape == result.one_step.shape == (2,)
    assert bool(torch.isfinite(result.loss).all()) and bool((result.one_step > 0).all())
    # per iteration: the free run (paths x steps), the estimator's products, the regulariser's batch
    per_iteration = Cost(steps=PATHS * STEPS) + reference + Cost(steps=16, param_vjps=16)
    assert result.cost == per_iteration + per_iteration
    assert all(not torch.equal(p, start[k]) for k, p in model.params().items())


def test_fine_tune_first_adam_step_and_continuation_are_recomputed_exactly():
    train, statistics, x0 = fine_tune_setup()
    model, reference = small_model(), small_model()
    lr, weight, batch, seed = 1e-3, 0.7, 16, 3
    result = fine_tune(model, statistics, x0, "backprop", 2, STEPS, lr=lr, regulariser=train, weight=weight,
                       batch=batch, seed=seed)
    # iteration 0, recomputed with torch autograd on the reference model's parameters
    orbit = reference.trajectory(x0, STEPS)
    means = statistics.means(orbit[1:])
    assert float(result.loss[0]) == pytest.approx(statistics.loss(means), rel=EXACT)
    c = 2.0 * (means - statistics.target) / statistics.count
    params = {k: p.detach().clone().requires_grad_(True) for k, p in reference.params().items()}
    x, average = orbit[-1], 0.0
    for _ in range(STEPS):
        x = torch.func.functional_call(reference, params, (x,))
        average = average + (statistics.features(x) @ c).mean() / STEPS
    gradient = torch.autograd.grad(average, list(params.values()))
    xs, ys = train.pairs()
    with torch.no_grad():
        base = float(((reference.step(xs) - ys) ** 2).mean())
    i = torch.randint(0, xs.shape[0], (batch,), generator=torch.Generator().manual_seed(seed))
    one_step = ((torch.func.functional_call(reference, params, (xs[i],)) - ys[i]) ** 2).mean()
    assert float(result.one_step[0]) == pytest.approx(one_step.item(), rel=EXACT)
    regularising = torch.autograd.grad(one_step, list(params.values()))
    expected = {}
    for (k, p), g, r in zip(reference.params().items(), gradient, regularising):
        total = g + (weight / base) * r
        expected[k] = p - lr * total / (total.abs() + 1e-8)  # Adam's first step
    # the second iteration starts from the first run's last states, with the updated parameters
    with torch.no_grad():
        for k, p in reference.params().items():
            p.copy_(expected[k])
    second = reference.trajectory(orbit[-1], STEPS)
    assert float(result.loss[1]) == pytest.approx(statistics.loss(statistics.means(second[1:])), rel=1e-9)
    one = small_model()
    fine_tune(one, statistics, x0, "backprop", 1, STEPS, lr=lr, regulariser=train, weight=weight, batch=batch,
              seed=seed)
    for k, p in one.params().items():
        torch.testing.assert_close(p, expected[k], rtol=0, atol=EXACT)
        assert float((p - small_model().params()[k]).abs().max()) == pytest.approx(lr, rel=1e-4)


def test_fine_tune_without_regulariser_and_with_noise_is_reproducible():
    train, statistics, x0 = fine_tune_setup()
    a, b = small_model(), small_model()
    ra = fine_tune(a, statistics, x0, "kernel", 2, STEPS, noise=0.3, seed=5)
    rb = fine_tune(b, statistics, x0, "kernel", 2, STEPS, noise=0.3, seed=5)
    assert torch.equal(ra.loss, rb.loss) and bool((ra.one_step == 0).all())
    assert all(torch.equal(p, b.params()[k]) for k, p in a.params().items())
    psi = statistics.observable(statistics.means(x0))
    reference = average_gradient(Noisy(small_model(), 0.3), x0, STEPS, psi, "kernel").cost
    assert ra.cost == Cost(steps=2 * PATHS * STEPS) + reference + reference
    rc = fine_tune(small_model(), statistics, x0, "kernel", 2, STEPS, noise=0.3, seed=6)
    assert not torch.equal(rc.loss, ra.loss)


def test_fine_tune_refuses_bad_arguments():
    train, statistics, x0 = fine_tune_setup()
    model = small_model()
    assert "teacher-forcing" in ESTIMATORS and "backprop" in ESTIMATORS
    with pytest.raises(ValueError, match=r"method must be one of \[.*'teacher-forcing', 'none'\]; got 'adam'"):
        fine_tune(model, statistics, x0, "adam", 1, STEPS)
    for method in ("kernel", "path-kernel"):
        with pytest.raises(ValueError, match=f"method '{method}' differentiates a noisy model: pass noise > 0"):
            fine_tune(model, statistics, x0, method, 1, STEPS)
    message = "teacher forcing needs forcing=<Observations> and exactly one of alpha"
    with pytest.raises(ValueError, match=message):
        fine_tune(model, statistics, x0, "teacher-forcing", 1, STEPS, every=3)
    with pytest.raises(ValueError, match=message):
        fine_tune(model, statistics, x0, "teacher-forcing", 1, STEPS, forcing=train, alpha=0.5, every=3)
    with pytest.raises(ValueError, match=message):
        fine_tune(model, statistics, x0, "teacher-forcing", 1, STEPS, forcing=train)
    short = Observations(train.clean[:STEPS], train.noisy[:STEPS], 1.0, train.noise)
    with pytest.raises(ValueError, match=f"the forcing runs have {STEPS - 1} samples; steps = {STEPS} needs more"):
        fine_tune(model, statistics, x0, "teacher-forcing", 1, STEPS, forcing=short, every=3)
    with pytest.raises(ValueError, match="iterations must be a whole number >= 1"):
        fine_tune(model, statistics, x0, "backprop", 0, STEPS)
    with pytest.raises(ValueError, match="noise must be a finite number > 0"):
        fine_tune(model, statistics, x0, "kernel", 1, STEPS, noise=-1.0)
    with pytest.raises(ValueError, match="method 'truncated' needs the option"):
        fine_tune(model, statistics, x0, "truncated", 1, STEPS)


# -- the "none" control and fine_tune_each ------------------------------------------------------
def test_none_method_is_the_regulariser_alone():
    """With method "none" an iteration is the free run (recorded) and one regulariser step, nothing else: the
    cost has no estimator's part, and two runs with different statistics losses end at the same weights."""
    train, statistics, x0 = fine_tune_setup()
    other = FourierStatistics(train, features=8, bandwidth=0.5, seed=3)  # a different statistics loss
    a, b = small_model(), small_model()
    ra = fine_tune(a, statistics, x0, "none", 3, STEPS, regulariser=train, batch=16, seed=4)
    rb = fine_tune(b, other, x0, "none", 3, STEPS, regulariser=train, batch=16, seed=4)
    assert ra.cost == rb.cost == Cost(steps=3 * (PATHS * STEPS + 16), param_vjps=3 * 16)
    for k, p in a.params().items():
        torch.testing.assert_close(p, b.params()[k], rtol=0, atol=EXACT)
    assert not torch.allclose(ra.loss, rb.loss)  # the losses are recorded, they just do not steer


def test_fine_tune_each_equals_fine_tune_on_copies_with_seed_r():
    train, statistics, x0 = fine_tune_setup()
    bases = [small_model(seed=0), small_model(seed=5)]
    before = [{k: p.clone() for k, p in m.params().items()} for m in bases]
    estimators = {"control": {"method": "none"}, "short": {"method": "truncated", "truncate": 2}}
    common = dict(lr=1e-3, regulariser=train, batch=16)
    result = fine_tune_each(bases, statistics, estimators, x0, 2, STEPS, **common)
    assert list(result) == ["control", "short"] and all(len(runs) == 2 for runs in result.values())
    for name, options in estimators.items():
        for r, (model, run) in enumerate(result[name]):
            direct = copy.deepcopy(bases[r])
            expected = fine_tune(direct, statistics, x0, iterations=2, steps=STEPS, seed=r, **common, **options)
            torch.testing.assert_close(run.loss, expected.loss, rtol=0, atol=EXACT)
            for k, p in model.params().items():
                torch.testing.assert_close(p, direct.params()[k], rtol=0, atol=EXACT)
    for m, start in zip(bases, before):  # the bases themselves are untouched
        assert all(torch.equal(p, start[k]) for k, p in m.params().items())
    with pytest.raises(ValueError, match="estimator 'bad' needs a 'method' among its options"):
        fine_tune_each(bases, statistics, {"bad": {"truncate": 2}}, x0, 1, STEPS)


# -- rollout gradients and their growth -----------------------------------------------------------
def rollout_loss(model, y, k, r, T):
    x, loss = y[k, r], 0.0
    for j in range(1, T + 1):
        x = model(x)
        loss = loss + ((x - y[k + j, r]) ** 2).mean() / T
    return loss


def test_rollout_starts_are_seeded_and_leave_room_for_the_longest_rollout():
    data = teacher_data(samples=30, runs=3)
    k, r = rollout_starts(data, 50, 20, seed=3)
    assert k.shape == r.shape == (50,) and int(k.min()) >= 0 and int(k.max()) + 20 <= 30
    assert int(r.min()) >= 0 and int(r.max()) <= 2
    k2, r2 = rollout_starts(data, 50, 20, seed=3)
    assert torch.equal(k, k2) and torch.equal(r, r2)
    assert not torch.equal(k, rollout_starts(data, 50, 20, seed=4)[0])
    assert bool((rollout_starts(data, 5, 30)[0] == 0).all())  # a rollout may end on the last sample
    with pytest.raises(ValueError, match="rollouts of 31 steps do not fit in runs of 30 samples"):
        rollout_starts(data, 5, 31)


def test_rollout_gradient_norms_equal_finite_differences_of_the_rollout_loss():
    """Every one of the small model's 59 parameters by central differences (h = 1e-5, error ~1e-10)."""
    data = teacher_data(samples=30, runs=3)
    model = small_model(seed=2)
    horizons = [1, 4]
    norms = rollout_gradient_norms(model, data, horizons, starts=3, seed=7)
    assert norms.shape == (2, 3)
    k, r = rollout_starts(data, 3, max(horizons), seed=7)
    h = 1e-5
    for i, T in enumerate(horizons):
        for s in range(3):
            grad = []
            for p in model.params().values():
                flat = p.data.view(-1)
                for j in range(flat.numel()):
                    old = float(flat[j])
                    with torch.no_grad():
                        flat[j] = old + h
                        up = float(rollout_loss(model, data.noisy, k[s], r[s], T))
                        flat[j] = old - h
                        down = float(rollout_loss(model, data.noisy, k[s], r[s], T))
                        flat[j] = old
                    grad.append((up - down) / (2 * h))
            assert float(norms[i, s]) == pytest.approx(torch.tensor(grad).norm().item(), rel=1e-7)
    with pytest.raises(ValueError, match="horizons must be nonempty and shorter than the runs"):
        rollout_gradient_norms(model, data, [31], starts=2)


def test_growth_rate_of_exact_exponentials():
    T = [10, 20, 40, 80]
    rates = torch.tensor([0.5, 1.0, 1.5], dtype=F64)  # per unit time, interval 0.1
    t = 0.1 * torch.tensor(T, dtype=F64)[:, None]
    norms = 3.0 * torch.exp(rates * t) / torch.tensor(T, dtype=F64)[:, None]  # T |grad| is exponential
    g = growth_rate(T, norms, interval=0.1)
    assert g.value == pytest.approx(1.0, rel=EXACT) and g.stderr == pytest.approx(0.5 / math.sqrt(3), rel=1e-10)
    raw = growth_rate(T, norms * torch.tensor(T, dtype=F64)[:, None], interval=0.1, scale=False)
    assert raw.value == pytest.approx(1.0, rel=EXACT)
    for bad in (norms[:1], norms[:, :1], norms[0]):
        with pytest.raises(ValueError, match=r"norms must have shape \(horizons, starts\) with >= 2 of each"):
            growth_rate(T[: bad.shape[0]] if bad.ndim == 2 else T, bad)
