"""RAM inference cost against its peers: ram-infer, the same RAM in eager PyTorch, and CNNs in ONNX Runtime.

Run from the repository root (writes benchmarks/results/engine.md and engine.png, recording the machine):

    python benchmarks/bench_engine.py [--quick] [--ram-model mnist mnist_small] [--data data/mnist]

Contenders, all measured in this run on the same MNIST test images:

- ram-infer: ``ram_infer.load_model(...).predict`` (compiled sensor + ONNX Runtime step loop), 1 and 2 threads, and
  one extra row with early exit; on MNIST for each model given (default: the paper-size ``mnist`` and the compact
  ``mnist_small``), each with its own eager peer and targets;
- eager PyTorch RAM (benchmarks/eager_ram.py): the same network, its weights read from the same ONNX file, written
  as kevinzakka/recurrent-visual-attention writes it; its labels are checked against ram-infer's before any timing;
- the full-episode ONNX model (training/episode.py: the sensor in standard ONNX operators, all T steps in one graph)
  in plain ONNX Runtime, what an edge app without our extension runs; built from the same step model;
- CNN baselines in ONNX Runtime (benchmarks/cnns.py, trained by benchmarks/train_cnn.py on the same data): the
  paper's convolutional net and a ResNet-8.

Besides the contenders, ram-infer's batch-1 call is profiled: its step network and sensor calls timed alone, and the
floor, the T steps chained in one ONNX Runtime call (what an episode would cost without a call per step).

Each contender runs in its own fresh process, so its peak RSS is its own (the RAM runtime never imports torch).
Batch-1 latency is the time of one call on one image (median and 99th percentile over many calls cycling through
the images); throughput is images per second of calls on 256 images. The image-size sweep places the test digits at
random positions on square canvases from 28 to 800 px and times batch-1 calls on one thread: RAM with its fixed
glimpses against the CNNs applied to the whole image (random weights beyond their trained size: timing only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import REPO, machine_details, markdown_lines

BENCHMARKS = Path(__file__).resolve().parent
CNN_MODELS = BENCHMARKS / "models"
CNN_NAMES = {"paper_cnn": "paper CNN (ONNX Runtime)", "resnet8": "ResNet-8 (ONNX Runtime)"}
RAM_NAME, EAGER_NAME = "ram-infer", "eager PyTorch RAM"
EPISODE_NAME = "full-episode ONNX (ONNX Runtime only)"
EARLY_EXIT = 0.99  # the early-exit row stops an image once its top probability reaches this
BATCH = 256
THREADS = (1, 2)
SIDES = (28, 60, 100, 200, 400, 800)
TASKS_BEYOND_MNIST = ("translated60", "cluttered60", "cluttered100")
DEFAULT_MNIST_MODELS = ("mnist", "mnist_small")  # the paper-size network and a compact one (README, Models)
TARGETS = {"latency_ratio": 10.0, "latency_us": 150.0, "throughput_ratio": 5.0, "growth": 1.2}
MAX_CALLS = 100_000  # per latency measurement: plenty for a 99th percentile
MAX_LABEL_DISAGREEMENT = 0.001  # eager float32 pooling vs the sensor's float64 sums may flip a near-tie, nothing more


# ---------------------------------------------------------------- worker side: one contender in a fresh process


def _predictor(kind: str, model: str, threads: int, early_exit: float | None):
    """A function images (ndarray[N, C, H, W], float32) → probabilities (ndarray[N, classes]) and glimpses used."""
    if kind == "ram":
        from ram_infer import load_model

        engine = load_model(model, threads=threads)

        def ram(x):
            prediction = engine.predict(x, early_exit=early_exit)
            return prediction.probabilities, prediction.glimpses_used

        return ram
    if kind == "eager":
        import torch
        from eager_ram import EagerRAM

        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        eager = EagerRAM.from_onnx(model)

        def peer(x):
            return eager.episode(torch.from_numpy(x), 0)[0].exp().numpy(), None

        return peer
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed, output = session.get_inputs()[0].name, session.get_outputs()[0].name  # a CNN's or the episode's logits

    def onnx_model(x):
        (logits,) = session.run([output], {feed: x})
        return logits, None

    return onnx_model


def _time_calls(call, seconds: float, min_calls: int) -> np.ndarray:
    """µs of each ``call(i)``, i = 0, 1, …, for at least ``seconds`` and ``min_calls`` calls (at most MAX_CALLS, kept
    in a preallocated array so that a fast contender's peak RSS does not grow with its timings)."""
    times = np.empty(MAX_CALLS)
    count = 0
    start = time.perf_counter()
    while count < MAX_CALLS and (count < min_calls or time.perf_counter() - start < seconds):
        begin = time.perf_counter_ns()
        call(count)
        times[count] = (time.perf_counter_ns() - begin) / 1e3
        count += 1
    return times[:count]


def _latency(predict, images: np.ndarray, seconds: float, min_calls: int) -> list[float]:
    """Median and 99th percentile in µs of batch-1 calls, cycling through ``images``, after a warm-up."""
    rows = [images[i : i + 1] for i in range(len(images))]
    for row in rows[: min(len(rows), 20)]:
        predict(row)
    times = _time_calls(lambda i: predict(rows[i % len(rows)]), seconds, min_calls)
    return [float(np.median(times)), float(np.percentile(times, 99))]


def _throughput(predict, images: np.ndarray, seconds: float, min_calls: int) -> float:
    """Images per second: ``len(images)`` over the median time of a call on all of them, after a warm-up call."""
    predict(images)
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        predict(images)
        times.append(time.perf_counter() - begin)
    return len(images) / statistics.median(times)


def _accuracy(predict, images: Path, labels: Path, save: str | None) -> dict[str, float]:
    """Test accuracy (and mean glimpses) over the test set in batches; saves the probabilities if asked."""
    x, y = np.load(images), np.load(labels)
    probabilities, glimpses = [], []
    for begin in range(0, len(x), BATCH):
        p, used = predict(x[begin : begin + BATCH])
        probabilities.append(p)
        glimpses.append(used)
    p = np.concatenate(probabilities)
    if save:
        np.save(save, p)
    result = {"accuracy": float((p.argmax(axis=1) == y).mean())}
    if glimpses[0] is not None:
        result["glimpses"] = float(np.concatenate(glimpses).mean())
    return result


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB: Linux's VmHWM, which starts afresh at exec (unlike ru_maxrss,
    which a child inherits from the parent it was forked from)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="utf-8")
    except OSError:  # not Linux: ru_maxrss (kB on Linux, bytes on macOS; the parent's peak may show through)
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _profile_steps(model: str, images: np.ndarray, seconds: float, min_calls: int) -> dict[str, float]:
    """Median µs of one batch-1 step's two calls in ram-infer's loop (1 thread): the step network's
    ``run_with_iobinding`` and the sensor, each timed alone through the engine's own workspace."""
    from ram_infer import load_model

    engine = load_model(model, threads=1)
    sensor, T = engine.info.sensor, engine.info.num_glimpses
    profile = engine.profile_step(images[:1])  # a middle step: its location and state came from the model
    run_unrolled = _unrolled_steps_call(engine, profile)
    timings = {}
    calls = (("step_network_us", profile.run_step), ("sensor_us", profile.take_glimpse),
             ("unrolled_steps_us", run_unrolled))
    for name, call in calls:
        for _ in range(100):
            call()
        timings[name] = float(np.median(_time_calls(lambda i, call=call: call(), seconds / 3, min_calls)))
    return {**timings, "glimpses": T, "sensor": [sensor.glimpse_size, sensor.num_scales, sensor.scale_factor]}


