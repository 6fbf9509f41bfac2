"""Structure-aware fuzzer of model loading: mutated ONNX step models → ``load_model`` and ``Engine.predict``.

Every mutant must either load and predict, or raise ``ModelFormatError`` or ``FileNotFoundError`` (the exceptions
``load_model`` documents; ``predict`` raises ``ModelFormatError`` for a network that fails to run, and ``ValueError``
only for bad images, which this fuzzer never passes) within a time and memory bound. Anything else is a finding:
another exception, a warning, output on stdout or stderr, a case slower than 5 s (a possible hang), a peak RSS above
ONNX Runtime's arena bound (``ram_infer.engine.ORT_MEMORY_BYTES``) plus 1 GiB or an allocation the OS refused under
the worker's address-space limit (a memory bomb that got past the bound), or a crash of the process. An allocation
that the arena refuses at its bound is the documented ``ModelFormatError`` ("the step network failed to run").

Mutants start from the bundled step models (smallest first) and, where torch is installed, two tiny exported ones
(an RNN and an LSTM core). They are edited with the ``onnx`` package: nodes and operator types (allowed, refused such
as Loop/If/Scan/random ones, custom domains, nonsense), attributes (wrong types, huge values, subgraphs, tensors with
external data pointing at system files), initializers (dims, data types, data lengths, external data), graph input
and output types and shapes, side branches of allowed operators spliced into the data path (so they run), opsets,
IR versions, model-local functions, training-info graphs, and the ``ram.*`` metadata (wrong JSON types, huge and
non-finite numbers, deep nesting, invalid JSON and UTF-8, control and bidi characters in labels, sizes within the
limits whose products are not); then, for some, at the byte level (flips, truncation, splices). Mutants that load
join a small pool that later mutants start from, to reach past the first checks.

Each mutant is written to a file and checked in a worker process that a supervisor restarts after a crash or a hang,
so native code cannot take the fuzzer down. Findings are saved (the mutant and a ``.txt`` with what was done to it,
the exception and its traceback) so they can be replayed with ``--replay``.

    python fuzz/fuzz_models.py --seconds 600 --out build/fuzz/models   # see fuzz/README.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: tests/conftest.py imports from the checkout
    sys.path.append(str(ROOT))  # last: an installed ram_infer (with its compiled sensor) comes first

SLOW_SECONDS = 5.0  # one mutant (load and two predictions) slower than this is reported as a possible hang
HANG_SECONDS = 30.0  # the worker is killed and restarted when one mutant takes longer
HEADROOM_BYTES = 1 << 30  # the runtime's buffers, the images and the interpreter (the bundled models run in 80 MB)
ADDRESS_SPACE_MARGIN = 2 << 30  # RLIMIT_AS above the memory bound: a bomb past the bound fails there, not the machine
SAVED_PER_SIGNATURE = 3  # findings of one kind (type, place, message) are all counted, the first few saved
POOL_SIZE = 64  # loaded mutants kept as starting points
INVALID_UTF8 = "\x7fBAD-UTF8\x7f"  # a placeholder: upb refuses invalid UTF-8 in str fields, so it is swapped in bytes
INVALID_UTF8_BYTES = b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0"  # as long as the placeholder: lengths stay right
assert len(INVALID_UTF8.encode()) == len(INVALID_UTF8_BYTES)
# What an allocation the OS refused looks like. ONNX Runtime's arena refusing one above its bound ("Failed to allocate
# memory for requested buffer") is the runtime working as designed, reported as ModelFormatError.
ALLOCATION_FAILURE = re.compile(r"bad.alloc|MemoryError|out of memory")

REFUSED_OPERATORS = (
    "Loop If Scan RandomNormal RandomNormalLike RandomUniform RandomUniformLike Multinomial Bernoulli ConstantOfShape "
    "Expand Tile Range Resize Pad NonZero TopK Upsample Einsum SequenceConstruct Optional DFT LSTM GRU RNN Col2Im"
).split()
ODD_OPERATORS = ("", "relu", "Relu ", "Re\x00lu", "Ünïcödé", "Glimpse", "x" * 300, INVALID_UTF8)
DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.preview.training",
           "com.example.ram", "AI.ONNX", "ai.onnx ", INVALID_UTF8)
# Operators a side branch can compute from fresh initializers and values of the graph: the broadcasting and matrix
# products (whose output may be far larger than their inputs) first, then the rest of the allow-list.
BROADCASTING_OPERATORS = "Add Sub Mul Div Pow Max Min Sum Equal Greater Less Where PRelu MatMul Gemm Concat".split()
EXTERNAL_LOCATIONS = ("/etc/hostname", "/etc/passwd", "/proc/self/environ", "/dev/zero", "/dev/urandom",
                      "../../../../../../etc/hostname", "weights.bin", "", ".", "/", "/proc/self/fd/0", "/tmp")
ATTRIBUTE_NAMES = ("axis", "axes", "transA", "transB", "alpha", "beta", "perm", "keepdims", "to", "value", "pads",
                   "strides", "dilations", "kernel_shape", "group", "epsilon", "split", "num_outputs", "body",
                   "then_branch", "else_branch", "value_float", "value_ints", "allowzero", "noop_with_empty_axes",
                   "stash_type", "approximate", "mode", INVALID_UTF8)
INTERESTING_INTS = (0, 1, -1, 2, 3, 4, 5, 7, 8, 16, 17, 255, 256, 1000, 1001, 8192, 8193, 10_000, 10_001, 65_536,
                    65_537, 1 << 24, (1 << 24) + 1, (1 << 31) - 1, 1 << 31, 1 << 32, (1 << 53) + 1, (1 << 63) - 1,
                    -(1 << 63))
INTERESTING_FLOATS = (0.0, -0.0, 0.5, 1.0, 1.5, -1.0, 1e-300, 5e-324, 1e38, 3.5e38, 1e308, -1e308,
                      math.nan, math.inf, -math.inf)
INTERESTING_DIMS = (0, 1, 2, 3, 8, 10, 128, -1, -2, 1 << 20, 1 << 31, (1 << 62), (1 << 63) - 1)
# Dims of fresh initializers: mostly small, some large enough that a product of two is a memory bomb.
FRESH_DIMS = (1, 1, 1, 2, 3, 10, 128, 1000, 20_000, 60_000)
FRESH_MAX_ELEMENTS = 1 << 21
# JSON text that Python's json reads but json.dumps of a Python value never writes, or that is not JSON at all.
JSON_LITERALS = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "1" + "0" * 4300, "-0", "0.0e0",
                 "1E400", "[" * 100_000, "[" * 50_000 + "]" * 50_000, '{"a": ' * 10_000 + "1" + "}" * 10_000,
                 "", " ", "nul", "tru", "[1,]", "{'a': 1}", '"\\ud800"', '"\\u0000"', '{"a": 1, "a": 2}', "\x00",
                 INVALID_UTF8)
STRINGS = ("", " ", "\x00", "\n", "\r\n", "\t", "\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "\u202eevil", "\ufeff",
           "😀", "\ud800", "a" * 100_000, "ram.", "<script>", "%s%n", "../../etc/passwd", "\u0085", "\u2028",
           "mnist", "dark", "light", "canvas", "episode")
RAM_KEYS = ("format_version", "sensor", "num_glimpses", "initial_location", "state_size", "input", "labels",
            "dataset", "test_error", "training", "graph")
# Sizes the graph does not fix (only the metadata does), set at and near their limits: the product checks and the
# cost of a legal but large model are what they exercise.
LIMIT_EDITS = (
    ("ram.num_glimpses", (1, 250, 999, 1000, 1001)),
    ("ram.input.height", (1, 2, 4096, 8192, 8193)),
    ("ram.input.width", (1, 2, 2048, 4096, 8192)),
    ("ram.sensor.scale_factor", (1, 2, 512, 4096, 1 << 21, 1 << 24)),
    ("ram.input.value_scale", (1e-45, 1e-30, 1e30, 1e308)),
    ("ram.initial_location", ([1, 1], [-1, -1], [1.0000001, 0], [5e-324, -0.0])),
)
SPECIAL_PATHS = ("missing", "directory", "fifo", "symlink-to-dev-zero", "symlink-to-hostname", "empty", "symlink-loop")

Mutation = Callable[[Any, random.Random], "str | None"]


# --- seeds -----------------------------------------------------------------------------------------------------------


def seed_models(tiny: bool = True) -> dict[str, bytes]:
    """The bundled step models and, where torch is installed and ``tiny``, two tiny exported ones; smallest first."""
    from ram_infer.engine import bundled_models

    seeds = {f"{name}.onnx": path.read_bytes() for name, path in bundled_models().items()}
    if tiny:
        seeds.update(tiny_models())
    return dict(sorted(seeds.items(), key=lambda item: len(item[1])))


def tiny_models() -> dict[str, bytes]:
    """The tests' tiny model (g=4, k=2, T=4, 32 units) with each core, or none without torch."""
    try:
        import torch  # noqa: F401  (only to know that the export can run)

        from tests.conftest import export_tiny_model
    except ImportError:
        return {}
    models = {}
    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are not this fuzzer's business
        for core in ("rnn", "lstm"):
            models[f"tiny_{core}.onnx"] = export_tiny_model(core, Path(directory)).path.read_bytes()
    return models


