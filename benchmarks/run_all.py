"""Runs every benchmark, one after the other, each writing its markdown table (and plot) to benchmarks/results/.

Run from the repository root, on a machine as idle as you can get it (each table records the load average):

    python benchmarks/run_all.py [--quick] [--only engine sensor train folder] [--out-dir benchmarks/results]

- engine: bench_engine.py — ram-infer vs eager PyTorch RAM vs CNNs: latency, throughput, memory, size, accuracy,
  and the image-size sweep (engine.md, engine.png);
- sensor: bench_sensor.py — the glimpse sensor: C++ vs numpy vs the torch crop loop (sensor.md);
- train: bench_train.py — training throughput of ram-train vs the eager PyTorch RAM (train.md);
- folder: bench_folder.py — own-image folders: building the cache, and a training step against a built-in task's
  (folder.md).

bench_folder_models.py is not among them: it needs a ram-train run on own images and CNNs trained on its data.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
# name → (script, how it takes its output location given the results folder)
SCRIPTS = {
    "engine": ("bench_engine.py", lambda out: ["--out-dir", str(out)]),
    "sensor": ("bench_sensor.py", lambda out: ["--out", str(out / "sensor.md")]),
    "train": ("bench_train.py", lambda out: ["--out", str(out / "train.md")]),
    "folder": ("bench_folder.py", lambda out: ["--out", str(out / "folder.md")]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's tiny setting (a smoke test)")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS), help="default: all")
    parser.add_argument("--out-dir", type=Path, default=BENCHMARKS / "results", help="default: %(default)s")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        script, output = SCRIPTS[name]
        quick = ["--quick"] if args.quick else []
        # Paths relative to the repository, where the scripts run: each table records its command, and a table in
        # the repository must not name this machine's folders.
        out_dir = Path(os.path.relpath(args.out_dir.resolve(), REPO))
        command = ["python", os.path.relpath(BENCHMARKS / script, REPO), *quick, *output(out_dir)]
        print(f"$ {shlex.join(command)}", flush=True)
        if subprocess.run([sys.executable, *command[1:]], cwd=REPO).returncode != 0:
            print(f"{script} failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
