"""What a RAM step model carries besides its graph: ModelInfo ⇄ the ONNX ``metadata_props`` under ``ram.*`` keys.

Every value is JSON under one key (one definition, used by the exporter to write and by the runtime to read):

- ``ram.format_version``: int, this file's ``FORMAT_VERSION``; a newer version is refused.
- ``ram.sensor``: ``{"glimpse_size": g, "num_scales": k, "scale_factor": s}``.
- ``ram.num_glimpses``: int T, the steps of one episode.
- ``ram.initial_location``: ``[x, y]``, l_0 in [-1, 1].
- ``ram.state_size``: int S, the width of the packed recurrent state.
- ``ram.input``: ``{"height", "width", "channels", "value_scale", "background", "placement", "polarity"}`` (see
  InputFormat; version 1 files have no ``polarity``, which reads as ``"auto"``).
- ``ram.labels``: list of class names, one per logit.
- ``ram.dataset``: str, the data set it was trained on (e.g. ``"mnist"``).
- ``ram.test_error``: float in [0, 1] measured through the exported path, or null.
- ``ram.training``: dict, how it was trained (command, preset, steps, wall time, configuration …).
- ``ram.graph``: only in full-episode models (training/episode.py), ``"episode"``: image in, logits and locations
  out, for runtimes without the sensor; ram-infer runs step models and refuses these with a message saying so.

The runtime reads these through ``onnxruntime`` (``get_modelmeta().custom_metadata_map``), so it needs no ``onnx``
package, and checks them against the graph's inputs and outputs (the step contract in docs/design.md): a dynamic batch
axis, and every other size fixed and equal to what the metadata says. Sizes above ``LIMITS`` are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ram_infer.limits import MAX_PATCH_SIDE  # the sensor's limit on g·s^(k-1)

# 2: "polarity" and the "fit" and "crop" placements (own-image models); an older ram-infer must refuse such a model
# rather than invert a photo it should keep. Version 1 files still read.
FORMAT_VERSION = 2
PREFIX = "ram."
KEYS = (
    "format_version",
    "sensor",
    "num_glimpses",
    "initial_location",
    "state_size",
    "input",
    "labels",
    "dataset",
    "test_error",
    "training",
)
BACKGROUNDS = ("dark", "light")
PLACEMENTS = ("mnist", "canvas", "fit", "crop")
POLARITIES = ("auto", "keep")
GRAPH_KEY = PREFIX + "graph"
EPISODE_GRAPH = "episode"
STEP_INPUTS = ("glimpse", "location", "state")
STEP_OUTPUTS = ("state_next", "location_next", "logits")
_MISSING = object()
# Upper bounds on the sizes a model may declare. Far above any RAM (the paper: g = 8, k ≤ 4, T ≤ 8, 256 units), they
# make a hostile or corrupt file fail here with its key named, instead of as a huge allocation or an endless setup
# loop (one IOBinding per glimpse) at the first prediction.
LIMITS = {
    "sensor.glimpse_size": 256,
    "sensor.num_scales": 16,
    "num_glimpses": 1000,
    "state_size": 1 << 16,
    "input.height": 8192,
    "input.width": 8192,
    "input.channels": 4,
    "labels": 10_000,
}
# Ranges of numbers: an 8-bit pixel p enters the model as p / value_scale, which must stay a finite float32 (a
# value_scale of 1e-45 made every pixel infinite); 1 and 255 are the usual ones, 65535 that of 16-bit data.
VALUE_RANGES = {"input.value_scale": (1e-6, 1e6)}
# A value's JSON text at most: the bundled models' longest (ram.training) is under 2 k characters, ten thousand labels
# of a hundred characters fit; a hostile file's 200 MB value would cost seconds and gigabytes to parse.
MAX_VALUE_CHARS = 1 << 20
# Bounds on products: each size may be within LIMITS while their product is not (an 8192×8192×4 input is 1 GiB per
# image as float32, T × classes logits per image, and the pixels the sensor sums over a whole episode). Each is far
# above the bundled models (at most 100·100·1 input values, 8 × 10 logits, 98 k pixel reads per image).
PRODUCT_LIMITS = {
    "input values (height × width × channels)": 1 << 24,  # 64 MiB per decoded image
    "glimpse values (num_scales × channels × glimpse_size²)": 1 << 20,
    "logits per episode (num_glimpses × classes)": 1 << 20,
    "sensor pixel reads per episode": 1 << 32,  # T × C × Σ_scales min(patch area, image area)
}


class ModelFormatError(ValueError):
    """A model file is not a usable RAM step model: its metadata is missing or inconsistent with its graph.

    The message names the file and the ``ram.*`` key (or graph input/output) that is wrong.
    """


@dataclass(frozen=True)
class SensorSpec:
    """The glimpse sensor ρ's parameters: k patches of side g·sⁱ, each reduced to g×g."""

    glimpse_size: int  # g
    num_scales: int  # k
    scale_factor: int  # s


