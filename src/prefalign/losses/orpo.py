"""ORPO: supervised NLL on the chosen response plus an odds-ratio preference term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._params import Positive, validated
from ._types import LossOutput, PairLogps

# Just below 0: a response whose every token has probability ≈ 1 has mean log-prob 0.0 in
# float32, where log(1 − P) = −inf. Clamping keeps the odds finite; it only binds when the
# per-token probability is within ~1e-6 of 1, where the preference term is saturated anyway.
_MAX_MEAN_LOGP = -1e-6


@validated("orpo")
def orpo_loss(policy: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """Monolithic odds-ratio preference optimisation (Hong et al. 2024).

    P(y|x)   = exp(log π(y|x)/|y|)              (per-token mean, as in the paper)
    odds(y)  = P(y|x) / (1 − P(y|x))
    L_OR     = −log σ(log odds(y_w) − log odds(y_l))
    L_SFT    = −log π(y_w|x)/|y_w|               (per-token NLL of the chosen response)
    L        = L_SFT + λ·L_OR

    No reference model and no separate SFT stage: the NLL term does the fine-tuning while the
    odds-ratio term penalises the rejected style. λ = beta > 0 (paper: 0.1) weighs the
    preference term. Log-probs AVERAGED; needs token counts. log(1 − P) is computed as
    log(−expm1(m)) so it stays accurate when P is near 1, and m is clamped to ≤ −1e-6 (see
    `_MAX_MEAN_LOGP`). Rewards λ·mean log-prob, detached. Inputs (B,); returns (B,) with terms
    "nll", "odds_ratio" (L_OR) and "log_odds_ratio".
    """
    chosen_mean, rejected_mean = policy.per_token("orpo")  # (B,) each
    log_odds_ratio = _log_odds(chosen_mean) - _log_odds(rejected_mean)  # (B,)
    odds_ratio_loss = -F.logsigmoid(log_odds_ratio)
    nll = -chosen_mean
    terms = {
        "nll": nll.detach(),
        "odds_ratio": odds_ratio_loss.detach(),
        "log_odds_ratio": log_odds_ratio.detach(),
    }
    return LossOutput(
        losses=nll + beta * odds_ratio_loss,
        chosen_rewards=(beta * chosen_mean).detach(),
        rejected_rewards=(beta * rejected_mean).detach(),
        terms=terms,
    )


def _log_odds(mean_logp: Tensor) -> Tensor:
    """log(P / (1 − P)) for P = exp(mean_logp), with mean_logp clamped just below 0."""
    mean_logp = mean_logp.clamp(max=_MAX_MEAN_LOGP)
    return mean_logp - torch.log(-torch.expm1(mean_logp))
