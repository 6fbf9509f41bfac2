"""Smoke tests of the benchmark scripts: each runs in --quick mode and writes its results table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_bench_sensor_quick(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "sensor.md"
    # A script imports its sibling helper (_machine) from its own folder, which PYTHONSAFEPATH (set by .ci/run so
    # that tests import the installed package) would hide; run it the way a person does.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSAFEPATH"}
    command = [sys.executable, str(BENCHMARKS / "bench_sensor.py"), "--quick", "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = [line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2 * 4  # the header row, then batches 1 and 256 × four image sizes
    assert "torch loop" in table[0]
