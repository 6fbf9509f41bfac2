"""The ``ram-infer`` command line on real files: text and JSON output, --top-k, --trace, errors and exit codes."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from PIL import Image

from ram_infer import __version__, engine
from ram_infer.cli import main

from conftest import EXAMPLES, TINY_GLIMPSES


@pytest.fixture
def run(tiny_rnn_path, capsys):
    """Runs ``ram-infer --model <tiny model> ARGS…``; returns (exit status, stdout lines, stderr lines)."""

    def run_cli(*args: str, model: bool = True):
        status = main([*args, "--model", str(tiny_rnn_path)] if model else list(args))
        out, err = capsys.readouterr()
        return status, out.splitlines(), err.splitlines()

    return run_cli


@pytest.fixture
def files(digit_files) -> list[str]:
    return [str(path) for path in digit_files]


def test_text_output_has_one_line_per_file(run, files):
    status, out, err = run(*files)
    assert (status, err, [line.split(": ")[0] for line in out]) == (0, [], files)


def test_text_output_shows_label_confidence_and_glimpses(run, files):
    _, out, _ = run(files[0])
    assert out[0].startswith(f"{files[0]}: ") and out[0].endswith(f"%, {TINY_GLIMPSES} glimpses)")


def test_json_lines_follow_the_schema(run, files):
    status, out, _ = run(*files, "--json")
    records = [json.loads(line) for line in out]
    assert status == 0 and [r["file"] for r in records] == files
    for record in records:
        assert set(record) == {"file", "label", "confidence", "locations", "glimpses_used"}
        assert record["label"] in list("0123456789") and 0 < record["confidence"] <= 1
        assert len(record["locations"]) == record["glimpses_used"] == TINY_GLIMPSES
        assert all(len(xy) == 2 and all(-1 <= v <= 1 for v in xy) for xy in record["locations"])


def test_top_k_lists_k_classes_best_first(run, files):
    _, out, _ = run(files[0], "--json", "--top-k", "3")
    record = json.loads(out[0])
    probabilities = [entry["probability"] for entry in record["top_k"]]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert record["top_k"][0] == {"label": record["label"], "probability": record["confidence"]}


def test_top_k_in_text_output(run, files):
    _, out, _ = run(files[0], "--top-k", "2")
    assert out[0].count("%") == 3  # the confidence and two classes


def test_directory_expands_to_its_images(run, files, tmp_path):
    for name in files:
        shutil.copy(name, tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    status, out, _ = run(str(tmp_path), "--json")
    assert status == 0 and len(out) == len(files)


def test_directory_without_images_fails(run, tmp_path):
    status, out, err = run(str(tmp_path))
    assert (status, out) == (2, [])
    assert err == [f"{tmp_path}: directory has no image files (.png, .jpg, .jpeg, .bmp, .webp, .tif, .tiff, .gif)"]


@pytest.fixture
def bad_file(tmp_path) -> str:
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    return str(path)


def test_bad_file_among_good_ones_exits_2(run, files, bad_file):
    status, _, _ = run(files[0], bad_file, files[1])
    assert status == 2


def test_bad_file_gets_one_line_naming_it(run, files, bad_file):
    _, _, err = run(files[0], bad_file, files[1])
    assert len(err) == 1 and err[0].startswith(f"{bad_file}: ") and "Traceback" not in err[0]


def test_good_files_are_still_reported_around_a_bad_one(run, files, bad_file):
    _, out, _ = run(files[0], bad_file, files[1])
    assert [line.split(": ")[0] for line in out] == [files[0], files[1]]


def test_bad_file_in_json_mode_gets_an_error_record(run, files, bad_file):
    _, out, _ = run(files[0], bad_file, "--json")
    assert set(json.loads(out[1])) == {"file", "error"} and json.loads(out[1])["file"] == bad_file


@pytest.mark.parametrize("name", ["missing.png", "empty.png"])
def test_missing_or_empty_file_fails_with_one_line(run, tmp_path, name):
    if name == "empty.png":
        (tmp_path / name).write_bytes(b"")
    status, out, err = run(str(tmp_path / name))
    assert (status, out, len(err)) == (2, [], 1) and err[0].startswith(str(tmp_path / name))


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_trace_of_one_file_is_written_and_decodes(run, files, tmp_path, suffix):
    out_path = tmp_path / f"trace{suffix}"
    status, _, _ = run(files[0], "--trace", str(out_path))
    with Image.open(out_path) as image:
        assert status == 0 and min(image.size) >= 280
        assert getattr(image, "n_frames", 1) == (TINY_GLIMPSES if suffix == ".gif" else 1)


def test_trace_of_several_files_appends_their_stems(run, files, tmp_path):
    run(*files[:2], "--trace", str(tmp_path / "trace.gif"))
    expected = sorted(f"trace_{name.rsplit('/', 1)[-1][:-4]}.gif" for name in files[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == expected


def test_early_exit_reports_glimpses_used(run, files):
    _, out, _ = run(*files, "--json", "--early-exit", "0.01")
    assert all(json.loads(line)["glimpses_used"] == 1 for line in out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], r"argument --top-k: must be >= 1, got 0"),
        (["--early-exit", "2"], r"argument --early-exit: must be in \(0, 1\], got 2.0"),
        (["--trace", "out.jpg"], r"argument --trace: must end in .png or .gif, got 'out.jpg'"),
        (["--frobnicate"], r"unrecognized arguments: --frobnicate"),
        (["--model", ""], r"^ram-infer: argument --model: must name a bundled model or a file, got an empty string"),
    ],
)
def test_bad_option_exits_2_with_one_line(run, files, args, message):
    status, _, err = run(files[0], *args, model=False)
    assert status == 2 and len(err) == 1 and re.search(message, err[0]) and err[0].endswith("(see ram-infer --help)")


def test_no_files_exits_2(run):
    status, _, err = run()
    assert (status, err) == (2, ["ram-infer: no input files (see ram-infer --help)"])


def test_missing_model_file_exits_2(run, files, tmp_path):
    status, out, err = run(files[0], "--model", str(tmp_path / "nope.onnx"), model=False)
    assert (status, out, len(err)) == (2, [], 1) and "nope.onnx: no such model file" in err[0]


def test_corrupt_model_exits_2(run, files, bad_file):
    status, _, err = run(files[0], "--model", bad_file, model=False)
    assert (status, len(err)) == (2, 1) and err[0].startswith(f"{bad_file}: not a readable ONNX model (")


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty bundled-models folder in place of ram_infer/models."""
    directory = tmp_path / "models"
    directory.mkdir()
    monkeypatch.setattr(engine, "MODELS_DIR", directory)
    return directory


