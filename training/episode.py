"""Full-episode ONNX: a whole mean-policy RAM episode in one standard-ONNX graph, for runtimes without our sensor.

Edge applications often have an ONNX Runtime binding (C, C#, Java, JavaScript, mobile) and nothing else. This module
turns a step model (training/export.py) into one graph that any ONNX Runtime runs as is:

- input ``image`` float32 [batch, C, H, W], in the model's input format (``ram.input``);
- outputs ``logits`` float32 [batch, classes] after the last glimpse, and ``locations`` float32 [batch, T, 2], the
  centre of each glimpse l_0 … l_{T-1} (the same as ``ram_infer``'s ``Prediction.locations``).

The T steps are unrolled; each one is the glimpse sensor ρ (below) followed by a copy of the step network's nodes,
which all read the step model's one set of weights, so the file is barely larger than the step model.

The sensor in standard operators follows csrc/sensor.h exactly. For scale i (block side b = sⁱ, patch side g·b):
the centre pixel is computed in float64 like ``centre_pixel``; the patch's row and column indices are clamped into
the image for a ``Gather`` on the flattened image and the pixels outside it are zeroed by a mask (they count as 0);
blocks are summed in float64 and divided by b². The C++ sensor also sums in float64, and a float64 sum of at most
b² float32 pixels of [0, 1] images is exact in any order, so both give the same float32 glimpse, bit for bit; the
whole episode then matches the stepwise runtime to the last bit or close to it (tests/test_episode.py).

    python -m training.episode STEP.onnx OUT.onnx   (or: ram-train episode STEP.onnx OUT.onnx)

writes the episode model and ``OUT.json``, its ``ram.*`` metadata as plain JSON for runtimes (onnxruntime-web) that
do not expose ONNX metadata.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ram_infer.metadata import EPISODE_GRAPH, GRAPH_KEY, PREFIX, STEP_OUTPUTS, ModelInfo, SensorSpec

EPISODE_INPUT = "image"
EPISODE_OUTPUTS = ("logits", "locations")
DEFAULT_OPSET = 18
PARITY_TOLERANCE = 1e-5  # the issue's bound on logits and locations; labels must be identical


class _Builder:
    """Collects nodes and constants of a graph under construction; every op returns its (unique) output name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[str, onnx.TensorProto] = {}
        self._names: set[str] = set()

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


def _centre_pixel(b: _Builder, coordinate: str, size: int, scope: str) -> str:
    """[N] int64: ``centre_pixel`` of csrc/sensor.h for one coordinate of the locations, computed in float64."""
    l = b.op("Cast", [coordinate], f"{scope}/l64", to=TensorProto.DOUBLE)
    clamped = b.op("Clip", [l, b.const("minus_one", np.float64(-1)), b.const("one", np.float64(1))], f"{scope}/clamp")
    # ((l + 1) · 0.5) · size, in the C++ order, then floor: exact in float64 for float32 l, so every runtime agrees.
    scaled = b.op("Mul", [b.op("Mul", [b.op("Add", [clamped, b.const("one", np.float64(1))], f"{scope}/plus1"),
                                       b.const("half", np.float64(0.5))], f"{scope}/half"),
                          b.const(f"size{size}", np.float64(size))], f"{scope}/scaled")
    pixel = b.op("Cast", [b.op("Floor", [scaled], f"{scope}/floor")], f"{scope}/pixel", to=TensorProto.INT64)
    return b.op("Min", [pixel, b.const(f"last{size}", np.int64(size - 1))], f"{scope}/centre")


