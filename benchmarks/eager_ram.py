"""The peer baseline: the same RAM written as eager PyTorch reimplementations write it (kevinzakka-style).

Per-step module calls, a Python loop over the batch inside the sensor (``torch_crop_loop``), a Python loop over the
glimpses, losses assembled from per-step lists. It has our architecture and takes the weights of a trained
``RecurrentAttention`` (``EagerRAM(model)``) or of an exported step network (``EagerRAM.from_onnx``), so speed
comparisons run the same network on the same inputs.
"""

from __future__ import annotations

import json
import os

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ram_infer.training.config import ModelConfig
from ram_infer.training.model import RecurrentAttention


def torch_crop_loop(x: torch.Tensor, l: torch.Tensor, g: int, k: int, s: int) -> torch.Tensor:
    """ρ(x, l) as eager reimplementations write it (kevinzakka ``Retina.foveate``): a loop over the batch per scale.

    For each scale: pad the whole batch, slice every sample's patch in Python, stack, and average-pool to g×g. It
    follows this project's contract (per-axis centre, floor in float64), so it agrees with ``extract_glimpses``.

    Args:
        x (Tensor[N, C, H, W], float32): the images.
        l (Tensor[N, 2], float32): (x, y) in [-1, 1], clamped.
        g: glimpse_size.  k: num_scales.  s: scale_factor.

    Returns:
        Tensor[N, k, C, g, g], float32.
    """
    n, _, h, w = x.shape
    l = l.double().clamp(-1, 1)  # float64 so the centre's floor matches the contract at pixel boundaries
    cx = ((l[:, 0] + 1) * 0.5 * w).floor().long().clamp(max=w - 1).tolist()
    cy = ((l[:, 1] + 1) * 0.5 * h).floor().long().clamp(max=h - 1).tolist()
    phi = []
    for i in range(k):
        b = s**i
        side = g * b
        before = side // 2
        padded = F.pad(x, (before, side - before, before, side - before))  # (N, C, H + side, W + side)
        # A patch starts `before` pixels ahead of its centre, which is the centre's own index in `padded`.
        patches = [padded[j, :, cy[j] : cy[j] + side, cx[j] : cx[j] + side] for j in range(n)]  # N × (C, side, side)
        phi.append(F.avg_pool2d(torch.stack(patches), b))  # (N, C, g, g)
    return torch.stack(phi, dim=1)  # (N, k, C, g, g)


def model_from_onnx(path: str | os.PathLike) -> RecurrentAttention:
    """Rebuilds the RecurrentAttention of an exported step network from the file alone (no checkpoint).

    The configuration comes from the ``ram.training`` metadata (``"model"``), the weights from the graph's
    initializers: each Gemm or MatMul node is named after its module (``/glimpse_net/what/Gemm``). A Gemm with
    ``transB = 1`` stores the weight as torch does, (out, in); a MatMul (the bias-free layers) stores it transposed.
    The baseline network f_b is not exported and keeps its initial weights; inference never uses it.

    Args:
        path: an ONNX step network written by ``ram_infer.training.export.export_step_model`` with the RNN core.

    Returns:
        RecurrentAttention in eval mode.

    Raises:
        ValueError: the file lacks ``ram.training`` model facts, its core is not the RNN, or a weight is missing.
    """
    proto = onnx.load(str(path))
    config = _config(proto, path)
    if config.core != "rnn":
        raise ValueError(f"{path}: the eager peer implements the paper's RNN core only, got core={config.core!r}")
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    weights = {}
    for node in proto.graph.node:
        if node.op_type not in ("Gemm", "MatMul"):
            continue
        module = ".".join(node.name.strip("/").split("/")[:-1])  # "/glimpse_net/what/Gemm" → "glimpse_net.what"
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = initializers[node.input[1]]
        torch_layout = node.op_type == "Gemm" and attributes.get("transB", 0) == 1
        weights[f"{module}.weight"] = weight if torch_layout else weight.T
        if node.op_type == "Gemm" and len(node.input) > 2:
            weights[f"{module}.bias"] = initializers[node.input[2]]
    model = RecurrentAttention(config).eval()
    state = model.state_dict()
    missing = [name for name in state if name not in weights and not name.startswith("baseline_net.")]
    if missing:
        raise ValueError(f"{path}: no initializer found for {missing}")
    for name, value in weights.items():
        if state[name].shape != value.shape:
            raise ValueError(f"{path}: {name} has shape {value.shape}, expected {tuple(state[name].shape)}")
        state[name] = torch.from_numpy(value.copy())  # a writable, contiguous copy (value may be a transposed view)
    model.load_state_dict(state)
    return model


def supports(path: str | os.PathLike) -> bool:
    """Whether the eager peer can run this exported step network (the paper's RNN core; not the LSTM)."""
    return _config(onnx.load(str(path), load_external_data=False), path).core == "rnn"