@dataclass(frozen=True)
class InputFormat:
    """The images the model takes, ``[C, height, width]`` float32.

    Attributes:
        value_scale: an 8-bit pixel value p enters the model as ``p / value_scale`` (255 gives [0, 1]).
        background: ``"dark"`` — bright ink on a dark background, as in MNIST — or ``"light"``.
        placement: how a decoded image of another size is fitted (ram_infer/images.py): ``"mnist"`` crops the ink,
            fits it in a 20×20 box and centres its centre of mass in 28×28 (scaled to the input size); ``"canvas"``
            pads with zeros, centred, shrinking only an image that does not fit (pad only); ``"fit"`` scales up or
            down, keeping the aspect ratio, until the image fits, then pads; ``"crop"`` scales until it covers the
            input and cuts the centre out.
        polarity: ``"auto"`` inverts an image whose border is not of the ``background`` kind (ink on paper: digits,
            letters, drawings); ``"keep"`` never inverts (photographs).
    """

    height: int
    width: int
    channels: int
    value_scale: float = 255.0
    background: str = "dark"
    placement: str = "mnist"
    polarity: str = "auto"


@dataclass(frozen=True)
class ModelInfo:
    """Everything the runtime needs to run a RAM step network, and what the model card shows."""

    sensor: SensorSpec
    num_glimpses: int
    initial_location: tuple[float, float]
    state_size: int
    input: InputFormat
    labels: tuple[str, ...]
    dataset: str
    test_error: float | None = None
    training: Mapping[str, Any] = field(default_factory=dict, hash=False)  # a dict: left out of the hash
    format_version: int = FORMAT_VERSION

    @property
    def glimpse_shape(self) -> tuple[int, int, int, int]:
        """The per-image shape of the ``glimpse`` input, (k, C, g, g)."""
        g = self.sensor.glimpse_size
        return (self.sensor.num_scales, self.input.channels, g, g)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def products(self) -> dict[str, int]:
        """The sizes that ``PRODUCT_LIMITS`` bound, for this model."""
        shape, spec = self.input, self.sensor
        area = shape.height * shape.width
        sides = [spec.glimpse_size * spec.scale_factor**i for i in range(spec.num_scales)]
        return {
            "input values (height × width × channels)": area * shape.channels,
            "glimpse values (num_scales × channels × glimpse_size²)": int(math.prod(self.glimpse_shape)),
            "logits per episode (num_glimpses × classes)": self.num_glimpses * self.num_classes,
            "sensor pixel reads per episode": self.num_glimpses
            * shape.channels
            * sum(min(side * side, area) for side in sides),
        }

    def to_metadata_props(self) -> dict[str, str]:
        """The ``ram.*`` entries to store in an ONNX model's ``metadata_props`` (JSON strings)."""
        values = {
            "format_version": self.format_version,
            "sensor": _fields(self.sensor),
            "num_glimpses": self.num_glimpses,
            "initial_location": list(self.initial_location),
            "state_size": self.state_size,
            "input": _fields(self.input),
            "labels": list(self.labels),
            "dataset": self.dataset,
            "test_error": self.test_error,
            "training": dict(self.training),
        }
        return {PREFIX + key: json.dumps(value, sort_keys=True) for key, value in values.items()}

    @classmethod
    def from_metadata_props(cls, props: Mapping[str, str], source: str) -> ModelInfo:
        """Parses and validates the ``ram.*`` entries of a model's metadata.

        Args:
            props: the metadata map (other keys are ignored).
            source: the file name, for error messages.

        Raises:
            ModelFormatError: a key is missing, is not JSON, has the wrong type or range (``LIMITS``), or the format
                is newer.
        """
        reader = _Reader(props, source)
        version = reader.integer("format_version")
        if version > FORMAT_VERSION:
            raise ModelFormatError(
                f"{source}: {PREFIX}format_version is {version}, newer than this ram-infer reads ({FORMAT_VERSION}); "
                "upgrade ram-infer"
            )
        sensor = reader.mapping("sensor", ("glimpse_size", "num_scales", "scale_factor"))
        shape = reader.mapping("input", ("height", "width", "channels", "value_scale", "background", "placement"))
        spec = SensorSpec(
            glimpse_size=reader.integer("sensor.glimpse_size", sensor["glimpse_size"]),
            num_scales=reader.integer("sensor.num_scales", sensor["num_scales"]),
            scale_factor=reader.integer("sensor.scale_factor", sensor["scale_factor"]),
        )
        if spec.glimpse_size * spec.scale_factor ** (spec.num_scales - 1) > MAX_PATCH_SIDE:
            raise ModelFormatError(
                f"{source}: {PREFIX}sensor has a largest patch side glimpse_size * scale_factor^(num_scales - 1) "
                f"above {MAX_PATCH_SIDE}"
            )
        info = cls(
            sensor=spec,
            num_glimpses=reader.integer("num_glimpses"),
            initial_location=reader.location("initial_location"),
            state_size=reader.integer("state_size"),
            input=InputFormat(
                height=reader.integer("input.height", shape["height"]),
                width=reader.integer("input.width", shape["width"]),
                channels=reader.integer("input.channels", shape["channels"]),
                value_scale=reader.positive_number("input.value_scale", shape["value_scale"]),
                background=reader.choice("input.background", shape["background"], BACKGROUNDS),
                placement=reader.choice("input.placement", shape["placement"], PLACEMENTS),
                polarity=reader.choice("input.polarity", shape.get("polarity", "auto"), POLARITIES),
            ),
            labels=reader.labels("labels"),
            dataset=reader.string("dataset"),
            test_error=reader.optional_fraction("test_error"),
            training=reader.mapping("training", ()),
            format_version=version,
        )
        for what, value in info.products().items():
            if value > PRODUCT_LIMITS[what]:
                limit = PRODUCT_LIMITS[what]
                raise ModelFormatError(f"{source}: {PREFIX}* metadata asks for {value} {what}, above {limit}")
        return info

    @classmethod
    def from_session(cls, session: Any, source: str) -> ModelInfo:
        """Reads and checks the metadata of an ``onnxruntime.InferenceSession`` against its graph.

        Args:
            session: the session of the step model.
            source: the file name, for error messages.

        Raises:
            ModelFormatError: the metadata is missing or inconsistent with the graph.
        """
        props = session.get_modelmeta().custom_metadata_map
        if props.get(GRAPH_KEY) == json.dumps(EPISODE_GRAPH):
            raise ModelFormatError(episode_model_message(source))
        info = cls.from_metadata_props(props, source)
        ports = {"input": session.get_inputs(), "output": session.get_outputs()}
        for kind, args in ports.items():
            for arg in args:
                if arg.type != "tensor(float)":
                    raise ModelFormatError(f"{source}: graph {kind} {arg.name!r} must be float32, got {arg.type}")
        info.check_graph(
            [(arg.name, arg.shape) for arg in ports["input"]],
            [(arg.name, arg.shape) for arg in ports["output"]],
            source,
        )
        return info

    def check_graph(
        self,
        inputs: Sequence[tuple[str, Sequence[Any]]],
        outputs: Sequence[tuple[str, Sequence[Any]]],
        source: str,
    ) -> None:
        """Checks the step graph's inputs and outputs against the contract and this metadata.

        Args:
            inputs: ``(name, shape)`` of each graph input, in order; a dimension is an int or a symbolic name.
            outputs: the same for the outputs.
            source: the file name, for error messages.

        Raises:
            ModelFormatError: names, ranks or fixed sizes differ from the contract and the metadata.
        """
        expected_inputs = {"glimpse": self.glimpse_shape, "location": (2,), "state": (self.state_size,)}
        expected_outputs = {"state_next": (self.state_size,), "location_next": (2,), "logits": (self.num_classes,)}
        _check_ports("input", inputs, STEP_INPUTS, expected_inputs, source)
        _check_ports("output", outputs, STEP_OUTPUTS, expected_outputs, source)


