"""Throughput of chaosgrad.lyapunov_spectrum on deep random tanh networks.

Useful work per layer is the product Df_l Q of an N x N Jacobian with the N x k basis,
2 N^2 k flops; the achieved rate is that count over the wall time, reported as a fraction
of this machine's float64 matmul rate measured in the same run. The reference is the
textbook Benettin loop: form each layer's Jacobian as a matrix, diag(phi'(a)) W by hand or
by torch.func.jacrev as code written for a generic map would, multiply, and take a QR
factorisation every layer. Both start from the same basis, so their exponents
agree to rounding (the last column says how closely).

The network's layers are drawn once, before timing (they are cached), so the timings are
those of the algorithm, not of the random-number generator.
"""

from __future__ import annotations

import torch
from chaosgrad import lyapunov_spectrum
from chaosgrad.networks import RandomNetwork
from chaosgrad.tangent import random_basis
from common import best_time, matmul_rate, print_table


def reference_loop(net: RandomNetwork, x0: torch.Tensor, layers: int, k: int, autodiff: bool = False) -> torch.Tensor:
    """Benettin's algorithm as usually written: the layer's Jacobian as a matrix (by hand, or
    by torch.func.jacrev as a generic code would), times the basis, and a QR every layer."""
    x, Q = x0, random_basis(net.dim, k, x0.dtype, seed=0)
    logs = torch.zeros(k, dtype=x0.dtype)
    for n in range(layers):
        W, _ = net.layer(n)
        a = net.preactivation(x, n)  # the same rounding as the library: the orbit is chaotic
        J = torch.func.jacrev(net.step)(x, n) if autodiff else (1 - torch.tanh(a) ** 2)[:, None] * W
        Q, R = torch.linalg.qr(J @ Q)
        logs += torch.log(torch.diagonal(R).abs())
        x = torch.tanh(a)
    return logs / layers


def measure(width: int, layers: int, k: int, weights: str) -> dict[str, float]:
    """Times of the library and of both reference loops on one network, and their agreement."""
    net = RandomNetwork(width, depth=layers, sigma_w2=2.0, sigma_b2=0.05, weights=weights, seed=0, cache_bytes=2**34)
    for n in range(layers):
        net.standard_layer(n)  # draw and cache every layer before timing
    x0 = torch.randn(width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = lyapunov_spectrum(net, x0, layers, k=k, renorm_every="auto")
    ref = reference_loop(net, x0, layers, k)
    return {
        "width": width, "layers": layers, "k": k, "weights": weights, "r": result.renorm_every,
        "lambda_1": float(result.exponents[0]), "lambda_k": float(result.exponents[-1]),
        "fast": best_time(lambda: lyapunov_spectrum(net, x0, layers, k=k, renorm_every="auto"), repeat=3),
        "by_hand": best_time(lambda: reference_loop(net, x0, layers, k), repeat=2),
        "jacrev": best_time(lambda: reference_loop(net, x0, layers, k, autodiff=True), repeat=1),
        "difference": float((result.exponents - ref).abs().max()),
    }


def rows_for(m: dict[str, float], rate: float) -> list[tuple[str, str]]:
    achieved = 2 * m["width"] ** 2 * m["k"] * m["layers"] / m["fast"]
    return [
        (f"N={m['width']}, k={m['k']}, {m['layers']} layers, {m['weights']}",
         f"renorm every {m['r']} layers; lambda_1 = {m['lambda_1']:.4f}, lambda_k = {m['lambda_k']:.4f} per layer"),
        ("  chaosgrad.lyapunov_spectrum", f"{m['fast']:7.3f} s   {achieved / 1e9:6.1f} GFLOP/s = {achieved / rate:.2f} of the matmul rate"),
        ("  reference loop, Jacobian by hand", f"{m['by_hand']:7.3f} s   speed-up {m['by_hand'] / m['fast']:.1f} x"),
        ("  reference loop, Jacobian by jacrev", f"{m['jacrev']:7.3f} s   speed-up {m['jacrev'] / m['fast']:.1f} x"),
        ("  max |difference| of exponents", f"{m['difference']:.1e}"),
    ]


def main() -> None:
    # the machine's rate varies from moment to moment (frequency, neighbours on a VM): the best
    # of a measurement before and one after the runs makes the fractions conservative
    before = matmul_rate(512)
    runs = [measure(256, 2000, 256, "gaussian"), measure(256, 2000, 256, "orthogonal"), measure(1024, 200, 64, "gaussian")]
    rate = max(before, matmul_rate(512))
    rows = [("float64 matmul rate (512^3), best of two", f"{rate / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")]
    for m in runs:
        rows += rows_for(m, rate)
    print_table("Lyapunov spectra of tanh networks (sigma_w2 = 2, sigma_b2 = 0.05), time per run", rows)


if __name__ == "__main__":
    main()
