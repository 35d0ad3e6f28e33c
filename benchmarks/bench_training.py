"""Cost of second-order quantities of the draft's 784-50-10 network, in units of one
gradient evaluation of the full-batch loss on 5,000 inputs.

A Hessian-vector product (forward over reverse mode, chaosgrad.hessian.hvp) should cost a
small multiple of a gradient (target: at most 3); the closed-form product of
chaosgrad.training.TrainingLoss (Pearlmutter's R-operator with the passes at theta cached)
about one. The sharpness by Lanczos (chaosgrad.hessian.sharpness) costs one product per
iteration, generic or closed form. The inputs are the 5,000 digits of the bundled MNIST
sample (chaosgrad.data.mnist(sample=True): 4,000 training and 1,000 held-out digits, all
used here). Best of five, this machine, one run.
"""

from __future__ import annotations

import time

import torch
from common import best_time, print_table

from chaosgrad.data import mnist
from chaosgrad.hessian import hvp, sharpness
from chaosgrad.training import SigmoidMLP


def main() -> None:
    torch.set_default_dtype(torch.float64)
    net = SigmoidMLP((784, 50, 10))
    g = torch.Generator().manual_seed(0)
    X_train, y_train, X_test, y_test = mnist(sample=True)
    X = torch.cat([X_train, X_test])
    T = torch.nn.functional.one_hot(torch.cat([y_train, y_test]), 10).double()
    theta = net.init(seed=0)
    v = torch.randn(net.num_params, generator=g)

    def loss(th):
        return net.loss(th, X, T)

    objective = net.objective(X, T)
    grad = torch.func.grad(loss)
    t_grad = best_time(lambda: grad(theta), repeat=5)
    t_hvp = best_time(lambda: hvp(loss, theta, v), repeat=5)
    product = objective.hessian_operator(theta)
    t_closed = best_time(lambda: product(v), repeat=5)
    t_setup = best_time(lambda: objective.hessian_operator(theta), repeat=5)
    timings = {}
    for name, f in (("torch.func", loss), ("closed form", objective)):
        start = time.perf_counter()
        top = sharpness(f, theta, tol=1e-8, max_iter=100)
        timings[name] = (top, time.perf_counter() - start)
    print_table(f"784-50-10 network, 5,000 inputs ({torch.get_num_threads()} threads)", [
        ("one gradient (s)", f"{t_grad:.3f}"),
        ("Hessian-vector product (torch.func) / gradient", f"{t_hvp / t_grad:.2f}"),
        ("Hessian-vector product (closed form) / gradient", f"{t_closed / t_grad:.2f}"),
        ("closed form: passes cached at theta / gradient", f"{t_setup / t_grad:.2f}"),
        *[(f"sharpness by Lanczos, {name} ({top:.4g}) / gradient", f"{t / t_grad:.1f}")
          for name, (top, t) in timings.items()],
    ])


if __name__ == "__main__":
    main()
