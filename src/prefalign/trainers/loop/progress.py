"""The progress bar (ETA, examples/s, loss, reward accuracy) and the end-of-run summary."""

from __future__ import annotations

import time
from collections.abc import Mapping

from tqdm.auto import tqdm


class Progress:
    """A tqdm bar over optimiser steps on the main process; silent elsewhere."""

    def __init__(self, total: int, initial: int, per_step: int, enabled: bool,
                 unit: str = "pairs"):
        self.enabled = enabled
        self.per_step, self.unit = per_step, unit
        self.started = time.perf_counter()
        self.steps_done = 0
        self.bar = tqdm(total=total, initial=initial, unit="step", desc="training",
                        disable=not enabled, dynamic_ncols=True)

    def update(self, metrics: Mapping[str, float] | None) -> None:
        """One optimiser step done; `metrics` (None for a skipped step) feed the postfix."""
        self.steps_done += 1
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        postfix = {f"{self.unit}/s": f"{self.steps_done * self.per_step / elapsed:.2f}"}
        if metrics is not None:
            postfix["loss"] = f"{metrics['loss']:.4f}"
            if "rewards/accuracy" in metrics:
                postfix["acc"] = f"{metrics['rewards/accuracy']:.2f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def write(self, message: str) -> None:
        """Print above the bar (main process only)."""
        if self.enabled:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


def format_summary(outcome: str, steps: int, metrics: Mapping[str, float] | None,
                   best_step: int | None) -> str:
    """A few lines for the terminal: outcome and the held-out numbers that matter most."""
    lines = [f"run {outcome} after {steps} step(s)"
             + (f"; best evaluation at step {best_step}" if best_step is not None else "")]
    if not metrics:
        return lines[0]
    rows = [
        ("held-out reward accuracy", "accuracy", "{:.3f}"),
        ("length-only baseline", "length_only_accuracy", "{:.3f}"),
        ("length-balanced accuracy", "length_balanced_accuracy", "{:.3f}"),
        ("reward / length correlation", "reward_length_corr", "{:+.3f}"),
        ("chosen log-prob change", "chosen_logp_change", "{:+.3f}"),
        ("rejected log-prob change", "rejected_logp_change", "{:+.3f}"),
        ("policy margin (chosen - rejected)", "policy_margin", "{:+.3f}"),
        ("reference margin", "reference_margin", "{:+.3f}"),
        ("held-out loss", "loss", "{:.4f}"),
        ("held-out perplexity", "perplexity", "{:.3f}"),
    ]
    for label, key, form in rows:
        if key in metrics:
            value = form.format(metrics[key])
            if key == "length_balanced_accuracy" and "length_balanced_accuracy_low" in metrics:
                value += (f" (95% CI {metrics['length_balanced_accuracy_low']:.3f}"
                          f"-{metrics['length_balanced_accuracy_high']:.3f})")
            lines.append(f"  {label:<34} {value}")
    return "\n".join(lines)
