"""Named training presets, one module per data set, each exposing CONFIG: what differs from TrainConfig's defaults."""

from __future__ import annotations

import copy
import importlib

from ..config import TrainConfig

PRESETS = ("mnist", "translated60", "cluttered60", "cluttered100")


def load_preset(name: str) -> TrainConfig:
    """Returns a fresh copy of the preset's TrainConfig.

    Raises:
        ValueError: unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(importlib.import_module(f".{name}", __package__).CONFIG)