def build_unrolled_steps_model(step_model):
    """The step network's T steps chained in one graph with no sensor: step t reads its own input ``glimpse_t``.

    Not a RAM model (its glimpses do not follow its locations): it measures what the step network alone costs in
    one ONNX Runtime call, the floor of any runtime that runs these T steps. Each step needs its own glimpse input:
    with one shared input, ONNX Runtime's common-subexpression elimination computes the glimpse network once for all
    steps and the graph measures less than an episode costs. Inputs are ``glimpse_0`` … ``glimpse_{T-1}``,
    ``location`` and ``state``; the output is the last step's ``logits``. The steps are copied as the full-episode
    model copies them (ram_infer.training.episode), so both read the step model's one set of weights.

    Args:
        step_model (onnx.ModelProto): a step network with its ``ram.*`` metadata.

    Returns:
        onnx.ModelProto: the unrolled steps.
    """
    import onnx
    from onnx import helper

    from ram_infer.metadata import STEP_INPUTS, ModelInfo
    from ram_infer.training.episode import GraphBuilder, copy_step, metadata_map

    step = step_model.graph
    T = ModelInfo.from_metadata_props(metadata_map(step_model), "step model").num_glimpses
    glimpses = [f"glimpse_{t}" for t in range(T)]
    b = GraphBuilder(reserved=[t.name for t in step.initializer] + list(STEP_INPUTS) + glimpses)
    outputs = {"state_next": "state", "location_next": "location"}
    for t in range(T):
        outputs = copy_step(b, step, {"glimpse": glimpses[t], "location": outputs["location_next"],
                                      "state": outputs["state_next"]}, f"step{t}")
    b.nodes.append(helper.make_node("Identity", [outputs["logits"]], ["logits"], name="steps/logits"))
    glimpse_input = next(v for v in step.input if v.name == "glimpse")
    inputs = [onnx.ValueInfoProto() for _ in glimpses]
    for value, name in zip(inputs, glimpses):
        value.CopyFrom(glimpse_input)
        value.name = name
    logits = next(v for v in step.output if v.name == "logits")
    graph = helper.make_graph(b.nodes, "ram_unrolled_steps",
                              inputs + [v for v in step.input if v.name != "glimpse"], [logits],
                              initializer=list(step.initializer))
    model = helper.make_model(graph, opset_imports=list(step_model.opset_import))
    model.ir_version = step_model.ir_version
    return model


