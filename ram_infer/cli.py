"""The ``ram-infer`` command: classify image files with a RAM model and print one result per file (text, JSON or CSV).

    ram-infer FILE_OR_DIR_OR_-... [--model NAME|PATH] [--format text|json|csv] [--json] [--top-k K]
              [--trace OUT.png|OUT.gif] [--early-exit P] [--threads N] [--provider NAME]... [--batch-size B]
              [--max-pixels P] [--recursive]
    ram-infer --list-models [--json]
    ram-infer --version

A directory stands for the image files directly inside it (by suffix, sorted), or below it with ``--recursive``;
``-`` is one image read from standard input. ``--trace OUT`` draws the glimpse path of each image; with several
inputs, each gets ``OUT``'s name with the input's stem appended (``trace.png`` → ``trace_digit_7.png``), so two
inputs with the same stem overwrite each other's trace. CSV output has a header line and the columns ``file, label,
confidence, glimpses_used, top_k, error`` (``top_k`` as ``label:probability`` pairs joined by ``;``); the glimpse
locations are in the JSON output only.

An input that fails (missing, empty, corrupt, unreadable, a directory without images, a trace that cannot be
written) prints one line ``file: problem`` on stderr (and, in JSON or CSV output, a ``{"file", "error"}`` record on
stdout, the only record of that input); the other inputs are still processed, and the exit status is 2. A model that
cannot be loaded, or whose step network fails to run or gives non-finite values, stops everything with one line and
status 2, as does output that cannot be written (a full disk; a closed pipe, as in ``ram-infer dir/ | head -1``,
ends it silently). Ctrl-C ends any run at once with status 130. In text output the control characters and
undecodable bytes of file names and of what the model's metadata supplies (labels, data set) are escaped (``\n``,
``\x1b``, ``\udcff``), so every result stays one line and nothing reaches the terminal as a control sequence; JSON
output carries them as JSON strings.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from ram_infer import __version__

if TYPE_CHECKING:
    import numpy as np

    from ram_infer.engine import Engine, Prediction
    from ram_infer.metadata import ModelInfo

# numpy, ram_infer.engine (onnxruntime), ram_infer.images and ram_infer.draw (Pillow) are imported in the methods that
# use them, on the worker thread: `ram-infer --version` and `--help` do not pay for loading them, and Ctrl-C while
# they load ends the run with its one line instead of a traceback from inside an import.

DEFAULT_MODEL = "mnist"
STDIN = "-"
MAX_STDIN_BYTES = 256 << 20  # an image piped in is read whole: bounded like a model file
FORMATS = ("text", "json", "csv")
CSV_COLUMNS = ("file", "label", "confidence", "glimpses_used", "top_k", "error")
TRACE_SUFFIXES = (".png", ".gif")  # a picture of the whole path, or an animation of it
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 130  # 130 = 128 + SIGINT, what a shell reports for Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: the arguments without the program name; None reads ``sys.argv``.

    Returns:
        0 if every input was classified, 2 if any failed or the model could not be loaded. Ctrl-C ends the process
        with status 130 without returning.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if sys.stderr is None:  # started with stderr closed (2>&-): nowhere to say anything, but no traceback either
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:  # started with stdout closed (>&-)
        sys.stderr.write("ram-infer: standard output is closed\n")
        return EXIT_FAILED
    for stream in (sys.stdout, sys.stderr):
        # A file name that the terminal's encoding cannot show must not turn into a UnicodeEncodeError traceback.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        status = _run(argv)
        sys.stdout.flush()  # here, not at interpreter exit, where a write error becomes an "Exception ignored" text
    except KeyboardInterrupt:  # before the worker thread took over (parsing the arguments)
        sys.stderr.write("ram-infer: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head -1`): as for any Unix filter, not an error to report
        _discard_stdout()
        return EXIT_FAILED
    except OSError as error:  # the output cannot be written, e.g. a full disk
        _discard_stdout()
        sys.stderr.write(f"ram-infer: cannot write the output ({error.strerror or error})\n")
        return EXIT_FAILED
    return status


def _run(argv: list[str]) -> int:
    if "--version" in argv:  # fast path: no onnxruntime, no Pillow
        sys.stdout.write(f"ram-infer {__version__}\n")
        return EXIT_OK
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage error (or --help)
        return exit.code if isinstance(exit.code, int) else EXIT_FAILED
    return _interruptible(_Run(args, sys.stdout, sys.stderr).run)


def _interruptible(work: Callable[[], int]) -> int:
    """Runs ``work`` on a worker thread, so that Ctrl-C ends the process at once with status 130.

    Python handles a signal only between bytecodes of its main thread, so Ctrl-C during one long call into ONNX
    Runtime, the sensor or a decoder would wait for that call to end. Here the main thread only waits, and waiting
    is interrupted by the signal. The worker's exceptions (write errors included) are raised again here.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["status"] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread, which raises it
            outcome["error"] = error

    worker = threading.Thread(target=target, name="ram-infer", daemon=True)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        restore = getattr(sys.modules.get("ram_infer.images"), "restore_stderr", None)  # None while it loads
        if restore is not None:  # a TIFF decode may hold file descriptor 2 on /dev/null
            restore()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stderr.write("ram-infer: interrupted\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # the worker may be inside a C call that cannot be stopped; do not wait for it
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]


