"""Models and runs that misbehave after loading, and the edges of a run: each ends in one line and its exit status.

Non-finite outputs of a step network (an overflowing recurrent state, NaN locations or logits), labels that would
forge output lines or reach the terminal as escape sequences, a file that shadows a bundled model's name, thread
counts above the cores, Ctrl-C, a closed pipe, a full disk, a trace that cannot be written, a model path that is a
FIFO. Runs that must be seen at the file-descriptor level (ONNX Runtime's own log, signals, pipes) are subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ram_infer import ModelFormatError, load_model
from ram_infer.cli import main
from ram_infer.engine import usable_cores

onnx = pytest.importorskip("onnx")
helper, numpy_helper = onnx.helper, onnx.numpy_helper
BUNDLED_MNIST = Path(load_model("mnist", threads=1).path)


def _edited(source: Path, directory: Path, name: str, edit) -> Path:
    proto = onnx.load(str(source))
    edit(proto)
    path = directory / f"{name}.onnx"
    onnx.save(proto, str(path))
    return path


def _set_metadata(key: str, value) -> callable:
    def edit(proto) -> None:
        entry = next(p for p in proto.metadata_props if p.key == key)
        entry.value = json.dumps(value)

    return edit


def _poison_output(output: str, value: float):
    """Adds ``value`` (NaN or inf) to one output of the step network."""

    def edit(proto) -> None:
        for node in proto.graph.node:
            node.output[:] = [f"{output}_raw" if name == output else name for name in node.output]
        poison = numpy_helper.from_array(np.array(value, np.float32))
        proto.graph.node.extend(
            [
                helper.make_node("Constant", [], ["poison"], value=poison),
                helper.make_node("Add", [f"{output}_raw", "poison"], [output]),
            ]
        )

    return edit


def _cli(*args: str, cwd: Path | None = None, **options) -> subprocess.CompletedProcess:
    """``ram-infer ARGS`` as a separate process, so that what reaches file descriptor 2 is seen too."""
    return subprocess.run(
        [sys.executable, "-m", "ram_infer", *args], capture_output=True, text=True, cwd=cwd, timeout=120, **options
    )


@pytest.fixture(scope="module")
def poisoned(tiny_rnn_path, tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("poisoned")
    edits = {
        "nan-location": _poison_output("location_next", float("nan")),
        "inf-state": _poison_output("state_next", float("inf")),
        "nan-logits": _poison_output("logits", float("nan")),
        "inf-location": _poison_output("location_next", float("inf")),
    }
    return {name: _edited(tiny_rnn_path, directory, name, edit) for name, edit in edits.items()}


def _outer_product_bomb(proto, n: int = 20_000) -> None:
    """Allowed operators that multiply sizes: the location as a column times a row of n, twice (n = 20 000: 3.2 GB
    a row)."""
    row = numpy_helper.from_array(np.ones((1, n), np.float32))
    column = numpy_helper.from_array(np.array([-1, 1], np.int64))
    for node in proto.graph.node:
        node.output[:] = ["logits_raw" if name == "logits" else name for name in node.output]
    proto.graph.node.extend(
        [
            helper.make_node("Constant", [], ["column"], value=column),
            helper.make_node("Constant", [], ["row"], value=row),
            helper.make_node("Reshape", ["location", "column"], ["c1"]),  # (2 batch, 1)
            helper.make_node("MatMul", ["c1", "row"], ["outer1"]),  # (2 batch, 20 000)
            helper.make_node("Reshape", ["outer1", "column"], ["c2"]),  # (40 000 batch, 1)
            helper.make_node("MatMul", ["c2", "row"], ["outer2"]),  # (40 000 batch, 20 000): 3.2 GB a row
            helper.make_node("ReduceSum", ["outer2"], ["total"], keepdims=0),
            helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["logits_raw", "nothing"], ["logits"]),
        ]
    )


def test_a_graph_that_multiplies_sizes_is_stopped_by_the_memory_bound(tiny_rnn_path, tmp_path, digit_files):
    """ONNX Runtime's arena holds ORT_MEMORY_BYTES at most: the 3.2 GB tensor is refused, not allocated."""
    import resource

    model = _edited(tiny_rnn_path, tmp_path, "bomb", _outer_product_bomb)
    with pytest.raises(ModelFormatError, match=r"bomb\.onnx: the step network failed to run \(.*3200000000"):
        load_model(model, threads=1)  # the step run at load asks for it
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 2 << 20  # KiB: the process stayed under 2 GiB


