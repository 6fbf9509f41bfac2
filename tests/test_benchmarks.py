"""Smoke tests of the benchmark scripts: each runs in --quick mode and writes its results; the eager peer's weights."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import export_tiny_model

pytestmark = pytest.mark.slow  # the development tier (pytest -m "not slow") skips these; CI runs all

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# A script imports its sibling helpers (_machine, eager_ram, cnns) from its own folder, which PYTHONSAFEPATH (set by
# .ci/run so that tests import the installed package) would hide; run the scripts the way a person does.
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONSAFEPATH"}


def run_script(script: str, *args: str | Path, env: dict[str, str] | None = None,
               returncode: int = 0) -> subprocess.CompletedProcess:
    """Runs a benchmark script (``env`` added to the environment) and checks its exit status."""
    command = [sys.executable, str(BENCHMARKS / script), *map(str, args)]
    result = subprocess.run(command, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=600)
    assert result.returncode == returncode, result.stderr
    return result


def table_rows(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]


def parse_tables(path: Path) -> list[list[dict[str, str]]]:
    """Every Markdown table of a results file, each a list of {header: cell} rows."""
    tables, header = [], None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
        elif header is None:
            header = cells
            tables.append([])
        elif not set(line) <= set("|-: "):  # not the separator row
            tables[-1].append(dict(zip(header, cells)))
    return tables


def number(cell: str) -> float:
    """A table cell's number: ``79,659``, ``1.71×``, ``99.30 %`` → 79659.0, 1.71, 99.3."""
    return float(cell.replace(",", "").replace("×", "").replace("%", "").strip())


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory) -> Path:
    """A classic mnist.pkl.gz of random digits (train 64, valid 8, test 300) in the format training/data.py reads."""
    rng = np.random.default_rng(0)
    splits = []
    for size in (64, 8, 300):
        pixels = rng.integers(0, 256, (size, 28 * 28)).astype(np.float32) * (rng.random((size, 1)) < 0.5)
        splits.append(((pixels / np.float32(256)).astype(np.float32), np.arange(size, dtype=np.int64) % 10))
    directory = tmp_path_factory.mktemp("mnist")
    (directory / "mnist.pkl.gz").write_bytes(gzip.compress(pickle.dumps(tuple(splits), protocol=2)))
    return directory


