"""Resident memory over 100 000+ predictions in one process: it must stay flat after warm-up (no leak per call).

Three phases on one Engine: batches of 250 fresh images, then batch-1 calls, then batch-1 ``predict_files`` on PNG
files (Pillow decoding included). RSS (``VmRSS`` in /proc/self/status) is sampled every ``--every`` predictions.
After a warm-up (one call of each kind, then ``--warmup`` predictions) the growth over the baseline must stay below
``--max-growth-mib``, else the script exits 1. Run from the repository root:

    python benchmarks/bench_memory.py [--model PATH|NAME] [--out benchmarks/results/memory.md]
                                      [--plot benchmarks/results/memory.png] [--quick]

Without ``--model`` it uses the bundled ``mnist`` model, or else (with torch) exports the paper's MNIST architecture
with random weights: memory does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import gc
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _machine import REPO, machine_details, markdown_lines
from PIL import Image

from ram_infer import Engine, load_model
from ram_infer.engine import bundled_models

FULL = {"batches": 400, "batch_size": 250, "singles": 20_000, "files": 5_000, "every": 2_500, "warmup": 10_000}
QUICK = {"batches": 4, "batch_size": 25, "singles": 50, "files": 20, "every": 25, "warmup": 25}


@dataclass(frozen=True)
class Sample:
    predictions: int  # done so far, warm-up included
    phase: str
    rss_kib: int
    seconds: float


def rss_kib() -> int:
    """This process's resident set size in KiB (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def random_images(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """``[n, C, H, W]`` float32: a few bright bars on black, fresh memory every call."""
    x = np.zeros((n, *shape), np.float32)
    h, w = shape[1:]
    for i in range(n):
        top, left = rng.integers(0, h - 8), rng.integers(0, w - 8)
        x[i, :, top : top + 8, left : left + rng.integers(2, 6)] = rng.uniform(0.5, 1.0)
    return x


def write_pngs(directory: Path, shape: tuple[int, int, int], count: int = 8) -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for i, image in enumerate(random_images(rng, count, shape)):
        path = directory / f"image_{i}.png"
        pixels = (image.transpose(1, 2, 0) * 255).astype(np.uint8)  # (H, W, C)
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(path)
        paths.append(path)
    return paths


def resolve_engine(model: str | None, directory: Path) -> tuple[Engine, str]:
    """The engine to measure and a description of its model."""
    if model is None and "mnist" in bundled_models():
        model = "mnist"
    if model is not None:
        return load_model(model, threads=1), model
    # Exported in a child process, so that this one never imports torch: its RSS is the runtime's alone.
    path = directory / "paper_mnist_random.onnx"
    export = (
        "import sys, torch\n"
        "from ram_infer.training.config import ModelConfig\n"
        "from ram_infer.training.export import export_step_model\n"
        "from ram_infer.training.model import RecurrentAttention\n"
        "torch.manual_seed(0)\n"
        "export_step_model(RecurrentAttention(ModelConfig()).eval(), sys.argv[1], dataset='mnist')\n"
    )
    result = subprocess.run([sys.executable, "-c", export, str(path)], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"no bundled model, and exporting one needs torch ({result.stderr.strip()[-300:]}): pass --model PATH")
    return load_model(path, threads=1), "the paper's MNIST architecture (g=8, k=1, T=6, 256 units), random weights"


def measure(engine: Engine, settings: dict[str, int], pngs: list[Path]) -> tuple[list[Sample], int]:
    """Runs the three phases; returns the samples and the index of the baseline sample (end of warm-up)."""
    shape = engine.info.input
    image_shape = (shape.channels, shape.height, shape.width)
    rng = np.random.default_rng(0)
    samples: list[Sample] = []
    done = 0
    started = time.perf_counter()

    def sample(phase: str) -> None:
        samples.append(Sample(done, phase, rss_kib(), time.perf_counter() - started))

    # Warm-up: one call of each kind creates every workspace, arena and decoder the phases will use.
    engine.predict(random_images(rng, settings["batch_size"], image_shape))
    engine.predict(random_images(rng, 1, image_shape))
    engine.predict_files(pngs[:1])
    done = settings["batch_size"] + 2
    gc.collect()
    sample("warm-up")
    baseline = None
    phases = [
        (f"batch {settings['batch_size']}", settings["batches"], settings["batch_size"]),
        ("batch 1", settings["singles"], 1),
        ("files, batch 1", settings["files"], 1),
    ]
    for phase, calls, size in phases:
        for call in range(calls):
            if phase.startswith("files"):
                engine.predict_files([pngs[call % len(pngs)]])
            else:
                engine.predict(random_images(rng, size, image_shape))
            before, done = done, done + size
            if baseline is None and done >= settings["warmup"]:
                sample(phase)
                baseline = len(samples) - 1
            elif done // settings["every"] > before // settings["every"]:
                sample(phase)
        if samples[-1].predictions != done:
            sample(phase)
    return samples, baseline if baseline is not None else len(samples) - 1


