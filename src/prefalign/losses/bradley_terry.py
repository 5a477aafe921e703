"""The Bradley–Terry loss of a scalar reward model, with Llama 2's margin and reward centring."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    *,
    margin: Tensor | None = None,
    centering: float = 0.0,
) -> Tensor:
    """Bradley–Terry preference loss of a reward model (Bradley & Terry 1952; the reward-model
    objective of Ouyang et al. 2022, eq. 1), per pair, with two optional terms.

    L = −log σ(r⁺ − r⁻ − m) + η·(r⁺ + r⁻)²

    r⁺, r⁻: the scalar rewards of the chosen and the rejected response, (B,).
    m: a per-pair margin (Touvron et al. 2023, Llama 2, eq. 2: a larger margin for pairs the
    annotators rated as more clearly separated), (B,); None means m = 0. With m > 0 the loss
    keeps pushing until r⁺ exceeds r⁻ by about m.
    η = `centering`: the auxiliary term of Eisenstein et al. 2023 ("Helping or Herding?", §3)
    that pulls the rewards of each pair towards a zero sum, so that rewards stay centred on 0
    (the BT term only sees differences and leaves the offset free). 0 turns it off.
    Returns per-pair losses (B,), no reduction; −log σ(x) is computed as softplus(−x).
    """
    if chosen_rewards.ndim != 1 or chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError("bradley_terry_loss: chosen and rejected rewards must both have shape "
                         f"(B,), got {tuple(chosen_rewards.shape)} and "
                         f"{tuple(rejected_rewards.shape)}")
    if not (math.isfinite(centering) and centering >= 0):
        raise ValueError(f"bradley_terry_loss: centering must be a finite number >= 0, "
                         f"got {centering!r}")
    difference = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        if margin.shape != difference.shape:
            raise ValueError(f"bradley_terry_loss: margin must have shape "
                             f"{tuple(difference.shape)}, got {tuple(margin.shape)}")
        difference = difference - margin.to(difference.dtype)
    losses = F.softplus(-difference)  # −log σ(r⁺ − r⁻ − m), (B,)
    if centering:
        losses = losses + centering * (chosen_rewards + rejected_rewards).square()
    return losses