def _patch_axis(b: _Builder, centre: str, side: int, size: int, scope: str) -> tuple[str, str]:
    """Along one axis of ``size`` pixels: the patch's ``side`` pixel indices clamped into the image [N, side], and
    whether each index is inside the image [N, side] (float64 1 or 0)."""
    start = b.op("Sub", [centre, b.const(f"half_side{side}", np.int64(side // 2))], f"{scope}/start")
    offsets = b.op("Add", [b.op("Unsqueeze", [start, b.const("axis1", np.array([1], np.int64))], f"{scope}/start2d"),
                           b.const(f"arange{side}", np.arange(side, dtype=np.int64)[None])], f"{scope}/indices")
    clamped = b.op("Max", [b.op("Min", [offsets, b.const(f"last{size}", np.int64(size - 1))], f"{scope}/below"),
                           b.const("zero_i64", np.int64(0))], f"{scope}/clamped")
    inside = b.op("Equal", [offsets, clamped], f"{scope}/inside")
    return clamped, b.op("Cast", [inside], f"{scope}/mask", to=TensorProto.DOUBLE)


def _glimpse(b: _Builder, image: "_Image", location: str, spec: SensorSpec, scope: str) -> str:
    """ρ(x, l) [N, k, C, g, g] float32, from the flattened float64 image and the locations [N, 2]."""
    g, C, H, W = spec.glimpse_size, image.channels, image.height, image.width
    x = b.op("Gather", [location, b.const("index0", np.int64(0))], f"{scope}/x", axis=1)  # [N]
    y = b.op("Gather", [location, b.const("index1", np.int64(1))], f"{scope}/y", axis=1)  # [N]
    cx, cy = _centre_pixel(b, x, W, f"{scope}/cx"), _centre_pixel(b, y, H, f"{scope}/cy")
    scales = []
    for i in range(spec.num_scales):
        block = spec.scale_factor**i
        side, at = g * block, f"{scope}/scale{i}"
        cols, col_mask = _patch_axis(b, cx, side, W, f"{at}/cols")  # [N, side] each
        rows, row_mask = _patch_axis(b, cy, side, H, f"{at}/rows")
        # flat index of pixel (n, c, row, col): n·CHW + c·HW + row·W + col, as [N, C, side, side]
        row_offsets = b.op("Mul", [rows, b.const(f"width{W}", np.int64(W))], f"{at}/row_offsets")
        plane = b.op("Add", [b.op("Unsqueeze", [row_offsets, b.const("axis2", np.array([2], np.int64))], f"{at}/r3"),
                             b.op("Unsqueeze", [cols, b.const("axis1", np.array([1], np.int64))], f"{at}/c3")],
                     f"{at}/plane_index")  # [N, side, side]
        index = b.op("Add", [b.op("Unsqueeze", [plane, b.const("axis1", np.array([1], np.int64))], f"{at}/p4"),
                             image.offsets], f"{at}/index")  # [N, C, side, side]
        pixels = b.op("Gather", [image.flat, index], f"{at}/pixels", axis=0)
        mask = b.op("Mul", [b.op("Unsqueeze", [row_mask, b.const("axis2", np.array([2], np.int64))], f"{at}/rm"),
                            b.op("Unsqueeze", [col_mask, b.const("axis1", np.array([1], np.int64))], f"{at}/cm")],
                    f"{at}/mask")  # [N, side, side]
        patch = b.op("Mul", [pixels, b.op("Unsqueeze", [mask, b.const("axis1", np.array([1], np.int64))],
                                           f"{at}/m4")], f"{at}/patch")  # outside pixels count as 0
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
    """The episode's image, prepared once for every glimpse: flattened to float64 [N·C·H·W], and the flat offset of
    each (n, c) plane [N, C, 1, 1]."""

    def __init__(self, b: _Builder, image: str, channels: int, height: int, width: int):
        self.channels, self.height, self.width = channels, height, width
        as_double = b.op("Cast", [image], "image/f64", to=TensorProto.DOUBLE)
        self.flat = b.op("Reshape", [as_double, b.const("flat", np.array([-1], np.int64))], "image/flat")
        batch = b.op("Gather", [b.op("Shape", [image], "image/shape"), b.const("index0", np.int64(0))], "image/batch")
        n = b.op("Range", [b.const("zero_i64", np.int64(0)), batch, b.const("one_i64", np.int64(1))], "image/n")
        plane = height * width
        self.offsets = b.op(
            "Add",
            [b.op("Mul", [b.op("Reshape", [n, b.const("to_n111", np.array([-1, 1, 1, 1], np.int64))], "image/n4"),
                          b.const("image_size", np.int64(channels * plane))], "image/n_offsets"),
             b.const("channel_offsets", (np.arange(channels, dtype=np.int64) * plane).reshape(1, channels, 1, 1))],
            "image/offsets",
        )
        self.batch = batch


def build_sensor_model(spec: SensorSpec, channels: int, height: int, width: int,
                       *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The glimpse sensor ρ alone in standard ONNX: ``image`` [batch, C, H, W], ``location`` [batch, 2] →
    ``glimpse`` [batch, k, C, g, g], the same floats as ``ram_infer.extract_glimpses`` (for a step loop in a runtime
    without our extension, and to test the episode's sensor on its own)."""
    b = _Builder()
    image = _Image(b, EPISODE_INPUT, channels, height, width)
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _copy_step(b: _Builder, step: onnx.GraphProto, feeds: dict[str, str], scope: str) -> dict[str, str]:
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
    b = _Builder()
    b._names.update(t.name for t in step.initializer)
    image = _Image(b, EPISODE_INPUT, shape.channels, shape.height, shape.width)

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
        outputs = _copy_step(b, step, {"glimpse": rho, "location": location, "state": state}, f"step{t}")
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
    import onnxruntime as ort

    from ram_infer.engine import load_model

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step_model", help="a step model (.onnx) or a bundled model's name")
    parser.add_argument("output", help="the episode model to write (.onnx); its metadata also goes to OUT.json")
    parser.add_argument("--test-set", metavar="DATA", default=None,
                        help="MNIST directory: measure parity with the stepwise runtime on the model's full test set")


def command_episode(args: argparse.Namespace) -> int:
    from ram_infer.engine import resolve_model
    from training.data import fixed_split

    step_path = resolve_model(args.step_model)
    test_images = None
    if args.test_set is not None:
        info = ModelInfo.from_metadata_props(metadata_map(onnx.load(str(step_path))), str(step_path))
        test_images, _ = fixed_split(info.dataset, "test", root=args.test_set)
    path = export_episode(step_path, args.output, test_images=test_images)
    parity = sidecar(onnx.load(str(path))).get("episode_parity")
    print(json.dumps({"output": str(path), "bytes": path.stat().st_size, "parity": parity}))
    return 0


def add_command(commands) -> None:
    """Adds the ``episode`` sub-command to ram-train's parser."""
    parser = commands.add_parser("episode", help="export a step model as one full-episode ONNX graph (edge runtimes)",
                                 description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(handler=command_episode)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.episode STEP.onnx OUT.onnx [--test-set DATA]``."""
    parser = argparse.ArgumentParser(prog="python -m training.episode", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return command_episode(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
