"""ram-train card: ships a finished run as a bundled model — the ONNX file with measured metadata and its model card.

``ram-train card RUN_DIR --name NAME`` exports ``RUN_DIR/best.pt``, measures it through the runtime on the whole test
split, checks the ONNX file against the torch model, and writes:

- ``ram_infer/models/NAME.onnx``: the evaluated graph, byte for byte, with ``ram.test_error`` and ``ram.training``;
- ``ram_infer/models/NAME.md``: the model card (data, command, wall time, hardware, errors, early exit, figures);
- ``docs/models/NAME-curve.png`` and ``docs/models/NAME-trace.png``: the learning curve and the glimpse paths.

Nothing is written until evaluation and the parity check have passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from ram_infer import load_model
from ram_infer.engine import MODELS_DIR
from ram_infer.metadata import ModelInfo
from training.config import TrainConfig
from training.data import SPLIT_SEEDS, TASKS, fixed_split
from training.evaluate import (errors_per_glimpse, evaluate_onnx, mean_rollouts, on_canvas, plot_curve,
                               plot_onnx_traces)
from training.episode import export_episode, sidecar
from training.export import (PARITY_TOLERANCE, ParityError, check_parity, export_loaded_checkpoint,
                             load_checkpoint)
from training.model import RecurrentAttention
from training.presets import PRESETS, load_preset
from training.train import CHECKPOINT, LOG

# The card links its pictures relative to the models folder, so by default they go to the source tree's docs/models.
DOCS_DIR = MODELS_DIR.parent.parent / "docs" / "models"
PARITY_IMAGES = 256
TRACE_IMAGES = 8
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
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


def make_card(
    run_dir: str | os.PathLike,
    name: str,
    *,
    checkpoint_name: str = "best.pt",
    command: str | None = None,
    models_dir: str | os.PathLike = MODELS_DIR,
    docs_dir: str | os.PathLike = DOCS_DIR,
    data_root: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Exports, measures and documents the model of a finished run (see the module docstring).

    Args:
        run_dir: the run's directory (``ram-train train --out``): the checkpoint and ``log.jsonl``.
        name: the model's name: the file stem under ``models_dir``, which ``ram_infer.load_model(name)`` finds.
        checkpoint_name: the checkpoint in ``run_dir`` to ship.
        command: the exact ``ram-train train`` command of the run; None reconstructs one from the run's
            configuration (preset plus the overrides that differ from it) and says so in the card.
        models_dir: where ``NAME.onnx`` and ``NAME.md`` go.
        docs_dir: where the card's pictures go.
        data_root: the MNIST directory; None uses the run's.
        limit: evaluate only the first ``limit`` test images (for trials; the card says so).

    Returns:
        The written paths (``onnx``, ``card``, ``curve``, ``trace``), the ``evaluation`` of ``evaluate_onnx`` and the
        ``parity`` of ``verify_export``.

    Raises:
        ValueError: a bad name or limit, or a checkpoint that is not a ram-train checkpoint.
        FileNotFoundError: no such checkpoint or log, or no data.
        ParityError: the exported model disagrees with the torch model.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name must be a file stem of letters, digits, '_', '.' and '-', got {name!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    run_dir, models_dir, docs_dir = Path(run_dir), Path(models_dir), Path(docs_dir)
    log_path = run_dir / LOG
    if not log_path.is_file():
        raise FileNotFoundError(f"{log_path}: no such log; the run directory must hold the run's {LOG}")
    model, config, checkpoint = load_checkpoint(run_dir / checkpoint_name)
    images, labels, corners = fixed_split(config.task, "test", root=data_root or config.data_root, limit=limit,
                                          return_corners=True)
    paths = {
        "onnx": models_dir / f"{name}.onnx",
        "card": models_dir / f"{name}.md",
        "curve": docs_dir / f"{name}-curve.png",
        "trace": docs_dir / f"{name}-trace.png",
        "episode": models_dir / "episode" / f"{name}.onnx",
    }
    with tempfile.TemporaryDirectory(prefix="ram-card-") as scratch:
        measured = Path(scratch) / f"{name}.onnx"
        exported = export_loaded_checkpoint(model, config, checkpoint, measured)
        evaluation = evaluate_onnx(measured, images, labels, corners=corners if on_canvas(config.task) else None)
        parity = verify_export(model, measured, images)
        facts = training_facts(log_path, checkpoint, _run_config(run_dir, config), command)
        facts["valid"] = validation_error(model, config.task, data_root or config.data_root, limit)
        facts["test"] = {"split": "test", "seed": SPLIT_SEEDS["test"], "images": evaluation["images"],
                         "runtime": f"onnxruntime {onnxruntime.__version__}",
                         "full_split": limit is None or len(images) < limit}
        facts["parity"] = parity
        info = dataclasses.replace(exported, test_error=evaluation["error"],
                                   training={**exported.training, **facts})
        models_dir.mkdir(parents=True, exist_ok=True)
        docs_dir.mkdir(parents=True, exist_ok=True)
        _write_with_metadata(measured, paths["onnx"], info)
    shipped = load_model(paths["onnx"]).info
    if shipped.test_error != evaluation["error"]:
        raise ValueError(f"{paths['onnx']}: ram.test_error reads back as {shipped.test_error}, "
                         f"expected {evaluation['error']}")
    reference = PAPER_RESULTS.get(config.task, ())
    plot_curve(log_path, paths["curve"], marks={
        "test error (this model, ONNX)": evaluation["error"],
        **{label: percent / 100 for label, _, percent in reference[:1]},
    })
    plot_onnx_traces(paths["onnx"], images[:TRACE_IMAGES], labels[:TRACE_IMAGES], paths["trace"])
    export_episode(paths["onnx"], paths["episode"], test_images=images)
    card_command = _card_command(run_dir, name, checkpoint_name, limit)
    paths["card"].write_text(render_card(name, info, config, model_parameters(model), evaluation, parity,
                                         paths, card_command) + episode_section(name, paths))
    return {**{key: str(path) for key, path in paths.items()}, "evaluation": evaluation, "parity": parity}


def validation_error(model: RecurrentAttention, task: str, data_root: str | None, limit: int | None) -> dict[str, Any]:
    """The shipped model's error on the whole validation split (mean policy, torch): the fair way to choose between a
    run's checkpoints, since best.pt was chosen on a part of it (eval_images) among many noisy evaluations."""
    images, labels = fixed_split(task, "valid", root=data_root, limit=limit)
    error = float(errors_per_glimpse(model, images, labels)[-1])
    return {"images": len(images), "error": error}


