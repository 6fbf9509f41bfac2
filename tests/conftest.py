"""Shared fixtures: tiny RAM models exported to ONNX (torch needed, else skipped), test images, the sample files."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGIT_FILES = sorted(EXAMPLES.glob("digit_*.png"))
TINY_GLIMPSES = 4
# Multipliers of the default initialisation: (glimpse and core networks, location network, action network).
WEIGHT_GAINS = {"rnn": (3.0, 0.3, 0.9), "lstm": (3.0, 3.0, 3.0)}


class TinyModel(NamedTuple):
    model: object  # ram_infer.training.model.RecurrentAttention
    path: Path  # its exported step network


def export_tiny_model(core: str, directory: Path) -> TinyModel:
    """A small RAM (g=4, k=2, T=4, 32 units) with fixed random weights, exported to ``directory/tiny_<core>.onnx``.

    The weights are rescaled (WEIGHT_GAINS, the action bias zeroed) so that glimpse paths and answers differ between
    images while μ_t stays off tanh's saturation and the logits stay O(1–10).
    """
    torch = pytest.importorskip("torch")
    from ram_infer.training.config import ModelConfig
    from ram_infer.training.export import export_step_model
    from ram_infer.training.model import RecurrentAttention

    torch.manual_seed(1234)
    config = ModelConfig(
        glimpse_size=4,
        num_scales=2,
        num_glimpses=TINY_GLIMPSES,
        glimpse_hidden=16,
        location_hidden=16,
        glimpse_features=32,
        core_hidden=32,
        core=core,
    )
    model = RecurrentAttention(config).eval()
    features, location, action = WEIGHT_GAINS[core]
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "weight" in name and name.startswith(("glimpse_net", "core_net")):
                parameter.mul_(features)
        model.location_net.mean.weight.mul_(location)
        model.action_net.classify.weight.mul_(action)
        model.action_net.classify.bias.zero_()
    path = directory / f"tiny_{core}.onnx"
    export_step_model(model, path, dataset="mnist", test_error=0.5, training={"command": "tests/conftest.py"})
    return TinyModel(model, path)


@pytest.fixture(scope="session", params=["rnn", "lstm"])
def tiny_model(request, tmp_path_factory) -> TinyModel:
    """The tiny model with each core, exported once per session."""
    return export_tiny_model(request.param, tmp_path_factory.mktemp(f"tiny_{request.param}"))


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model) -> Path:
    return tiny_model.path


@pytest.fixture(scope="session")
def tiny_rnn_path(tmp_path_factory) -> Path:
    """The RNN variant alone, for tests where the core does not matter (the CLI)."""
    return export_tiny_model("rnn", tmp_path_factory.mktemp("tiny_rnn_only")).path


def require_backend(name: str) -> str:
    """Skips the test unless the sensor backend ``name`` is usable here (for "cuda": built, and torch sees a GPU)."""
    from ram_infer.sensor import available_backends

    if name not in available_backends():
        pytest.skip(f"backend {name!r} is not available here (available: {available_backends()})")
    if name == "cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch sees no CUDA device")
    return name


def make_images(n: int, seed: int = 0, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """``[n, 1, H, W]`` float32 test images in [0, 1]: a few random bright strokes on a dark background."""
    rng = np.random.default_rng(seed)
    h, w = size
    x = np.zeros((n, 1, h, w), np.float32)
    for i in range(n):
        for _ in range(rng.integers(2, 6)):
            top, left = rng.integers(0, h - 4), rng.integers(0, w - 4)
            x[i, 0, top : top + rng.integers(2, h - top), left : left + rng.integers(2, 5)] = rng.uniform(0.5, 1.0)
    return x


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """64 test images [64, 1, 28, 28]."""
    return make_images(64)


@pytest.fixture(scope="session")
def digit_files() -> list[Path]:
    """The sample MNIST digits in examples/ (28×28 grey PNGs)."""
    if not DIGIT_FILES:
        pytest.fail(f"no sample digits in {EXAMPLES}; run python examples/make_examples.py")
    return DIGIT_FILES


SAMPLE = Path(__file__).parent / "fixtures" / "mnist_test_sample.npz"  # tests/fixtures/make_mnist_sample.py


def sample_for(dataset: str, input_format=None, labels=()) -> tuple[np.ndarray, np.ndarray]:
    """The sample's digits placed as the data set places them (fixed seed), in [0, 1], and their labels; for the
    shapes example (examples/make_shapes.py) its first test images, made anew, in ``input_format``, labelled in the
    order of the model's ``labels``."""
    if dataset == "shapes":
        return shapes_sample(input_format, labels)
    with np.load(SAMPLE) as sample:
        digits, labels = sample["digits"].astype(np.float32) / 255, sample["labels"]
    from ram_infer.training.data import TASKS, compose

    images = compose(digits, digits, TASKS[dataset], np.random.default_rng(2014), digit_indices=np.arange(len(digits)))
    return images, labels


SHAPES_PER_CLASS = 50  # 300 test images


def shapes_sample(input_format, labels) -> tuple[np.ndarray, np.ndarray]:
    """The first SHAPES_PER_CLASS test-split images of each class of ``make_shapes.py shapes`` (seed 0): the files
    the bundled ``shapes`` model never saw in training, made in memory (PNG is lossless: the same pixels)."""
    import importlib.util

    from ram_infer.images import prepare_array
    from ram_infer.training.folder import split_of

    pytest.importorskip("skimage")
    generator = Path(__file__).parents[1] / "examples" / "make_shapes.py"
    spec = importlib.util.spec_from_file_location("make_shapes", generator)
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)
    photos = shapes.load_photos()
    images, answers = [], []
    for label, name in enumerate(shapes.CLASSES):
        test = [i for i in range(2000) if split_of(f"{name}/{name}_{i:05d}.png", 0.1, 0.1) == "test"]
        for index in test[:SHAPES_PER_CLASS]:
            images.append(prepare_array(shapes.make_image(0, label, index, photos), input_format))
            answers.append(list(labels).index(name))
    return np.stack(images), np.array(answers)
