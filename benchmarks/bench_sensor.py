"""Glimpses per second of the glimpse sensor ρ(x, l): compiled C++, the numpy reference, and an eager PyTorch crop loop.

Where the CUDA sensor is built and a GPU is present, the CUDA kernel and the same crop loop on CUDA tensors join
them (each call timed until its glimpses exist), with and without the NaN check that reads the locations back.

Run from the repository root (writes a markdown table that records the machine):

    python benchmarks/bench_sensor.py [--quick] [--out benchmarks/results/sensor.md]

The PyTorch loop is the kind eager RAM reimplementations use (kevinzakka/recurrent-visual-attention,
``Retina.foveate``): for each scale pad the batch, slice every sample's patch in a Python loop, stack, and average-pool
to g×g. It follows this project's contract (per-axis centre, floor in float64), so its output is checked against ours
before any timing.
"""

from __future__ import annotations

import argparse
import functools
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _machine import machine_details, markdown_lines
from eager_ram import torch_crop_loop

from ram_infer.sensor import available_backends, extract_glimpses

GLIMPSE = {"glimpse_size": 8, "num_scales": 3, "scale_factor": 2}  # g, k, s: the paper's MNIST sensor
BATCHES = (1, 256)
IMAGE_SIDES = (28, 60, 100, 400)
TARGET_RATIO = 20  # the target: C++ at least 20× the torch loop at batch 256
PARITY_TOLERANCE = 1e-5  # the torch loop averages in float32, the sensor in float64


def methods(images: np.ndarray, locations: np.ndarray) -> dict[str, Callable[[], object]]:
    """The contenders, each a call on the same batch; the compiled ones only where the extension is built."""
    x, l = torch.from_numpy(images), torch.from_numpy(locations)
    contenders = {}
    if "cpu" in available_backends():
        contenders["C++ (1 thread)"] = lambda: extract_glimpses(images, locations, **GLIMPSE, backend="cpu", threads=1)
        contenders["C++"] = lambda: extract_glimpses(images, locations, **GLIMPSE, backend="cpu")
    contenders["numpy reference"] = lambda: extract_glimpses(images, locations, **GLIMPSE, backend="numpy")
    crop_loop = functools.partial(torch_crop_loop, x, l, *GLIMPSE.values())
    contenders["torch loop (1 thread)"] = functools.partial(_on_one_torch_thread, crop_loop)
    contenders["torch loop"] = crop_loop
    if "cuda" in available_backends() and torch.cuda.is_available():
        x, l = x.cuda(), l.cuda()
        on_gpu = {
            "CUDA": lambda: extract_glimpses(x, l, **GLIMPSE, backend="cuda"),
            "CUDA, check_nan=False": lambda: extract_glimpses(x, l, **GLIMPSE, backend="cuda", check_nan=False),
            "torch loop (CUDA)": functools.partial(torch_crop_loop, x, l, *GLIMPSE.values()),
        }
        contenders.update({name: functools.partial(_synchronized, run) for name, run in on_gpu.items()})
    return contenders


def _synchronized(run: Callable[[], torch.Tensor]) -> torch.Tensor:
    # Kernels run asynchronously: waiting for them makes a call's time the time until its glimpses exist.
    result = run()
    torch.cuda.synchronize()
    return result


def _on_one_torch_thread(run: Callable[[], object]) -> object:
    # On a busy 2-core machine torch's second intra-op thread waits for a core, which can cost torch 10× or more;
    # one thread shows what the loop costs without that, so the ratios below never flatter the C++ kernel.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


def batch(n: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 1, side, side] in [0, 1) and locations [n, 2] in [-1, 1], float32."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, side, side), dtype=np.float32)
    return images, rng.uniform(-1, 1, (n, 2)).astype(np.float32)


def check_parity() -> dict[str, float]:
    """Max |difference| of every contender from the numpy reference on one batch with corner and out-of-range
    locations; raises RuntimeError beyond PARITY_TOLERANCE, since timing code that disagrees would mean nothing."""
    images, locations = batch(64, 60, seed=1)
    locations[:6] = [(-1, -1), (1, 1), (1, -1), (-1, 1), (1.5, -1.5), (0, 0)]
    reference = extract_glimpses(images, locations, **GLIMPSE, backend="numpy")
    differences = {}
    for name, run in methods(images, locations).items():
        differences[name] = float(np.max(np.abs(_on_host(run()) - reference)))
        if differences[name] > PARITY_TOLERANCE:
            raise RuntimeError(f"{name} differs from the numpy reference by {differences[name]:.3g}")
    return differences


def _on_host(glimpses: object) -> np.ndarray:
    return glimpses.cpu().numpy() if isinstance(glimpses, torch.Tensor) else np.asarray(glimpses)


