"""Chapter 6's first run on the full MNIST split: ``python tools/full_mnist.py [DIR]``.

The chapter trains the draft's 784-50-10 sigmoid network on a 4,000-digit sample that ships
with its dependencies, so that its stored outputs hold on every machine. This script repeats
the chapter's first run (full-batch gradient descent, alpha = 0.1, 400 steps, the same
initialisation) on the standard 60,000 training and 10,000 test digits and prints the same
table: loss, accuracies and sharpness every 100 steps. ``DIR`` holds the four IDX files
(:data:`chaosgrad.data.IDX_FILES`, gzipped or not); without it the environment variable
``CHAOSGRAD_MNIST`` names the directory. Nothing is downloaded. It takes a few minutes on
two cores (the chapter, section "The full 60,000 digits", quotes a run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd
import torch

from chaosgrad.data import mnist
from chaosgrad.training import SigmoidMLP, train_full_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", default=os.environ.get("CHAOSGRAD_MNIST"),
                        help="the directory with the four IDX files (default: $CHAOSGRAD_MNIST)")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    if not args.directory:
        print("give the directory with the four MNIST IDX files, or set CHAOSGRAD_MNIST to it",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as in the chapter; restored for a caller
    try:
        X, y, X_test, y_test = mnist(path=args.directory)
        net, alpha = SigmoidMLP((784, 50, 10)), 0.1
        run = train_full_batch(net, net.init(seed=0), X, y, alpha, args.steps, record_every=100,
                               X_test=X_test, labels_test=y_test, with_sharpness=True,
                               sharpness_tol=1e-2, progress=sys.stderr.isatty())
    finally:
        torch.set_default_dtype(previous)
    table = pd.DataFrame({"loss": run.loss, "training accuracy": run.train_accuracy,
                          "held-out accuracy": run.test_accuracy,
                          "sharpness S": run.sharpness, "alpha S": alpha * run.sharpness},
                         index=run.steps.numpy())
    table.index.name = "step"
    print(f"{len(X):,} training and {len(X_test):,} held-out digits, mean pixel {X.mean():.4f}")
    print(table.round(3).to_string())
    print(f"{time.perf_counter() - start:.0f} s, torch {torch.__version__.split('+')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
