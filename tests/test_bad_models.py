"""Bad model files: every corrupt, foreign, inconsistent or hostile model fails with one clear error, never a crash.

tests/test_metadata.py checks each ``ram.*`` key and the port check on their own; here the files are real ONNX models
(the tiny exported model, edited with ``onnx``), loaded through ``load_model`` and the CLI. ``load_model`` raises
``ModelFormatError`` naming the file; the CLI prints that one line and exits 2.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ram_infer import ModelFormatError, load_model
from ram_infer.cli import main

onnx = pytest.importorskip("onnx")
helper, numpy_helper = onnx.helper, onnx.numpy_helper

Edit = Callable[[object], None]


def _set(key: str, value: str) -> Edit:
    def edit(proto) -> None:
        for prop in proto.metadata_props:
            if prop.key == key:
                prop.value = value
                return
        proto.metadata_props.add(key=key, value=value)

    return edit


def _dim(port: str, axis: int, value: int | str) -> Edit:
    """Sets one dimension of a graph input or output: an int fixes it, a str makes it symbolic."""

    def edit(proto) -> None:
        ports = {p.name: p for p in [*proto.graph.input, *proto.graph.output]}
        dim = ports[port].type.tensor_type.shape.dim[axis]
        if isinstance(value, int):
            dim.dim_value = value
        else:
            dim.dim_param = value

    return edit


def _both(*edits: Edit) -> Edit:
    def edit(proto) -> None:
        for one in edits:
            one(proto)

    return edit


def _input_type(port: str, elem_type: int) -> Edit:
    def edit(proto) -> None:
        next(p for p in proto.graph.input if p.name == port).type.tensor_type.elem_type = elem_type

    return edit


def _rename_output(old: str, new: str) -> Edit:
    def edit(proto) -> None:
        for node in proto.graph.node:
            node.output[:] = [new if name == old else name for name in node.output]
            node.input[:] = [new if name == old else name for name in node.input]
        next(p for p in proto.graph.output if p.name == old).name = new

    return edit


def _extra_input(proto) -> None:
    proto.graph.input.append(helper.make_tensor_value_info("temperature", onnx.TensorProto.FLOAT, ["batch", 1]))


def _unknown_op(proto) -> None:
    proto.graph.node.append(helper.make_node("Glimpse", ["location"], ["unused"], domain="com.example.ram"))
    proto.opset_import.append(helper.make_opsetid("com.example.ram", 1))


def _future_opset(proto) -> None:
    next(o for o in proto.opset_import if o.domain in ("", "ai.onnx")).version = 99


def _external_weights(proto) -> None:
    """Moves the weights to an external file that is not there."""
    initializer = proto.graph.initializer[0]
    initializer.data_location = onnx.TensorProto.EXTERNAL
    initializer.ClearField("raw_data")
    initializer.external_data.add(key="location", value="weights-that-are-not-here.bin")


def _logits_wider_than_declared(proto) -> None:
    """Widens the logits to a data-dependent 11 columns, which shape inference cannot see: the lie shows only when it
    runs. Built from operators the step-model format allows (ram_infer/model_file.py)."""
    for node in proto.graph.node:
        node.output[:] = ["logits_raw" if name == "logits" else name for name in node.output]

    def constant(name: str, value) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value)))

    proto.graph.node.extend(
        [
            helper.make_node("Concat", ["logits_raw", "logits_raw"], ["wide"], axis=1),  # (batch, 20)
            helper.make_node("ReduceSum", ["location"], ["total"], keepdims=0),  # a number known only when it runs
            constant("zero", np.float32(0)),
            constant("eleven", np.float32(11)),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "eleven"], ["end_float"]),
            helper.make_node("Cast", ["end_float"], ["end_scalar"], to=onnx.TensorProto.INT64),
            constant("one_axis", np.array([1], np.int64)),
            helper.make_node("Reshape", ["end_scalar", "one_axis"], ["end"]),
            constant("start", np.array([0], np.int64)),
            helper.make_node("Slice", ["wide", "start", "end", "one_axis"], ["logits"]),  # (batch, 11)
        ]
    )


def _node(op: str, **attributes) -> Edit:
    """Adds a node of operator ``op`` reading the location, its output unused."""

    def edit(proto) -> None:
        proto.graph.node.append(helper.make_node(op, ["location"], [f"unused_{op}"], **attributes))

    return edit


def _loop(proto) -> None:
    """The hang of the security review: a Loop of 10^15 iterations (its body only counts)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["condition_in"], ["condition_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            helper.make_tensor_value_info("condition_in", onnx.TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("condition_out", onnx.TensorProto.BOOL, [])],
    )
    proto.graph.node.extend(
        [
            helper.make_node("Constant", [], ["trips"], value=numpy_helper.from_array(np.array(10**15, np.int64))),
            helper.make_node("Constant", [], ["forever"], value=numpy_helper.from_array(np.array(True))),
            helper.make_node("Loop", ["trips", "forever"], [], body=body),
        ]
    )


