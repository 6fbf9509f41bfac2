"""Preset: cluttered translated MNIST 60×60, 4 pieces of 8×8 (paper Table 2: RAM, 8 glimpses of 12×12, 3 scales,
4.04 %).

The shipped model's run, replayed by schedule_legs: a 28 000-step schedule, lengthened to 50 000 steps and then to
100 000 (each time the learning rate went back up and decayed again), then to 150 000 and, at step 107 500, cut
to 130 000 (test error 4.05 %), then lengthened to 200 000 (3.72 %), to 280 000 (3.60 %), to 360 000 and, with
the weights averaged from there on (ema_decay), to 390 000. The shipped model is that average at step 390 000 (the
run's checkpoint.pt): 2.93 % on the whole validation split, against 2.98 % for best.pt (step 268 000).
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
