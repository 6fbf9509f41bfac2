"""Full-episode ONNX models (training/episode.py): the sensor in standard operators gives the compiled sensor's floats,
and a whole episode in one graph gives the stepwise runtime's labels, locations and logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ram_infer import ModelFormatError, extract_glimpses, load_model
from ram_infer.engine import MODELS_DIR, bundled_models
from ram_infer.metadata import SensorSpec
from ram_infer.training.cli import main as ram_train
from ram_infer.training.data import TASKS, fixed_split, load_mnist
from ram_infer.training.episode import (
    PARITY_TOLERANCE,
    build_episode_model,
    build_sensor_model,
    episode_parity,
    export_episode,
    sidecar,
)

from conftest import make_images, sample_for

EPISODE_DIR = MODELS_DIR / "episode"
BUNDLED = sorted(bundled_models())
# The bundled models of the paper's tasks (the others, own images, are measured on their own test split)
ON_MNIST = [name for name in BUNDLED if load_model(name).info.dataset in TASKS]


def session(model: onnx.ModelProto | Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_episode(model: onnx.ModelProto | Path, images: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    logits, locations = session(model, threads).run(["logits", "locations"], {"image": images})
    return logits, locations


def assert_same_episodes(step_path: Path, episode: onnx.ModelProto | Path, images: np.ndarray) -> None:
    expected = load_model(step_path, threads=1).predict(images)
    logits, locations = run_episode(episode, images)
    np.testing.assert_array_equal(np.argmax(logits, axis=1), expected.labels)
    np.testing.assert_allclose(locations, expected.locations, rtol=0, atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(logits, expected.logits, rtol=0, atol=PARITY_TOLERANCE)


# ------------------------------------------------------------------------------------------------ the sensor alone

SENSORS = [  # (g, k, s, C, H, W): square and not, 1 and 3 channels, patches far larger than the image
    (8, 1, 2, 1, 28, 28),
    (8, 2, 2, 1, 28, 28),
    (12, 4, 2, 1, 100, 100),
    (5, 3, 3, 3, 17, 40),
    (3, 2, 2, 1, 1, 1),
    (4, 3, 2, 2, 9, 6),
]


def boundary_locations(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Locations on and around every pixel boundary and the corners, outside [-1, 1], and random ones."""
    edges_x = 2 * np.arange(width + 1) / width - 1
    edges_y = 2 * np.arange(height + 1) / height - 1
    special = [(-1, -1), (1, 1), (-1, 1), (1, -1), (0, 0), (-1.5, 2.0), (3.0, -7.0), (0.99999994, -0.99999994)]
    nudged = [np.nextafter(np.float32(v), np.float32(d)) for v in edges_x[:4] for d in (-2, 2)]
    points = [*special, *zip(edges_x, np.resize(edges_y, len(edges_x))), *zip(nudged, nudged)]
    random = rng.uniform(-1.2, 1.2, size=(64, 2))
    return np.concatenate([np.array(points, np.float32).reshape(-1, 2), random]).astype(np.float32)


def test_onnx_sensor_has_the_ir_version_of_the_bundled_step_models() -> None:
    """Not the installed onnx's newest IR (14 in onnx 1.23), which an older onnxruntime (1.30: up to 13) refuses."""
    sensor = build_sensor_model(SensorSpec(8, 2, 2), 1, 28, 28)
    assert {sensor.ir_version} == {onnx.load(str(path)).ir_version for path in bundled_models().values()}


@pytest.mark.parametrize(("g", "k", "s", "C", "H", "W"), SENSORS)
def test_onnx_sensor_gives_the_compiled_sensors_floats(g: int, k: int, s: int, C: int, H: int, W: int) -> None:
    rng = np.random.default_rng(g * 1000 + H)
    locations = boundary_locations(H, W, rng)
    images = rng.integers(0, 256, size=(len(locations), C, H, W)).astype(np.float32) / 255  # (N, C, H, W)
    model = build_sensor_model(SensorSpec(g, k, s), C, H, W)
    (got,) = session(model).run(["glimpse"], {"image": images, "location": locations})
    np.testing.assert_array_equal(got, extract_glimpses(images, locations, g, k, s))


# ------------------------------------------------------------------------------------------------ whole episodes


def test_tiny_episode_matches_the_stepwise_runtime(tiny_model, tmp_path: Path) -> None:
    images = make_images(64, seed=3)
    episode = build_episode_model(onnx.load(str(tiny_model.path)))
    assert_same_episodes(tiny_model.path, episode, images)


def test_episode_rows_do_not_depend_on_batch_or_threads(tiny_model) -> None:
    images = make_images(33, seed=4)
    episode = build_episode_model(onnx.load(str(tiny_model.path)))
    logits, locations = run_episode(episode, images)
    for threads in (1, 2):
        single = [run_episode(episode, images[i : i + 1], threads) for i in (0, 17, 32)]
        for row, (one_logits, one_locations) in zip((0, 17, 32), single):
            np.testing.assert_array_equal(one_logits[0], logits[row])
            np.testing.assert_array_equal(one_locations[0], locations[row])