def _function(proto) -> None:
    proto.functions.append(
        helper.make_function("com.example", "Twice", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
                             [helper.make_opsetid("", 18)])
    )


def _external_constant(proto) -> None:
    """A Constant node whose tensor points at a system file (read as logits by ONNX Runtime before 1.24)."""
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "secret")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/hostname")
    proto.graph.node.append(helper.make_node("Constant", [], ["secret"], value=tensor))


def _external_inside(proto) -> None:
    """External data in the model's own folder: refused too, a step model embeds its weights."""
    _external_weights(proto)
    proto.graph.initializer[0].external_data[0].value = "weights.bin"


EDITS = {
    # The graph's ports against the step contract.
    "fixed-batch": (_dim("glimpse", 0, 1), r"graph input 'glimpse' has a fixed batch size 1; .* dynamic first axis"),
    "symbolic-state": (
        _both(_dim("state", 1, "S"), _dim("state_next", 1, "S")),
        r"graph input 'state' has shape \['batch', 'S'\], but ram\.state_size say\(s\) \[batch, 32\]",
    ),
    "double-input": (_input_type("location", onnx.TensorProto.DOUBLE), r"not a readable ONNX model|must be float32"),
    "renamed-output": (_rename_output("logits", "scores"), r"graph outputs must be .* got .*'scores'\]"),
    "extra-input": (_extra_input, r"graph inputs must be \['glimpse', 'location', 'state'\]"),
    # Files ONNX Runtime cannot load.
    "unknown-op": (_unknown_op, r"imports the operator domain 'com\.example\.ram'; a step model uses only the"),
    "future-opset": (_future_opset, r"not a readable ONNX model \(.+\)"),
    # Refused before ONNX Runtime sees them (ram_infer/model_file.py): hangs, file reads, non-determinism.
    "missing-external-weights": (_external_weights, r"tensor '.+' keeps its data outside the model file"),
    "external-weights-inside-its-folder": (_external_inside, r"tensor '.+' keeps its data outside the model file"),
    "external-constant": (_external_constant, r"tensor 'Constant\.value' keeps its data outside the model file"),
    "loop": (_loop, r"operator 'Loop' is not one a step model uses \(control flow"),
    "if": (_node("If", then_branch=helper.make_graph([], "t", [], []), else_branch=helper.make_graph([], "e", [], [])),
           r"operator 'If' is not one a step model uses"),
    "random": (_node("RandomNormalLike"), r"operator 'RandomNormalLike' is not one a step model uses"),
    "size-from-data": (_node("ConstantOfShape"), r"operator 'ConstantOfShape' is not one a step model uses"),
    "custom-domain-node": (_node("Relu", domain="com.microsoft"), r"operator 'Relu' of domain 'com\.microsoft'"),
    "subgraph-attribute": (_node("Relu", body=helper.make_graph([], "g", [], [])), r"subgraph attribute 'body'"),
    "local-function": (_function, r"defines model-local functions"),
    "dims-beyond-the-file": (
        lambda proto: proto.graph.initializer[0].dims.__setitem__(0, 2**62),
        r"tensor '.+' declares \d+ elements, more than the file holds",
    ),
    # ONNX Runtime accepted this and then crashed the process on the first run (found by fuzz/fuzz_models.py).
    "empty-variadic-input": (
        lambda proto: proto.graph.node.append(helper.make_node("Sum", ["location", ""], ["unused_sum"])),
        r"operator 'Sum' has an empty input name, but no optional inputs",
    ),
    "no-graph": (lambda proto: proto.ClearField("graph"), r"not a readable ONNX model \(no graph\)"),
    # Hostile metadata: absurd sizes, deep nesting, giant numbers.
    "huge-num-glimpses": (_set("ram.num_glimpses", "100000000"), r"ram\.num_glimpses must be <= 1000, got 100000000"),
    "huge-input": (
        _set("ram.input", json.dumps({"height": 10**6, "width": 28, "channels": 1, "value_scale": 255,
                                      "background": "dark", "placement": "mnist"})),
        r"ram\.input\.height must be <= 8192, got 1000000",
    ),
    "input-too-large-as-a-product": (
        _set("ram.input", json.dumps({"height": 8192, "width": 8192, "channels": 4, "value_scale": 255,
                                      "background": "dark", "placement": "mnist"})),
        r"asks for 268435456 input values \(height × width × channels\), above 16777216",
    ),
    "logits-too-many-as-a-product": (
        _both(_set("ram.num_glimpses", "1000"), _set("ram.labels", json.dumps([str(i) for i in range(2000)]))),
        r"asks for 2000000 logits per episode \(num_glimpses × classes\), above 1048576",
    ),
    "huge-value": (_set("ram.training", json.dumps({"notes": "x" * (1 << 21)})),
                   r"ram\.training is 2097165 characters long, more than the limit of 1048576"),
    "too-many-labels": (_set("ram.labels", json.dumps([str(i) for i in range(20_000)])),
                        r"ram\.labels must have at most 10000 classes, got 20000"),
    "patch-overflow": (
        _set("ram.sensor", json.dumps({"glimpse_size": 4, "num_scales": 2, "scale_factor": 2**40})),
        r"ram\.sensor has a largest patch side .* above 16777216",
    ),
    "deep-json": (_set("ram.training", "[" * 100_000 + "]" * 100_000), r"ram\.training is not valid JSON \(nested"),
    "giant-integer": (_set("ram.num_glimpses", "9" * 10_000), r"ram\.num_glimpses is not valid JSON \(.*limit"),
    "nan-location": (_set("ram.initial_location", "[NaN, 0]"), r"ram\.initial_location must be \[x, y\]"),
    "long-value-quoted-short": (
        _set("ram.dataset", json.dumps(list(range(100_000)))),
        r"ram\.dataset must be a string, got \[0, 1, 2, .{0,70}\.\.\.$",
    ),
}


