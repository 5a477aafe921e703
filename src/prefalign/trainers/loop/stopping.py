"""Early stopping on a held-out metric: which direction is better, and when to stop.

`train.early_stopping_metric` names an evaluation metric ("eval/loss", "eval/accuracy", ...).
Lower is better for losses and for the two diagnostics that measure something unwanted
(reward_length_corr: reward tracking length; both_fall: likelihood displacement); higher is
better for everything else (accuracies, margins, log-prob changes). An evaluation improves on
the best so far only when strictly better; after `patience` evaluations without improvement the
run stops ("early_stopped"). The final weights are those at the stopping step, not the best
step's: the manifest names the best step, and a run is deterministic, so rerunning with
train.max_steps set to it reproduces those weights.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from prefalign.config import ConfigError

EVAL_METRICS = (
    "loss", "accuracy", "margin", "policy_margin", "reference_margin", "chosen_logp_change",
    "rejected_logp_change", "both_fall", "length_only_accuracy", "length_balanced_accuracy",
    "length_balanced_accuracy_low", "length_balanced_accuracy_high", "reward_length_corr",
)
LOWER_IS_BETTER = ("loss", "reward_length_corr", "both_fall")


def metric_key(name: str) -> str:
    """"eval/loss" -> "loss"; raises ConfigError for names that are not evaluation metrics."""
    prefix, _, key = name.partition("/")
    if prefix != "eval" or key not in EVAL_METRICS:
        valid = [f"eval/{m}" for m in EVAL_METRICS]
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"train.early_stopping_metric: {name!r} is not an evaluation "
                          f"metric{hint} (choose one of {', '.join(valid)})")
    return key


def lower_is_better(name: str) -> bool:
    return metric_key(name) in LOWER_IS_BETTER


@dataclass
class EarlyStopping:
    """Best value and step so far, and evaluations since; `patience` 0 never stops."""

    metric: str
    patience: int
    best_value: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record one evaluation; True when the run should stop now."""
        value = metrics.get(metric_key(self.metric))
        if value is not None and math.isfinite(value) and self._better(value):
            self.best_value, self.best_step, self.evals_since_best = value, step, 0
        else:
            self.evals_since_best += 1
        return self.patience > 0 and self.evals_since_best >= self.patience

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if lower_is_better(self.metric):
            return value < self.best_value
        return value > self.best_value

    def state(self) -> dict[str, object]:
        return {"best_value": self.best_value, "best_step": self.best_step,
                "evals_since_best": self.evals_since_best}
