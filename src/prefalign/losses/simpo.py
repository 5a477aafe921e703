"""SimPO: reference-free, length-normalised preference loss with a target margin."""

from __future__ import annotations

import torch.nn.functional as F

from ._params import NonNegative, Positive, validated
from ._types import LossOutput, PairLogps


@validated("simpo")
def simpo_loss(policy: PairLogps, *, beta: Positive = 2.0, gamma: NonNegative = 1.0) -> LossOutput:
    """Simple preference optimisation (Meng et al. 2024, eq. 6).

    r(y) = β/|y| · log π(y|x)      (per-token mean log-prob, scaled)
    L = −log σ(r(y_w) − r(y_l) − γ)

    No reference model: the reward is the policy's own average log-prob, which is also what
    sampling ranks by, and averaging removes the length bias of summed log-probs. β > 0 scales
    the reward (the paper uses values of a few units, e.g. 2–2.5, far above DPO's 0.1 because
    per-token means are small); γ ≥ 0 is the target reward margin: the loss is ln 2 exactly when
    r(y_w) − r(y_l) = γ. Log-probs AVERAGED; needs token counts. Rewards r(y_w), r(y_l) detached.
    Inputs (B,); returns (B,).
    """
    chosen_mean, rejected_mean = policy.per_token("simpo")
    chosen_reward = beta * chosen_mean  # (B,)
    rejected_reward = beta * rejected_mean  # (B,)
    losses = -F.logsigmoid(chosen_reward - rejected_reward - gamma)
    return LossOutput(losses, chosen_reward.detach(), rejected_reward.detach())
