"""Anchored preference optimisation: APO-zero and APO-down."""

from __future__ import annotations

import torch

from ._params import Positive, validated
from ._types import LossOutput, PairLogps, log_ratios, with_implicit_rewards


@validated("apo_zero")
def apo_zero_loss(policy: PairLogps, reference: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """APO-zero (D'Oosterlinck et al. 2024, eq. 7).

    r(y) = β·[log π(y|x) − log π_ref(y|x)]
    L = 1 − σ(r(y_w)) + σ(r(y_l))

    Anchors each response to the reference separately instead of only their difference: the
    chosen likelihood is pushed up and the rejected one down. Pick it when the chosen responses
    are better than what the model produces now. The paper writes −σ(r(y_w)) + σ(r(y_l)); the
    constant 1 makes the loss non-negative (1 at π = π_ref) without changing any gradient.
    β > 0 sets the scale at which σ saturates. Summed log-probs. Inputs (B,); returns (B,).
    """
    chosen_ratio, rejected_ratio = log_ratios(policy, reference, per_token=False, loss="apo_zero")
    losses = 1 - torch.sigmoid(beta * chosen_ratio) + torch.sigmoid(beta * rejected_ratio)
    return with_implicit_rewards(losses, beta, chosen_ratio, rejected_ratio)


@validated("apo_down")
def apo_down_loss(policy: PairLogps, reference: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """APO-down (D'Oosterlinck et al. 2024, eq. 8).

    r(y) = β·[log π(y|x) − log π_ref(y|x)]
    L = σ(r(y_w)) + 1 − σ(r(y_w) − r(y_l))

    The first term pushes the chosen likelihood down, the second widens the margin, so the
    rejected likelihood falls faster than the chosen one. Pick it when even the chosen responses
    are worse than the model's current outputs. The paper writes σ(r(y_w)) − σ(r(y_w) − r(y_l));
    the constant 1 keeps the loss non-negative without changing any gradient. β > 0 as in
    APO-zero. Summed log-probs. Inputs (B,); returns (B,).
    """
    chosen_ratio, rejected_ratio = log_ratios(policy, reference, per_token=False, loss="apo_down")
    chosen_reward = beta * chosen_ratio  # (B,)
    margin_reward = beta * (chosen_ratio - rejected_ratio)  # (B,)
    losses = torch.sigmoid(chosen_reward) + 1 - torch.sigmoid(margin_reward)
    return with_implicit_rewards(losses, beta, chosen_ratio, rejected_ratio)