def test_no_bundled_model_says_so(run, files, models_dir):
    status, _, err = run(files[0], model=False)
    assert status == 2 and err == [
        "ram-infer: no bundled model 'mnist' in this installation yet; pass --model PATH.onnx "
        "(export one with ram-train export)"
    ]


def test_bundled_model_is_the_default(run, files, models_dir, tiny_rnn_path):
    shutil.copy(tiny_rnn_path, models_dir / "mnist.onnx")
    status, out, _ = run(files[0], model=False)
    assert (status, len(out)) == (0, 1)


def test_list_models_shows_the_test_error(run, models_dir, tiny_rnn_path):
    shutil.copy(tiny_rnn_path, models_dir / "tiny.onnx")
    status, out, _ = run("--list-models", model=False)
    path = models_dir / "tiny.onnx"
    assert status == 0 and [line.split() for line in out] == [
        ["model", "data", "set", "glimpses", "test", "error", "file"],
        ["tiny", "mnist", str(TINY_GLIMPSES), "50.00%", str(path)],
    ]


def test_list_models_without_models_says_so(run, models_dir):
    status, out, _ = run("--list-models", model=False)
    assert (status, out) == (0, [f"no bundled models yet (looked in {models_dir})"])


def test_version(run):
    assert run("--version", model=False)[:2] == (0, [f"ram-infer {__version__}"])


