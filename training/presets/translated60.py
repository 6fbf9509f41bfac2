"""Preset: translated MNIST 60×60 (paper Table 2: RAM, 8 glimpses of 12×12 at 3 scales, 1.22 %).

The shipped model's run, replayed by schedule_legs: its first 3 500 steps followed a 60 000-step schedule (the preset
was then longer), the steps to 40 000 a 40 000-step one, and the run was then lengthened to 100 000 steps (the learning
rate went back up at step 40 000 and decayed again), then to 150 000 and, at step 107 500, cut to 130 000, then
lengthened to 180 000. The shipped model is the run's last checkpoint (``ram-train card … --checkpoint checkpoint.pt``):
on the whole validation split it errs on 1.35 % against best.pt's 1.44 % (best.pt, from step 94 000, was chosen on
half of it).
"""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="translated60",
    model=ModelConfig(glimpse_size=12, num_scales=3, scale_factor=2, num_glimpses=8, height=60, width=60,
                      core="lstm", location_std=0.15),
    steps=180_000,
    schedule_legs=[[3_500, 60_000], [40_000, 40_000], [100_000, 100_000], [107_500, 150_000], [130_000, 130_000]],
)
