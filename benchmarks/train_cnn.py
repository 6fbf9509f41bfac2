"""Trains a CNN baseline (benchmarks/cnns.py) on a RAM data set or own images and exports it to ONNX with its test
accuracy.

Run from the repository root; each model takes a few minutes on one CPU thread:

    python benchmarks/train_cnn.py --model paper_cnn --task mnist
    python benchmarks/train_cnn.py --model resnet8 --task mnist
    python benchmarks/train_cnn.py --model resnet8 --run RUN_DIR [--data DIR]
    python benchmarks/train_cnn.py --model resnet8 --data DIR

The data are the RAM models' (training/data.py). A built-in task: ``TrainStream`` batches for training and
``fixed_split(task, "test")`` for the test accuracy. Own images: those of the ram-train run ``--run RUN_DIR`` (its
config.json: the folder, input format and splits; ``--data`` says where the folder is now if the run named it by a
relative path), or without a run those ``ram-train train --data DIR`` would plan; opened as ram-train opens them
(its cache), ``FolderStream`` batches for training and the folder's test split for the accuracy. The CNN takes the
RAM model's input (channels, height, width) and has one output per class. No augmentation, whatever the run used.

The test accuracy is measured on the exported file with ONNX Runtime. The file (by default
``benchmarks/models/<model>_<task or data name>.onnx``) records how it was made in its ``metadata_props``:
``bench.task`` (the task, or the data's name as the RAM model's ``ram.dataset`` says it), ``bench.test_accuracy``,
``bench.steps``, ``bench.train_seconds`` and ``bench.command``; for own images also ``bench.data`` (the folder as
given), ``bench.input`` (the input format, as JSON) and ``bench.run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from _folder_run import evaluation_images, open_run_data, run_config
from cnns import NAMES, build, export_onnx

from ram_infer.training.data import TASKS, FolderStream, TrainStream, fixed_split, training_stream
from ram_infer.training.export import dataset_name

REPO = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).resolve().parent / "models"


class Dataset(NamedTuple):
    """What a CNN trains and is tested on: a built-in task or own images."""

    name: str  # the task, or the data's name (the RAM model's ram.dataset): bench.task and the file name
    shape: tuple[int, int, int]  # (channels, height, width) of an input image
    classes: int
    stream: TrainStream | FolderStream
    test: Callable[[int | None], tuple[np.ndarray, np.ndarray]]  # limit → test images and labels
    facts: dict[str, str]  # bench.* metadata beyond the common ones


def task_dataset(args: argparse.Namespace) -> Dataset:
    """A built-in task's training stream and fixed test split."""
    side = TASKS[args.task].canvas_size
    stream = TrainStream(args.task, args.data_root, seed=args.seed, batch_size=args.batch_size)
    return Dataset(args.task, (1, side, side), 10, stream,
                   lambda limit: fixed_split(args.task, "test", args.data_root, limit=limit), {})


def folder_dataset(args: argparse.Namespace) -> Dataset:
    """Own images: the run's (or the plan's) data, input format and splits, the CNN's seed and batch size."""
    config = dataclasses.replace(run_config(args.run, args.data), seed=args.seed, batch_size=args.batch_size)
    data = open_run_data(config)
    m = config.model
    facts = {"bench.data": config.data,
             "bench.input": json.dumps(dataclasses.asdict(m.input_format), sort_keys=True)}
    if args.run is not None:
        facts["bench.run"] = str(args.run)
    return Dataset(dataset_name(config), (m.channels, m.height, m.width), len(config.classes),
                   training_stream(config, data=data), lambda limit: evaluation_images(data, limit), facts)


def onnx_accuracy(path: Path, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy of an exported CNN (input ``images``, output ``logits``) on one ONNX Runtime thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    correct = 0
    for begin in range(0, len(images), batch_size):
        (logits,) = session.run(None, {"images": images[begin : begin + batch_size]})
        correct += int((logits.argmax(axis=1) == labels[begin : begin + batch_size]).sum())
    return correct / len(images)


def train(model: torch.nn.Module, stream: TrainStream | FolderStream, steps: int, learning_rate: float) -> None:
    """Adam with a cosine decay to 5 % of ``learning_rate``, cross-entropy, one batch of ``stream`` per step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        images, labels = stream.batch(step)
        loss = F.cross_entropy(model(torch.from_numpy(images)), torch.from_numpy(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=NAMES, required=True)
    parser.add_argument("--task", choices=sorted(TASKS), default=None,
                        help="a built-in task (default: mnist, unless own images are named)")
    parser.add_argument("--run", type=Path, default=None,
                        help="own images: a ram-train run on them (RUN_DIR/config.json: data, input format, splits)")
    parser.add_argument("--data", default=None,
                        help="own images: a folder or CSV as for ram-train train --data; with --run, where the run's "
                             "data is now")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--data-root", default=str(REPO / "data" / "mnist"),
                        help="MNIST directory, for the built-in tasks (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=None, help="first N test images only (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/models/<model>_<task or data name>.onnx")
    args = parser.parse_args(argv)
    if args.task is not None and (args.run or args.data):
        parser.error("choose a built-in --task, or own images with --run and/or --data")
    if args.task is None and not (args.run or args.data):
        args.task = "mnist"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        dataset = task_dataset(args) if args.task else folder_dataset(args)
    except ValueError as error:  # data or run that cannot be used (DataError is one): its message, not a traceback
        print(f"train_cnn.py: {error}", file=sys.stderr)
        return 2
    channels, height, width = dataset.shape
    model = build(args.model, height, width, channels, dataset.classes)
    started = time.perf_counter()
    train(model, dataset.stream, args.steps, args.learning_rate)
    seconds = time.perf_counter() - started
    out = args.out or MODELS / f"{args.model}_{dataset.name}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/train_cnn.py", *(sys.argv[1:] if argv is None else argv)])
    facts = {"bench.model": args.model, "bench.task": dataset.name, "bench.steps": args.steps,
             "bench.batch_size": args.batch_size, "bench.train_seconds": f"{seconds:.0f}", "bench.command": command,
             **dataset.facts}
    export_onnx(model, out, height, width, channels, metadata=facts)
    images, labels = dataset.test(args.test_images)
    accuracy = onnx_accuracy(out, images, labels)
    proto = onnx.load(str(out))
    proto.metadata_props.add(key="bench.test_accuracy", value=f"{accuracy:.4f}")
    onnx.save(proto, str(out))
    print(f"{out}: test accuracy {accuracy:.4f} on {len(labels)} images, {out.stat().st_size / 1e6:.2f} MB, "
          f"trained {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
