"""Preset: cluttered translated MNIST 100×100, 8 pieces of 8×8 (paper Table 2: RAM, 8 glimpses of 12×12, 4 scales, ≈8.1 %)."""

from training.config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="cluttered100",
    model=ModelConfig(glimpse_size=12, num_scales=4, scale_factor=2, num_glimpses=8, height=100, width=100,
                      core="lstm", location_std=0.15),
    batch_size=128,
    mc_samples=1,
    steps=100_000,
    learning_rate=1e-3,
    aux_weight=0.1,
    eval_every=2000,
    eval_images=5000,
    threads=1,  # small matrices: one thread per process is fastest; scale out with torchrun
)
