"""The `pairs` section of `prefalign rm eval`'s eval.json: the reward model's summary overall and
by source and category, the distributions of its scores, per-pair columns and the worst pairs.

Slices are those of `prefalign eval` (eval/pairs.py): `source` as given on the command line,
`category` the pair's own metadata or single-/multi-turn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.engine.forward.reward import PairRewards
from prefalign.engine.metrics import pearson, reward_correct
from prefalign.engine.reward_metrics import reward_metrics
from prefalign.eval.pairs import WORST, PairSet, category_of

QUANTILES = {"p10": 0.1, "median": 0.5, "p90": 0.9}


def summary(rewards: PairRewards, mask: Tensor | None = None) -> dict:
    """`reward_metrics` (with the BT loss at m = 0) of the pairs where `mask` is True."""
    chosen, rejected = rewards.chosen, rewards.rejected
    chosen_tokens, rejected_tokens = rewards.chosen_count, rewards.rejected_count
    if mask is not None:
        chosen, rejected = chosen[mask], rejected[mask]
        chosen_tokens, rejected_tokens = chosen_tokens[mask], rejected_tokens[mask]
    losses = torch.nn.functional.softplus(-(chosen.double() - rejected.double()))
    return {"n": int(chosen.numel()),
            **reward_metrics(chosen, rejected, chosen_tokens, rejected_tokens, losses)}


def slices(rewards: PairRewards, keys: Sequence[str]) -> dict[str, dict]:
    return {key: summary(rewards, torch.tensor([k == key for k in keys]))
            for key in sorted(set(keys))}


def distribution(values: Tensor) -> dict[str, float]:
    """mean, std, min, p10, median, p90, max of (N,) values."""
    values = values.double()
    stats = {"mean": values.mean().item(),
             "std": values.std().item() if values.numel() > 1 else 0.0,
             "min": values.min().item(), "max": values.max().item()}
    stats.update({name: torch.quantile(values, q).item() for name, q in QUANTILES.items()})
    return stats


def distributions(rewards: PairRewards) -> dict:
    """Score distributions of the chosen and rejected replies and of the margin, and how the
    reward of a reply follows its length (Pearson over all 2N replies)."""
    both = torch.cat([rewards.chosen, rewards.rejected])  # (2N,)
    lengths = torch.cat([rewards.chosen_count, rewards.rejected_count]).double()  # (2N,)
    return {"chosen": distribution(rewards.chosen),
            "rejected": distribution(rewards.rejected),
            "margin": distribution(rewards.chosen - rewards.rejected),
            "reward_vs_reply_length_corr": pearson(both, lengths)}


def per_pair_columns(data: PairSet, rewards: PairRewards) -> dict[str, list]:
    """One list per column, one entry per pair, in `data` order (also pairs.csv)."""
    margins = rewards.chosen - rewards.rejected
    return {
        "pair_id": [pair.provenance.pair_id for pair in data.pairs],
        "source": list(data.sources),
        "category": [category_of(pair) for pair in data.pairs],
        "chosen_reward": rewards.chosen.tolist(),
        "rejected_reward": rewards.rejected.tolist(),
        "reward_margin": margins.tolist(),
        "probability": torch.sigmoid(margins.double()).tolist(),
        "chosen_tokens": rewards.chosen_count.tolist(),
        "rejected_tokens": rewards.rejected_count.tolist(),
        "correct": reward_correct(rewards.chosen, rewards.rejected).tolist(),
    }


def worst_pairs(data: PairSet, columns: dict[str, list], limit: int = WORST) -> list[dict]:
    """The wrongly ranked pairs with the most negative reward margins, worst first."""
    margins = columns["reward_margin"]
    wrong = sorted((i for i, ok in enumerate(columns["correct"]) if not ok),
                   key=lambda i: margins[i])
    rows = []
    for i in wrong[:limit]:
        pair = data.pairs[i]
        users = [message.content for message in pair.prompt if message.role == "user"]
        rows.append({"pair_id": columns["pair_id"][i], "source": columns["source"][i],
                     "prompt": users[-1] if users else "", "chosen": pair.chosen,
                     "rejected": pair.rejected, "margin": margins[i],
                     "chosen_reward": columns["chosen_reward"][i],
                     "rejected_reward": columns["rejected_reward"][i]})
    return rows


def pair_section(data: PairSet, rewards: PairRewards, sources: Sequence[str]) -> dict:
    """Everything eval.json says about the scored pairs."""
    columns = per_pair_columns(data, rewards)
    return {
        "overall": summary(rewards),
        "slices": {"source": slices(rewards, data.sources),
                   "category": slices(rewards, columns["category"])},
        "sets": [_set_entry(data, source) for source in sources],
        "distributions": distributions(rewards),
        "worst_pairs": worst_pairs(data, columns),
        "per_pair": columns,
    }


def _set_entry(data: PairSet, source: str) -> dict:
    pairs = [pair for pair, name in zip(data.pairs, data.sources, strict=True) if name == source]
    return {"name": source, "pairs": len(pairs), "fingerprint": fingerprint_pairs(pairs)}
