"""The runtime works with torch (and onnx) unimportable: import, load, predict and the CLI, in a fresh interpreter;
and ram-train says in one line how to get the training side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import DIGIT_FILES

# Installed first in the child: any import of torch or onnx (or their submodules) raises ImportError.
BLOCKER = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Blocker(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "onnx"):
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


# A sitecustomize that makes one module of the [train] extra missing, as in a runtime-only install
# (``pip install ram-infer``): the console script then runs as a user's would.
MISSING_MODULE = """
import sys
from importlib.abc import MetaPathFinder

class Missing(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Missing())
"""


@pytest.mark.parametrize("missing", ["torch", "matplotlib"])
@pytest.mark.parametrize("argv", [["--help"], ["card", "runs/mnist", "--name", "mnist"]])
def test_ram_train_without_the_training_extra_says_how_to_install_it(tmp_path: Path, missing: str,
                                                                     argv: list[str]) -> None:
    script = Path(sys.executable).with_name("ram-train")
    if not script.is_file():
        pytest.skip(f"no ram-train console script beside {sys.executable}")
    (tmp_path / "sitecustomize.py").write_text(MISSING_MODULE.format(module=missing))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=120, env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f'ram-train: the training side needs the [train] extra ({missing} is missing): pip install "ram-infer[train]" '
        "(torch first: see the README)"
    ]
