"""ModelInfo ⇄ metadata_props: round trip, and every missing or inconsistent key refused with ModelFormatError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ram_infer import ModelFormatError, load_model
from ram_infer.metadata import KEYS, PREFIX, InputFormat, ModelInfo, SensorSpec

INFO = ModelInfo(
    sensor=SensorSpec(glimpse_size=8, num_scales=3, scale_factor=2),
    num_glimpses=6,
    initial_location=(0.0, -0.5),
    state_size=256,
    input=InputFormat(height=60, width=60, channels=1, value_scale=255.0, background="dark", placement="canvas"),
    labels=tuple("0123456789"),
    dataset="translated60",
    test_error=0.0123,
    training={"command": "ram-train translated60", "steps": 100},
)


def test_metadata_round_trip():
    assert ModelInfo.from_metadata_props(INFO.to_metadata_props(), "m.onnx") == INFO


def test_metadata_values_are_json_under_ram_keys():
    props = INFO.to_metadata_props()
    assert sorted(props) == sorted(PREFIX + key for key in KEYS)
    assert json.loads(props["ram.sensor"]) == {"glimpse_size": 8, "num_scales": 3, "scale_factor": 2}


def test_null_test_error_round_trips():
    info = ModelInfo.from_metadata_props({**INFO.to_metadata_props(), "ram.test_error": "null"}, "m.onnx")
    assert info.test_error is None


def test_other_metadata_keys_are_ignored():
    props = {**INFO.to_metadata_props(), "producer": "someone", "ram_other": "x"}
    assert ModelInfo.from_metadata_props(props, "m.onnx") == INFO


@pytest.mark.parametrize("key", KEYS)
def test_missing_key_is_refused(key):
    props = INFO.to_metadata_props()
    del props[PREFIX + key]
    with pytest.raises(ModelFormatError, match=rf"m\.onnx: ram\.{key} is missing"):
        ModelInfo.from_metadata_props(props, "m.onnx")


def test_no_ram_metadata_is_not_a_ram_model():
    with pytest.raises(ModelFormatError, match=r"m\.onnx: not a RAM step model"):
        ModelInfo.from_metadata_props({"producer": "x"}, "m.onnx")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format_version", "3", r"ram\.format_version is 3, newer than this ram-infer reads \(2\)"),
        ("format_version", '"1"', r"ram\.format_version must be an integer"),
        ("sensor", "{not json", r"ram\.sensor is not valid JSON"),
        ("sensor", '{"glimpse_size": 8, "num_scales": 1}', r"ram\.sensor lacks scale_factor"),
        ("sensor", '{"glimpse_size": 0, "num_scales": 1, "scale_factor": 2}', r"ram\.sensor\.glimpse_size must be"),
        ("sensor", "[8, 1, 2]", r"ram\.sensor must be a JSON object"),
        ("num_glimpses", "0", r"ram\.num_glimpses must be an integer >= 1"),
        ("num_glimpses", "true", r"ram\.num_glimpses must be an integer >= 1"),
        ("initial_location", "[0, 2]", r"ram\.initial_location must be \[x, y\]"),
        ("initial_location", "[0]", r"ram\.initial_location must be \[x, y\]"),
        ("state_size", "-1", r"ram\.state_size must be an integer"),
        ("input", '{"height": 28}', r"ram\.input lacks width, channels"),
        ("labels", "[]", r"ram\.labels must be a non-empty list of strings"),
        ("labels", "[0, 1]", r"ram\.labels must be a non-empty list of strings"),
        ("dataset", "3", r"ram\.dataset must be a string"),
        ("test_error", "1.5", r"ram\.test_error must be null or a number in \[0, 1\]"),
        ("training", '"fast"', r"ram\.training must be a JSON object"),
    ],
)
def test_bad_value_is_refused(key, value, message):
    props = {**INFO.to_metadata_props(), PREFIX + key: value}
    with pytest.raises(ModelFormatError, match=message):
        ModelInfo.from_metadata_props(props, "m.onnx")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("value_scale", 0, r"ram\.input\.value_scale must be a number in \(1e-06, 1e\+06\]"),
        ("value_scale", 1e-45, r"ram\.input\.value_scale must be a number in \(1e-06, 1e\+06\], got 1e-45"),
        ("background", "grey", r"ram\.input\.background must be one of \['dark', 'light'\]"),
        ("placement", "stretch", r"ram\.input\.placement must be one of \['mnist', 'canvas', 'fit', 'crop'\]"),
        ("polarity", "invert", r"ram\.input\.polarity must be one of \['auto', 'keep'\]"),
        ("channels", 0, r"ram\.input\.channels must be an integer >= 1"),
    ],
)
def test_bad_input_format_is_refused(field, value, message):
    shape = {**json.loads(INFO.to_metadata_props()["ram.input"]), field: value}
    props = {**INFO.to_metadata_props(), "ram.input": json.dumps(shape)}
    with pytest.raises(ModelFormatError, match=message):
        ModelInfo.from_metadata_props(props, "m.onnx")


GOOD_INPUTS = [("glimpse", ["batch", 3, 1, 8, 8]), ("location", ["batch", 2]), ("state", ["batch", 256])]
GOOD_OUTPUTS = [("state_next", ["batch", 256]), ("location_next", ["batch", 2]), ("logits", ["batch", 10])]


def test_matching_graph_passes():
    INFO.check_graph(GOOD_INPUTS, GOOD_OUTPUTS, "m.onnx")


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (GOOD_INPUTS[::-1], GOOD_OUTPUTS, r"graph inputs must be \['glimpse', 'location', 'state'\]"),
        (GOOD_INPUTS, GOOD_OUTPUTS[:2], r"graph outputs must be \['state_next', 'location_next', 'logits'\]"),
        (
            [("glimpse", ["batch", 1, 1, 8, 8])] + GOOD_INPUTS[1:],
            GOOD_OUTPUTS,
            r"input 'glimpse' has shape \['batch', 1, 1, 8, 8\], but ram\.sensor and ram\.input\.channels",
        ),
        (GOOD_INPUTS[:2] + [("state", ["batch", 512])], GOOD_OUTPUTS, r"input 'state' .* ram\.state_size"),
        (GOOD_INPUTS, GOOD_OUTPUTS[:2] + [("logits", ["batch", 9])], r"output 'logits' .* ram\.labels"),
        (GOOD_INPUTS, [("state_next", ["batch", 256, 1])] + GOOD_OUTPUTS[1:], r"output 'state_next' has shape"),
    ],
)
def test_graph_inconsistent_with_metadata_is_refused(inputs, outputs, message):
    with pytest.raises(ModelFormatError, match=message):
        INFO.check_graph(inputs, outputs, "m.onnx")


# The same refusals through load_model on real files (onnx is needed to edit them).


def _edited_copy(source: Path, directory: Path, edit) -> Path:
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(source))
    edit(proto)
    path = directory / "edited.onnx"
    onnx.save(proto, str(path))
    return path


def _set_prop(key: str, value: str):
    def edit(proto):
        props = {p.key: p.value for p in proto.metadata_props}
        props[key] = value
        del proto.metadata_props[:]
        for k, v in props.items():
            proto.metadata_props.add(key=k, value=v)

    return edit


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ram.labels", json.dumps(list("012345678")), r"output 'logits' .* ram\.labels"),
        ("ram.state_size", "7", r"input 'state' .* ram\.state_size"),
        ("ram.sensor", '{"glimpse_size": 5, "num_scales": 2, "scale_factor": 2}', r"input 'glimpse' .* ram\.sensor"),
        ("ram.format_version", "99", r"newer than this ram-infer reads"),
        ("ram.num_glimpses", "six", r"ram\.num_glimpses is not valid JSON"),
    ],
)
def test_load_model_refuses_inconsistent_file(tiny_rnn_path, tmp_path, key, value, message):
    path = _edited_copy(tiny_rnn_path, tmp_path, _set_prop(key, value))
    with pytest.raises(ModelFormatError, match=rf"edited\.onnx: .*{message}"):
        load_model(path)


def test_load_model_refuses_file_without_metadata(tiny_rnn_path, tmp_path):
    path = _edited_copy(tiny_rnn_path, tmp_path, lambda proto: proto.metadata_props.clear())
    with pytest.raises(ModelFormatError, match=r"edited\.onnx: not a RAM step model"):
        load_model(path)


def test_load_model_refuses_renamed_input(tiny_rnn_path, tmp_path):
    def rename(proto):
        proto.graph.input[2].name = "hidden"
        for node in proto.graph.node:
            node.input[:] = ["hidden" if name == "state" else name for name in node.input]

    path = _edited_copy(tiny_rnn_path, tmp_path, rename)
    with pytest.raises(ModelFormatError, match=r"graph inputs must be .* got \['glimpse', 'location', 'hidden'\]"):
        load_model(path)


def test_load_model_refuses_valid_onnx_that_is_not_ram(tmp_path):
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    with pytest.raises(ModelFormatError, match=r"identity\.onnx: not a RAM step model"):
        load_model(path)


@pytest.mark.parametrize(
    ("content", "name"),
    [(b"", "empty.onnx"), (b"this is not a model\n", "text.onnx"), (None, "truncated.onnx")],
)
def test_load_model_refuses_unreadable_file(tiny_rnn_path, tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(tiny_rnn_path.read_bytes()[:2000] if content is None else content)
    with pytest.raises(ModelFormatError, match=rf"{name}: not a readable ONNX model"):
        load_model(path)
