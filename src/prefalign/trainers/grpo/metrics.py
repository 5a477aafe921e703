"""What a GRPO step logs, from its completions' columns (every process's, gathered).

Rewards: mean and standard deviation, combined and per judge (a kind-scoped judge's over the
completions of its kind); groups/tied_fraction: groups whose G rewards are all equal (no
signal: advantages 0); clip_fraction, kl and entropy are
per-token means over every completion token of the step; entropy is estimated as the mean
negative log-prob of the sampled tokens under the sampling policy (the full-vocabulary entropy
would need the logits the scorer never holds); completions/length_mean and
completions/truncated_fraction (cut at grpo.max_new_tokens).
"""

from __future__ import annotations

from prefalign.trainers.loop.method import Columns

JUDGE_PREFIX = "judge/"


def reward_metrics(columns: Columns) -> dict[str, float]:
    rewards = columns["rewards"].double()
    metrics = {"reward/mean": rewards.mean().item(), "reward/std": _std(rewards),
               "groups/tied_fraction": columns["tied"].double().mean().item(),
               "completions/length_mean": columns["lengths"].double().mean().item(),
               "completions/truncated_fraction": columns["truncated"].double().mean().item()}
    for name, values in sorted(columns.items()):
        if name.startswith(JUDGE_PREFIX):
            judge = name.removeprefix(JUDGE_PREFIX)
            scored = values.double()[~values.isnan()]  # a kind-scoped judge: its kind's only
            if len(scored):
                metrics[f"reward/{judge}/mean"] = scored.mean().item()
                metrics[f"reward/{judge}/std"] = _std(scored)
    return metrics


def train_metrics(columns: Columns) -> dict[str, float]:
    """loss: Σ_i w_i Σ_t L_it (≈ 0 by construction on a first pass; watch the rewards)."""
    tokens = max(columns["lengths"].double().sum().item(), 1.0)
    return {"loss": columns["losses"].double().sum().item(), **reward_metrics(columns),
            "advantages/abs_mean": columns["advantages"].double().abs().mean().item(),
            "clip_fraction": columns["clipped_tokens"].double().sum().item() / tokens,
            "kl": columns["kl_sum"].double().sum().item() / tokens,
            "entropy": columns["neg_logp_sum"].double().sum().item() / tokens,
            "ratio/max_deviation": columns["ratio_deviation"].double().max().item(),
            "completions": float(len(columns["losses"]))}


def eval_metrics(columns: Columns) -> dict[str, float]:
    """Held-out rewards; loss = −reward/mean, so early stopping on eval/loss keeps the best."""
    metrics = reward_metrics(columns)
    return {"loss": -metrics["reward/mean"], **metrics}


def _std(values) -> float:
    return values.std().item() if len(values) > 1 else 0.0
