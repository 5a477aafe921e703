"""LOSSES, the literal index of loss functions, and `make_loss`, which validates a configuration."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from .apo import apo_down_loss, apo_zero_loss, check_apo
from .dpo import check_dpo, check_robust, check_rpo, dpo_loss, robust_dpo_loss, rpo_loss
from .hinge import check_hinge, hinge_loss
from .ipo import check_ipo, ipo_loss
from .kto import check_kto, kto_loss
from .orpo import check_orpo, orpo_loss
from .simpo import check_simpo, simpo_loss

LogpsKind = Literal["sum", "mean"]


@dataclass(frozen=True)
class LossSpec:
    """One entry of LOSSES.

    `logps` says how the loss reduces log-probs over response tokens before its formula:
    "sum" (sequence log-likelihood) or "mean" (per-token average). Losses take sums and token
    counts (`PairLogps`) and average internally, so a caller cannot feed the wrong kind.
    `paired` is False for KTO, whose inputs are single labelled responses.
    """

    fn: Callable[..., Any]
    check: Callable[..., None]
    needs_reference: bool
    logps: LogpsKind
    paper: str
    paired: bool = True

    @property
    def defaults(self) -> dict[str, Any]:
        """Hyper-parameters and their defaults: the keyword-only parameters that have one."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.fn).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is not inspect.Parameter.empty
        }


LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(dpo_loss, check_dpo, True, "sum", "Rafailov et al. 2023"),
    "robust": LossSpec(robust_dpo_loss, check_robust, True, "sum", "Chowdhury et al. 2024"),
    "ipo": LossSpec(ipo_loss, check_ipo, True, "mean", "Azar et al. 2023"),
    "hinge": LossSpec(hinge_loss, check_hinge, True, "sum", "Zhao et al. 2023 (SLiC-HF)"),
    "simpo": LossSpec(simpo_loss, check_simpo, False, "mean", "Meng et al. 2024"),
    "orpo": LossSpec(orpo_loss, check_orpo, False, "mean", "Hong et al. 2024"),
    "rpo": LossSpec(rpo_loss, check_rpo, True, "sum", "Pang et al. 2024"),
    "apo_zero": LossSpec(apo_zero_loss, check_apo, True, "sum", "D'Oosterlinck et al. 2024"),
    "apo_down": LossSpec(apo_down_loss, check_apo, True, "sum", "D'Oosterlinck et al. 2024"),
    "kto": LossSpec(kto_loss, check_kto, True, "sum", "Ethayarajh et al. 2024", paired=False),
}


@dataclass(frozen=True)
class ConfiguredLoss:
    """A loss from LOSSES with validated hyper-parameters; call it like the loss function."""

    name: str
    spec: LossSpec
    params: Mapping[str, Any]

    @property
    def needs_reference(self) -> bool:
        return self.spec.needs_reference

    @property
    def logps(self) -> LogpsKind:
        return "mean" if self.params.get("length_normalized") else self.spec.logps

    def __call__(self, policy: Any, reference: Any = None, **inputs: Any) -> Any:
        """Apply the loss. `reference` is required when the loss needs it and ignored otherwise
        (so a mix can hand every component the same arguments). `inputs` carries data-dependent
        keyword inputs such as KTO's `desirable` and `kl_reference`."""
        if not self.spec.needs_reference:
            return self.spec.fn(policy, **inputs, **self.params)
        if reference is None:
            raise ValueError(f"{self.name}: this loss needs reference log-probs; pass reference=")
        return self.spec.fn(policy, reference, **inputs, **self.params)


def make_loss(name: str, **params: Any) -> ConfiguredLoss:
    """Build a configured loss, failing early on unknown names and out-of-range values.

    make_loss("dpo", beta=0.1, label_smoothing=0.0) -> ConfiguredLoss. Unset hyper-parameters
    take the loss function's defaults. Raises ValueError naming the parameter and allowed range.
    """
    spec = LOSSES.get(name)
    if spec is None:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    defaults = spec.defaults
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"{name}: unknown hyper-parameter(s) {', '.join(unknown)}; "
            f"this loss takes {', '.join(sorted(defaults))}"
        )
    resolved = {**defaults, **params}
    spec.check(**resolved)
    return ConfiguredLoss(name, spec, MappingProxyType(resolved))