# --- structure-aware mutations (onnx.ModelProto) -------------------------------------------------------------------


def _onnx():
    import onnx

    return onnx


def _fresh_name(rng: random.Random, stem: str = "fuzz") -> str:
    return f"{stem}_{rng.randrange(1 << 30)}"


def _value_names(model: Any) -> list[str]:
    """Every value a node can read: graph inputs, initializers and node outputs."""
    graph = model.graph
    names = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    return names + [name for node in graph.node for name in node.output]


def _any_name(model: Any, rng: random.Random) -> str:
    odd = ("", "missing_value", "glimpse", "logits", INVALID_UTF8)
    return rng.choice(odd) if rng.random() < 0.15 else rng.choice(_value_names(model) or ["glimpse"])


def _pick(sequence, rng: random.Random):
    return rng.choice(sequence) if len(sequence) else None


def _operator(rng: random.Random) -> str:
    from ram_infer.model_file import OPERATORS

    roll = rng.random()
    if roll < 0.5:
        return rng.choice(sorted(OPERATORS))
    return rng.choice(REFUSED_OPERATORS) if roll < 0.85 else rng.choice(ODD_OPERATORS)


def set_op_type(model, rng):
    node = _pick(model.graph.node, rng)
    if node is None:
        return None
    node.op_type = _operator(rng)
    return f"node {node.name!r} op_type → {node.op_type!r}"


def set_node_domain(model, rng):
    node = _pick(model.graph.node, rng)
    if node is None:
        return None
    node.domain = rng.choice(DOMAINS)
    return f"node {node.name!r} domain → {node.domain!r}"


def delete_node(model, rng):
    nodes = model.graph.node
    if not len(nodes):
        return None
    index = rng.randrange(len(nodes))
    op = nodes[index].op_type
    del nodes[index]
    return f"deleted node {index} ({op})"


def duplicate_node(model, rng):
    node = _pick(model.graph.node, rng)
    if node is None:
        return None
    model.graph.node.insert(rng.randrange(len(model.graph.node) + 1), node)  # same outputs twice: not SSA
    return f"duplicated node {node.name!r}"


def move_node(model, rng):
    nodes = model.graph.node
    if len(nodes) < 2:
        return None
    index = rng.randrange(len(nodes))
    node = type(nodes[index])()
    node.CopyFrom(nodes[index])
    del nodes[index]
    target = rng.randrange(len(nodes) + 1)
    nodes.insert(target, node)  # out of topological order
    return f"moved node {index} to {target}"


def rewire_node(model, rng):
    node = _pick(model.graph.node, rng)
    if node is None:
        return None
    ports = node.input if rng.random() < 0.6 or not len(node.output) else node.output
    name = _any_name(model, rng)
    if len(ports) and rng.random() < 0.8:
        index = rng.randrange(len(ports))
        ports[index] = name
    elif len(ports) and rng.random() < 0.5:
        del ports[rng.randrange(len(ports))]
    else:
        ports.append(name)
    return f"node {node.name!r} ports → in {list(node.input)} out {list(node.output)}"


def insert_node(model, rng):
    """A node of any operator on random values; its output is usually unused (ONNX Runtime may drop it)."""
    helper = _onnx().helper
    inputs = [_any_name(model, rng) for _ in range(rng.randint(0, 3))]
    node = helper.make_node(_operator(rng), inputs, [_fresh_name(rng)], domain=rng.choice(DOMAINS[:3]))
    _add_random_attributes(node, rng)
    model.graph.node.insert(rng.randrange(len(model.graph.node) + 1), node)
    return f"inserted node {node.op_type!r} ({inputs})"