def _unrolled_steps_call(engine, profile):
    """One ONNX Runtime call of the step network's T steps chained in one graph (``build_unrolled_steps_model``),
    every step bound to the profiled step's glimpse, IOBinding as in ram-infer's loop: what the T steps cost with no
    sensor and no Python between them."""
    import onnx
    import onnxruntime as ort

    from ram_infer.engine import repeatable_run

    unrolled = build_unrolled_steps_model(onnx.load(str(engine.path))).SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(unrolled, options, providers=["CPUExecutionProvider"])
    logits = np.empty_like(profile.logits)
    binding = session.io_binding()
    glimpses = [(binding.bind_input, f"glimpse_{t}", profile.glimpse) for t in range(engine.info.num_glimpses)]
    for bind, name, array in (*glimpses,
                              (binding.bind_input, "location", profile.location),
                              (binding.bind_input, "state", profile.state),
                              (binding.bind_output, "logits", logits)):
        bind(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
    return repeatable_run(session, binding)  # as the engine calls it (the wrapper costs more as graphs grow)


def run_worker(spec: dict) -> dict:
    """Measures one contender as ``spec`` says (see ``_measure``); called in a fresh process by ``--worker``."""
    results = []
    rss_mb = None
    for job in spec["jobs"]:
        predict = _predictor(spec["kind"], job["model"], spec["threads"], spec.get("early_exit"))
        images = np.load(job["inputs"])
        result = {"latency_us": _latency(predict, images, spec["seconds"], spec["min_calls"])}
        if job.get("throughput"):
            result["images_per_s"] = _throughput(predict, images[:BATCH], spec["seconds"], spec["min_calls"])
        if rss_mb is None:  # after timing, before the profile and the test set: what serving costs
            rss_mb = _peak_rss_mb()
        if job.get("profile"):
            result["profile"] = _profile_steps(job["model"], images, spec["seconds"], spec["min_calls"])
        if job.get("test"):
            result.update(_accuracy(predict, *job["test"], job.get("save")))
        results.append(result)
    return {"jobs": results, "rss_mb": rss_mb}


# ---------------------------------------------------------------- main side: data, models, workers, report


def _measure(kind: str, threads: int, jobs: list[dict], settings: dict, early_exit: float | None = None) -> dict:
    """Runs one contender in a fresh interpreter (``--worker``) and returns its JSON result."""
    spec = {"kind": kind, "threads": threads, "early_exit": early_exit, "jobs": jobs, **settings}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} ({threads} threads) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sweep_inputs(digits: np.ndarray, side: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` test digits at uniformly random positions on ``side``×``side`` canvases, (count, 1, side, side)."""
    from ram_infer.training.data import Task, compose

    return compose(digits[:count], digits, Task(f"translated{side}", side, 0), np.random.default_rng([seed, side]))


def _ram_at_side(model: Path, side: int, directory: Path) -> Path:
    """A copy of the RAM step network whose ``ram.input`` says side×side: same weights and sensor, larger canvas."""
    import onnx

    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == "ram.input":
            shape = json.loads(prop.value)
            shape.update(height=side, width=side)
            prop.value = json.dumps(shape, sort_keys=True)
    path = directory / f"ram_{side}.onnx"
    onnx.save(proto, str(path))
    return path


def _cnn_at_side(name: str, side: int, directory: Path) -> Path:
    """The CNN ``name`` built for side×side images with fixed random weights (timing only), exported to ONNX."""
    import torch
    from cnns import build, export_onnx

    torch.manual_seed(0)
    path = directory / f"{name}_{side}.onnx"
    export_onnx(build(name, side, side), path, side, side)
    return path


def _episode_of(model: Path, directory: Path) -> Path:
    """The full-episode ONNX model made from the step model ``model`` (ram_infer.training.episode)."""
    from ram_infer.training.episode import export_episode

    return export_episode(model, directory / f"episode_{model.stem}.onnx")


def _state_dict_bytes(model: Path, directory: Path) -> int:
    """Bytes of the eager peer's weights saved the way PyTorch code ships them (``torch.save`` of a state_dict)."""
    import torch
    from eager_ram import EagerRAM

    path = directory / "eager_ram.pt"
    torch.save(EagerRAM.from_onnx(model).state_dict(), path)
    return path.stat().st_size


def measure_task(task: str, dataset: str, model: Path, cnn_models: dict[str, Path], test: tuple[Path, Path],
                 inputs: Path, directory: Path, settings: dict, threads: tuple[int, ...]) -> list[dict]:
    """One RAM model's rows on its data set (``task`` names its table): ram-infer (and its early exit at 1 thread),
    the eager peer where the core is the paper's RNN, the full-episode ONNX model, and the CNNs, each at every thread
    count in ``threads``."""
    from eager_ram import supports

    contenders = [("ram", RAM_NAME, model, None), ("ram", f"{RAM_NAME}, early exit at p ≥ {EARLY_EXIT}", model,
                                                                  EARLY_EXIT)]
    if supports(model):
        contenders.append(("eager", EAGER_NAME, model, None))
    contenders.append(("episode", EPISODE_NAME, _episode_of(model, directory), None))
    contenders += [("cnn", CNN_NAMES[name], path, None) for name, path in cnn_models.items()]
    rows = []
    for kind, name, path, early_exit in contenders:
        for n in threads if early_exit is None else (1,):
            save = str(directory / f"{task}_{kind}_{early_exit}_{n}.npy")
            job = {"model": str(path), "inputs": str(inputs), "throughput": True, "test": [str(t) for t in test],
                   "save": save, "profile": name == RAM_NAME and n == 1}
            result = _measure(kind, n, [job], settings, early_exit)
            size = _state_dict_bytes(path, directory) if kind == "eager" else os.path.getsize(path)
            row = {"task": task, "dataset": dataset, "model": str(path), "name": name, "kind": kind,
                   "threads": n, "early_exit": early_exit,
                   "probabilities": save, "rss_mb": result["rss_mb"], "model_mb": size / 1e6, **result["jobs"][0]}
            rows.append(row)
            print(f"{task}: {name}, {n} thread(s): batch-1 {row['latency_us'][0]:,.1f} µs, "
                  f"{row['images_per_s']:,.0f} images/s, accuracy {row['accuracy']:.4f}", flush=True)
    return rows


def check_eager_parity(rows: list[dict]) -> dict[str, float]:
    """Eager vs ram-infer on one data set's whole test set: label disagreements and max |Δ probability|.

    Raises:
        RuntimeError: more than MAX_LABEL_DISAGREEMENT of the labels differ (they would not be the same network).
    """
    ours = np.load(_row(rows, RAM_NAME, 1)["probabilities"])
    peer = np.load(_row(rows, EAGER_NAME, 1)["probabilities"])
    disagree = int((ours.argmax(axis=1) != peer.argmax(axis=1)).sum())
    if disagree > MAX_LABEL_DISAGREEMENT * len(ours):
        raise RuntimeError(f"the eager peer disagrees with ram-infer on {disagree} of {len(ours)} test labels")
    return {"images": len(ours), "disagree": disagree, "max_dp": float(np.abs(ours - peer).max())}


def measure_sweep(model: Path, digits: np.ndarray, sides: tuple[int, ...], count: int, directory: Path,
                  settings: dict) -> dict[str, dict[int, list[float]]]:
    """Batch-1 latency [median, p99] µs on one thread of each contender at each canvas side."""
    inputs = {}
    for side in sides:
        inputs[side] = directory / f"sweep_{side}.npy"
        np.save(inputs[side], _sweep_inputs(digits, side, count))
    ram_models = {side: _ram_at_side(model, side, directory) for side in sides}
    contenders = {RAM_NAME: ("ram", ram_models), EAGER_NAME: ("eager", ram_models),
                  EPISODE_NAME: ("episode", {side: _episode_of(path, directory) for side, path in ram_models.items()})}
    for name, label in CNN_NAMES.items():
        contenders[label] = ("cnn", {side: _cnn_at_side(name, side, directory) for side in sides})
    latencies = {}
    for label, (kind, models) in contenders.items():
        jobs = [{"model": str(models[side]), "inputs": str(inputs[side])} for side in sides]
        result = _measure(kind, 1, jobs, settings)
        latencies[label] = {side: job["latency_us"] for side, job in zip(sides, result["jobs"])}
        print(f"sweep {label}: " + ", ".join(f"{s}px {v[0]:,.0f} µs" for s, v in latencies[label].items()), flush=True)
    return latencies


def crossover(sweep: dict[str, dict[int, list[float]]], cnn: str) -> str:
    """From which swept side on ram-infer's median latency beats ``cnn``'s (at that side and every larger one)."""
    sides = sorted(sweep[RAM_NAME])
    faster = [sweep[RAM_NAME][s][0] < sweep[cnn][s][0] for s in sides]
    if not faster[-1]:
        return f"at no size up to {sides[-1]} px"
    first = len(faster)
    while first > 0 and faster[first - 1]:
        first -= 1
    return f"from {sides[first]} px on" + (" (the smallest size measured)" if first == 0 else "")


def _row(rows: list[dict], name: str, threads: int) -> dict:
    return next(r for r in rows if r["name"] == name and r["threads"] == threads)


def _short(label: str) -> str:
    return label.split(" (")[0]


def targets(rows: list[dict], sweep: dict[str, dict[int, list[float]]] | None) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each of the issue's targets, from one MNIST model's rows and the sweep of this run
    (None: the size target is left out, the sweep being another model's)."""
    ours, peer = _row(rows, RAM_NAME, 1), _row(rows, EAGER_NAME, 1)
    threads = sorted({r["threads"] for r in rows})
    best_latency = min(_row(rows, RAM_NAME, n)["latency_us"][0] for n in threads)
    peer_best_latency = min(_row(rows, EAGER_NAME, n)["latency_us"][0] for n in threads)
    best_rate = max(_row(rows, RAM_NAME, n)["images_per_s"] for n in threads)
    peer_best_rate = max(_row(rows, EAGER_NAME, n)["images_per_s"] for n in threads)
    latency_ratio = peer["latency_us"][0] / ours["latency_us"][0]
    rate_ratio = ours["images_per_s"] / peer["images_per_s"]
    measured = [
        (f"batch-1: ram-infer ≥ {TARGETS['latency_ratio']:g}× faster than eager PyTorch RAM (1 thread each)",
         f"{latency_ratio:.1f}× ({ours['latency_us'][0]:,.1f} vs {peer['latency_us'][0]:,.1f} µs); each at its "
         f"better thread count: {peer_best_latency / best_latency:.1f}×",
         latency_ratio >= TARGETS["latency_ratio"]),
        (f"batch-1: ram-infer ≤ {TARGETS['latency_us']:g} µs/image ({ours['profile']['glimpses']}-glimpse MNIST "
         "model, 1 thread)",
         f"{ours['latency_us'][0]:,.1f} µs (p99 {ours['latency_us'][1]:,.1f} µs)",
         ours["latency_us"][0] <= TARGETS["latency_us"]),
        (f"batch {BATCH}: ram-infer throughput ≥ {TARGETS['throughput_ratio']:g}× eager PyTorch RAM (1 thread each)",
         f"{rate_ratio:.1f}× ({ours['images_per_s']:,.0f} vs {peer['images_per_s']:,.0f} images/s); each at its "
         f"better thread count: {best_rate / peer_best_rate:.1f}×",
         rate_ratio >= TARGETS["throughput_ratio"]),
    ]
    if sweep is None:
        return measured
    sides = sorted(sweep[RAM_NAME])
    small, large = (60 if 60 in sides else sides[0]), sides[-1]
    growth = sweep[RAM_NAME][large][0] / sweep[RAM_NAME][small][0]
    cnn_growth = ", ".join(f"{_short(c)} {sweep[c][large][0] / sweep[c][small][0]:,.1f}×" for c in CNN_NAMES.values())
    return measured + [(f"ram-infer batch-1 latency grows ≤ {TARGETS['growth']:g}× from {small} to {large} px",
                        f"{growth:.2f}× (CNNs: {cnn_growth})", growth <= TARGETS["growth"])]


def task_lines(task: str, rows: list[dict], parity: dict | None) -> list[str]:
    """One RAM model's table on its data set, and the eager peer's agreement with ram-infer."""
    canvas = {"mnist": "28×28", "translated60": "60×60", "cluttered60": "60×60", "cluttered100": "100×100"}
    dataset = rows[0]["dataset"]
    lines = [
        f"## {task if task == dataset else f'{task}: {dataset}'} {canvas.get(dataset, '')} "
        f"({len(np.load(rows[0]['probabilities'])):,} test images, "
        f"model `{Path(_row(rows, RAM_NAME, 1)['model']).name}`)",
        "",
        "| contender | threads | batch-1 median µs | batch-1 p99 µs | batch-256 images/s | peak RSS MB | model MB | "
        "glimpses | test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        glimpses = f"{r['glimpses']:.2f}" if "glimpses" in r else "—"
        lines.append(
            f"| {r['name']} | {r['threads']} | {r['latency_us'][0]:,.1f} | {r['latency_us'][1]:,.1f} | "
            f"{r['images_per_s']:,.0f} | {r['rss_mb']:,.0f} | {r['model_mb']:.2f} | {glimpses} | "
            f"{100 * r['accuracy']:.2f} % |"
        )
    ours = _row(rows, RAM_NAME, 1)
    profile = ours["profile"]
    loop = profile["glimpses"] * (profile["step_network_us"] + profile["sensor_us"])
    lines += [
        "",
        f"Where ram-infer's batch-1 time goes (1 thread, medians of each call timed alone): {profile['glimpses']} × "
        f"({profile['step_network_us']:.1f} µs step network in ONNX Runtime + {profile['sensor_us']:.1f} µs sensor) "
        f"= {loop:.1f} µs of the {ours['latency_us'][0]:.1f} µs per `predict` call; the rest is the Python loop, "
        "input checks, softmax and the result arrays.",
        "",
        f"Floor: the same {profile['glimpses']} steps chained in one ONNX Runtime call, with no sensor and no Python "
        f"between them, take {profile['unrolled_steps_us']:.1f} µs "
        f"({profile['unrolled_steps_us'] / profile['glimpses']:.1f} µs a step against "
        f"{profile['step_network_us']:.1f} µs as separate calls): the float32 weights are read once a "
        "step, so no ONNX Runtime loop of this network can take less.",
    ]
    if any(r["name"] == EAGER_NAME for r in rows):  # the eager peer runs the paper's RNN core only
        peer = _row(rows, EAGER_NAME, 1)
        floor = profile["unrolled_steps_us"] + profile["glimpses"] * profile["sensor_us"]
        lines[-1] += (f" With the compiled sensor that is {floor:.1f} µs, {peer['latency_us'][0] / floor:.1f}× faster "
                      "than the eager peer: the ceiling of the batch-1 ratio on this machine.")
    episode = _row(rows, EPISODE_NAME, 1)
    lines += [
        "",
        f"The same model as one full-episode ONNX graph in plain ONNX Runtime (no ram-infer, as an edge app runs it): "
        f"{episode['latency_us'][0]:,.1f} µs at batch 1 ({episode['latency_us'][0] / ours['latency_us'][0]:.1f}× "
        f"ram-infer's time) and {episode['images_per_s']:,.0f} images/s at batch {BATCH} "
        f"({episode['images_per_s'] / ours['images_per_s']:.2f}× ram-infer's rate); its sensor is 35–61 small "
        "standard operators per glimpse (2–4 scales) instead of one compiled call. Same answers: see "
        "tests/test_episode.py.",
    ]
    if parity:
        lines += [
            "",
            "Same network, checked before the ratios are computed: the eager peer (its weights read from the same "
            "ONNX file; its model size is their `torch.save`d state_dict) gives "
            f"{parity['images'] - parity['disagree']:,} of {parity['images']:,} ram-infer labels; "
            f"max |Δ probability| {parity['max_dp']:.1e}.",
        ]
    return lines + [""]


def target_lines(rows: list[dict], sweep: dict[str, dict[int, list[float]]] | None) -> list[str]:
    """The targets table of one MNIST model."""
    ours = _row(rows, RAM_NAME, 1)
    return [
        f"## Targets (ratios from this run): `{Path(ours['model']).name}`, {ours['model_mb']:.2f} MB, "
        f"{100 * (1 - ours['accuracy']):.2f} % test error",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *[f"| {t} | {m} | {'met' if ok else '**not met**'} |" for t, m, ok in targets(rows, sweep)],
        "",
    ]


def report(results: dict[str, list[dict]], parities: dict[str, dict], sweep: dict[str, dict[int, list[float]]],
           command: str, settings_text: str, machine: dict[str, str], load_after: tuple[float, ...]) -> list[str]:
    """The results as markdown: command, machine, targets, one table per data set, the size sweep."""
    lines = [
        "# RAM inference: ram-infer vs eager PyTorch RAM vs CNNs",
        "",
        f"Command: `{command}`",
        "",
        "Machine, before measuring:",
        *markdown_lines(machine),
        f"- load average after measuring: {', '.join(f'{v:.2f}' for v in load_after)}",
        "",
        settings_text,
        "",
    ]
    for task, rows in results.items():
        if rows[0]["dataset"] == "mnist":
            lines += target_lines(rows, sweep if task == "mnist" else None)
    for task, rows in results.items():
        lines += task_lines(task, rows, parities.get(task))
    profile = _row(results["mnist"], RAM_NAME, 1)["profile"]
    T, (g, k, s_) = profile["glimpses"], profile["sensor"]
    lines += [
        "## Image-size sweep: batch-1 median latency in µs (p99), one thread",
        "",
        f"RAM keeps the MNIST model's {T} glimpses ({g}×{g}, {k} scales of factor {s_}) on a larger canvas: the same "
        "weights, so its accuracy beyond 28 px is not measured (timing only). The CNNs take the whole image, with "
        "random weights (timing only); the paper CNN's fully connected layer grows with the pixel count, the "
        "ResNet-8's parameters do not.",
        "",
        "| side | " + " | ".join(sweep) + " |",
        "|---:|" + "---:|" * len(sweep),
    ]
    for side in sorted(sweep[RAM_NAME]):
        cells = " | ".join(f"{sweep[c][side][0]:,.0f} ({sweep[c][side][1]:,.0f})" for c in sweep)
        lines.append(f"| {side} px | {cells} |")
    lines += [""] + [f"ram-infer is faster than the {_short(c)} {crossover(sweep, c)}." for c in CNN_NAMES.values()]
    lines += ["", "The full-episode model casts the whole image to float64 once per call (its sensor sums in float64, "
              "like the compiled one), so its latency grows with the pixel count, slowly."]
    return lines


def plot(results: dict[str, list[dict]], sweep: dict[str, dict[int, list[float]]], path: Path, title: str) -> None:
    """Three panels: test error against batch-1 latency, latency against image side, MNIST batch-256 throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    names = list(dict.fromkeys(r["name"] for rows in results.values() for r in rows))
    colour = {name: f"C{i}" for i, name in enumerate(names)}
    markers = dict(zip(results, "os^Dvp"))
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(19, 5.2), layout="constrained")
    for task, rows in results.items():
        for r in rows:
            if r["threads"] == 1:
                error = 100 * (1 - r["accuracy"])
                left.scatter(r["latency_us"][0], error, color=colour[r["name"]], marker=markers[task], s=45)
    left.set(xscale="log", xlabel="batch-1 median latency, µs/image (1 thread)", ylabel="test error, %",
             title="Test error against latency (lower left is better)")
    left.set_ylim(bottom=0)
    # One legend entry per contender (colour) and per model (marker), not one per point: the legend stays off the data.
    contenders = [Line2D([], [], color=colour[name], marker="o", linestyle="", label=name) for name in names]
    models = [Line2D([], [], color="grey", marker=markers[task], linestyle="", label=task) for task in results]
    left.legend(handles=contenders + models, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    for label, by_side in sweep.items():
        sides = sorted(by_side)
        middle.plot(sides, [by_side[s][0] for s in sides], marker="o", color=colour[label], label=label)
    middle.set(xscale="log", yscale="log", xlabel="image side, px (square)", ylabel="batch-1 median latency, µs",
               title="Latency against image size (1 thread)")
    middle.set_xticks(sorted(sweep[RAM_NAME]), [str(s) for s in sorted(sweep[RAM_NAME])])
    middle.xaxis.set_minor_formatter(NullFormatter())
    middle.legend(fontsize=8)
    rows = [r for r in results["mnist"] if r["early_exit"] is None]
    bars = list(dict.fromkeys(r["name"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    height = 0.8 / len(threads)
    for offset, n in enumerate(threads):
        rates = [_row(rows, name, n)["images_per_s"] for name in bars]
        right.barh(np.arange(len(bars)) + height * offset, rates, height=height, label=f"{n} thread(s)")
    right.set_yticks(np.arange(len(bars)) + 0.4 - height / 2, bars, fontsize=8)
    right.set(xscale="log", xlabel=f"MNIST images/s at batch {BATCH}", title="Throughput (higher is better)")
    right.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test): few calls, 2 sizes")
    parser.add_argument("--ram-model", nargs="+", default=None,
                        help="MNIST RAM models, bundled names or .onnx files: the first gets the CNNs and the size "
                        "sweep, each its eager peer and targets (default: mnist, and mnist_small where bundled)")
    parser.add_argument("--cnn-models", type=Path, default=CNN_MODELS, help="folder of <cnn>_<task>.onnx files")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "mnist", help="MNIST directory")
    parser.add_argument("--out-dir", type=Path, default=BENCHMARKS / "results", help="where engine.md/png go")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    from ram_infer.engine import bundled_models, resolve_model
    from ram_infer.training.data import fixed_split, load_mnist

    machine = machine_details()  # first, so the load average is the other processes', not this script's
    settings = {"seconds": 0.05, "min_calls": 3} if args.quick else {"seconds": 3.0, "min_calls": 20}
    test_count, sides, sweep_count = (BATCH, SIDES[:2], 8) if args.quick else (None, SIDES, 32)
    # MNIST always; another data set where both a bundled RAM model and the CNNs trained on it exist.
    mnist_models = args.ram_model or [name for name in DEFAULT_MNIST_MODELS if name in bundled_models()]
    models = {"mnist": ("mnist", resolve_model(mnist_models[0]))}
    for i, name in enumerate(mnist_models[1:], start=1):
        path = resolve_model(name)
        models[path.stem if path.stem not in models else f"{path.stem}_{i}"] = ("mnist", path)
    if not args.quick:
        models.update({task: (task, path) for task, path in bundled_models().items()
                       if task in TASKS_BEYOND_MNIST and all((args.cnn_models / f"{c}_{task}.onnx").is_file()
                                                             for c in CNN_NAMES)})
    results, parities = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        for task, (dataset, model) in models.items():
            images, labels = fixed_split(dataset, "test", args.data, limit=test_count)
            test = (directory / f"{task}_images.npy", directory / f"{task}_labels.npy")
            np.save(test[0], images)
            np.save(test[1], labels)
            inputs = directory / f"{task}_inputs.npy"
            np.save(inputs, images[:BATCH])
            # The CNNs once per data set; both thread counts on MNIST.
            cnns = {name: args.cnn_models / f"{name}_{task}.onnx" for name in CNN_NAMES} if task == dataset else {}
            threads = THREADS if dataset == "mnist" else (1,)
            results[task] = measure_task(task, dataset, model, cnns, test, inputs, directory, settings, threads)
            if any(r["kind"] == "eager" for r in results[task]):
                parities[task] = check_eager_parity(results[task])
        sweep = measure_sweep(models["mnist"][1], load_mnist(args.data)["test"][0], sides, sweep_count, directory,
                              settings)
        load_after = os.getloadavg()
        command = shlex.join(["python", "benchmarks/bench_engine.py", *(sys.argv[1:] if argv is None else argv)])
        settings_text = (
            f"Batch-1 latency: calls on one image, cycling through {BATCH} test images, for at least "
            f"{settings['seconds']:g} s and {settings['min_calls']} calls after a warm-up; throughput: the median of "
            f"as many calls on {BATCH} images. Each contender runs alone in a fresh process; its peak RSS is that "
            "process's after timing, before the test set is loaded. Accuracy: every test image, in batches of 256."
        )
        lines = report(results, parities, sweep, command, settings_text, machine, load_after)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "engine.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        title = (f"{machine['CPU']}, cores: {machine['cores']}, load {machine['load average (1, 5, 15 min)']}; "
                 f"onnxruntime {machine['onnxruntime']}, torch {machine['torch']}; commit {machine['git commit']}")
        plot(results, sweep, args.out_dir / "engine.png", title)
    print("\n".join(lines))
    print(f"wrote {args.out_dir / 'engine.md'} and {args.out_dir / 'engine.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