def test_a_model_whose_episode_would_take_too_long_is_refused_at_load(tiny_rnn_path, tmp_path):
    """Within the memory bound a step can still be slow (here 2 × 2 500² values a step, tens of ms), and T = 1000
    comes from the metadata alone: one timed step at load refuses it."""

    def slow(proto) -> None:
        _outer_product_bomb(proto, n=2_500)
        _set_metadata("ram.num_glimpses", 1000)(proto)

    model = _edited(tiny_rnn_path, tmp_path, "slow_steps", slow)
    started = time.monotonic()
    message = r"slow_steps\.onnx: one step takes .* at batch 1, so 1000 glimpses would take more than 1 s"
    with pytest.raises(ModelFormatError, match=message):
        load_model(model, threads=1)
    assert time.monotonic() - started < 10


def test_weights_alone_are_not_folded_at_load_outside_the_memory_bound(tiny_rnn_path, tmp_path):
    """PRelu of a [n, 1] and a [1, n] weight is an n × n tensor: ONNX Runtime's constant folding computed such nodes
    once at load, outside the arena's bound (the model fuzzer saw 3.5 GB). Unfolded, it is computed at every step,
    where the arena bounds it and the timed step at load refuses the model (T = 1000)."""
    n = 4_000

    def weights_alone(proto) -> None:
        for node in proto.graph.node:
            node.output[:] = ["logits_raw" if name == "logits" else name for name in node.output]
        proto.graph.initializer.extend(
            [numpy_helper.from_array(np.ones((n, 1), np.float32), "tall"),
             numpy_helper.from_array(np.ones((1, n), np.float32), "wide")]
        )
        proto.graph.node.extend(
            [
                helper.make_node("PRelu", ["tall", "wide"], ["square"]),  # (n, n) from weights alone
                helper.make_node("ReduceSum", ["square"], ["total"], keepdims=0),
                helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
                helper.make_node("Mul", ["total", "zero"], ["nothing"]),
                helper.make_node("Add", ["logits_raw", "nothing"], ["logits"]),
            ]
        )
        _set_metadata("ram.num_glimpses", 1000)(proto)

    model = _edited(tiny_rnn_path, tmp_path, "weights_alone", weights_alone)
    with pytest.raises(ModelFormatError, match=r"weights_alone\.onnx: one step takes .* so 1000 glimpses would take"):
        load_model(model, threads=1)


@pytest.mark.parametrize("name", ["nan-location", "inf-state", "nan-logits", "inf-location"])
def test_non_finite_step_outputs_raise_model_format_error(poisoned, digit_files, name):
    engine = load_model(poisoned[name], threads=1)
    with pytest.raises(ModelFormatError, match=rf"{name}\.onnx: the step network gave (a NaN location|non-finite)"):
        engine.predict_files(digit_files)


@pytest.mark.parametrize("name", ["nan-location", "inf-state", "nan-logits"])
def test_cli_reports_non_finite_outputs_in_one_line_without_json_records(poisoned, digit_files, name):
    result = _cli(str(digit_files[0]), "--json", "--model", str(poisoned[name]))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and "the step network gave" in result.stderr


def test_bundled_mnist_with_1000_glimpses_overflows_into_a_model_error(tmp_path, digit_files):
    """The review's repro: the ReLU state of the bundled model overflows at step 751 on examples/digit_7.png."""
    model = _edited(BUNDLED_MNIST, tmp_path, "mnist1000", _set_metadata("ram.num_glimpses", 1000))
    result = _cli(*map(str, digit_files), "--json", "--model", str(model))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{model}: the step network gave a NaN location\n"