def splice_side_branch(model, rng):
    """value ← value + mean(cast(op(...))): an allowed operator on fresh initializers and graph values, wired into the
    data path with its declared shapes kept, so the model still loads and the operator really runs."""
    from ram_infer.model_file import OPERATORS

    onnx = _onnx()
    helper = onnx.helper
    graph = model.graph
    produced = [name for node in graph.node for name in node.output if name]
    if not produced:
        return None
    target = rng.choice(produced)
    # Allowed operators only (the other mutations cover the refused ones): the point is that they run.
    op = rng.choice(BROADCASTING_OPERATORS) if rng.random() < 0.6 else rng.choice(sorted(OPERATORS))
    branch, mean, renamed = (_fresh_name(rng, stem) for stem in ("branch", "mean", "pre"))
    _rename_value(graph, target, renamed)  # the producer now writes `renamed`; the Add writes what consumers read
    inputs = _side_inputs(model, op, rng)
    nodes = [
        helper.make_node(op, inputs, [branch], name=f"fuzz_{op}"),
        helper.make_node("Cast", [branch], [branch + "_f"], to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceMean", [branch + "_f"], [mean], keepdims=0),
        helper.make_node("Add", [renamed, mean], [target]),
    ]
    _add_random_attributes(nodes[0], rng, probability=0.15)
    graph.node.extend(nodes)
    return f"side branch {op}({inputs}) added to {target!r}"


def _side_inputs(model, op: str, rng: random.Random) -> list[str]:
    count = 3 if op in ("Where", "Gemm") else 2 if op in BROADCASTING_OPERATORS else rng.randint(1, 3)
    names, shape = [], None
    for _ in range(count):
        if rng.random() < 0.6:
            # The second fresh tensor often takes the first one's dims reversed: [n, 1] and [1, n] broadcast to n².
            shape = list(reversed(shape)) if shape is not None and rng.random() < 0.5 else _fresh_shape(rng)
            names.append(_add_initializer(model, shape, rng, float32=rng.random() < 0.9))
        else:
            names.append(_any_name(model, rng))
    return names


def _rename_value(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]


def _fresh_shape(rng: random.Random) -> list[int]:
    shape = [rng.choice(FRESH_DIMS) for _ in range(rng.randint(0, 3))]
    while math.prod(shape) > FRESH_MAX_ELEMENTS:
        shape[shape.index(max(shape))] = 1
    return shape


def _add_initializer(model, shape: list[int], rng: random.Random, float32: bool = False) -> str:
    import numpy as np

    dtypes = (np.float32,) * 6 + (np.int64, np.bool_, np.float16, np.float64, np.int32, np.uint8)
    dtype = np.float32 if float32 else rng.choice(dtypes)
    fill = rng.choice((0, 1, -1, 0.5, math.nan, math.inf, 1e30))
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = np.full(shape, fill).astype(dtype)
    name = _fresh_name(rng, "init")
    model.graph.initializer.append(_onnx().numpy_helper.from_array(array, name))
    return name


def _add_random_attributes(node, rng: random.Random, probability: float = 0.5) -> None:
    while rng.random() < probability:
        node.attribute.append(_random_attribute(rng))


def _random_attribute(rng: random.Random):
    helper = _onnx().helper
    name = rng.choice(ATTRIBUTE_NAMES)
    kind = rng.randrange(9)
    if kind == 0:
        return helper.make_attribute(name, rng.choice(INTERESTING_INTS))
    if kind == 1:
        return helper.make_attribute(name, rng.choice(INTERESTING_FLOATS))
    if kind == 2:
        return helper.make_attribute(name, [rng.choice(INTERESTING_INTS) for _ in range(rng.randint(0, 6))])
    if kind == 3:
        return helper.make_attribute(name, rng.choice(STRINGS[:12]))
    if kind == 4:
        return helper.make_attribute(name, _random_tensor(rng))
    if kind == 5:
        return helper.make_attribute(name, _small_graph(rng))
    if kind == 6:
        return helper.make_attribute(name, [_small_graph(rng) for _ in range(rng.randint(1, 2))])
    if kind == 7:
        return helper.make_attribute(name, _sparse_tensor(rng))
    return helper.make_attribute(name, [rng.choice(INTERESTING_FLOATS) for _ in range(rng.randint(1, 4))])


def _random_tensor(rng: random.Random):
    """A small float tensor, sometimes keeping its data in an external file (a system file, a path outside)."""
    import numpy as np

    onnx = _onnx()
    tensor = onnx.numpy_helper.from_array(np.zeros(rng.choice((1, 2, 4, 64)), np.float32), f"t{rng.randrange(99)}")
    if rng.random() < 0.5:
        _make_external(tensor, rng)
    return tensor


def _make_external(tensor, rng: random.Random) -> str:
    onnx = _onnx()
    location = rng.choice(EXTERNAL_LOCATIONS)
    if rng.random() < 0.7:
        tensor.ClearField("raw_data")
    roll = rng.random()
    if roll < 0.6:  # the regular way
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=location)
    elif roll < 0.8:  # entries without the location flag
        tensor.external_data.add(key="location", value=location)
    else:  # the flag without entries
        tensor.data_location = onnx.TensorProto.EXTERNAL
    if rng.random() < 0.3:
        key = rng.choice(("offset", "length", "checksum"))
        tensor.external_data.add(key=key, value=str(rng.choice(INTERESTING_INTS)))
    return location


def _sparse_tensor(rng: random.Random):
    import numpy as np

    onnx = _onnx()
    values = _random_tensor(rng)
    indices = onnx.numpy_helper.from_array(np.zeros(1, np.int64), "indices")
    if rng.random() < 0.3:
        _make_external(indices, rng)
    return onnx.helper.make_sparse_tensor(values, indices, [rng.choice(INTERESTING_DIMS[:8])])


def _small_graph(rng: random.Random):
    """A subgraph: empty, an Identity, or the endless Loop of the security review."""
    onnx = _onnx()
    helper = onnx.helper
    if rng.random() < 0.3:
        return helper.make_graph([], "empty", [], [])
    node = helper.make_node(rng.choice(("Identity", "Loop", "Relu")), ["x"], ["y"])
    return helper.make_graph(
        [node], "sub", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )


def add_attribute(model, rng):
    node = _pick(model.graph.node, rng)
    if node is None:
        return None
    attribute = _random_attribute(rng)
    node.attribute.append(attribute)
    return f"node {node.name!r} ({node.op_type}) + attribute {attribute.name!r} of type {attribute.type}"


def mutate_attribute(model, rng):
    """Changes an existing attribute's value in place, or makes its declared type disagree with the field set."""
    nodes = [node for node in model.graph.node if len(node.attribute)]
    if not nodes:
        return None
    node = rng.choice(nodes)
    attribute = rng.choice(node.attribute)
    roll = rng.random()
    if roll < 0.3:
        attribute.i = rng.choice(INTERESTING_INTS)
    elif roll < 0.5:
        attribute.f = rng.choice(INTERESTING_FLOATS)
    elif roll < 0.6:
        attribute.ints[:] = [rng.choice(INTERESTING_INTS) for _ in range(rng.randint(0, 5))]
    elif roll < 0.7:
        attribute.type = rng.choice(list(_onnx().AttributeProto.AttributeType.values()))
    elif roll < 0.8:
        attribute.name = rng.choice(ATTRIBUTE_NAMES)
    elif roll < 0.9 and attribute.HasField("t"):
        _mutate_tensor(attribute.t, rng)
    else:
        node.attribute.remove(attribute)
        return f"node {node.name!r} ({node.op_type}) lost attribute {attribute.name!r}"
    return f"node {node.name!r} ({node.op_type}) attribute → {_short(attribute)}"