@pytest.fixture
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def test_bench_sensor_quick(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "sensor.md"
    run_script("bench_sensor.py", "--quick", "--out", out)
    (rows,) = parse_tables(out)
    sizes = [f"{side}×{side}" for side in (28, 60, 100, 400)]  # bench_sensor.IMAGE_SIDES
    assert [(row["batch"], row["image"]) for row in rows] == [(batch, size) for batch in ("1", "256") for size in sizes]
    for row in rows:
        rates = {name: number(row[name]) for name in ("C++ (1 thread)", "C++", "numpy reference")}  # glimpses/s
        assert all(value > 0 for value in rates.values())
        best = max(rates["C++ (1 thread)"], rates["C++"])  # each side at its better thread count
        assert number(row["C++ / numpy"]) == pytest.approx(best / rates["numpy reference"], rel=0.01, abs=0.06)


def test_bench_engine_quick(tmp_path, fake_mnist):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    model = export_tiny_model("rnn", tmp_path).path
    second = export_tiny_model("rnn", tmp_path / "second").path  # a second MNIST model: its own peer and targets
    run_script("bench_engine.py", "--quick", "--ram-model", model, second, "--data", fake_mnist, "--out-dir", tmp_path)
    contenders = [table for table in parse_tables(tmp_path / "engine.md") if "contender" in table[0]]
    assert len(contenders) == 2  # one per model; the first also has the CNNs
    for rows in contenders:
        by_name = {(row["contender"], row["threads"]): row for row in rows}
        ram, eager = by_name["ram-infer", "1"], by_name["eager PyTorch RAM", "1"]
        episode = next(row for (name, threads), row in by_name.items() if name.startswith("full-episode ONNX"))
        for row in rows:
            assert 0 < number(row["batch-1 median µs"]) <= number(row["batch-1 p99 µs"])
            assert number(row["batch-256 images/s"]) > 0 and 0 <= number(row["test accuracy"]) <= 100
        # The three run the same weights: the same answers, so the same accuracy on the same images.
        assert ram["test accuracy"] == eager["test accuracy"] == episode["test accuracy"]
        assert number(ram["glimpses"]) == 4  # the tiny model's T, all glimpses without early exit
    assert {row["contender"] for row in contenders[0]} >= {"paper CNN (ONNX Runtime)", "ResNet-8 (ONNX Runtime)"}
    assert "## tiny_rnn: mnist 28×28" in (tmp_path / "engine.md").read_text(encoding="utf-8")
    assert (tmp_path / "engine.png").stat().st_size > 0


@pytest.mark.parametrize("cnn", ["paper_cnn", "resnet8"])
def test_train_cnn_quick(tmp_path, fake_mnist, cnn):
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / f"{cnn}.onnx"
    run_script("train_cnn.py", "--model", cnn, "--steps", "2", "--batch-size", "16", "--data-root", fake_mnist,
               "--test-images", "64", "--out", out)
    facts = {prop.key: prop.value for prop in onnx.load(str(out)).metadata_props}
    assert facts["bench.task"] == "mnist" and 0 <= float(facts["bench.test_accuracy"]) <= 1


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> dict:
    """A ram-train run on a tiny folder of 40×48 RGB PNGs (3 classes, each its bright channel), laid out as a run
    usually is: ``runs/pngs/config.json`` (the plan's) naming its data ``pngs`` relative to where it ran; a RAM model
    of its input format (random weights: accuracy is not the point), and the cache folder the scripts use."""
    pytest.importorskip("torch")
    from PIL import Image

    from ram_infer.training.export import export_step_model
    from ram_infer.training.model import RecurrentAttention
    from ram_infer.training.plan import plan_run

    root = tmp_path_factory.mktemp("folder_run")
    data = root / "pngs"
    rng = np.random.default_rng(0)
    for i in range(90):
        pixels = rng.integers(0, 64, (40, 48, 3), dtype=np.uint8)
        pixels[..., i % 3] += 128
        (data / f"class_{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(data / f"class_{i % 3}" / f"{i:03d}.png")
    config = plan_run(str(data), ["steps=1"], measure=False).config
    run = root / "runs" / "pngs"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({**config.to_dict(), "data": "pngs"}))  # as typed, in root
    model = root / "pngs.onnx"
    export_step_model(RecurrentAttention(config.model), model, dataset="pngs", labels=config.classes)
    return {"data": data, "run": run, "model": model, "config": config,
            "env": {"RAM_INFER_CACHE": str(root / "cache")}}


@pytest.fixture(scope="module")
def folder_cnns(folder_run, tmp_path_factory) -> Path:
    """The two CNNs trained on the run's folder: paper_cnn through the run, resnet8 from the folder alone (the plan
    gives the same input format and splits)."""
    models = tmp_path_factory.mktemp("folder_cnns")
    own_images = {"paper_cnn": ["--run", folder_run["run"], "--data", folder_run["data"]],
                  "resnet8": ["--data", folder_run["data"]]}
    for cnn, source in own_images.items():
        run_script("train_cnn.py", "--model", cnn, *source, "--steps", "2", "--batch-size", "8",
                   "--out", models / f"{cnn}_pngs.onnx", env=folder_run["env"])
    return models


def test_train_cnn_on_own_images_takes_the_runs_input(folder_run, folder_cnns):
    onnx = pytest.importorskip("onnx")
    config = folder_run["config"]
    for cnn in ("paper_cnn", "resnet8"):
        proto = onnx.load(str(folder_cnns / f"{cnn}_pngs.onnx"))
        facts = {prop.key: prop.value for prop in proto.metadata_props}
        assert facts["bench.task"] == "pngs" and 0 <= float(facts["bench.test_accuracy"]) <= 1
        assert facts["bench.data"] == str(folder_run["data"])
        assert json.loads(facts["bench.input"]) == dataclasses.asdict(config.model.input_format)
        assert ("bench.run" in facts) is (cnn == "paper_cnn")
        dims = [[d.dim_value for d in value.type.tensor_type.shape.dim][1:]
                for value in (proto.graph.input[0], proto.graph.output[0])]
        assert dims == [[3, 40, 48], [3]]  # channels × height × width in, one logit per class out


def test_train_cnn_asks_where_a_runs_relative_data_is(folder_run):
    result = run_script("train_cnn.py", "--model", "resnet8", "--run", folder_run["run"], "--steps", "1",
                        env=folder_run["env"], returncode=2)
    assert "'pngs' is not found" in result.stderr and "--data DIR" in result.stderr


def test_bench_folder_models_quick(tmp_path, folder_run, folder_cnns):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "folder_models.md"
    run_script("bench_folder_models.py", "--quick", "--ram-model", folder_run["model"], "--run", folder_run["run"],
               "--data", folder_run["data"], "--cnn-models", folder_cnns, "--out", out, env=folder_run["env"])
    (rows,) = parse_tables(out)
    assert [row["model"] for row in rows] == ["ram-infer", "paper CNN (ONNX Runtime)", "ResNet-8 (ONNX Runtime)"]
    assert rows[0]["batch-1 latency vs RAM"] == "1.00×"
    for row in rows:
        assert 0 < number(row["batch-1 median µs"]) <= number(row["batch-1 p99 µs"])
        expected = number(row["batch-1 median µs"]) / number(rows[0]["batch-1 median µs"])
        assert number(row["batch-1 latency vs RAM"]) == pytest.approx(expected, abs=0.011)
    for row in rows[1:]:  # the same test split as train_cnn.py measured it on
        facts = {prop.key: prop.value for prop in onnx.load(str(folder_cnns / row["file"].strip("`"))).metadata_props}
        assert number(row["test accuracy"]) / 100 == pytest.approx(float(facts["bench.test_accuracy"]), abs=1e-4)


def test_bench_folder_models_refuses_a_model_of_another_input(tmp_path, folder_run):
    other = export_tiny_model("rnn", tmp_path).path  # MNIST's 28×28 grey input
    result = run_script("bench_folder_models.py", "--quick", "--ram-model", other, "--run", folder_run["run"],
                        "--data", folder_run["data"], "--out", tmp_path / "out.md", env=folder_run["env"],
                        returncode=2)
    assert "export the run's model" in result.stderr and not (tmp_path / "out.md").exists()


def test_bench_train_quick(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "train.md"
    run_script("bench_train.py", "--quick", "--batch-size", "8", "--out", out)
    (rows,) = parse_tables(out)
    # mnist: float32, bfloat16, the eager peer; cluttered60 (an LSTM: no eager peer): float32, bfloat16
    assert [row["trainer"].startswith("ram-train") for row in rows] == [True, True, False, True, True]
    assert {row["batch"] for row in rows} == {"8"}
    for row in rows:
        assert number(row["images/s"]) > 0
    for network in {row["network"] for row in rows}:  # the ratio column is images/s over ram-train float32's
        own = [row for row in rows if row["network"] == network]
        for row in own:
            expected = number(row["images/s"]) / number(own[0]["images/s"])
            assert number(row["vs ram-train float32"]) == pytest.approx(expected, abs=0.011)


def test_bench_folder_quick(tmp_path, fake_mnist):
    pytest.importorskip("torch")
    out = tmp_path / "folder.md"
    run_script("bench_folder.py", "--quick", "--images", "200", "--step-images", "200", "--batch-size", "16",
               "--mnist", fake_mnist, "--out", out)
    requirements, caching, steps = parse_tables(out)
    assert requirements[0]["verdict"] == "not judged (another size)"  # the cache's is for 50,000 images
    assert requirements[1]["verdict"] in ("met", "**not met**")
    assert [row["cache"].split()[0] for row in caching] == ["cold", "warm", "incremental"]
    assert [number(row["images decoded"]) for row in caching] == [200, 0, 2]  # 1 % touched: decoded again
    assert all(number(row["seconds"]) > 0 for row in caching)
    assert [row["data"].split(",")[0] for row in steps] == ["cluttered60", "folder of 60×60 grey PNGs",
                                                            "folder of 64×64 RGB PNGs"]
    assert steps[0]["model"] == steps[1]["model"]  # the folder trains the built-in task's model
    for row in steps:
        assert number(row["images/s"]) == pytest.approx(16 / (number(row["step ms"]) / 1e3), rel=0.01)
        assert 0 < number(row["batch alone ms"]) < number(row["step ms"])
        expected = number(row["step ms"]) / number(steps[0]["step ms"])
        assert number(row["step vs built-in"]) == pytest.approx(expected, abs=0.011)


def test_bench_train_profile_lists_the_steps_operators(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "train.md"
    table = run_script("bench_train.py", "--profile", "--batch-size", "4", "--out", out).stdout
    assert "aten::addmm" in table and "Self CPU time total" in table
    assert not out.exists()  # profiling writes no results table


def test_run_all_runs_the_chosen_benchmarks(tmp_path):
    pytest.importorskip("torch")
    run_script("run_all.py", "--quick", "--only", "sensor", "--out-dir", tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["sensor.md"]


def test_eager_peer_reads_the_exported_weights(tmp_path, benchmarks_on_path):
    torch = pytest.importorskip("torch")
    from eager_ram import model_from_onnx

    tiny = export_tiny_model("rnn", tmp_path)
    expected = {k: v for k, v in tiny.model.state_dict().items() if not k.startswith("baseline_net.")}
    loaded = model_from_onnx(tiny.path).state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in expected.items())


def test_eager_peer_gives_the_engine_labels(tmp_path, benchmarks_on_path, images):
    torch = pytest.importorskip("torch")
    from eager_ram import EagerRAM, eager_predict

    from ram_infer import load_model

    path = export_tiny_model("rnn", tmp_path).path
    labels = eager_predict(EagerRAM.from_onnx(path), torch.from_numpy(images)).numpy()
    assert np.array_equal(labels, load_model(path, threads=1).predict(images).labels)


@pytest.mark.parametrize(("core", "supported"), [("rnn", True), ("lstm", False)])
def test_eager_peer_supports_the_rnn_core_only(tmp_path, benchmarks_on_path, core, supported):
    pytest.importorskip("torch")
    from eager_ram import supports

    assert supports(export_tiny_model(core, tmp_path).path) is supported


def onnx_session(model):
    """An ONNX Runtime session of the ModelProto ``model`` on one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_unrolled_steps_model_chains_the_step_networks_calls(tiny_model, benchmarks_on_path) -> None:
    """The benchmark floor's graph computes what T step calls on T given glimpses compute, chained."""
    onnx = pytest.importorskip("onnx")
    from bench_engine import build_unrolled_steps_model

    from ram_infer import load_model

    step_model = onnx.load(str(tiny_model.path))
    info = load_model(tiny_model.path).info
    T = info.num_glimpses
    rng = np.random.default_rng(6)
    glimpses = [rng.random((3, *info.glimpse_shape), np.float32) for _ in range(T)]
    feeds = {"location": rng.uniform(-1, 1, (3, 2)).astype(np.float32),
             "state": rng.random((3, info.state_size), np.float32)}
    step = onnx_session(step_model)
    location, state = feeds["location"], feeds["state"]
    for glimpse in glimpses:
        state, location, logits = step.run(["state_next", "location_next", "logits"],
                                           {"glimpse": glimpse, "location": location, "state": state})
    unrolled = build_unrolled_steps_model(step_model)
    onnx.checker.check_model(unrolled, full_check=True)
    assert len(unrolled.graph.initializer) == len(step_model.graph.initializer)  # one set of weights, shared
    feeds.update({f"glimpse_{t}": glimpse for t, glimpse in enumerate(glimpses)})
    np.testing.assert_allclose(onnx_session(unrolled).run(["logits"], feeds)[0], logits, rtol=0, atol=1e-6)
    # every step reads its own glimpse: a change to the first one reaches the result
    feeds["glimpse_0"] = np.zeros_like(glimpses[0])
    assert not np.allclose(onnx_session(unrolled).run(["logits"], feeds)[0], logits, rtol=0, atol=1e-6)
