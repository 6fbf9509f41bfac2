"""ram-train card and evaluation through the runtime: a tiny run shipped end to end, and evaluate_onnx against torch."""

from __future__ import annotations

import copy
import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ram_infer import load_model  # noqa: E402
from training.card import location_std_text, verify_export  # noqa: E402
from training.config import ModelConfig, TrainConfig  # noqa: E402
from training.evaluate import errors_per_glimpse, evaluate_onnx  # noqa: E402
from training.export import ParityError  # noqa: E402
from training.train import main  # noqa: E402

TEST_IMAGES = 300
TINY_RUN = ["steps=6", "batch_size=16", "eval_every=3", "eval_images=64", "checkpoint_every=6", "log_every=1",
            "model.num_scales=2", "model.num_glimpses=3", "model.glimpse_hidden=8", "model.location_hidden=8",
            "model.glimpse_features=16", "model.core_hidden=16"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mnist.pkl.gz of noise images (multiples of 1/256, as the loader requires) with random labels."""
    root = tmp_path_factory.mktemp("noise_mnist")
    rng = np.random.default_rng(7)
    splits = tuple((rng.integers(0, 256, (n, 784)) / 256, rng.integers(0, 10, n)) for n in (512, 128, 400))
    with gzip.open(root / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f)
    return root


@pytest.fixture(scope="module")
def shipped(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny run trained for a few steps (planned for 4, lengthened to 6 on resume), then ``ram-train card`` into a
    temporary models and docs folder."""
    base = tmp_path_factory.mktemp("card")
    run = base / "run"
    train = ["train", "--preset", "mnist", "--out", str(run), "--no-progress", f"data_root={data_root}", *TINY_RUN,
             "steps=4"]
    assert main(train) == 0
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "steps=6"]) == 0
    card = ["card", str(run), "--name", "tiny", "--models-dir", str(base / "models"),
            "--docs-dir", str(base / "docs"), "--limit", str(TEST_IMAGES)]
    assert main(card) == 0
    return {"base": base, "run": run, "data_root": data_root, "paths": {
        "onnx": base / "models" / "tiny.onnx", "card": base / "models" / "tiny.md",
        "curve": base / "docs" / "tiny-curve.png", "trace": base / "docs" / "tiny-trace.png"}}


@pytest.fixture(scope="module")
def shipped_info(shipped: dict):
    return load_model(shipped["paths"]["onnx"]).info


def test_card_model_loads_with_the_measured_test_error(shipped_info) -> None:
    assert shipped_info.test_error is not None
    assert shipped_info.training["test"]["images"] == TEST_IMAGES


def test_card_records_the_reconstructed_command_and_hardware(shipped_info) -> None:
    training = shipped_info.training
    assert training["command"].startswith("ram-train train --preset mnist --out ")
    assert "model.core_hidden=16" in training["command"] and "steps=6" in training["command"]
    assert training["run_steps"] == 6 and 1 <= training["steps"] <= 6 and training["wall_time_s"] > 0
    assert training["hardware"]["cores"] >= 1 and training["torch"] == torch.__version__


def test_card_replays_a_lengthened_run_and_says_how_its_schedule_went(shipped: dict, shipped_info) -> None:
    assert "'schedule_legs=[[4, 4]]'" in shipped_info.training["command"]
    assert shipped_info.training["schedule_legs"] == [[4, 4]]
    text = shipped["paths"]["card"].read_text()
    assert "steps 0–4 followed a 4-step schedule; steps 4–6 follow the 6-step one" in text


def test_card_states_the_measured_error(shipped: dict, shipped_info) -> None:
    card = shipped["paths"]["card"].read_text()
    assert f"**{100 * shipped_info.test_error:.2f} %**" in card
    assert f"only the first {TEST_IMAGES} test images" in card


def test_card_says_how_its_checkpoint_was_chosen_and_its_error_on_the_whole_validation_split(
    shipped: dict, shipped_info, capsys
) -> None:
    capsys.readouterr()
    assert main(["eval", str(shipped["run"] / "best.pt"), "--split", "valid"]) == 0
    measured = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shipped_info.training["valid"] == {"images": 128, "error": measured["error"]}
    card = shipped["paths"]["card"].read_text()
    assert "best.pt, chosen during the run by its validation error on 64 validation images" in card
    assert f"validation error {100 * measured['error']:.2f} % on 128 validation images" in card


