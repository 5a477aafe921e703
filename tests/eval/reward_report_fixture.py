"""A consistent `prefalign rm eval` result built from random rewards on real pairs (no model):
the sections come from the same functions the evaluation uses. One pair's reply carries a
<script> tag and an <img onerror> to test escaping."""

from __future__ import annotations

import torch

from prefalign.data.types import Message, PreferencePair, Provenance
from prefalign.engine.forward.reward import PairRewards
from prefalign.engine.reward_metrics import reward_metrics
from prefalign.eval.calibration import calibration_summary
from prefalign.eval.pairs import PairSet
from prefalign.eval.reward_columns import pair_section
from prefalign.eval.reward_dpo import agreement

HOSTILE = "<script>alert('pwned')</script><img src=x onerror=alert(1)> & \"quotes\""


def build_reward_results(n: int = 60, *, dpo: bool = True) -> dict:
    generator = torch.Generator().manual_seed(0)
    pairs = [PreferencePair((Message("user", f"Question {i}?"),),
                            HOSTILE if i == 0 else f"A careful answer {i}. " * (1 + i % 4),
                            f"A rude answer {i}.", Provenance("heldout.jsonl", i + 1))
             for i in range(n)]
    sources = ["heldout.jsonl"] * (n // 2) + ["other.jsonl"] * (n - n // 2)
    data = PairSet(pairs, [None] * n, sources)  # tokenised ids are not needed here
    chosen_tokens = torch.randint(5, 80, (n,), generator=generator)
    rejected_tokens = torch.randint(5, 80, (n,), generator=generator)
    chosen = torch.randn(n, generator=generator) + 0.6
    rejected = torch.randn(n, generator=generator)
    rewards = PairRewards(chosen, rejected, chosen_tokens, rejected_tokens)
    results = {"format": "prefalign-rm-eval/1", "prefalign_version": "0.1.0",
               "created": "2026-12-01T00:00:00Z",
               "run": {"name": "rm-demo", "run_dir": "runs/rm-demo", "outcome": "completed",
                       "loss": "bradley_terry", "loss_params": {"margin": False,
                                                                "centering": 0.0},
                       "steps": 64, "data": {"train": {"source": "bundled:hh-harmless-train",
                                                       "fingerprint": "ab" * 32}}},
               "settings": {"pairs": ["heldout.jsonl", "other.jsonl"], "seed": 0},
               "pairs": pair_section(data, rewards, ["heldout.jsonl", "other.jsonl"])}
    margins = chosen - rejected
    results["calibration"] = {**calibration_summary(margins[: n // 2], margins[n // 2:]),
                              "split": "fitted on a seeded half"}
    if dpo:
        dpo_margins = 0.5 * margins + 0.3 * torch.randn(n, generator=generator)
        results["pairs"]["per_pair"]["dpo_margin"] = dpo_margins.tolist()
        results["dpo"] = {"run_dir": "runs/demo", "loss": "dpo", "loss_params": {"beta": 0.1},
                          "overall": {"n": n, **reward_metrics(
                              dpo_margins, torch.zeros(n), chosen_tokens, rejected_tokens)},
                          "agreement": agreement(rewards, dpo_margins)}
    return results


def build_metrics_rows(steps: int = 20) -> list[dict]:
    rows = [{"step": s, "split": "train", "loss": 0.7 - 0.01 * s,
             "rewards/accuracy": 0.5 + 0.01 * s, "rewards/margin": 0.05 * s}
            for s in range(1, steps + 1)]
    rows.append({"step": steps, "split": "eval", "loss": 0.6, "accuracy": 0.64, "margin": 0.7})
    return rows