def insert_control_flow(model, rng):
    """Loop (10^15 trips), If or Scan nodes with subgraphs, as a hostile model would use them."""
    import numpy as np

    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    trips, forever = _fresh_name(rng, "trips"), _fresh_name(rng, "forever")
    op = rng.choice(("Loop", "If", "Scan"))
    nodes = [
        helper.make_node("Constant", [], [trips], value=numpy_helper.from_array(np.array(10**15, np.int64))),
        helper.make_node("Constant", [], [forever], value=numpy_helper.from_array(np.array(True))),
    ]
    if op == "Loop":
        nodes.append(helper.make_node("Loop", [trips, forever], [], body=_small_graph(rng)))
    elif op == "If":
        branches = {"then_branch": _small_graph(rng), "else_branch": _small_graph(rng)}
        nodes.append(helper.make_node("If", [forever], [], **branches))
    else:
        nodes.append(helper.make_node("Scan", ["state"], [], body=_small_graph(rng), num_scan_inputs=1))
    for node in nodes:
        model.graph.node.insert(rng.randrange(len(model.graph.node) + 1), node)
    return f"inserted {op}"


def add_function(model, rng):
    helper = _onnx().helper
    domain = rng.choice(DOMAINS)
    name = rng.choice(("Twice", "Relu", "Gemm", "Loop"))
    body = [helper.make_node(rng.choice(("Add", "Loop", "Relu")), ["x", "x"], ["y"])]
    model.functions.append(helper.make_function(domain, name, ["x"], ["y"], body, [helper.make_opsetid("", 18)]))
    if rng.random() < 0.5 and len(model.graph.node):  # and call it
        rng.choice(model.graph.node).CopyFrom(helper.make_node(name, ["glimpse"], ["fuzz_call"], domain=domain))
    return f"model-local function {domain!r}.{name}"


def add_training_info(model, rng):
    """TrainingInfoProto graphs: never run for inference and not checked by ram_infer, so ONNX Runtime must ignore
    them."""
    info = model.training_info.add()
    info.initialization.CopyFrom(_small_graph(rng))
    if rng.random() < 0.5:
        info.algorithm.CopyFrom(_small_graph(rng))
    return "training_info graphs"


def _mutate_tensor(tensor, rng: random.Random) -> str:
    roll = rng.randrange(7)
    if roll == 0 and len(tensor.dims):
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(INTERESTING_DIMS)
    elif roll == 1:
        if len(tensor.dims) and rng.random() < 0.5:
            del tensor.dims[rng.randrange(len(tensor.dims))]
        else:
            tensor.dims.append(rng.choice(INTERESTING_DIMS[:8]))
    elif roll == 2:
        tensor.data_type = rng.choice(list(range(29)) + [99, -1, 1 << 30])
    elif roll == 3:
        raw = tensor.raw_data
        cut = rng.randrange(len(raw) + 1)
        tensor.raw_data = raw[:cut] if rng.random() < 0.5 else raw + raw[:cut] + b"\x00" * rng.randrange(8)
    elif roll == 4:  # the data moved to a typed field (or both set)
        if rng.random() < 0.5:
            tensor.ClearField("raw_data")
        tensor.float_data.extend([rng.choice(INTERESTING_FLOATS) for _ in range(rng.randint(0, 4))])
    elif roll == 5:
        return f"external data at {_make_external(tensor, rng)!r}"
    else:
        tensor.name = rng.choice(("", "glimpse", "state", INVALID_UTF8, tensor.name + "_renamed"))
    return f"tensor {tensor.name!r}: dims {list(tensor.dims)}, type {tensor.data_type}, {len(tensor.raw_data)} bytes"


def mutate_initializer(model, rng):
    tensor = _pick(model.graph.initializer, rng)
    return None if tensor is None else _mutate_tensor(tensor, rng)


def external_constant(model, rng):
    """A Constant node whose tensor points at an existing file (read as weights by ONNX Runtime before 1.24)."""
    tensor = _random_tensor(rng)
    location = _make_external(tensor, rng)
    name = _fresh_name(rng)
    node = _onnx().helper.make_node("Constant", [], [name], value=tensor)
    model.graph.node.insert(0, node)
    if rng.random() < 0.5 and len(model.graph.node) > 1:  # and read it
        consumer = rng.choice(model.graph.node[1:])
        if len(consumer.input):
            consumer.input[rng.randrange(len(consumer.input))] = name
    return f"Constant with external data at {location!r}"


def add_initializer(model, rng):
    """A fresh initializer, sometimes named like a graph input (which it then overrides) or an existing one."""
    name = _add_initializer(model, _fresh_shape(rng), rng)
    tensor = model.graph.initializer[-1]
    if rng.random() < 0.4:
        tensor.name = rng.choice([v.name for v in model.graph.input] + [t.name for t in model.graph.initializer])
    if rng.random() < 0.2:
        _make_external(tensor, rng)
    return f"initializer {tensor.name!r} (was {name!r})"


def delete_initializer(model, rng):
    initializers = model.graph.initializer
    if not len(initializers):
        return None
    index = rng.randrange(len(initializers))
    name = initializers[index].name
    del initializers[index]
    return f"deleted initializer {name!r}"


def add_sparse_initializer(model, rng):
    sparse = _sparse_tensor(rng)
    sparse.values.name = rng.choice((_fresh_name(rng), *[t.name for t in model.graph.initializer][:3]))
    model.graph.sparse_initializer.append(sparse)
    return f"sparse initializer {sparse.values.name!r}"


def mutate_port_type(model, rng):
    """A graph input or output: element type, dims (fixed, symbolic, added, removed), or a non-tensor type."""
    graph = model.graph
    ports = list(graph.input) + list(graph.output)
    if not ports:
        return None
    port = rng.choice(ports)
    tensor = port.type.tensor_type
    roll = rng.randrange(6)
    if roll == 0:
        tensor.elem_type = rng.choice(list(range(29)) + [99, -1])
    elif roll == 1 and len(tensor.shape.dim):
        dim = rng.choice(tensor.shape.dim)
        if rng.random() < 0.6:
            dim.dim_value = rng.choice(INTERESTING_DIMS)
        else:
            dim.dim_param = rng.choice(("batch", "", "N", "S", INVALID_UTF8, "b" * 1000))
    elif roll == 2:
        tensor.shape.dim.add().dim_value = rng.choice(INTERESTING_DIMS[:8])
    elif roll == 3 and len(tensor.shape.dim):
        del tensor.shape.dim[rng.randrange(len(tensor.shape.dim))]
    elif roll == 4:
        tensor.ClearField("shape")
    else:
        port.type.sequence_type.elem_type.tensor_type.elem_type = 1  # a sequence instead of a tensor
    return f"port {port.name!r} type → {_short(port.type)}"


