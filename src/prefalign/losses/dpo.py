"""Sigmoid DPO and its direct relatives: conservative and length-normalised DPO, robust DPO, RPO.

Symbols shared by every docstring here:
    π, π_ref   policy and frozen reference; log π(y|x) summed over the response tokens of y
    y_w, y_l   chosen (preferred) and rejected responses to the prompt x
    h          [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    σ          the logistic sigmoid
    r(y)       β·[log π(y|x) − log π_ref(y|x)], the implicit reward returned (detached)
"""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F

from ._params import NonNegative, Positive, Range, validated
from ._types import LossOutput, PairLogps, log_ratios, with_implicit_rewards

FlipRate = Annotated[float, Range(0.0, 0.5)]  # a label-flip probability ε in [0, 0.5)


@validated("dpo")
def dpo_loss(
    policy: PairLogps,
    reference: PairLogps,
    *,
    beta: Positive = 0.1,
    label_smoothing: FlipRate = 0.0,
    length_normalized: bool = False,
) -> LossOutput:
    """Direct Preference Optimization (Rafailov et al. 2023, eq. 7); conservative DPO when ε > 0.

    L = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h)

    β > 0 scales the implicit reward (a larger β keeps π closer to π_ref). ε = label_smoothing
    in [0, 0.5) is the assumed probability that a preference label is flipped (cDPO,
    Mitchell 2023): the target becomes 1 − ε instead of 1, so the loss stops pushing h once
    σ(β·h) = 1 − ε. Log-probs are summed over response tokens; with `length_normalized` each
    log-ratio is divided by its response length first (log π(y|x)/|y|), removing the pull
    towards longer chosen responses. Inputs (B,); returns per-pair losses (B,).
    """
    chosen_ratio, rejected_ratio = log_ratios(
        policy, reference, per_token=length_normalized, loss="dpo"
    )
    margin = chosen_ratio - rejected_ratio  # h, (B,)
    scaled = beta * margin  # β·h, (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(scaled) - label_smoothing * F.logsigmoid(-scaled)
    return with_implicit_rewards(losses, beta, chosen_ratio, rejected_ratio)


@validated("robust")
def robust_dpo_loss(
    policy: PairLogps, reference: PairLogps, *, beta: Positive = 0.1, flip_rate: FlipRate = 0.1
) -> LossOutput:
    """Provably robust DPO (Chowdhury et al. 2024): an unbiased DPO loss under label noise.

    ℓ(h) = −log σ(β·h)
    L = [(1 − ε)·ℓ(h) − ε·ℓ(−h)] / (1 − 2ε)

    ε = flip_rate in [0, 0.5) is the probability that a pair's labels were swapped. Averaged over
    that noise, (1 − ε)·L(h) + ε·L(−h) = ℓ(h), the clean DPO loss. Unlike cDPO the loss can be
    negative and keeps pushing h. ε = 0 is plain DPO. Summed log-probs. Inputs (B,); returns (B,).
    """
    chosen_ratio, rejected_ratio = log_ratios(policy, reference, per_token=False, loss="robust")
    margin = chosen_ratio - rejected_ratio  # h, (B,)
    clean = -F.logsigmoid(beta * margin)
    flipped = -F.logsigmoid(-beta * margin)
    losses = ((1 - flip_rate) * clean - flip_rate * flipped) / (1 - 2 * flip_rate)
    return with_implicit_rewards(losses, beta, chosen_ratio, rejected_ratio)


@validated("rpo")
def rpo_loss(
    policy: PairLogps, reference: PairLogps, *, beta: Positive = 0.1, alpha: NonNegative = 1.0
) -> LossOutput:
    """Iterative reasoning preference optimisation (Pang et al. 2024): DPO plus NLL of y_w.

    NLL(y_w) = −log π(y_w|x) / |y_w|     (per-token mean over the chosen response)
    L = −log σ(β·h) + α·NLL(y_w)

    The DPO term uses summed log-probs; the NLL term is averaged over the chosen response's
    tokens, as in the paper, so α weighs a per-token quantity. α ≥ 0 (α = 0 is DPO) keeps the
    chosen response's likelihood from falling while the margin grows. Needs token counts.
    Inputs (B,); returns (B,), with terms "dpo" and "nll".
    """
    chosen_ratio, rejected_ratio = log_ratios(policy, reference, per_token=False, loss="rpo")
    chosen_mean, _ = policy.per_token("rpo")
    preference = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))  # (B,)
    nll = -chosen_mean  # (B,)
    losses = preference + alpha * nll
    terms = {"dpo": preference.detach(), "nll": nll.detach()}
    return with_implicit_rewards(losses, beta, chosen_ratio, rejected_ratio, terms)
