"""Own images (ram-train --data): listing, splits, the cache, the plan, bad data, and training end to end to a
``ram-infer --json`` answer carrying the class name. Every folder is made here, with Pillow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ram_infer.images import load_image
from ram_infer.metadata import InputFormat
from ram_infer.training.config import ModelConfig, TrainConfig
from ram_infer.training.data import FolderStream, evaluation_split
from ram_infer.training.folder import DataError, list_data, load_folder, split_of
from ram_infer.training.plan import plan_run, sensor_settings

RGB_CLASSES = ("red circle", "grüner Würfel", "синий")  # spaces and unicode, kept verbatim


def write_image(path: Path, mode: str, size: tuple[int, int], seed: int) -> None:
    """A random image of ``mode`` (L, RGB, RGBA, I;16) and ``size`` (w, h) with a bright square where the seed says."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        pixels = rng.integers(0, 20000, (h, w), dtype=np.uint16)
        pixels[h // 4 : h // 2, w // 4 : w // 2] = 60000
        Image.fromarray(pixels).save(path)
        return
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 160, (h, w, channels), dtype=np.uint8)  # a scene, not plain paper
    pixels[h // 4 : h // 2, w // 4 : w // 2, : min(channels, 3)] = 250
    if channels == 4:
        pixels[..., 3] = 255
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)


def make_folder(root: Path, classes: dict[str, list[tuple[str, tuple[int, int]]]]) -> Path:
    """DIR/<class>/<i>.png for each (mode, size) listed under a class."""
    for name, images in classes.items():
        for i, (mode, size) in enumerate(images):
            write_image(root / name / f"{i:03d}.png", mode, size, seed=hash((name, i)) % 2**32)
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAM_INFER_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def rgb_folder(tmp_path) -> Path:
    """Three classes, non-square RGB and RGBA images of mixed sizes."""
    sizes = [("RGB", (40, 24)), ("RGBA", (44, 30)), ("RGB", (40, 24)), ("RGB", (36, 20))] * 4
    return make_folder(tmp_path / "rgb", {name: sizes for name in RGB_CLASSES})


