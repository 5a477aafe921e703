"""Health checks over the metrics history: pure functions, each naming what it saw and why it matters.

A check returns a message or None. `HealthMonitor` runs them after every step and evaluation
and reports each kind of problem once per run (the metrics keep showing it afterwards). History
entries are the train metrics of the latest steps (unprefixed keys such as "loss",
"rewards/accuracy", "logps/chosen_change") with their "step"; skipped steps have none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from prefalign.losses import ConfiguredLoss, PairLogps

History = Sequence[Mapping[str, float]]

WINDOW = 5  # consecutive logs a condition must hold for before it is reported
IDENTITY_TOLERANCE = 1e-3  # |loss − loss at policy == reference| that counts as "not moved"
SATURATED_GAP = 0.2  # train accuracy 1.0 vs held-out accuracy below 1.0 − this
LENGTH_DRIFT = 1.5  # completion length mean grown (or shrunk) by this factor over the window


@dataclass(frozen=True)
class HealthEvent:
    """One reported problem: `name` is stable (for manifests and tests), `message` is for people."""

    name: str
    step: int
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "step": self.step, "message": self.message}


def likelihood_displacement(history: History, window: int = WINDOW) -> str | None:
    """Chosen and rejected log-probs both below the reference's in each of the last `window`
    logs, and the chosen one still falling: the policy widens the margin by pushing the
    preferred reply down too (likelihood displacement, the "degenerate case" of seed 002)."""
    recent = _last(history, window, ("logps/chosen_change", "logps/rejected_change"))
    if recent is None:
        return None
    if not all(h["logps/chosen_change"] < 0 and h["logps/rejected_change"] < 0 for h in recent):
        return None
    if recent[-1]["logps/chosen_change"] >= recent[0]["logps/chosen_change"]:
        return None
    return (f"chosen and rejected log-probs have both fallen below the reference's for "
            f"{window} logs (chosen change {recent[-1]['logps/chosen_change']:+.3g} nats): "
            "likelihood displacement, the margin grows by lowering the preferred replies too; "
            "consider a lower optim.lr, a higher beta, or the rpo loss (adds an NLL term on "
            "chosen)")


def loss_stuck_at_identity(
    history: History,
    identity_loss: float | None,
    after_step: int,
    window: int = WINDOW,
    tolerance: float = IDENTITY_TOLERANCE,
) -> str | None:
    """The loss within `tolerance` of its value at policy == reference (ln 2 for DPO) in each
    of the last `window` logs after step `after_step` (the warm-up): the policy has not moved."""
    if identity_loss is None:
        return None
    recent = _last([h for h in history if h["step"] > after_step], window, ("loss",))
    if recent is None or not all(abs(h["loss"] - identity_loss) < tolerance for h in recent):
        return None
    return (f"the loss has stayed at {identity_loss:.4f} (its value when the policy equals the "
            f"reference) for {window} logs after warm-up: the policy is identical to the "
            "reference. Does the adapter train (lora.target_modules, trainable parameters)? "
            "Is optim.lr large enough?")


def accuracy_saturated(
    history: History, last_eval: Mapping[str, float] | None, window: int = WINDOW,
    gap: float = SATURATED_GAP,
) -> str | None:
    """Train reward accuracy 1.0 over the last `window` logs while held-out accuracy is more
    than `gap` below: the policy memorises the training pairs instead of the preference."""
    recent = _last(history, window, ("rewards/accuracy",))
    if recent is None or last_eval is None or "accuracy" not in last_eval:
        return None
    if not all(h["rewards/accuracy"] >= 1.0 for h in recent):
        return None
    if last_eval["accuracy"] > 1.0 - gap:
        return None
    return (f"training reward accuracy is 1.0 but held-out accuracy is "
            f"{last_eval['accuracy']:.3f}: overfitting the training pairs; consider fewer "
            "steps (train.early_stopping_patience), a lower optim.lr or more data")


def groups_all_tied(history: History, window: int = WINDOW) -> str | None:
    """Online methods: every group's rewards equal in each of the last `window` logs, so every
    advantage is 0 and the policy gets no gradient from the rewards."""
    recent = _last(history, window, ("groups/tied_fraction",))
    if recent is None or not all(h["groups/tied_fraction"] >= 1.0 for h in recent):
        return None
    return (f"every group's completions got the same reward for {window} logs: the advantages "
            "are 0 and only the KL term trains. Are the judges too coarse for these prompts "
            "(all refused, all answered)? Try a larger grpo.group_size, a higher "
            "grpo.temperature, harder or easier prompts, or a graded judge")


def completion_length_drift(history: History, window: int = WINDOW,
                            factor: float = LENGTH_DRIFT) -> str | None:
    """Online methods: the mean completion length moving the same way at every one of the last
    `window` logs and by `factor` overall (the verbosity trap, or a collapse to short answers)."""
    recent = _last(history, window, ("completions/length_mean",))
    if recent is None:
        return None
    lengths = [h["completions/length_mean"] for h in recent]
    pairs = list(zip(lengths, lengths[1:], strict=False))
    if all(b > a for a, b in pairs) and lengths[-1] >= factor * lengths[0]:
        way = "grown"
    elif all(b < a for a, b in pairs) and lengths[-1] * factor <= lengths[0]:
        way = "shrunk"
    else:
        return None
    return (f"the mean completion length has {way} at every log for {window} logs "
            f"({lengths[0]:.1f} → {lengths[-1]:.1f} tokens): the policy may be learning the "
            "judges' length preference rather than the task; check the rewards by length, or "
            "use grpo.normalisation: dr_grpo")


def reward_up_heldout_down(history: History, eval_rewards: Sequence[float],
                           window: int = WINDOW) -> str | None:
    """Online methods: the training reward rose over the last `window` logs while the last
    held-out reward fell below the one before (the policy games the training prompts)."""
    recent = _last(history, window, ("reward/mean",))
    if recent is None or len(eval_rewards) < 2:
        return None
    if not (recent[-1]["reward/mean"] > recent[0]["reward/mean"]
            and eval_rewards[-1] < eval_rewards[-2]):
        return None
    return (f"the training reward rose ({recent[0]['reward/mean']:.3f} → "
            f"{recent[-1]['reward/mean']:.3f}) while the held-out reward fell "
            f"({eval_rewards[-2]:.3f} → {eval_rewards[-1]:.3f}): over-optimisation of the "
            "training prompts or the judge; consider a higher grpo.beta or fewer steps")


def _last(history: History, window: int, keys: Iterable[str]) -> list[Mapping[str, float]] | None:
    """The last `window` entries, or None when there are fewer or one lacks a key or is NaN."""
    recent = list(history[-window:])
    if len(recent) < window:
        return None
    keys = tuple(keys)
    if not all(k in h and math.isfinite(h[k]) for h in recent for k in keys):
        return None
    return recent


def identity_loss(loss: ConfiguredLoss) -> float | None:
    """The loss when policy == reference, if it is the same whatever the log-probs are (ln 2 for
    DPO and its variants); None for reference-free losses and those with an NLL term."""
    if not loss.needs_reference:
        return None
    values = []
    for logp in (-3.0, -40.0):
        logps = PairLogps(torch.tensor([logp]), torch.tensor([2 * logp]), torch.tensor([3]),
                          torch.tensor([5]))
        values.append(loss(logps, logps).losses.item())
    return values[0] if abs(values[0] - values[1]) < 1e-9 else None


class HealthMonitor:
    """Runs the checks and reports each kind of problem once per run."""

    def __init__(self, identity: float | None, warmup_steps: int, fired: Iterable[str] = ()):
        self.identity = identity
        self.warmup_steps = warmup_steps
        self.fired = set(fired)
        self.eval_rewards: list[float] = []  # held-out reward/mean of this process's evals
        self._last_eval: Mapping[str, float] | None = None

    def check(
        self, step: int, history: History, last_eval: Mapping[str, float] | None
    ) -> list[HealthEvent]:
        """New events at `step` (those not reported before)."""
        if last_eval is not None and last_eval is not self._last_eval and \
                "reward/mean" in last_eval:
            self.eval_rewards.append(last_eval["reward/mean"])
        self._last_eval = last_eval
        found = {
            "likelihood_displacement": likelihood_displacement(history),
            "loss_stuck_at_identity": loss_stuck_at_identity(history, self.identity,
                                                             self.warmup_steps),
            "accuracy_saturated": accuracy_saturated(history, last_eval),
            "groups_all_tied": groups_all_tied(history),
            "completion_length_drift": completion_length_drift(history),
            "reward_up_heldout_down": reward_up_heldout_down(history, self.eval_rewards),
        }
        events = [HealthEvent(name, step, message) for name, message in found.items()
                  if message is not None and name not in self.fired]
        self.fired.update(event.name for event in events)
        return events
