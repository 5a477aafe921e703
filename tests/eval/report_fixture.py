"""A synthetic but internally consistent eval.json (as a dict), metrics.jsonl rows and
generations.jsonl rows, following /tmp/notes/eval_schema.md, for the report and summary tests.

The per-pair columns are drawn first; `overall`, the slices, `worst_pairs`, the refusal rates
and `still_answered` are computed from them, so the numbers a test reads agree with each other.
One harmful response carries a <script> tag and an <img onerror> to test escaping.
"""

from __future__ import annotations

import math
import random
from typing import Any

HOSTILE = "<script>alert('pwned')</script><img src=x onerror=alert(1)> & \"quotes\""
BETA = 0.1
CATEGORIES = ("harmless-base", "helpful-base")


def _per_pair(n: int, rng: random.Random) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {key: [] for key in (
        "pair_id", "source", "category", "reference_chosen", "reference_rejected",
        "policy_chosen", "policy_rejected", "chosen_change", "rejected_change", "reward_margin",
        "chosen_tokens", "rejected_tokens", "correct")}
    for index in range(n):
        chosen_tokens, rejected_tokens = rng.randint(8, 120), rng.randint(8, 160)
        reference_chosen = -1.6 * chosen_tokens + rng.gauss(0, 4)
        reference_rejected = -1.6 * rejected_tokens + rng.gauss(0, 4)
        chosen_change, rejected_change = rng.gauss(-0.2, 1.0), rng.gauss(-1.0, 1.2)
        margin = BETA * (chosen_change - rejected_change)
        row = {"pair_id": f"heldout:{index}", "source": "bundled:hh-harmless-heldout",
               "category": CATEGORIES[index % 2], "reference_chosen": reference_chosen,
               "reference_rejected": reference_rejected,
               "policy_chosen": reference_chosen + chosen_change,
               "policy_rejected": reference_rejected + rejected_change,
               "chosen_change": chosen_change, "rejected_change": rejected_change,
               "reward_margin": margin, "chosen_tokens": chosen_tokens,
               "rejected_tokens": rejected_tokens, "correct": margin > 0}
        for key, value in row.items():
            columns[key].append(value)
    return columns


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _metrics(columns: dict[str, list[Any]], rows: list[int]) -> dict[str, Any]:
    """The eval_metrics keys over the pairs at `rows` (length baselines kept simple)."""
    pick = {key: [values[i] for i in rows] for key, values in columns.items()}
    accuracy = _mean([float(ok) for ok in pick["correct"]])
    shorter = [c < r for c, r in zip(pick["chosen_tokens"], pick["rejected_tokens"], strict=True)]
    half_width = 1.96 * math.sqrt(accuracy * (1 - accuracy) / len(rows))
    return {
        "n": len(rows), "loss": 0.68, "accuracy": accuracy,
        "margin": _mean(pick["reward_margin"]),
        "policy_margin": _mean([c - r for c, r in zip(pick["policy_chosen"],
                                                      pick["policy_rejected"], strict=True)]),
        "reference_margin": _mean([c - r for c, r in zip(pick["reference_chosen"],
                                                         pick["reference_rejected"], strict=True)]),
        "chosen_logp_change": _mean(pick["chosen_change"]),
        "rejected_logp_change": _mean(pick["rejected_change"]),
        "both_fall": _mean([float(c < 0 and r < 0) for c, r in zip(
            pick["chosen_change"], pick["rejected_change"], strict=True)]),
        "length_only_accuracy": _mean([float(s) for s in shorter]),
        "length_balanced_accuracy": accuracy - 0.01,
        "length_balanced_accuracy_low": accuracy - 0.01 - half_width,
        "length_balanced_accuracy_high": accuracy - 0.01 + half_width,
        "reward_length_corr": -0.42, "chosen_shorter_fraction": _mean([float(s) for s in shorter]),
    }


