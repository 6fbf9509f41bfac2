"""The parts of the Recurrent Attention Model (Mnih et al. 2014), one nn.Module each, named and written as in the paper.

The glimpse sensor ρ has no parameters and no gradient; it is the compiled ``ram_infer.extract_glimpses`` (see
model.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlimpseNetwork(nn.Module):
    """f_g: h_g = ReLU(W_g·ρ), h_l = ReLU(W_l·l), g_t = ReLU(W_hg·h_g + W_hl·h_l)."""

    def __init__(self, glimpse_numel: int, glimpse_hidden: int, location_hidden: int, glimpse_features: int):
        super().__init__()
        self.what = nn.Linear(glimpse_numel, glimpse_hidden)  # W_g
        self.where = nn.Linear(2, location_hidden)  # W_l
        self.what_out = nn.Linear(glimpse_hidden, glimpse_features)  # W_hg
        self.where_out = nn.Linear(location_hidden, glimpse_features, bias=False)  # W_hl (one bias suffices)

    def forward(self, rho: torch.Tensor, l_prev: torch.Tensor) -> torch.Tensor:
        h_g = F.relu(self.what(rho.flatten(1)))  # (N, glimpse_hidden)
        h_l = F.relu(self.where(l_prev))  # (N, location_hidden)
        return F.relu(self.what_out(h_g) + self.where_out(h_l))  # (N, glimpse_features)


class CoreNetwork(nn.Module):
    """f_h: h_t = ReLU(W_h·h_{t-1} + W_g·g_t) (the paper's RNN), or an LSTM cell.

    The state is packed into one tensor of width S: h_t for the RNN, [h_t, c_t] for the LSTM, so the exported step
    network has a single ``state`` input whatever the core.
    """

    def __init__(self, glimpse_features: int, hidden: int, kind: str = "rnn"):
        super().__init__()
        self.hidden = hidden
        self.kind = kind
        if kind == "lstm":
            self.cell = nn.LSTMCell(glimpse_features, hidden)
        else:
            self.input = nn.Linear(glimpse_features, hidden)  # W_g
            self.recurrent = nn.Linear(hidden, hidden, bias=False)  # W_h

    def forward(self, g_t: torch.Tensor, state_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (h_t (N, hidden), state_t (N, S))."""
        if self.kind == "lstm":
            h_t, c_t = self.cell(g_t, (state_prev[:, : self.hidden], state_prev[:, self.hidden :]))
            return h_t, torch.cat([h_t, c_t], dim=1)  # (N, hidden), (N, 2·hidden)
        h_t = F.relu(self.input(g_t) + self.recurrent(state_prev))  # (N, hidden)
        return h_t, h_t


class LocationNetwork(nn.Module):
    """f_l: μ_t = tanh(W·h_t); training samples l_t ~ N(μ_t, σ²), inference uses μ_t.

    By default h_t is detached: the REINFORCE gradient trains this network only, while the core and glimpse networks
    learn from the classification loss (tests/test_training.py checks it). ``reinforce_to_core`` > 0 (the setting of
    the same name in TrainConfig) lets that fraction of it reach them, so the core learns to carry what the policy
    needs, where the digit is, and not only what the classifier needs: on cluttered100 0.1 of it took the glimpses
    onto the digit, while all of it (1, the paper's single gradient for θ) drove the policy into a corner.
    """

    def __init__(self, hidden: int, reinforce_to_core: float = 0.0):
        super().__init__()
        self.mean = nn.Linear(hidden, 2)
        self.reinforce_to_core = reinforce_to_core

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        held = h_t.detach()
        if self.reinforce_to_core:  # the same value, with the gradient into h_t scaled by reinforce_to_core
            held = held + self.reinforce_to_core * (h_t - held)
        return torch.tanh(self.mean(held))  # (N, 2)


class ActionNetwork(nn.Module):
    """f_a: logits = W·h_t, a softmax classifier (applied after the last glimpse, or at every step for early exit)."""

    def __init__(self, hidden: int, num_classes: int):
        super().__init__()
        self.classify = nn.Linear(hidden, num_classes)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return self.classify(h_t)  # (N, classes)


class BaselineNetwork(nn.Module):
    """f_b: b_t = W·h_t, the expected reward, subtracted from the reward to reduce the REINFORCE variance.

    Training only: it is not exported. h_t is detached so the baseline's MSE does not shape the core.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.value = nn.Linear(hidden, 1)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return self.value(h_t.detach()).squeeze(1)  # (N,)
