"""Training throughput (images/s) of ram-train's step against a kevinzakka-style eager RAM, same model and batch.

Run from the repository root (writes a markdown table that records the machine):

    python benchmarks/bench_train.py [--quick] [--out benchmarks/results/train.md]

Both sides train the MNIST preset's network (8×8 glimpse, 3 scales, 6 glimpses, 256-unit RNN core) on batches of 128
images with M = 1, σ = 0.15, Adam, one thread. Inputs are random images: the speed does not depend on their content.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine_details, markdown_lines
from eager_ram import EagerRAM, eager_train_step

from training.losses import hybrid_loss
from training.model import RecurrentAttention
from training.presets import load_preset


def images_per_second(step, batch_size: int, repeats: int) -> float:
    step()  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return batch_size / statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (a smoke test)")
    parser.add_argument("--out", default="benchmarks/results/train.md")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = load_preset("mnist")
    model = RecurrentAttention(config.model)
    eager = EagerRAM(model)
    sigma = config.model.location_std
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((args.batch_size, 1, 28, 28), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, args.batch_size))
    ours_optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    eager_optimizer = torch.optim.Adam(eager.parameters(), lr=1e-3)

    def ours_step() -> None:
        terms = hybrid_loss(model.rollout(x, sigma), y)
        ours_optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        ours_optimizer.step()

    repeats = 3 if args.quick else 30
    ours = images_per_second(ours_step, args.batch_size, repeats)
    peer = images_per_second(lambda: eager_train_step(eager, eager_optimizer, x, y, sigma), args.batch_size, repeats)
    lines = [
        "# Training throughput: ram-train vs eager PyTorch RAM",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in ['benchmarks/bench_train.py', *(argv or sys.argv[1:])])}`",
        "",
        f"MNIST preset network, batch {args.batch_size}, M = 1, 6 glimpses, one thread, median of {repeats} steps.",
        "",
        "| trainer | images/s | ratio |",
        "|---|---:|---:|",
        f"| ram-train (compiled sensor, batched step) | {ours:,.0f} | {ours / peer:.1f}× |",
        f"| eager PyTorch RAM (kevinzakka-style per-sample crop loop) | {peer:,.0f} | 1.0× |",
        "",
        "Both are bound by the same matrix products (cProfile of our step: backward ≈ half, the `Linear` forwards",
        "≈ a quarter, the compiled sensor ≈ 5 %), so the ratio is what the per-sample crop loop and per-step lists",
        "add to the eager trainer; at inference, where the loop's overhead is not hidden by backward, it is larger",
        "(see engine.md).",
        "",
        "Machine:",
        "",
        *markdown_lines(machine_details()),
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
