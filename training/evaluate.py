"""Evaluation of trained RAM models (mean policy), through torch or the exported runtime: errors, traces, curves."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ram_infer import load_model
from ram_infer.draw import draw_glimpses, trace_grid
from ram_infer.metadata import InputFormat, ModelInfo, SensorSpec
from ram_infer.sensor import centre_pixel

from .config import TrainConfig
from .data import DIGIT_SIDE, TASKS, evaluation_split
from .export import load_checkpoint
from .model import RecurrentAttention
from .run_files import LOG

EARLY_EXIT_THRESHOLDS = (0.9, 0.99, 0.999)


def mean_rollouts(model: RecurrentAttention, images: np.ndarray, batch_size: int = 1000,
                  device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The torch model's episodes with the mean policy: its answers after 1, 2, …, T glimpses and where it looked.

    Args:
        images (ndarray[N, C, H, W], float32): the evaluation images.
        device: where the model is.

    Returns:
        answers (ndarray[N, T], int64): the most probable class after each glimpse; column T-1 is the model's answer.
        locations (ndarray[N, T, 2], float32): the glimpse centres l_0 … l_{T-1} as (x, y) in [-1, 1].
    """
    answers = np.empty((len(images), model.config.num_glimpses), dtype=np.int64)  # (N, T)
    locations = np.empty((len(images), model.config.num_glimpses, 2), dtype=np.float32)  # (N, T, 2)
    with torch.no_grad():
        for begin in range(0, len(images), batch_size):
            x = torch.from_numpy(images[begin : begin + batch_size]).to(device)
            rollout = model.rollout(x)
            answers[begin : begin + batch_size] = rollout.logits.argmax(2).T.cpu().numpy()  # (B, T)
            locations[begin : begin + batch_size] = rollout.locations.cpu().numpy()  # (B, T, 2)
    return answers, locations


