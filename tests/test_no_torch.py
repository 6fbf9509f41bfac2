"""The runtime works with torch (and onnx) unimportable: import, load, predict and the CLI, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import DIGIT_FILES

# Installed first in the child: any import of torch or onnx (or their submodules) raises ImportError.
BLOCKER = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Blocker(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "onnx", "onnxscript"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_blocker_blocks_torch():
    result = run_blocked("import torch")
    assert result.returncode == 1 and "torch is blocked in this test" in result.stderr


def test_runtime_imports_and_predicts_without_torch(tiny_rnn_path):
    result = run_blocked(
        f"""
        import ram_infer
        engine = ram_infer.load_model({str(tiny_rnn_path)!r}, threads=1)
        prediction = engine.predict_files({[str(p) for p in DIGIT_FILES]!r})
        assert not any(name.split(".")[0] in ("torch", "onnx") for name in sys.modules), "torch or onnx was imported"
        print(len(prediction.labels))
        """
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, str(len(DIGIT_FILES)), "")


def test_cli_runs_without_torch(tiny_rnn_path):
    result = run_blocked(
        f"""
        import runpy
        sys.argv = ["ram-infer", {str(DIGIT_FILES[0])!r}, "--model", {str(tiny_rnn_path)!r}, "--json"]
        runpy.run_module("ram_infer", run_name="__main__")
        """
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout)["file"] == str(DIGIT_FILES[0])
