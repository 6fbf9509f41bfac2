"""The RAM inference loop: one ONNX Runtime session of the step network and the compiled sensor between steps.

The loop (docs/design.md): ``state = 0``, ``l_0`` = the model's initial location; for t = 1 … T:
``ρ = extract_glimpses(x, l_{t-1})``; ``(state, l_t, logits) = step(ρ, l_{t-1}, state)``. The answer is
``softmax(logits)`` after the last step. The location policy's mean μ_t is followed, so results are deterministic.

Performance: at batch 1 the cost is per call, not arithmetic, so each thread keeps a small *workspace* per batch size:
preallocated buffers and one ONNX Runtime IOBinding per step, bound once. Step t reads ``locations[t]`` and the state
buffer ``t % 2`` and writes ``locations[t + 1]``, the other state buffer and ``logits[t]`` in place, and the sensor
writes ρ into a bound buffer: a step is one sensor call and one ``run_with_iobinding``, with no copies and no
rebinding. Workspaces are per thread, so ``predict`` may be called from several threads at once on one Engine.

Both calls skip their Python front doors (``_direct_runner``, ``_direct_sensor``): at batch 1 a step costs ≈ 13 µs,
and the front doors' checks, which the workspace makes once, added ≈ 2 µs to each (benchmarks/results/engine.md).
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_errors

from ram_infer import sensor
from ram_infer.images import DEFAULT_MAX_PIXELS, ImageError, ImageLike, load_image, preprocess
from ram_infer.metadata import ModelFormatError, ModelInfo
from ram_infer.model_file import read_model

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_BATCH_SIZE = 256
# Bytes of the per-thread buffers of one internal batch (glimpses, states, locations, every step's logits): a model
# whose per-image buffers are large runs in smaller internal batches, so memory does not grow with T × classes × batch.
WORKSPACE_BYTES = 256 << 20
# Decoded images held at once (float32 [B, C, H, W]) by predict_files and the CLI: a large input decodes in smaller
# batches, and memory follows the batch, not the number of files.
DECODED_BYTES = 256 << 20
# What ONNX Runtime may allocate for a step network's tensors (weights and intermediates), all sessions together: a
# graph of allowed operators can still multiply sizes (an outer product of a reshaped input, over and over) until a
# run would take tens of GB, which the arena then refuses at once instead of the machine running out of memory. The
# bundled models need a few MB.
ORT_MEMORY_BYTES = 2 << 30
# One image's episode at most, judged at load from a timed step (Engine._refuse_if_too_slow). The bundled models take
# well under a millisecond, so the margin covers slow and busy machines.
EPISODE_SECONDS = 1.0
DEADLINE_SPARE_SECONDS = 1.0  # added to an internal batch's deadline in predict, for a machine that is busy
_arena_lock = threading.Lock()
_arena_registered = False
_WORKSPACES_PER_THREAD = 4  # batch sizes kept bound per thread: the chunk size, the remainder, and a couple more
_ORT_LOAD_ERRORS = (
    _ort_errors.Fail,
    _ort_errors.InvalidProtobuf,
    _ort_errors.InvalidGraph,
    _ort_errors.InvalidArgument,
    _ort_errors.NoSuchFile,
    _ort_errors.NotImplemented,
    _ort_errors.RuntimeException,
)


@dataclass(frozen=True)
class Prediction:
    """The result of ``Engine.predict`` for N images.

    Attributes:
        labels (ndarray[N], int64): the predicted class index (``Engine.info.labels[i]`` is its name).
        probabilities (ndarray[N, classes], float32): softmax of the logits after the image's last glimpse.
        logits (ndarray[N, classes], float32): those logits.
        locations (ndarray[N, T, 2], float32): the glimpse centres l_0 … l_{T-1} as (x, y) in [-1, 1]. After an
            early exit, the remaining rows repeat the last glimpse taken.
        glimpses_used (ndarray[N], int64): glimpses taken, T unless the image exited early.
        step_probabilities (ndarray[N, T, classes], float32 or None): softmax after every step, if asked for; after an
            early exit the rows repeat the exit step's.
        errors (tuple of N str or None, or None): from ``predict_files``, why each file that could not be used
            failed (``path: problem``), None for the others; its row has label -1 and zeros elsewhere. None from
            ``predict``.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    logits: np.ndarray
    locations: np.ndarray
    glimpses_used: np.ndarray
    step_probabilities: np.ndarray | None = None
    errors: tuple[str | None, ...] | None = None

    @property
    def ok(self) -> np.ndarray:
        """ndarray[N], bool: the rows that hold an answer (every row, unless ``errors`` says otherwise)."""
        if self.errors is None:
            return np.ones(len(self.labels), bool)
        return np.array([error is None for error in self.errors], bool)


