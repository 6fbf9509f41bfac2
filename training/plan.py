"""The plan of a run on own images: input format, sensor, network and length chosen from the data, unless set.

``ram-train plan --data DIR`` prints it without training; ``ram-train train --data DIR`` trains it. The choices:

- canvas H×W: the images' size when they all share one, else their median height and width; either scaled down,
  keeping the aspect ratio, until the longer side is at most ``MAX_CANVAS_SIDE``: on the shapes example a 64×48
  canvas learnt as much per step as 128×96 and took 2.2× the steps per minute (docs/experiments.md), and in a
  bounded time the steps are what counts; set ``model.height`` and ``model.width`` for fine detail;
- channels: 3 if the images are in colour and their colours alone tell the classes apart (``colour_accuracy``), else 1:
  on the shapes example, whose shapes come in any colour, one channel learnt twice as fast as three;
- polarity and background: one-channel images on plain backgrounds (ink on paper: digits, letters, drawings) get
  polarity "auto" on a dark background, so light paper is inverted as for MNIST, in training and at run time alike;
  anything else "keep": a photograph is never inverted;
- placement "fit": an image of another size is scaled, keeping its aspect ratio, to fit, and padded;
- glimpse g = min side / 5 within [8, 16] (28 → 8 and 60 → 12, the paper's), scales k so that the coarsest patch
  g·2^(k-1) covers the canvas's longer side, glimpses T = 6 + 2·log2(longer side / 28) within [6, 12] (28 → 6, 60 → 8,
  the paper's);
- steps: as many as fit in ``minutes`` (default ``DEFAULT_MINUTES``) at the step time measured here, less a tenth
  for validation; set ``steps`` to choose yourself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import numpy as np

from ram_infer.images import ImageError, border_pixels, read_header, read_intensities

from .config import ModelConfig, TrainConfig, apply_overrides
from .folder import Listing, cache_folder, is_cached, list_data

MAX_CANVAS_SIDE = 64
DEFAULT_MINUTES = 20.0
PROBE_IMAGES = 2000  # headers read to choose the canvas and channels (evenly spread over the listing)
POLARITY_IMAGES = 64  # images decoded to tell ink on paper from photographs
PLAIN_BORDER_STD = 0.1  # a border this even (std of its intensities) is paper, not a scene
COLOUR_IMAGES = 40  # images a class decoded to tell whether colour tells the classes apart (half fit, half test)
HUE_BINS = 12
SATURATED = 0.3  # a pixel whose chroma is this share of its brightest channel has a hue worth counting
COLOUR_MARGIN = 0.25  # colour is kept when its classifier gets this share of the way from chance to perfect

# What differs from TrainConfig's defaults for own images: the settings of the paper's larger canvases (an LSTM core
# and σ = 0.15, as the translated and cluttered presets), which also serve 28×28.
FOLDER_DEFAULTS = TrainConfig(
    task="folder",
    model=ModelConfig(core="lstm", location_std=0.15, placement="fit"),
    reinforce_to_core=0.1,
)


@dataclasses.dataclass
class Plan:
    """A run's configuration with what it was chosen from."""

    config: TrainConfig
    listing: Listing
    probe: dict[str, Any]  # sizes and modes seen
    seconds_per_1000_steps: float | None  # measured; None when steps was set and nothing was measured
    cache: str  # the cache folder
    cached: bool  # whether the cache is up to date (no decoding needed)

    def split_counts(self) -> dict[str, list[int]]:
        """Images per class in each split, before decoding (a file that fails to decode drops out later)."""
        splits = self.listing.splits(self.config.valid_fraction, self.config.test_fraction)
        labels = np.asarray(self.listing.labels)
        size = len(self.listing.classes)
        return {split: np.bincount(labels[splits == split], minlength=size).tolist()
                for split in ("train", "valid", "test")}

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "images": len(self.listing.files),
                "missing": list(self.listing.missing), "counts": self.split_counts(), "probe": self.probe,
                "seconds_per_1000_steps": self.seconds_per_1000_steps, "cache": self.cache, "cached": self.cached}

    def describe(self) -> str:
        """The plan for people: data, input, sensor, network and length, one fact a line."""
        c, m = self.config, self.config.model
        counts = self.split_counts()
        shape = m.input_format
        lines = [f"data: {c.data} ({len(self.listing.files)} images, {len(self.listing.classes)} classes; "
                 f"train/valid/test per class below)"]
        lines += [f"  {name!r}: {counts['train'][i]}/{counts['valid'][i]}/{counts['test'][i]}"
                  for i, name in enumerate(self.listing.classes)]
        if self.listing.missing:
            lines.append(f"skipped: {len(self.listing.missing)} rows whose file is missing "
                         f"(first: {self.listing.missing[0]})")
        sizes = self.probe["sizes"]
        lines.append(f"images seen: {self.probe['images']} of them, {len(sizes)} sizes (most common "
                     f"{sizes[0][0]}×{sizes[0][1]}), {'colour' if self.probe['colour'] else 'grey'}"
                     + (f", {self.probe['unreadable']} unreadable" if self.probe["unreadable"] else ""))
        lines.append(f"input: {m.height}×{m.width} (height×width), {m.channels} channel(s), placement "
                     f"{shape.placement}, polarity {shape.polarity}, background {shape.background}")
        coarsest = m.glimpse_size * m.scale_factor ** (m.num_scales - 1)
        lines.append(f"sensor: {m.num_glimpses} glimpses of {m.glimpse_size}×{m.glimpse_size} at {m.num_scales} "
                     f"scales (coarsest patch {coarsest} px)")
        lines.append(f"network: {m.core} core of {m.core_hidden}, {m.num_classes} classes")
        pace = (f"{self.seconds_per_1000_steps:.0f} s per 1000 steps measured here; train measures again"
                if self.seconds_per_1000_steps is not None else "steps set")
        lines.append(f"training: {c.steps} steps of batch {c.batch_size} ({pace}), validation every "
                     f"{c.eval_every} steps on {c.eval_images} images")
        lines.append(f"cache: {self.cache} ({'up to date' if self.cached else 'to decode'})")
        return "\n".join(lines)