def _discard_stdout() -> None:
    """Points stdout at /dev/null, so that the flush at interpreter exit does not fail (and print) a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a replaced sys.stdout (tests) has no file descriptor
        pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the contract for bad settings), not the usage block and the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FAILED, f"{self.prog}: {_printable(message)} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ram-infer",
        description="Classify images with a Recurrent Attention Model (a few glimpses per image, no PyTorch).",
        epilog="Exit status: 0 if every input was classified, 2 if any failed (one line each), 130 on Ctrl-C.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="image files, directories of images, or - for stdin")
    parser.add_argument(
        "--model", type=_model_name, default=None, help=f"bundled model name or .onnx path (default: {DEFAULT_MODEL})"
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output: text lines, JSON lines or CSV")
    parser.add_argument("--json", action="store_const", const="json", dest="format", help="the same as --format json")
    parser.add_argument("-r", "--recursive", action="store_true", help="directories: also the images in subfolders")
    parser.add_argument(
        "--provider",
        action="append",
        default=None,
        metavar="NAME",
        help="ONNX Runtime execution provider, in order of preference (repeatable); the CPU is always the fallback",
    )
    parser.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help="also report the K best classes")
    parser.add_argument(
        "--trace", type=_trace_path, default=None, metavar="OUT", help="draw the glimpse path (.png, or .gif)"
    )
    parser.add_argument("--early-exit", type=_probability, default=None, metavar="P", help="stop at confidence >= P")
    parser.add_argument(
        "--threads", type=_positive_int, default=None, metavar="N", help="CPU threads (default: all; at most the cores)"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=256, metavar="B", help="images per batch")
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=None,
        metavar="P",
        help="refuse images of more than P pixels, from their header (default: 64000000)",
    )
    parser.add_argument("--list-models", action="store_true", help="list the bundled models and exit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _model_name(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must name a bundled model or a file, got an empty string")
    return text


def _trace_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in TRACE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"must end in {' or '.join(TRACE_SUFFIXES)}, got {text!r}")
    return path


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _printable(name: str) -> str:
    """``name`` with control characters (ANSI escapes' ESC included) and undecodable bytes (surrogate escapes)
    written as Python escapes: one line, nothing the terminal interprets."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode() for c in name)


class _ModelFailed(Exception):
    """The step network raised while running: the model, not an input, is at fault."""


class _Run:
    """One invocation: expands the inputs, loads the model, classifies in batches, prints in input order."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO):
        self.args = args
        self.out = out
        self.err = err
        self.failed = False
        self.unusable: dict[str, str] = {}  # directory → why it gave no files, reported in its place in the output
        self.json = args.format == "json"
        self.csv = csv.writer(out, lineterminator="\n")
        self.csv_header_written = False
        self.stdin: bytes | None = None

    def run(self) -> int:
        from ram_infer.engine import DECODED_BYTES, bundled_models
        from ram_infer.images import WORKING_PIXELS

        if self.args.list_models:
            return self.list_models(bundled_models())
        if not self.args.files:
            self.err.write("ram-infer: no input files (see ram-infer --help)\n")
            return EXIT_FAILED
        engine = self.load(bundled_models())
        if engine is None:
            return EXIT_FAILED
        inputs = self.expand(self.args.files)
        batch = engine.files_per_batch(self.args.batch_size)  # memory follows the batch, not the number of files
        if self.args.trace is not None:  # each image is also kept as decoded, up to WORKING_PIXELS × 4 floats
            batch = min(batch, max(1, DECODED_BYTES // (16 * WORKING_PIXELS)))
        progress = _Progress(len(inputs), batch, self.err)
        try:
            for begin in range(0, len(inputs), batch):
                self.classify(engine, inputs[begin : begin + batch], several=len(inputs) > 1)
                progress.update(min(len(inputs), begin + batch))
        except _ModelFailed as error:
            progress.close()
            self.err.write(f"{_printable(str(error))}\n")
            return EXIT_FAILED
        progress.close()
        return EXIT_FAILED if self.failed else EXIT_OK

    def fail(self, file: str, problem: str) -> None:
        """Reports one failed input: ``file: problem`` on stderr, and its record on stdout in JSON or CSV."""
        self.failed = True
        problem = problem[len(file) + 2 :] if problem.startswith(f"{file}: ") else problem
        self.err.write(f"{_printable(file)}: {_printable(problem)}\n")
        if self.args.format != "text":
            self.emit({"file": file, "error": problem})

    def emit(self, record: dict[str, Any]) -> None:
        """One input's record on stdout as a JSON line or a CSV row (text lines are written by ``report``)."""
        if self.json:
            self.out.write(json.dumps(record) + "\n")
            return
        if not self.csv_header_written:
            self.csv.writerow(CSV_COLUMNS)
            self.csv_header_written = True
        top = ";".join(f"{entry['label']}:{entry['probability']}" for entry in record.get("top_k", ()))
        row = {**record, "top_k": top}
        # Control characters escaped as in text: a CSV file is read in terminals and spreadsheets alike.
        self.csv.writerow([_csv_cell(_printable(str(row.get(column, "")))) for column in CSV_COLUMNS])

    def load(self, bundled: dict[str, Path]) -> Engine | None:
        from ram_infer.engine import load_model
        from ram_infer.metadata import ModelFormatError

        name = DEFAULT_MODEL if self.args.model is None else self.args.model
        if self.args.model is None and DEFAULT_MODEL not in bundled:
            self.err.write(
                f"ram-infer: no bundled model '{DEFAULT_MODEL}' in this installation yet; pass --model PATH.onnx "
                "(export one with ram-train export)\n"
            )
            return None
        import onnxruntime

        from ram_infer.engine import usable_cores

        # ONNX Runtime logs a failing node on stderr itself; the CLI reports every failure in its own one line.
        onnxruntime.set_default_logger_severity(4)
        threads, cores = self.args.threads, usable_cores()
        if threads is not None and threads > cores:
            self.err.write(f"ram-infer: --threads {threads} is more than the {cores} usable cores; using {cores}\n")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                engine = load_model(name, threads=threads, providers=self.args.provider)
        except (ModelFormatError, OSError) as error:
            self.err.write(f"{_printable(str(error))}\n")
            return None
        for warning in caught:  # an unavailable execution provider: one line, then the fallback runs
            self.err.write(f"ram-infer: {_printable(str(warning.message))}\n")
        return engine

    def expand(self, names: Sequence[str]) -> list[str]:
        """Files as given; directories replaced by the image files inside them (sorted; below them with --recursive).

        A directory that cannot be listed or has no image files stays in the list, with its problem in
        ``self.unusable``, so that it is reported in input order like any failed file.
        """
        from ram_infer.images import IMAGE_SUFFIXES

        files = []
        for name in names:
            path = Path(name)
            if name == STDIN or not path.is_dir():
                files.append(name)
                continue
            try:
                found = sorted(p for p in _listing(path, self.args.recursive) if p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as error:
                self.unusable[name] = f"cannot list the directory ({error.strerror})"
                found = [name]
            if not found:
                self.unusable[name] = f"directory has no image files ({', '.join(IMAGE_SUFFIXES)})"
                found = [name]
            files += [str(p) for p in found]
        return files

    def classify(self, engine: Engine, files: list[str], several: bool) -> None:
        import numpy as np

        from ram_infer.images import DEFAULT_MAX_PIXELS, ImageError
        from ram_infer.metadata import ModelFormatError

        max_pixels = self.args.max_pixels or DEFAULT_MAX_PIXELS

        decoded: dict[int, np.ndarray] = {}
        sources: dict[int, Any] = {}  # with --trace: the decoded image and the placement, to draw on
        problems: dict[int, str] = {}
        for i, file in enumerate(files):
            if file in self.unusable:
                problems[i] = self.unusable[file]
                continue
            try:
                decoded[i], sources[i] = self.decode(file, engine, max_pixels)
            except ImageError as error:
                problems[i] = str(error)
        good = sorted(decoded)
        row_of = {i: row for row, i in enumerate(good)}
        if good:
            x = np.stack([decoded[i] for i in good])  # (n, C, H, W)
            try:
                prediction = engine.predict(x, early_exit=self.args.early_exit, batch_size=self.args.batch_size)
            except ModelFormatError as error:  # a graph whose real shapes differ from what it declares
                raise _ModelFailed(str(error)) from None
            except ValueError as error:  # our decoded images are finite: the model's input format made them not
                raise _ModelFailed(f"{engine.path}: {error} (check ram.input.value_scale)") from None
        for i, file in enumerate(files):
            if i in problems:
                self.fail(file, problems[i])
            elif self.args.trace is None or self.trace(engine.info, file, sources[i], prediction, row_of[i], several):
                self.report(engine.info, file, prediction, row_of[i])

    def decode(self, file: str, engine: Engine, max_pixels: int) -> tuple[np.ndarray, Any]:
        """One input in the model's format (a file, or for ``-`` the image on standard input, read once), and with
        --trace the decoded image and where the input lies in it, to draw on."""
        from ram_infer.images import ImageError, place_intensities, read_intensities, read_intensities_from_bytes

        if file != STDIN:
            values = read_intensities(file, max_pixels=max_pixels)  # (H, W, c)
        else:
            if self.stdin is None:
                if sys.stdin is None:  # started with stdin closed (<&-)
                    raise ImageError(f"{STDIN}: standard input is closed")
                self.stdin = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
            if len(self.stdin) > MAX_STDIN_BYTES:
                raise ImageError(f"{STDIN}: more than {MAX_STDIN_BYTES} bytes on standard input")
            values = read_intensities_from_bytes(self.stdin, source=STDIN, max_pixels=max_pixels)
        x, placement = place_intensities(values, engine.info.input, source=file)
        return x, ((values, placement) if self.args.trace is not None else None)

    def report(self, info: ModelInfo, file: str, prediction: Prediction, row: int) -> None:
        probabilities = prediction.probabilities[row]
        label = info.labels[int(prediction.labels[row])]
        used = int(prediction.glimpses_used[row])
        confidence = float(probabilities[prediction.labels[row]])
        top = []
        if self.args.top_k:
            order = sorted(range(len(probabilities)), key=lambda c: (-probabilities[c], c))[: self.args.top_k]
            top = [(info.labels[c], float(probabilities[c])) for c in order]
        if self.args.format != "text":
            record = {
                "file": file,
                "label": label,
                "confidence": round(confidence, 6),
                "locations": [[round(float(v), 6) for v in xy] for xy in prediction.locations[row, :used]],
                "glimpses_used": used,
            }
            if top:
                record["top_k"] = [{"label": name, "probability": round(p, 6)} for name, p in top]
            self.emit(record)
            return
        line = f"{_printable(file)}: {_printable(label)} ({confidence:.1%}, {used} glimpses)"
        if top:
            line += "  top " + ", ".join(f"{_printable(name)} {p:.1%}" for name, p in top)
        self.out.write(line + "\n")

    def trace(self, info: ModelInfo, file: str, source: Any, prediction: Prediction, row: int, several: bool) -> bool:
        """Writes the input's trace; if it cannot, reports the input as failed (its only record) and returns False."""
        from PIL import Image

        from ram_infer.draw import save_trace

        out = self.args.trace
        if several:
            stem = "stdin" if file == STDIN else Path(file).stem
            out = out.with_name(f"{out.stem}_{stem}{out.suffix}")
        if file != STDIN and _same_file(out, Path(file)):
            self.fail(file, f"the trace {out} would overwrite the input")
            return False
        try:
            save_trace(out, self.draw(info, source, prediction, row, out))
        except (OSError, ValueError, MemoryError, Image.DecompressionBombError) as error:
            self.fail(file, f"cannot write the trace {out} ({error})")
            return False
        return True

    def draw(self, info: ModelInfo, source: Any, prediction: Prediction, row: int, out: Path) -> list[Any]:
        """The trace's frames (Pillow images), drawn on the user's image."""
        import numpy as np

        from ram_infer.draw import draw_glimpses

        shape = info.input
        return draw_glimpses(
            np.zeros((shape.channels, shape.height, shape.width), np.float32),  # the size the locations refer to
            prediction.locations[row],
            info.sensor,
            info.input,
            glimpses_used=int(prediction.glimpses_used[row]),
            last_only=out.suffix.lower() != ".gif",  # a PNG shows the last frame alone
            caption=_answer(info, prediction, row),
            on=source,  # the user's image, not the model's input
        )

    def list_models(self, bundled: dict[str, Path]) -> int:
        from ram_infer import engine
        from ram_infer.metadata import ModelFormatError

        if not bundled:
            self.out.write(f"no bundled models yet (looked in {engine.MODELS_DIR})\n")
            return EXIT_OK
        rows = []
        for name, path in bundled.items():
            try:
                info = engine.load_model(path, threads=1).info
            except (ModelFormatError, OSError) as error:
                self.fail(name, str(error))
                continue
            if self.json:
                record = {
                    "name": name,
                    "path": str(path),
                    "dataset": info.dataset,
                    "test_error": info.test_error,
                    "num_glimpses": info.num_glimpses,
                    "labels": list(info.labels),
                }
                self.out.write(json.dumps(record) + "\n")
                continue
            error = "—" if info.test_error is None else f"{info.test_error:.2%}"
            rows.append((name, _printable(info.dataset), str(info.num_glimpses), error, str(path)))
        if rows:
            self.out.write(_table(("model", "data set", "glimpses", "test error", "file"), rows))
        return EXIT_FAILED if self.failed else EXIT_OK


def _answer(info: ModelInfo, prediction: Prediction, row: int) -> str:
    """``label (confidence)`` of one row, as the text output shows it."""
    label = int(prediction.labels[row])
    return f"{_printable(info.labels[label])} ({prediction.probabilities[row, label]:.1%})"


def _csv_cell(text: str) -> str:
    """A cell a spreadsheet shows as text: one that starts like a formula (a label "=HYPERLINK(…)" from a model's
    metadata, a file name) gets a leading apostrophe, as OWASP's advice on CSV injection says."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and text != STDIN else text


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one existing file (links followed)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _listing(folder: Path, recursive: bool) -> list[Path]:
    """The regular files in ``folder`` (and below it if ``recursive``; links to folders are not followed)."""
    if not recursive:
        return [path for path in folder.iterdir() if path.is_file()]
    files = []
    for root, _, names in os.walk(folder, onerror=_raise):
        files += [Path(root, name) for name in names if Path(root, name).is_file()]
    return files


def _raise(error: OSError) -> None:
    raise error


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, separated by two spaces; the header first."""
    widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (header, *rows)]
    return "\n".join(lines) + "\n"


class _Progress:
    """``done/total`` on one rewritten stderr line, only when stderr is a terminal and there is more than a batch."""

    def __init__(self, total: int, batch_size: int, stream: TextIO):
        self.total = total
        self.stream = stream
        self.shown = total > batch_size and stream.isatty()

    def update(self, done: int) -> None:
        if self.shown:
            self.stream.write(f"\rram-infer: {done}/{self.total} images")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 40 + "\r")
