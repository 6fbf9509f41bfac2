"""examples/make_shapes.py: the ImageFolder layout, image size and mode, determinism, --split, and its refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("skimage")

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "make_shapes.py"
CLASSES = {"circle", "square", "triangle", "star", "cross", "heart"}


def make_shapes(out_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), str(out_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    """A run with --per-class 3 and the default seed."""
    out_dir = tmp_path_factory.mktemp("shapes") / "out"
    result = make_shapes(out_dir, "--per-class", "3")
    assert (result.returncode, result.stderr) == (0, "")
    assert len(result.stdout.splitlines()) == 1 and "18 images" in result.stdout
    return out_dir


def test_layout_is_one_folder_per_class_of_128_by_96_rgb_pngs(three):
    assert {path.name for path in three.iterdir()} == CLASSES
    for name in CLASSES:
        files = sorted(path.name for path in (three / name).iterdir())
        assert files == [f"{name}_{index:05d}.png" for index in range(3)]
        for file in files:
            with Image.open(three / name / file) as image:
                assert (image.format, image.size, image.mode) == ("PNG", (128, 96), "RGB")


def test_same_seed_gives_the_same_bytes_and_another_seed_differs(three, tmp_path):
    assert make_shapes(tmp_path / "again", "--per-class", "3", "--seed", "0").returncode == 0
    assert contents(tmp_path / "again") == contents(three)
    assert make_shapes(tmp_path / "other", "--per-class", "3", "--seed", "1").returncode == 0
    other = contents(tmp_path / "other")
    assert other.keys() == contents(three).keys()
    assert all(other[name] != data for name, data in contents(three).items())


def test_an_image_does_not_depend_on_the_number_per_class(three, tmp_path):
    assert make_shapes(tmp_path / "one", "--per-class", "1").returncode == 0
    assert contents(tmp_path / "one") == {name: data for name, data in contents(three).items() if "_00000" in name}


def test_split_writes_train_valid_and_test_with_the_same_images(three, tmp_path):
    out_dir = tmp_path / "split"
    result = make_shapes(out_dir, "--per-class", "3", "--split")
    assert (result.returncode, result.stderr) == (0, "")
    assert {path.name for path in out_dir.iterdir()} == {"train", "valid", "test"}
    for part in ("train", "valid", "test"):
        assert {path.name for path in (out_dir / part).iterdir()} == CLASSES
    for part, index in (("train", 0), ("valid", 1), ("test", 2)):  # 80/10/10, but each part gets at least one
        assert [path.name for path in (out_dir / part / "star").iterdir()] == [f"star_{index:05d}.png"]
    split = {name.split("/", 1)[1]: data for name, data in contents(out_dir).items()}
    assert split == contents(three)


def test_a_folder_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = make_shapes(tmp_path, "--per-class", "3")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "not empty" in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]
