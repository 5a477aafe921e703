"""IPO: a squared loss that pulls the per-token log-ratio margin to a fixed target."""

from __future__ import annotations

from ._params import Positive, validated
from ._types import LossOutput, PairLogps, log_ratios, with_implicit_rewards


@validated("ipo")
def ipo_loss(policy: PairLogps, reference: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """Identity preference optimisation (Azar et al. 2023, "ΨPO with identity mapping", eq. 17).

    h̄ = [log π(y_w|x) − log π_ref(y_w|x)]/|y_w| − [log π(y_l|x) − log π_ref(y_l|x)]/|y_l|
    L = (h̄ − 1/(2τ))²

    τ = beta > 0 is the regularisation strength: the loss is minimised at the margin
    h̄ = 1/(2τ), so a smaller τ asks for a larger margin. Unlike DPO the loss is bounded below
    at a finite margin, so it does not drive h̄ to infinity on deterministic preferences.

    Log-probs are AVERAGED over response tokens. The paper writes π(y|x) for whole sequences,
    but a fixed target 1/(2τ) on summed log-ratios would mean a per-token change that depends on
    response length; the paper's authors advised averaging (as adopted by TRL in 2024), which makes
    τ length-independent. Needs token counts. Rewards are τ times the per-token log-ratios,
    detached. Inputs (B,); returns (B,).
    """
    chosen_ratio, rejected_ratio = log_ratios(policy, reference, per_token=True, loss="ipo")
    margin = chosen_ratio - rejected_ratio  # h̄, (B,)
    losses = (margin - 1 / (2 * beta)) ** 2
    return with_implicit_rewards(losses, beta, chosen_ratio, rejected_ratio)
