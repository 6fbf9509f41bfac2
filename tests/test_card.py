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
from ram_infer.metadata import SensorSpec  # noqa: E402
from ram_infer.training import card  # noqa: E402
from ram_infer.training.card_markdown import regularisation_text  # noqa: E402
from ram_infer.training.cli import main  # noqa: E402
from ram_infer.training.config import TrainConfig  # noqa: E402
from ram_infer.training.evaluate import digit_reach, errors_per_glimpse, evaluate_onnx  # noqa: E402
from ram_infer.training.export import ParityError  # noqa: E402

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


@pytest.mark.parametrize("model", ["onnx", "checkpoint"])
def test_eval_refuses_an_empty_limit(shipped: dict, model: str, capsys) -> None:
    path = shipped["paths"]["onnx"] if model == "onnx" else shipped["run"] / "checkpoint.pt"
    assert main(["eval", str(path), "--limit", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--limit must be at least 1 image, got 0")


def test_card_refuses_a_name_that_is_not_a_file_stem(shipped: dict, capsys) -> None:
    assert main(["card", str(shipped["run"]), "--name", "../escape"]) == 2
    assert "name must be a file stem" in capsys.readouterr().err


def test_card_refuses_to_replace_a_model_unless_forced(shipped: dict, capsys) -> None:
    before = {key: path.stat().st_mtime_ns for key, path in shipped["paths"].items()}
    again = ["card", str(shipped["run"]), "--name", "tiny", "--models-dir", str(shipped["base"] / "models"),
             "--docs-dir", str(shipped["base"] / "docs")]
    assert main(again) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "tiny.onnx exists: a model named 'tiny' is already there; pass --force" in err[0]
    assert {key: path.stat().st_mtime_ns for key, path in shipped["paths"].items()} == before
    paths = card.card_paths("tiny", shipped["base"] / "models", shipped["base"] / "docs")
    card.refuse_to_replace("other", card.card_paths("other", shipped["base"] / "models", shipped["base"] / "docs"))
    with pytest.raises(ValueError, match="pass --force"):
        card.refuse_to_replace("tiny", paths)


@pytest.mark.parametrize("folder", ["--models-dir", "--docs-dir"])
def test_card_never_writes_into_installed_packages(shipped: dict, tmp_path: Path, capsys, folder: str) -> None:
    installed = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "ram_infer" / "models"
    folders = {"--models-dir": str(tmp_path / "mine"), "--docs-dir": str(tmp_path / "mine"), folder: str(installed)}
    assert main(["card", str(shipped["run"]), "--name", "x", *[w for pair in folders.items() for w in pair]]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{installed} lies in installed packages, where ram-train card never writes" in err[0]
    assert not (tmp_path / "venv").exists() and not (tmp_path / "mine").exists()


def test_card_writes_to_the_bundle_only_from_a_source_checkout(tmp_path: Path, monkeypatch) -> None:
    checkout = tmp_path / "repo" / "ram_infer" / "models"
    checkout.mkdir(parents=True)
    (tmp_path / "repo" / "pyproject.toml").write_text("")
    assert card.source_checkout_models(checkout) == checkout
    monkeypatch.setattr(card, "MODELS_DIR", checkout)
    assert card.card_folders(None, None) == (checkout, tmp_path / "repo" / "docs" / "models")
    assert card.source_checkout_models(tmp_path / "elsewhere" / "ram_infer" / "models") is None  # no pyproject.toml
    installed = tmp_path / "lib" / "python3.11" / "dist-packages" / "ram_infer" / "models"
    installed.mkdir(parents=True)
    (installed.parent.parent / "pyproject.toml").write_text("")  # even then: an installed package is no checkout
    assert card.source_checkout_models(installed) is None and card.in_installed_packages(installed)
    assert not card.in_installed_packages(checkout)


def test_card_outside_a_source_checkout_asks_for_a_folder(shipped: dict, monkeypatch, capsys) -> None:
    installed = shipped["base"] / "lib" / "site-packages" / "ram_infer" / "models"
    monkeypatch.setattr(card, "MODELS_DIR", installed)
    with pytest.raises(ValueError, match="name the folder to write the model to with --models-dir"):
        card.card_folders(None, None)
    assert main(["card", str(shipped["run"]), "--name", "x"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert card.card_folders(shipped["base"] / "mine", None) == (shipped["base"] / "mine", shipped["base"] / "mine")


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
    parity = card.verify_export(shifted, tiny_model.path, images)
    assert parity["answers_differ"] == 0 and "step logits: max scaled diff" in parity["failure"]


def test_verify_export_raises_when_answers_differ(tiny_model, images) -> None:
    changed = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        changed.action_net.classify.bias[0].add_(100.0)  # class 0 wins everywhere in torch
    with pytest.raises(ParityError, match=r"answers differ on \d+ of 64 images"):
        card.verify_export(changed, tiny_model.path, images)


def test_card_tells_the_augmentation_and_the_averaging_that_shaped_its_weights() -> None:
    config = TrainConfig(max_rotation=10, max_scale=0.1, ema_decay=0.9995, ema_from=83_000)
    assert regularisation_text(config, 120_000) == (
        "training images turned by up to ±10°, scaled by up to ±10 %; weights averaged (decay 0.9995) from step 83,000")
    assert regularisation_text(config, 83_000) == "training images turned by up to ±10°, scaled by up to ±10 %"
    assert regularisation_text(TrainConfig(), 1_000) == ""
    elastic = TrainConfig(elastic_pixels=1.0, elastic_spacing=8)
    assert regularisation_text(elastic, 1_000) == "training images distorted elastically (1 px over 8 px)"


def at_pixel(x: int, y: int, size: int) -> list[float]:
    """The location (x, y) in [-1, 1] whose centre pixel on a size × size canvas is (x, y)."""
    return [(x + 0.5) / size * 2 - 1, (y + 0.5) / size * 2 - 1]


def test_digit_reach_splits_the_errors_by_whether_a_finest_patch_covered_the_digit() -> None:
    corners = np.array([[10, 20], [10, 20], [0, 0], [30, 30]])  # digit centres (24, 34), (24, 34), (14, 14), (44, 44)
    locations = np.array([
        # the patch of a glimpse at c covers [c − 6, c + 6) on each axis
        [at_pixel(50, 50, 60), at_pixel(24 + 6, 34 - 5, 60)],  # the digit's centre at c − 6, c + 5: covered
        [at_pixel(24 - 7, 34, 60), at_pixel(24, 34 - 6, 60)],  # at c + 7, then at c + 6: neither covers it
        [at_pixel(14, 14, 60), at_pixel(50, 50, 60)],  # the first glimpse is on it
        [at_pixel(5, 5, 60), at_pixel(5, 55, 60)],  # never near it
    ], dtype=np.float32)
    labels, answers = np.array([1, 2, 3, 4]), np.array([1, 0, 0, 4])
    reach = digit_reach(locations, corners, labels, answers, SensorSpec(12, 3, 2), 60, 60)
    # nearest glimpse centres: 6, 6, 0 and 39 px from the digit's centre (the larger axis), median 6
    assert reach == {"reached": 0.5, "error_reached": 0.5, "error_missed": 0.5, "first_glimpse": 1.5,
                     "nearest_px": 6.0}
    never = digit_reach(locations[3:], corners[3:], labels[3:], answers[3:], SensorSpec(12, 3, 2), 60, 60)
    assert never["reached"] == 0 and np.isnan(never["error_reached"]) and never["error_missed"] == 0
    assert never["nearest_px"] == 39.0


def test_evaluate_onnx_measures_digit_reach_on_the_runtimes_glimpses(tiny_model, images) -> None:
    labels = np.arange(len(images)) % 10
    corners = np.zeros((len(images), 2), np.int64)
    result = evaluate_onnx(tiny_model.path, images, labels, corners=corners)
    prediction = load_model(tiny_model.path).predict(images)
    expected = digit_reach(prediction.locations, corners, labels, prediction.labels,
                           load_model(tiny_model.path).info.sensor, *images.shape[2:])
    assert result["digit_reach"] == pytest.approx(expected, nan_ok=True)
    assert "digit_reach" not in evaluate_onnx(tiny_model.path, images, labels)


def test_eval_of_a_translated_run_says_whether_the_glimpses_reached_the_digit(data_root: Path, tmp_path: Path,
                                                                              capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--preset", "translated60", "--out", str(run), "--no-progress", f"data_root={data_root}",
                 *TINY_RUN, "steps=2"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoint.pt"), "--split", "valid"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["digit_reach"]) == {"reached", "error_reached", "error_missed", "first_glimpse", "nearest_px"}
    assert 0 <= result["digit_reach"]["reached"] <= 1