def verify_export(model: RecurrentAttention, onnx_path: Path, images: np.ndarray) -> dict[str, Any]:
    """Checks the exported file against the torch model: strict parity on a few images, answers on all of them.

    ``check_parity`` compares every step and whole episodes within float32 rounding on the first PARITY_IMAGES
    images. A location within an ulp of a pixel boundary can still fail it without any export error: one ulp of
    difference between torch and ONNX Runtime moves that glimpse by a pixel and the episodes part. Such a failure is
    recorded, not fatal, as long as the runtime gives the torch model's answer on every evaluated image.

    Args:
        model: the torch model that was exported.
        onnx_path: the exported file.
        images (ndarray[N, C, H, W], float32): the evaluation images.

    Returns:
        ``images`` and ``max_abs_diff`` (per output) of the strict check, or its ``failure`` message; and
        ``answers_compared`` and ``answers_differ`` over all images.

    Raises:
        ParityError: the strict check failed and the answers differ on some image.
    """
    runtime_answers = load_model(onnx_path, threads=1).predict(images).labels  # (N,)
    differ = int(np.sum(runtime_answers != mean_rollouts(model, images)[0][:, -1]))
    result: dict[str, Any] = {"images": min(len(images), PARITY_IMAGES), "answers_compared": len(images),
                              "answers_differ": differ}
    try:
        result["max_abs_diff"] = check_parity(model, onnx_path, images[:PARITY_IMAGES])
    except ParityError as error:
        if differ:
            raise ParityError(f"{error}\nand the answers differ on {differ} of {len(images)} images") from None
        result["failure"] = str(error).replace(str(onnx_path), onnx_path.name)  # not the scratch folder
    return result


def _run_config(run_dir: Path, shipped: TrainConfig) -> TrainConfig:
    """The run's latest configuration (its checkpoint.pt): the shipped best.pt may predate a lengthening of the run."""
    latest = run_dir / CHECKPOINT
    if not latest.is_file():
        return shipped
    return TrainConfig.from_dict(torch.load(latest, map_location="cpu", weights_only=False)["config"])


def schedule_text(schedule_legs: list[list[int]], steps: int) -> str:
    """How the learning rate (and σ) moved, in words, for a run with schedule legs; "" for a single schedule."""
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


