"""Preset: translated MNIST 60×60 (paper Table 2: RAM, 8 glimpses of 12×12 at 3 scales, 1.22 %)."""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="translated60",
    model=ModelConfig(glimpse_size=12, num_scales=3, scale_factor=2, num_glimpses=8, height=60, width=60,
                      core="lstm", location_std=0.15),
    steps=40_000,
)