def plan_run(source: str, overrides: list[str], *, measure: bool = True) -> Plan:
    """The configuration of a run on the data at ``source``: chosen from the data, then ``overrides`` applied.

    Raises:
        DataError: unusable data (see folder.list_data).
        ValueError: a bad override.
    """
    listing = list_data(source)
    given = {item.lstrip("-").partition("=")[0] for item in overrides}
    probe = probe_images(listing)
    config = apply_overrides(FOLDER_DEFAULTS, _as_overrides(choose_settings(listing, probe, given)) + overrides)
    m = config.model  # the sensor follows the canvas, whether chosen or set
    sensor = {key: value for key, value in sensor_settings(m.height, m.width).items() if key not in given}
    config = apply_overrides(config, _as_overrides(sensor))
    config.data, config.classes = str(source), list(listing.classes)
    splits = listing.splits(config.valid_fraction, config.test_fraction)
    train, valid = int(np.sum(splits == "train")), int(np.sum(splits == "valid"))
    if "batch_size" not in given:
        config.batch_size = max(1, min(config.batch_size, train))
    if "eval_images" not in given:
        config.eval_images = max(1, min(config.eval_images, valid))
    seconds = None
    if "steps" not in given:
        seconds = measure_step_seconds(config) if measure else None
        minutes = config.minutes or DEFAULT_MINUTES
        config.minutes = minutes
        config.steps = max(100, int(0.9 * minutes * 60 / seconds) // 10 * 10) if seconds else config.steps
        seconds = seconds * 1000 if seconds else None
    if "eval_every" not in given:
        config.eval_every = max(50, config.steps // 10)
    if "checkpoint_every" not in given:
        config.checkpoint_every = min(config.checkpoint_every, config.eval_every)
    shape = config.model.input_format
    return Plan(config, listing, probe, seconds, str(cache_folder(listing, shape)), is_cached(listing, shape))


def _as_overrides(settings: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


def probe_images(listing: Listing) -> dict[str, Any]:
    """Sizes and colour of up to PROBE_IMAGES images (their headers) and the border statistics of a few (decoded)."""
    step = max(1, len(listing.files) // PROBE_IMAGES)
    sizes: dict[tuple[int, int], int] = {}
    colour, unreadable = False, 0
    for file in listing.files[::step]:
        try:
            height, width, in_colour = read_header(listing.root / file)
        except ImageError:
            unreadable += 1
            continue
        sizes[height, width] = sizes.get((height, width), 0) + 1
        colour = colour or in_colour
    if not sizes:
        raise ValueError(f"{listing.source}: none of the {len(listing.files[::step])} images looked at can be read")
    heights = [h for (h, _), n in sizes.items() for _ in range(n)]
    widths = [w for (_, w), n in sizes.items() for _ in range(n)]
    return {"images": sum(sizes.values()), "unreadable": unreadable, "colour": colour,
            "sizes": sorted(([h, w, n] for (h, w), n in sizes.items()), key=lambda s: -s[2]),
            "median": [int(np.median(heights)), int(np.median(widths))],
            "plain_borders": _plain_border_fraction(listing),
            "colour_accuracy": colour_accuracy(listing) if colour else None}


def colour_accuracy(listing: Listing) -> dict[str, float]:
    """How well the colours alone tell the classes apart: a nearest-class-mean classifier on each image's hue
    histogram (the share of its pixels of each of HUE_BINS hues, among the saturated ones), fitted on half of up to
    COLOUR_IMAGES images a class and tested on the other half; with the chance rate of that test half.

    Why: the glimpse network is a perceptron on the patch's pixels; where colour says nothing about the class (a
    shape of any colour) three channels triple its input with variation it must learn to ignore, and on the shapes
    example one channel learnt twice as fast (docs/experiments.md). Where colour does tell the classes apart, it is
    kept.
    """
    labels = np.asarray(listing.labels)
    features, classes, halves = [], [], []
    for label in range(len(listing.classes)):
        members = np.flatnonzero(labels == label)
        members = members[:: max(1, len(members) // COLOUR_IMAGES)][:COLOUR_IMAGES]
        for order, row in enumerate(members):
            try:
                values = read_intensities(listing.root / listing.files[row])
            except ImageError:
                continue
            features.append(_hue_histogram(values))
            classes.append(label)
            halves.append(order % 2)
    features, classes, halves = np.array(features), np.array(classes), np.array(halves)
    fit, test = halves == 0, halves == 1
    present = np.unique(classes[fit])
    if not test.any() or len(present) < 2:
        return {"accuracy": 0.0, "chance": 1.0}
    centres = np.stack([features[fit & (classes == label)].mean(axis=0) for label in present])  # (K, bins)
    nearest = present[np.argmin(((features[test][:, None] - centres[None]) ** 2).sum(axis=2), axis=1)]
    chance = float(np.max(np.bincount(classes[test])) / test.sum())
    return {"accuracy": float(np.mean(nearest == classes[test])), "chance": chance}


def colour_tells_classes(accuracy: dict[str, float]) -> bool:
    """Whether the colour classifier beat chance by a quarter of the way to perfect (COLOUR_MARGIN)."""
    return accuracy["accuracy"] >= accuracy["chance"] + COLOUR_MARGIN * (1 - accuracy["chance"])


def _hue_histogram(values: np.ndarray) -> np.ndarray:
    """The share of an image's pixels in each of HUE_BINS hues, counting saturated, not dark pixels only."""
    if values.shape[2] < 3:
        return np.zeros(HUE_BINS)
    rgb = values[:, :, :3].reshape(-1, 3)
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    chroma = high - low
    coloured = (chroma > SATURATED * np.maximum(high, 1e-6)) & (high > 0.2)
    r, g, b = rgb[coloured].T
    c = chroma[coloured]
    hue = np.where(high[coloured] == r, ((g - b) / c) % 6,
                   np.where(high[coloured] == g, (b - r) / c + 2, (r - g) / c + 4)) / 6  # in [0, 1)
    counts = np.bincount(np.minimum((hue * HUE_BINS).astype(int), HUE_BINS - 1), minlength=HUE_BINS)
    return np.sqrt(counts / len(rgb))  # square root: a small coloured object still counts beside a large one


def _plain_border_fraction(listing: Listing) -> float:
    """The fraction of a few images whose border is plain (paper), not a scene."""
    step = max(1, len(listing.files) // POLARITY_IMAGES)
    plain = seen = 0
    for file in listing.files[::step][:POLARITY_IMAGES]:
        try:
            border = border_pixels(read_intensities(listing.root / file)).mean(axis=1)  # (n,) intensities
        except ImageError:
            continue
        plain += bool(border.std() < PLAIN_BORDER_STD)
        seen += 1
    return plain / seen if seen else 0.0


def choose_settings(listing: Listing, probe: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The settings chosen from the data (as ``key: value`` overrides), leaving out those the user set."""
    sizes = probe["sizes"]
    height, width = (sizes[0][0], sizes[0][1]) if len(sizes) == 1 else probe["median"]
    shrink = min(1.0, MAX_CANVAS_SIDE / max(height, width))
    channels = 3 if probe["colour"] and colour_tells_classes(probe["colour_accuracy"]) else 1
    ink_on_paper = channels == 1 and probe["plain_borders"] >= 0.9
    chosen = {"model.height": max(1, round(height * shrink)), "model.width": max(1, round(width * shrink)),
              "model.channels": channels, "model.num_classes": len(listing.classes),
              "model.polarity": "auto" if ink_on_paper else "keep", "model.background": "dark"}
    return {key: value for key, value in chosen.items() if key not in given}


def sensor_settings(height: int, width: int) -> dict[str, int]:
    """Glimpse size, scales (the coarsest patch covers the longer side) and glimpses for an H×W canvas."""
    g = int(min(16, max(8, round(min(height, width) / 5))))
    k = 1
    while g * 2 ** (k - 1) < max(height, width):
        k += 1
    glimpses = int(min(12, max(6, round(6 + 2 * math.log2(max(height, width) / 28)))))
    return {"model.glimpse_size": g, "model.num_scales": k, "model.scale_factor": 2, "model.num_glimpses": glimpses}


def measure_step_seconds(config: TrainConfig, steps: int = 5) -> float:
    """Seconds per training step of this configuration on this machine: a few steps on random images, after two
    unmeasured ones (the first allocates)."""
    import torch

    from .losses import hybrid_loss
    from .model import RecurrentAttention

    if config.threads:
        torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(0)
    model = RecurrentAttention(config.model, config.reinforce_to_core)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    m = config.model
    x = torch.rand(config.batch_size, m.channels, m.height, m.width, generator=generator)
    y = torch.randint(0, m.num_classes, (config.batch_size,), generator=generator)
    times = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        rollout = model(x, m.location_std, generator)
        loss = hybrid_loss(rollout, y, reinforce_weight=config.reinforce_weight,
                           baseline_weight=config.baseline_weight, aux_weight=config.aux_weight).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return float(np.median(times[2:]))


def command_plan(args: Any) -> int:
    """``ram-train plan --data DIR [key=value …]``: prints the plan (text, or one JSON object with ``--json``)."""
    plan = plan_run(args.data, args.overrides)
    print(json.dumps(plan.to_dict(), ensure_ascii=False) if args.json else plan.describe())
    return 0
