"""ONNX export of the RAM step network (f_g, f_h, the mean of f_l, f_a) with its ``ram.*`` metadata, and a parity check.

The exported graph is one step of the recurrence (docs/design.md, "ONNX step network contract"):

- inputs:  ``glimpse`` float32 [batch, k, C, g, g] — ρ(x, l_{t-1});  ``location`` float32 [batch, 2] — l_{t-1};
  ``state`` float32 [batch, S] — h_{t-1} (an LSTM packs [h, c]).
- outputs: ``state_next`` [batch, S];  ``location_next`` [batch, 2] — μ_t = tanh(W·h_t), the mean of the location
  policy, which inference follows deterministically;  ``logits`` [batch, classes] — f_a(h_t).

The baseline network f_b is not exported: it only reduces the variance of REINFORCE during training. The sensor ρ is
not in the graph either; the runtime runs the compiled sensor between steps (ram_infer/engine.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ram_infer.engine import load_model
from ram_infer.metadata import STEP_INPUTS, STEP_OUTPUTS, ModelInfo, SensorSpec

from .config import ModelConfig, TrainConfig
from .model import RecurrentAttention, glimpse

DEFAULT_OPSET = 18
PARITY_TOLERANCE = 1e-5


class ParityError(ValueError):
    """The exported step network disagrees with the torch model; the message lists the max difference per output."""


class OnnxStep(nn.Module):
    """One step of the trained model, as exported: (glimpse, location, state) → (state_next, location_next, logits).

    The submodules keep the paper's names (``glimpse_net``, ``core_net``, ``location_net``, ``action_net``), so the
    graph's node scopes read like the paper. The baseline network f_b is left out (training only).
    """

    def __init__(self, model: RecurrentAttention):
        super().__init__()
        self.glimpse_net = model.glimpse_net
        self.core_net = model.core_net
        self.location_net = model.location_net
        self.action_net = model.action_net

    def forward(
        self, glimpse: torch.Tensor, location: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: glimpse (N, k, C, g, g), location (N, 2), state (N, S). Returns (N, S), (N, 2), (N, classes)."""
        g_t = self.glimpse_net(glimpse, location)  # (N, glimpse_features)
        h_t, state_next = self.core_net(g_t, state)  # (N, hidden), (N, S)
        return state_next, self.location_net(h_t), self.action_net(h_t)  # (N, S), (N, 2), (N, classes)


