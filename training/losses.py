"""The hybrid loss of RAM: cross-entropy for f_a, REINFORCE with a learned baseline for f_l, and the baseline's MSE."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .model import Rollout


class LossTerms(NamedTuple):
    total: torch.Tensor  # what is minimised
    classification: torch.Tensor  # cross-entropy of the final answer
    auxiliary: torch.Tensor  # mean cross-entropy of the answers before the last glimpse
    reinforce: torch.Tensor  # −E[Σ_t log π(l_t) (R − b_t)]
    baseline: torch.Tensor  # E[(b_t − R)²]
    reward: torch.Tensor  # mean R: the accuracy of the sampled episodes


def hybrid_loss(
    rollout: Rollout,
    labels: torch.Tensor,
    *,
    reinforce_weight: float = 1.0,
    baseline_weight: float = 1.0,
    aux_weight: float = 0.0,
) -> LossTerms:
    """The training objective of Mnih et al. (2014), Section 3.

    R = 1 when the final answer is right, else 0. REINFORCE pushes up log π(l_t) of locations that led to a reward above
    the baseline b_t; the advantage R − b_t is detached so this term cannot move the baseline, and b_t learns R by MSE
    alone (its input h_t is detached in BaselineNetwork, so neither term reaches the core).

    Args:
        rollout: an episode sampled with σ > 0 (log_probs and baselines (N, T-1)).
        labels (Tensor[N], int64): the true classes.
        reinforce_weight: weight of the REINFORCE term.
        baseline_weight: weight of the baseline MSE.
        aux_weight: weight of the cross-entropy at steps 1 … T-1, which trains early answers for early exit.

    Returns:
        LossTerms; ``total`` is the weighted sum.
    """
    final_logits = rollout.logits[-1]  # (N, classes)
    classification = F.cross_entropy(final_logits, labels)
    reward = (final_logits.argmax(1) == labels).float()  # (N,)
    if rollout.logits.shape[0] > 1:
        earlier = rollout.logits[:-1]  # (T-1, N, classes)
        auxiliary = F.cross_entropy(earlier.flatten(0, 1), labels.repeat(earlier.shape[0]))
    else:
        auxiliary = final_logits.new_zeros(())
    advantage = (reward[:, None] - rollout.baselines).detach()  # (N, T-1)
    reinforce = -(rollout.log_probs * advantage).sum(1).mean()
    if rollout.baselines.numel():
        baseline = F.mse_loss(rollout.baselines, reward[:, None].expand_as(rollout.baselines))
    else:  # one glimpse, or the mean policy: no location was chosen
        baseline = final_logits.new_zeros(())
    total = classification + aux_weight * auxiliary + reinforce_weight * reinforce + baseline_weight * baseline
    return LossTerms(total, classification, auxiliary, reinforce, baseline, reward.mean())