def seconds_per_call(run: Callable[[], object], min_repeat_seconds: float, repeats: int) -> float:
    """Median over `repeats` of the mean time per call, each repeat running long enough to be measurable."""
    start = time.perf_counter()
    run()  # warm-up: first-touch allocations and lazy initialisation stay out of the measurement
    calls = max(1, math.ceil(min_repeat_seconds / (time.perf_counter() - start)))
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        timings.append((time.perf_counter() - start) / calls)
    return statistics.median(timings)


def measure(min_repeat_seconds: float, repeats: int) -> list[dict[str, object]]:
    """Glimpses per second of every contender for every (batch, image side)."""
    rows = []
    for n in BATCHES:
        for side in IMAGE_SIDES:
            images, locations = batch(n, side)
            rates = {
                name: n / seconds_per_call(run, min_repeat_seconds, repeats)
                for name, run in methods(images, locations).items()
            }
            rows.append({"batch": n, "side": side, **rates})
            print(f"batch {n:>3}, {side}×{side}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()), flush=True)
    return rows


def _best(row: dict[str, object], contender: str) -> float | None:
    """The higher rate of `contender` with one thread and with its default threads (None if it did not run)."""
    rates = [row[name] for name in (contender, f"{contender} (1 thread)") if name in row]
    return max(rates, default=None)


def _ratio(numerator: float | None, denominator: float) -> str:
    return "—" if numerator is None else f"{numerator / denominator:,.1f}×"


def report(
    rows: list[dict[str, object]], differences: dict[str, float], command: str, settings: str, machine: dict[str, str]
) -> list[str]:
    """The results as markdown: parameters, command, machine (as it was before measuring), table, target's verdict."""
    names = [name for name in rows[0] if name not in ("batch", "side")]
    cuda_columns = " CUDA / torch loop (CUDA) | CUDA / C++ |" if "CUDA" in names else ""
    g, k, s = GLIMPSE.values()
    lines = [
        "# Glimpse sensor throughput",
        "",
        f"Glimpses per second (one glimpse = k patches of one image; higher is better), median of {settings}.",
        f"Sensor g={g}, k={k}, s={s}; square single-channel images; random locations in [-1, 1].",
        f"Unmarked columns use each library's default threads ({torch.get_num_threads()} for torch, all cores for C++);"
        " the ratios take each side's better rate of one thread and default threads.",
        "",
        f"Command: `{command}`",
        "",
        "Machine, before measuring:",
        *markdown_lines(machine),
        "",
        "| batch | image | " + " | ".join(names) + " | C++ / torch loop | C++ / numpy |" + cuda_columns,
        "|---:|---:|" + "---:|" * (len(names) + 2 + cuda_columns.count("|")),
    ]
    for row in rows:
        rates = " | ".join(f"{row[name]:,.0f}" for name in names)
        cpp = _best(row, "C++")
        cuda_ratios = ""
        if cuda_columns:
            cuda_ratios = f" {_ratio(row['CUDA'], row['torch loop (CUDA)'])} | {_ratio(row['CUDA'], cpp)} |"
        lines.append(
            f"| {row['batch']} | {row['side']}×{row['side']} | {rates} | "
            f"{_ratio(cpp, _best(row, 'torch loop'))} | {_ratio(cpp, row['numpy reference'])} |{cuda_ratios}"
        )
    lines += ["", "Max |difference| from the numpy reference before timing: "
              + ", ".join(f"{name} {value:.1e}" for name, value in differences.items()) + "."]
    if "C++" in names:
        at_256 = [_best(row, "C++") / _best(row, "torch loop") for row in rows if row["batch"] == 256]
        as_shipped = [row["C++"] / row["torch loop"] for row in rows if row["batch"] == 256]
        verdict = "met" if min(at_256) >= TARGET_RATIO else "not met"
        lines.append(
            f"Target C++ ≥ {TARGET_RATIO}× the torch loop at batch 256, each side at its better thread count: "
            f"{verdict} (from {min(at_256):,.1f}× to {max(at_256):,.1f}×). Both at their default threads: "
            f"from {min(as_shipped):,.1f}× to {max(as_shipped):,.1f}×."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short repeat per measurement (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sensor.md",
                        help="markdown file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    min_repeat_seconds, repeats = (0.0, 1) if args.quick else (0.25, 7)
    settings = f"{repeats} repeats of at least {min_repeat_seconds} s after a warm-up call"
    machine = machine_details()  # first, so the load average is the other processes', not this script's
    differences = check_parity()
    rows = measure(min_repeat_seconds, repeats)
    command = shlex.join(["python", sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report(rows, differences, command, settings, machine)) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