def test_examples_folder_runs_end_to_end(run):
    status, out, err = run(str(EXAMPLES), "--json")
    assert (status, err, len(out)) == (0, [], len(list(EXAMPLES.glob("*.png")) + list(EXAMPLES.glob("*.jpg"))))


def test_csv_output_has_a_header_and_one_row_per_input(run, files, tmp_path):
    import csv

    status, out, _ = run(*files, str(tmp_path / "missing.png"), "--format", "csv", "--top-k", "2")
    rows = list(csv.DictReader(out))
    assert status == 2 and len(rows) == len(files) + 1
    assert rows[0]["file"] == files[0] and rows[0]["label"] and float(rows[0]["confidence"]) > 0
    assert len(rows[0]["top_k"].split(";")) == 2 and rows[0]["error"] == ""
    assert rows[-1]["error"] == "no such file" and rows[-1]["label"] == ""


def test_recursive_finds_images_in_subfolders(run, files, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(files[0], tmp_path / "a" / "b" / "deep.png")
    shutil.copy(files[1], tmp_path / "top.png")
    assert run(str(tmp_path))[1] == [line for line in run(str(tmp_path / "top.png"))[1]]
    status, out, _ = run(str(tmp_path), "--recursive")
    assert status == 0 and [line.split(":")[0] for line in out] == [
        str(tmp_path / "a" / "b" / "deep.png"),
        str(tmp_path / "top.png"),
    ]


def test_an_unavailable_provider_falls_back_with_one_line(run, files):
    status, out, err = run(files[0], "--provider", "NoSuchExecutionProvider")
    assert (status, len(out)) == (0, 1)
    assert err == [
        "ram-infer: execution provider(s) ['NoSuchExecutionProvider'] not available in this onnxruntime; "
        "falling back to ['CPUExecutionProvider']"
    ]


def test_dash_reads_one_image_from_standard_input(tiny_rnn_path, files):
    import subprocess
    import sys
    from pathlib import Path

    command = [sys.executable, "-m", "ram_infer", "-", files[0], "--model", str(tiny_rnn_path)]
    result = subprocess.run(command, input=Path(files[0]).read_bytes(), capture_output=True, timeout=120)
    piped, named = result.stdout.decode().splitlines()
    assert result.returncode == 0 and piped.removeprefix("-") == named.removeprefix(files[0])
    alone = [sys.executable, "-m", "ram_infer", "-", "--model", str(tiny_rnn_path)]
    refused = subprocess.run(alone, input=b"not an image", capture_output=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.decode().startswith("-: not an image file")


def test_trace_is_drawn_on_the_users_image_around_the_digit(run, tmp_path):
    """A 7 drawn at the right of a 600×400 page: the trace is that page, with the boxes around the digit."""
    import numpy as np
    from PIL import ImageDraw

    page = Image.new("RGB", (600, 400), "white")
    ImageDraw.Draw(page).line([(400, 120), (460, 120), (420, 260)], fill="black", width=12)
    page.save(tmp_path / "page.png")
    status, out, _ = run(str(tmp_path / "page.png"), "--trace", str(tmp_path / "trace.png"))
    with Image.open(tmp_path / "trace.png") as trace:
        pixels = np.asarray(trace.convert("RGB")).astype(int)  # (400, 600, 3)
    coloured = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).sum(axis=2) > 60  # the boxes, not grey
    rows, cols = np.nonzero(coloured)
    assert status == 0 and pixels.shape == (400, 600, 3)
    assert cols.min() > 250 and rows.min() > 20 and rows.max() < 380  # around the digit, not over the page