def model_info(
    config: ModelConfig,
    *,
    dataset: str,
    labels: Sequence[str] | None = None,
    test_error: float | None = None,
    training: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """The runtime metadata of a model built from ``config``.

    Args:
        config: the model's configuration.
        dataset: the training task (``mnist``, ``translated60``, ``cluttered60``, ``cluttered100``) or the own data
            set's folder name.
        labels: one name per class; None gives ``"0"``, ``"1"``, ….
        test_error: measured test error in [0, 1], or None if not measured.
        training: how it was trained (command, preset, steps, wall time …); the model configuration is added as
            ``"model"``.

    Returns:
        ModelInfo ready for ``to_metadata_props``.

    Raises:
        ValueError: labels or test_error out of range.
    """
    labels = tuple(str(i) for i in range(config.num_classes)) if labels is None else tuple(labels)
    if len(labels) != config.num_classes:
        raise ValueError(f"labels must have one name per class ({config.num_classes}), got {len(labels)}")
    if test_error is not None and not 0 <= test_error <= 1:
        raise ValueError(f"test_error must be in [0, 1] or None, got {test_error}")
    training = {**(training or {}), "model": dataclasses.asdict(config)}
    return ModelInfo(
        sensor=SensorSpec(config.glimpse_size, config.num_scales, config.scale_factor),
        num_glimpses=config.num_glimpses,
        initial_location=config.initial_location,
        state_size=config.state_size,
        input=config.input_format,
        labels=labels,
        dataset=dataset,
        test_error=test_error,
        training=training,
    )


def export_step_model(
    model: RecurrentAttention,
    path: str | os.PathLike,
    *,
    dataset: str,
    labels: Sequence[str] | None = None,
    test_error: float | None = None,
    training: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> ModelInfo:
    """Exports the step network of ``model`` to ``path`` with its ``ram.*`` metadata.

    The legacy TorchScript exporter is used: for these few Linear/ReLU/tanh/LSTM layers it gives the smallest graph
    (one Gemm or MatMul per weight, no wrapper functions) and names each node after its module
    (``/glimpse_net/what/Gemm``). The batch axis is dynamic and named ``batch``.

    Args:
        model: the trained model (left in its current mode; exported in eval mode).
        path: the ``.onnx`` file to write.
        dataset, labels, test_error, training: see ``model_info``.
        opset: ONNX opset (≥ 17).

    Returns:
        The metadata written.

    Raises:
        onnx.checker.ValidationError: the exported graph is not valid ONNX (a bug, not a user error).
    """
    config = model.config
    info = model_info(
        config, dataset=dataset, labels=labels, test_error=test_error, training=training
    )
    n = 2  # any batch; the axis is exported as dynamic
    example = (
        torch.zeros(n, *info.glimpse_shape),
        torch.zeros(n, 2),
        torch.zeros(n, config.state_size),
    )
    exported = io.BytesIO()
    with _eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter and its helpers announce their deprecation; for this graph it is the better exporter.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            OnnxStep(model),
            example,
            exported,
            input_names=list(STEP_INPUTS),
            output_names=list(STEP_OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in STEP_INPUTS + STEP_OUTPUTS},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(exported.getvalue())
    proto.doc_string = (
        "RAM step network (Mnih et al. 2014): (glimpse, location, state) -> (state_next, location_next, logits); "
        "the baseline f_b is not exported."
    )
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    del proto.metadata_props[:]
    for key, value in info.to_metadata_props().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return info


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    onnx_path: str | os.PathLike,
    *,
    test_error: float | None = None,
    training: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
) -> ModelInfo:
    """Exports the model of a training checkpoint (keys ``"config"`` = TrainConfig.to_dict(), ``"model"`` = state_dict).

    Args:
        checkpoint_path: a checkpoint written by ``ram-train``.
        onnx_path: the ``.onnx`` file to write.
        test_error: measured test error in [0, 1], if known.
        training: extra training facts for the metadata (command, preset …), added to those of the checkpoint:
            its configuration, ``steps``, ``wall_time_s`` and ``best_valid_error``.
        labels: class names; None gives the run's (own images), else ``"0"``, ``"1"``, ….

    Returns:
        The metadata written.

    Raises:
        FileNotFoundError, ValueError: as load_checkpoint.
    """
    model, config, checkpoint = load_checkpoint(checkpoint_path)
    return export_loaded_checkpoint(model, config, checkpoint, onnx_path, test_error=test_error, training=training,
                                    labels=labels)


def export_loaded_checkpoint(
    model: RecurrentAttention,
    config: TrainConfig,
    checkpoint: Mapping[str, Any],
    onnx_path: str | os.PathLike,
    *,
    test_error: float | None = None,
    training: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
) -> ModelInfo:
    """export_checkpoint for a checkpoint already loaded (load_checkpoint's three results), so a caller that also
    evaluates the model reads the file once."""
    facts: dict[str, Any] = {"config": {k: v for k, v in checkpoint["config"].items() if k != "model"}}
    for key, fact in (("step", "steps"), ("elapsed", "wall_time_s"), ("best_error", "best_valid_error")):
        if key in checkpoint:
            facts[fact] = checkpoint[key]
    facts.update(training or {})
    return export_step_model(model, onnx_path, dataset=dataset_name(config), labels=labels or config.classes or None,
                             test_error=test_error, training=facts)


def dataset_name(config: TrainConfig) -> str:
    """What ``ram.dataset`` says: the task, or for own images the data's folder (or CSV) name."""
    return Path(config.data).stem if config.task == "folder" and config.data else config.task


def load_checkpoint(path: str | Path) -> tuple[RecurrentAttention, TrainConfig, dict[str, Any]]:
    """Rebuilds the model of a checkpoint (checkpoint.pt or best.pt) from the config it carries, with the weights it
    ships (checkpoint_weights: the moving average where the run keeps one).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a ram-train checkpoint.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    missing = [key for key in ("config", "model") if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not a ram-train checkpoint, it lacks the keys {missing}")
    config = TrainConfig.from_dict(checkpoint["config"])
    model = RecurrentAttention(config.model)
    model.load_state_dict(checkpoint_weights(checkpoint))
    return model.eval(), config, checkpoint


def read_checkpoint(path: str | os.PathLike) -> Any:
    """A checkpoint file's contents, unpickled with ``weights_only=True``: tensors, numbers, strings and containers
    only, so a crafted file cannot run code (``weights_only=False`` would execute whatever its pickle says).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a file torch can read this way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a ram-train checkpoint (it holds more than tensors and plain data)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a ram-train checkpoint ({reason[:200]})") from None


def checkpoint_weights(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint ships: the run's moving average of its weights once that has begun (ema_decay; kept in
    checkpoint.pt beside the weights themselves), else its weights. best.pt holds the average already."""
    average = checkpoint.get("average")
    if average is None or int(average["n_averaged"]) == 0:
        return checkpoint["model"]
    return {name.removeprefix("module."): value for name, value in average.items() if name.startswith("module.")}


def check_parity(
    model: RecurrentAttention,
    onnx_path: str | os.PathLike,
    images: np.ndarray | torch.Tensor,
    *,
    atol: float = PARITY_TOLERANCE,
) -> dict[str, float]:
    """Checks the exported file against the torch model on whole mean-policy episodes.

    Two comparisons, all collected before anything is raised:

    - per step, the ONNX session gets the torch step's exact inputs (ρ, l_{t-1}, h_{t-1}) and each output
      (``state_next``, ``location_next``, ``logits``) is compared with the torch step's;
    - per episode, ``ram_infer.load_model(onnx_path).predict`` (sensor + step loop) is compared with
      ``model.rollout(x)``: the glimpse ``locations`` and the final ``logits``.

    Args:
        model: the torch model that was exported.
        onnx_path: the exported file.
        images (ndarray[N, C, H, W], float32): test images in the model's input format.
        atol: largest allowed difference |torch − onnx| / (1 + |torch|): absolute near 0, relative for large
            values, where float32 rounding of a different summation order grows with the magnitude.

    Returns:
        The max scaled difference per compared output.

    Raises:
        ParityError: a shape differs or a difference exceeds ``atol``; lists every output's max difference.
    """
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))
    engine = load_model(onnx_path, threads=1)
    diffs: dict[str, float] = {}
    problems: list[str] = []

    def compare(name: str, want: torch.Tensor, got: np.ndarray) -> None:
        want = want.detach().numpy()
        if want.shape != got.shape:
            problems.append(f"{name}: shape {got.shape}, expected {want.shape}")
            return
        scaled = np.abs(want - got) / (1.0 + np.abs(want))
        diffs[name] = max(diffs.get(name, 0.0), float(np.max(scaled, initial=0.0)))

    with _eval_mode(model), torch.no_grad():
        l_prev, state = model.initial_location(len(x)), model.initial_state(len(x))
        for _ in range(model.config.num_glimpses):
            rho = glimpse(x, l_prev, model.config)  # (N, k, C, g, g)
            step = model.step(rho, l_prev, state)
            feeds = {"glimpse": rho.numpy(), "location": l_prev.numpy(), "state": state.numpy()}
            for name, want, got in zip(
                STEP_OUTPUTS,
                (step.state, step.mean, step.logits),
                engine.session.run(None, feeds),
            ):
                compare(f"step {name}", want, got)
            l_prev, state = step.mean, step.state
        rollout = model.rollout(x)
    prediction = engine.predict(x.numpy())
    compare("episode locations", rollout.locations, prediction.locations)
    compare("episode logits", rollout.logits[-1], prediction.logits)
    problems += [f"{name}: max scaled diff {diff:.3g} > {atol:g}" for name, diff in diffs.items() if not diff <= atol]
    if problems:
        table = "\n".join(f"  {name}: max scaled diff {diff:.3g}" for name, diff in diffs.items())
        raise ParityError(
            f"{onnx_path}: the exported model disagrees with the torch model:\n  "
            + "\n  ".join(problems)
            + f"\nall outputs:\n{table}"
        )
    return diffs


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Puts ``model`` in eval mode for the block and restores its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


EPISODE_PARITY_IMAGES = 500  # test images ``export --episode`` checks the episode model on


def command_export(args: argparse.Namespace) -> int:
    """``ram-train export CHECKPOINT OUT.onnx [--test-error E] [--episode EPISODE.onnx]``: prints what it wrote as
    one JSON line. The episode model is checked against the step model on the run's first test images."""
    from .data import evaluation_split
    from .episode import export_episode, sidecar

    model, config, checkpoint = load_checkpoint(args.checkpoint)
    info = export_loaded_checkpoint(model, config, checkpoint, args.output, test_error=args.test_error)
    written = {"output": args.output, "bytes": os.path.getsize(args.output), **info.to_metadata_props()}
    if args.episode:
        images = evaluation_split(config, "test", limit=EPISODE_PARITY_IMAGES)[0]
        episode = export_episode(args.output, args.episode, test_images=images)
        written["episode"] = {"output": str(episode), "parity": sidecar(onnx.load(str(episode)))["episode_parity"]}
    print(json.dumps(written, ensure_ascii=False))
    return 0
