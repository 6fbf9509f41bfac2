"""Your own images: a folder of labelled images (or a CSV), listed, split, and decoded once into a uint8 cache.

Layouts (what torchvision's ImageFolder users have):

- ``DIR/<class>/<image>`` — images anywhere below a class folder; the class names are the folder names, verbatim;
- ``DIR/train/<class>/…`` with ``DIR/valid/<class>/…`` (or ``val``, ``validation``) and ``DIR/test/<class>/…`` — a split
  already made; a missing validation or test part is drawn from train as below;
- ``LIST.csv`` — rows ``file,label`` or ``file,label,split`` (an optional header ``file,label[,split]``), paths
  relative to the CSV.

Classes are sorted by their names (Python's code-point order), so their numbers are stable. Without a given split, a
file's split follows from a hash of its path relative to the data (``split_of``): adding or removing files never moves
another file between splits.

Every image is decoded with the runtime's own function (``ram_infer.images.load_levels``) in the model's input format,
so a file gives the model the same tensor in training as in ``ram-infer``. The 8-bit levels of all images go once into
a memory-mapped ``levels.npy`` under the cache folder (``$RAM_INFER_CACHE``, else ``~/.cache/ram-infer``), keyed by the
data's path and the input format; a file whose size or modification time changed is decoded again, the others are
copied from the previous cache. Files that cannot be decoded are skipped and counted, with their reasons, in
``index.json`` and in the plan.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ram_infer.images import IMAGE_SUFFIXES, ImageError, levels_to_input, load_levels
from ram_infer.metadata import InputFormat

SPLITS = ("train", "valid", "test")
SPLIT_FOLDERS = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)}
CACHE_ENV_VAR = "RAM_INFER_CACHE"
CACHE_VERSION = 1  # bump when the cache's layout or the decoding changes meaning
MAX_CLASSES = 10_000  # metadata.LIMITS["labels"]
_CHUNK = 256  # images a decoding task handles: large enough to amortise the worker round trip


class DataError(ValueError):
    """The data cannot be used: the message names the file or folder and the problem (one line)."""


@dataclasses.dataclass(frozen=True)
class Listing:
    """The labelled files of a data set, in a stable order (sorted by relative path).

    Attributes:
        root: the folder the relative paths start from (DIR, or the CSV's folder).
        source: what the user named (DIR or LIST.csv), for messages and the cache key.
        classes: the class names, sorted.
        files: each file's path relative to ``root`` (POSIX separators).
        labels: each file's class number.
        given_splits: each file's split from the layout or the CSV, or "" where none was given.
        missing: CSV rows whose file does not exist (skipped), as relative paths.
    """

    root: Path
    source: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]
    labels: tuple[int, ...]
    given_splits: tuple[str, ...]
    missing: tuple[str, ...] = ()

    def splits(self, valid_fraction: float, test_fraction: float) -> np.ndarray:
        """Each file's split (ndarray[N] of "train"/"valid"/"test"): the given one, else drawn by its path's hash.

        A layout that gives only train (or a CSV without a split column) has its validation and test parts drawn from
        it; a layout that gives a split keeps it. A class whose every drawn file fell in valid or test (a class of a
        few images) keeps its most train-like file (the highest hash) in train, so that every class is learnt."""
        given = set(self.given_splits)
        drawn = [split_of(path, valid_fraction if "valid" not in given else 0.0,
                          test_fraction if "test" not in given else 0.0) for path in self.files]
        splits = np.array([g if g and g != "train" else d for g, d in zip(self.given_splits, drawn)])
        labels = np.asarray(self.labels)
        trained = np.bincount(labels[splits == "train"], minlength=len(self.classes)) > 0
        for label in np.flatnonzero(~trained):  # few or none: one pass over the files per such class
            movable = [i for i in np.flatnonzero(labels == label) if self.given_splits[i] in ("", "train")]
            if movable:
                splits[max(movable, key=lambda i: _hash_unit(self.files[i]))] = "train"
        return splits


def split_of(relative_path: str, valid_fraction: float, test_fraction: float) -> str:
    """The split of a file by a hash of its relative path: uniform in [0, 1), valid below ``valid_fraction``, test
    below ``valid_fraction + test_fraction``, else train. Independent of every other file."""
    u = _hash_unit(relative_path)
    return "valid" if u < valid_fraction else "test" if u < valid_fraction + test_fraction else "train"


def _hash_unit(relative_path: str) -> float:
    """A number in [0, 1) that is a fixed function of the path alone (the first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(relative_path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def list_data(source: str | os.PathLike) -> Listing:
    """Lists a data set: a folder (ImageFolder layout, optionally split) or a CSV of ``file,label[,split]``.

    Raises:
        DataError: no such folder or file, no images, an empty class folder, fewer than two classes, a class name that
            is not valid UTF-8, or a malformed CSV row; the message names it.
    """
    source = Path(source)
    if source.is_file():
        listing = _list_csv(source)
    elif source.is_dir():
        listing = _list_folder(source)
    else:
        raise DataError(f"{source}: no such folder or CSV file")
    if not listing.files:
        raise DataError(f"{source}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    if len(listing.classes) < 2:
        raise DataError(f"{source}: found one class ({listing.classes[0]!r}); a classifier needs at least two")
    if len(listing.classes) > MAX_CLASSES:
        raise DataError(f"{source}: found {len(listing.classes)} classes, more than the {MAX_CLASSES} a model may have")
    return listing


def _list_folder(root: Path) -> Listing:
    folders = _subfolders(root)
    split_parts = {split: [root / name for name in names if name in folders]
                   for split, names in SPLIT_FOLDERS.items()}
    if split_parts["train"] and set(folders) <= {name for names in SPLIT_FOLDERS.values() for name in names}:
        parts = [(split, part) for split, found in split_parts.items() for part in found]
    else:
        parts = [("", root)]
    entries: list[tuple[str, str, str]] = []  # (relative path, class, given split)
    for split, part in parts:
        for name in _subfolders(part):
            _check_name(part / name, name)
            images = sorted(_images_below(part / name))
            if not images and split in ("", "train"):
                raise DataError(f"{part / name}: an empty class folder (no images); remove it or add images")
            entries += [((part / name / image).relative_to(root).as_posix(), name, split) for image in images]
    return _listing(root, root, entries)


def _subfolders(folder: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as error:
        raise DataError(f"{folder}: cannot list the folder ({error.strerror})") from None


def _images_below(folder: Path) -> Iterable[str]:
    """Image files below ``folder`` (any depth, hidden ones skipped), relative to it."""
    for directory, subdirs, names in os.walk(folder, onerror=_raise_walk_error):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        for name in names:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                yield str(Path(directory, name).relative_to(folder))


def _raise_walk_error(error: OSError) -> None:
    raise DataError(f"{error.filename}: cannot list the folder ({error.strerror})")


def _check_name(path: Path, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path)
        raise DataError(f"{shown!r}: a class folder name that is not valid UTF-8; rename it") from None


def _list_csv(path: Path) -> Listing:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    entries: list[tuple[str, str, str]] = []
    missing = []
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [cell.strip().lower() for cell in row] in (["file", "label"],
                                                                                   ["file", "label", "split"])):
            continue
        if len(row) not in (2, 3):
            raise DataError(f"{path}: line {number} has {len(row)} fields; expected file,label or file,label,split")
        file, label, split = row[0].strip(), row[1], (row[2].strip() if len(row) == 3 else "")
        if not file or not label.strip():
            raise DataError(f"{path}: line {number} has an empty {'file' if not file else 'label'}")
        if split and split not in SPLITS:
            raise DataError(f"{path}: line {number} has split {split!r}; expected one of {', '.join(SPLITS)}")
        if not (path.parent / file).is_file():
            missing.append(file)
            continue
        entries.append((file, label, split))
    return _listing(path.parent, path, entries, missing)


def _listing(root: Path, source: Path, entries: list[tuple[str, str, str]], missing: Sequence[str] = ()) -> Listing:
    entries = sorted(set(entries))
    classes = tuple(sorted({label for _, label, _ in entries}))
    number = {name: i for i, name in enumerate(classes)}
    paths = [file for file, _, _ in entries]
    duplicated = [file for file, count in Counter(paths).items() if count > 1]
    if duplicated:
        raise DataError(f"{source}: {duplicated[0]} is listed with two labels or splits")
    return Listing(root, source, classes, tuple(paths), tuple(number[label] for _, label, _ in entries),
                   tuple(split for _, _, split in entries), tuple(missing))


@dataclasses.dataclass
class FolderData:
    """A cached data set: the levels of every decoded file, its labels and splits.

    Attributes:
        listing: what was listed.
        input: the input format the levels are in.
        levels (ndarray[N, C, H, W], uint8): memory-mapped; rows of files that failed to decode are zeros.
        labels (ndarray[N], int64).
        split (ndarray[N], str): "train", "valid" or "test".
        failed: relative path → why it could not be decoded (those rows are in no split).
    """

    listing: Listing
    input: InputFormat
    levels: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    failed: dict[str, str]

    def rows(self, split: str) -> np.ndarray:
        """The rows (ndarray[n], int64) of a split's decoded files, in listing order."""
        return np.flatnonzero(self.split == split)

    def arrays(self, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A split as model inputs: images (ndarray[n, C, H, W], float32) and labels (ndarray[n], int64)."""
        rows = self.rows(split)[:limit]
        return levels_to_input(self.levels[rows], self.input), self.labels[rows]

    def counts(self) -> dict[str, list[int]]:
        """Images per class in each split."""
        size = len(self.listing.classes)
        return {split: np.bincount(self.labels[self.rows(split)], minlength=size).tolist() for split in SPLITS}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "ram-infer") / "folders"


def cache_folder(listing: Listing, shape: InputFormat) -> Path:
    key = json.dumps({"version": CACHE_VERSION, "source": str(listing.source.resolve()),
                      "input": dataclasses.asdict(shape)}, sort_keys=True)
    return cache_root() / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def fingerprints(listing: Listing) -> list[list[Any]]:
    """[relative path, size, modification time in ns] of every file: what invalidates its cached levels."""
    result = []
    for file in listing.files:
        stat = (listing.root / file).stat()
        result.append([file, stat.st_size, stat.st_mtime_ns])
    return result


def load_folder(listing: Listing, shape: InputFormat, *, valid_fraction: float, test_fraction: float,
                workers: int = 1, progress: bool = True) -> FolderData:
    """The cached levels of a listing in ``shape``, decoding only the files that are new or changed since the last
    cache of the same data and input format.

    Raises:
        DataError: no file could be decoded, or a class has no training image left.
    """
    folder = cache_folder(listing, shape)
    prints = fingerprints(listing)
    index = _read_index(folder)
    if index is None or index["files"] != prints:
        index = _rebuild(folder, listing, shape, prints, index, workers, progress)
    levels = np.load(folder / "levels.npy", mmap_mode="r")
    failed = dict(index["failed"])
    split = listing.splits(valid_fraction, test_fraction)
    split[[i for i, file in enumerate(listing.files) if file in failed]] = "failed"
    data = FolderData(listing, shape, levels, np.asarray(listing.labels, np.int64), split, failed)
    if not data.rows("train").size:
        raise DataError(f"{listing.source}: none of the {len(listing.files)} images could be decoded "
                        f"(first: {next(iter(failed.items()), ('', ''))[1]})")
    empty = [name for name, count in zip(listing.classes, data.counts()["train"]) if count == 0]
    if empty:
        raise DataError(f"{listing.source}: class {empty[0]!r} has no training images")
    return data


def is_cached(listing: Listing, shape: InputFormat) -> bool:
    """Whether the cache of ``listing`` in ``shape`` is up to date: opening it would decode nothing."""
    index = _read_index(cache_folder(listing, shape))
    return index is not None and index["files"] == fingerprints(listing)


def _read_index(folder: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8", errors="surrogateescape"))
        return index if (folder / "levels.npy").is_file() else None
    except (OSError, ValueError):
        return None


def _rebuild(folder: Path, listing: Listing, shape: InputFormat, prints: list[list[Any]],
             old: dict[str, Any] | None, workers: int, progress: bool) -> dict[str, Any]:
    """Writes the cache anew in a scratch folder and moves it into place, so an interrupted build leaves the old
    cache (or none), never half of one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        levels_path = scratch / "levels.npy"
        rows = np.lib.format.open_memmap(levels_path, mode="w+", dtype=np.uint8,
                                         shape=(len(prints), shape.channels, shape.height, shape.width))
        reused, failed = _reuse(folder, old, prints, rows)
        rows.flush()
        del rows
        todo = [i for i in range(len(prints)) if i not in reused]
        failed.update(_decode_all(listing, shape, levels_path, todo, workers, progress))
        index = {"files": prints, "failed": sorted(failed.items()), "input": dataclasses.asdict(shape)}
        (scratch / "index.json").write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8",
                                            errors="surrogateescape")
        retired = folder.with_name(scratch.name + ".old")
        if folder.exists():
            folder.rename(retired)
        scratch.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)
        return index
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _reuse(folder: Path, old: dict[str, Any] | None, prints: list[list[Any]],
           rows: np.ndarray) -> tuple[set[int], dict[str, str]]:
    """Copies the rows of unchanged files from the old cache; returns their indices and the unchanged failures."""
    if old is None:
        return set(), {}
    previous = {tuple(entry): i for i, entry in enumerate(old["files"])}
    old_failed = dict(old["failed"])
    old_levels = np.load(folder / "levels.npy", mmap_mode="r")
    if old_levels.shape[1:] != rows.shape[1:]:
        return set(), {}
    reused, failed = set(), {}
    for i, entry in enumerate(prints):
        j = previous.get(tuple(entry))
        if j is None:
            continue
        reused.add(i)
        if entry[0] in old_failed:
            failed[entry[0]] = old_failed[entry[0]]
        else:
            rows[i] = old_levels[j]
    return reused, failed


def _decode_all(listing: Listing, shape: InputFormat, levels_path: Path, todo: list[int], workers: int,
                progress: bool) -> dict[str, str]:
    """Decodes the files ``todo`` into their rows of ``levels_path``, in ``workers`` processes; returns the failures."""
    chunks = [todo[start : start + _CHUNK] for start in range(0, len(todo), _CHUNK)]
    jobs = [(str(listing.root), [listing.files[i] for i in chunk], chunk, shape, str(levels_path)) for chunk in chunks]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="decoding", dynamic_ncols=True)
    failed: dict[str, str] = {}
    try:
        if workers > 1 and len(chunks) > 1:
            import multiprocessing

            # spawn: the training process may hold torch's thread pools, which a forked child must not inherit
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for job, result in zip(jobs, pool.map(_decode_chunk, jobs)):
                    failed.update(result)
                    if bar is not None:
                        bar.update(len(job[2]))
        else:
            for job in jobs:
                failed.update(_decode_chunk(job))
                if bar is not None:
                    bar.update(len(job[2]))
    finally:
        if bar is not None:
            bar.close()
    return failed


def _decode_chunk(job: tuple[str, list[str], list[int], InputFormat, str]) -> dict[str, str]:
    """One decoding task: the files' levels into their rows of the memory-mapped cache; the failures returned."""
    root, files, indices, shape, levels_path = job
    rows = np.load(levels_path, mmap_mode="r+")
    failed = {}
    for file, i in zip(files, indices):
        try:
            rows[i] = load_levels(Path(root) / file, shape)
        except ImageError as error:
            failed[file] = str(error).removeprefix(str(Path(root) / file) + ": ")
    rows.flush()
    return failed
