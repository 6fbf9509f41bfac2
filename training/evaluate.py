"""Evaluation of trained RAM models (mean policy): test error per glimpse count, glimpse-trace and learning-curve figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig
from training.data import fixed_split
from training.model import RecurrentAttention


def load_checkpoint(path: str | Path) -> tuple[RecurrentAttention, TrainConfig, dict[str, Any]]:
    """Rebuilds the model of a checkpoint (checkpoint.pt or best.pt) from the config it carries.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a ram-train checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "model" not in checkpoint:
        raise ValueError(f"{path}: not a ram-train checkpoint (expected keys 'config' and 'model')")
    config = TrainConfig.from_dict(checkpoint["config"])
    model = RecurrentAttention(config.model)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config, checkpoint


def errors_per_glimpse(model: RecurrentAttention, images: np.ndarray, labels: np.ndarray,
                       batch_size: int = 1000) -> np.ndarray:
    """Error of the mean policy when answering after 1, 2, …, T glimpses.

    Args:
        images (ndarray[N, C, H, W], float32): the evaluation images.
        labels (ndarray[N], int64): their classes.

    Returns:
        ndarray[T], float64: the fraction wrong after each glimpse; the last entry is the model's test error.
    """
    wrong = np.zeros(model.config.num_glimpses, dtype=np.int64)
    with torch.no_grad():
        for begin in range(0, len(images), batch_size):
            logits = model.rollout(torch.from_numpy(images[begin : begin + batch_size])).logits  # (T, B, classes)
            wrong += (logits.argmax(2).numpy() != labels[None, begin : begin + batch_size]).sum(1)
    return wrong / max(len(images), 1)


def plot_traces(model: RecurrentAttention, images: np.ndarray, labels: np.ndarray, path: str | Path) -> None:
    """A grid of images with their glimpse paths: the k boxes of every glimpse, numbered, answer in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    c = model.config
    with torch.no_grad():
        rollout = model.rollout(torch.from_numpy(images))
    answers = rollout.logits[-1].argmax(1).numpy()
    columns = min(len(images), 4)
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 1, c.num_glimpses))
    for ax, image, locations, label, answer in zip(axes.flat, images, rollout.locations.numpy(), labels, answers):
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
        centres = np.floor((np.clip(locations, -1, 1) + 1) / 2 * [c.width, c.height])  # the contract's centre pixel
        ax.plot(centres[:, 0], centres[:, 1], "-", color="white", linewidth=1)
        for t, (cx, cy) in enumerate(centres):
            for i in range(c.num_scales):
                side = c.glimpse_size * c.scale_factor**i
                ax.add_patch(Rectangle((cx - side // 2 - 0.5, cy - side // 2 - 0.5), side, side, fill=False,
                                       edgecolor=colours[t], linewidth=1.2 if i == 0 else 0.6))
            ax.text(cx, cy, str(t + 1), color=colours[t], fontsize=8, ha="center", va="center")
        ax.set_title(f"label {label}, answer {answer}", color="black" if label == answer else "red", fontsize=9)
        ax.set_xlim(-0.5, c.width - 0.5)
        ax.set_ylim(c.height - 0.5, -0.5)
        ax.axis("off")
    for ax in axes.flat[len(images) :]:
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_curve(log_path: str | Path, path: str | Path) -> None:
    """The learning curve of a run: training reward and validation error against wall time, from its log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line]
    train = [r for r in records if "reward" in r]
    valid = [r for r in records if "valid_error" in r]
    figure, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["elapsed_s"] / 60 for r in train], [100 * (1 - r["reward"]) for r in train], alpha=0.4,
            label="training error (sampled policy)")
    ax.plot([r["elapsed_s"] / 60 for r in valid], [100 * r["valid_error"] for r in valid], "o-",
            label="validation error (mean policy)")
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def command_eval(args: argparse.Namespace) -> int:
    model, config, checkpoint = load_checkpoint(args.checkpoint)
    images, labels = fixed_split(config.task, args.split, root=args.data_root or config.data_root, limit=args.limit)
    errors = errors_per_glimpse(model, images, labels)
    result = {"checkpoint": str(args.checkpoint), "task": config.task, "split": args.split, "images": len(images),
              "step": checkpoint.get("step"), "error": float(errors[-1]),
              "error_per_glimpse": [round(float(e), 6) for e in errors]}
    if args.trace:
        plot_traces(model, images[: args.trace_images], labels[: args.trace_images], args.trace)
        result["trace"] = args.trace
    if args.curve:
        plot_curve(Path(args.checkpoint).parent / "log.jsonl", args.curve)
        result["curve"] = args.curve
    print(json.dumps(result))
    return 0


def add_commands(commands: Any) -> None:
    """Adds the ``eval`` sub-command to ram-train's parser."""
    parser = commands.add_parser("eval", help="test error of a checkpoint with the mean policy, and figures")
    parser.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run")
    parser.add_argument("--split", default="test", choices=("test", "valid"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    parser.add_argument("--data-root", default=None, help="MNIST directory (default: the run's, or $RAM_INFER_DATA)")
    parser.add_argument("--trace", metavar="OUT.png", help="draw the glimpse paths of the first images")
    parser.add_argument("--trace-images", type=int, default=8)
    parser.add_argument("--curve", metavar="OUT.png", help="plot the run's learning curve from its log.jsonl")
    parser.set_defaults(handler=command_eval)