@dataclass(frozen=True)
class StepProfile:
    """One step of an episode, repeatable alone, for timing the loop's two calls (benchmarks/bench_engine.py).

    Attributes:
        run_step: the step network's ``run_with_iobinding`` call, exactly as the loop makes it, on bound buffers.
        take_glimpse: the sensor's call, exactly as the loop makes it, writing ``glimpse``.
        glimpse (ndarray[n, k, C, g, g], float32): the step's bound glimpse buffer.
        location (ndarray[n, 2], float32): its bound location input l_{t-1}.
        state (ndarray[n, S], float32): its bound state input h_{t-1}.
        logits (ndarray[n, classes], float32): its bound logits output.
    """

    run_step: Callable[[], None]
    take_glimpse: Callable[[], None]
    glimpse: np.ndarray
    location: np.ndarray
    state: np.ndarray
    logits: np.ndarray


def repeatable_run(session: ort.InferenceSession, binding: ort.IOBinding) -> Callable[[], None]:
    """``session.run_with_iobinding(binding)`` as a call without arguments, made the way the engine's loop makes it."""
    run, raw_binding = _direct_runner(session)
    bound, options = raw_binding(binding), ort.RunOptions()
    return lambda: run(bound, options)


def bundled_models() -> dict[str, Path]:
    """The models shipped in ``ram_infer/models``: name (the file stem) → path, sorted by name."""
    return {path.stem: path for path in sorted(MODELS_DIR.glob("*.onnx"))}


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The file of a bundled model name or a path.

    A bundled name always means the bundled model, whatever files the working directory holds; anything else must
    look like a path (an ``os.PathLike``, or text with a directory separator or ending in ``.onnx``), so a file
    ``./mnist`` is never loaded in place of the bundled ``mnist`` by accident.

    Raises:
        FileNotFoundError: not a bundled model's name, and not a path (or no such file).
    """
    bundled = bundled_models()
    if isinstance(name_or_path, str) and name_or_path in bundled:
        return bundled[name_or_path]
    text = os.fspath(name_or_path)
    available = ", ".join(bundled) if bundled else f"none yet in {MODELS_DIR}"
    if not text:
        raise FileNotFoundError(f"an empty model name: give a bundled model's name ({available}) or a path")
    if isinstance(name_or_path, str) and not _looks_like_a_path(text):
        raise FileNotFoundError(
            f"{text}: not a bundled model name (bundled: {available}); give a file as a path (./{text} or NAME.onnx)"
        )
    return Path(name_or_path)


def _looks_like_a_path(text: str) -> bool:
    separators = {"/", os.sep, os.altsep} - {None}
    return any(separator in text for separator in separators) or text.lower().endswith(".onnx")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS and Windows
        return max(1, os.cpu_count() or 1)


def load_model(
    name_or_path: str | os.PathLike, *, providers: Sequence[str] | None = None, threads: int | None = None
) -> Engine:
    """Loads a RAM step model for inference.

    Args:
        name_or_path: a bundled model's name (e.g. ``"mnist"``, see ``bundled_models()``) or a ``.onnx`` path.
        providers: ONNX Runtime execution providers in order of preference, e.g.
            ``["CUDAExecutionProvider", "CPUExecutionProvider"]``; None runs on the CPU. Unavailable ones are
            dropped with a RuntimeWarning. The sensor always runs on the CPU.
        threads: intra-op threads of ONNX Runtime and of the sensor; None lets them choose (all cores); more than
            the usable cores (``usable_cores()``) are capped to them. Results do not depend on it.

    Returns:
        An Engine.

    Raises:
        FileNotFoundError: no such file or bundled model.
        ModelFormatError: the file is not an ONNX model, not a regular file, holds operators or external data
            outside the step-model format (``ram_infer.model_file``), or its ``ram.*`` metadata is missing or
            inconsistent.
    """
    return Engine(resolve_model(name_or_path), providers=providers, threads=threads)


class Engine:
    """A loaded RAM model: ``predict`` runs whole episodes of T glimpses on batches of images.

    Attributes:
        path: the model file.
        info (ModelInfo): its metadata (sensor, T, input format, labels, measured test error …).
        session (onnxruntime.InferenceSession): the step network, shared by all calls and threads.
        providers: the execution providers in use.
    """

    def __init__(
        self, path: str | os.PathLike, *, providers: Sequence[str] | None = None, threads: int | None = None
    ):
        self.path = Path(path)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        # More threads than cores only add contention (256 threads made one digit 9x slower), and every one a thread.
        self.threads = None if threads is None else min(threads, usable_cores())
        model = read_model(self.path)  # checked, so ONNX Runtime reads these bytes and nothing else from the disk
        self.session = _open_session(model, _session_options(self.threads), _usable_providers(providers), self.path)
        self.providers = tuple(self.session.get_providers())
        try:
            self.info = ModelInfo.from_session(self.session, str(self.path))
        except UnicodeDecodeError:  # a graph input or output name that is not UTF-8 (onnxruntime decodes them)
            raise ModelFormatError(f"{self.path}: the graph has names that are not UTF-8 text") from None
        self._local = threading.local()
        self._run, self._raw_binding = _direct_runner(self.session)
        self._glimpse = _direct_sensor()
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        workspace_bytes = 4 * (
            int(np.prod(self.info.glimpse_shape))
            + 2 * self.info.state_size
            + 2 * (self.info.num_glimpses + 1)
            + self.info.num_glimpses * self.info.num_classes
        )
        self._max_chunk = max(1, WORKSPACE_BYTES // workspace_bytes)  # images per internal batch, at most
        self._refuse_if_too_slow()

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, dataset={self.info.dataset!r}, providers={list(self.providers)})"

    def predict(
        self,
        images: npt.ArrayLike,
        *,
        early_exit: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        steps: bool = False,
    ) -> Prediction:
        """Classifies images with T glimpses each, following the location policy's mean.

        Args:
            images (ndarray[N, C, H, W], float32): in the model's input format (``info.input``: size, channels,
                pixel values divided by ``value_scale``, bright ink on a dark background); see
                ``ram_infer.images`` to make it from files or arrays.
            early_exit: if set, an image stops as soon as its top probability is ≥ this (in (0, 1]); its
                ``glimpses_used`` is then < T. None takes all T glimpses.
            batch_size: images per internal batch; results do not depend on it.
            steps: also return ``step_probabilities``.

        Returns:
            Prediction.

        Raises:
            ValueError: images of the wrong shape or dtype, a non-finite pixel that a glimpse reads, or a bad
                ``early_exit``/``batch_size``. The images are not scanned as a whole (that would make the cost grow
                with their size, which RAM exists to avoid): a NaN or inf pixel that a glimpse reads makes the
                location or the logits non-finite, and only then are the images checked.
            ModelFormatError: the step network fails to run (its graph does not do what its declared shapes say), or
                gives a non-finite location or logits from finite images (e.g. a recurrent state that overflows).
        """
        x = self._check_images(images)
        if early_exit is not None and not 0 < early_exit <= 1:
            raise ValueError(f"early_exit must be in (0, 1] or None, got {early_exit}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n, T, classes = len(x), self.info.num_glimpses, self.info.num_classes
        logits = np.empty((n, classes), np.float32)  # (N, classes)
        step_logits = np.empty((n, T, classes), np.float32) if steps else None  # (N, T, classes)
        locations = np.empty((n, T, 2), np.float32)  # (N, T, 2)
        glimpses_used = np.full(n, T, np.int64)  # (N,)
        chunk = min(batch_size, self._max_chunk)
        try:
            for begin in range(0, n, chunk):
                rows = slice(begin, min(n, begin + chunk))
                # Every step's logits of this chunk: in the result if asked for, else in a scratch array.
                chunk_logits = np.empty((rows.stop - begin, T, classes), np.float32) if step_logits is None else (
                    step_logits[rows]
                )  # (n, T, classes)
                if early_exit is None:
                    self._run_episode(x[rows], chunk_logits, locations[rows])
                    logits[rows] = chunk_logits[:, T - 1]
                else:
                    self._run_episode_early_exit(
                        x[rows], early_exit, chunk_logits, locations[rows], glimpses_used[rows]
                    )
                    logits[rows] = chunk_logits[np.arange(len(chunk_logits)), glimpses_used[rows] - 1]
        except _TooSlow as slow:
            raise ModelFormatError(
                f"{self.path}: the step network took more than {EPISODE_SECONDS:g} s an image on a batch of "
                f"{slow.args[0]}"
            ) from None
        except (RuntimeError, *_ORT_LOAD_ERRORS) as error:
            raise ModelFormatError(f"{self.path}: the step network failed to run ({_error_line(error)})") from None
        except ValueError:  # the sensor refuses a NaN location: from a glimpsed NaN or inf pixel, or from the network
            _refuse_non_finite(x)
            raise ModelFormatError(f"{self.path}: the step network gave a NaN location") from None
        finite = np.isfinite(logits).all() and np.isfinite(locations).all()
        if not finite or (step_logits is not None and not np.isfinite(step_logits).all()):
            _refuse_non_finite(x)
            raise ModelFormatError(f"{self.path}: the step network gave non-finite logits or locations (NaN or inf)")
        return Prediction(
            labels=logits.argmax(axis=1).astype(np.int64, copy=False),  # intp is int64 on 64-bit platforms: no copy
            probabilities=_softmax(logits),
            logits=logits,
            locations=locations,
            glimpses_used=glimpses_used,
            step_probabilities=None if step_logits is None else _softmax(step_logits),
        )

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        early_exit: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        steps: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Prediction:
        """Decodes image files (ram_infer.images.load_image) and predicts them, a batch of files at a time.

        A file that cannot be used does not fail the others: ``Prediction.errors`` says why (as the CLI prints it),
        and its row holds label -1 and zeros (``Prediction.ok`` is False there).

        Args:
            paths: PNG, JPEG, BMP, WebP, TIFF or GIF files.
            early_exit, batch_size, steps: as for ``predict``.
            max_pixels: larger images (width × height) are refused from their header, before decoding.

        Returns:
            Prediction, with ``errors``: one entry per path.

        Raises:
            ModelFormatError: as for ``predict``.
        """
        paths = list(paths)
        chunk = self.files_per_batch(batch_size)
        parts = [
            self._predict_file_batch(paths[begin : begin + chunk], early_exit, batch_size, steps, max_pixels)
            for begin in range(0, len(paths), chunk)
        ]
        return _concatenate(parts) if parts else self._predict_file_batch([], early_exit, batch_size, steps, max_pixels)

    def preprocess(
        self, image: ImageLike, *, source: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> npt.NDArray[np.float32]:
        """Any image (path, file bytes, Pillow image or array, of any size) → ndarray[C, H, W] float32 in this model's
        input format, for ``predict`` (``ram_infer.images.preprocess``).

        Raises:
            ImageError: the image cannot be read, decoded or converted.
        """
        return preprocess(image, self.info.input, source=source, max_pixels=max_pixels)

    def _predict_file_batch(
        self, paths: list, early_exit: float | None, batch_size: int, steps: bool, max_pixels: int
    ) -> Prediction:
        shape = self.info.input
        decoded, errors = {}, [None] * len(paths)
        for i, path in enumerate(paths):
            try:
                decoded[i] = load_image(path, shape, max_pixels=max_pixels)  # (C, H, W)
            except ImageError as error:
                errors[i] = str(error)
        rows = sorted(decoded)
        x = np.empty((len(rows), shape.channels, shape.height, shape.width), np.float32)  # (n, C, H, W)
        for row, i in enumerate(rows):
            x[row] = decoded.pop(i)
        answered = self.predict(x, early_exit=early_exit, batch_size=batch_size, steps=steps)
        return _spread(answered, rows, len(paths), tuple(errors))

    def profile_step(self, images: npt.ArrayLike, step: int | None = None) -> StepProfile:
        """Runs the episode of ``images`` up to step ``step`` (default: a middle one, whose location and state came
        from the model) and returns that step as calls that repeat it alone on its buffers: for benchmarks, which
        time the step network and the sensor apart."""
        x = self._check_images(images)
        T, sensor = self.info.num_glimpses, self.info.sensor
        step = 2 % T if step is None else step
        if not 0 <= step < T:
            raise ValueError(f"step must be in [0, {T}), got {step}")
        workspace = _Workspace(self.session, self.info, len(x), self._raw_binding)  # its own: nothing else reuses it
        workspace.start()
        self._steps(x, workspace, 0, step + 1)  # up to this step: its inputs are still in their buffers
        g, k, s, threads = sensor.glimpse_size, sensor.num_scales, sensor.scale_factor, self.threads or 0
        binding, location = workspace.raw_bindings[step], workspace.location_rows[step]
        return StepProfile(
            run_step=lambda: self._run(binding, self._run_options),
            take_glimpse=lambda: self._glimpse(x, location, g, k, s, workspace.glimpse, threads),
            glimpse=workspace.glimpse,
            location=workspace.locations[step],
            state=workspace.states[step % 2],
            logits=workspace.logits[step],
        )

    def files_per_batch(self, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """How many files to decode at once: ``batch_size``, or fewer if their images would exceed ``DECODED_BYTES``."""
        shape = self.info.input
        return max(1, min(batch_size, DECODED_BYTES // (4 * shape.channels * shape.height * shape.width)))

    def _check_images(self, images: npt.ArrayLike) -> npt.NDArray[np.float32]:
        x = np.asarray(images)
        shape = self.info.input
        expected = (shape.channels, shape.height, shape.width)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), got {x.shape}")
        if x.dtype.kind != "f":  # float16/32/64; np.issubdtype costs ≈ 0.4 µs of a 90 µs batch-1 call
            raise ValueError(f"images must be float32 in the model's input format, got {x.dtype}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def _refuse_if_too_slow(self) -> None:
        """Times one step at batches 1 and 2 and refuses a model that fails to run it, or whose episode would take
        more than ``EPISODE_SECONDS`` an image.

        Allowed operators within the memory bound can still make a step slow (a broadcast of two small weights into
        an n × n tensor, every step), and the metadata alone sets T. ONNX Runtime stops the timed runs once they are
        over the budget (``RunOptions.terminate`` is checked between nodes), so the check itself is bounded too;
        ``predict`` keeps a deadline of its own, for a graph that is slow at other batch sizes alone.
        """
        for n in (1, 2):
            budget = n * EPISODE_SECONDS / self.info.num_glimpses  # seconds a step of n images may take
            seconds, error = self._time_one_step(n, budget)
            if error is not None:
                raise ModelFormatError(f"{self.path}: the step network failed to run ({_error_line(error)})")
            if seconds > budget:
                took = "more than the budget" if math.isinf(seconds) else f"{seconds:.3g} s"
                raise ModelFormatError(
                    f"{self.path}: one step takes {took} at batch {n}, so {self.info.num_glimpses} glimpses would "
                    f"take more than {EPISODE_SECONDS:g} s an image"
                )

    def _time_one_step(self, n: int, budget: float) -> tuple[float, BaseException | None]:
        """The best of three timed runs of step 1 on n zero images (after an untimed one), stopped at 4 budgets."""
        workspace = _Workspace(self.session, self.info, n, self._raw_binding)
        workspace.start()
        workspace.glimpse[...] = 0.0
        options = ort.RunOptions()
        options.log_severity_level = 4
        timer = threading.Timer(4 * budget + 0.5, setattr, (options, "terminate", True))
        timer.start()
        seconds = math.inf
        try:
            self._run(workspace.raw_bindings[0], options)  # the first run allocates: not timed
            for _ in range(3):  # the best of three: one run that a busy machine delays proves nothing
                started = time.perf_counter()
                self._run(workspace.raw_bindings[0], options)
                seconds = min(seconds, time.perf_counter() - started)
                if seconds <= budget:
                    break
        except (RuntimeError, *_ORT_LOAD_ERRORS) as error:
            if not options.terminate:
                return seconds, error
        finally:
            timer.cancel()
        return seconds, None

    def _workspace(self, n: int) -> _Workspace:
        cache = getattr(self._local, "workspaces", None)
        if cache is None:
            cache = self._local.workspaces = OrderedDict()
        workspace = cache.get(n)
        if workspace is None:
            workspace = cache[n] = _Workspace(self.session, self.info, n, self._raw_binding)
            if len(cache) > _WORKSPACES_PER_THREAD:
                cache.popitem(last=False)
        else:
            cache.move_to_end(n)
        return workspace

    def _steps(
        self, x: np.ndarray, workspace: _Workspace, first: int, last: int, deadline: float = math.inf
    ) -> None:
        """Runs steps ``first`` … ``last - 1`` of the episodes in ``workspace`` (state and location already set).

        Raises:
            _TooSlow: past ``deadline`` (``time.perf_counter()``) after a step: the check at load times batches 1
                and 2 only, and a graph may be slow at other batch sizes alone.
        """
        g, k, s = self.info.sensor.glimpse_size, self.info.sensor.num_scales, self.info.sensor.scale_factor
        glimpse, run, options, threads = self._glimpse, self._run, self._run_options, self.threads or 0
        rho, locations, bindings = workspace.glimpse, workspace.location_rows, workspace.raw_bindings
        clock = time.perf_counter
        for t in range(first, last):
            glimpse(x, locations[t], g, k, s, rho, threads)  # ρ(x, l_{t-1}) → (n, k, C, g, g)
            run(bindings[t], options)
            if clock() > deadline:
                raise _TooSlow(len(x))

    def _run_episode(self, x: np.ndarray, step_logits: np.ndarray, locations: np.ndarray) -> None:
        T = self.info.num_glimpses
        workspace = self._workspace(len(x))
        workspace.start()
        self._steps(x, workspace, 0, T, _deadline(len(x)))
        step_logits[...] = workspace.logits.transpose(1, 0, 2)  # (n, T, classes)
        locations[...] = workspace.locations[:T].transpose(1, 0, 2)  # (n, T, 2)

    def _run_episode_early_exit(
        self,
        x: np.ndarray,
        threshold: float,
        step_logits: np.ndarray,
        locations: np.ndarray,
        glimpses_used: np.ndarray,
    ) -> None:
        """Steps all images together and drops those whose top probability reached ``threshold`` after each step.

        The remaining images are compacted into a workspace of their size, so an exited image costs nothing more;
        per-row results do not depend on the batch (checked in tests/test_engine.py).
        """
        T = self.info.num_glimpses
        active = np.arange(len(x))  # rows of this chunk still running
        workspace = self._workspace(len(x))
        workspace.start()
        deadline = _deadline(len(x))
        for t in range(T):
            self._steps(x, workspace, t, t + 1, deadline)
            step_logits[active, t] = workspace.logits[t]
            locations[active, t] = workspace.locations[t]
            stop = _softmax(workspace.logits[t]).max(axis=1) >= threshold  # (n_active,)
            if t == T - 1 or not stop.any():
                continue
            exited = active[stop]  # they repeat their last glimpse and answer in the remaining steps
            step_logits[exited, t + 1 :] = workspace.logits[t][stop][:, None]  # (n_exited, T - t - 1, classes)
            locations[exited, t + 1 :] = workspace.locations[t][stop][:, None]  # (n_exited, T - t - 1, 2)
            glimpses_used[exited] = t + 1
            keep = ~stop
            if not keep.any():
                return
            x, active = np.ascontiguousarray(x[keep]), active[keep]
            previous, workspace = workspace, self._workspace(len(active))
            workspace.states[(t + 1) % 2] = previous.states[(t + 1) % 2][keep]
            workspace.locations[t + 1] = previous.locations[t + 1][keep]


class _Workspace:
    """Buffers and IOBindings for one episode of n images on one thread (see the module docstring)."""

    def __init__(self, session: ort.InferenceSession, info: ModelInfo, n: int, raw_binding: Callable[[Any], Any]):
        T = info.num_glimpses
        self.info = info
        self.glimpse = np.empty((n, *info.glimpse_shape), np.float32)  # (n, k, C, g, g)
        self.locations = np.empty((T + 1, n, 2), np.float32)  # l_0 … l_T; l_T is computed but never used
        self.states = np.empty((2, n, info.state_size), np.float32)  # ping-pong h_{t-1} → h_t
        self.logits = np.empty((T, n, info.num_classes), np.float32)  # (T, n, classes)
        self.bindings = []
        for t in range(T):
            binding = session.io_binding()
            for bind, name, array in (
                (binding.bind_input, "glimpse", self.glimpse),
                (binding.bind_input, "location", self.locations[t]),
                (binding.bind_input, "state", self.states[t % 2]),
                (binding.bind_output, "state_next", self.states[(t + 1) % 2]),
                (binding.bind_output, "location_next", self.locations[t + 1]),
                (binding.bind_output, "logits", self.logits[t]),
            ):
                bind(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
            self.bindings.append(binding)
        self.raw_bindings = [raw_binding(binding) for binding in self.bindings]  # what Engine._run takes
        self.location_rows = list(self.locations)  # views made once; row t is l_{t-1} in the paper's 1-based steps

    def start(self) -> None:
        """Sets state = 0 and l_0 = the model's initial location."""
        self.states[0] = 0.0
        self.locations[0] = self.info.initial_location


