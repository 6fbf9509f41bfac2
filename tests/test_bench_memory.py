"""Smoke test of benchmarks/bench_memory.py: a few hundred predictions, so the script cannot rot between full runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc (Linux)")
def test_bench_memory_quick_writes_a_flat_report(tiny_rnn_path, tmp_path):
    out = tmp_path / "memory.md"
    # The script imports its sibling helper (_machine) from its own folder, which PYTHONSAFEPATH would hide.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSAFEPATH"}
    command = [sys.executable, str(BENCHMARKS / "bench_memory.py"), "--quick", "--model", str(tiny_rnn_path),
               "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert "within the bound" in text and text.count("| files, batch 1 |") >= 1