def location_std_text(config: TrainConfig) -> str:
    """The location policy's σ over the run, in words: its σ legs (changed on resume), then model.location_std."""
    legs = [f"{std:g} until step {until:,}" for until, std in config.location_std_legs]
    last = f"{config.model.location_std:g}"
    if config.location_std_final is not None:
        last += f" annealed linearly to {config.location_std_final:g}"
    return ", then ".join([*legs, last])


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


def training_facts(log_path: Path, checkpoint: dict[str, Any], config: TrainConfig,
                   command: str | None) -> dict[str, Any]:
    """How the model was trained, for ``ram.training``: command, preset, steps, wall time, hardware, versions.

    The wall time of the shipped checkpoint is its ``elapsed`` when it carries one, else the run's log at its step
    (best.pt records only the step); the whole run's steps and wall time come from the log's last record.
    """
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    if not records:
        raise ValueError(f"{log_path}: the log is empty")
    step = checkpoint.get("step")
    at_step = [r["elapsed_s"] for r in records if r["step"] == step]
    given = command is not None
    command = command if given else reconstructed_command(log_path.parent, config)
    facts: dict[str, Any] = {
        "command": command,
        "command_source": "given" if given else "reconstructed from the run's configuration",
        "preset": _preset_of(command) or (config.task if config.task in PRESETS else None),
        "task": config.task,
        "seed": config.seed,
        "steps": step,
        "wall_time_s": checkpoint.get("elapsed", at_step[-1] if at_step else None),
        "run_steps": records[-1]["step"],
        "run_wall_time_s": records[-1]["elapsed_s"],
        "planned_steps": config.steps,
        "schedule_legs": config.schedule_legs,
        "hardware": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": config.threads},
        "torch": torch.__version__,
    }
    if "valid_error" in checkpoint:  # best.pt: this validation error chose it
        facts["best_valid_error"] = checkpoint["valid_error"]
        facts["valid_images"] = config.eval_images
    return facts


def chosen_by(facts: dict[str, Any]) -> str:
    """The card's line on how this checkpoint was chosen and its validation error (mean policy, torch)."""
    valid = facts.get("valid")
    whole = f"validation error {_percent(valid['error'])} on {_count(valid['images'])} validation images" if valid \
        else "validation error not measured"
    if "valid_images" in facts:  # best.pt (export also records a checkpoint.pt run's best)
        return (f"- best.pt, chosen during the run by its validation error on {_count(facts['valid_images'])} "
                f"validation images ({_percent(facts['best_valid_error'])}); {whole} (mean policy, torch).")
    return f"- The run's checkpoint at step {facts['steps']} (not best.pt); {whole} (mean policy, torch)."