def _session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # errors reach the caller as exceptions; ORT's own log would say them twice
    if threads is not None:
        options.intra_op_num_threads = threads
    if _register_bounded_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def _open_session(
    model: bytes, options: ort.SessionOptions, providers: list[str], path: Path
) -> ort.InferenceSession:
    """The ONNX Runtime session of checked model bytes; its refusals as ModelFormatError naming ``path``."""
    try:
        # Constant folding computes, at load and outside the arena's bound, any node whose inputs are all weights: a
        # broadcast of two small ones made a tensor of gigabytes there. Exported step models have nothing to fold.
        return ort.InferenceSession(model, options, providers=providers, disabled_optimizers=["ConstantFolding"])
    except UnicodeDecodeError:  # a message quoting text that is not UTF-8 (read_model checks the names it knows)
        raise ModelFormatError(f"{path}: not a readable ONNX model (text that is not UTF-8)") from None
    except _ORT_LOAD_ERRORS as error:
        raise ModelFormatError(f"{path}: not a readable ONNX model ({_error_line(error, last=True)})") from None


def _register_bounded_arena() -> bool:
    """Registers, once per process, the CPU arena of at most ``ORT_MEMORY_BYTES`` that sessions then share.

    Returns False where it cannot be (an application registered its own first): sessions then use their own arenas.
    """
    global _arena_registered
    with _arena_lock:
        if not _arena_registered:
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            # Strategy 1 (kSameAsRequested): the arena grows by what a tensor needs, not by doubling.
            arena = ort.OrtArenaCfg({"max_mem": ORT_MEMORY_BYTES, "arena_extend_strategy": 1})
            try:
                ort.create_and_register_allocator(memory, arena)
            except _ORT_LOAD_ERRORS:
                return False
            _arena_registered = True
        return True