def mutate_ports(model, rng):
    """Renames, deletes, duplicates, reorders or adds graph inputs and outputs."""
    graph = model.graph
    ports = graph.input if rng.random() < 0.5 else graph.output
    roll = rng.randrange(5)
    if roll == 0 and len(ports):
        rng.choice(ports).name = rng.choice(("glimpse", "location", "state", "state_next", "logits", "", INVALID_UTF8))
    elif roll == 1 and len(ports):
        del ports[rng.randrange(len(ports))]
    elif roll == 2 and len(ports):
        ports.append(rng.choice(ports))
    elif roll == 3 and len(ports) > 1:
        items = list(ports)
        rng.shuffle(items)
        del ports[:]
        ports.extend(items)
    else:
        helper = _onnx().helper
        ports.append(helper.make_tensor_value_info(_any_name(model, rng), 1, ["batch", rng.choice((1, 2, 10))]))
    return f"ports → in {[p.name for p in graph.input]} out {[p.name for p in graph.output]}"


def add_value_info(model, rng):
    helper = _onnx().helper
    shape = [rng.choice(INTERESTING_DIMS) for _ in range(rng.randint(0, 3))]
    name = _any_name(model, rng)
    model.graph.value_info.append(helper.make_tensor_value_info(name, rng.choice((1, 7, 10, 11)), shape))
    return f"value_info {name!r} {shape}"


def mutate_opset(model, rng):
    opsets = model.opset_import
    roll = rng.randrange(4)
    if roll == 0 and len(opsets):
        rng.choice(opsets).version = rng.choice((0, 1, 6, 7, 13, 17, 18, 19, 21, 22, 23, 24, 99, -1, 1 << 62))
    elif roll == 1 and len(opsets):
        rng.choice(opsets).domain = rng.choice(DOMAINS)
    elif roll == 2:
        opsets.add(domain=rng.choice(DOMAINS), version=rng.choice((1, 18, 99)))
    else:
        del opsets[:]
    return f"opsets → {[(o.domain, o.version) for o in opsets]}"


def mutate_ir_version(model, rng):
    model.ir_version = rng.choice((0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 99, -1, 1 << 62))
    return f"ir_version → {model.ir_version}"


def mutate_model_strings(model, rng):
    owner, fields = (model, ("producer_name", "producer_version", "domain", "doc_string"))
    if rng.random() < 0.5:
        owner, fields = (model.graph, ("name", "doc_string"))
    field, value = rng.choice(fields), rng.choice(STRINGS + (INVALID_UTF8,))
    setattr(owner, field, value)
    return f"{type(owner).__name__}.{field} → {value[:20]!r}"


# --- metadata mutations ---------------------------------------------------------------------------------------------


def _metadata(model) -> dict[str, Any]:
    return {entry.key: entry for entry in model.metadata_props}


def _set_metadata(model, key: str, value: str) -> None:
    entry = _metadata(model).get(key)
    if entry is None:
        model.metadata_props.add(key=key, value=value)
    else:
        entry.value = value


def _ram_key(model, rng: random.Random) -> str:
    keys = [key for key in _metadata(model) if key.startswith("ram.")]
    return rng.choice(keys) if keys and rng.random() < 0.8 else "ram." + rng.choice(RAM_KEYS)