def test_a_model_that_fails_to_run_prints_one_line_on_file_descriptor_2(tiny_rnn_path, tmp_path, digit_files):
    """ONNX Runtime logs a failing node itself, on fd 2; only our line may reach it."""
    from test_bad_models import _logits_wider_than_declared

    model = _edited(tiny_rnn_path, tmp_path, "lying", _logits_wider_than_declared)
    result = _cli(str(digit_files[0]), "--model", str(model))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{model}: the step network failed to run (")


def test_bundled_name_wins_over_a_file_of_that_name_in_the_working_directory(tmp_path, digit_files):
    (tmp_path / "mnist").write_bytes(b"not a model")
    shutil.copy(digit_files[0], tmp_path / "digit.png")
    bundled = _cli("digit.png", "--model", "mnist", cwd=tmp_path)
    as_path = _cli("digit.png", "--model", "./mnist", cwd=tmp_path)
    assert bundled.returncode == 0 and bundled.stdout.startswith("digit.png: ")
    assert as_path.returncode == 2 and as_path.stderr.startswith("mnist: not a readable ONNX model")


def test_a_bare_name_that_is_not_bundled_asks_for_a_path(tmp_path, tiny_rnn_path, monkeypatch):
    shutil.copy(tiny_rnn_path, tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"mine: not a bundled model name .* give a file as a path \(\./mine"):
        load_model("mine")
    assert load_model("./mine", threads=1).info.num_classes == 10


HOSTILE_LABELS = ["zero\nforged.png: 1 (100.0%, 4 glimpses)", "\x1b[2J\x1b[31mred", "two\r", "three\u202e"] + [
    str(i) for i in range(4, 10)
]


@pytest.fixture(scope="module")
def hostile_labels_model(tiny_rnn_path, tmp_path_factory) -> Path:
    edit = _set_metadata("ram.labels", HOSTILE_LABELS)
    return _edited(tiny_rnn_path, tmp_path_factory.mktemp("labels"), "hostile_labels", edit)


def test_labels_from_the_metadata_are_escaped_in_text_output(hostile_labels_model, digit_files, capsys):
    status = main([*map(str, digit_files), "--top-k", "10", "--model", str(hostile_labels_model)])
    out, _ = capsys.readouterr()
    assert status == 0
    assert out.count("\n") == len(digit_files) and "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b[31mred" in out and "zero\\nforged.png" in out


def test_labels_from_the_metadata_travel_verbatim_in_json(hostile_labels_model, digit_files, capsys):
    main([*map(str, digit_files), "--json", "--top-k", "10", "--model", str(hostile_labels_model)])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == len(digit_files)
    assert {entry["label"] for entry in records[0]["top_k"]} == set(HOSTILE_LABELS)


def test_threads_above_the_cores_are_capped_with_a_message(tiny_rnn_path, digit_files):
    assert load_model(tiny_rnn_path, threads=256).threads == usable_cores()
    result = _cli(str(digit_files[0]), "--threads", "256", "--model", str(tiny_rnn_path))
    assert result.returncode == 0 and result.stdout.count("\n") == 1
    cores = usable_cores()
    assert result.stderr == f"ram-infer: --threads 256 is more than the {cores} usable cores; using {cores}\n"


@pytest.fixture
def many_digits(tmp_path, digit_files) -> Path:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):
        shutil.copy(digit_files[i % len(digit_files)], folder / f"{i:04d}.png")
    return folder