_KEY_OF = {
    "glimpse": "ram.sensor and ram.input.channels",
    "location": "the step contract",
    "state": "ram.state_size",
    "state_next": "ram.state_size",
    "location_next": "the step contract",
    "logits": "ram.labels",
}


def episode_model_message(source: str) -> str:
    """Why ram-infer refuses a full-episode model (``ram.graph`` = ``"episode"``)."""
    return (
        f"{source}: a full-episode model (image -> logits, locations), meant for any ONNX Runtime without "
        "ram-infer; ram-infer runs the step model it was made from"
    )


def _check_ports(kind: str, ports, names: tuple[str, ...], expected: dict[str, tuple[int, ...]], source: str) -> None:
    got_names = tuple(name for name, _ in ports)
    if got_names != names:
        raise ModelFormatError(
            f"{source}: graph {kind}s must be {list(names)} (the RAM step contract), got {list(got_names)}"
        )
    for name, shape in ports:
        want = expected[name]
        if len(shape) >= 1 and isinstance(shape[0], int):
            raise ModelFormatError(
                f"{source}: graph {kind} {name!r} has a fixed batch size {shape[0]}; the step contract needs a dynamic "
                "first axis (export with dynamic_axes or dynamic_shapes)"
            )
        # A symbolic size after the batch axis would let the metadata claim any size unchecked: every one must be fixed.
        if len(shape) != len(want) + 1 or tuple(shape)[1:] != want:
            raise ModelFormatError(
                f"{source}: graph {kind} {name!r} has shape {list(shape)}, but {_KEY_OF[name]} say(s) "
                f"[batch, {', '.join(map(str, want))}]"
            )


