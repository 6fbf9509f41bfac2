"""Preset: cluttered translated MNIST 60×60, 4 pieces of 8×8 (paper Table 2: RAM, 8 glimpses of 12×12, 3 scales, 4.04 %)."""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="cluttered60",
    model=ModelConfig(glimpse_size=12, num_scales=3, scale_factor=2, num_glimpses=8, height=60, width=60,
                      core="lstm", location_std=0.15),
    steps=80_000,
)