def run_cli(program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", program, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def train_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("ram_infer.training", "train", "--no-progress", *args)


# Listing and splits


def test_classes_are_the_folder_names_verbatim_in_sorted_order(rgb_folder):
    listing = list_data(rgb_folder)
    assert listing.classes == tuple(sorted(RGB_CLASSES))
    assert len(listing.files) == 48 and all("/" in file for file in listing.files)


def test_the_hash_split_of_a_file_never_changes_when_files_are_added(rgb_folder):
    before = dict(zip(list_data(rgb_folder).files, list_data(rgb_folder).splits(0.2, 0.2)))
    write_image(rgb_folder / RGB_CLASSES[0] / "new.png", "RGB", (40, 24), seed=99)
    after = dict(zip(list_data(rgb_folder).files, list_data(rgb_folder).splits(0.2, 0.2)))
    assert {file: after[file] for file in before} == before and len(after) == len(before) + 1
    fractions = split_shares([split_of(f"x/{i}.png", 0.2, 0.1) for i in range(4000)])
    assert abs(fractions["valid"] - 0.2) < 0.03 and abs(fractions["test"] - 0.1) < 0.03


def split_shares(splits: list[str]) -> dict[str, float]:
    return {split: splits.count(split) / len(splits) for split in ("train", "valid", "test")}


def test_a_split_layout_keeps_its_splits(tmp_path):
    root = tmp_path / "split"
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        make_folder(root / split, {"cat": [("L", (16, 16))] * count, "dog": [("L", (16, 16))] * count})
    listing = list_data(root)
    splits = listing.splits(0.1, 0.1)
    assert listing.classes == ("cat", "dog")
    assert split_shares(list(splits)) == {"train": 12 / 22, "valid": 4 / 22, "test": 6 / 22}
    assert all(split == file.split("/")[0].replace("val", "valid") for file, split in zip(listing.files, splits))


def test_a_csv_lists_files_relative_to_itself_with_optional_splits(tmp_path):
    make_folder(tmp_path / "img", {"a": [("L", (12, 12))] * 3, "b": [("L", (12, 12))] * 3})
    rows = ["file,label,split"] + [f"img/{c}/{i:03d}.png,{'Äpfel' if c == 'a' else 'Birnen'},{s}"
                                   for c in "ab" for i, s in enumerate(("train", "valid", ""))]
    (tmp_path / "list.csv").write_text("\n".join(rows + ["img/a/missing.png,Äpfel,train"]) + "\n", encoding="utf-8")
    listing = list_data(tmp_path / "list.csv")
    assert listing.classes == ("Birnen", "Äpfel") and listing.missing == ("img/a/missing.png",)
    assert list(listing.splits(0.0, 0.0)) == ["train", "valid", "train"] * 2


# The cache: the runtime's tensors, and what invalidates them


def test_training_batches_are_exactly_the_runtime_inputs(rgb_folder):
    config = plan_run(str(rgb_folder), ["steps=2", "batch_size=4"], measure=False).config
    shape = config.model.input_format
    data = load_folder(list_data(rgb_folder), shape, valid_fraction=0.1, test_fraction=0.1, progress=False)
    stream = FolderStream(data, seed=0, batch_size=4)
    images, labels = stream.batch(0)
    rows = data.rows("train")[stream.indices(0)]
    for image, label, row in zip(images, labels, rows):
        path = data.listing.root / data.listing.files[row]
        np.testing.assert_array_equal(image, load_image(path, shape))  # bit for bit
        assert data.listing.classes[label] == path.parent.name


def test_a_changed_file_is_decoded_again_and_the_others_are_kept(rgb_folder):
    listing = list_data(rgb_folder)
    shape = InputFormat(24, 40, 3, placement="fit", polarity="keep")
    first = np.array(load_folder(listing, shape, valid_fraction=0.1, test_fraction=0.1, progress=False).levels)
    changed = rgb_folder / RGB_CLASSES[1] / "002.png"
    Image.new("RGB", (40, 24), (255, 255, 255)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different modification time whatever the clock's resolution
    second = load_folder(list_data(rgb_folder), shape, valid_fraction=0.1, test_fraction=0.1, progress=False)
    row = second.listing.files.index(f"{RGB_CLASSES[1]}/002.png")
    assert np.all(second.levels[row] == 255)
    others = np.arange(len(first)) != row
    np.testing.assert_array_equal(second.levels[others], first[others])


def test_another_input_format_gets_another_cache(rgb_folder):
    listing = list_data(rgb_folder)
    fit = load_folder(listing, InputFormat(24, 40, 3, placement="fit", polarity="keep"), valid_fraction=0.1,
                      test_fraction=0.1, progress=False)
    crop = load_folder(listing, InputFormat(24, 40, 3, placement="crop", polarity="keep"), valid_fraction=0.1,
                       test_fraction=0.1, progress=False)
    row = listing.files.index(f"{RGB_CLASSES[0]}/001.png")  # 44×30: fitted and cropped differ
    assert not np.array_equal(fit.levels[row], crop.levels[row])


def test_corrupt_files_are_skipped_and_counted(rgb_folder):
    (rgb_folder / RGB_CLASSES[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (rgb_folder / RGB_CLASSES[2] / "empty.jpg").write_bytes(b"")
    data = load_folder(list_data(rgb_folder), InputFormat(24, 40, 3, placement="fit", polarity="keep"),
                       valid_fraction=0.1, test_fraction=0.1, progress=False)
    assert sorted(data.failed) == [f"{RGB_CLASSES[0]}/broken.png", f"{RGB_CLASSES[2]}/empty.jpg"]
    assert sum(sum(counts) for counts in data.counts().values()) == 48


# The plan


@pytest.mark.parametrize(("height", "width"), [(28, 28), (60, 60), (96, 128), (100, 37), (128, 20)])
def test_the_coarsest_patch_covers_the_canvas(height, width):
    s = sensor_settings(height, width)
    assert s["model.glimpse_size"] * 2 ** (s["model.num_scales"] - 1) >= max(height, width)
    assert s["model.glimpse_size"] * 2 ** (s["model.num_scales"] - 2) < max(height, width) or s["model.num_scales"] == 1


def test_the_plan_follows_the_data_and_the_settings_given(rgb_folder, tmp_path):
    plan = plan_run(str(rgb_folder), ["steps=3"], measure=False)
    m = plan.config.model
    # the median size; one channel: these colour images' colours do not tell their classes apart
    assert (m.height, m.width, m.channels, m.num_classes) == (24, 40, 1, 3)
    assert (m.polarity, m.placement) == ("keep", "fit") and plan.config.classes == sorted(RGB_CLASSES)
    given = plan_run(str(rgb_folder), ["steps=3", "model.height=48", "model.width=80", "model.placement=crop"],
                     measure=False).config.model
    assert (given.height, given.width, given.placement) == (48, 80, "crop")
    assert given.glimpse_size * 2 ** (given.num_scales - 1) >= 80  # the sensor follows the canvas set
    digits = make_folder(tmp_path / "ink", {str(d): [("L", (28, 28))] * 3 for d in range(3)})
    paper = np.full((28, 28), 255, np.uint8)
    paper[8:20, 12:16] = 0
    for path in digits.rglob("*.png"):  # dark ink on white paper
        Image.fromarray(paper).save(path)
    ink = plan_run(str(digits), ["steps=3"], measure=False).config.model
    assert (ink.channels, ink.polarity, ink.background) == (1, "auto", "dark")


def test_colour_is_kept_where_it_tells_the_classes_apart(tmp_path):
    rng = np.random.default_rng(5)
    for name, hue in (("ripe", (200, 40, 30)), ("unripe", (60, 190, 40)), ("sky", (40, 80, 210))):
        for i in range(12):  # a small object of the class's colour on a grey scene of noise
            pixels = np.repeat(rng.integers(60, 140, (32, 32, 1), dtype=np.uint8), 3, axis=2)
            top, left = rng.integers(0, 24, 2)
            pixels[top : top + 8, left : left + 8] = hue
            write_path = tmp_path / "fruit" / name / f"{i}.png"
            write_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(write_path)
    plan = plan_run(str(tmp_path / "fruit"), ["steps=3"], measure=False)
    assert plan.config.model.channels == 3 and plan.probe["colour_accuracy"]["accuracy"] == 1.0


def test_plan_prints_the_settings_and_the_measured_step_time(rgb_folder):
    done = run_cli("ram_infer.training", "plan", "--data", str(rgb_folder), "--json", "minutes=1")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["seconds_per_1000_steps"] > 0 and plan["config"]["steps"] >= 100 and plan["images"] == 48
    assert plan["counts"]["train"] and plan["cached"] is False
    text = run_cli("ram_infer.training", "plan", "--data", str(rgb_folder), "steps=10").stdout
    assert "sensor:" in text and "'grüner Würfel'" in text


def test_a_bad_placement_is_refused():
    with pytest.raises(ValueError, match="placement must be one of"):
        ModelConfig(placement="stretch")


# Bad data: one line, exit 2, nothing made in RUN


def empty_class(root: Path) -> None:
    make_folder(root, {"a": [("L", (8, 8))] * 2})
    (root / "b").mkdir()


def one_class(root: Path) -> None:
    make_folder(root, {"only": [("L", (8, 8))] * 3})


def no_images(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("no class folders, no images")


def all_corrupt(root: Path) -> None:
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "x.png").write_bytes(b"junk")


def csv_without_label(root: Path) -> None:
    make_folder(root, {"a": [("L", (8, 8))], "b": [("L", (8, 8))]})
    (root / "list.csv").write_text("a/000.png,a\nb/000.png,\n")


def csv_not_utf8(root: Path) -> None:
    make_folder(root, {"a": [("L", (8, 8))], "b": [("L", (8, 8))]})
    (root / "list.csv").write_bytes(b"a/000.png,a\nb/000.png,caf\xe9\n")


def class_name_not_utf8(root: Path) -> None:
    make_folder(root, {"a": [("L", (8, 8))]})
    bad = os.path.join(os.fsencode(root), b"caf\xe9")
    os.mkdir(bad)
    Image.new("L", (8, 8)).save(os.fsdecode(os.path.join(bad, b"0.png")))


BAD_DATA = {
    empty_class: "an empty class folder",
    one_class: "found one class",
    no_images: "no images found",
    all_corrupt: "none of the 2 images looked at can be read",
    csv_without_label: "line 2 has an empty label",
    csv_not_utf8: "line 2 is not valid UTF-8",
    class_name_not_utf8: "not valid UTF-8",
}


@pytest.mark.parametrize("make", list(BAD_DATA), ids=[make.__name__ for make in BAD_DATA])
def test_bad_data_is_one_line_and_leaves_no_run(tmp_path, make):
    make(tmp_path / "data")
    source = tmp_path / "data" / "list.csv" if make.__name__.startswith("csv") else tmp_path / "data"
    done = train_cli("--data", str(source), "--out", str(tmp_path / "run"), "steps=2")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and BAD_DATA[make] in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_data_folder_and_both_sources_are_refused(tmp_path):
    done = train_cli("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "no such folder or CSV file" in done.stderr
    both = train_cli("--data", str(tmp_path), "--preset", "mnist", "--out", str(tmp_path / "run"))
    assert both.returncode == 2 and "either --preset or --data" in both.stderr


# End to end: train, export with the episode twin, run


def trained_model(tmp_path: Path, folder: Path, *settings: str) -> tuple[Path, dict]:
    run = tmp_path / "run"
    done = train_cli("--data", str(folder), "--out", str(run), "steps=3", "batch_size=4", *settings)
    assert done.returncode == 0, done.stderr
    model = tmp_path / "model.onnx"
    exported = run_cli("ram_infer.training", "export", str(run / "best.pt"), str(model), "--episode",
                       str(tmp_path / "episode.onnx"))
    assert exported.returncode == 0, exported.stderr
    return model, json.loads(exported.stdout)


@pytest.mark.slow
def test_rgb_images_with_word_names_train_to_a_json_answer_and_a_matching_episode_model(tmp_path, rgb_folder):
    model, exported = trained_model(tmp_path, rgb_folder, "model.channels=3")  # a colour model, set
    assert exported["episode"]["parity"]["labels_differ"] == 0 and json.loads(exported["ram.input"])["channels"] == 3
    assert json.loads(exported["ram.labels"]) == sorted(RGB_CLASSES)
    image = rgb_folder / RGB_CLASSES[1] / "001.png"
    done = run_cli("ram_infer", "--model", str(model), "--format", "json", str(image))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["label"] in RGB_CLASSES and answer["file"] == str(image)
    sidecar = json.loads((tmp_path / "episode.json").read_text())
    assert sidecar["input"]["polarity"] == "keep" and sidecar["labels"] == sorted(RGB_CLASSES)
    shipped = run_cli("ram_infer.training", "card", str(tmp_path / "run"), "--name", "mine", "--models-dir",
                      str(tmp_path / "models"))
    assert shipped.returncode == 0, shipped.stderr
    card = (tmp_path / "models" / "mine.md").read_text()
    error = json.loads(shipped.stdout)["evaluation"]["error"]
    assert f"**{100 * error:.2f} %**" in card and "`grüner Würfel`" in card and "--data" in card


@pytest.mark.slow
@pytest.mark.parametrize(("classes", "mode", "size"), [(2, "I;16", (30, 30)), (27, "L", (20, 32))])
def test_grey_and_16_bit_folders_of_2_and_27_classes_train_end_to_end(tmp_path, classes, mode, size):
    folder = make_folder(tmp_path / "grey", {f"class {i:02d}": [(mode, size)] * 4 for i in range(classes)})
    model, exported = trained_model(tmp_path, folder, "valid_fraction=0.25", "test_fraction=0.25")
    info = json.loads(exported["ram.input"])
    assert info["channels"] == 1 and (info["height"], info["width"]) == (size[1], size[0])
    done = run_cli("ram_infer", "--model", str(model), "--format", "json", str(next(folder.rglob("*.png"))))
    assert done.returncode == 0 and json.loads(done.stdout)["label"].startswith("class ")


def test_evaluation_split_of_a_run_reads_its_test_images(rgb_folder):
    config = TrainConfig.from_dict(plan_run(str(rgb_folder), ["steps=2"], measure=False).config.to_dict())
    images, labels, corners = evaluation_split(config, "test")
    assert images.shape[1:] == (1, 24, 40) and images.dtype == np.float32 and corners is None
    assert len(images) == len(labels) > 0


def test_every_class_keeps_a_training_image_however_few_it_has(tmp_path):
    folder = make_folder(tmp_path / "tiny", {f"c{i}": [("L", (8, 8))] for i in range(40)})
    splits = list_data(folder).splits(0.45, 0.45)
    assert all(split == "train" for split in splits)  # one image each: it must be learnt
    many = list_data(make_folder(tmp_path / "many", {"a": [("L", (8, 8))] * 60, "b": [("L", (8, 8))] * 60}))
    assert 0.3 < float(np.mean(many.splits(0.45, 0.45) == "valid")) < 0.6


def test_a_run_whose_data_lost_a_class_is_refused(rgb_folder):
    config = plan_run(str(rgb_folder), ["steps=2"], measure=False).config
    for path in (rgb_folder / RGB_CLASSES[2]).iterdir():
        path.unlink()
    (rgb_folder / RGB_CLASSES[2]).rmdir()
    with pytest.raises(DataError, match="no longer the run's"):
        evaluation_split(config, "valid")
