"""Trains a CNN baseline (benchmarks/cnns.py) on one of the RAM data sets and exports it to ONNX with its test accuracy.

Run from the repository root; each model takes a few minutes on one CPU thread:

    python benchmarks/train_cnn.py --model paper_cnn --task mnist
    python benchmarks/train_cnn.py --model resnet8 --task mnist

The data are the RAM models' (training/data.py): ``TrainStream`` batches for training and ``fixed_split(task, "test")``
for the test accuracy, measured on the exported file with ONNX Runtime. The file (by default
``benchmarks/models/<model>_<task>.onnx``) records how it was made in its ``metadata_props``: ``bench.task``,
``bench.test_accuracy``, ``bench.steps``, ``bench.train_seconds`` and ``bench.command``.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from cnns import NAMES, build, export_onnx

from ram_infer.training.data import TASKS, TrainStream, fixed_split

REPO = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).resolve().parent / "models"


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


def train(model: torch.nn.Module, stream: TrainStream, steps: int, learning_rate: float) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=NAMES, required=True)
    parser.add_argument("--task", choices=sorted(TASKS), default="mnist")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--data", default=str(REPO / "data" / "mnist"), help="MNIST directory (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=None, help="first N test images only (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/models/<model>_<task>.onnx")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    side = TASKS[args.task].canvas_size
    model = build(args.model, side, side)
    stream = TrainStream(args.task, args.data, seed=args.seed, batch_size=args.batch_size)
    started = time.perf_counter()
    train(model, stream, args.steps, args.learning_rate)
    seconds = time.perf_counter() - started
    out = args.out or MODELS / f"{args.model}_{args.task}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/train_cnn.py", *(sys.argv[1:] if argv is None else argv)])
    facts = {"bench.model": args.model, "bench.task": args.task, "bench.steps": args.steps,
             "bench.batch_size": args.batch_size, "bench.train_seconds": f"{seconds:.0f}", "bench.command": command}
    export_onnx(model, out, side, side, metadata=facts)
    images, labels = fixed_split(args.task, "test", args.data, limit=args.test_images)
    accuracy = onnx_accuracy(out, images, labels)
    proto = onnx.load(str(out))
    proto.metadata_props.add(key="bench.test_accuracy", value=f"{accuracy:.4f}")
    onnx.save(proto, str(out))
    print(f"{out}: test accuracy {accuracy:.4f} on {len(labels)} images, {out.stat().st_size / 1e6:.2f} MB, "
          f"trained {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
