"""KTO: a prospect-theoretic loss over unpaired desirable and undesirable responses.

KTO does not fit the paired contract of the other losses: each example is ONE response labelled
desirable or undesirable (no partner), and its reference point z0 is a batch-level estimate of
KL(π ‖ π_ref) taken from mismatched prompt/response pairs, which costs an extra forward pass.
So `kto_loss` takes per-response log-probs, a `desirable` mask and `kl_reference`, and returns an
`UnpairedLossOutput`; `mix_losses` does not accept it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._params import Positive, validated
from ._types import UnpairedLossOutput


@validated("kto")
def kto_loss(
    policy: Tensor,
    reference: Tensor,
    *,
    desirable: Tensor,
    kl_reference: Tensor | float,
    beta: Positive = 0.1,
    desirable_weight: Positive = 1.0,
    undesirable_weight: Positive = 1.0,
) -> UnpairedLossOutput:
    """Kahneman–Tversky optimisation (Ethayarajh et al. 2024).

    r(x, y) = log π(y|x) − log π_ref(y|x)                       (summed over response tokens)
    z0      = max(0, E_{x', y'}[log π(y'|x') − log π_ref(y'|x')]) (detached; mismatched pairs)
    L(x, y) = λ_D·(1 − σ(β·(r − z0)))   if y is desirable
              λ_U·(1 − σ(β·(z0 − r)))   if y is undesirable

    β > 0 scales the value function as in DPO. λ_D, λ_U > 0 (desirable_weight,
    undesirable_weight) weigh the two kinds; the paper suggests λ_D·n_D / (λ_U·n_U) in
    [1, 4/3] when the counts n_D, n_U are imbalanced. `policy`, `reference` and `desirable` are
    (B,); `kl_reference` is z0 as a number or 0-dim tensor (see `kto_kl_reference`); it is
    detached here so no gradient flows through the reference point. Rewards are β·r, detached.
    """
    if policy.ndim != 1 or policy.shape != reference.shape or desirable.shape != policy.shape:
        raise ValueError(
            "kto: policy, reference and desirable must all have shape (B,), got "
            f"{tuple(policy.shape)}, {tuple(reference.shape)}, {tuple(desirable.shape)}"
        )
    if desirable.dtype != torch.bool:
        raise ValueError(f"kto: desirable must be a bool tensor, got {desirable.dtype}")
    z0 = torch.as_tensor(kl_reference, dtype=policy.dtype, device=policy.device).detach()
    log_ratio = policy - reference  # r, (B,)
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - z0)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratio)))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)
    return UnpairedLossOutput(losses, (beta * log_ratio).detach(), desirable)


def kto_kl_reference(policy_mismatched: Tensor, reference_mismatched: Tensor) -> Tensor:
    """z0 = max(0, mean(log π(y'|x') − log π_ref(y'|x'))) over mismatched pairs, detached.

    The mismatched pairs pair each prompt with another example's response (e.g. shift the
    responses by one within the batch), so z0 estimates KL(π ‖ π_ref) without labels. Both
    inputs are (B,) summed log-probs; returns a 0-dim tensor. With several processes, average
    the means across processes before calling the loss (KTO's z0 is a batch-wide quantity).
    """
    return (policy_mismatched - reference_mismatched).mean().clamp(min=0).detach()
