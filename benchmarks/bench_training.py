"""Cost of second-order quantities of the draft's 784-50-10 network, in units of one
gradient evaluation of the full-batch loss on 5,000 inputs.

A Hessian-vector product (forward over reverse mode, chaosgrad.training.hvp) should cost a
small multiple of a gradient (target: at most 3); the sharpness by Lanczos
(chaosgrad.training.sharpness) costs one product per iteration. The inputs are random
pixels of MNIST's shape until the chapter's data loader lands: the cost does not depend on
the pixel values. Best of five, this machine, one run.
"""

from __future__ import annotations

import time

import torch
from common import best_time, print_table

from chaosgrad.training import SigmoidMLP, hvp, sharpness


def main() -> None:
    torch.set_default_dtype(torch.float64)
    net = SigmoidMLP((784, 50, 10))
    g = torch.Generator().manual_seed(0)
    X = torch.rand(5000, 784, generator=g)
    T = torch.nn.functional.one_hot(torch.randint(0, 10, (5000,), generator=g), 10).double()
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
