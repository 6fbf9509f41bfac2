"""Preset: MNIST 28×28 (the paper's Table 1 task, 6 glimpses of 8×8).

Why two scales (8 and 16 px) instead of the paper's one: the first glimpse, at the centre, sees the middle of the
digit coarsely, which speeds up training, yet not enough to answer, so the policy must still learn to move (with a
third, 32-px scale the first glimpse sees the whole digit and the policy learns nothing). Why random shifts
(``max_shift=4``): they keep the 50 000 training digits from being memorised; larger shifts did better up to 4 px.
The measurements are in docs/experiments.md; the shipped model's, in its card (ram_infer/models/mnist.md).
"""

from ..config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="mnist",
    model=ModelConfig(glimpse_size=8, num_scales=2, scale_factor=2, num_glimpses=6, height=28, width=28,
                      core="rnn", location_std=0.15),
    steps=60_000,
    max_shift=4,
)