def report(
    samples: list[Sample], baseline: int, model: str, bound_mib: float, command: str, machine: dict[str, str]
) -> tuple[list[str], float]:
    """The markdown report and the growth after warm-up in MiB."""
    base = samples[baseline].rss_kib
    growth = max(s.rss_kib for s in samples[baseline:]) - base
    lines = [
        "# Memory over many predictions",
        "",
        f"Command: `{command}`",
        "",
        f"Model: {model}. RSS = `VmRSS` of the process; baseline = the sample after warm-up "
        f"({samples[baseline].predictions:,} predictions).",
        "",
        f"**Result: growth after warm-up {growth / 1024:.2f} MiB "
        f"({'within' if growth / 1024 <= bound_mib else 'ABOVE'} the bound of {bound_mib} MiB) over "
        f"{samples[-1].predictions:,} predictions; RSS at baseline {base / 1024:.1f} MiB.**",
        "",
        "Machine:",
        "",
        *markdown_lines(machine),
        "",
        "| predictions | phase | RSS (MiB) | Δ baseline (MiB) | elapsed (s) |",
        "|---:|---|---:|---:|---:|",
    ]
    for s in samples:
        delta = f"{(s.rss_kib - base) / 1024:+.2f}"
        lines.append(f"| {s.predictions:,} | {s.phase} | {s.rss_kib / 1024:.1f} | {delta} | {s.seconds:.1f} |")
    return lines, growth / 1024


def plot(samples: list[Sample], baseline: int, path: Path) -> bool:
    """RSS against predictions, one colour per phase; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=110)
    for phase in dict.fromkeys(s.phase for s in samples):
        points = [s for s in samples if s.phase == phase]
        axes.plot([s.predictions for s in points], [s.rss_kib / 1024 for s in points], marker=".", label=phase)
    axes.axvline(samples[baseline].predictions, color="grey", linestyle=":", label="end of warm-up")
    axes.set_xlabel("predictions")
    axes.set_ylabel("RSS (MiB)")
    axes.set_title("ram-infer: resident memory over predictions")
    low = min(s.rss_kib for s in samples) / 1024
    axes.set_ylim(low - 20, max(s.rss_kib for s in samples) / 1024 + 20)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="bundled model name or .onnx path")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.md"), help="markdown report")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the RSS curve (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="a few hundred predictions (the CI smoke test)")
    parser.add_argument("--max-growth-mib", type=float, default=8.0, help="allowed RSS growth after warm-up")
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_memory.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    machine = machine_details()
    with tempfile.TemporaryDirectory() as scratch:
        engine, model = resolve_engine(args.model, Path(scratch))
        info = engine.info
        model += (
            f" ({engine.path.name}: g={info.sensor.glimpse_size}, k={info.sensor.num_scales}, T={info.num_glimpses}, "
            f"state {info.state_size}, input {info.input.channels}×{info.input.height}×{info.input.width})"
        )
        shape = engine.info.input
        pngs = write_pngs(Path(scratch), (shape.channels, shape.height, shape.width))
        samples, baseline = measure(engine, QUICK if args.quick else FULL, pngs)
    lines, growth = report(samples, baseline, model, args.max_growth_mib, command, machine)
    if args.plot is not None and plot(samples, baseline, args.plot):
        lines[lines.index("Machine:") : lines.index("Machine:")] = [f"![RSS curve]({args.plot.name})", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:8]))
    return 0 if growth <= args.max_growth_mib else 1


if __name__ == "__main__":
    sys.exit(main())
