"""float32 products on CPU: torch's default BLAS against oneDNN (`train.cpu_matmul`), by shape.

    .venv/bin/python benchmarks/cpu_matmul.py [--tokens 2048] [--repeats 10]

For SmolLM2-135M's linear layers (hidden 576, MLP 1536, vocabulary 49152) over `--tokens` rows:
the forward product x·Wᵀ, the input gradient g·W and the weight gradient gᵀ·x, each timed
through torch (`F.linear` / `torch.mm`, MKL on x86 wheels) and through `prefalign.engine.forward.onednn`.
Prints GFLOP/s per path, the ratio and the largest relative difference between the two results.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from prefalign.engine.forward import onednn

SHAPES = {"attention 576→576": (576, 576), "MLP up 576→1536": (576, 1536),
          "MLP down 1536→576": (1536, 576), "head 576→49152": (576, 49152)}


def seconds(product: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    product()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def products(tokens: int, n_in: int, n_out: int) -> dict[str, tuple[Callable, Callable]]:
    """(torch, oneDNN) closures per product for one layer shape."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, n_in, generator=generator)  # (N, I)
    weight = torch.randn(n_out, n_in, generator=generator) / n_in**0.5  # (O, I)
    grad = torch.randn(tokens, n_out, generator=generator)  # (N, O)
    return {
        "forward x·Wᵀ": (lambda: F.linear(x, weight), lambda: onednn.linear(x, weight)),
        "input grad g·W": (lambda: grad @ weight, lambda: onednn.linear(grad, weight.t())),
        "weight grad gᵀ·x": (lambda: grad.t() @ x, lambda: onednn.linear_tn(grad, x)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="rows per product")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if not onednn.available():
        print("this torch has no oneDNN linear kernel: nothing to compare")
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tokens} rows, "
          "float32")
    print(f"{'layer':20s} {'product':18s} {'torch GFLOP/s':>14s} {'oneDNN GFLOP/s':>15s} "
          f"{'ratio':>6s} {'max rel diff':>13s}")
    for layer, (n_in, n_out) in SHAPES.items():
        flops = 2 * args.tokens * n_in * n_out
        for name, (plain, routed) in products(args.tokens, n_in, n_out).items():
            plain_s, routed_s = seconds(plain, args.repeats), seconds(routed, args.repeats)
            expected = plain()
            difference = ((routed() - expected).abs().max() / expected.abs().max()).item()
            print(f"{layer:20s} {name:18s} {flops / plain_s / 1e9:14.0f} "
                  f"{flops / routed_s / 1e9:15.0f} {plain_s / routed_s:6.2f} {difference:13.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