@pytest.mark.parametrize("picture", ["curve", "trace"])
def test_card_pictures_are_small_pngs_linked_from_the_card(shipped: dict, picture: str) -> None:
    path = shipped["paths"][picture]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 150_000
    assert f"](../docs/{path.name})" in shipped["paths"]["card"].read_text()


def test_eval_of_the_onnx_gives_the_cards_error(shipped: dict, shipped_info, capsys) -> None:
    capsys.readouterr()
    argv = ["eval", str(shipped["paths"]["onnx"]), "--limit", str(TEST_IMAGES),
            "--data-root", str(shipped["data_root"])]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["runtime"], result["images"], result["error"]) == ("onnx", TEST_IMAGES, shipped_info.test_error)


def test_eval_refuses_a_curve_for_an_onnx_file(shipped: dict, capsys) -> None:
    assert main(["eval", str(shipped["paths"]["onnx"]), "--curve", "c.png"]) == 2
    assert "--curve needs a checkpoint" in capsys.readouterr().err


def test_card_refuses_a_name_that_is_not_a_file_stem(shipped: dict, capsys) -> None:
    assert main(["card", str(shipped["run"]), "--name", "../escape"]) == 2
    assert "name must be a file stem" in capsys.readouterr().err


def test_card_without_a_run_log_says_so(tmp_path: Path, capsys) -> None:
    assert main(["card", str(tmp_path), "--name", "x", "--models-dir", str(tmp_path)]) == 2
    assert "log.jsonl: no such log" in capsys.readouterr().err


def test_evaluate_onnx_matches_torch_after_each_glimpse(tiny_model, images) -> None:
    labels = np.random.default_rng(0).integers(0, 10, len(images))
    result = evaluate_onnx(tiny_model.path, images, labels)
    np.testing.assert_array_equal(result["error_per_glimpse"], errors_per_glimpse(tiny_model.model, images, labels))
    assert result["error"] == result["error_per_glimpse"][-1]


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_evaluate_onnx_early_exit_stops_at_the_first_confident_step(tiny_model, images, threshold: float) -> None:
    labels = np.random.default_rng(1).integers(0, 10, len(images))
    probabilities = load_model(tiny_model.path).predict(images, steps=True).step_probabilities  # (N, T, classes)
    confident = probabilities.max(axis=2) >= threshold  # (N, T)
    confident[:, -1] = True
    stop = confident.argmax(axis=1)  # (N,)
    answers = probabilities[np.arange(len(images)), stop].argmax(axis=1)  # (N,)
    (row,) = evaluate_onnx(tiny_model.path, images, labels, thresholds=[threshold])["early_exit"]
    assert row["mean_glimpses"] == pytest.approx(np.mean(stop + 1))
    assert row["error"] == pytest.approx(np.mean(answers != labels))


def test_evaluate_onnx_refuses_labels_that_do_not_match(tiny_model, images) -> None:
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) for N = 64 >= 1 images, got \(3,\)"):
        evaluate_onnx(tiny_model.path, images, np.zeros(3, np.int64))


def test_verify_export_records_a_strict_failure_when_answers_agree(tiny_model, images) -> None:
    shifted = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        shifted.action_net.classify.bias.add_(1e-3)  # every logit moves alike: no answer changes
    parity = verify_export(shifted, tiny_model.path, images)
    assert parity["answers_differ"] == 0 and "step logits: max scaled diff" in parity["failure"]


def test_verify_export_raises_when_answers_differ(tiny_model, images) -> None:
    changed = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        changed.action_net.classify.bias[0].add_(100.0)  # class 0 wins everywhere in torch
    with pytest.raises(ParityError, match=r"answers differ on \d+ of 64 images"):
        verify_export(changed, tiny_model.path, images)


def test_card_tells_how_sigma_moved() -> None:
    changed = TrainConfig(model=ModelConfig(location_std=0.09), location_std_legs=[[380_000, 0.15]])
    assert location_std_text(changed) == "0.15 until step 380,000, then 0.09"
    annealed = TrainConfig(model=ModelConfig(location_std=0.2), location_std_final=0.05)
    assert location_std_text(annealed) == "0.2 annealed linearly to 0.05"
