"""ram-train card: ships a finished run as a model — the ONNX file with measured metadata and its model card.

``ram-train card RUN_DIR --name NAME [--models-dir DIR]`` exports ``RUN_DIR/best.pt``, measures it through the runtime
on the whole test split, checks the ONNX file against the torch model, and writes:

- ``DIR/NAME.onnx``: the evaluated graph, byte for byte, with ``ram.test_error`` and ``ram.training``;
- ``DIR/NAME.md``: the model card (data, command, wall time, hardware, errors, early exit, figures; card_markdown.py);
- ``DIR/episode/NAME.onnx``: the full-episode model (episode.py);
- ``NAME-curve.png`` and ``NAME-trace.png`` in the docs folder (``--docs-dir``, default DIR): the learning curve and
  the glimpse paths.

Where: the folder the user names. From a source checkout of ram-infer (not an installed package) the default is the
checkout's bundled models, ``ram_infer/models``, with the pictures in ``docs/models``: that is how a model joins the
bundle. It never writes into installed packages (site-packages): a model there would be lost or overwritten by the
next install, and ``--name mnist`` would replace the bundled model. It replaces an existing model of the same name
only when told to (``--force``).

Nothing is written until evaluation and the parity check have passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shlex
import sysconfig
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

from .card_markdown import PAPER_RESULTS, TRACE_IMAGES, episode_section, render_card
from .config import TrainConfig
from .data import SPLIT_SEEDS, evaluation_split, open_folder
from .episode import export_episode, sidecar
from .evaluate import errors_per_glimpse, evaluate_onnx, mean_rollouts, on_canvas, plot_curve, plot_onnx_traces
from .export import ParityError, check_parity, export_loaded_checkpoint, load_checkpoint, read_checkpoint
from .model import RecurrentAttention
from .presets import PRESETS, load_preset
from .run_files import CHECKPOINT, LOG

PARITY_IMAGES = 256
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
INSTALLED_PACKAGES_FOLDERS = {"site-packages", "dist-packages"}


def make_card(
    run_dir: str | os.PathLike,
    name: str,
    *,
    checkpoint_name: str = "best.pt",
    command: str | None = None,
    models_dir: str | os.PathLike | None = None,
    docs_dir: str | os.PathLike | None = None,
    force: bool = False,
    data_root: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Exports, measures and documents the model of a finished run (see the module docstring).

    Args:
        run_dir: the run's directory (``ram-train train --out``): the checkpoint and ``log.jsonl``.
        name: the model's name: the file stem under ``models_dir``.
        checkpoint_name: the checkpoint in ``run_dir`` to ship.
        command: the exact ``ram-train train`` command of the run; None reconstructs one from the run's
            configuration (preset plus the overrides that differ from it) and says so in the card.
        models_dir: where ``NAME.onnx``, ``NAME.md`` and ``episode/NAME.onnx`` go; None: the source checkout's
            bundled models (card_folders).
        docs_dir: where the card's pictures go; None: ``models_dir``, or the checkout's ``docs/models`` with it.
        force: replace a model of the same name in ``models_dir``.
        data_root: the MNIST directory; None uses the run's.
        limit: evaluate only the first ``limit`` test images (for trials; the card says so).

    Returns:
        The written paths (``onnx``, ``card``, ``curve``, ``trace``, ``episode``), the ``evaluation`` of
        ``evaluate_onnx`` and the ``parity`` of ``verify_export``.

    Raises:
        ValueError: a bad name or limit, a folder inside installed packages, no folder given outside a source
            checkout, a model of that name already there (without ``force``), or a checkpoint that is not a
            ram-train checkpoint.
        FileNotFoundError: no such checkpoint or log, or no data.
        ParityError: the exported model disagrees with the torch model.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name must be a file stem of letters, digits, '_', '.' and '-', got {name!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    models_dir, docs_dir = card_folders(models_dir, docs_dir)
    paths = card_paths(name, models_dir, docs_dir)
    if not force:
        refuse_to_replace(name, paths)
    run_dir = Path(run_dir)
    log_path = run_dir / LOG
    if not log_path.is_file():
        raise FileNotFoundError(f"{log_path}: no such log; the run directory must hold the run's {LOG}")
    model, config, checkpoint = load_checkpoint(run_dir / checkpoint_name)
    images, labels, corners = evaluation_split(config, "test", root=data_root, limit=limit)
    with tempfile.TemporaryDirectory(prefix="ram-card-") as scratch:
        measured = Path(scratch) / f"{name}.onnx"
        exported = export_loaded_checkpoint(model, config, checkpoint, measured)
        evaluation = evaluate_onnx(measured, images, labels, corners=corners if on_canvas(config.task) else None)
        parity = verify_export(model, measured, images)
        facts = training_facts(log_path, checkpoint, _run_config(run_dir, config), command)
        facts["valid"] = validation_error(model, config, data_root, limit)
        facts["test"] = {"split": "test", "seed": SPLIT_SEEDS["test"] if config.task != "folder" else None,
                         "images": evaluation["images"],
                         "runtime": f"onnxruntime {onnxruntime.__version__}",
                         "full_split": limit is None or len(images) < limit}
        facts["parity"] = parity
        if config.task == "folder":
            facts["data"] = folder_facts(config)
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
    episode_parity = sidecar(onnx.load(str(paths["episode"])))["episode_parity"]
    card_command = _card_command(run_dir, name, checkpoint_name, limit)
    paths["card"].write_text(render_card(name, info, config, model_parameters(model), evaluation, parity,
                                         paths, card_command) + episode_section(name, paths, episode_parity))
    return {**{key: str(path) for key, path in paths.items()}, "evaluation": evaluation, "parity": parity}


def card_folders(models_dir: str | os.PathLike | None,
                 docs_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    """The folders ram-train card writes to: the model's and the pictures'.

    Args:
        models_dir: the folder named by the user; None: the source checkout's bundled models (source_checkout_models),
            and then ``docs/models`` beside them for the pictures unless ``docs_dir`` is given.
        docs_dir: the pictures' folder named by the user; None: as above, else ``models_dir``.

    Returns:
        (the models folder, the pictures folder), neither inside installed packages.

    Raises:
        ValueError: ``models_dir`` is None outside a source checkout, or a folder lies in installed packages.
    """
    if models_dir is None:
        bundled = source_checkout_models(MODELS_DIR)
        if bundled is None:
            raise ValueError(f"name the folder to write the model to with --models-dir: ram_infer is an installed "
                             f"package here ({MODELS_DIR.parent}), and ram-train card never writes into one")
        models = bundled
        docs = Path(docs_dir) if docs_dir is not None else bundled.parent.parent / "docs" / "models"
    else:
        models = Path(models_dir)
        docs = Path(docs_dir) if docs_dir is not None else models
    for folder in (models, docs):
        if in_installed_packages(folder):
            raise ValueError(f"{folder} lies in installed packages, where ram-train card never writes (the next "
                             "install would lose the model or it would replace a bundled one): choose a folder of "
                             "your own with --models-dir (and --docs-dir)")
    return models, docs


def source_checkout_models(models_dir: Path) -> Path | None:
    """``models_dir`` (ram_infer's bundled models) when ram_infer runs from a source checkout, where shipping a model
    means adding it to the bundle; None when ram_infer is an installed package. A checkout is a ram_infer folder
    outside installed packages with the project's pyproject.toml beside it."""
    if in_installed_packages(models_dir) or not (models_dir.parent.parent / "pyproject.toml").is_file():
        return None
    return models_dir


def in_installed_packages(path: Path) -> bool:
    """Whether ``path`` lies in a folder of installed packages: any site-packages or dist-packages folder (virtual
    environments, user installs, Debian's) or this interpreter's purelib and platlib, wherever they are."""
    resolved = Path(path).expanduser().resolve()
    if INSTALLED_PACKAGES_FOLDERS & {part.lower() for part in resolved.parts}:
        return True
    libraries = {sysconfig.get_path(key) for key in ("purelib", "platlib")}
    return any(resolved.is_relative_to(Path(library).resolve()) for library in libraries if library)


def card_paths(name: str, models_dir: Path, docs_dir: Path) -> dict[str, Path]:
    """The files ram-train card writes for the model ``name``."""
    return {
        "onnx": models_dir / f"{name}.onnx",
        "card": models_dir / f"{name}.md",
        "curve": docs_dir / f"{name}-curve.png",
        "trace": docs_dir / f"{name}-trace.png",
        "episode": models_dir / "episode" / f"{name}.onnx",
    }


def refuse_to_replace(name: str, paths: dict[str, Path]) -> None:
    """Raises ValueError when a model ``name`` is already there (its ONNX file, card or episode model)."""
    existing = [paths[key] for key in ("onnx", "card", "episode") if paths[key].exists()]
    if existing:
        raise ValueError(f"{existing[0]} exists: a model named {name!r} is already there; pass --force to replace it")


def validation_error(model: RecurrentAttention, config: TrainConfig, data_root: str | None,
                     limit: int | None) -> dict[str, Any]:
    """The shipped model's error on the whole validation split (mean policy, torch): the fair way to choose between a
    run's checkpoints, since best.pt was chosen on a part of it (eval_images) among many noisy evaluations."""
    images, labels, _ = evaluation_split(config, "valid", root=data_root, limit=limit)
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
    return TrainConfig.from_dict(read_checkpoint(latest)["config"])


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


def folder_facts(config: TrainConfig) -> dict[str, Any]:
    """An own data set's split sizes and skipped files, for the card."""
    data = open_folder(config)
    counts = {split: int(sum(values)) for split, values in data.counts().items()}
    return {**counts, "skipped": len(data.failed) + len(data.listing.missing),
            "given_splits": any(data.listing.given_splits)}


def reconstructed_command(run_dir: Path, config: TrainConfig) -> str:
    """The ``ram-train train`` command that starts this run today: its preset plus the settings that differ from it;
    for own images, the data and the steps the plan chose (the rest follows from the data)."""
    if config.task == "folder":
        return shlex.join(["ram-train", "train", "--data", str(config.data), "--out", str(run_dir),
                           f"steps={config.steps}"])
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


def command_card(args: argparse.Namespace) -> int:
    """``ram-train card RUN_DIR --name NAME``: prints the written paths and the measurements as one JSON line."""
    result = make_card(args.run_dir, args.name, checkpoint_name=args.checkpoint, command=args.command,
                       models_dir=args.models_dir, docs_dir=args.docs_dir, force=args.force,
                       data_root=args.data_root, limit=args.limit)
    print(json.dumps(result))
    return 0


def _write_with_metadata(source: Path, target: Path, info: ModelInfo) -> None:
    """Copies the ONNX graph of ``source`` unchanged to ``target`` (atomically) with ``info`` as its metadata."""
    proto = onnx.load(str(source))
    del proto.metadata_props[:]
    for key, value in info.to_metadata_props().items():
        proto.metadata_props.add(key=key, value=value)
    partial = target.with_name(f".{target.name}.partial")
    onnx.save(proto, str(partial))
    os.replace(partial, target)


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
