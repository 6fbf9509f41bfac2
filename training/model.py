"""RecurrentAttention: the RAM recurrence, one step (what the ONNX step network exports) and a whole episode
(rollout)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ram_infer import extract_glimpses

from .config import ModelConfig
from .modules import ActionNetwork, BaselineNetwork, CoreNetwork, GlimpseNetwork, LocationNetwork


class Step(NamedTuple):
    state: torch.Tensor  # h_t packed, (N, S)
    mean: torch.Tensor  # μ_t, (N, 2)
    logits: torch.Tensor  # f_a(h_t), (N, classes)
    baseline: torch.Tensor  # b_t, (N,)


class Rollout(NamedTuple):
    logits: torch.Tensor  # per step, (T, N, classes); the answer is logits[-1]
    locations: torch.Tensor  # glimpse centres l_0 … l_{T-1}, (N, T, 2)
    log_probs: torch.Tensor  # log π(l_t | h_t) of the sampled l_1 … l_{T-1}, (N, T-1); zeros under the mean policy
    baselines: torch.Tensor  # b_1 … b_{T-1}, the baselines of those choices, (N, T-1)


def glimpse(x: torch.Tensor, l: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """ρ(x, l) from the compiled sensor: zero-copy numpy views on the CPU, the CUDA kernel for CUDA tensors.

    Args:
        x (Tensor[N, C, H, W], float32): contiguous images.
        l (Tensor[N, 2], float32): locations; no gradient flows through the sensor.

    Returns:
        Tensor[N, k, C, g, g], float32, on x's device.
    """
    g, k, s = config.glimpse_size, config.num_scales, config.scale_factor
    l = l.detach().float().contiguous()  # under bfloat16 autocast μ_t is bfloat16; the sensor reads float32
    if x.is_cuda:
        # On torch's current stream, so the kernel is ordered with the ops around it. No NaN check: it would wait for
        # the stream on every glimpse, and a NaN μ_t (diverged weights) already shows as a NaN loss.
        stream = torch.cuda.current_stream(x.device).cuda_stream
        return extract_glimpses(x, l, g, k, s, stream=stream, check_nan=False)
    return torch.from_numpy(extract_glimpses(x.numpy(), l.numpy(), g, k, s))


class RecurrentAttention(nn.Module):
    """The Recurrent Attention Model: f_g, f_h, f_l, f_a and the training-only baseline f_b around the sensor ρ."""

    def __init__(self, config: ModelConfig, reinforce_to_core: float = 0.0):
        super().__init__()
        self.config = config
        rho_numel = config.num_scales * config.channels * config.glimpse_size**2
        self.glimpse_net = GlimpseNetwork(
            rho_numel, config.glimpse_hidden, config.location_hidden, config.glimpse_features
        )
        self.core_net = CoreNetwork(config.glimpse_features, config.core_hidden, config.core)
        self.location_net = LocationNetwork(config.core_hidden, reinforce_to_core)
        self.action_net = ActionNetwork(config.core_hidden, config.num_classes)
        self.baseline_net = BaselineNetwork(config.core_hidden)

    def initial_state(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(n, self.config.state_size, device=device)  # (N, S)

    def initial_location(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.tensor(self.config.initial_location, device=device).expand(n, 2).contiguous()  # (N, 2)

    def step(self, rho: torch.Tensor, l_prev: torch.Tensor, state_prev: torch.Tensor) -> Step:
        """One step of the recurrence: the glimpse ρ(x, l_{t-1}) taken at l_{t-1} updates the state."""
        g_t = self.glimpse_net(rho, l_prev)  # (N, glimpse_features)
        h_t, state_t = self.core_net(g_t, state_prev)  # (N, hidden), (N, S)
        return Step(state_t, self.location_net(h_t), self.action_net(h_t), self.baseline_net(h_t))

    def forward(
        self, x: torch.Tensor, location_std: float | None = None, generator: torch.Generator | None = None
    ) -> Rollout:
        """The episode (rollout), as forward() so DistributedDataParallel can wrap the model."""
        return self.rollout(x, location_std, generator)

    def rollout(
        self, x: torch.Tensor, location_std: float | None = None, generator: torch.Generator | None = None
    ) -> Rollout:
        """Runs a whole episode of T glimpses.

        Args:
            x (Tensor[N, C, H, W], float32): images.
            location_std: σ of the location policy; l_t ~ N(μ_t, σ²) clipped to [-1, 1]. None or 0 follows the
                mean μ_t, deterministically, exactly as the runtime does.
            generator: the source of the location noise (training seeds one per step, so a resumed run is exact).

        Returns:
            Rollout with per-step logits, the glimpse centres, and the log-probabilities and baselines of the sampled
            locations.
        """
        n, T = x.shape[0], self.config.num_glimpses
        x = x.contiguous()
        l_t, state = self.initial_location(n, x.device), self.initial_state(n, x.device)
        logits, locations, log_probs, baselines = [], [], [], []
        for t in range(T):
            locations.append(l_t)
            step = self.step(glimpse(x, l_t, self.config), l_t, state)
            state = step.state
            logits.append(step.logits)
            if t == T - 1:
                break  # the last μ_T would place a glimpse that is never taken
            if location_std:
                noise = torch.randn(step.mean.shape, generator=generator, device=step.mean.device)  # (N, 2)
                sample = (step.mean + location_std * noise).detach()  # (N, 2)
                # validate_args=False: the checks reduce on the device and read the answer back, a stream
                # synchronisation per glimpse on a GPU; μ_t is a tanh and σ a positive setting.
                policy = torch.distributions.Normal(step.mean, location_std, validate_args=False)
                log_probs.append(policy.log_prob(sample).sum(1))
                baselines.append(step.baseline)
                l_t = sample.clamp(-1.0, 1.0)
            else:
                l_t = step.mean.detach()
        empty = x.new_zeros(n, 0)
        return Rollout(
            torch.stack(logits),  # (T, N, classes)
            torch.stack(locations, dim=1),  # (N, T, 2)
            torch.stack(log_probs, dim=1) if log_probs else empty,  # (N, T-1)
            torch.stack(baselines, dim=1) if baselines else empty,  # (N, T-1)
        )

