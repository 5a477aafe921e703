"""Held-out metrics as pure functions over per-pair numbers; `prefalign eval` reuses them.

Reward accuracy alone flatters a policy that learned "prefer the shorter reply" on a data set
where the chosen reply is usually the shorter. So beside it come the length-only baseline, the
length-balanced accuracy with a 95% interval, and the correlation of the reward margin with the
length difference. Lengths are response tokens as the model sees them (after truncation).
All functions take CPU or device tensors of shape (N,) and return Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@dataclass(frozen=True)
class PairRecords:
    """Everything measured about N held-out pairs, each (N,).

    losses: the configured loss per pair. chosen_rewards / rejected_rewards: the loss's implicit
    rewards. policy_* / reference_*: log-probs summed over response tokens (reference_* None
    when there is nothing to compare with). chosen_tokens / rejected_tokens: response lengths.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    policy_chosen: Tensor
    policy_rejected: Tensor
    reference_chosen: Tensor | None
    reference_rejected: Tensor | None
    chosen_tokens: Tensor
    rejected_tokens: Tensor


@dataclass(frozen=True)
class BalancedAccuracy:
    """Mean of the accuracy on chosen-shorter and on chosen-longer pairs, with a 95% interval.

    value / low / high are None when either group is empty. Equal-length pairs are in neither.
    """

    value: float | None
    low: float | None
    high: float | None
    accuracy_chosen_shorter: float | None
    accuracy_chosen_longer: float | None
    n_chosen_shorter: int
    n_chosen_longer: int


def reward_correct(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """(N,) bool: the chosen reward strictly above the rejected (a tie counts as wrong, as in
    `prefalign.losses.reward_accuracy`, so a policy equal to its reference scores 0)."""
    return chosen_rewards > rejected_rewards


def length_only_accuracy(chosen_tokens: Tensor, rejected_tokens: Tensor) -> float:
    """Accuracy of the better of "prefer the shorter reply" and "prefer the longer reply".

    A rule that sees only lengths cannot split equal-length pairs: they count half, so the
    baseline of a set with no length signal is 0.5 (as in `prefalign.data.audit`).
    Example: lengths (c, r) = (3, 5), (2, 9), (7, 4), (5, 5): shorter wins 2 + 0.5 = 2.5 of 4,
    longer 1 + 0.5 = 1.5, so 0.625.
    """
    n = chosen_tokens.numel()
    if n == 0:
        return math.nan
    ties = (chosen_tokens == rejected_tokens).sum().item()
    shorter = (chosen_tokens < rejected_tokens).sum().item() + 0.5 * ties
    longer = (chosen_tokens > rejected_tokens).sum().item() + 0.5 * ties
    return max(shorter, longer) / n


def length_balanced_accuracy(
    correct: Tensor, chosen_tokens: Tensor, rejected_tokens: Tensor
) -> BalancedAccuracy:
    """(acc on pairs whose chosen reply is shorter + acc on pairs where it is longer) / 2.

    A length-only rule scores exactly 0.5 here whatever the data's bias. The 95% interval is
    the normal approximation over the two independent subgroup proportions:
    se = ½·sqrt(p_s(1−p_s)/n_s + p_l(1−p_l)/n_l), value ± 1.96·se (Wald; too narrow when a
    group is small or its accuracy near 0 or 1).
    """
    shorter = chosen_tokens < rejected_tokens
    longer = chosen_tokens > rejected_tokens
    n_s, n_l = int(shorter.sum()), int(longer.sum())
    p_s = correct[shorter].double().mean().item() if n_s else None
    p_l = correct[longer].double().mean().item() if n_l else None
    if p_s is None or p_l is None:
        return BalancedAccuracy(None, None, None, p_s, p_l, n_s, n_l)
    value = (p_s + p_l) / 2
    se = 0.5 * math.sqrt(p_s * (1 - p_s) / n_s + p_l * (1 - p_l) / n_l)
    return BalancedAccuracy(value, value - Z_95 * se, value + Z_95 * se, p_s, p_l, n_s, n_l)


def pearson(x: Tensor, y: Tensor) -> float | None:
    """Pearson correlation of two (N,) tensors; None when either is constant or N < 2."""
    x, y = x.double(), y.double()
    if x.numel() < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(dx.square().sum().item() * dy.square().sum().item())
    return (dx * dy).sum().item() / denominator if denominator > 0 else None


def both_fall_fraction(chosen_change: Tensor, rejected_change: Tensor) -> float:
    """Fraction of pairs whose chosen AND rejected log-probs are below the reference's
    (likelihood displacement: the preferred reply is pushed down too)."""
    return ((chosen_change < 0) & (rejected_change < 0)).double().mean().item()


def eval_metrics(records: PairRecords) -> dict[str, float]:
    """The held-out summary, keys without a split prefix; None-valued metrics are left out.

    loss, accuracy, margin (mean reward margin), policy_margin / reference_margin (mean
    chosen − rejected summed log-prob), chosen_logp_change / rejected_logp_change (mean policy −
    reference), both_fall, length_only_accuracy, length_balanced_accuracy (+ _low / _high: 95%
    interval), reward_length_corr (margin vs chosen − rejected tokens), chosen_shorter_fraction.
    """
    correct = reward_correct(records.chosen_rewards, records.rejected_rewards)
    margins = (records.chosen_rewards - records.rejected_rewards).double()  # (N,)
    length_difference = (records.chosen_tokens - records.rejected_tokens).double()  # (N,)
    balanced = length_balanced_accuracy(correct, records.chosen_tokens, records.rejected_tokens)
    metrics: dict[str, float | None] = {
        "loss": records.losses.double().mean().item(),
        "accuracy": correct.double().mean().item(),
        "margin": margins.mean().item(),
        "policy_margin": _mean_difference(records.policy_chosen, records.policy_rejected),
        "length_only_accuracy": length_only_accuracy(records.chosen_tokens,
                                                     records.rejected_tokens),
        "length_balanced_accuracy": balanced.value,
        "length_balanced_accuracy_low": balanced.low,
        "length_balanced_accuracy_high": balanced.high,
        "reward_length_corr": pearson(margins, length_difference),
        "chosen_shorter_fraction": (length_difference < 0).double().mean().item(),
    }
    if records.reference_chosen is not None and records.reference_rejected is not None:
        chosen_change = records.policy_chosen.double() - records.reference_chosen.double()
        rejected_change = records.policy_rejected.double() - records.reference_rejected.double()
        metrics.update(
            reference_margin=_mean_difference(records.reference_chosen,
                                              records.reference_rejected),
            chosen_logp_change=chosen_change.mean().item(),
            rejected_logp_change=rejected_change.mean().item(),
            both_fall=both_fall_fraction(chosen_change, rejected_change),
        )
    return {key: value for key, value in metrics.items() if value is not None}


def _mean_difference(chosen: Tensor, rejected: Tensor) -> float:
    return (chosen.double() - rejected.double()).mean().item()


def concat_records(parts: list[PairRecords]) -> PairRecords:
    """Join the records of several batches into one, in order."""
    def join(name: str) -> Tensor | None:
        values = [getattr(part, name) for part in parts]
        return None if any(v is None for v in values) else torch.cat(values)

    fields = PairRecords.__dataclass_fields__
    return PairRecords(**{name: join(name) for name in fields})  # type: ignore[arg-type]