def _interesting_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.randrange(8 if depth < 2 else 5)
    if roll == 0:
        return rng.choice(INTERESTING_INTS)
    if roll == 1:
        return rng.choice(INTERESTING_FLOATS)
    if roll == 2:
        return rng.choice((True, False, None))
    if roll == 3:
        return rng.choice(STRINGS)
    if roll == 4:
        return _Literal(rng.choice(JSON_LITERALS[:12]))
    if roll == 5:
        return [_interesting_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if roll == 6:
        return {rng.choice(("height", "glimpse_size", "a", "")): _interesting_value(rng, depth + 1)}
    return [rng.choice(STRINGS) for _ in range(rng.choice((0, 1, 9, 10, 11, 10_000, 10_001)))]


class _Literal(str):
    """JSON text written as is (NaN, 1e999, 5000-digit integers …), which json.dumps of a Python value cannot give."""


def _dumps(value: Any) -> str:
    """json.dumps, with every ``_Literal`` inside written as its raw text."""
    literals: list[str] = []

    def collect(node):
        if isinstance(node, _Literal):
            literals.append(str(node))
            return f"\x00literal{len(literals) - 1}\x00"
        if isinstance(node, list):
            return [collect(item) for item in node]
        if isinstance(node, dict):
            return {key: collect(item) for key, item in node.items()}
        return node

    text = json.dumps(collect(value))
    for index, literal in enumerate(literals):
        text = text.replace(json.dumps(f"\x00literal{index}\x00"), literal)
    return text


def _replace_somewhere(value: Any, rng: random.Random) -> Any:
    """``value`` with one node of its JSON tree (maybe the root) replaced by an interesting value."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: _replace_somewhere(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        return value[:index] + [_replace_somewhere(value[index], rng)] + value[index + 1 :]
    return _interesting_value(rng)


def metadata_replace_value(model, rng):
    """One value inside a ``ram.*`` JSON tree replaced: wrong types, huge or non-finite numbers, odd strings."""
    key = _ram_key(model, rng)
    entry = _metadata(model).get(key)
    try:
        value = json.loads(entry.value) if entry is not None else None
    except (ValueError, RecursionError):  # a mutant of a mutant may hold the deep nesting
        value = None
    _set_metadata(model, key, _dumps(_replace_somewhere(value, rng)))
    return f"{key} → {_metadata(model)[key].value[:120]!r}"


def metadata_raw_text(model, rng):
    """A ``ram.*`` value that is not JSON, or JSON that only Python reads (NaN, 1e999, deep nesting)."""
    key = _ram_key(model, rng)
    entry = _metadata(model).get(key)
    original = entry.value if entry is not None else ""
    roll = rng.randrange(4)
    if roll == 0:
        text = rng.choice(JSON_LITERALS)
    elif roll == 1:
        text = original[: rng.randrange(len(original) + 1)]
    elif roll == 2 and original:
        index = rng.randrange(len(original))
        text = original[:index] + rng.choice(("", "[", "{", '"', "\\", "\x00", "NaN", ",")) + original[index + 1 :]
    else:
        text = "x" * rng.choice((1 << 10, 1 << 16, 1 << 22))
    _set_metadata(model, key, text)
    return f"{key} raw → {text[:120]!r}"


def metadata_keys(model, rng):
    """Deletes a ``ram.*`` key, repeats one with another value, or adds odd keys (``ram.graph``, near-misses)."""
    props = model.metadata_props
    roll = rng.randrange(4)
    if roll == 0 and len(props):
        index = rng.randrange(len(props))
        key = props[index].key
        del props[index]
        return f"deleted metadata {key!r}"
    if roll == 1 and len(props):
        entry = rng.choice(props)
        props.add(key=entry.key, value=_dumps(_interesting_value(rng)))
        return f"metadata {entry.key!r} twice"
    if roll == 2:
        del props[:]
        return "no metadata"
    key = rng.choice(("ram.graph", "ram.", "ram.unknown", "RAM.sensor", "ram.sensor ", " ram.labels", "", INVALID_UTF8))
    props.add(key=key, value=rng.choice(('"episode"', "1", "", INVALID_UTF8)))
    return f"metadata key {key!r} added"


def metadata_labels(model, rng):
    """Labels with control, bidi, NUL, invalid-surrogate or very long strings (as many as the logits, usually)."""
    count = 10 if rng.random() < 0.7 else rng.choice((0, 1, 9, 11, 10_000, 10_001))
    labels = [rng.choice(STRINGS) if rng.random() < 0.5 else str(i) for i in range(count)]
    text = json.dumps(labels, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.1:
        text = text.replace('"0"', INVALID_UTF8, 1) if '"0"' in text else text
    _set_metadata(model, "ram.labels", text)
    return f"ram.labels → {text[:120]!r}"


def metadata_at_limits(model, rng):
    """Sizes the graph does not fix, set at and around their limits, so that products reach theirs."""
    for _ in range(rng.randint(1, 3)):
        path, choices = rng.choice(LIMIT_EDITS)
        key, *inner = path.rsplit(".", 1) if path.count(".") == 2 else (path,)
        entry = _metadata(model).get(key)
        try:
            value = json.loads(entry.value) if entry is not None else {}
        except (ValueError, RecursionError):  # a mutant of a mutant may hold the deep nesting
            value = {}
        if inner and isinstance(value, dict):
            value[inner[0]] = rng.choice(choices)
        else:
            value = rng.choice(choices)
        _set_metadata(model, key, json.dumps(value))
    return "sizes near limits: " + ", ".join(f"{e.key}={e.value[:60]}" for e in model.metadata_props
                                              if e.key in ("ram.num_glimpses", "ram.input", "ram.sensor"))


STRUCTURE_MUTATIONS: tuple[Mutation, ...] = (
    set_op_type, set_node_domain, delete_node, duplicate_node, move_node, rewire_node, insert_node,
    splice_side_branch, splice_side_branch, add_attribute, mutate_attribute, insert_control_flow, add_function,
    add_training_info, mutate_initializer, mutate_initializer, external_constant, add_initializer, delete_initializer,
    add_sparse_initializer, mutate_port_type, mutate_port_type, mutate_ports, add_value_info, mutate_opset,
    mutate_ir_version, mutate_model_strings,
)
METADATA_MUTATIONS: tuple[Mutation, ...] = (
    metadata_replace_value, metadata_replace_value, metadata_raw_text, metadata_keys, metadata_labels,
    metadata_at_limits, metadata_at_limits,
)


def _short(message: Any) -> str:
    return " ".join(str(message).split())[:120]


def mutate_structure(data: bytes, rng: random.Random) -> tuple[bytes, list[str]] | None:
    """1–4 structure-aware edits of the serialized model; None when the bytes do not parse as an ONNX model."""
    onnx = _onnx()
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception:  # a pool member edited at the byte level: upb refuses what it cannot parse
        return None
    done = []
    for _ in range(1 + min(3, int(rng.expovariate(1.0)))):
        mutation = rng.choice(METADATA_MUTATIONS if rng.random() < 0.35 else STRUCTURE_MUTATIONS)
        try:
            what = mutation(model, rng)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError) as error:
            # The onnx API refused the edit (a lone surrogate in a str field, a value out of range): no mutation.
            what = None
            done.append(f"not applied: {mutation.__name__} ({type(error).__name__}: {_short(error)})")
        if what:
            done.append(f"{mutation.__name__}: {what}")
    serialized = model.SerializeToString()
    return serialized.replace(INVALID_UTF8.encode(), INVALID_UTF8_BYTES), done


# --- byte-level mutations --------------------------------------------------------------------------------------------


BYTE_EDITS = ("flip", "special", "truncate", "delete", "repeat", "splice", "insert")


def mutate_bytes(data: bytes, rng: random.Random, donors: list[bytes]) -> tuple[bytes, list[str]]:
    """1–8 byte edits: flips, special bytes, truncation, deletion, repeats, splices from another model, inserts.

    Most land in the first or last 4 kB: the nodes come first and the ports, opsets and metadata last in a serialized
    model, while the middle is weights (a flip there only changes a number)."""
    b = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 8)):
        if not b:
            break
        i = _position(len(b), rng)
        kind = rng.randrange(len(BYTE_EDITS))
        if kind == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[i] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF))
        elif kind == 2:
            del b[i:]
        elif kind == 3:
            del b[i : i + rng.randint(1, 64)]
        elif kind == 4:
            b[i:i] = b[i : i + rng.randint(1, 64)] * rng.randint(1, 4)
        elif kind == 5:
            donor = rng.choice(donors)
            j = _position(len(donor), rng)
            b[i : i + rng.randint(0, 256)] = donor[j : j + rng.randint(1, 256)]
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        done.append(f"bytes_{BYTE_EDITS[kind]}: at {i}")
    return bytes(b), done


def _position(size: int, rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.35:
        return rng.randrange(min(size, 4096))
    if roll < 0.7:
        return size - 1 - rng.randrange(min(size, 4096))
    return rng.randrange(size)


def make_mutant(data: bytes, rng: random.Random, donors: list[bytes]) -> tuple[bytes, list[str]]:
    """Mostly structure-aware edits, some followed by byte edits, some byte edits alone."""
    roll = rng.random()
    if roll < 0.85:
        structured = mutate_structure(data, rng)
        if structured is not None:
            data, done = structured
            if roll < 0.7:
                return data, done
            mutated, more = mutate_bytes(data, rng, donors)
            return mutated, done + more
    return mutate_bytes(data, rng, donors)


def special_path(kind: str, directory: Path) -> Path:
    """A path that is not a regular model file: what ``read_model`` must refuse before opening it."""
    path = directory / f"special-{kind}.onnx"
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif os.path.lexists(path):
        path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "symlink-to-hostname":
        path.symlink_to("/etc/hostname")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "symlink-loop":
        path.symlink_to(path)
    return path


# --- the worker: load and predict, in a process of its own ---------------------------------------------------------


def random_images(input_format: Any, image_seed: int):
    """1 or 2 random images in the model's input format."""
    import numpy as np

    rng = np.random.default_rng(image_seed)
    shape = (1 + image_seed % 2, input_format.channels, input_format.height, input_format.width)
    return rng.random(shape, dtype=np.float32)


def check_model(path: str, image_seed: int) -> dict[str, Any]:
    """Loads the model and predicts random images of its input shape (whole episodes, then early exit with the steps).

    Only the documented exceptions are caught: any other escapes to the caller, which reports it as a finding.
    """
    from ram_infer import ModelFormatError, load_model

    try:
        engine = load_model(path, threads=1)
    except (ModelFormatError, FileNotFoundError) as error:
        return {"outcome": f"refused at load ({type(error).__name__})", "message": message_kind(str(error), path)}
    images = random_images(engine.info.input, image_seed)
    try:
        engine.predict(images)
        engine.predict(images, early_exit=0.5, batch_size=1, steps=True)
    except ModelFormatError as error:
        return {"outcome": "loaded, refused at predict", "message": message_kind(str(error), path)}
    return {"outcome": "loaded and predicted"}


def message_kind(message: str, path: str) -> str:
    """The message without the file name, quoted names and numbers: what kind of refusal it is."""
    text = message.removeprefix(f"{path}: ")
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"/\S+", "/…", text)  # ONNX Runtime's source paths
    text = re.sub(r"\b0x[0-9a-fA-F]+", "0x…", text)  # the byte a UTF-8 decoder stopped at, addresses
    return re.sub(r"(?<![\w.])-?\d+(\.\d+)?(e[+-]?\d+)?(?!\w)", "N", text)[:150]


