"""What the installed package ships besides code: the typing marker and the bundled models' files."""

from __future__ import annotations

from pathlib import Path

import ram_infer
from ram_infer.engine import bundled_models

PACKAGE = Path(ram_infer.__file__).resolve().parent


def test_py_typed_marker_is_shipped():
    """PEP 561: type checkers read the package's annotations only where this file is installed with it."""
    assert (PACKAGE / "py.typed").is_file()


def test_every_bundled_model_ships_with_its_card_and_episode_model():
    for name, path in bundled_models().items():
        assert path.with_suffix(".md").is_file(), name
        assert (PACKAGE / "models" / "episode" / f"{name}.onnx").is_file(), name
