"""The bundled models: each loads, validates, and classifies a fixed sample of its test set at its measured accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ram_infer import load_model
from ram_infer.cli import main
from ram_infer.engine import bundled_models

from conftest import sample_for

EXAMPLES = Path(__file__).parent.parent / "examples"
# 300 images: a model at its measured error p gets more than p + 2.5 points wrong with probability well under 1 % for
# the digit models (p ≤ 6 %); for a model of a larger error three binomial standard deviations are the margin.
MARGIN = 0.025


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_bundled_model_is_as_accurate_as_its_card_says(name: str) -> None:
    engine = load_model(name, threads=1)
    images, labels = sample_for(engine.info.dataset, engine.info.input, engine.info.labels)
    error = float(np.mean(engine.predict(images).labels != labels))
    assert engine.info.test_error is not None
    p = engine.info.test_error
    assert error <= p + max(MARGIN, 3 * math.sqrt(p * (1 - p) / len(labels)))


def test_default_model_reads_the_example_digits(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(EXAMPLES.glob("digit_*.png"))
    assert main([*map(str, files), "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in results] == [f.stem.removeprefix("digit_") for f in files]
