"""Short, repeatable runs of the fuzzers (fuzz/README.md), so that they keep building and stay clean in CI.

The long runs and their numbers are in benchmarks/results/fuzz.md.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the development tier (pytest -m "not slow") skips these; CI runs all

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"


@pytest.fixture(scope="module")
def fuzz_sensor(tmp_path_factory) -> Path:
    """The libFuzzer target built with AddressSanitizer and UBSan, or a skip without clang's fuzzer runtime."""
    if shutil.which("clang++") is None:
        pytest.skip("clang++ is not installed (apt-get install -y clang libclang-rt-14-dev)")
    out = tmp_path_factory.mktemp("fuzz")
    build = subprocess.run(["bash", str(FUZZ / "build.sh"), str(out), "fuzz_sensor"], capture_output=True, text=True)
    if build.returncode != 0 and "fsanitize=fuzzer" in build.stderr + build.stdout:
        pytest.skip(f"clang++ has no libFuzzer runtime: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    return out / "fuzz_sensor"


def test_sensor_fuzzer_runs_clean(fuzz_sensor, tmp_path):
    runs = 20_000
    result = subprocess.run(
        [str(fuzz_sensor), "-seed=1", f"-runs={runs}", "-timeout=10", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and f"Done {runs} runs" in result.stderr, result.stderr[-3000:]


# Inputs the fuzzer found against mutants of the checks (benchmarks/results/fuzz.md), replayed on the real ones.
REGRESSIONS = {
    # num_scales ~ 2^62 with scale_factor 1: the patch-side check looped once per scale until kMaxScales bounded it.
    "num-scales-loop": bytes.fromhex("2afe040000000000e200007a"),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_sensor_fuzzer_regression_input_passes(fuzz_sensor, tmp_path, name):
    case = tmp_path / name
    case.write_bytes(REGRESSIONS[name])
    result = subprocess.run([str(fuzz_sensor), "-timeout=5", str(case)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def fuzz_images():
    spec = importlib.util.spec_from_file_location("fuzz_images", FUZZ / "fuzz_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_fuzzer_finds_nothing_in_a_seeded_run(fuzz_images, tmp_path):
    assert fuzz_images.run(seconds=120, out=tmp_path, seed=0, count=400) == 0


@pytest.fixture(scope="module")
def fuzz_models():
    pytest.importorskip("onnx")  # the mutations edit ModelProto messages
    spec = importlib.util.spec_from_file_location("fuzz_models", FUZZ / "fuzz_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_fuzzer_finds_nothing_in_a_seeded_run(fuzz_models, tmp_path):
    # The bundled models alone as seeds (no torch export): the same mutants wherever it runs, in about 5 s.
    assert fuzz_models.run(seconds=120, out=tmp_path, seed=0, count=300, tiny=False) == 0
