"""A ram-train run on own images as the benchmarks see it: its configuration and its data, opened as ram-train opens
them, so that a CNN baseline trains and is tested on exactly the images, input format and splits of the RAM model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ram_infer.engine import usable_cores
from ram_infer.training.config import TrainConfig
from ram_infer.training.data import open_folder
from ram_infer.training.folder import FolderData
from ram_infer.training.plan import plan_run
from ram_infer.training.run_files import CONFIG


def run_config(run: Path | None, data: str | None) -> TrainConfig:
    """The run's configuration (``RUN/config.json``), or without a run the plan ``ram-train train --data DATA`` makes.

    ``data`` given with a run says where the run's data is now: ram-train records the path as it was typed, relative
    to where it ran. The cache is keyed by the resolved path, so another spelling of the same folder finds it.

    Raises:
        ValueError: neither given; the run trained on a built-in task; its data is not found from here.
    """
    if run is None:
        if data is None:
            raise ValueError("name own images with --data DIR, or a ram-train run on them with --run RUN_DIR")
        return plan_run(data, ["steps=1"], measure=False).config  # steps set: nothing is measured
    config = TrainConfig.from_dict(json.loads((run / CONFIG).read_text(encoding="utf-8")))
    if config.task != "folder":
        raise ValueError(f"{run}: trained on the built-in task {config.task!r}, not on own images; use --task")
    config.data = data or config.data
    if not Path(config.data).exists():
        raise ValueError(f"{run}: its data {config.data!r} is not found from {Path.cwd()} (ram-train records the path "
                         "as typed, relative to where it ran); say where it is with --data DIR")
    return config


def open_run_data(config: TrainConfig) -> FolderData:
    """The run's data, from its cache (decoded with every usable core where the cache is not up to date)."""
    return open_folder(config, workers=usable_cores())


def evaluation_images(data: FolderData, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test images (ndarray[N, C, H, W], float32, in the model's input format) and labels (ndarray[N], int64).

    Raises:
        ValueError: the data has no test images (a test_fraction of 0 and no test folder).
    """
    images, labels = data.arrays("test", limit)
    if not len(labels):
        raise ValueError(f"{data.listing.source}: no test images to measure accuracy on")
    return images, labels
