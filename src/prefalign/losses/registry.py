"""LOSSES, the index of loss functions; `make_loss`, which validates a configuration against
the hyper-parameters each loss declares in its signature; `register`, which adds a user's loss."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ._params import HyperParameter, declared_hyperparameters
from .apo import apo_down_loss, apo_zero_loss
from .dpo import dpo_loss, robust_dpo_loss, rpo_loss
from .hinge import hinge_loss
from .ipo import ipo_loss
from .kto import kto_loss
from .orpo import orpo_loss
from .simpo import simpo_loss

LogpsKind = Literal["sum", "mean"]


@dataclass(frozen=True)
class LossSpec:
    """One entry of LOSSES.

    `logps` says how the loss reduces log-probs over response tokens before its formula:
    "sum" (sequence log-likelihood) or "mean" (per-token average). Losses take sums and token
    counts (`PairLogps`) and average internally, so a caller cannot feed the wrong kind.
    `paired` is False for KTO, whose inputs are single labelled responses. `hyperparameters`
    is read from `fn`'s keyword-only parameters (type, bounds, default; see `_params`).
    `check`, if given, receives every resolved hyper-parameter by keyword and raises
    ValueError for combinations that no single bound can express.
    """

    fn: Callable[..., Any]
    needs_reference: bool
    logps: LogpsKind
    paper: str
    paired: bool = True
    check: Callable[..., None] | None = None
    hyperparameters: Mapping[str, HyperParameter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        declared = MappingProxyType(declared_hyperparameters(self.fn))
        object.__setattr__(self, "hyperparameters", declared)

    @property
    def defaults(self) -> dict[str, Any]:
        """Hyper-parameters and their defaults."""
        return {name: parameter.default for name, parameter in self.hyperparameters.items()}


LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(dpo_loss, True, "sum", "Rafailov et al. 2023"),
    "robust": LossSpec(robust_dpo_loss, True, "sum", "Chowdhury et al. 2024"),
    "ipo": LossSpec(ipo_loss, True, "mean", "Azar et al. 2023"),
    "hinge": LossSpec(hinge_loss, True, "sum", "Zhao et al. 2023 (SLiC-HF)"),
    "simpo": LossSpec(simpo_loss, False, "mean", "Meng et al. 2024"),
    "orpo": LossSpec(orpo_loss, False, "mean", "Hong et al. 2024"),
    "rpo": LossSpec(rpo_loss, True, "sum", "Pang et al. 2024"),
    "apo_zero": LossSpec(apo_zero_loss, True, "sum", "D'Oosterlinck et al. 2024"),
    "apo_down": LossSpec(apo_down_loss, True, "sum", "D'Oosterlinck et al. 2024"),
    "kto": LossSpec(kto_loss, True, "sum", "Ethayarajh et al. 2024", paired=False),
}
BUILT_IN = frozenset(LOSSES)


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
    take the loss function's defaults; every value is checked against the type and bounds its
    loss declares, and stored as that type (beta=1 becomes 1.0). Raises ValueError naming the
    parameter and what is allowed.
    """
    spec = LOSSES.get(name)
    if spec is None:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    declared = spec.hyperparameters
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(
            f"{name}: unknown hyper-parameter(s) {', '.join(unknown)}; "
            f"this loss takes {', '.join(sorted(declared)) or 'none'}"
        )
    resolved = {
        key: parameter.validate(name, params[key]) if key in params else parameter.default
        for key, parameter in declared.items()
    }
    if spec.check is not None:
        spec.check(**resolved)
    return ConfiguredLoss(name, spec, MappingProxyType(resolved))


_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def register(
    name: str,
    fn: Callable[..., Any],
    *,
    needs_reference: bool,
    logps: LogpsKind,
    paper: str = "",
    paired: bool = True,
    replace: bool = False,
    check: Callable[..., None] | None = None,
) -> LossSpec:
    """Add a user's loss to LOSSES under `name`, so `make_loss` and a config's `loss.name` find it.

    `fn(policy, reference, *, beta: Positive = 0.1, ...)` (no `reference` when
    `needs_reference` is False) takes `PairLogps` and returns `LossOutput`, like the built-ins;
    each hyper-parameter is keyword-only with a default and an annotation `make_loss` checks
    (float, int, bool, Literal or Annotated[..., Range]). An unpaired loss (`paired=False`)
    may add keyword-only data inputs without defaults, as KTO's `desirable`. `check` as in
    `LossSpec`. Refuses a built-in name, and a registered one unless `replace`.

    LOSSES lives in the process: a config naming a registered loss works only after the
    registering code has run in that process (and in each process of a distributed launch).
    """
    _check_name(name, replace)
    if logps not in ("sum", "mean"):
        raise ValueError(f"register {name!r}: logps must be 'sum' or 'mean', got {logps!r}")
    for flag, value in (("needs_reference", needs_reference), ("paired", paired)):
        if not isinstance(value, bool):
            raise ValueError(f"register {name!r}: {flag} must be True or False, got {value!r}")
    _check_signature(name, fn, needs_reference, paired)
    try:
        spec = LossSpec(fn, needs_reference, logps, paper, paired, check)
    except TypeError as error:
        raise TypeError(f"register {name!r}: {error}") from None
    LOSSES[name] = spec
    return spec


def _check_name(name: object, replace: bool) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"register: a loss name is letters, digits, '_', '.' and '-', got {name!r}"
        )
    if name in BUILT_IN:
        raise ValueError(f"register {name!r}: a built-in loss has that name; choose another")
    if name in LOSSES and not replace:
        raise ValueError(f"register {name!r}: already registered; pass replace=True to replace it")


def _check_signature(
    name: str, fn: Callable[..., Any], needs_reference: bool, paired: bool
) -> None:
    """fn takes the log-probs positionally, then keyword-only hyper-parameters with defaults."""
    if not callable(fn):
        raise TypeError(f"register {name!r}: fn must be a function, got {fn!r}")
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"register {name!r}: cannot read the signature of {fn!r}: {error}"
        ) from None
    kinds = inspect.Parameter
    positional = [
        p for p in parameters if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    variadic = [p for p in parameters if p.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
    wanted = "(policy, reference, *, ...)" if needs_reference else "(policy, *, ...)"
    if len(positional) != (2 if needs_reference else 1) or variadic:
        raise TypeError(
            f"register {name!r}: the loss must look like {wanted}: the log-probs positional, "
            f"then each hyper-parameter keyword-only (after `*`); got {inspect.signature(fn)}"
        )
    for parameter in parameters:
        if parameter.kind is kinds.KEYWORD_ONLY and parameter.default is kinds.empty and paired:
            raise TypeError(
                f"register {name!r}: hyper-parameter {parameter.name!r} has no default; give "
                "it one (make_loss fills unset hyper-parameters from the defaults)"
            )
