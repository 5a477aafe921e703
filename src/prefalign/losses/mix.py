"""A weighted sum of configured paired losses, e.g. 0.8·DPO + 0.2·SimPO."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import Tensor

from ._params import require_positive
from ._types import LossOutput, PairLogps
from .registry import ConfiguredLoss


@dataclass(frozen=True)
class MixedLoss:
    """L = Σ_i w_i·L_i per example; build it with `mix_losses`.

    Rewards come from the FIRST component (its implicit reward defines accuracy and margins);
    `terms` holds each component's per-example loss under its name (suffixed `.i` when a name
    repeats) and each component's own terms as "name/term".
    """

    components: tuple[tuple[float, ConfiguredLoss], ...]

    @property
    def name(self) -> str:
        return "mix"

    @property
    def needs_reference(self) -> bool:
        return any(loss.needs_reference for _, loss in self.components)

    def __call__(self, policy: PairLogps, reference: PairLogps | None = None) -> LossOutput:
        outputs = [loss(policy, reference) for _, loss in self.components]
        total: Tensor = sum(  # type: ignore[assignment]
            weight * output.losses
            for (weight, _), output in zip(self.components, outputs, strict=True)
        )
        terms: dict[str, Tensor] = {}
        for key, output in zip(self._keys(), outputs, strict=True):
            terms[key] = output.losses.detach()
            terms.update({f"{key}/{term}": value for term, value in output.terms.items()})
        first = outputs[0]
        return LossOutput(total, first.chosen_rewards, first.rejected_rewards, terms)

    def _keys(self) -> list[str]:
        names = [loss.name for _, loss in self.components]
        return [name if names.count(name) == 1 else f"{name}.{i}" for i, name in enumerate(names)]


def mix_losses(components: Iterable[tuple[float, ConfiguredLoss]]) -> MixedLoss:
    """Combine configured paired losses with positive weights: [(0.8, dpo), (0.2, simpo)]."""
    components = tuple(components)
    if not components:
        raise ValueError("mix: give at least one (weight, loss) component")
    for index, (weight, loss) in enumerate(components):
        require_positive("mix", f"weight of component {index}", weight)
        if not isinstance(loss, ConfiguredLoss):
            raise ValueError(f"mix: component {index} must come from make_loss, got {loss!r}")
        if not loss.spec.paired:
            raise ValueError(
                f"mix: {loss.name} is unpaired (its inputs differ) and cannot be mixed"
            )
    return MixedLoss(components)
