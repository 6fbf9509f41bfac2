"""Full-episode ONNX: a whole mean-policy RAM episode in one standard-ONNX graph, for runtimes without our sensor.

Edge applications often have an ONNX Runtime binding (C, C#, Java, JavaScript, mobile) and nothing else. This module
turns a step model (training/export.py) into one graph that any ONNX Runtime runs as is:

- input ``image`` float32 [batch, C, H, W], in the model's input format (``ram.input``);
- outputs ``logits`` float32 [batch, classes] after the last glimpse, and ``locations`` float32 [batch, T, 2], the
  centre of each glimpse l_0 … l_{T-1} (the same as ``ram_infer``'s ``Prediction.locations``).

The T steps are unrolled; each one is the glimpse sensor ρ (below) followed by a copy of the step network's nodes,
which all read the step model's one set of weights, so the file is barely larger than the step model.

The sensor in standard operators follows csrc/sensor.h exactly. The image is padded once per episode with zeros
wide enough for the largest patch, so pixels outside the image read as 0 and no index needs clamping. For scale i
(block side b = sⁱ, patch side g·b): the centre pixel is computed in float64 like ``centre_pixel``; the patch is one
``Gather`` of flat indices on the padded image; blocks are summed in float64 and divided by b². The C++ sensor also
sums in float64, and a float64 sum of at most b² float32 pixels of [0, 1] images is exact in any order, so both give
the same float32 glimpse, bit for bit; the whole episode then matches the stepwise runtime to the last bit or close to
it (tests/test_episode.py).

    ram-train episode STEP.onnx OUT.onnx

writes the episode model and ``OUT.json``, its ``ram.*`` metadata as plain JSON for runtimes (onnxruntime-web) that
do not expose ONNX metadata.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ram_infer.engine import load_model, resolve_model
from ram_infer.metadata import EPISODE_GRAPH, GRAPH_KEY, PREFIX, STEP_OUTPUTS, ModelInfo, SensorSpec

from .data import fixed_split
from .export import DEFAULT_OPSET, PARITY_TOLERANCE  # one home: the step model's opset and parity bound

EPISODE_INPUT = "image"
EPISODE_OUTPUTS = ("logits", "locations")


class GraphBuilder:
    """Collects nodes and constants of a graph under construction; every op returns its (unique) output name.

    Public, with copy_step, for benchmarks/bench_engine.py, which chains the step network's copies without a sensor.
    """

    def __init__(self, reserved: Sequence[str] = ()) -> None:
        """``reserved``: names already taken (the step model's weights), which ``fresh`` must not hand out."""
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[str, onnx.TensorProto] = {}
        self._names: set[str] = set(reserved)

    def fresh(self, name: str) -> str:
        """``name``, or ``name_2``, ``name_3`` … if taken."""
        candidate, n = name, 1
        while candidate in self._names:
            n += 1
            candidate = f"{name}_{n}"
        self._names.add(candidate)
        return candidate

    def const(self, name: str, value: np.ndarray) -> str:
        """A constant tensor, made once per name: every use of ``name`` must pass the same value."""
        value = np.asarray(value)
        if name in self.constants:
            assert np.array_equal(numpy_helper.to_array(self.constants[name]), value), name
            return name
        self.constants[name] = numpy_helper.from_array(value, self.fresh(name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attributes) -> str:
        output = self.fresh(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output


def _centre_pixels(b: GraphBuilder, location: str, height: int, width: int, scope: str) -> tuple[str, str]:
    """``centre_pixel`` of csrc/sensor.h for both coordinates of the locations [N, 2], in float64: (cx, cy) as
    int64 [N, 1] each."""
    l = b.op("Cast", [location], f"{scope}/l64", to=TensorProto.DOUBLE)
    clamped = b.op("Clip", [l, b.const("minus_one", np.float64(-1)), b.const("one", np.float64(1))], f"{scope}/clamp")
    # ((l + 1) · 0.5) · size, in the C++ order, then floor: exact in float64 for float32 l, so every runtime agrees.
    sizes = b.const(f"size{width}x{height}", np.array([width, height], np.float64))
    scaled = b.op("Mul", [b.op("Mul", [b.op("Add", [clamped, b.const("one", np.float64(1))], f"{scope}/plus1"),
                                       b.const("half", np.float64(0.5))], f"{scope}/half"), sizes], f"{scope}/scaled")
    pixel = b.op("Cast", [b.op("Floor", [scaled], f"{scope}/floor")], f"{scope}/pixel", to=TensorProto.INT64)
    last = b.const(f"last{width}x{height}", np.array([width - 1, height - 1], np.int64))
    centre = b.op("Min", [pixel, last], f"{scope}/centre")  # [N, 2]
    return tuple(b.op("Slice", [centre, b.const(f"from{axis}", np.array([axis], np.int64)),
                                b.const(f"to{axis + 1}", np.array([axis + 1], np.int64)),
                                b.const("axis1", np.array([1], np.int64))], f"{scope}/{name}")
                 for axis, name in ((0, "cx"), (1, "cy")))


def _glimpse(b: GraphBuilder, image: _Image, location: str, spec: SensorSpec, scope: str) -> str:
    """ρ(x, l) [N, k, C, g, g] float32, from the padded flat float64 image (``_Image``) and the locations [N, 2]."""
    g, C = spec.glimpse_size, image.channels
    cx, cy = _centre_pixels(b, location, image.height, image.width, scope)  # [N, 1] each
    row_offsets = b.op("Mul", [cy, b.const(f"padded_width{image.padded_width}", np.int64(image.padded_width))],
                       f"{scope}/row_offset")  # [N, 1]
    scales = []
    for i in range(spec.num_scales):
        block = spec.scale_factor**i
        side, at = g * block, f"{scope}/scale{i}"
        # The patch starts side // 2 before the centre; in the padded image, `pad` further on.
        steps = np.arange(side, dtype=np.int64) + image.pad - side // 2  # [side]
        cols = b.op("Add", [cx, b.const(f"col_steps{side}", steps[None])], f"{at}/cols")  # [N, side]
        rows = b.op("Add", [row_offsets, b.const(f"row_steps{side}x{image.padded_width}",
                                                 (steps * image.padded_width)[None])], f"{at}/rows")  # [N, side]
        # flat index of padded pixel (n, c, row, col): n·C·Hp·Wp + c·Hp·Wp + row·Wp + col, as [N, C, side, side]
        plane = b.op("Add", [b.op("Unsqueeze", [rows, b.const("axis2", np.array([2], np.int64))], f"{at}/rows3"),
                             b.op("Unsqueeze", [cols, b.const("axis1", np.array([1], np.int64))], f"{at}/cols3")],
                     f"{at}/plane_index")  # [N, side, side]
        index = b.op("Add", [b.op("Unsqueeze", [plane, b.const("axis1", np.array([1], np.int64))], f"{at}/plane4"),
                             image.offsets], f"{at}/index")
        patch = b.op("Gather", [image.flat, index], f"{at}/patch", axis=0)  # [N, C, side, side]
        if block > 1:
            blocks = b.op("Reshape", [patch, b.const(f"blocks{C}x{g}x{block}",
                                                     np.array([-1, C, g, block, g, block], np.int64))], f"{at}/blocks")
            sums = b.op("ReduceSum", [blocks, b.const("block_axes", np.array([3, 5], np.int64))], f"{at}/sums",
                        keepdims=0)
            patch = b.op("Div", [sums, b.const(f"area{block}", np.float64(block * block))], f"{at}/mean")
        reduced = b.op("Cast", [patch], f"{at}/glimpse", to=TensorProto.FLOAT)  # [N, C, g, g]
        scales.append(b.op("Unsqueeze", [reduced, b.const("axis1", np.array([1], np.int64))], f"{at}/scale"))
    return b.op("Concat", scales, f"{scope}/rho", axis=1) if len(scales) > 1 else scales[0]


class _Image:
    """The episode's image, prepared once for every glimpse: in float64, padded with ``pad`` zeros on every side (so
    every patch lies inside and the pixels outside the image read as 0 with no clamping or masking), flattened to
    [N·C·Hp·Wp], and the flat offset of each (n, c) plane [N, C, 1, 1]."""

    def __init__(self, b: GraphBuilder, image: str, channels: int, height: int, width: int, largest_side: int):
        self.channels, self.height, self.width = channels, height, width
        # Rows of a patch of side S around centre row cy ∈ [0, H-1] span [cy - S//2, cy - S//2 + S): at most S//2
        # before the image and ceil(S/2) - 1 after it.
        self.pad = (largest_side + 1) // 2
        self.padded_width = width + 2 * self.pad
        as_double = b.op("Cast", [image], "image/f64", to=TensorProto.DOUBLE)
        p = self.pad
        padded = b.op("Pad", [as_double, b.const(f"pads{p}", np.array([0, 0, p, p, 0, 0, p, p], np.int64))],
                      "image/padded", mode="constant")
        self.flat = b.op("Reshape", [padded, b.const("flat", np.array([-1], np.int64))], "image/flat")
        batch = b.op("Gather", [b.op("Shape", [image], "image/shape"), b.const("index0", np.int64(0))], "image/batch")
        n = b.op("Range", [b.const("zero_i64", np.int64(0)), batch, b.const("one_i64", np.int64(1))], "image/n")
        plane = (height + 2 * p) * self.padded_width
        self.offsets = b.op(
            "Add",
            [b.op("Mul", [b.op("Reshape", [n, b.const("to_n111", np.array([-1, 1, 1, 1], np.int64))], "image/n4"),
                          b.const("image_size", np.int64(channels * plane))], "image/n_offsets"),
             b.const("channel_offsets", (np.arange(channels, dtype=np.int64) * plane).reshape(1, channels, 1, 1))],
            "image/offsets",
        )
        self.batch = batch


def _largest_side(spec: SensorSpec) -> int:
    return spec.glimpse_size * spec.scale_factor ** (spec.num_scales - 1)


def build_sensor_model(spec: SensorSpec, channels: int, height: int, width: int,
                       *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The glimpse sensor ρ alone in standard ONNX: ``image`` [batch, C, H, W], ``location`` [batch, 2] →
    ``glimpse`` [batch, k, C, g, g], the same floats as ``ram_infer.extract_glimpses`` (for a step loop in a runtime
    without our extension, and to test the episode's sensor on its own)."""
    b = GraphBuilder()
    image = _Image(b, EPISODE_INPUT, channels, height, width, _largest_side(spec))
    rho = _glimpse(b, image, "location", spec, "sensor")
    b.nodes.append(helper.make_node("Identity", [rho], ["glimpse"], name="sensor/output"))
    g = spec.glimpse_size
    graph = helper.make_graph(
        b.nodes,
        "ram_sensor",
        [helper.make_tensor_value_info(EPISODE_INPUT, TensorProto.FLOAT, ["batch", channels, height, width]),
         helper.make_tensor_value_info("location", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("glimpse", TensorProto.FLOAT, ["batch", spec.num_scales, channels, g, g])],
        initializer=list(b.constants.values()),
    )
    opsets = [helper.make_opsetid("", opset)]
    # The oldest IR version of that opset, as the step models have: make_model's default, the installed onnx's newest,
    # can be newer than an onnxruntime user has (onnx 1.23 writes IR 14, onnxruntime 1.30 reads up to 13).
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


def copy_step(b: GraphBuilder, step: onnx.GraphProto, feeds: dict[str, str], scope: str) -> dict[str, str]:
    """Appends the step network's nodes with their tensors renamed into ``scope``; weights keep their names.

    Returns the names of the step outputs in this copy.
    """
    weights = {tensor.name for tensor in step.initializer}
    renamed = dict(feeds)

    def name_of(tensor: str) -> str:
        if tensor == "" or tensor in weights:
            return tensor
        if tensor not in renamed:
            renamed[tensor] = b.fresh(f"{scope}/{tensor.lstrip('/')}")
        return renamed[tensor]

    for node in step.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = b.fresh(f"{scope}/{node.name.lstrip('/') or node.op_type}")
        copy.input[:] = [name_of(t) for t in node.input]
        copy.output[:] = [name_of(t) for t in node.output]
        b.nodes.append(copy)
    return {output: renamed[output] for output in STEP_OUTPUTS}


def build_episode_model(step_model: onnx.ModelProto, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The full-episode model of a step model (see the module docstring).

    Args:
        step_model: a step model with valid ``ram.*`` metadata (training/export.py).
        opset: ONNX opset of the result (≥ 18, the opset of ReduceSum with axes as an input).

    Returns:
        The episode model, checked by ``onnx.checker`` and strict shape inference, with the step model's ``ram.*``
        metadata plus ``ram.graph = "episode"``.

    Raises:
        ram_infer.ModelFormatError: the step model's metadata is missing or inconsistent.
    """
    props = metadata_map(step_model)
    info = ModelInfo.from_metadata_props(props, "step model")
    step = step_model.graph
    info.check_graph(_ports(step.input), _ports(step.output), "step model")
    shape = info.input
    T, S = info.num_glimpses, info.state_size
    b = GraphBuilder(reserved=[t.name for t in step.initializer])
    image = _Image(b, EPISODE_INPUT, shape.channels, shape.height, shape.width, _largest_side(info.sensor))

    batch_1d = b.op("Unsqueeze", [image.batch, b.const("axis0", np.array([0], np.int64))], "episode/batch")
    state = b.op("ConstantOfShape", [b.op("Concat", [batch_1d, b.const("state_size", np.array([S], np.int64))],
                                          "episode/state_shape", axis=0)],
                 "episode/state0", value=numpy_helper.from_array(np.zeros(1, np.float32)))
    location = b.op("Expand", [b.const("initial_location", np.array([info.initial_location], np.float32)),
                               b.op("Concat", [batch_1d, b.const("two", np.array([2], np.int64))],
                                    "episode/location_shape", axis=0)], "episode/l0")
    visited, logits = [], ""
    for t in range(T):
        visited.append(b.op("Unsqueeze", [location, b.const("axis1", np.array([1], np.int64))], f"step{t}/visited"))
        rho = _glimpse(b, image, location, info.sensor, f"step{t}/sensor")
        outputs = copy_step(b, step, {"glimpse": rho, "location": location, "state": state}, f"step{t}")
        state, location, logits = outputs["state_next"], outputs["location_next"], outputs["logits"]
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="episode/logits"))
    if T > 1:
        b.nodes.append(helper.make_node("Concat", visited, ["locations"], name="episode/locations", axis=1))
    else:
        b.nodes.append(helper.make_node("Identity", visited, ["locations"], name="episode/locations"))

    graph = helper.make_graph(
        b.nodes,
        "ram_episode",
        [helper.make_tensor_value_info(EPISODE_INPUT, TensorProto.FLOAT,
                                       ["batch", shape.channels, shape.height, shape.width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", info.num_classes]),
         helper.make_tensor_value_info("locations", TensorProto.FLOAT, ["batch", T, 2])],
        initializer=[*step.initializer, *b.constants.values()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="ram-infer training.episode")
    model.ir_version = step_model.ir_version
    model.doc_string = (
        f"RAM full episode (Mnih et al. 2014): image [batch, {shape.channels}, {shape.height}, {shape.width}] -> "
        f"logits [batch, {info.num_classes}] after {T} glimpses, locations [batch, {T}, 2]; the glimpse sensor in "
        "standard ONNX operators, the mean of the location policy followed."
    )
    for key, value in props.items():
        if key.startswith(PREFIX):
            model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=GRAPH_KEY, value=json.dumps(EPISODE_GRAPH))
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _ports(values) -> list[tuple[str, list]]:
    """(name, shape) of graph inputs or outputs, a symbolic dimension as its name (as ONNX Runtime reports it)."""
    return [
        (v.name, [d.dim_param if d.HasField("dim_param") or not d.HasField("dim_value") else d.dim_value
                  for d in v.type.tensor_type.shape.dim])
        for v in values
    ]


def metadata_map(model: onnx.ModelProto) -> dict[str, str]:
    """A model's ``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def sidecar(model: onnx.ModelProto) -> dict:
    """The ``ram.*`` metadata as one JSON object (keys without the prefix), for runtimes that cannot read it."""
    return {p.key[len(PREFIX):]: json.loads(p.value) for p in model.metadata_props if p.key.startswith(PREFIX)}


def episode_parity(step_path: str | os.PathLike, episode: onnx.ModelProto, images: np.ndarray) -> dict:
    """Runs ``images`` through the stepwise runtime (``ram_infer``) and through the episode model in ONNX Runtime.

    Returns:
        ``{"images", "labels_differ", "max_abs_diff": {"logits", "locations"}}``.
    """
    stepwise = load_model(step_path, threads=1).predict(images)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(episode.SerializeToString(), options, providers=["CPUExecutionProvider"])
    logits, locations = session.run(list(EPISODE_OUTPUTS), {EPISODE_INPUT: images})
    return {
        "images": len(images),
        "labels_differ": int(np.sum(np.argmax(logits, axis=1) != stepwise.labels)),
        "max_abs_diff": {
            "logits": float(np.max(np.abs(logits - stepwise.logits), initial=0.0)),
            "locations": float(np.max(np.abs(locations - stepwise.locations), initial=0.0)),
        },
    }


def export_episode(
    step_path: str | os.PathLike, episode_path: str | os.PathLike, *, test_images: np.ndarray | None = None
) -> Path:
    """Writes the full-episode model of the step model at ``step_path`` and its ``.json`` sidecar.

    Args:
        step_path: the step model.
        episode_path: the ``.onnx`` file to write.
        test_images (ndarray[N, C, H, W], float32): if given, the model's fixed test set: parity with the stepwise
            runtime is measured on it and stored as ``ram.episode_parity``.

    Returns:
        ``episode_path``.

    Raises:
        ValueError: parity failed: a label differs, or logits or locations differ by more than ``PARITY_TOLERANCE``.
    """
    model = build_episode_model(onnx.load(str(step_path)))
    if test_images is not None:
        parity = {**episode_parity(step_path, model, test_images), "split": "test"}
        if parity["labels_differ"] or max(parity["max_abs_diff"].values()) > PARITY_TOLERANCE:
            raise ValueError(f"{episode_path}: the episode model disagrees with the stepwise runtime: {parity}")
        model.metadata_props.add(key=PREFIX + "episode_parity", value=json.dumps(parity, sort_keys=True))
    episode_path = Path(episode_path)
    episode_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(episode_path))
    episode_path.with_suffix(".json").write_text(json.dumps(sidecar(model), indent=1, sort_keys=True) + "\n")
    return episode_path


def command_episode(args: argparse.Namespace) -> int:
    """``ram-train episode STEP OUT.onnx [--test-set DATA]``: prints what it wrote and its parity as one JSON line."""
    step_path = resolve_model(args.step_model)
    test_images = None
    if args.test_set is not None:
        info = ModelInfo.from_metadata_props(metadata_map(onnx.load(str(step_path))), str(step_path))
        test_images, _ = fixed_split(info.dataset, "test", root=args.test_set)
    path = export_episode(step_path, args.output, test_images=test_images)
    parity = sidecar(onnx.load(str(path))).get("episode_parity")
    print(json.dumps({"output": str(path), "bytes": path.stat().st_size, "parity": parity}))
    return 0
