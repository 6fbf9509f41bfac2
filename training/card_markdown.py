"""The model card of a shipped run, in Markdown: what ``ram-train card`` (training/card.py) measured, in words.

It formats what the pipeline measured (the ONNX file's metadata, the evaluation, the parity checks) and writes
nothing; card.py writes the card it returns.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ram_infer.metadata import ModelInfo

from .config import TrainConfig
from .data import SPLIT_SEEDS, TASKS, Task
from .export import PARITY_TOLERANCE

TRACE_IMAGES = 8  # test images in the glimpse-path picture
# Published test errors (%) per task: Mnih et al. 2014 (Tables 1 and 2), then the best public reimplementations.
PAPER_RESULTS = {
    "mnist": (
        ("RAM, 6 glimpses of 8×8, 1 scale (paper, Table 1a)", 6, 1.29),
        ("RAM, 7 glimpses of 8×8, 1 scale (paper, Table 1a)", 7, 1.07),
        ("best public reimplementation (Torch7 `rnn`)", None, 0.85),
    ),
    "translated60": (
        ("RAM, 6 glimpses (paper, Table 1b)", 6, 1.22),
        ("RAM, 8 glimpses (paper, Table 1b)", 8, 1.20),
    ),
    "cluttered60": (
        ("RAM, 8 glimpses (paper, Table 2a)", 8, 4.04),
        ("best public reimplementation (Chainer)", None, 5.3),
    ),
    "cluttered100": (("RAM, 8 glimpses (paper, Table 2b), about", 8, 8.1),),
}


def render_card(
    name: str,
    info: ModelInfo,
    config: TrainConfig,
    parameters: int,
    evaluation: dict[str, Any],
    parity: dict[str, Any],
    paths: dict[str, Path],
    card_command: str,
) -> str:
    """The model card in Markdown; pictures are linked relative to the card's folder.

    Args:
        name: the model's name.
        info: the shipped file's metadata (``training`` holds the facts of training_facts and the measurements).
        config: the run's configuration.
        parameters: the step network's parameter count.
        evaluation: evaluate_onnx's result on the test images.
        parity: verify_export's result.
        paths: the written files (``onnx``, ``card``, ``curve``, ``trace``).
        card_command: the ``ram-train card`` command that made the card.
    """
    facts, m = info.training, config.model
    own = config.task not in TASKS
    described = _describe_own(info) if own else _describe_task(TASKS[config.task])
    T, n = m.num_glimpses, evaluation["images"]
    error = evaluation["error"]
    interval = 1.96 * math.sqrt(max(error * (1 - error), 1e-12) / n)
    sides = ", ".join(str(m.glimpse_size * m.scale_factor**i) for i in range(m.num_scales))
    picture = {key: Path(os.path.relpath(paths[key], paths["card"].parent)).as_posix() for key in ("curve", "trace")}
    scope = "the full test split" if facts["test"]["full_split"] else f"only the first {n} test images (`--limit`)"
    lines = [
        f"# `{name}`: RAM on {described}",
        "",
        f"The Recurrent Attention Model (Mnih et al. 2014) classifying {described} with {T} glimpses. "
        f"Test error **{_percent(error)}** on {_count(n)} test images with the mean location policy, measured "
        "through the exported ONNX step network and the ram-infer runtime, not the torch model.",
        "",
        "```python",
        "import ram_infer",
        f'engine = ram_infer.load_model("{name}")',
        f"prediction = engine.predict_files([\"{'image' if own else 'digit'}.png\"])  "
        "# or engine.predict(images [N, C, H, W])",
        "```",
        "",
        "## Data",
        "",
        *(_own_data_lines(info, config) if own else _mnist_data_lines(TASKS[config.task], config)),
        "",
        "## Training",
        "",
        "```sh",
        facts["command"],
        "```",
        "",
    ]
    if facts["command_source"] != "given":
        lines += ["(Reconstructed from the run's configuration: its preset plus the settings that differ from it, or "
                  "its data and the steps its plan chose.)", ""]
    if facts.get("schedule_legs"):
        lines += [schedule_text(facts["schedule_legs"], facts["planned_steps"]), ""]
    regularisation = regularisation_text(config, facts["steps"])
    regularisation = f"; {regularisation}" if regularisation else ""
    lines += [
        f"- {'Settings chosen from the data (`ram-train plan`)' if own else 'Preset `' + str(facts['preset']) + '`'}"
        f"; {facts['steps']} optimiser steps to this checkpoint "
        f"(the run: {facts['run_steps']} of {facts['planned_steps']}), batch {config.batch_size}, "
        f"Adam lr {config.learning_rate:g} with cosine decay to ×{config.lr_decay_to:g}, location σ "
        f"{m.location_std:g}, "
        f"{config.reinforce_to_core:g} of the REINFORCE gradient into the core, auxiliary per-step loss weight "
        f"{config.aux_weight:g}{regularisation}.",
        f"- Wall time: {_duration(facts['wall_time_s'])} to this checkpoint, {_duration(facts['run_wall_time_s'])} "
        f"for the run (training and validation, from the run's log).",
        f"- Hardware: {facts['hardware']['cpu']}, {facts['hardware']['cores']} cores, torch "
        f"{facts['hardware']['torch_threads'] or 'default'} thread(s) (recorded by `ram-train card` on the training "
        "machine); torch " + facts["torch"] + ".",
        chosen_by(facts),
        f"- Model: {T} glimpses of {m.glimpse_size}×{m.glimpse_size} at {m.num_scales} scale(s) (patch sides "
        f"{sides} px), glimpse network {m.glimpse_hidden}+{m.location_hidden} → {m.glimpse_features}, "
        f"{m.core.upper()} core of {m.core_hidden} units; {parameters:,} parameters in the step network.",
        "",
        f"![learning curve]({picture['curve']})",
        "",
        "## Test error",
        "",
        f"Mean policy through ONNX Runtime ({facts['test']['runtime']}), {scope}: **{_percent(error)}** "
        f"({round(error * n)} wrong; 95 % interval ±{100 * interval:.2f} points).",
        "",
        "| model | glimpses | test error |",
        "|---|---|---|",
        f"| this model (`{name}`) | {T} | {_percent(error)} |",
    ]
    lines += [f"| {label} | {glimpses or '—'} | {percent:.2f} % |" for label, glimpses, percent in
              PAPER_RESULTS.get(config.task, ())]
    lines += [
        "",
        "### Error after each glimpse",
        "",
        "The answer after t glimpses is the most probable class of step t (`predict(steps=True)`).",
        "",
        "| glimpses | " + " | ".join(str(t) for t in range(1, T + 1)) + " |",
        "|---|" + "---|" * T,
        "| test error | " + " | ".join(_percent(e) for e in evaluation["error_per_glimpse"]) + " |",
        "",
        "### Early exit",
        "",
        "An image stops as soon as its top probability reaches the threshold (`predict(early_exit=…)`).",
        "",
        "| threshold | test error | mean glimpses |",
        "|---|---|---|",
    ]
    lines += [f"| {row['threshold']:g} | {_percent(row['error'])} | {row['mean_glimpses']:.2f} |"
              for row in evaluation["early_exit"]]
    lines += [
        f"| none | {_percent(error)} | {T:.2f} |",
        "",
        "## Glimpses",
        "",
        f"![glimpse paths]({picture['trace']})",
        "",
        f"The first {TRACE_IMAGES} test images and the path the runtime follows: glimpse t's {m.num_scales} "
        "box(es), numbered in order; red titles are wrong answers.",
        "",
        *_reach_lines(evaluation.get("digit_reach"), m.glimpse_size),
        "## File",
        "",
        f"- `{paths['onnx'].name}`: {_size(paths['onnx'])}, the step network (opset ≥ 17) with `ram.*` metadata; "
        "`ram.test_error` and `ram.training` hold the figures above.",
        *_parity_lines(parity),
        f"- Made by `{card_command}`.",
        "",
    ]
    return "\n".join(lines)


def _reach_lines(reach: dict[str, float] | None, glimpse_size: int) -> list[str]:
    """Where the errors come from on a canvas: glimpses that never reached the digit, or misreadings."""
    if reach is None:
        return []
    return [f"Some glimpse's finest patch ({glimpse_size}×{glimpse_size}) covered the digit's centre in "
            f"{_percent(reach['reached'])} of the test images, first after {reach['first_glimpse']:.2f} glimpses on "
            f"average; the model errs on {_percent(reach['error_reached'])} of those and on "
            f"{_percent(reach['error_missed'])} of the others (`evaluate.digit_reach`). The glimpse nearest the "
            f"digit's centre came within {reach['nearest_px']:.1f} px of it (median over the images).", ""]


def episode_section(name: str, paths: dict[str, Path], parity: dict[str, Any]) -> str:
    """The card's section on the full-episode model (training/episode.py) shipped beside the step model, with its
    ``ram.episode_parity`` against the stepwise runtime."""
    diff = parity["max_abs_diff"]
    relative = Path(os.path.relpath(paths["episode"], paths["card"].parent)).as_posix()
    return "\n".join([
        "",
        "## Full-episode model",
        "",
        f"[`{relative}`]({relative}), {_size(paths['episode'])}, is the whole episode in one standard-ONNX graph "
        "(image in; logits and the glimpse locations out), for any ONNX Runtime without ram-infer: C, C#, Java, "
        f"JavaScript, mobile. Made by `ram-train episode {name} OUT.onnx --test-set DATA` (also part of "
        f"`ram-train card`). Against the stepwise runtime on {_count(parity['images'])} test images: "
        f"{parity['labels_differ']} labels differ; the largest difference is {diff['logits']:.3g} in the logits and "
        f"{diff['locations']:.3g} in the locations.",
        "",
    ])


def schedule_text(schedule_legs: list[list[int]], steps: int) -> str:
    """How the learning rate moved, in words, for a run with schedule legs; "" for a single schedule."""
    if not schedule_legs:
        return ""
    begin, legs = 0, []
    for until, length in schedule_legs:
        legs.append(f"steps {begin:,}–{until:,} followed a {length:,}-step schedule")
        begin = until
    return (f"The run was lengthened on resume, so its cosine schedule has legs: {'; '.join(legs)}; steps "
            f"{begin:,}–{steps:,} follow the {steps:,}-step one, the rate jumping to the next schedule's value "
            "where a leg ends. The command above replays these legs from scratch (its preset's or its own "
            "`schedule_legs`).")


def regularisation_text(config: TrainConfig, step: int) -> str:
    """The augmentation and weight averaging that shaped the weights of ``step``, in words (empty when none did)."""
    changes = []
    if config.max_shift:
        changes.append(f"moved by up to {config.max_shift} px")
    if config.max_rotation:
        changes.append(f"turned by up to ±{config.max_rotation:g}°")
    if config.max_scale:
        changes.append(f"scaled by up to ±{config.max_scale * 100:g} %")
    if config.elastic_pixels:
        changes.append(f"distorted elastically ({config.elastic_pixels:g} px over {config.elastic_spacing:g} px)")
    parts = [f"training images {', '.join(changes)}"] if changes else []
    if config.ema_decay and step > config.ema_from:
        parts.append(f"weights averaged (decay {config.ema_decay:g}) from step {config.ema_from:,}")
    return "; ".join(parts)


def chosen_by(facts: dict[str, Any]) -> str:
    """The card's line on how this checkpoint was chosen and its validation error (mean policy, torch)."""
    valid = facts.get("valid")
    whole = f"validation error {_percent(valid['error'])} on {_count(valid['images'])} validation images" if valid \
        else "validation error not measured"
    if "valid_images" in facts:  # best.pt (export also records a checkpoint.pt run's best)
        return (f"- best.pt, chosen during the run by its validation error on {_count(facts['valid_images'])} "
                f"validation images ({_percent(facts['best_valid_error'])}); {whole} (mean policy, torch).")
    return f"- The run's checkpoint at step {facts['steps']} (not best.pt); {whole} (mean policy, torch)."


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    same = (f"the runtime and the torch model give the same answer on {_count(parity['answers_compared'])} "
            "test images"
            if not parity["answers_differ"] else
            f"the answers differ on {parity['answers_differ']} of {_count(parity['answers_compared'])} test images")
    if "failure" not in parity:
        worst = max(parity["max_abs_diff"].values())
        return [f"- Parity with the torch model on {parity['images']} test images, per step and per episode: max "
                f"|diff| / (1 + |value|) {worst:.1e} (tolerance {PARITY_TOLERANCE:g}); {same}."]
    return [f"- Strict parity (every step and episode within {PARITY_TOLERANCE:g} on {parity['images']} test "
            f"images) fails, but {same}. The usual cause: a location within one ulp of a pixel boundary, where "
            "a one-ulp difference between torch and ONNX Runtime moves the glimpse by a pixel and that episode "
            "parts from torch's:",
            "", "```", parity["failure"], "```"]