def _direct_runner(session: ort.InferenceSession) -> tuple[Callable[[Any, Any], None], Callable[[Any], Any]]:
    """``session.run_with_iobinding`` as the compiled call it wraps, and how to get that call's binding.

    The Python wrapper re-checks each call for WebGPU graph capture, which this CPU loop never uses (≈ 1 µs a step).
    An onnxruntime without these private names gets the public wrapper.
    """
    compiled = getattr(session, "_sess", None)
    if compiled is not None and hasattr(session.io_binding(), "_iobinding"):
        return compiled.run_with_iobinding, lambda binding: binding._iobinding
    return session.run_with_iobinding, lambda binding: binding


def _direct_sensor() -> Callable[..., Any]:
    """``(images, locations, g, k, s, out, threads) -> out``: the compiled CPU sensor, whose binding checks every input,
    without the backend choice of ``extract_glimpses`` (and positional: pybind11 parses keywords in ≈ 0.4 µs); that
    front door, so its numpy reference, where the extension is not built."""
    if sensor._sensor is not None:
        return sensor._sensor.extract_glimpses_cpu

    def reference(images, locations, g, k, s, out, threads):
        return sensor.extract_glimpses(images, locations, g, k, s, out=out, threads=threads)

    return reference


class _TooSlow(Exception):
    """An internal batch ran past its deadline; args: (images in it,)."""


