"""Preset: cluttered translated MNIST 100×100, 8 pieces of 8×8 (paper Table 2: RAM, 8 glimpses of 12×12, 4 scales, ≈8.1 %).

The shipped model's run: a 60 000-step schedule, lengthened to 100 000 steps (the learning rate went back up at step
60 000 and decayed again), then to 200 000 and, at 127 000, cut to 180 000 steps, then lengthened to 260 000 (test
error 15.22 % at 100 000, 13.90 % at 180 000, 12.97 % at 260 000); schedule_legs replays that from scratch.
"""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="cluttered100",
    model=ModelConfig(glimpse_size=12, num_scales=4, scale_factor=2, num_glimpses=8, height=100, width=100,
                      core="lstm", location_std=0.15),
    steps=260_000,
    schedule_legs=[[60_000, 60_000], [100_000, 100_000], [127_000, 200_000], [180_000, 180_000]],
)
