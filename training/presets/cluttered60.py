"""Preset: cluttered translated MNIST 60×60, 4 pieces of 8×8 (paper Table 2: RAM, 8 glimpses of 12×12, 3 scales, 4.04 %).

The shipped model's run, replayed by schedule_legs: a 28 000-step schedule, lengthened to 50 000 steps and then to
100 000 (each time the learning rate went back up and decayed again), then to 150 000 and, at step 107 500, cut
to 130 000 (test error 4.05 %), then lengthened to 200 000 (3.72 %) and to 280 000 (3.60 %).
"""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="cluttered60",
    model=ModelConfig(glimpse_size=12, num_scales=3, scale_factor=2, num_glimpses=8, height=60, width=60,
                      core="lstm", location_std=0.15),
    steps=280_000,
    schedule_legs=[[28_000, 28_000], [50_000, 50_000], [100_000, 100_000], [107_500, 150_000], [130_000, 130_000],
                   [200_000, 200_000]],
)