def _config(proto: onnx.ModelProto, path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig that ``export_step_model`` stores in ``ram.training`` under ``"model"``."""
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        return ModelConfig(**json.loads(props["ram.training"])["model"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: ram.training must hold the model configuration under 'model' ({error})") from None


class EagerRAM(nn.Module):
    """RAM as in kevinzakka/recurrent-visual-attention: fc1…fc4 glimpse network, i2h/h2h core, fc_lt, fc, baseline."""

    def __init__(self, model: RecurrentAttention):
        super().__init__()
        c = model.config
        if c.core != "rnn":
            raise ValueError("the eager peer implements the paper's RNN core only")
        self.g, self.k, self.s, self.T = c.glimpse_size, c.num_scales, c.scale_factor, c.num_glimpses
        self.initial_location = c.initial_location
        self.fc1 = nn.Linear(c.num_scales * c.channels * c.glimpse_size**2, c.glimpse_hidden)
        self.fc2 = nn.Linear(2, c.location_hidden)
        self.fc3 = nn.Linear(c.glimpse_hidden, c.glimpse_features)
        self.fc4 = nn.Linear(c.location_hidden, c.glimpse_features, bias=False)
        self.i2h = nn.Linear(c.glimpse_features, c.core_hidden)
        self.h2h = nn.Linear(c.core_hidden, c.core_hidden, bias=False)
        self.fc_lt = nn.Linear(c.core_hidden, 2)
        self.fc = nn.Linear(c.core_hidden, c.num_classes)
        self.baseline = nn.Linear(c.core_hidden, 1)
        pairs = {
            "fc1": model.glimpse_net.what, "fc2": model.glimpse_net.where, "fc3": model.glimpse_net.what_out,
            "fc4": model.glimpse_net.where_out, "i2h": model.core_net.input, "h2h": model.core_net.recurrent,
            "fc_lt": model.location_net.mean, "fc": model.action_net.classify, "baseline": model.baseline_net.value,
        }
        for name, source in pairs.items():
            getattr(self, name).load_state_dict(source.state_dict())

    @classmethod
    def from_onnx(cls, path: str | os.PathLike) -> EagerRAM:
        """The eager peer of an exported step network, its weights read from the file (see ``model_from_onnx``)."""
        return cls(model_from_onnx(path)).eval()

    def forward(self, x, l_t_prev, h_t_prev, std, last=False):
        phi = torch_crop_loop(x, l_t_prev, self.g, self.k, self.s).flatten(1)
        g_t = F.relu(self.fc3(F.relu(self.fc1(phi))) + self.fc4(F.relu(self.fc2(l_t_prev))))
        h_t = F.relu(self.i2h(g_t) + self.h2h(h_t_prev))
        mu = torch.tanh(self.fc_lt(h_t.detach()))
        l_t = mu + torch.randn_like(mu) * std if std else mu
        log_pi = torch.distributions.Normal(mu, std).log_prob(l_t.detach()).sum(1) if std else None
        l_t = torch.clamp(l_t.detach(), -1, 1)
        b_t = self.baseline(h_t.detach()).squeeze(1)
        log_probas = F.log_softmax(self.fc(h_t), dim=1) if last else None
        return h_t, l_t, b_t, log_probas, log_pi

    def episode(self, x, std):
        """kevinzakka's training/inference loop: T−1 steps collecting lists, then the last step with the classifier."""
        n = x.shape[0]
        h_t = torch.zeros(n, self.h2h.in_features, device=x.device)
        l_t = torch.tensor(self.initial_location, device=x.device).expand(n, 2)
        locs, baselines, log_pis = [], [], []
        for _ in range(self.T - 1):
            locs.append(l_t)
            h_t, l_t, b_t, _, log_pi = self(x, l_t, h_t, std)
            baselines.append(b_t)
            log_pis.append(log_pi)
        locs.append(l_t)
        h_t, _, _, log_probas, _ = self(x, l_t, h_t, std, last=True)
        return log_probas, locs, baselines, log_pis


def eager_train_step(model: EagerRAM, optimizer: torch.optim.Optimizer, x, y, std: float):
    """One optimiser step as kevinzakka's Trainer.train_one_epoch does it (nll + REINFORCE + MSE) with its default
    M = 1 sample per image, the only setting ram-train has."""
    log_probas, _, baselines, log_pis = model.episode(x, std)
    baselines, log_pis = torch.stack(baselines, 1), torch.stack(log_pis, 1)
    reward = (log_probas.argmax(1) == y).float().unsqueeze(1).repeat(1, baselines.shape[1])
    loss_action = F.nll_loss(log_probas, y)
    loss_baseline = F.mse_loss(baselines, reward)
    loss_reinforce = torch.mean(torch.sum(-log_pis * (reward - baselines.detach()), dim=1))
    loss = loss_action + loss_baseline + loss_reinforce
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def eager_predict(model: EagerRAM, x) -> torch.Tensor:
    """Labels with the mean policy, as such code is used for inference."""
    with torch.no_grad():
        return model.episode(x, std=0)[0].argmax(1)
