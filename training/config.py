"""Configuration of a RAM model and of its training run: dataclasses with the paper's defaults, and key=value
overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ram_infer.metadata import BACKGROUNDS, PLACEMENTS, POLARITIES, InputFormat


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a RecurrentAttention model (saved in every checkpoint and in the ONNX metadata).

    Defaults are the paper's MNIST 28×28 model: 8×8 glimpse, one scale, 6 glimpses, 128/128 → 256 glimpse network and a
    256-unit core.
    """

    glimpse_size: int = 8  # g
    num_scales: int = 1  # k
    scale_factor: int = 2  # s
    num_glimpses: int = 6  # T
    channels: int = 1  # C
    height: int = 28  # H
    width: int = 28  # W
    num_classes: int = 10
    glimpse_hidden: int = 128  # size of h_g, the "what" pathway
    location_hidden: int = 128  # size of h_l, the "where" pathway
    glimpse_features: int = 256  # size of g_t
    core_hidden: int = 256  # size of h_t
    core: str = "rnn"  # "rnn" (the paper's ReLU RNN) or "lstm"
    location_std: float = 0.17  # σ of the Gaussian location policy during training
    # l_0: the first glimpse's centre, fixed so inference is deterministic
    initial_location: tuple[float, float] = (0.0, 0.0)
    # How the runtime fits an image of another size, and whether it inverts ink on paper (ram_infer.metadata
    # InputFormat). None: "mnist" for a 28×28 input, "canvas" otherwise (the MNIST tasks); own images: "fit".
    placement: str | None = None
    polarity: str = "auto"  # "keep" for photographs, which must never be inverted
    background: str = "dark"

    def __post_init__(self) -> None:
        if self.core not in ("rnn", "lstm"):
            raise ValueError(f"core must be 'rnn' or 'lstm', got {self.core!r}")
        if self.placement not in (None, *PLACEMENTS) or self.polarity not in POLARITIES or \
                self.background not in BACKGROUNDS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, polarity one of "
                             f"{', '.join(POLARITIES)} and background one of {', '.join(BACKGROUNDS)}, got "
                             f"{self.placement!r}, {self.polarity!r} and {self.background!r}")
        for name in ("glimpse_size", "num_scales", "scale_factor", "num_glimpses", "channels", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "initial_location", tuple(float(v) for v in self.initial_location))

    @property
    def state_size(self) -> int:
        """S, the width of the packed recurrent state: h_t for the RNN, [h_t, c_t] for the LSTM."""
        return self.core_hidden * (2 if self.core == "lstm" else 1)

    @property
    def input_format(self) -> InputFormat:
        """The images the model takes, as the runtime reads them (the exported ``ram.input``)."""
        placement = self.placement or ("mnist" if (self.height, self.width) == (28, 28) else "canvas")
        return InputFormat(height=self.height, width=self.width, channels=self.channels, value_scale=255.0,
                           background=self.background, placement=placement, polarity=self.polarity)


PRECISIONS = ("float32", "bfloat16")


