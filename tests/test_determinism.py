"""Determinism at full size: 300 images give the same bits at batch 1 and in full batches of 256, on one thread or
several, and from 8 Python threads sharing one Engine (tests/test_engine.py checks the same on 64 images).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ram_infer import Prediction, load_model

from conftest import make_images

FIELDS = ("labels", "probabilities", "logits", "locations", "glimpses_used")
N = 300  # one full batch of 256 and a remainder of 44


def _same(a: Prediction, b: Prediction) -> bool:
    return all(np.array_equal(getattr(a, name), getattr(b, name)) for name in FIELDS)


@pytest.fixture(scope="module")
def many() -> np.ndarray:
    return make_images(N, seed=7)


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    return load_model(tiny_model_path, threads=1)


@pytest.fixture(scope="module")
def one_at_a_time(engine, many) -> Prediction:
    """The reference: every image alone (batch 1), one thread."""
    return engine.predict(many, batch_size=1)


def test_full_batches_of_256_match_batch_1(engine, many, one_at_a_time):
    assert _same(engine.predict(many, batch_size=256), one_at_a_time)


def test_several_threads_match_one(tiny_model_path, many, one_at_a_time):
    assert _same(load_model(tiny_model_path, threads=2).predict(many, batch_size=256), one_at_a_time)


def test_eight_threads_sharing_an_engine_match_one_thread(tiny_model_path, many, one_at_a_time):
    shared = load_model(tiny_model_path, threads=2)
    results: list[Prediction | None] = [None] * 8

    def work(i: int) -> None:
        results[i] = shared.predict(many, batch_size=(1, 256, 37, 256, 100, 256, 300, 256)[i])

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [_same(result, one_at_a_time) for result in results] == [True] * 8


def test_early_exit_in_full_batches_matches_batch_1(engine, many, one_at_a_time):
    threshold = float(np.median(one_at_a_time.probabilities.max(axis=1)))
    assert _same(engine.predict(many, early_exit=threshold, batch_size=256),
                 engine.predict(many, early_exit=threshold, batch_size=1))