def _mnist_data_lines(task: Task, config: TrainConfig) -> list[str]:
    return [
        f"- {_describe_task(task)}, from MNIST's 50 000 training / 10 000 validation / 10 000 test digits "
        "(`mnist.pkl.gz`, or the IDX files with the last 10 000 training digits held out for validation).",
        f"- Validation and test images come from `training/data.py` `fixed_split` with the seeds "
        f"`SPLIT_SEEDS` = valid {SPLIT_SEEDS['valid']}, test {SPLIT_SEEDS['test']}"
        + (" (they place nothing on plain 28×28 MNIST)." if task.canvas_size == 28 and not task.num_clutter
           else "; training images are generated on the fly.")
        + f" Training seed {config.seed} (initial weights, data order, placements and location noise).",
    ]


def _own_data_lines(info: ModelInfo, config: TrainConfig) -> list[str]:
    data, shape = info.training["data"], info.input
    split = ", ".join(f"{_count(data[name])} {name}" for name in ("train", "valid", "test"))
    skipped = f"; {data['skipped']} files skipped (cannot be decoded or missing)" if data["skipped"] else ""
    return [
        f"- `{config.data}` (`ram-train train --data`): {split} images{skipped}; splits "
        + ("as the data gives them" if data["given_splits"] else
           f"drawn by a hash of each file's path ({config.valid_fraction:g} valid, {config.test_fraction:g} test)")
        + ".",
        f"- Classes ({len(info.labels)}): " + ", ".join(f"`{label}`" for label in info.labels) + ".",
        f"- Input: {shape.height}×{shape.width} (height×width), {shape.channels} channel(s); an image of another "
        f"size is placed by `{shape.placement}`, polarity `{shape.polarity}` (`ram_infer/images.py`); training "
        f"read the same 8-bit levels from its cache. Training seed {config.seed}.",
    ]


def _describe_own(info: ModelInfo) -> str:
    colour = "RGB" if info.input.channels == 3 else "grey"
    return f"own images `{info.dataset}` ({len(info.labels)} classes, {info.input.width}×{info.input.height} {colour})"


def _describe_task(task: Task) -> str:
    if task.canvas_size == 28 and not task.num_clutter:
        return "MNIST digits (28×28)"
    clutter = f" with {task.num_clutter} pieces of {task.clutter_size}×{task.clutter_size} clutter" \
        if task.num_clutter else ""
    return f"MNIST digits placed at random in a {task.canvas_size}×{task.canvas_size} canvas{clutter}"


def _count(number: int) -> str:
    return f"{number:,}".replace(",", " ")  # 10 000, as the card writes the data set sizes


def _percent(fraction: float | None) -> str:
    return "—" if fraction is None or math.isnan(fraction) else f"{100 * fraction:.2f} %"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.2f} h"


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.2f} MB ({size:,} bytes)" if size >= 1e6 else f"{size / 1e3:.0f} kB ({size:,} bytes)"
