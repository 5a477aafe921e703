"""The inputs and outputs shared by every preference loss: paired log-probs in, per-example losses out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class SequenceLogps:
    """Log-probs of B sequences over their response tokens (prompt and padding excluded).

    `sum` is Σ_t log π(y_t | x, y_<t), `count` the number of response tokens, `mean` = sum / count
    (0 for a sequence without response tokens). All shape (B,).
    """

    sum: Tensor  # (B,)
    mean: Tensor  # (B,)
    count: Tensor  # (B,) int64


@dataclass(frozen=True)
class PairLogps:
    """Per-sequence log-probs of the chosen (y_w) and rejected (y_l) responses of B pairs.

    `chosen` and `rejected` are log π(y|x) summed over response tokens, shape (B,).
    `chosen_count` and `rejected_count` are the numbers of response tokens, shape (B,); losses
    that average over tokens (IPO, SimPO, ORPO, length-normalised DPO, RPO's NLL term) need them.
    """

    chosen: Tensor  # (B,)
    rejected: Tensor  # (B,)
    chosen_count: Tensor | None = None  # (B,)
    rejected_count: Tensor | None = None  # (B,)

    def __post_init__(self) -> None:
        if self.chosen.ndim != 1 or self.chosen.shape != self.rejected.shape:
            raise ValueError(
                "PairLogps: chosen and rejected must both have shape (B,), "
                f"got {tuple(self.chosen.shape)} and {tuple(self.rejected.shape)}"
            )
        if (self.chosen_count is None) != (self.rejected_count is None):
            raise ValueError("PairLogps: give both chosen_count and rejected_count, or neither")
        for name in ("chosen_count", "rejected_count"):
            count = getattr(self, name)
            if count is not None and count.shape != self.chosen.shape:
                raise ValueError(
                    f"PairLogps: {name} must have shape {tuple(self.chosen.shape)}, "
                    f"got {tuple(count.shape)}"
                )

    @property
    def has_counts(self) -> bool:
        return self.chosen_count is not None

    def per_token(self, loss: str) -> tuple[Tensor, Tensor]:
        """Chosen and rejected log-probs averaged over response tokens, each (B,).

        A response with zero tokens averages to 0 rather than NaN (its sum is 0 too).
        """
        chosen_count, rejected_count = self.counts(loss)
        return (
            self.chosen / chosen_count.clamp(min=1).to(self.chosen.dtype),
            self.rejected / rejected_count.clamp(min=1).to(self.rejected.dtype),
        )

    def counts(self, loss: str) -> tuple[Tensor, Tensor]:
        if self.chosen_count is None or self.rejected_count is None:
            raise ValueError(
                f"{loss}: this loss averages log-probs over response tokens; build PairLogps with "
                "chosen_count and rejected_count (PairLogps.from_sequences does)"
            )
        return self.chosen_count, self.rejected_count

    @classmethod
    def from_sequences(cls, chosen: SequenceLogps, rejected: SequenceLogps) -> PairLogps:
        """Pair two `SequenceLogps` (from `sequence_logps`), keeping sums and token counts."""
        return cls(chosen.sum, rejected.sum, chosen.count, rejected.count)


def log_ratios(
    policy: PairLogps, reference: PairLogps, *, per_token: bool, loss: str
) -> tuple[Tensor, Tensor]:
    """log π(y|x) − log π_ref(y|x) for the chosen and rejected responses, each (B,).

    With `per_token`, both policy and reference sums are divided by the policy's token counts:
    the two models score the same responses, so the counts are shared.
    """
    if per_token:
        chosen_count, rejected_count = policy.counts(loss)
        chosen_count = chosen_count.clamp(min=1).to(policy.chosen.dtype)
        rejected_count = rejected_count.clamp(min=1).to(policy.rejected.dtype)
        return (
            (policy.chosen - reference.chosen) / chosen_count,
            (policy.rejected - reference.rejected) / rejected_count,
        )
    return policy.chosen - reference.chosen, policy.rejected - reference.rejected


@dataclass(frozen=True)
class LossOutput:
    """Per-example losses (no reduction) and detached implicit rewards of a paired loss.

    `terms` holds named per-example components (e.g. "nll"), detached, for logging.
    """

    losses: Tensor  # (B,)
    chosen_rewards: Tensor  # (B,)
    rejected_rewards: Tensor  # (B,)
    terms: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {self.losses.shape, self.chosen_rewards.shape, self.rejected_rewards.shape}
        if len(shapes) != 1:
            raise ValueError(
                f"LossOutput: losses and rewards must share one shape (B,), got {shapes}"
            )


@dataclass(frozen=True)
class UnpairedLossOutput:
    """Per-example losses and detached rewards of an unpaired loss (KTO).

    `desirable` (B,) bool says which examples were labelled desirable.
    """

    losses: Tensor  # (B,)
    rewards: Tensor  # (B,)
    desirable: Tensor  # (B,) bool


def with_implicit_rewards(
    losses: Tensor,
    beta: float,
    chosen_ratio: Tensor,
    rejected_ratio: Tensor,
    terms: Mapping[str, Tensor] | None = None,
) -> LossOutput:
    """Attach the implicit rewards β·(log π − log π_ref) (detached) to per-example losses."""
    return LossOutput(
        losses=losses,
        chosen_rewards=(beta * chosen_ratio).detach(),
        rejected_rewards=(beta * rejected_ratio).detach(),
        terms=dict(terms or {}),
    )
