"""Preset: MNIST 28×28 (paper Table 1: RAM, 6 glimpses of 8×8, 1.29 %; 7 glimpses 1.07 %).

Three scales (8, 16, 32 px) instead of the paper's one: the 32-px scale sees the whole digit coarsely from the first
glimpse, which makes the mean policy accurate early and training fast on two CPU cores.
"""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="mnist",
    model=ModelConfig(glimpse_size=8, num_scales=3, scale_factor=2, num_glimpses=6, height=28, width=28,
                      core="rnn", location_std=0.15),
    batch_size=128,
    mc_samples=1,
    steps=60_000,
    learning_rate=1e-3,
    aux_weight=0.1,
    eval_every=2000,
    eval_images=5000,
    threads=1,  # small matrices: one thread per process is fastest; scale out with torchrun
)
