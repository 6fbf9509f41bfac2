"""Preset: cluttered translated MNIST 100×100, 8 pieces of 8×8 (paper Table 2: RAM, 8 glimpses of 12×12, 4 scales, ≈8.1 %)."""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="cluttered100",
    model=ModelConfig(glimpse_size=12, num_scales=4, scale_factor=2, num_glimpses=8, height=100, width=100,
                      core="lstm", location_std=0.15),
    steps=100_000,
)
