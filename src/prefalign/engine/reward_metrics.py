"""A reward model's numbers on preference pairs, as pure functions over per-pair rewards.

Accuracy always comes with the length-only baseline and the length-balanced accuracy with its
95% interval (engine/metrics.py), and the correlation of the reward margin r⁺ − r⁻ with the
length difference (in response tokens): a reward model can score "prefer the shorter reply" as
well as a DPO policy can. The training loop and `prefalign rm eval` report the same keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prefalign.engine.metrics import (
    length_balanced_accuracy,
    length_only_accuracy,
    pearson,
    reward_correct,
)


def reward_metrics(chosen: Tensor, rejected: Tensor, chosen_tokens: Tensor,
                   rejected_tokens: Tensor, losses: Tensor | None = None) -> dict[str, float]:
    """The summary of N pairs' rewards, each input (N,); metrics that cannot be computed (a
    length group without pairs, a constant margin) are left out.

    loss (when `losses` is given), accuracy (r⁺ > r⁻; a tie is wrong), margin (mean r⁺ − r⁻),
    length_only_accuracy, length_balanced_accuracy (+ _low / _high), reward_length_corr,
    chosen_shorter_fraction, chosen_reward / rejected_reward (means), reward_mean /
    reward_std (over all 2N rewards: where the scale sits, which the BT loss leaves free).
    """
    correct = reward_correct(chosen, rejected)
    margins = chosen.double() - rejected.double()  # (N,)
    length_difference = (chosen_tokens - rejected_tokens).double()  # (N,)
    balanced = length_balanced_accuracy(correct, chosen_tokens, rejected_tokens)
    both = torch.cat([chosen.double(), rejected.double()])  # (2N,)
    metrics: dict[str, float | None] = {
        "loss": losses.double().mean().item() if losses is not None else None,
        "accuracy": correct.double().mean().item(),
        "margin": margins.mean().item(),
        "length_only_accuracy": length_only_accuracy(chosen_tokens, rejected_tokens),
        "length_balanced_accuracy": balanced.value,
        "length_balanced_accuracy_low": balanced.low,
        "length_balanced_accuracy_high": balanced.high,
        "reward_length_corr": pearson(margins, length_difference),
        "chosen_shorter_fraction": (length_difference < 0).double().mean().item(),
        "chosen_reward": chosen.double().mean().item(),
        "rejected_reward": rejected.double().mean().item(),
        "reward_mean": both.mean().item(),
        "reward_std": both.std().item() if both.numel() > 1 else None,
    }
    return {key: value for key, value in metrics.items() if value is not None}

