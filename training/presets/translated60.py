"""Preset: translated MNIST 60×60 (the paper's Table 2 task, 8 glimpses of 12×12 at 3 scales).

Why the augmentation: the first model fitted its training digits (right almost always under the sampled policy, far
less often on validation), and most of its errors were misreadings, not search failures. Turning, scaling and
elastically distorting each training image (``max_rotation``, ``max_scale``, ``elastic_pixels``) shows it more ways a
digit is written; averaging the weights from the first step (``ema_decay``) and letting a tenth of the REINFORCE
gradient train the core and glimpse networks (``reinforce_to_core=0.1``, as on cluttered100) helped from the start.
The measurements are in docs/experiments.md; the shipped model's, in its card (ram_infer/models/translated60.md).
"""

from ..config import ModelConfig, TrainConfig

CONFIG = TrainConfig(
    task="translated60",
    model=ModelConfig(glimpse_size=12, num_scales=3, scale_factor=2, num_glimpses=8, height=60, width=60,
                      core="lstm", location_std=0.15),
    steps=100_000,
    reinforce_to_core=0.1,
    max_rotation=10,
    max_scale=0.1,
    elastic_pixels=1.0,
    ema_decay=0.9995,
)
