"""ram-train: trains RAM on a preset with resumable checkpoints and torchrun data parallelism; evaluates, ships and
exports the result.

Sub-commands: ``train``, ``plan``, ``eval``, ``card``, ``episode`` and ``export``; each one's code lives beside what
it does (train.py, plan.py, evaluate.py, card.py, episode.py, export.py) and this module holds the command line.

This module and the presets it lists import nothing outside the standard library when they load: the console script
must start in a runtime-only install (``pip install ram-infer``, no torch) and say in one line how to get the
training side, not fail with a traceback. The sub-commands' modules, which need torch, are imported once that check
has passed (command_handlers).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .presets import PRESETS  # no torch: the presets are configurations

# The import names of the [train] extra (pyproject.toml): the training side needs every one of them.
TRAIN_EXTRA = ("torch", "onnx", "tqdm", "matplotlib")
INSTALL_HINT = ('ram-train: the training side needs the [train] extra ({missing} is missing): '
                'pip install "ram-infer[train]" (torch first: see the README)')


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``ram-train``; returns the exit status: 0, or 2 with one line on stderr for a user error."""
    missing = missing_training_dependency()
    if missing is not None:
        print(INSTALL_HINT.format(missing=missing), file=sys.stderr)
        return 2
    args = build_parser(command_handlers()).parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as error:  # FileNotFoundError, a folder in the way, a full disk …
        print(f"ram-train: {error}", file=sys.stderr)
        return 2


def missing_training_dependency() -> str | None:
    """The first module of the [train] extra that cannot be found, or None when all can (none is imported here)."""
    for name in TRAIN_EXTRA:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:  # an import hook that refuses the name: as good as missing
            return name
    return None


def command_handlers() -> dict[str, Callable[[argparse.Namespace], int]]:
    """Each sub-command's function. Imported here, after missing_training_dependency has passed, not at the top: the
    modules import torch."""
    from . import card, episode, evaluate, export, plan, train

    return {"train": train.command_train, "plan": plan.command_plan, "eval": evaluate.command_eval,
            "card": card.command_card, "episode": episode.command_episode, "export": export.command_export}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the contract for bad settings), not the usage block and the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(handlers: dict[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """ram-train's parser; each sub-command's namespace carries its function as ``handler``."""
    parser = _Parser(prog="ram-train", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (add_train, add_plan, add_eval, add_card, add_episode, add_export):
        name, command = add(commands)
        command.set_defaults(handler=handlers[name])
    return parser


def add_train(commands: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = commands.add_parser("train", help="train (or resume) a model",
                                 description="Train RAM. Settings: a preset, or your own images (--data), then "
                                             "key=value overrides (model.key=value for the model), e.g. steps=2000 "
                                             "model.core=lstm.")
    parser.add_argument("--preset", choices=PRESETS, help="the data set and its paper-style defaults")
    parser.add_argument("--data", metavar="DIR", help=DATA_HELP + "; settings chosen from it (ram-train plan)")
    parser.add_argument("--out", required=True, help="run directory: checkpoint.pt, best.pt, log.jsonl, config.json")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--stop-at", type=int, metavar="STEP",
                        help="checkpoint and stop at this step (resume later with --resume); the schedule is unchanged")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return "train", parser


DATA_HELP = ("your own images: a folder DIR/<class>/<image> (or DIR/train/<class>/…, DIR/valid/…, DIR/test/…), "
             "or a CSV of file,label[,split] rows")


def add_plan(commands: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = commands.add_parser("plan", help="what ram-train train --data would do, without training",
                                 description="Show the settings chosen from your images (input format, sensor, "
                                             "network, steps), the class counts and the measured step time.")
    parser.add_argument("--data", metavar="DIR", required=True, help=DATA_HELP)
    parser.add_argument("--json", action="store_true", help="the plan as one JSON object")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return "plan", parser


def add_eval(commands: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = commands.add_parser("eval", help="test error with the mean policy (checkpoint or exported model)",
                                 description="Test error of the mean policy after 1 … T glimpses: of a checkpoint "
                                             "through torch, or of an exported .onnx through the runtime "
                                             "(which adds early exit).")
    parser.add_argument("model", help="checkpoint.pt or best.pt of a run, or an exported .onnx model")
    parser.add_argument("--split", default="test", choices=("test", "valid"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    parser.add_argument("--data-root", default=None, help="MNIST directory (default: the run's, or $RAM_INFER_DATA)")
    parser.add_argument("--trace", metavar="OUT.png", help="draw the glimpse paths of the first images")
    parser.add_argument("--trace-images", type=int, default=8)
    parser.add_argument("--curve", metavar="OUT.png",
                        help="plot the run's learning curve from the log.jsonl beside the checkpoint")
    return "eval", parser


def add_card(commands: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = commands.add_parser("card", help="ship a run: export, measure through ONNX, write the model card",
                                 description="Ship a run as a model: the ONNX file with its measured test error, "
                                             "its model card, the full-episode model and the card's pictures.")
    parser.add_argument("run_dir", help="the run's directory (ram-train train --out)")
    parser.add_argument("--name", required=True, help="the model's name: the file stem of NAME.onnx and NAME.md")
    parser.add_argument("--checkpoint", default="best.pt", help="the checkpoint in RUN_DIR to ship")
    parser.add_argument("--command", default=None,
                        help="the exact ram-train train command of the run (default: reconstructed from its config)")
    parser.add_argument("--models-dir", default=None,
                        help="where NAME.onnx, NAME.md and episode/NAME.onnx go (default, in a source checkout of "
                             "ram-infer only: its bundled models, ram_infer/models); never inside site-packages")
    parser.add_argument("--docs-dir", default=None,
                        help="where the card's pictures go (default: --models-dir, or the checkout's docs/models)")
    parser.add_argument("--force", action="store_true", help="replace a model of the same name in the models folder")
    parser.add_argument("--data-root", default=None, help="MNIST directory (default: the run's, or $RAM_INFER_DATA)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images (trials)")
    return "card", parser


def add_episode(commands: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = commands.add_parser("episode", help="export a step model as one full-episode ONNX graph (edge runtimes)",
                                 description="Full-episode ONNX: a whole mean-policy RAM episode in one "
                                             "standard-ONNX graph, for runtimes without ram-infer's sensor.")
    parser.add_argument("step_model", help="a step model (.onnx) or a bundled model's name")
    parser.add_argument("output", help="the episode model to write (.onnx); its metadata also goes to OUT.json")
    parser.add_argument("--test-set", metavar="DATA", default=None,
                        help="MNIST directory: measure parity with the stepwise runtime on the model's full test set")
    return "episode", parser


def add_export(commands: Any) -> tuple[str, argparse.ArgumentParser]:
    parser = commands.add_parser("export", help="export a checkpoint's step network to ONNX (no measuring)",
                                 description="Export the step network of a checkpoint (checkpoint.pt or best.pt) "
                                             "to ONNX with its ram.* metadata; ram-train card also measures it.")
    parser.add_argument("checkpoint", help="checkpoint.pt or best.pt of a run")
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--test-error", type=float, default=None, help="measured test error in [0, 1]")
    parser.add_argument("--episode", metavar="EPISODE.onnx",
                        help="also write the full-episode model (and EPISODE.json), as ram-train episode does")
    return "export", parser
