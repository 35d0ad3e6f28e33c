"""Cost of second-order quantities of the draft's 784-50-10 network, in units of one
gradient evaluation of the full-batch loss on 5,000 inputs.

A Hessian-vector product (forward over reverse mode, chaosgrad.training.hvp) should cost a
small multiple of a gradient (target: at most 3); the sharpness by Lanczos
(chaosgrad.training.sharpness) costs one product per iteration. The inputs are the
5,000 digits of the bundled MNIST sample (chaosgrad.data.mnist: 4,000 training and 1,000
held-out digits, all used here). Best of five, this machine, one run.
"""

from __future__ import annotations

import time

import torch
from common import best_time, print_table

from chaosgrad.data import mnist
from chaosgrad.training import SigmoidMLP, hvp, sharpness


def main() -> None:
    torch.set_default_dtype(torch.float64)
    net = SigmoidMLP((784, 50, 10))
    g = torch.Generator().manual_seed(0)
    X_train, y_train, X_test, y_test = mnist()
    X = torch.cat([X_train, X_test])
    T = torch.nn.functional.one_hot(torch.cat([y_train, y_test]), 10).double()
    theta = net.init(seed=0)
    v = torch.randn(net.num_params, generator=g)

    def loss(th):
        return net.loss(th, X, T)

    grad = torch.func.grad(loss)
    t_grad = best_time(lambda: grad(theta), repeat=5)
    t_hvp = best_time(lambda: hvp(loss, theta, v), repeat=5)
    start = time.perf_counter()
    top = sharpness(loss, theta, tol=1e-8, max_iter=100)
    t_sharp = time.perf_counter() - start
    print_table(f"784-50-10 network, 5,000 inputs ({torch.get_num_threads()} threads)", [
        ("one gradient (s)", f"{t_grad:.3f}"),
        ("Hessian-vector product / gradient", f"{t_hvp / t_grad:.2f}"),
        (f"sharpness by Lanczos ({top:.4g}) / gradient", f"{t_sharp / t_grad:.1f}"),
    ])


if __name__ == "__main__":
    main()