def digit_reach(locations: np.ndarray, corners: np.ndarray, labels: np.ndarray, answers: np.ndarray,
                sensor: SensorSpec, height: int, width: int) -> dict[str, float]:
    """Did the glimpses reach the digit, and how often is the model wrong when they did and when they did not?

    On translated and cluttered canvases this splits the errors into search failures (no glimpse's finest patch
    covered the digit's centre) and misreadings (one did), which tells whether to work on the location policy or on
    the glimpse and core networks.

    Args:
        locations (ndarray[N, T, 2], float32): the glimpse centres as (x, y) in [-1, 1].
        corners (ndarray[N, 2], int64): each digit's top-left pixel (x, y); the digit fills DIGIT_SIDE² from there.
        labels, answers (ndarray[N], int64): true classes and the model's answers.
        sensor: the model's sensor; its finest patch has side g.
        height, width: the canvas.

    Returns:
        ``reached``, the fraction of images where some glimpse's finest patch covered the digit's centre pixel;
        ``error_reached`` and ``error_missed``, the error on those images and on the others (NaN if there are none);
        ``first_glimpse``, the mean number of glimpses until the first one that reached it, over those images;
        ``nearest_px``, the median over images of the distance (pixels, the larger of the two axes) from the digit's
        centre to the nearest glimpse centre: how near a policy that misses gets.
    """
    g = sensor.glimpse_size
    centres = np.stack([centre_pixel(locations[..., 0], width), centre_pixel(locations[..., 1], height)], -1)
    offset = (corners + DIGIT_SIDE // 2)[:, None, :] - centres  # (N, T, 2): digit centre relative to each glimpse
    covered = np.all((offset >= -(g // 2)) & (offset < g - g // 2), axis=2)  # (N, T), the contract's patch bounds
    reached, wrong = covered.any(axis=1), answers != labels
    nearest = np.abs(offset).max(axis=2).min(axis=1)  # (N,)
    return {"reached": float(reached.mean()), "error_reached": _mean_or_nan(wrong[reached]),
            "error_missed": _mean_or_nan(wrong[~reached]),
            "first_glimpse": _mean_or_nan(covered[reached].argmax(axis=1) + 1),
            "nearest_px": float(np.median(nearest))}


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def errors_per_glimpse(model: RecurrentAttention, images: np.ndarray, labels: np.ndarray,
                       batch_size: int = 1000, device: torch.device | str = "cpu") -> np.ndarray:
    """Error of the mean policy when answering after 1, 2, …, T glimpses.

    Args:
        images (ndarray[N, C, H, W], float32): the evaluation images.
        labels (ndarray[N], int64): their classes.
        device: where the model is.

    Returns:
        ndarray[T], float64: the fraction wrong after each glimpse; the last entry is the model's test error.
    """
    if len(images) == 0:
        return np.zeros(model.config.num_glimpses)
    return np.mean(mean_rollouts(model, images, batch_size, device)[0] != labels[:, None], axis=0)


def plot_traces(
    images: np.ndarray,
    labels: np.ndarray,
    answers: np.ndarray,
    locations: np.ndarray,
    sensor: SensorSpec,
    path: str | Path,
    names: tuple[str, ...] | None = None,
) -> None:
    """A grid of images with their glimpse paths, drawn by the runtime's own ``ram_infer.draw`` (one drawing for
    ``ram-infer --trace`` and the cards): every glimpse's k boxes, numbered, the true label and the answer below.

    Args:
        images (ndarray[N, C, H, W], float32): the model inputs, in [0, 1].
        labels (ndarray[N], int64): the true classes.
        answers (ndarray[N], int64): the model's answers (marked "wrong" where they differ).
        locations (ndarray[N, T, 2], float32): the glimpse centres l_0 … l_{T-1} as (x, y) in [-1, 1].
        sensor: the model's (g, k, s), for the box sizes.
        path: the PNG to write.
        names: the class names to caption with (own images); None writes the class numbers.
    """
    channels, height, width = images.shape[1:]
    shape = InputFormat(height=height, width=width, channels=channels)  # value_scale 255: [0, 1] → 8-bit
    tiles = []
    for image, path_t, label, answer in zip(images, locations, labels, answers):
        label, answer = (names[label], names[answer]) if names else (label, answer)
        caption = f"label {label}, answer {answer}" + ("" if label == answer else " (wrong)")
        tiles += draw_glimpses(image, path_t, sensor, shape, last_only=True, caption=caption)
    trace_grid(tiles).save(path)


def plot_curve(log_path: str | Path, path: str | Path, *, marks: Mapping[str, float] | None = None,
               window: int = 20) -> None:
    """The learning curve of a run from its log.jsonl: training and validation error against wall time.

    Args:
        log_path: the run's log.jsonl.
        path: the PNG to write.
        marks: horizontal reference lines, name → error in [0, 1] (e.g. the measured test error, the paper's).
        window: the training error is the running mean of this many log records (each one batch's error is too
            noisy to read, and is often 0, which a log scale cannot show).

    Raises:
        ValueError: the log has no training records.
    """
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line]
    train = [r for r in records if "reward" in r]
    valid = [r for r in records if "valid_error" in r]
    if not train:
        raise ValueError(f"{log_path}: no training records (lines with 'reward') to plot")
    batch_error = 100 * (1 - np.array([r["reward"] for r in train]))  # (records,)
    sums = np.cumsum(np.concatenate([[0.0], batch_error]))  # (records + 1,)
    starts = np.maximum(np.arange(1, len(train) + 1) - window, 0)  # (records,)
    running = (sums[1:] - sums[starts]) / (np.arange(1, len(train) + 1) - starts)  # (records,)
    figure = Figure(figsize=(6, 3.6))
    ax = figure.subplots()
    ax.plot([r["elapsed_s"] / 60 for r in train], running, alpha=0.6,
            label=f"training error (sampled policy, mean of {window} logs)")
    ax.plot([r["elapsed_s"] / 60 for r in valid], [100 * r["valid_error"] for r in valid], "o-", markersize=3,
            label="validation error (mean policy)")
    for (name, error), style in zip((marks or {}).items(), ("--", ":", "-.", (0, (5, 5)))):
        ax.axhline(100 * error, color="black", linestyle=style, linewidth=0.8, label=name)
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def evaluate_onnx(
    onnx_path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] = EARLY_EXIT_THRESHOLDS,
    threads: int = 1,
    corners: np.ndarray | None = None,
) -> dict[str, Any]:
    """Test error of an exported model through the runtime, ``ram_infer.load_model(onnx_path).predict``: what ships.

    Args:
        onnx_path: the exported step network.
        images (ndarray[N, C, H, W], float32): the evaluation images, in the model's input format.
        labels (ndarray[N], int64): their classes.
        thresholds: early-exit thresholds to measure (``predict(early_exit=…)``).
        threads: ONNX Runtime and sensor threads (results do not depend on it).
        corners (ndarray[N, 2], int64): where the digits lie (``fixed_split(…, return_corners=True)``), to measure
            whether the glimpses reached them; None skips that.

    Returns:
        ``images`` (N); ``error``, the fraction wrong with the mean policy after all T glimpses;
        ``error_per_glimpse``, T fractions: the answer after t glimpses is the argmax of step t's probabilities;
        ``early_exit``, one ``{"threshold", "error", "mean_glimpses"}`` per threshold; with ``corners``,
        ``digit_reach`` (see digit_reach).

    Raises:
        ValueError: no images, or labels that do not match them.
    """
    if len(images) == 0 or np.shape(labels) != (len(images),):
        raise ValueError(f"labels must have shape (N,) for N = {len(images)} >= 1 images, got {np.shape(labels)}")
    engine = load_model(onnx_path, threads=threads)
    prediction = engine.predict(images, steps=True)
    step_answers = prediction.step_probabilities.argmax(axis=2)  # (N, T)
    early_exit = []
    for threshold in thresholds:
        exited = engine.predict(images, early_exit=threshold)
        early_exit.append({"threshold": threshold, "error": float(np.mean(exited.labels != labels)),
                           "mean_glimpses": float(np.mean(exited.glimpses_used))})
    result = {
        "images": len(images),
        "error": float(np.mean(prediction.labels != labels)),
        "error_per_glimpse": [float(e) for e in np.mean(step_answers != labels[:, None], axis=0)],
        "early_exit": early_exit,
    }
    if corners is not None:
        height, width = images.shape[2:]
        result["digit_reach"] = digit_reach(prediction.locations, corners, labels, prediction.labels,
                                            engine.info.sensor, height, width)
    return result


def plot_onnx_traces(onnx_path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, path: str | Path) -> None:
    """``plot_traces`` of the glimpse paths the runtime follows on ``images`` [N, C, H, W] with labels [N]."""
    engine = load_model(onnx_path, threads=1)
    prediction = engine.predict(images)
    named = engine.info.labels != tuple(str(i) for i in range(engine.info.num_classes))
    plot_traces(images, labels, prediction.labels, prediction.locations, engine.info.sensor, path,
                names=engine.info.labels if named else None)


def on_canvas(task: str) -> bool:
    """Whether the task places its digit somewhere on a larger canvas, so that the glimpses must find it."""
    return task in TASKS and TASKS[task].canvas_size > DIGIT_SIDE


def run_config_of(info: ModelInfo) -> TrainConfig:
    """The training configuration an exported model records (``ram.training``: ``config`` and ``model``), enough to
    find its data again; a model without it is taken as one of the paper's tasks, named by ``ram.dataset``."""
    facts = info.training
    if isinstance(facts.get("config"), dict) and isinstance(facts.get("model"), dict):
        return TrainConfig.from_dict({**facts["config"], "model": facts["model"]})
    return TrainConfig(task=info.dataset)


def command_eval(args: argparse.Namespace) -> int:
    """``ram-train eval MODEL``: the error of a checkpoint (torch) or an exported model (the runtime), as one JSON
    line; optionally the glimpse paths and the learning curve as pictures."""
    path = Path(args.model)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1 image, got {args.limit}")
    if path.suffix.lower() == ".onnx":
        if args.curve:
            raise ValueError(f"--curve needs a checkpoint (it reads the run's log.jsonl beside it), got {path}")
        info = load_model(path).info
        task = info.dataset if info.dataset in TASKS else "folder"
        images, labels, corners = evaluation_split(run_config_of(info), args.split, root=args.data_root,
                                                   limit=args.limit)
        result = {"model": str(path), "runtime": "onnx", "task": task, "split": args.split,
                  **evaluate_onnx(path, images, labels, corners=corners if on_canvas(task) else None)}
        if args.trace:
            plot_onnx_traces(path, images[: args.trace_images], labels[: args.trace_images], args.trace)
    else:
        model, config, checkpoint = load_checkpoint(path)
        images, labels, corners = evaluation_split(config, args.split, root=args.data_root, limit=args.limit)
        answers, locations = mean_rollouts(model, images)
        errors = np.mean(answers != labels[:, None], axis=0)
        result = {"model": str(path), "runtime": "torch", "task": config.task, "split": args.split,
                  "images": len(images), "step": checkpoint.get("step"), "error": float(errors[-1]),
                  "error_per_glimpse": [float(e) for e in errors]}
        c = model.config
        sensor = SensorSpec(c.glimpse_size, c.num_scales, c.scale_factor)
        if on_canvas(config.task):
            result["digit_reach"] = digit_reach(locations, corners, labels, answers[:, -1], sensor, c.height, c.width)
        if args.trace:  # the paths of the first images, from the episodes just run
            first = slice(args.trace_images)
            plot_traces(images[first], labels[first], answers[first, -1], locations[first], sensor, args.trace,
                        names=tuple(config.classes) or None)
        if args.curve:
            plot_curve(path.parent / LOG, args.curve)
            result["curve"] = args.curve
    if args.trace:
        result["trace"] = args.trace
    print(json.dumps(result))
    return 0