def _deadline(images: int) -> float:
    """When an internal batch of ``images`` must be done: EPISODE_SECONDS an image, and DEADLINE_SPARE_SECONDS."""
    return time.perf_counter() + EPISODE_SECONDS * images + DEADLINE_SPARE_SECONDS


def _error_line(error: BaseException, *, last: bool = False) -> str:
    """One line of an ONNX Runtime error for our one-line messages: its first (the run's failure) or its last (the
    loader's reason, after its stack of context lines); the error's type if it has no text."""
    lines = str(error).strip().splitlines()
    return (lines[-1] if last else lines[0]) if lines else type(error).__name__


def _concatenate(parts: list[Prediction]) -> Prediction:
    """One Prediction of the rows of several, in order."""
    if len(parts) == 1:
        return parts[0]
    fields: dict[str, Any] = {}
    for name in Prediction.__dataclass_fields__:
        values = [getattr(part, name) for part in parts]
        if values[0] is None:
            fields[name] = None
        elif name == "errors":
            fields[name] = sum(values, ())
        else:
            fields[name] = np.concatenate(values)
    return Prediction(**fields)


def _spread(answered: Prediction, rows: list[int], n: int, errors: tuple[str | None, ...]) -> Prediction:
    """The answers of ``rows`` of n, and label -1 with zeros in the others (the files that failed)."""
    fields: dict[str, Any] = {"errors": errors}
    for name in Prediction.__dataclass_fields__:
        value = getattr(answered, name)
        if name == "errors" or value is None:
            continue
        full = np.full((n, *value.shape[1:]), -1 if name == "labels" else 0, value.dtype)
        full[rows] = value
        fields[name] = full
    return Prediction(**fields)


def _refuse_non_finite(x: np.ndarray) -> None:
    """Raises ValueError naming the first image with a NaN or inf pixel, if there is one."""
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"images must be finite, got NaN or inf in image {int(np.argwhere(bad)[0, 0])}")


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis in float64 (exact enough that rows never depend on the batch)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _usable_providers(requested: Sequence[str] | None) -> list[str]:
    """The requested execution providers that this onnxruntime has, warning about the others; CPU always last."""
    if requested is None:
        return ["CPUExecutionProvider"]
    if isinstance(requested, str):
        raise ValueError(f"providers must be a list of names, got the string {requested!r}")
    available = ort.get_available_providers()
    usable = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if "CPUExecutionProvider" not in usable:
        usable.append("CPUExecutionProvider")
    if missing:
        hint = " (install onnxruntime-gpu for CUDA)" if "CUDAExecutionProvider" in missing else ""
        warnings.warn(
            f"execution provider(s) {missing} not available in this onnxruntime{hint}; falling back to {usable}",
            RuntimeWarning,
            stacklevel=4,
        )
    return usable
