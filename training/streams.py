"""Named random streams of a training run: each purpose draws from a generator of its own.

A stream's generator is a function of (seed, step, rank, the stream's number) alone, so a resumed run draws exactly
what the uninterrupted run drew, data-parallel ranks draw independently of each other, and a new purpose (a new
augmentation, say) is a new stream that leaves every other stream's draws, hence every run that does not use it, as
they were. The numbers are part of every run's recipe: a new purpose takes a new number, and none is ever reused or
changed.

numpy only (training/data.py uses it without torch); training/augment.py turns a stream into a torch.Generator.
"""

from __future__ import annotations

import numpy as np

STREAMS = {
    "placement": 1,  # where digits and clutter pieces land on the canvas (data.TrainStream)
    "location": 2,  # the location policy's noise (train.Trainer)
    "affine": 3,  # turn and scale (augment.random_affine)
    "elastic": 4,  # elastic distortion (augment.elastic_displacement)
    "shift": 5,  # pixel shifts (augment.shift)
}


def stream_state(seed: int, step: int, rank: int, purpose: str) -> np.random.SeedSequence:
    """The seed sequence of stream ``purpose`` (a key of STREAMS) for training step ``step`` on rank ``rank``."""
    return np.random.SeedSequence([seed, step, rank, STREAMS[purpose]])


def numpy_stream(seed: int, step: int, rank: int, purpose: str) -> np.random.Generator:
    """A numpy generator of stream ``purpose`` for step ``step`` on rank ``rank``."""
    return np.random.default_rng(stream_state(seed, step, rank, purpose))


def torch_seed(seed: int, step: int, rank: int, purpose: str) -> int:
    """A 64-bit seed of stream ``purpose`` for a torch.Generator, which cannot take a seed sequence."""
    return int(stream_state(seed, step, rank, purpose).generate_state(1, dtype=np.uint64)[0])
