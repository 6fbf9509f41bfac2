"""Engine: shapes, bit-identical results across runs, batch sizes, threads and Python threads; early exit; errors."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

from ram_infer import Engine, Prediction, load_model
from ram_infer.engine import bundled_models
from ram_infer.images import ImageError

from conftest import TINY_GLIMPSES

FIELDS = ("labels", "probabilities", "logits", "locations", "glimpses_used")


def assert_identical(a: Prediction, b: Prediction) -> None:
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> Engine:
    return load_model(tiny_model_path, threads=1)


@pytest.fixture(scope="module")
def reference(engine, images) -> Prediction:
    """One batch of 64, one thread, all glimpses, with per-step probabilities."""
    return engine.predict(images, steps=True)


@pytest.mark.parametrize(
    ("field", "shape", "dtype"),
    [
        ("labels", (64,), np.int64),
        ("probabilities", (64, 10), np.float32),
        ("logits", (64, 10), np.float32),
        ("locations", (64, TINY_GLIMPSES, 2), np.float32),
        ("glimpses_used", (64,), np.int64),
        ("step_probabilities", (64, TINY_GLIMPSES, 10), np.float32),
    ],
)
def test_prediction_shapes(reference, field, shape, dtype):
    value = getattr(reference, field)
    assert (value.shape, value.dtype) == (shape, dtype)


def test_probabilities_sum_to_one(reference):
    np.testing.assert_allclose(reference.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_first_location_is_the_initial_location(engine, reference):
    assert np.array_equal(reference.locations[:, 0], np.broadcast_to(engine.info.initial_location, (64, 2)))


def test_locations_stay_in_range(reference):
    assert np.all(np.abs(reference.locations) <= 1)


def test_step_probabilities_end_with_the_answer(reference):
    assert np.array_equal(reference.step_probabilities[:, -1], reference.probabilities)


def test_repeated_runs_are_bit_identical(engine, images, reference):
    assert_identical(engine.predict(images), reference)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 256])
def test_batch_size_does_not_change_bits(engine, images, reference, batch_size):
    assert_identical(engine.predict(images, batch_size=batch_size), reference)


def test_single_image_call_matches_batch(engine, images, reference):
    single = [engine.predict(images[i : i + 1]) for i in (0, 17, 63)]
    assert [p.probabilities[0].tobytes() for p in single] == [reference.probabilities[i].tobytes() for i in (0, 17, 63)]


@pytest.mark.parametrize("threads", [2, None])
def test_thread_count_does_not_change_bits(tiny_model_path, images, reference, threads):
    assert_identical(load_model(tiny_model_path, threads=threads).predict(images), reference)


def test_python_threads_sharing_an_engine_agree(engine, images, reference):
    results: dict[int, Prediction] = {}

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = engine.predict(images, batch_size=1 + i * 9)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 8
    for prediction in results.values():
        assert_identical(prediction, reference)


@pytest.fixture(scope="module")
def early_threshold(reference) -> float:
    """A threshold that about half the images reach before their last glimpse."""
    return float(np.median(reference.step_probabilities[:, :-1].max(axis=(1, 2))))


@pytest.fixture(scope="module")
def early(engine, images, early_threshold) -> Prediction:
    return engine.predict(images, early_exit=early_threshold, batch_size=16, steps=True)


def test_early_exit_reduces_glimpses(early):
    assert early.glimpses_used.mean() < TINY_GLIMPSES - 0.5


def test_early_exit_stops_at_the_first_confident_step(reference, early, early_threshold):
    confident = reference.step_probabilities.max(axis=2) >= early_threshold  # (N, T)
    first = np.where(confident.any(axis=1), confident.argmax(axis=1) + 1, TINY_GLIMPSES)
    assert np.array_equal(early.glimpses_used, first)


def test_early_exit_answer_is_the_exit_step(reference, early):
    rows = np.arange(len(early.glimpses_used))
    assert np.array_equal(early.probabilities, reference.step_probabilities[rows, early.glimpses_used - 1])


def test_early_exit_keeps_results_of_images_that_do_not_exit(reference, early):
    full = early.glimpses_used == TINY_GLIMPSES
    assert full.any()
    assert np.array_equal(early.probabilities[full], reference.probabilities[full])
    assert np.array_equal(early.locations[full], reference.locations[full])


def test_early_exit_locations_repeat_the_last_glimpse(reference, early):
    for i, used in enumerate(early.glimpses_used):
        assert np.array_equal(early.locations[i, :used], reference.locations[i, :used])
        last = reference.locations[i, used - 1]
        assert np.array_equal(early.locations[i, used:], np.broadcast_to(last, (TINY_GLIMPSES - used, 2)))


def test_early_exit_does_not_depend_on_batch_size(engine, images, early, early_threshold):
    assert_identical(engine.predict(images, early_exit=early_threshold, batch_size=5), early)


def test_empty_batch_gives_empty_prediction(engine):
    prediction = engine.predict(np.zeros((0, 1, 28, 28), np.float32))
    assert prediction.probabilities.shape == (0, 10) and prediction.locations.shape == (0, TINY_GLIMPSES, 2)


def test_float64_images_are_accepted(engine, images, reference):
    assert_identical(engine.predict(images.astype(np.float64)), reference)


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((4, 28, 28), np.float32, r"images must have shape \(N, 1, 28, 28\), got \(4, 28, 28\)"),
        ((4, 3, 28, 28), np.float32, r"images must have shape \(N, 1, 28, 28\), got \(4, 3, 28, 28\)"),
        ((4, 1, 28, 28), np.uint8, r"images must be float32 in the model's input format, got uint8"),
    ],
)
def test_bad_images_raise(engine, shape, dtype, message):
    with pytest.raises(ValueError, match=message):
        engine.predict(np.zeros(shape, dtype))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"early_exit": 0.0}, r"early_exit must be in \(0, 1\] or None, got 0.0"),
        ({"early_exit": 1.5}, r"early_exit must be in \(0, 1\] or None, got 1.5"),
        ({"batch_size": 0}, r"batch_size must be >= 1, got 0"),
    ],
)
def test_bad_options_raise(engine, images, options, message):
    with pytest.raises(ValueError, match=message):
        engine.predict(images, **options)


def test_predict_files_matches_predict_on_decoded_files(engine, digit_files):
    from ram_infer.images import load_image

    decoded = np.stack([load_image(path, engine.info.input) for path in digit_files])
    assert_identical(engine.predict_files(digit_files), engine.predict(decoded))


def test_predict_files_in_batches_of_two_matches_one_batch(engine, digit_files):
    """Files are decoded and predicted a batch at a time; the rows come back in order, bit for bit."""
    whole = engine.predict_files(digit_files, steps=True)
    chunked = engine.predict_files(digit_files, batch_size=2, steps=True)
    assert_identical(chunked, whole)
    assert np.array_equal(chunked.step_probabilities, whole.step_probabilities)


def test_a_small_workspace_budget_runs_smaller_internal_batches_with_the_same_bits(
    tiny_model_path, images, reference, monkeypatch
):
    from ram_infer import engine as engine_module

    monkeypatch.setattr(engine_module, "WORKSPACE_BYTES", 1)  # one image per internal batch
    small = load_model(tiny_model_path, threads=1)
    assert small.files_per_batch(256) == 256  # decoding is bounded separately (DECODED_BYTES)
    assert_identical(small.predict(images), reference)
    early = load_model(tiny_model_path, threads=1).predict(images, early_exit=0.9)
    assert_identical(small.predict(images, early_exit=0.9), early)


def test_predict_files_reports_a_bad_file_and_answers_the_others(engine, digit_files, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    mixed = engine.predict_files([digit_files[0], bad, digit_files[1]])
    alone = engine.predict_files([digit_files[0], digit_files[1]])
    assert mixed.errors[0] is None and mixed.errors[2] is None
    assert mixed.errors[1].startswith(f"{bad}: not an image file")
    assert mixed.ok.tolist() == [True, False, True] and alone.ok.all() and alone.errors == (None, None)
    assert mixed.labels[1] == -1 and mixed.glimpses_used[1] == 0 and not mixed.probabilities[1].any()
    for name in FIELDS:
        assert np.array_equal(getattr(mixed, name)[[0, 2]], getattr(alone, name)), name


def test_preprocess_takes_paths_bytes_pillow_images_and_arrays_alike(engine, digit_files):
    from PIL import Image

    path = digit_files[0]
    expected = engine.preprocess(path)
    with Image.open(path) as image:
        pillow = engine.preprocess(image)
        array = engine.preprocess(np.asarray(image))
    for other in (engine.preprocess(path.read_bytes()), pillow, array):
        assert np.array_equal(other, expected)
    with pytest.raises(ImageError, match=r"^upload: not an image file"):
        engine.preprocess(b"not an image", source="upload")


def test_unknown_model_name_raises():
    message = r"no-such-model: not a bundled model name \(bundled: .*\); give a file as a path"
    with pytest.raises(FileNotFoundError, match=message):
        load_model("no-such-model")


def test_zero_threads_raise(tiny_model_path):
    with pytest.raises(ValueError, match=r"threads must be >= 1 or None, got 0"):
        load_model(tiny_model_path, threads=0)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider present")
def test_unavailable_provider_falls_back_to_cpu_with_a_warning(tiny_model_path):
    message = r"\['CUDAExecutionProvider'\] not available .* falling back to \['CPUExecutionProvider'\]"
    with pytest.warns(RuntimeWarning, match=message):
        engine = load_model(tiny_model_path, providers=["CUDAExecutionProvider"])
    assert engine.providers == ("CPUExecutionProvider",)


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_bundled_model_loads_and_predicts(name, digit_files):
    engine = load_model(name, threads=1)
    prediction = engine.predict_files(digit_files)
    assert prediction.probabilities.shape == (len(digit_files), engine.info.num_classes)


def test_profile_step_repeats_one_step_of_the_episode_alone(engine, images, reference):
    """The benchmark's hook: the step's calls, repeated on the episode's buffers, give that step's own values."""
    from ram_infer import extract_glimpses
    from ram_infer.engine import _softmax

    profile = engine.profile_step(images[:3], step=2)
    profile.logits[...] = 0
    profile.glimpse[...] = 0
    profile.take_glimpse()
    profile.run_step()
    sensor = engine.info.sensor
    expected = extract_glimpses(images[:3], profile.location, sensor.glimpse_size, sensor.num_scales,
                                sensor.scale_factor)
    assert np.array_equal(profile.glimpse, expected)
    assert np.array_equal(_softmax(profile.logits), reference.step_probabilities[:3, 2])
    with pytest.raises(ValueError, match=r"step must be in \[0, 4\), got 4"):
        engine.profile_step(images[:1], step=TINY_GLIMPSES)
