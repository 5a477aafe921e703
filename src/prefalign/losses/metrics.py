"""Pure preference metrics over implicit rewards and log-probs; every result is detached."""

from __future__ import annotations

import torch
from torch import Tensor

from ._params import require_positive
from ._types import LossOutput, PairLogps, log_ratios


def reward_accuracy(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Fraction of pairs whose chosen reward is strictly above the rejected one (0-dim).

    Ties count as wrong, so a policy equal to its reference (all rewards 0) scores 0.
    """
    return (chosen_rewards > rejected_rewards).float().mean().detach()


def reward_margins(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """r(y_w) − r(y_l) per pair, (B,). For DPO rewards this is β·h."""
    return (chosen_rewards - rejected_rewards).detach()


def dpo_gradient_weight(
    policy: PairLogps, reference: PairLogps, *, beta: float, length_normalized: bool = False
) -> Tensor:
    """σ(−β·h) per pair, (B,): how much each pair moves the policy under sigmoid DPO.

    ∇L = −β·σ(−β·h)·[∇log π(y_w|x) − ∇log π(y_l|x)], so DPO is likelihood fine-tuning on y_w
    and unlikelihood on y_l, each pair weighted by σ(−β·h): the probability the implicit
    reward model currently ranks the pair WRONG. Near 1 for misranked pairs, near 0 for pairs
    already separated. Equals σ(r(y_l) − r(y_w)) computed from the rewards.
    """
    require_positive("dpo_gradient_weight", "beta", beta)
    chosen_ratio, rejected_ratio = log_ratios(
        policy, reference, per_token=length_normalized, loss="dpo_gradient_weight"
    )
    return torch.sigmoid(-beta * (chosen_ratio - rejected_ratio)).detach()


def kl_proxy(policy: PairLogps, reference: PairLogps) -> Tensor:
    """Mean of log π(y|x) − log π_ref(y|x) over the 2B chosen and rejected responses (0-dim).

    This is the Monte-Carlo KL estimator E_y[log π/π_ref], evaluated on the DATASET responses
    rather than samples from π, so it is a drift signal, not KL(π ‖ π_ref): it can be negative
    (DPO often lowers both likelihoods). In nats per sequence (summed log-probs).
    """
    chosen_ratio, rejected_ratio = log_ratios(policy, reference, per_token=False, loss="kl_proxy")
    return torch.cat([chosen_ratio, rejected_ratio]).mean().detach()


def reward_metrics(output: LossOutput) -> dict[str, Tensor]:
    """The usual batch summary of a paired loss's rewards, each a detached 0-dim tensor."""
    chosen, rejected = output.chosen_rewards, output.rejected_rewards
    return {
        "rewards/accuracy": reward_accuracy(chosen, rejected),
        "rewards/margin": reward_margins(chosen, rejected).mean(),
        "rewards/chosen": chosen.mean().detach(),
        "rewards/rejected": rejected.mean().detach(),
    }