def _show(value: Any) -> str:
    """``repr(value)``, shortened: a message quotes what it refuses, but a file may hold megabytes of it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


class _Reader:
    """Typed access to the ``ram.*`` JSON values, raising ModelFormatError that names the file and key."""

    def __init__(self, props: Mapping[str, str], source: str):
        self.props = props
        self.source = source

    def _error(self, key: str, problem: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: {PREFIX}{key} {problem}")

    def raw(self, key: str) -> Any:
        if PREFIX + key not in self.props:
            if not any(k.startswith(PREFIX) for k in self.props):
                raise ModelFormatError(
                    f"{self.source}: not a RAM step model (no {PREFIX}* metadata; export it with training/export.py)"
                )
            raise self._error(key, "is missing from the model's metadata")
        text = self.props[PREFIX + key]
        if len(text) > MAX_VALUE_CHARS:
            raise self._error(key, f"is {len(text)} characters long, more than the limit of {MAX_VALUE_CHARS}")
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise self._error(key, f"is not valid JSON ({error.msg}): {text[:60]!r}") from None
        except RecursionError:
            raise self._error(key, f"is not valid JSON (nested too deeply): {text[:60]!r}") from None
        except ValueError as error:  # e.g. an integer literal longer than Python's int_max_str_digits
            raise self._error(key, f"is not valid JSON ({error}): {text[:60]!r}") from None

    def integer(self, key: str, value: Any = _MISSING) -> int:
        value = self.raw(key) if value is _MISSING else value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._error(key, f"must be an integer >= 1, got {_show(value)}")
        if key in LIMITS and value > LIMITS[key]:
            raise self._error(key, f"must be <= {LIMITS[key]}, got {_show(value)}")
        return value

    def positive_number(self, key: str, value: Any) -> float:
        low, high = VALUE_RANGES.get(key, (0.0, math.inf))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
            raise self._error(key, f"must be a number in ({low:g}, {high:g}], got {_show(value)}")
        return float(value)

    def choice(self, key: str, value: Any, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self._error(key, f"must be one of {list(choices)}, got {_show(value)}")
        return value

    def string(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise self._error(key, f"must be a string, got {_show(value)}")
        return value

    def mapping(self, key: str, required: tuple[str, ...]) -> dict[str, Any]:
        value = self.raw(key)
        if not isinstance(value, dict):
            raise self._error(key, f"must be a JSON object, got {_show(value)}")
        missing = [name for name in required if name not in value]
        if missing:
            raise self._error(key, f"lacks {', '.join(missing)}")
        return value

    def location(self, key: str) -> tuple[float, float]:
        value = self.raw(key)
        valid = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and -1 <= v <= 1 for v in value)
        )
        if not valid:
            raise self._error(key, f"must be [x, y] with both in [-1, 1], got {_show(value)}")
        return (float(value[0]), float(value[1]))

    def labels(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self._error(key, f"must be a non-empty list of strings, got {_show(value)}")
        if len(value) > LIMITS[key]:
            raise self._error(key, f"must have at most {LIMITS[key]} classes, got {len(value)}")
        return tuple(value)

    def optional_fraction(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise self._error(key, f"must be null or a number in [0, 1], got {_show(value)}")
        return float(value)