@dataclass
class TrainConfig:
    """A training run: the data set, the model, and the optimisation (saved in every checkpoint)."""

    task: str = "mnist"  # mnist, translated60, cluttered60 or cluttered100 (training/data.py), or "folder"
    # Own images (task "folder", training/folder.py): the folder or CSV, its class names (set from the data), and the
    # fractions of it drawn for validation and test where the data does not give those splits
    data: str | None = None
    classes: list[str] = field(default_factory=list)
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # Own images: the wall-clock minutes the plan sizes ``steps`` for, from the step time it measures (unless steps
    # is set); recorded, so the run's length is fixed from then on and a resume replays it
    minutes: float | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 128  # images per optimiser step (per process under torchrun)
    steps: int = 20_000  # optimiser steps in total
    # A run lengthened on resume (``--resume steps=N``) has legs: [until, length] pairs in order, meaning the steps
    # before ``until`` followed the learning-rate schedule of a ``length``-step run, as they did before the run was
    # lengthened; the steps after the last leg follow ``steps``. Resuming records them, so a preset can replay such
    # a run from scratch in one command (schedule_length).
    schedule_legs: list[list[int]] = field(default_factory=list)
    learning_rate: float = 1e-3  # Adam
    lr_decay_to: float = 0.05  # cosine decay of the learning rate to this fraction of the start
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # max global gradient norm
    reinforce_weight: float = 1.0  # weight of the REINFORCE term
    # the fraction of the REINFORCE gradient that also trains the core and glimpse networks (0: f_l alone; 1: the
    # paper); training only, the exported model is the same either way
    reinforce_to_core: float = 0.0
    baseline_weight: float = 1.0  # weight of the baseline MSE
    aux_weight: float = 0.1  # weight of the per-step classification loss (anytime prediction / early exit)
    max_shift: int = 0  # augmentation: training images move by up to this many pixels per axis
    # augmentation: each training image turns by a uniform angle in ±max_rotation degrees and scales by a uniform
    # factor in 1 ± max_scale about its centre (bilinear, zero fill), after any shift
    max_rotation: float = 0.0
    max_scale: float = 0.0
    # augmentation: elastic distortion (Simard et al. 2003), each pixel moved by a smooth random field: normal shifts
    # of elastic_pixels px at control points elastic_spacing px apart, interpolated; 0 switches it off
    elastic_pixels: float = 0.0
    elastic_spacing: float = 8.0
    # "bfloat16": the training episodes and the loss run under torch.autocast, their matrix products in bfloat16
    # (≈ 2× the images per second on a CPU with AVX-512 BF16 or AMX). Weights, optimiser, validation and the
    # exported model stay float32.
    precision: str = "float32"
    # Weight averaging (Polyak): from step ema_from on, validation, best.pt and so the exported model use an
    # exponential moving average of the weights, w̄ ← ema_decay·w̄ + (1 − ema_decay)·w; 0 uses the weights themselves.
    # Why: late in a run the weights wander about the optimum by the step noise of REINFORCE; their average sits
    # nearer it. A resume may switch it on (``--resume ema_decay=D``), which sets ema_from to the resume step.
    ema_decay: float = 0.0
    ema_from: int = 0
    seed: int = 0
    data_root: str | None = None
    eval_every: int = 2000  # steps between validation runs (mean policy)
    eval_images: int = 5000  # validation images per evaluation
    checkpoint_every: int = 500  # steps between checkpoints
    log_every: int = 50  # steps between JSON-lines log records
    threads: int | None = 1  # torch intra-op threads (small matrices: one per process is fastest; scale out with
    # torchrun); None leaves torch's default

    def __post_init__(self) -> None:
        if not (0 <= self.max_rotation <= 180 and 0 <= self.max_scale < 1):
            raise ValueError(f"max_rotation must be in [0, 180] degrees and max_scale in [0, 1), got "
                             f"{self.max_rotation} and {self.max_scale}")
        if not (0 <= self.ema_decay < 1 and self.ema_from >= 0):
            raise ValueError(f"ema_decay must be in [0, 1) and ema_from a step ≥ 0, got {self.ema_decay} and "
                             f"{self.ema_from}")
        if not (self.elastic_pixels >= 0 and self.elastic_spacing >= 1):
            raise ValueError(f"elastic_pixels must be ≥ 0 and elastic_spacing ≥ 1 pixel, got {self.elastic_pixels} and "
                             f"{self.elastic_spacing}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (0 <= self.valid_fraction < 1 and 0 <= self.test_fraction < 1 and
                self.valid_fraction + self.test_fraction < 1):
            raise ValueError(f"valid_fraction and test_fraction must be in [0, 1) with a sum below 1, got "
                             f"{self.valid_fraction} and {self.test_fraction}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        self.schedule_legs = _checked_schedule_legs(self.schedule_legs)

    def schedule_length(self, step: int) -> int:
        """The run length whose learning-rate schedule step ``step`` follows: its leg's (schedule_legs), else
        ``steps``."""
        for until, length in self.schedule_legs:
            if step < until:
                return length
        return self.steps

    def legs_after_resume(self, step: int, steps: int) -> list[list[int]]:
        """schedule_legs of this run, stopped at ``step`` and resumed to run ``steps`` in all: when ``steps``
        changes, the steps taken since the last leg become a leg of the old length."""
        legs = [list(leg) for leg in self.schedule_legs]
        if steps != self.steps and step > (legs[-1][0] if legs else 0):
            legs.append([step, self.steps])
        return legs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The configuration saved by ``to_dict`` (a checkpoint's, config.json's), also by an earlier ram-train.

        Raises:
            ValueError: the run used a setting this version no longer has (RETIRED_SETTINGS).
        """
        values = _without_retired_settings(values)
        model = ModelConfig(**values.pop("model", {}))
        return cls(model=model, **values)


# Settings that earlier versions wrote into every checkpoint and config.json, with the value that left them unused;
# a run that left them so still loads, resumes and ships. None of the shipped models' runs used them.
RETIRED_SETTINGS = {"mc_samples": 1, "location_std_final": None, "location_std_legs": []}


def _without_retired_settings(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the retired settings, which must hold their unused value.

    Raises:
        ValueError: a retired setting was used: this version cannot replay that run.
    """
    values = dict(values)
    for name, unused in RETIRED_SETTINGS.items():
        if name in values and values.pop(name) != unused:
            raise ValueError(f"this run used {name}, a setting ram-train no longer has: "
                             "an earlier version of ram-infer is needed to go on with it")
    return values


def _checked_schedule_legs(legs: list[list[Any]]) -> list[list[int]]:
    """schedule_legs as ``[int, int]`` pairs, checked: steps ``until`` positive and increasing, lengths positive.

    Raises:
        ValueError: ``schedule_legs must be …, got …``.
    """
    legs = [[int(until), int(length)] for until, length in legs]
    untils = [until for until, _ in legs]
    if any(until < 1 or length < 1 for until, length in legs) or untils != sorted(set(untils)):
        raise ValueError(f"schedule_legs must be [until, length] pairs of positive steps with increasing 'until', "
                         f"got {legs}")
    return legs


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Returns a copy of ``config`` with ``key=value`` overrides applied; ``model.key=value`` reaches the model.

    Values are parsed as JSON when they can be (numbers, booleans, null, lists), else taken as strings.

    Raises:
        ValueError: an override is not ``key=value`` or names an unknown field.
    """
    top = config.to_dict()
    for item in overrides:
        key, sep, raw = item.lstrip("-").partition("=")
        if not sep:
            raise ValueError(f"override must look like key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target, name = (top["model"], key[len("model.") :]) if key.startswith("model.") else (top, key)
        if name not in target or name == "model":
            known = sorted(k for k in target if k != "model")
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(known)}")
        target[name] = value
    return TrainConfig.from_dict(top)
