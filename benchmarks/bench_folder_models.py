"""Own images: a ram-train run's RAM model against CNNs trained on its folder, in test accuracy and batch-1 latency.

Run from the repository root, after training the CNNs on the run's data (``train_cnn.py --run RUN_DIR``):

    python benchmarks/bench_folder_models.py --ram-model RUN.onnx --run RUN_DIR [--data DIR] [--quick]
        [--cnn-models benchmarks/models] [--out benchmarks/results/folder_models.md]

The contenders are measured as bench_engine.py measures them on the built-in tasks (its worker, each in a fresh
process, one thread): ram-infer's ``predict`` on the RAM model, and the CNNs ``<cnn>_<data name>.onnx`` in ONNX Runtime.
The images are the run's test split, opened as ram-train opens it (its cache); ``--data`` says where the run's data
is now if the run named it by a relative path. Before timing, the RAM model's input format and labels and each CNN's
recorded input format (``bench.input``) are checked against the run's: all must read the same images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
from _folder_run import evaluation_images, open_run_data, run_config
from _machine import machine_details, write_report
from bench_engine import BATCH, CNN_MODELS, CNN_NAMES, RAM_NAME, _measure

from ram_infer import load_model
from ram_infer.training.config import TrainConfig
from ram_infer.training.export import dataset_name

BENCHMARKS = Path(__file__).resolve().parent
SETTINGS = {"seconds": 3.0, "min_calls": 20}  # bench_engine.py's, per contender
QUICK_SETTINGS = {"seconds": 0.05, "min_calls": 3}


def check_ram_model(path: Path, config: TrainConfig) -> None:
    """The RAM model must read the run's input format and name its classes.

    Raises:
        ValueError: it does not (another run's model, or the run's data changed since).
    """
    info = load_model(path, threads=1).info
    if info.input != config.model.input_format or list(info.labels) != list(config.classes):
        raise ValueError(f"{path}: its input {info.input} and labels {list(info.labels)} are not the run's "
                         f"({config.model.input_format}, {config.classes}): export the run's model")


def find_cnns(folder: Path, config: TrainConfig) -> dict[str, Path]:
    """The CNNs trained on the run's data (``<cnn>_<data name>.onnx`` in ``folder``), each checked to read the run's
    input format; the missing ones are named on stderr and left out.

    Raises:
        ValueError: a CNN was trained for another input format.
    """
    import onnx

    expected = json.dumps(dataclasses.asdict(config.model.input_format), sort_keys=True)
    found = {}
    for name in CNN_NAMES:
        path = folder / f"{name}_{dataset_name(config)}.onnx"
        if not path.is_file():
            print(f"no {path}: train it with `python benchmarks/train_cnn.py --model {name} --run RUN_DIR`",
                  file=sys.stderr)
            continue
        facts = {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}
        if json.loads(facts.get("bench.input", expected)) != json.loads(expected):
            raise ValueError(f"{path}: trained on input {facts['bench.input']}, the run's is {expected}")
        found[name] = path
    return found


def measure(contenders: dict[str, tuple[str, Path]], test: tuple[Path, Path], inputs: Path,
            settings: dict) -> list[dict]:
    """Each contender's batch-1 latency, batch-256 throughput and test accuracy, one thread, in its own process."""
    rows = []
    for label, (kind, path) in contenders.items():
        job = {"model": str(path), "inputs": str(inputs), "throughput": True, "test": [str(t) for t in test]}
        result = _measure(kind, 1, [job], settings)["jobs"][0]
        rows.append({"name": label, "model": path, **result})
        print(f"{label}: batch-1 {result['latency_us'][0]:,.1f} µs, accuracy {result['accuracy']:.4f}", flush=True)
    return rows


def table_lines(rows: list[dict], batch: int) -> list[str]:
    """One row per contender, the latency ratio over the first's (RAM's)."""
    ram = rows[0]["latency_us"][0]
    lines = ["| model | file | MB | test accuracy | batch-1 median µs | batch-1 p99 µs | "
             f"batch-{batch} images/s | batch-1 latency vs RAM |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['model'].name}` | {r['model'].stat().st_size / 1e6:.2f} | "
                     f"{100 * r['accuracy']:.2f} % | {r['latency_us'][0]:,.1f} | {r['latency_us'][1]:,.1f} | "
                     f"{r['images_per_s']:,.0f} | {r['latency_us'][0] / ram:.2f}× |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ram-model", type=Path, required=True, help="the run's model (ram-train export)")
    parser.add_argument("--run", type=Path, required=True, help="the ram-train run (RUN_DIR/config.json)")
    parser.add_argument("--data", default=None, help="where the run's data is now, if not where config.json says")
    parser.add_argument("--cnn-models", type=Path, default=CNN_MODELS, help="folder of <cnn>_<data name>.onnx files")
    parser.add_argument("--quick", action="store_true", help="few calls (a smoke test)")
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "results" / "folder_models.md")
    args = parser.parse_args(argv)
    machine = machine_details()  # first, so the load average is the other processes', not this script's
    try:
        config = run_config(args.run, args.data)
        check_ram_model(args.ram_model, config)
        cnns = find_cnns(args.cnn_models, config)
        images, labels = evaluation_images(open_run_data(config))
    except ValueError as error:  # a run, data or model that cannot be used (DataError is one): its message
        print(f"bench_folder_models.py: {error}", file=sys.stderr)
        return 2
    contenders = {RAM_NAME: ("ram", args.ram_model), **{CNN_NAMES[name]: ("cnn", path) for name, path in cnns.items()}}
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    with tempfile.TemporaryDirectory(prefix="bench_folder_models.") as scratch:
        test = (Path(scratch) / "images.npy", Path(scratch) / "labels.npy")
        np.save(test[0], images)
        np.save(test[1], labels)
        inputs = Path(scratch) / "inputs.npy"
        np.save(inputs, images[:BATCH])
        rows = measure(contenders, test, inputs, settings)
    m = config.model
    command = shlex.join(["python", "benchmarks/bench_folder_models.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        f"# Own images: RAM vs CNNs on `{dataset_name(config)}`",
        "",
        f"Command: `{command}`",
        "",
        f"Data: `{dataset_name(config)}`, {len(config.classes)} classes, its test split ({len(labels):,} images) as "
        f"the run splits it; input {m.height}×{m.width}×{m.channels}. RAM: {m.num_glimpses} glimpses of "
        f"{m.glimpse_size} px at {m.num_scales} scales, {m.core} {m.core_hidden}.",
        "",
        f"Batch-1 latency: calls on one image, cycling through {min(BATCH, len(labels))} test images, for at least "
        f"{settings['seconds']:g} s and {settings['min_calls']} calls after a warm-up, one thread; throughput: the "
        f"median of as many calls on {min(BATCH, len(labels))} images. Each contender runs alone in a fresh process "
        "(bench_engine.py's worker). Accuracy: every test image, in batches of 256.",
        "",
        *table_lines(rows, min(BATCH, len(labels))),
        "",
    ]
    write_report(args.out, lines, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
