"""The hybrid loss of RAM: cross-entropy for f_a, REINFORCE with a learned baseline for f_l, and the baseline's MSE."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from training.model import Rollout


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
    baseline_from: str = "learned",
    samples_per_image: int = 1,
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
        baseline_from: what REINFORCE subtracts from R: ``"learned"``, b_t (the paper); ``"others"``, the mean reward
            of the other location samples of the same image (needs samples_per_image ≥ 2; b_t still learns by MSE).
            Why: b_t cannot know how hard each image is, so R − b_t mixes the image's difficulty into the credit for
            the locations; samples of one image differ only in where they looked.
        samples_per_image: M, when the batch holds M location samples of each image, sample m of image i at row
            m·B + i (the trainer's ``x.repeat(M, …)``).

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
    advantage = (reward[:, None] - _subtracted(rollout.baselines, reward, baseline_from, samples_per_image)).detach()
    reinforce = -(rollout.log_probs * advantage).sum(1).mean()
    if rollout.baselines.numel():
        baseline = F.mse_loss(rollout.baselines, reward[:, None].expand_as(rollout.baselines))
    else:  # one glimpse, or the mean policy: no location was chosen
        baseline = final_logits.new_zeros(())
    total = classification + aux_weight * auxiliary + reinforce_weight * reinforce + baseline_weight * baseline
    return LossTerms(total, classification, auxiliary, reinforce, baseline, reward.mean())


def _subtracted(baselines: torch.Tensor, reward: torch.Tensor, baseline_from: str, samples: int) -> torch.Tensor:
    """What REINFORCE subtracts from the reward, (N, T-1) or (N, 1): see hybrid_loss's ``baseline_from``."""
    if baseline_from == "learned":
        return baselines
    if baseline_from != "others" or samples < 2 or reward.shape[0] % samples:
        raise ValueError(f"baseline_from must be 'learned', or 'others' with N a multiple of samples_per_image ≥ 2; "
                         f"got {baseline_from!r}, samples_per_image={samples}, N={reward.shape[0]}")
    per_image = reward.view(samples, -1)  # (M, B)
    others = (per_image.sum(0, keepdim=True) - per_image) / (samples - 1)  # (M, B)
    return others.reshape(-1, 1)  # (N, 1)