def test_ctrl_c_ends_a_run_with_status_130(tiny_rnn_path, tmp_path, many_digits):
    slow = _edited(tiny_rnn_path, tmp_path, "slow", _set_metadata("ram.num_glimpses", 1000))  # ≈ 15 ms an image
    process = subprocess.Popen(
        [sys.executable, "-m", "ram_infer", str(many_digits), "--batch-size", "1", "--model", str(slow)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    first = process.stdout.readline()  # it is classifying
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    status = process.wait(timeout=30)
    stderr = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    assert first.startswith(str(many_digits)) and status == 130 and stderr == "ram-infer: interrupted\n"
    assert time.monotonic() - started < 10


def test_a_closed_pipe_ends_the_run_quietly(tiny_rnn_path, many_digits):
    process = subprocess.Popen(
        [sys.executable, "-m", "ram_infer", str(many_digits), "--model", str(tiny_rnn_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # as `| head -1` does once it has its line
    status = process.wait(timeout=60)
    stderr = process.stderr.read()
    process.stderr.close()
    assert (status, stderr) == (2, b"")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_full_disk_gives_one_line(tiny_rnn_path, digit_files):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "ram_infer", *map(str, digit_files), "--model", str(tiny_rnn_path)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert (result.returncode, result.stderr) == (2, "ram-infer: cannot write the output (No space left on device)\n")


def test_a_trace_that_cannot_be_written_gives_one_record_for_its_input(run_json, digit_files, tmp_path):
    status, records = run_json(str(digit_files[0]), "--trace", str(tmp_path / "no-such-folder" / "trace.png"))
    assert status == 2 and len(records) == 1
    assert records[0]["file"] == str(digit_files[0]) and "cannot write the trace" in records[0]["error"]


@pytest.fixture
def run_json(tiny_rnn_path, capsys):
    def run(*args: str) -> tuple[int, list[dict]]:
        status = main([*args, "--json", "--model", str(tiny_rnn_path)])
        return status, [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    return run


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_engine_on_a_fifo_refuses_it_without_blocking(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    code = "\n".join(
        ["import ram_infer", "try:", f"    ram_infer.Engine({str(fifo)!r})", "except ram_infer.ModelFormatError as e:",
         "    print(e)"]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout == f"{fifo}: not a regular file (a pipe, device or socket)\n"


def test_predict_stops_an_internal_batch_that_runs_past_its_deadline(tiny_rnn_path, images, monkeypatch):
    """The timed steps at load see batches 1 and 2 only; predict keeps a deadline of its own (EPISODE_SECONDS an
    image), checked after every step, for a graph whose cost grows faster than the batch. Here the budget is shrunk
    so that any model runs past it."""
    from ram_infer import engine as engine_module

    engine = load_model(tiny_rnn_path, threads=1)
    monkeypatch.setattr(engine_module, "EPISODE_SECONDS", 1e-9)
    monkeypatch.setattr(engine_module, "DEADLINE_SPARE_SECONDS", 0.0)
    for early_exit in (None, 0.99):
        with pytest.raises(ModelFormatError, match=r"tiny_rnn\.onnx: the step network took more than 1e-09 s an "
                                                   r"image on a batch of 64"):
            engine.predict(images, early_exit=early_exit)


def test_a_trace_never_overwrites_its_input(run_json, digit_files, tmp_path):
    victim = tmp_path / "victim.png"
    shutil.copy(digit_files[0], victim)
    before = victim.read_bytes()
    status, records = run_json(str(victim), "--trace", str(victim))
    assert status == 2 and records == [{"file": str(victim), "error": f"the trace {victim} would overwrite the input"}]
    assert victim.read_bytes() == before


def test_a_long_label_is_cut_short_on_the_trace(tiny_rnn_path, tmp_path, digit_files):
    model = _edited(tiny_rnn_path, tmp_path, "long_label", _set_metadata("ram.labels", ["x" * 100_000] * 10))
    result = _cli(str(digit_files[0]), "--trace", str(tmp_path / "trace.png"), "--json", "--model", str(model))
    assert result.returncode == 0 and result.stderr == "" and (tmp_path / "trace.png").stat().st_size > 0


def test_csv_cells_that_look_like_formulas_are_quoted_as_text(tiny_rnn_path, tmp_path, digit_files, capsys):
    import csv

    labels = ['=HYPERLINK("http://example.invalid/","x")'] + [f"+{i}" for i in range(1, 10)]
    model = _edited(tiny_rnn_path, tmp_path, "formulas", _set_metadata("ram.labels", labels))
    main([*map(str, digit_files), "--format", "csv", "--model", str(model)])
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert rows and all(row["label"].startswith("'") for row in rows)


def test_closed_standard_streams_give_one_line(tiny_rnn_path, digit_files):
    model = ["--model", str(tiny_rnn_path)]
    stdin_closed = subprocess.run([sys.executable, "-m", "ram_infer", "-", str(digit_files[0]), *model],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                                  preexec_fn=lambda: os.close(0))
    assert stdin_closed.returncode == 2 and stdin_closed.stderr == "-: standard input is closed\n"
    stdout_closed = subprocess.run([sys.executable, "-m", "ram_infer", str(digit_files[0]), *model],
                                   stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1))
    assert (stdout_closed.returncode, stdout_closed.stderr) == (2, "ram-infer: standard output is closed\n")


def test_a_too_small_value_scale_is_refused(tiny_rnn_path, tmp_path):
    shape = {"height": 28, "width": 28, "channels": 1, "value_scale": 1e-45, "background": "dark",
             "placement": "mnist"}
    model = _edited(tiny_rnn_path, tmp_path, "tiny_scale", _set_metadata("ram.input", shape))
    with pytest.raises(ModelFormatError, match=r"ram\.input\.value_scale must be a number in \(1e-06, 1e\+06\]"):
        load_model(model, threads=1)


def test_sparse_tensors_and_too_many_operators_are_refused(tiny_rnn_path, tmp_path):
    def sparse(proto) -> None:
        values = numpy_helper.from_array(np.ones(1, np.float32), "huge")
        indices = numpy_helper.from_array(np.zeros(1, np.int64), "huge_indices")
        proto.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [20_000, 20_000]))

    def many(proto) -> None:
        proto.graph.node.extend(helper.make_node("Neg", ["location"], [f"neg{i}"]) for i in range(10_001))

    with pytest.raises(ModelFormatError, match=r"holds sparse tensors, which a step model does not use"):
        load_model(_edited(tiny_rnn_path, tmp_path, "sparse", sparse), threads=1)
    with pytest.raises(ModelFormatError, match=r"\d+ operators, more than a step model's limit of 10000"):
        load_model(_edited(tiny_rnn_path, tmp_path, "many", many), threads=1)
