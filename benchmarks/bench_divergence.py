"""Cost of the divergence method (chaosgrad.divergence) over kernel differentiation, and of the
path-kernel hybrid, on the same paths: chapter 5's noisy expanding circle map, 4000 paths x 12
steps, the derivative of the 12-step average (the setting of the chapter's comparison, whose
equal-cost figure uses these two ratios).

Per state the kernel takes one step and one parameter derivative; the hybrid adds a tangent
(one jvp); the divergence method adds the Jacobian, a solve with it and the second
derivatives of log|det Df| (chaosgrad.response.log_expansion_gradients, by torch.func).
"""

from __future__ import annotations

import math

import torch

from chaosgrad.divergence import divergence_derivative
from chaosgrad.kernel import kernel_derivative, path_kernel_derivative
from chaosgrad.systems import ExpandingCircle, Noisy
from common import best_time, print_table


def main() -> None:
    torch.set_default_dtype(torch.float64)
    x0 = torch.rand(4000, 1, generator=torch.Generator().manual_seed(3))
    cos2pi = lambda x: torch.cos(2 * math.pi * x[..., 0])  # noqa: E731

    def circle():
        return Noisy(ExpandingCircle(gamma=0.0, eps=0.1), 0.05, seed=30)

    kernel = best_time(lambda: kernel_derivative(circle(), x0, 12, cos2pi, "eps", average=True))
    hybrid = best_time(lambda: path_kernel_derivative(circle(), x0, 12, cos2pi, "eps", 0.5, average=True))
    div = best_time(lambda: divergence_derivative(circle(), x0, 12, cos2pi, "eps", average=True,
                                                  initial_score=torch.zeros_like))
    print_table(f"Divergence method: cost on the noisy circle map ({torch.get_num_threads()} threads)",
                [("divergence / kernel", f"{div / kernel:.2f}"),
                 ("hybrid (alpha = 0.5) / kernel", f"{hybrid / kernel:.2f}")])


if __name__ == "__main__":
    main()