def run_case(request: dict[str, Any]) -> dict[str, Any]:
    """One mutant, with its exception (if not a documented one), warnings, time and the process's peak memory."""
    begin = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = check_model(request["path"], request["image_seed"])
        except BaseException as error:  # what this fuzzer looks for: anything else escaping, MemoryError included
            result = {"outcome": "exception", "kind": type(error).__name__, "message": _short(error),
                      "trace": traceback.format_exc(), "place": _place(error)}
    result["seconds"] = time.monotonic() - begin
    result["warnings"] = [f"{w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})" for w in caught]
    result["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def memory_bound() -> int:
    """The most a case may hold: ONNX Runtime's arena bound (2 GiB) plus headroom; more is a memory finding."""
    from ram_infer import engine

    return getattr(engine, "ORT_MEMORY_BYTES", 2 << 30) + HEADROOM_BYTES


def _limit_address_space() -> None:
    limit = memory_bound() + ADDRESS_SPACE_MARGIN
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _place(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def worker_main() -> int:
    """Reads one JSON request per line on stdin, answers one JSON line each on the original stdout.

    Stray prints (ours or a library's) go to stderr, so they cannot break the protocol, and the supervisor sees them.
    """
    import faulthandler

    _limit_address_space()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported, not dumped
    faulthandler.enable()  # a native crash leaves the Python stack on stderr
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr  # line-buffered: a print lands in the log before the answer to its own case
    import ram_infer.engine  # noqa: F401  (imported before the first request: its time is not a case's)

    answers.write('{"ready": true}\n')
    answers.flush()
    for line in sys.stdin:
        answers.write(json.dumps(run_case(json.loads(line))) + "\n")
        answers.flush()
    return 0


class Worker:
    """The supervisor's side of one worker process: started on demand, killed after a hang or crash."""

    def __init__(self, stderr_path: Path):
        self.stderr_path = stderr_path
        self.process: subprocess.Popen | None = None
        self.process_status: int | str = 0  # its exit status, or the signal that ended it
        self.buffer = b""

    def start(self) -> None:
        self.stderr = open(self.stderr_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT,
        )
        self.buffer = b""
        ready = self._read_line(time.monotonic() + 120)
        if ready is None:
            raise RuntimeError(f"the worker did not start: {self.stderr_tail(0)}")

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """The worker's answer, or ``{"outcome": "hang" | "crash"}`` (after which the worker is restarted)."""
        if self.process is None:
            self.start()
        stderr_before = self.stderr_path.stat().st_size
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: the read below sees the end
        line = self._read_line(time.monotonic() + HANG_SECONDS)
        if line is None:
            timed_out = self.process.poll() is None
            self.stop()
            status = "hang" if timed_out else f"crash (exit status {self.process_status})"
            result = {"outcome": "hang" if timed_out else "crash", "kind": status, "message": status, "place": "-"}
        else:
            result = json.loads(line)
        result["stderr"] = self.stderr_tail(stderr_before)
        return result

    def _read_line(self, deadline: float) -> bytes | None:
        stdout = self.process.stdout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([stdout], [], [], remaining)[0]:
                return None
            chunk = os.read(stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def stderr_tail(self, since: int) -> str:
        with open(self.stderr_path, "rb") as file:
            file.seek(since)
            return file.read(8192).decode("utf-8", "backslashreplace")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process_status = self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(BrokenPipeError):  # what a dead worker did not read
                pipe.close()
        if self.process_status < 0:
            self.process_status = signal.Signals(-self.process_status).name
        self.process = None
        self.stderr.close()


# --- the supervisor --------------------------------------------------------------------------------------------------


def finding_of(result: dict[str, Any]) -> tuple[str, str] | None:
    """``(kind, signature)`` when the outcome is a finding, else None."""
    outcome = result["outcome"]
    if outcome in ("hang", "crash"):
        return outcome, result["kind"]
    if outcome == "exception":
        return result["kind"], f"{result['kind']} at {result['place']}: {message_kind(result['message'], '')[:80]}"
    if ALLOCATION_FAILURE.search(result.get("message", "")):
        return "memory", f"allocation refused: {result['message'][:80]}"
    if result["max_rss"] > memory_bound():
        return "memory", f"peak RSS over {memory_bound() >> 20} MiB"
    if result["seconds"] > SLOW_SECONDS:
        return "slow", f"{outcome}, over {SLOW_SECONDS:.0f} s"
    if result["warnings"]:
        return "warning", result["warnings"][0][:100]
    if result["stderr"]:
        first_line = re.sub(r"\x1b\[[0-9;]*m|\d{4}-\d\d-\d\d [\d:.]+", "", result["stderr"].splitlines()[0])
        return "stderr", message_kind(first_line.strip(), "")[:100]
    return None


class Campaign:
    """Counts outcomes and saves findings under ``out``."""

    def __init__(self, out: Path):
        self.out = out
        self.outcomes: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.signatures: Counter[str] = Counter()
        self.by_mutation: dict[str, Counter[str]] = {}  # which edits get mutants past the checks
        self.findings = 0
        self.slowest = (0.0, "")

    def record(self, seed_name: str, data: bytes | None, done: list[str], result: dict[str, Any]) -> str | None:
        self.outcomes[result["outcome"]] += 1
        if "message" in result and result["outcome"] not in ("exception", "hang", "crash"):
            self.messages[f"{result['outcome']}: {result['message']}"] += 1
        if result.get("seconds", 0) > self.slowest[0]:
            self.slowest = (result["seconds"], seed_name)
        finding = finding_of(result)
        reached = "finding" if finding else "predicted" if result["outcome"] == "loaded and predicted" else "refused"
        for mutation in {what.split(":")[0] for what in done}:
            self.by_mutation.setdefault(mutation, Counter())[reached] += 1
        if finding is None:
            return None
        kind, signature = finding
        self.findings += 1
        self.outcomes[f"finding {kind}"] += 1
        self.signatures[signature] += 1
        if self.signatures[signature] <= SAVED_PER_SIGNATURE:
            self._save(kind, seed_name, data, done, result)
        return kind

    def _save(self, kind: str, seed_name: str, data: bytes | None, done: list[str], result: dict[str, Any]) -> None:
        stem = f"finding_{self.findings:03d}_{re.sub(r'[^A-Za-z0-9]+', '-', kind)}_{seed_name.removesuffix('.onnx')}"
        lines = [f"seed: {seed_name}", "mutations:", *(f"  {what}" for what in done), f"outcome: {kind}"]
        lines += [f"{name}: {result[name]}" for name in ("seconds", "max_rss", "message", "warnings") if name in result]
        lines += ["", result.get("trace", ""), "stderr:", result.get("stderr", "")]
        if data is not None:
            (self.out / f"{stem}.onnx").write_bytes(data)
            lines.insert(0, f"replay: python fuzz/fuzz_models.py --replay {self.out / stem}.onnx")
        (self.out / f"{stem}.txt").write_text("\n".join(lines), encoding="utf-8", errors="backslashreplace")

    def summary(self, elapsed: float, seed: int) -> dict[str, Any]:
        total = sum(count for outcome, count in self.outcomes.items() if not outcome.startswith("finding "))
        return {
            "mutants": total, "seconds": round(elapsed, 1), "per_second": round(total / elapsed, 1), "seed": seed,
            "outcomes": dict(sorted(self.outcomes.items())), "findings": self.findings,
            "finding_signatures": dict(self.signatures.most_common()),
            "slowest_case_seconds": round(self.slowest[0], 2), "slowest_case_seed": self.slowest[1],
            "by_mutation": {name: dict(counts) for name, counts in sorted(self.by_mutation.items())},
            "messages": dict(self.messages.most_common()),
        }


def _weights(count: int) -> list[float]:
    """Seeds are ordered smallest first; the k-th is picked with weight 1/k, so small models make most mutants."""
    return [1 / (rank + 1) for rank in range(count)]


def run(seconds: float, out: Path, seed: int, count: int | None = None, tiny: bool = True) -> int:
    """Fuzzes for ``seconds`` or ``count`` mutants, whichever ends first; writes findings under ``out``.

    Returns:
        The number of findings (0 is a clean run).
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    seeds = seed_models(tiny)
    names, donors = list(seeds), list(seeds.values())
    pool: list[tuple[str, bytes]] = []
    campaign = Campaign(out)
    worker = Worker(out / "worker-stderr.log")
    path = out / "current.onnx"
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds and (count is None or sum(campaign.outcomes.values()) -
                                                         campaign.findings < count):
            if rng.random() < 0.02:
                kind = rng.choice(SPECIAL_PATHS)
                data, done, name, target = None, [f"special path: {kind}"], kind, special_path(kind, out)
            else:
                name, base = rng.choice(pool) if pool and rng.random() < 0.3 else _choose_seed(names, seeds, rng)
                data, done = make_mutant(base, rng, donors)
                path.write_bytes(data)
                target = path
            result = worker.run({"path": str(target), "image_seed": rng.randrange(1 << 30)})
            finding = campaign.record(name, data, done, result)
            if finding in ("hang", "crash", "memory"):
                worker.stop()  # a fresh process: its peak memory and state start again
            elif data is not None and result["outcome"] == "loaded and predicted" and finding is None:
                _add_to_pool(pool, (name, data), rng)
    finally:
        worker.stop()
        path.unlink(missing_ok=True)
    summary = campaign.summary(time.monotonic() - started, seed)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    _print_summary(summary, out)
    return campaign.findings


def _choose_seed(names: list[str], seeds: dict[str, bytes], rng: random.Random) -> tuple[str, bytes]:
    name = rng.choices(names, weights=_weights(len(names)))[0]
    return name, seeds[name]


def _add_to_pool(pool: list[tuple[str, bytes]], entry: tuple[str, bytes], rng: random.Random) -> None:
    if len(pool) < POOL_SIZE:
        pool.append(entry)
    else:
        pool[rng.randrange(POOL_SIZE)] = entry


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    total, elapsed = summary["mutants"], summary["seconds"]
    print(f"{total} mutants in {elapsed:.0f} s ({summary['per_second']:.1f}/s), seed {summary['seed']}: "
          f"{summary['outcomes']}")
    print(f"slowest case {summary['slowest_case_seconds']} s ({summary['slowest_case_seed']})")
    print("most frequent refusals:")
    for message, count in list(summary["messages"].items())[:25]:
        print(f"  {count:7d}  {message}")
    if summary["findings"]:
        print(f"findings: {summary['findings']} (saved in {out})")
        for signature, count in summary["finding_signatures"].items():
            print(f"  {count:7d}  {signature}")
    else:
        print("findings: none")


def replay(paths: list[Path]) -> int:
    """Runs saved mutants in this process and prints each outcome (a traceback for a finding)."""
    _limit_address_space()  # a memory bomb fails here too
    findings = 0
    for path in paths:
        result = run_case({"path": str(path), "image_seed": 0})
        result.setdefault("stderr", "")
        finding = finding_of(result)
        findings += finding is not None
        print(f"{path}: {result['outcome']} {result.get('message', '')} ({result['seconds']:.2f} s)")
        if finding is not None:
            print(f"  finding: {finding[0]}: {finding[1]}\n{result.get('trace', '')}")
    return 1 if findings else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run")
    parser.add_argument("--out", type=Path, default=Path("build/fuzz/models"), help="where findings are saved")
    parser.add_argument("--count", type=int, default=None, help="stop after this many mutants (a repeatable run)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the mutants tried follow from it)")
    parser.add_argument("--no-tiny", action="store_true", help="only the bundled models as seeds (no torch export)")
    parser.add_argument("--replay", type=Path, nargs="+", help="run saved mutants here and print their outcome")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()
    if args.replay:
        return replay(args.replay)
    return 1 if run(args.seconds, args.out, args.seed, args.count, tiny=not args.no_tiny) else 0


if __name__ == "__main__":
    sys.exit(main())
