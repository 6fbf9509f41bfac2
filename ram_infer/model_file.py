"""A model file read and checked before ONNX Runtime sees it: a regular file of bounded size, a self-contained step
graph of straight-line standard operators.

ONNX Runtime executes what a file says: a ``Loop`` of 10^15 iterations runs until the process is killed (Ctrl-C
cannot stop it inside the session), and older releases (before 1.24) followed an initializer's external-data
location anywhere on the disk, so a crafted model could return a system file's bytes as its logits. A step model
(docs: the ONNX step contract) needs neither: its graph is a few linear layers and activations with embedded
weights. So the file is parsed here and refused unless

- every node is an operator of the standard domain on ``OPERATORS``, an allow-list of the straight-line operators
  a step network is made of: no control flow (``Loop``, ``If``, ``Scan``), no subgraph attributes, no model-local
  functions, no custom domains, no random or size-from-data operators (``RandomNormal``, ``ConstantOfShape``,
  ``Expand``, ``Tile``, ``Range``, ``Resize``: results must be deterministic and memory must follow the declared
  shapes);
- no tensor (initializer, sparse initializer, ``Constant`` or other attribute) keeps its data outside the file.

The session is then built from the checked bytes, not the path, so ONNX Runtime reads nothing else from the disk.

The parse uses protobuf (a dependency of onnxruntime already) with the few ``onnx.proto`` fields read here, declared
below with their field numbers; unknown fields are skipped, exactly as ONNX Runtime's full parser keeps them aside.
``import onnx`` would do it too, but costs 0.9 s (its ml_dtypes extension), four times a whole ``ram-infer`` run.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from ram_infer.metadata import EPISODE_GRAPH, GRAPH_KEY, ModelFormatError, episode_model_message

MAX_MODEL_BYTES = 256 << 20  # a step model is ≈ 1–3 MB; this bounds the memory of reading a hostile file
STANDARD_DOMAINS = ("", "ai.onnx")
# Straight-line operators of the standard domain whose output sizes follow their inputs' declared sizes. What
# torch.onnx exports for the step networks (Gemm, MatMul, Add, Relu, Tanh, Sigmoid, Mul, Slice, Split, Concat, Flatten,
# Constant; an LSTM core adds the gates' ops) plus the layers and activations a variant could add.
OPERATORS = frozenset(
    """
    Abs Add And Cast Ceil Clip Concat Constant Conv Div Elu Equal Erf Exp Flatten Floor Gather Gelu Gemm Greater
    HardSigmoid HardSwish Identity LayerNormalization BatchNormalization LeakyRelu Less Log LogSoftmax MatMul Max
    Min Mul Neg Not Or Pow PRelu Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape Selu Shape
    Sigmoid Sign Softmax Softplus Softsign Slice Split Sqrt Squeeze Sub Sum Tanh Transpose Unsqueeze Where
    """.split()
)
# The allowed operators that have optional inputs, which ONNX leaves out with an empty name. Any other operator with an
# empty input name is refused: ONNX Runtime's variadic Sum, Min and Max accept one at session creation and then crash
# the process (SIGSEGV) on the first run (found by fuzz/fuzz_models.py).
OPTIONAL_INPUTS = frozenset(
    "BatchNormalization Clip Conv Gemm LayerNormalization ReduceMax ReduceMean ReduceMin ReduceSum Slice Split Squeeze "
    "Unsqueeze".split()
)
# What a step model holds at most. The bundled ones: about 30 operators, 20 initializers, 6 ports, 10 metadata entries.
# ONNX Runtime builds its graph in time and memory that grow with them (300 000 operators in a 7 MB file: 32 s, 1 GB).
MAX_COUNTS = {"operators": 10_000, "initializers": 10_000, "graph inputs and outputs": 100, "metadata entries": 1_000}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_GRAPH_ATTRIBUTES = ("g", "graphs")


def read_model(path: str | os.PathLike) -> bytes:
    """The bytes of a step model file, checked (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ModelFormatError: not a regular file, too large, unreadable, not an ONNX protobuf, or a graph outside the
            step-model format (the message names the operator, attribute or tensor).
    """
    source = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no such model file") from None
    except OSError as error:
        raise ModelFormatError(f"{source}: cannot read the model file ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ModelFormatError(f"{source}: is a directory, not a model file")
    if not stat.S_ISREG(info.st_mode):
        # Opening a FIFO blocks until someone writes to it, and a device may never end: neither is a model file.
        raise ModelFormatError(f"{source}: not a regular file (a pipe, device or socket)")
    if info.st_size > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{source}: {info.st_size} bytes is more than a model file's limit of {MAX_MODEL_BYTES}")
    try:
        data = Path(path).read_bytes()[: MAX_MODEL_BYTES + 1]
    except OSError as error:
        raise ModelFormatError(f"{source}: cannot read the model file ({error.strerror or error})") from None
    check_model_bytes(data, source)
    return data


def check_model_bytes(data: bytes, source: str) -> None:
    """Refuses a serialized ONNX model that is not a self-contained graph of allowed operators.

    Raises:
        ModelFormatError: the message names the file and what is refused.
    """
    from google.protobuf.message import DecodeError

    if len(data) > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{source}: more than a model file's limit of {MAX_MODEL_BYTES} bytes")
    model = _messages()["ModelProto"]()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        raise ModelFormatError(f"{source}: not a readable ONNX model (not a valid protobuf)") from None
    _check_counts(model, source)
    for entry in model.metadata_props:
        _check_utf8(entry.key, source, "a metadata key")
        _check_utf8(entry.value, source, f"metadata {_text(entry.key)!r}")
    metadata = {_text(entry.key): _text(entry.value) for entry in model.metadata_props}
    if metadata.get(GRAPH_KEY) == json.dumps(EPISODE_GRAPH):  # its sensor's Pad would be refused below: say why first
        raise ModelFormatError(episode_model_message(source))
    if not model.HasField("graph"):
        raise ModelFormatError(f"{source}: not a readable ONNX model (no graph)")
    if len(model.functions):
        raise ModelFormatError(f"{source}: defines model-local functions, which a step model does not use")
    for opset in model.opset_import:
        if _text(opset.domain) not in STANDARD_DOMAINS:
            raise ModelFormatError(f"{source}: imports the operator domain {_text(opset.domain)!r}; a step model uses "
                                   "only the standard ONNX operators")
    graph = model.graph
    for port in (*graph.input, *graph.output, *graph.initializer):
        _check_utf8(port.name, source, "a graph input, output or initializer name")
    for node in graph.node:
        _check_node(node, source)
    for name, tensor in _tensors(graph):
        if tensor.data_location == _EXTERNAL or len(tensor.external_data):
            raise ModelFormatError(
                f"{source}: tensor {name!r} keeps its data outside the model file (external data); a step model "
                "embeds its weights"
            )
        # Every element takes at least half a byte of the file (4-bit types pack two; there is no external data), so
        # more is a lie, which ONNX Runtime would only find out in an integer overflow that it logs on stderr.
        elements = math.prod(tensor.dims)
        if min(tensor.dims, default=0) < 0 or elements > 2 * len(data):
            raise ModelFormatError(f"{source}: tensor {name!r} declares {elements} elements, more than the file holds")


def _check_counts(model: Any, source: str) -> None:
    """Refuses more nodes, weights or metadata entries than ``MAX_COUNTS`` allows, and any sparse tensor."""
    graph = model.graph
    counts = {
        "operators": len(graph.node),
        "initializers": len(graph.initializer),
        "graph inputs and outputs": len(graph.input) + len(graph.output),
        "metadata entries": len(model.metadata_props),
    }
    for what, count in counts.items():
        if count > MAX_COUNTS[what]:
            raise ModelFormatError(f"{source}: {count} {what}, more than a step model's limit of {MAX_COUNTS[what]}")
    # ONNX Runtime makes a sparse initializer dense while it builds the graph, whatever size it declares (a 13 kB file
    # asked for 3 GB); a step model's weights are dense.
    if len(graph.sparse_initializer) or any(_attribute_sparse(graph)):
        raise ModelFormatError(f"{source}: holds sparse tensors, which a step model does not use")


def _check_node(node: Any, source: str) -> None:
    # ONNX Runtime quotes names in its messages, and its binding raises UnicodeDecodeError on any that is not UTF-8.
    for value in (node.op_type, node.domain, node.name, *node.input, *node.output):
        _check_utf8(value, source, f"a name in operator {_text(node.op_type)!r}")
    for attribute in node.attribute:
        _check_utf8(attribute.name, source, f"an attribute name of operator {_text(node.op_type)!r}")
    op, domain = _text(node.op_type), _text(node.domain)
    if domain not in STANDARD_DOMAINS:
        raise ModelFormatError(f"{source}: operator {op!r} of domain {domain!r} is not a standard ONNX operator")
    if op not in OPERATORS:
        raise ModelFormatError(
            f"{source}: operator {op!r} is not one a step model uses (control flow, random or size-from-data "
            "operators are refused)"
        )
    if op not in OPTIONAL_INPUTS and any(not name for name in node.input):
        raise ModelFormatError(f"{source}: operator {op!r} has an empty input name, but no optional inputs")
    for attribute in node.attribute:
        if attribute.HasField("g") or len(attribute.graphs):
            raise ModelFormatError(f"{source}: operator {op!r} has a subgraph attribute {_text(attribute.name)!r}")


def _tensors(graph: Any) -> Iterator[tuple[str, Any]]:
    """Every dense tensor whose data the file holds: initializers and attribute tensors (sparse ones are refused
    before, by ``_check_counts``)."""
    for tensor in graph.initializer:
        yield _text(tensor.name), tensor
    for node in graph.node:
        for attribute in node.attribute:
            name = f"{_text(node.op_type)}.{_text(attribute.name)}"
            if attribute.HasField("t"):
                yield name, attribute.t
            for tensor in attribute.tensors:
                yield name, tensor


def _attribute_sparse(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor
            yield from attribute.sparse_tensors


def _check_utf8(value: bytes, source: str, what: str) -> None:
    """ONNX strings are UTF-8; onnxruntime's Python binding raises UnicodeDecodeError on anything else."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"{source}: {what} is not UTF-8 text") from None


def _text(value: bytes) -> str:
    """A string field (declared as bytes: a hostile file need not hold UTF-8), printable in messages."""
    return value.decode("utf-8", "backslashreplace")


# The onnx.proto fields read above: message → (field, number, type, repeated, message type). Field numbers are
# onnx.proto's (github.com/onnx/onnx, onnx/onnx.proto), which ONNX keeps stable across versions.
_SCHEMA = {
    "ModelProto": (
        ("opset_import", 8, "message", True, "OperatorSetIdProto"),
        ("graph", 7, "message", False, "GraphProto"),
        ("functions", 25, "message", True, "Opaque"),
        ("metadata_props", 14, "message", True, "StringStringEntryProto"),
    ),
    "StringStringEntryProto": (("key", 1, "bytes", False, None), ("value", 2, "bytes", False, None)),
    "OperatorSetIdProto": (("domain", 1, "bytes", False, None),),
    "GraphProto": (
        ("node", 1, "message", True, "NodeProto"),
        ("initializer", 5, "message", True, "TensorProto"),
        ("input", 11, "message", True, "ValueInfoProto"),
        ("output", 12, "message", True, "ValueInfoProto"),
        ("sparse_initializer", 15, "message", True, "SparseTensorProto"),
    ),
    "NodeProto": (
        ("input", 1, "bytes", True, None),
        ("output", 2, "bytes", True, None),
        ("name", 3, "bytes", False, None),
        ("op_type", 4, "bytes", False, None),
        ("domain", 7, "bytes", False, None),
        ("attribute", 5, "message", True, "AttributeProto"),
    ),
    "AttributeProto": (
        ("name", 1, "bytes", False, None),
        ("t", 5, "message", False, "TensorProto"),
        ("g", 6, "message", False, "Opaque"),
        ("tensors", 10, "message", True, "TensorProto"),
        ("graphs", 11, "message", True, "Opaque"),
        ("sparse_tensor", 22, "message", False, "SparseTensorProto"),
        ("sparse_tensors", 23, "message", True, "SparseTensorProto"),
    ),
    "TensorProto": (
        ("dims", 1, "int64", True, None),
        ("name", 8, "bytes", False, None),
        ("external_data", 13, "message", True, "Opaque"),
        ("data_location", 14, "int32", False, None),
    ),
    "SparseTensorProto": (
        ("values", 1, "message", False, "TensorProto"),
        ("indices", 2, "message", False, "TensorProto"),
    ),
    "ValueInfoProto": (("name", 1, "bytes", False, None),),
    "Opaque": (),  # a message whose presence alone matters; its fields are skipped
}


@lru_cache(maxsize=1)
def _messages() -> dict[str, Any]:
    """The message classes of ``_SCHEMA``, built once in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    package = "ram_infer.onnx_subset"
    file = descriptor_pb2.FileDescriptorProto(name="ram_infer_onnx_subset.proto", package=package, syntax="proto2")
    kinds = {
        "message": descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    }
    for message_name, fields in _SCHEMA.items():
        message = file.message_type.add(name=message_name)
        for name, number, kind, repeated, type_name in fields:
            field = message.field.add(name=name, number=number, type=kinds[kind])
            field.label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            if type_name:
                field.type_name = f".{package}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}")) for name in _SCHEMA
    }
