"""Bad inputs never crash: every corpus file (tests/make_bad_inputs.py) decodes or fails with one clear line.

The Python API raises ``ImageError`` (a ``ValueError``) whose message is ``path: problem``; the CLI prints that line,
exits 2 and still classifies the other files of the call. Arrays with NaN and infinities, odd dtypes and layouts go
through the array entry points.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ram_infer import extract_glimpses, load_model
from ram_infer.cli import main
from ram_infer.images import ImageError, load_image, prepare_array
from ram_infer.metadata import InputFormat
from ram_infer.sensor import centre_pixel

from make_bad_inputs import Case, cases_and_writers, make_corpus

MNIST = InputFormat(height=28, width=28, channels=1)
CASES = [case for case, _ in cases_and_writers()]
VALID = [case for case in CASES if case.valid]
INVALID = [case for case in CASES if not case.valid]


def _ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("bad inputs")
    make_corpus(directory)
    return directory


@pytest.fixture
def run(tiny_rnn_path, capsys):
    """Runs ``ram-infer --model <tiny model> ARGS…`` in-process; returns (exit status, stdout lines, stderr lines)."""

    def run_cli(*args: str):
        status = main([*map(str, args), "--model", str(tiny_rnn_path)])
        out, err = capsys.readouterr()
        return status, out.splitlines(), err.splitlines()

    return run_cli


@pytest.fixture(scope="module")
def good(digit_files) -> str:
    return str(digit_files[0])


# ---------------------------------------------------------------------------------------------------------------------
# The Python API.
@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_valid_file_decodes_to_the_input_format(corpus, case):
    x = load_image(corpus / case.name, MNIST)
    assert (x.shape, x.dtype, bool(np.isfinite(x).all())) == ((1, 28, 28), np.float32, True)
    assert 0 <= x.min() <= x.max() <= 1


@pytest.mark.parametrize("case", INVALID, ids=_ids(INVALID))
def test_bad_file_raises_image_error_naming_it(corpus, case):
    path = corpus / case.name
    with pytest.raises(ImageError, match=rf"^{re.escape(str(path))}: {case.problem}$"):
        load_image(path, MNIST)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_predict_files_reports_the_image_error_and_answers_the_rest(tiny_rnn_path, corpus, good):
    prediction = load_model(tiny_rnn_path, threads=1).predict_files([good, corpus / "truncated.png"])
    assert prediction.errors[0] is None and prediction.ok.tolist() == [True, False]
    assert re.search(r"truncated\.png: cannot decode the image", prediction.errors[1])


# ---------------------------------------------------------------------------------------------------------------------
# The CLI: one line per input, exit 2 on any failure, the other inputs still classified.
@pytest.mark.parametrize("case", INVALID, ids=_ids(INVALID))
def test_cli_reports_a_bad_file_in_one_line(run, corpus, good, case):
    path = str(corpus / case.name)
    status, out, err = run(good, path, good)
    assert status == 2
    assert len(err) == 1 and re.fullmatch(rf"{re.escape(path)}: {case.cli_problem or case.problem}.*", err[0])
    assert [line.split(": ")[0] for line in out] == [good, good]


@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_cli_classifies_a_valid_file(run, corpus, good, case):
    path = str(corpus / case.name)
    status, out, err = run(good, path)
    assert (status, err) == (0, [])
    assert [line.rsplit(": ", 1)[0] for line in out] == [good, path]


def test_cli_json_gives_one_record_per_input_in_order(run, corpus):
    paths = [str(corpus / case.name) for case in CASES]
    status, out, _ = run(*paths, "--json")
    records = [json.loads(line) for line in out]
    assert status == 2 and [r["file"] for r in records] == paths
    assert [("error" not in r) for r in records] == [case.valid for case in CASES]


def test_cli_on_the_corpus_folder_classifies_every_image_file(run, corpus):
    status, out, err = run(corpus, "--json")
    records = [json.loads(line) for line in out]
    decoded = sorted(Path(r["file"]).name for r in records if "error" not in r)
    assert status == 2 and decoded == sorted(case.name for case in VALID)


def test_cli_max_pixels_refuses_larger_images(run, good):
    status, _, err = run(good, "--max-pixels", "100")
    assert (status, err) == (2, [f"{good}: 28×28 pixels is more than the limit of 100"])


def test_cli_escapes_a_newline_in_a_file_name(run, corpus, tmp_path):
    path = tmp_path / "two\nlines.png"
    path.write_bytes((corpus / "one pixel.png").read_bytes())
    status, out, _ = run(path)
    assert status == 0 and len(out) == 1 and out[0].startswith(f"{tmp_path}/two\\nlines.png: ")


def test_cli_escapes_a_newline_in_an_error_line(run, tmp_path):
    status, _, err = run(tmp_path / "no\nsuch.png")
    assert (status, err) == (2, [f"{tmp_path}/no\\nsuch.png: no such file"])


@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes on Linux")
def test_cli_process_survives_undecodable_names_and_an_ascii_terminal(tiny_rnn_path, corpus, good, tmp_path):
    """A real process: file names that are not UTF-8 and an ASCII-only stdout must not end in a traceback."""
    undecodable = os.fsencode(tmp_path) + b"/\xff\xfe.png"
    Path(os.fsdecode(undecodable)).write_bytes(Path(good).read_bytes())
    unicode_name = str(corpus / "数字 七 é.png")
    command = [sys.executable, "-m", "ram_infer", "--model", str(tiny_rnn_path), undecodable, unicode_name, good]
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run(command, capture_output=True, env=env, timeout=120)
    lines = result.stdout.decode("ascii").splitlines()
    assert (result.returncode, result.stderr) == (0, b"")
    assert [line.rsplit(": ", 1)[0] for line in lines] == [
        f"{tmp_path}/\\udcff\\udcfe.png",
        unicode_name.encode("ascii", "backslashreplace").decode("ascii"),
        good,
    ]


def test_cli_process_on_the_whole_corpus_has_no_traceback(tiny_rnn_path, corpus, good):
    paths = [str(corpus / case.name) for case in CASES]
    command = [sys.executable, "-m", "ram_infer", "--model", str(tiny_rnn_path), *paths, good]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stdout.splitlines()) == len(VALID) + 1
    # Exactly one line per bad file on file descriptor 2: nothing from the decoders themselves (libtiff prints).
    assert len(result.stderr.splitlines()) == len(CASES) - len(VALID)


# ---------------------------------------------------------------------------------------------------------------------
# Arrays from Python.
NON_FINITE = {
    "all-nan": np.full((28, 28), np.nan, np.float32),
    "all-inf": np.full((28, 28), np.inf, np.float64),
    "minus-inf": np.full((5, 7), -np.inf, np.float32),
    "mixed": np.array([[np.nan, np.inf], [-np.inf, 0.5]], np.float32),
}


@pytest.mark.parametrize("array", list(NON_FINITE.values()), ids=list(NON_FINITE))
def test_prepare_array_maps_nan_and_inf_into_range(array):
    x = prepare_array(array, MNIST)
    assert bool(np.isfinite(x).all()) and 0 <= x.min() <= x.max() <= 1


@pytest.mark.parametrize(
    "array",
    [np.zeros((28, 28), np.complex64), np.array([["a", "b"]]), np.zeros((28, 28), object)],
    ids=["complex", "strings", "objects"],
)
def test_prepare_array_refuses_non_numeric_dtypes(array):
    with pytest.raises(ImageError, match=r"array: array dtype must be uint8, uint16 or float"):
        prepare_array(array, MNIST)


@pytest.fixture(scope="module")
def engine(tiny_rnn_path):
    return load_model(tiny_rnn_path, threads=1)


@pytest.mark.parametrize("early_exit", [None, 0.9])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_predict_refuses_non_finite_pixels_that_a_glimpse_reads(engine, images, value, early_exit):
    x = images[:4].copy()
    x[1, 0, 10:18, 10:18] = value  # under the first glimpse, at the centre
    with pytest.raises(ValueError, match=r"^images must be finite, got NaN or inf in image 1$"):
        engine.predict(x, early_exit=early_exit)


def test_non_finite_pixels_no_glimpse_reads_change_nothing(engine, images):
    """The images are not scanned whole (the cost would grow with their size): what no glimpse reads is irrelevant."""
    x = images[:4].copy()
    clean = engine.predict(x)
    spec, (H, W) = engine.info.sensor, x.shape[2:]
    read = np.zeros((len(x), H, W), bool)  # pixels some patch of some glimpse covers
    largest = spec.glimpse_size * spec.scale_factor ** (spec.num_scales - 1)
    for n, t in np.ndindex(clean.locations.shape[:2]):
        cx, cy = (int(centre_pixel(v, size)) for v, size in zip(clean.locations[n, t], (W, H)))
        top, left = cy - largest // 2, cx - largest // 2
        read[n, max(top, 0) : top + largest, max(left, 0) : left + largest] = True
    unread = np.argwhere(~read)
    assert len(unread), "every pixel is glimpsed: pick a larger image or a smaller sensor"
    for n, row, col in unread:
        x[n, :, row, col] = np.nan
    result = engine.predict(x)
    np.testing.assert_array_equal(result.logits, clean.logits)
    np.testing.assert_array_equal(result.locations, clean.locations)


@pytest.mark.parametrize(
    "make",
    [lambda x: x.astype(">f4"), lambda x: np.asfortranarray(x), lambda x: np.repeat(x, 2, axis=3)[..., ::2]],
    ids=["big-endian", "fortran-order", "strided"],
)
def test_predict_accepts_any_float32_layout(engine, images, make):
    x = images[:8]
    assert np.array_equal(engine.predict(make(x)).probabilities, engine.predict(x).probabilities)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_sensor_refuses_big_endian_images(backend):
    images = np.zeros((1, 1, 4, 4), ">f4")
    with pytest.raises(ValueError, match=r"images must be float32, got >f4"):
        extract_glimpses(images, np.zeros((1, 2), np.float32), 2, 1, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_sensor_refuses_absurd_scale_counts_without_hanging(backend):
    # Before the kMaxScales bound, s = 1 let the patch-side check loop ~10^18 times (fuzz/fuzz_sensor.cpp).
    images, locations = np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match=r"num_scales must be <= 64, got 1000000000000000000"):
        extract_glimpses(images, locations, 2, 10**18, 1, backend=backend)
