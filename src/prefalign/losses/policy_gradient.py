"""Online policy-gradient losses over sampled completions: GRPO (with Dr. GRPO's and DAPO's
normalisations) and RLOO's leave-one-out baseline, as pure functions of token log-probs.

These do not fit the paired contract of the offline losses (no chosen/rejected, no `LOSSES`
entry): each completion of a group of G sampled for one prompt has a scalar reward, and the loss
is over its tokens. Shapes: N = prompts × G completions, grouped consecutively (completion i
belongs to group i // G); T = completion tokens (right-padded), `mask` (N, T) is 1 on real
tokens.

Symbols: r reward (N,); A advantage (N,); log π_θ, log π_old, log π_ref token log-probs (N, T)
of the current policy, the policy that sampled (μ > 1 passes per batch make them differ) and the
reference; ρ = exp(log π_θ − log π_old); ε, ε_high the clip range; β the KL coefficient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

AdvantageScale = Literal["group", "batch", "none"]
Normalisation = Literal["grpo", "dr_grpo", "dapo"]
STD_EPS = 1e-4  # added to the standard deviation, so a group of equal rewards gives A = 0


def group_advantages(rewards: Tensor, group_size: int, scale: AdvantageScale = "group") -> Tensor:
    """GRPO's advantages (Shao et al. 2024, eq. 3; Liu et al. 2025 for "none").

    A_i = (r_i − mean_g(r)) / s, with s = std_g(r) + 1e-4 ("group": the unbiased standard
    deviation of i's own group), std(r) + 1e-4 over the whole batch ("batch"), or 1 ("none":
    Dr. GRPO, which drops the division as a bias towards groups of low variance).
    rewards (N,) → (N,); N must be a multiple of group_size ≥ 2.
    """
    grouped = _grouped(rewards, group_size)  # (P, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # (P, G)
    if scale == "group":
        centred = centred / (grouped.std(dim=1, keepdim=True) + STD_EPS)
    elif scale == "batch":
        centred = centred / (rewards.std() + STD_EPS)
    elif scale != "none":
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return centred.reshape(-1)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): A_i = r_i − (1/(G−1)) Σ_{j≠i} r_j, the
    mean of the group's other completions as baseline (= G/(G−1) · (r_i − mean_g r)).
    rewards (N,) → (N,)."""
    grouped = _grouped(rewards, group_size)  # (P, G)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)  # (P, G)
    return (grouped - others).reshape(-1)


def k3_kl(logps: Tensor, reference_logps: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(π_θ ‖ π_ref) per token, as GRPO uses it:
    k3 = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1 ≥ 0, unbiased for the KL when the
    token was sampled from π_θ. (N, T) → (N, T)."""
    difference = reference_logps - logps
    return torch.exp(difference) - difference - 1


@dataclass(frozen=True)
class TokenLosses:
    """Per-token loss (N, T) = −min(ρA, clip(ρ, 1 − ε, 1 + ε_high)·A) + β·k3, and what the loop
    logs: `clipped` (N, T) bool where the clipped term was the one taken, `kl` (N, T) the k3
    values (zeros with β = 0 and no reference), `ratio` (N, T) ρ, all detached."""

    losses: Tensor
    clipped: Tensor
    kl: Tensor
    ratio: Tensor


def clipped_surrogate(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    reference_logps: Tensor | None = None,
) -> TokenLosses:
    """PPO's clipped surrogate per token (Schulman et al. 2017) as GRPO uses it, with DAPO's
    asymmetric clip (Yu et al. 2025: ε_high > ε lets low-probability tokens rise) and the k3 KL
    penalty when β > 0. logps, old_logps, reference_logps (N, T); advantages (N,).
    With old_logps = logps.detach() (one pass per batch, μ = 1) ρ = 1 and the gradient is
    −A·∇log π_θ per token (+ β∇k3): the loss's value reads ≈ 0 by construction, so log the
    rewards and advantages, not the loss, to see learning.
    """
    high = epsilon if epsilon_high is None else epsilon_high
    if not 0 < epsilon < 1 or high <= 0:
        raise ValueError(f"epsilon must be in (0, 1) and epsilon_high > 0, got {epsilon!r}, "
                         f"{epsilon_high!r}")
    ratio = torch.exp(logps - old_logps)  # (N, T)
    advantage = advantages[:, None]  # (N, 1)
    unclipped = ratio * advantage
    clipped = ratio.clamp(1 - epsilon, 1 + high) * advantage
    losses = -torch.minimum(unclipped, clipped)  # (N, T)
    kl = torch.zeros_like(losses)
    if beta:
        if reference_logps is None:
            raise ValueError("beta > 0 needs reference_logps")
        kl = k3_kl(logps, reference_logps)
        losses = losses + beta * kl
    taken_clipped = (clipped < unclipped).detach()
    return TokenLosses(losses, taken_clipped, kl.detach(), ratio.detach())


def sequence_weights(
    mask: Tensor,
    normalisation: Normalisation,
    *,
    num_sequences: int | None = None,
    max_completion_length: int | None = None,
    total_tokens: float | None = None,
) -> Tensor:
    """w (N,) such that the loss is Σ_i w_i · Σ_t mask_it · L_it over the whole (accumulated,
    all-process) batch, whatever part of it `mask` (N, T) holds:

    - "grpo": w_i = 1 / (n · |o_i|), the mean over sequences of each one's token mean (Shao et
      al. 2024): a long completion's tokens count less;
    - "dr_grpo": w_i = 1 / (n · L), L the maximum completion length, a constant (Liu et al.
      2025), so no length is favoured;
    - "dapo": w_i = 1 / T_total, T_total the tokens of the whole batch (Yu et al. 2025): every
      token counts the same.

    n = `num_sequences` (default: the rows of `mask`), L = `max_completion_length` (default:
    mask's width), T_total = `total_tokens` (default: mask's sum); pass the whole batch's
    values when `mask` is one micro-batch of it.
    """
    count = float(num_sequences if num_sequences is not None else mask.shape[0])
    lengths = mask.sum(dim=1).to(torch.float64)  # (N,)
    if normalisation == "grpo":
        weights = 1.0 / (count * lengths.clamp(min=1))
    elif normalisation == "dr_grpo":
        width = max_completion_length if max_completion_length is not None else mask.shape[1]
        weights = torch.full_like(lengths, 1.0 / (count * width))
    elif normalisation == "dapo":
        total = total_tokens if total_tokens is not None else float(lengths.sum())
        weights = torch.full_like(lengths, 1.0 / max(total, 1.0))
    else:
        raise ValueError(f"normalisation must be 'grpo', 'dr_grpo' or 'dapo', got "
                         f"{normalisation!r}")
    return weights.to(mask.dtype if mask.is_floating_point() else torch.float32)


def policy_gradient_loss(token_losses: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """Per-sequence contributions (N,): w_i · Σ_t mask_it · L_it; their sum is the loss."""
    return (token_losses * mask).sum(dim=1) * weights


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape (N,), got {tuple(rewards.shape)}")
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"group_size must be >= 2 and divide the {rewards.shape[0]} rewards, "
                         f"got {group_size}")
    return rewards.reshape(-1, group_size)