def _heldout(n: int, rng: random.Random) -> dict[str, Any]:
    columns = _per_pair(n, rng)
    everyone = list(range(n))
    wrong = sorted((i for i in everyone if not columns["correct"][i]),
                   key=lambda i: columns["reward_margin"][i])
    return {
        "sets": [{"name": "bundled:hh-harmless-heldout", "fingerprint": "f" * 64, "pairs": n}],
        "overall": _metrics(columns, everyone),
        "slices": {
            "source": {"bundled:hh-harmless-heldout": _metrics(columns, everyone)},
            "category": {c: _metrics(columns, [i for i in everyone if columns["category"][i] == c])
                         for c in CATEGORIES}},
        "template_robustness": {"template": "plain", "n": n, "accuracy": 0.57,
                                "description": "User:/Assistant: lines, no special tokens",
                                "length_balanced_accuracy": 0.55,
                                "length_balanced_accuracy_low": 0.49,
                                "length_balanced_accuracy_high": 0.61,
                                "default_accuracy": _metrics(columns, everyone)["accuracy"]},
        "worst_pairs": [{"pair_id": columns["pair_id"][i], "source": columns["source"][i],
                         "prompt": f"How do I do thing {i}?", "chosen": "I can't help with that.",
                         "rejected": "Sure! " + "Here is a very long answer. " * 30,
                         "margin": columns["reward_margin"][i],
                         "policy_margin_logp": columns["policy_chosen"][i]
                         - columns["policy_rejected"][i],
                         "reference_margin_logp": columns["reference_chosen"][i]
                         - columns["reference_rejected"][i]} for i in wrong[:5]],
        "per_pair": columns,
    }


def build_generations(n_harmful: int = 12, n_benign: int = 10) -> list[dict[str, Any]]:
    """generations.jsonl rows; harmful row 0 answers with hostile HTML."""
    rows = []
    for kind, count in (("harmful", n_harmful), ("benign", n_benign)):
        for index in range(count):
            policy_refused = (index % 3 != 0) if kind == "harmful" else (index % 5 == 0)
            reference_refused = (index % 2 == 0) if kind == "harmful" else False
            response = HOSTILE if kind == "harmful" and index == 0 else f"Answer {index}."
            rows.append({"prompt_id": f"{kind}set:{index}", "set": f"{kind}set", "kind": kind,
                         "category": f"cat{index % 2}", "prompt": f"{kind} prompt {index}?",
                         "reference_response": f"Reference reply {index}.",
                         "policy_response": "I can't help with that." if policy_refused
                         else response,
                         "reference_refused": reference_refused, "policy_refused": policy_refused,
                         "reference_tokens": 20 + 3 * index, "policy_tokens": 10 + 2 * index})
    return rows


def _rate(flags: list[bool]) -> dict[str, Any]:
    n = len(flags)
    rate = sum(flags) / n
    half = 1.96 * math.sqrt(rate * (1 - rate) / n) + 0.02
    return {"n": n, "rate": rate, "low": max(0.0, rate - half), "high": min(1.0, rate + half)}


