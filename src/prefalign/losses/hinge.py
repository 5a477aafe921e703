"""SLiC's hinge loss on the reference-normalised log-ratio margin."""

from __future__ import annotations

import torch

from ._params import Positive, validated
from ._types import LossOutput, PairLogps, log_ratios, with_implicit_rewards


@validated("hinge")
def hinge_loss(policy: PairLogps, reference: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """Sequence likelihood calibration, SLiC-HF (Zhao et al. 2023), in its normalised form.

    h = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    L = max(0, 1 − β·h)

    SLiC-HF's calibration loss is max(0, δ − log π(y_w|x) + log π(y_l|x)) on raw policy
    log-probs, with a separate regulariser towards the SFT model. Deliberate deviation: we
    compare log-ratios against π_ref instead (the "hinge-norm" form of Liu et al. 2023, also the
    form TRL ships), so π_ref plays the regulariser's role and δ = 1/β: the loss is zero, with zero
    gradient, once h ≥ 1/β. Summed log-probs. Inputs (B,); returns (B,).
    """
    chosen_ratio, rejected_ratio = log_ratios(policy, reference, per_token=False, loss="hinge")
    margin = chosen_ratio - rejected_ratio  # h, (B,)
    losses = torch.relu(1 - beta * margin)
    return with_implicit_rewards(losses, beta, chosen_ratio, rejected_ratio)
