"""Preference losses as pure functions over sequence log-probs; needs torch only.

Every paired loss takes `PairLogps` for the policy (and the reference where it needs one),
keyword hyper-parameters, and returns `LossOutput` with per-example losses (no reduction) and
detached implicit rewards. Each hyper-parameter's type and bounds are declared in its loss's
signature (`Positive`, `Range`). `LOSSES` indexes the losses; `make_loss` validates a
configuration; `register` adds a user's loss to LOSSES (for this process).
"""

from ._params import NonNegative, Positive, Range
from ._types import LossOutput, PairLogps, SequenceLogps, UnpairedLossOutput
from .apo import apo_down_loss, apo_zero_loss
from .bradley_terry import bradley_terry_loss
from .dpo import dpo_loss, robust_dpo_loss, rpo_loss
from .hinge import hinge_loss
from .ipo import ipo_loss
from .kto import kto_kl_reference, kto_loss
from .metrics import dpo_gradient_weight, kl_proxy, reward_accuracy, reward_margins, reward_metrics
from .mix import MixedLoss, mix_losses
from .orpo import orpo_loss
from .registry import LOSSES, ConfiguredLoss, LossSpec, make_loss, register
from .simpo import simpo_loss

__all__ = [
    "LOSSES",
    "ConfiguredLoss",
    "LossOutput",
    "LossSpec",
    "MixedLoss",
    "NonNegative",
    "PairLogps",
    "Positive",
    "Range",
    "SequenceLogps",
    "UnpairedLossOutput",
    "apo_down_loss",
    "apo_zero_loss",
    "bradley_terry_loss",
    "dpo_gradient_weight",
    "dpo_loss",
    "hinge_loss",
    "ipo_loss",
    "kl_proxy",
    "kto_kl_reference",
    "kto_loss",
    "make_loss",
    "mix_losses",
    "orpo_loss",
    "register",
    "reward_accuracy",
    "reward_margins",
    "reward_metrics",
    "robust_dpo_loss",
    "rpo_loss",
    "simpo_loss",
]
