"""Refusal of harmful prompts and over-refusal of benign ones, reference and policy side by side.

Both models answer the same prompts with the same recorded decoder settings; a rule-based
classifier (`prefalign.judges.refusal`, precision and recall measured on a hand-labelled sample)
marks each answer as a refusal or not. Rates come with Wilson 95% intervals, overall, per
category and per prompt set.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prefalign.eval.generate import DecodeSettings, Generation, generate
from prefalign.eval.prompts import PROMPT_SETS, PromptItem
from prefalign.eval.stats import rate_summary
from prefalign.judges.refusal import (
    CLASSIFIER_DESCRIPTION,
    CLASSIFIER_NAME,
    LABELLED_N,
    LABELLED_PRECISION,
    LABELLED_RECALL,
    is_refusal,
)

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

MODELS = ("reference", "policy")


def answer_prompts(
    models: dict[str, nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[PromptItem],
    settings: DecodeSettings,
) -> list[dict]:
    """One generations.jsonl row per prompt: both models' responses, refusal flags, lengths."""
    messages = [item.messages for item in prompts]
    outputs: dict[str, list[Generation]] = {
        name: generate(models[name], tokenizer, messages, settings, desc=f"generate ({name})")
        for name in MODELS
    }
    rows = []
    for i, item in enumerate(prompts):
        row = {"prompt_id": item.id, "set": item.set, "kind": item.kind,
               "category": item.category, "prompt": item.prompt}
        for name in MODELS:
            generation = outputs[name][i]
            row[f"{name}_response"] = generation.text
            row[f"{name}_refused"] = is_refusal(generation.text)
            row[f"{name}_tokens"] = generation.num_tokens
            row[f"{name}_hit_max"] = generation.hit_max
        rows.append(row)
    return rows


def safety_section(rows: Sequence[dict], prompts: Sequence[PromptItem]) -> dict:
    """The `generation` section of eval.json from `answer_prompts` rows."""
    section: dict = {
        "classifier": {"name": CLASSIFIER_NAME, "description": CLASSIFIER_DESCRIPTION,
                       "precision": LABELLED_PRECISION, "recall": LABELLED_RECALL,
                       "labelled": LABELLED_N},
        "sets": _sets(prompts),
    }
    for kind in ("harmful", "benign"):
        part = [row for row in rows if row["kind"] == kind]
        section[kind] = {name: _rates(part, name) for name in MODELS}
    section["lengths"] = {name: length_stats(rows, name) for name in MODELS}
    section["still_answered"] = [
        {"prompt_id": row["prompt_id"], "set": row["set"], "category": row["category"],
         "prompt": row["prompt"], "response": row["policy_response"],
         "reference_refused": row["reference_refused"]}
        for row in rows if row["kind"] == "harmful" and not row["policy_refused"]
    ]
    return section


def _rates(rows: Sequence[dict], model: str) -> dict:
    flags = [row[f"{model}_refused"] for row in rows]
    summary = rate_summary(flags, [row["category"] for row in rows])
    summary["by_set"] = rate_summary(flags, [row["set"] for row in rows])["by_category"]
    return summary


def _sets(prompts: Sequence[PromptItem]) -> list[dict]:
    counts: dict[str, int] = {}
    for item in prompts:
        counts[item.set] = counts.get(item.set, 0) + 1
    sets = []
    for name, count in counts.items():
        info = PROMPT_SETS.get(name)
        kind = next(item.kind for item in prompts if item.set == name)
        entry = info.to_dict() if info is not None else {"name": name, "kind": kind}
        sets.append({**entry, "prompts": count})
    return sets


def length_stats(rows: Sequence[dict], model: str) -> dict:
    """Generated response lengths in tokens: mean, median, 90th percentile (nearest rank), the fraction
    that ran into max_new_tokens (cut off rather than finished)."""
    lengths = sorted(row[f"{model}_tokens"] for row in rows)
    if not lengths:
        return {"n": 0, "mean": None, "median": None, "p90": None, "hit_max_fraction": None}
    p90 = lengths[math.ceil(0.9 * len(lengths)) - 1]  # nearest-rank percentile
    hit = sum(row[f"{model}_hit_max"] for row in rows) / len(rows)
    return {"n": len(lengths), "mean": statistics.fmean(lengths),
            "median": statistics.median(lengths), "p90": p90, "hit_max_fraction": hit}