def test_episode_model_has_the_contracted_interface_and_metadata(tiny_model) -> None:
    step = onnx.load(str(tiny_model.path))
    episode = build_episode_model(step)
    info = load_model(tiny_model.path).info
    ports = session(episode)
    assert [(i.name, i.shape, i.type) for i in ports.get_inputs()] == [
        ("image", ["batch", 1, 28, 28], "tensor(float)")
    ]
    assert [(o.name, o.shape) for o in ports.get_outputs()] == [
        ("logits", ["batch", info.num_classes]),
        ("locations", ["batch", info.num_glimpses, 2]),
    ]
    meta = {p.key: p.value for p in episode.metadata_props}
    assert meta.pop("ram.graph") == '"episode"'
    assert meta == {p.key: p.value for p in step.metadata_props}
    # the unrolled steps share the step model's one set of weights; the sensor adds only small index constants
    step_weights = {t.name: t.SerializeToString() for t in step.graph.initializer}
    episode_weights = {t.name: t.SerializeToString() for t in episode.graph.initializer}
    assert {name: episode_weights.get(name) for name in step_weights} == step_weights
    assert sum(len(v) for k, v in episode_weights.items() if k not in step_weights) < 4096


def test_runtime_refuses_an_episode_model_saying_what_it_is(tiny_model, tmp_path: Path) -> None:
    path = export_episode(tiny_model.path, tmp_path / "episode.onnx")
    with pytest.raises(ModelFormatError, match=r"episode\.onnx: a full-episode model .* the step model"):
        load_model(path)


def test_ram_train_episode_writes_the_model_and_its_sidecar(tiny_rnn_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "models" / "tiny.onnx"
    assert ram_train(["episode", str(tiny_rnn_path), str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output"] == str(out) and printed["bytes"] == out.stat().st_size
    written = json.loads(out.with_suffix(".json").read_text())
    assert written == sidecar(onnx.load(str(out)))
    assert written["graph"] == "episode" and written["num_glimpses"] == load_model(tiny_rnn_path).info.num_glimpses
    assert_same_episodes(tiny_rnn_path, out, make_images(16, seed=5))


def test_parity_report_counts_differences(tiny_model) -> None:
    images = make_images(20, seed=6)
    parity = episode_parity(tiny_model.path, build_episode_model(onnx.load(str(tiny_model.path))), images)
    assert parity["images"] == 20 and parity["labels_differ"] == 0
    assert max(parity["max_abs_diff"].values()) <= PARITY_TOLERANCE


# ------------------------------------------------------------------------------------------------ shipped models


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_model_ships_its_current_episode_model(name: str) -> None:
    path = EPISODE_DIR / f"{name}.onnx"
    assert path.is_file(), f"{path} missing: run ram-train episode {name} {path} --test-set DATA"
    shipped = onnx.load(str(path))
    rebuilt = build_episode_model(onnx.load(str(MODELS_DIR / f"{name}.onnx")))
    assert shipped.graph.SerializeToString() == rebuilt.graph.SerializeToString(), "stale: re-export it"
    facts = sidecar(shipped)
    assert json.loads(path.with_suffix(".json").read_text()) == facts
    parity = facts["episode_parity"]
    test_images = load_model(name).info.training["test"]["images"]  # the card's: MNIST's 10 000, or the own split
    assert parity["images"] == test_images and parity["split"] == "test" and parity["labels_differ"] == 0
    assert max(parity["max_abs_diff"].values()) <= PARITY_TOLERANCE


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_episode_model_matches_the_runtime_on_the_test_sample(name: str) -> None:
    step_path = MODELS_DIR / f"{name}.onnx"
    info = load_model(step_path).info
    images, _ = sample_for(info.dataset, info.input, info.labels)
    assert_same_episodes(step_path, EPISODE_DIR / f"{name}.onnx", images)


def mnist_available() -> bool:
    try:
        load_mnist()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not mnist_available(),
                    reason="MNIST not found (data/mnist or $RAM_INFER_DATA; see docs/training.md)")
@pytest.mark.parametrize("name", ON_MNIST)
def test_bundled_episode_model_matches_the_runtime_on_the_full_test_set(name: str) -> None:
    step_path = MODELS_DIR / f"{name}.onnx"
    images, _ = fixed_split(load_model(step_path).info.dataset, "test")
    episode = onnx.load(str(EPISODE_DIR / f"{name}.onnx"))
    for begin in range(0, len(images), 1000):  # bounded memory: the sensor's gather indices grow with the batch
        assert_same_episodes(step_path, episode, images[begin : begin + 1000])