def reconstructed_command(run_dir: Path, config: TrainConfig) -> str:
    """The ``ram-train train`` command that starts this run today: its preset plus the settings that differ from it."""
    preset = config.task if config.task in PRESETS else None
    words = ["ram-train", "train", "--preset", preset or "?", "--out", str(run_dir)]
    if preset is not None:
        base, run = load_preset(preset).to_dict(), config.to_dict()
        for prefix, base_values, run_values in (("", base, run), ("model.", base["model"], run["model"])):
            for key, value in run_values.items():
                if key != "model" and _json_value(value) != _json_value(base_values[key]):
                    words.append(f"{prefix}{key}={value if isinstance(value, str) else json.dumps(value)}")
    return shlex.join(words)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else ``platform``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def model_parameters(model: torch.nn.Module) -> int:
    """Parameters of the exported step network: all but the training-only baseline network f_b."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("baseline_net."))


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
    """The model card in Markdown; pictures are linked relative to the card's folder."""
    facts, m, task = info.training, config.model, TASKS[config.task]
    T, n = m.num_glimpses, evaluation["images"]
    error = evaluation["error"]
    interval = 1.96 * math.sqrt(max(error * (1 - error), 1e-12) / n)
    sides = ", ".join(str(m.glimpse_size * m.scale_factor**i) for i in range(m.num_scales))
    picture = {key: Path(os.path.relpath(paths[key], paths["card"].parent)).as_posix() for key in ("curve", "trace")}
    scope = "the full test split" if facts["test"]["full_split"] else f"only the first {n} test images (`--limit`)"
    lines = [
        f"# `{name}`: RAM on {_describe_task(task)}",
        "",
        f"The Recurrent Attention Model (Mnih et al. 2014) classifying {_describe_task(task)} with {T} glimpses. "
        f"Test error **{_percent(error)}** on {_count(n)} test images with the mean location policy, measured "
        "through the exported ONNX step network and the ram-infer runtime, not the torch model.",
        "",
        "```python",
        "import ram_infer",
        f'engine = ram_infer.load_model("{name}")',
        "prediction = engine.predict_files([\"digit.png\"])  # or engine.predict(images [N, C, H, W])",
        "```",
        "",
        "## Data",
        "",
        f"- {_describe_task(task)}, from MNIST's 50 000 training / 10 000 validation / 10 000 test digits "
        "(`mnist.pkl.gz`, or the IDX files with the last 10 000 training digits held out for validation).",
        f"- Validation and test images come from `training/data.py` `fixed_split` with the seeds "
        f"`SPLIT_SEEDS` = valid {SPLIT_SEEDS['valid']}, test {SPLIT_SEEDS['test']}"
        + (" (they place nothing on plain 28×28 MNIST)." if task.canvas_size == 28 and not task.num_clutter
           else "; training images are generated on the fly.")
        + f" Training seed {config.seed} (initial weights, data order, placements and location noise).",
        "",
        "## Training",
        "",
        "```sh",
        facts["command"],
        "```",
        "",
    ]
    if facts["command_source"] != "given":
        lines += ["(Reconstructed from the run's configuration: its preset plus the settings that differ from it.)", ""]
    if facts.get("schedule_legs"):
        lines += [schedule_text(facts["schedule_legs"], facts["planned_steps"]), ""]
    regularisation = regularisation_text(config, facts["steps"])
    regularisation = f"; {regularisation}" if regularisation else ""
    lines += [
        f"- Preset `{facts['preset']}`; {facts['steps']} optimiser steps to this checkpoint "
        f"(the run: {facts['run_steps']} of {facts['planned_steps']}), batch {config.batch_size}, "
        f"{config.mc_samples} location sample(s) per image, Adam lr {config.learning_rate:g} with cosine decay to "
        f"×{config.lr_decay_to:g}, location σ {location_std_text(config)}, "
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


def episode_section(name: str, paths: dict[str, Path]) -> str:
    """The card's section on the full-episode model (training/episode.py) shipped beside the step model."""
    parity = sidecar(onnx.load(str(paths["episode"])))["episode_parity"]
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


def command_card(args: argparse.Namespace) -> int:
    result = make_card(args.run_dir, args.name, checkpoint_name=args.checkpoint, command=args.command,
                       models_dir=args.models_dir, docs_dir=args.docs_dir, data_root=args.data_root,
                       limit=args.limit)
    print(json.dumps(result))
    return 0


def add_command(commands: Any) -> None:
    """Adds the ``card`` sub-command to ram-train's parser."""
    parser = commands.add_parser("card", help="ship a run: export, measure through ONNX, write the model card",
                                 description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run's directory (ram-train train --out)")
    parser.add_argument("--name", required=True, help="model name: ram_infer.load_model(NAME) will find it")
    parser.add_argument("--checkpoint", default="best.pt", help="the checkpoint in RUN_DIR to ship")
    parser.add_argument("--command", default=None,
                        help="the exact ram-train train command of the run (default: reconstructed from its config)")
    parser.add_argument("--models-dir", default=str(MODELS_DIR), help="where NAME.onnx and NAME.md go")
    parser.add_argument("--docs-dir", default=str(DOCS_DIR), help="where the card's pictures go")
    parser.add_argument("--data-root", default=None, help="MNIST directory (default: the run's, or $RAM_INFER_DATA)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images (trials)")
    parser.set_defaults(handler=command_card)


def _write_with_metadata(source: Path, target: Path, info: ModelInfo) -> None:
    """Copies the ONNX graph of ``source`` unchanged to ``target`` (atomically) with ``info`` as its metadata."""
    proto = onnx.load(str(source))
    del proto.metadata_props[:]
    for key, value in info.to_metadata_props().items():
        proto.metadata_props.add(key=key, value=value)
    partial = target.with_name(f".{target.name}.partial")
    onnx.save(proto, str(partial))
    os.replace(partial, target)


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


def _preset_of(command: str) -> str | None:
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "--preset" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--preset="):
            return word.partition("=")[2]
    return None


def _json_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # tuples and lists compare equal, as they do after a JSON round trip


def _card_command(run_dir: Path, name: str, checkpoint_name: str, limit: int | None) -> str:
    words = ["ram-train", "card", str(run_dir), "--name", name]
    if checkpoint_name != "best.pt":
        words += ["--checkpoint", checkpoint_name]
    if limit is not None:
        words += ["--limit", str(limit)]
    return shlex.join(words)


def _describe_task(task: Any) -> str:
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