@pytest.fixture(scope="module")
def bad_models(tiny_rnn_path, tmp_path_factory) -> dict[str, Path]:
    """Each EDITS entry applied to the tiny model, saved as ``<name>.onnx``."""
    directory = tmp_path_factory.mktemp("bad_models")
    source = onnx.load(str(tiny_rnn_path))
    paths = {}
    for name, (edit, _) in EDITS.items():
        proto = copy.deepcopy(source)
        edit(proto)
        paths[name] = directory / f"{name}.onnx"
        onnx.save(proto, str(paths[name]))
    return paths


@pytest.mark.parametrize(("name", "message"), [(name, edit[1]) for name, edit in EDITS.items()], ids=list(EDITS))
def test_load_model_refuses_bad_model(bad_models, name, message):
    with pytest.raises(ModelFormatError, match=rf"^{re.escape(str(bad_models[name]))}: (.*)?({message})"):
        load_model(bad_models[name], threads=1)


@pytest.mark.parametrize("name", list(EDITS))
def test_cli_reports_bad_model_in_one_line(bad_models, digit_files, capsys, name):
    status = main([str(digit_files[0]), "--model", str(bad_models[name])])
    out, err = capsys.readouterr()
    assert (status, out, err.count("\n")) == (2, "", 1) and err.startswith(f"{bad_models[name]}: ")


def test_model_format_error_is_a_value_error():
    assert issubclass(ModelFormatError, ValueError)


@pytest.fixture(scope="module")
def lying_model(tiny_rnn_path, tmp_path_factory) -> Path:
    proto = onnx.load(str(tiny_rnn_path))
    _logits_wider_than_declared(proto)
    path = tmp_path_factory.mktemp("lying") / "lying.onnx"
    onnx.save(proto, str(path))
    return path


def test_a_model_that_fails_to_run_is_refused_at_load(lying_model):
    """Its ports and metadata agree; the step it runs at load (timed at batches 1 and 2) is what shows the lie."""
    with pytest.raises(ModelFormatError, match=r"lying\.onnx: the step network failed to run \("):
        load_model(lying_model, threads=1)


def test_cli_reports_a_model_that_fails_to_run_in_one_line(lying_model, digit_files, capsys):
    status = main([str(digit_files[0]), "--model", str(lying_model)])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"{lying_model}: the step network failed to run (")


def test_missing_model_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx: no such model file"):
        load_model(tmp_path / "missing.onnx")


def test_directory_as_model_path_raises_model_format_error(tmp_path):
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(ModelFormatError, match=r"folder\.onnx: is a directory, not a model file"):
        load_model(tmp_path / "folder.onnx")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mnist", r"metadata 'ram\.(dataset|input)' is not UTF-8 text"),  # the values that hold "mnist"
        ("location_next", r"a graph input, output or initializer name is not UTF-8 text"),  # wherever it is used
        ("identity_out", r"a name in operator 'Identity' is not UTF-8 text"),  # quoted in onnxruntime's errors
    ],
)
def test_text_that_is_not_utf8_is_refused(tiny_rnn_path, tmp_path, text, message):
    """ONNX strings are UTF-8; onnxruntime's binding raised UnicodeDecodeError on others (found by fuzz_models.py)."""
    proto = onnx.load(str(tiny_rnn_path))
    proto.graph.node.append(helper.make_node("Identity", ["location"], ["identity_out"]))
    data = proto.SerializeToString()
    quoted = json.dumps(text).encode() if text == "mnist" else text.encode()
    assert quoted in data
    path = tmp_path / "not_utf8.onnx"
    path.write_bytes(data.replace(quoted, b"\xff" * len(quoted)))  # same length: the protobuf stays well formed
    with pytest.raises(ModelFormatError, match=rf"not_utf8\.onnx: {message}"):
        load_model(path, threads=1)
