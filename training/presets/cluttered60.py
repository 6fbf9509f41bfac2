"""Preset: cluttered translated MNIST 60×60, 4 pieces of 8×8 (the paper's Table 2 task).

The shipped model's run, replayed from scratch by ``schedule_legs``: it was lengthened several times, and each time the
cosine learning rate went back up and decayed again, which is what the legs record; the weights are averaged
(``ema_decay``) over the last leg, because the average of the last steps is steadier than any one of them. The
measurements of each leg are in docs/experiments.md; the shipped model's, in its card (ram_infer/models/cluttered60.md).
"""

from ..config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="cluttered60",
    model=ModelConfig(glimpse_size=12, num_scales=3, scale_factor=2, num_glimpses=8, height=60, width=60,
                      core="lstm", location_std=0.15),
    steps=390_000,
    schedule_legs=[[28_000, 28_000], [50_000, 50_000], [100_000, 100_000], [107_500, 150_000], [130_000, 130_000],
                   [200_000, 200_000], [280_000, 280_000], [360_000, 360_000]],
    ema_decay=0.9995,
    ema_from=360_000,
)