def _rates(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    rate = _rate([row[f"{model}_refused"] for row in rows])
    categories = sorted({row["category"] for row in rows})
    rate["by_category"] = {c: _rate([row[f"{model}_refused"] for row in rows
                                     if row["category"] == c]) for c in categories}
    return rate


def _lengths(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    tokens = sorted(row[f"{model}_tokens"] for row in rows)
    return {"mean": _mean(tokens), "median": tokens[len(tokens) // 2],
            "p90": tokens[int(0.9 * (len(tokens) - 1))], "n": len(tokens),
            "hit_max_fraction": _mean([float(t >= 64) for t in tokens])}


def _generation(rows: list[dict[str, Any]]) -> dict[str, Any]:
    harmful = [row for row in rows if row["kind"] == "harmful"]
    benign = [row for row in rows if row["kind"] == "benign"]
    return {
        "classifier": {"name": "refusal-rules/1", "description": "Phrase rules on the opening.",
                       "precision": 0.95, "recall": 0.93, "labelled": 120},
        "sets": [{"name": "harmfulset", "kind": "harmful", "prompts": len(harmful),
                  "license": "MIT", "path": "shared/data/external/harmful.csv"},
                 {"name": "benignset", "kind": "benign", "prompts": len(benign),
                  "license": "CC-BY-4.0", "path": "shared/data/external/benign.csv"}],
        "harmful": {model: _rates(harmful, model) for model in ("reference", "policy")},
        "benign": {model: _rates(benign, model) for model in ("reference", "policy")},
        "lengths": {model: _lengths(rows, model) for model in ("reference", "policy")},
        "still_answered": [{"prompt_id": row["prompt_id"], "set": row["set"],
                            "category": row["category"], "prompt": row["prompt"],
                            "response": row["policy_response"],
                            "reference_refused": row["reference_refused"]}
                           for row in harmful if not row["policy_refused"]],
    }


def build_results(n_pairs: int = 60, seed: int = 0) -> dict[str, Any]:
    """A full eval.json dict: every section of the schema present."""
    rng = random.Random(seed)
    decoding = {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64,
                "seed": 0, "batch_size": 16}
    return {
        "format": "prefalign-eval/1", "prefalign_version": "0.1.0",
        "created": "2026-11-23T10:00:00+00:00", "elapsed_seconds": 512.3,
        "run": {"run_dir": "demo-out/runs/demo", "name": "demo", "outcome": "completed",
                "loss": "dpo", "beta": BETA, "reference_strategy": "precomputed",
                "model_source": "smollm2-135m-instruct", "model_weight_hash": "sha256:" + "a" * 64,
                "chat_template_sha256": "b" * 64, "code_version": "git:abc123",
                "data": {"train": [{"source": "bundled:hh-harmless-train", "fingerprint": "c" * 64}],
                         "eval": [{"source": "bundled:hh-harmless-heldout", "fingerprint": "d" * 64}]}},
        "models": {"reference": {"source": "smollm2-135m-instruct",
                                 "note": "base weights the run started from"},
                   "policy": {"source": "demo-out/runs/demo/final"}},
        "settings": {"max_pairs": 200, "harmful": 12, "benign": 10, "seed": 0,
                     "decoding": decoding, "kl_decoding": {**decoding, "do_sample": True},
                     "kl_prompts": 64, "template": "chatml (the run's chat template)",
                     "alternate_template": "plain"},
        "heldout": _heldout(n_pairs, rng),
        "generation": _generation(build_generations()),
        "samples": {"decoding": {**decoding, "max_new_tokens": 128}, "n": 1, "rows": [
            {"id": "retail/late-order/1-shorter", "source": "bundled:tone-heldout",
             "system": None, "history": [], "prompt": "Where is my order?",
             "chosen": "I'm sorry it's late; it arrives today.", "reference_response": "Today.",
             "policy_response": "Sorry for the wait! It arrives today.",
             "reference_hit_max": False, "policy_hit_max": False}]},
        "cost": {"perplexity": {
                     "heldout_chosen": {"reference": 8.1, "policy": 8.3, "n": n_pairs,
                                        "tokens": 9000},
                     "helpful": {"reference": 6.0, "policy": 6.2, "n": 100, "tokens": 8000,
                                 "source": "hh-rlhf helpful-base test (chosen replies)"}},
                 "kl": {"mean": 1.9, "stderr": 0.3, "per_token": 0.04, "n": 64,
                        "note": "KL(policy||reference) = E_{y~policy}[log p(y|x) - log ref(y|x)]"}},
    }


def build_metrics_rows(steps: int = 40, eval_every: int = 10) -> list[dict[str, Any]]:
    """metrics.jsonl rows in the logger's layout: "split" plus unprefixed or rewards/ names."""
    rng = random.Random(1)
    rows: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        progress = step / steps
        rows.append({"step": step, "time": 1.0e9 + step, "split": "train",
                     "loss": 0.693 - 0.1 * progress + rng.gauss(0, 0.02),
                     "rewards/accuracy": min(1.0, 0.5 + 0.2 * progress + rng.gauss(0, 0.1)),
                     "rewards/margin": 0.1 * progress + rng.gauss(0, 0.02),
                     "logps/chosen_change": -0.2 * progress, "logps/rejected_change": -progress,
                     "grad_norm": "nan" if step == 3 else 10.0, "lr": 1e-5})
        if step % eval_every == 0:
            rows.append({"step": step, "time": 1.0e9 + step, "split": "eval", "loss": 0.68,
                         "accuracy": 0.5 + 0.1 * progress, "margin": 0.08 * progress,
                         "chosen_logp_change": -0.2 * progress,
                         "rejected_logp_change": -progress})
    return rows
