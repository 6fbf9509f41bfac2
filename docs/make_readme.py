"""Writes README.md's generated blocks: the model table from the bundled models' metadata, the example from ram-infer.

    python docs/make_readme.py           # rewrite the blocks in README.md
    python docs/make_readme.py --check   # exit 1 and print a diff if README.md is stale

A block is the text between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->``; the rest of the README is written by
hand. The README shows measured numbers and program output, and both go stale silently when copied by hand: here the
test errors come from each model's ``ram.test_error`` (written by ``ram-train card`` when it measured the shipped
file), the published errors from ``training/card.py``'s ``PAPER_RESULTS``, and the example from running the CLI.
``tests/test_readme.py`` calls the same functions and fails when the README differs. Run it after shipping a model or
changing what the CLI prints.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The example commands, run from the repository root; the README shows each with its output.
EXAMPLE_COMMANDS = (
    ("examples/digit_7.png", "examples/paper_3.jpg"),
    ("examples/digit_7.png", "--json"),
)
# The own-images example: the bundled model the README's recipe trained, on test images of examples/make_shapes.py.
OWN_IMAGES_COMMANDS = (("--model", "shapes", "examples/shape_star.png", "examples/shape_heart.png"),)
BLOCK = re.compile(r"(<!-- begin: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.DOTALL)
# A JSON result's glimpse locations: T pairs of six-decimal floats, too long for one README line and, after the first
# (the model's fixed initial location), the least portable digits of the output. The README keeps the first pair.
LOCATIONS = re.compile(r'("locations": \[\[[^\]]*\])(?:, \[[^\]]*\])+\]')


def run_cli(*args: str) -> str:
    """What ``ram-infer ARGS`` prints on stdout, run from the repository root.

    Raises:
        subprocess.CalledProcessError: it exited with a non-zero status.
    """
    # PYTHONSAFEPATH keeps the source folder ram_infer/ (the working directory of `-m`) off sys.path, so this runs the
    # installed program, as a user does.
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    command = [sys.executable, "-m", "ram_infer", *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
    return result.stdout


def elide_locations(line: str) -> str:
    """A JSON result line with its locations cut to the first pair: ``"locations": [[0.0, 0.0], ...]``."""
    return LOCATIONS.sub(r"\1, ...]", line)


def example_block() -> str:
    """The README's example: each of EXAMPLE_COMMANDS and what ram-infer prints for it, in a console block."""
    lines = ["```console"]
    for args in EXAMPLE_COMMANDS:
        if len(lines) > 1:
            lines.append("")
        lines.append("$ " + shlex.join(["ram-infer", *args]))
        lines += [elide_locations(line) for line in run_cli(*args).splitlines()]
    return "\n".join(lines + ["```"]) + "\n"


def models_block() -> str:
    """The README's model table: one row per bundled model, from its metadata and the paper's published errors."""
    # Imported here: the example block needs only the runtime, the table also the training package (torch).
    from ram_infer.engine import bundled_models, load_model
    from ram_infer.training.card import PAPER_RESULTS
    from ram_infer.training.data import TASKS

    rows = []
    for name in bundled_models():
        info = load_model(name).info
        network = info.training["model"]
        published = PAPER_RESULTS.get(info.dataset, ())
        order = list(TASKS).index(info.dataset) if info.dataset in TASKS else len(TASKS)  # own images last
        rows.append((order, name, [
            f"[`{name}`](ram_infer/models/{name}.md)",  # its card
            _describe_task(TASKS[info.dataset]) if info.dataset in TASKS else _describe_own_images(info),
            f"{info.num_glimpses} of {info.sensor.glimpse_size}×{info.sensor.glimpse_size}, "
            f"{info.sensor.num_scales} scales",
            f"{network['core'].upper()}, {network['core_hidden']} units",
            "—" if info.test_error is None else f"**{100 * info.test_error:.2f} %**",
            ", ".join(_paper_error(label, glimpses, error) for label, glimpses, error in published
                      if glimpses is not None) or "—",
            ", ".join(_reimplementation_error(label, error) for label, glimpses, error in published
                      if glimpses is None) or "—",
        ]))
    header = ["model (card)", "task", "glimpses", "core", "test error", "paper (NIPS 2014)",
              "best public reimplementation"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for _, _, cells in sorted(rows)]  # the paper's order of tasks
    return "\n".join(lines) + "\n"


def _describe_task(task) -> str:
    if task.canvas_size == 28 and not task.num_clutter:
        return "MNIST 28×28"
    if not task.num_clutter:
        return f"digit at a random place in {task.canvas_size}×{task.canvas_size}"
    return (f"digit + {task.num_clutter} pieces of {task.clutter_size}×{task.clutter_size} clutter in "
            f"{task.canvas_size}×{task.canvas_size}")


def _describe_own_images(info) -> str:
    shape = info.input
    colour = "RGB" if shape.channels == 3 else "grey"
    return f"own images `{info.dataset}`: {len(info.labels)} classes, {shape.width}×{shape.height} {colour}"


def _paper_error(label: str, glimpses: int, error: float) -> str:
    # The paper reads cluttered100's error off a plot ("about"); the others are two-decimal table entries.
    value = f"about {error:g}" if "about" in label else f"{error:.2f}"
    return f"{value} % ({glimpses} glimpses)"


def _reimplementation_error(label: str, error: float) -> str:
    source = re.search(r"\((.*)\)", label)
    return f"{error:g} %" + (f" ({source.group(1)})" if source else "")


def own_images_block() -> str:
    """The README's own-images example: what the bundled model trained by that recipe answers."""
    lines = ["```console"]
    for args in OWN_IMAGES_COMMANDS:
        lines.append("$ " + shlex.join(["ram-infer", *args]))
        lines += run_cli(*args).splitlines()
    return "\n".join(lines + ["```"]) + "\n"


GENERATORS = {"models": models_block, "example": example_block, "own-images": own_images_block}


def render(text: str) -> str:
    """``text`` (the README) with every generated block rewritten.

    Raises:
        ValueError: a block of GENERATORS is missing from the text, or the text has a block no generator makes.
    """
    found = [match.group("name") for match in BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(GENERATORS))
    missing = sorted(set(GENERATORS) - set(found))
    if unknown or missing:
        raise ValueError(f"README blocks: unknown {unknown}, missing {missing} (markers: <!-- begin: NAME -->)")
    return BLOCK.sub(lambda match: match.group(1) + GENERATORS[match.group("name")]() + match.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print a diff and exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    old = README.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new == old:
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                                   "README.md", "README.md (generated)"))
        print("README.md is stale: run `python docs/make_readme.py`", file=sys.stderr)
        return 1
    if new != old:
        README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
