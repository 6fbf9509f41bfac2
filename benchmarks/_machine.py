"""The machine a benchmark ran on, as a dict and as markdown lines, so every results table records it the same way."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("numpy", "torch", "onnxruntime")


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:  # not Linux: platform's answer is the best there is
        return platform.processor() or "unknown"
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):  # no git, or not a checkout (an installed copy)
        return "unknown"
    return f"{commit} (with uncommitted changes)" if changed else commit


def _gpu() -> str | None:
    """The first CUDA device as torch names it, if the benchmark has imported torch and torch sees one."""
    torch = sys.modules.get("torch")  # never imported here: the runtime's benchmarks run without torch
    if torch is None or not torch.cuda.is_available():
        return None
    return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_details() -> dict[str, str]:
    """What decides the numbers: CPU, cores, load, OS, Python, library versions and the code's commit."""
    details = {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this process)",
        "load average (1, 5, 15 min)": ", ".join(f"{load:.2f}" for load in os.getloadavg()),
        "OS": platform.platform(),
        "Python": platform.python_version(),
    }
    gpu = _gpu()
    if gpu:
        details["GPU"] = gpu
    details.update({package: _version(package) for package in PACKAGES})
    details["git commit"] = _git_commit()
    return details


def markdown_lines(details: dict[str, str]) -> list[str]:
    """The details as a markdown bullet list."""
    return [f"- {key}: {value}" for key, value in details.items()]


def write_report(path: Path, lines: list[str], details: dict[str, str]) -> None:
    """Writes a results table's lines, then the machine's details, to ``path`` (and prints them)."""
    lines = [*lines, "Machine, before measuring:", "", *markdown_lines(details), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
