"""The loop's headline table, LOOPDIR/rounds.json and rounds.md, read from the rounds' own files
(the pairs' lineage records, the samples' manifests, the runs' manifests, eval.json), so its
figures are the same however often the loop stopped and resumed. The stage times alone come
from state.json, and count a resumed stage's last try only.

Row 0 is the original model, as round 1's evaluation measured it (its reference side); row R
is round R's policy. A stage not yet run leaves its cells empty (None, "—" in rounds.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefalign.atomic import write_json_atomic, write_text_atomic
from prefalign.eval.formatting import fmt_count, fmt_num, fmt_rate
from prefalign.loop.rounds_state import STATE

ROUNDS_JSON = "rounds.json"
ROUNDS_MD = "rounds.md"
_COUNTS = ("prompts", "samples", "written", "tie", "too_few", "empty", "unsafe_dropped",
           "identical", "duplicates")


def round_row(round_dir: Path, round_: int,
              stages: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Round `round_`'s figures from the files under `round_dir` (None where absent), with
    each finished stage's wall seconds from its `stages` record in state.json (the last try's,
    when a stage was resumed)."""
    lineage = _read(round_dir / "pairs.jsonl.lineage.json")
    counts = {name: (lineage or {}).get("counts", {}).get(name, 0 if lineage else None)
              for name in _COUNTS}
    lineage = lineage or {}
    scores = lineage.get("scores", {})
    samples = _read(round_dir / "samples.jsonl.manifest.json") or {}
    run = _read(round_dir / "run" / "manifest.json") or {}
    results = _read(round_dir / "eval" / "eval.json")
    return {
        "round": round_,
        "generator_weight_hash": samples.get("model", {}).get("weight_hash"),
        "pairs_fingerprint": lineage.get("fingerprint"),
        "counts": counts,
        "judge_mean": scores.get("combined_mean"),
        "judge_means": scores.get("by_judge_mean"),
        "train": {"outcome": run.get("outcome"), "steps": run.get("steps")},
        "eval": eval_headline(results, "policy") if results is not None else None,
        "seconds": {stage: record["seconds"] for stage, record in (stages or {}).items()
                    if "seconds" in record},  # state files before stage times have none
    }


def original_row(round_dir: Path) -> dict[str, Any] | None:
    """Row 0: the model round 1 was evaluated against, from round 1's eval.json."""
    results = _read(round_dir / "eval" / "eval.json")
    if results is None:
        return None
    source = (results.get("models") or {}).get("reference", {}).get("source")
    return {"round": 0, "model": source, "eval": eval_headline(results, "reference")}


def eval_headline(results: Mapping[str, Any], side: str) -> dict[str, Any]:
    """The headline numbers of one side (policy | reference) of an eval.json."""
    generation = results.get("generation") or {}
    heldout = (results.get("heldout") or {}).get("overall") or {}
    cost = results.get("cost") or {}
    helpful = (cost.get("perplexity") or {}).get("helpful") or {}
    kl = cost.get("kl") or {}
    return {
        "harmful_refusal": _rate(generation.get("harmful", {}).get(side)),
        "benign_over_refusal": _rate(generation.get("benign", {}).get(side)),
        "heldout_accuracy": heldout.get("accuracy") if side == "policy" else None,
        "helpful_perplexity": helpful.get(side),
        "kl": kl.get("mean") if side == "policy" else None,
    }


def _rate(rate: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not rate:
        return None
    return {key: rate.get(key) for key in ("rate", "low", "high", "n")}


def write_table(loop_dir: Path, rounds: int) -> list[dict[str, Any]]:
    """Write rounds.json and rounds.md for rounds 1..`rounds`; returns rounds.json's rows."""
    first = loop_dir / "round-1"
    original = original_row(first)
    stages = (_read(loop_dir / STATE) or {}).get("stages", {})
    rows = ([original] if original is not None else []) + [
        round_row(loop_dir / f"round-{r}", r, stages.get(str(r))) for r in range(1, rounds + 1)]
    write_json_atomic({"rounds": rows}, loop_dir / ROUNDS_JSON)
    write_text_atomic(render_table(rows), loop_dir / ROUNDS_MD)
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    """rounds.md: one line per row, refusal rates with their 95% CIs."""
    header = ("round", "pairs", "ties", "judge mean", "harmful refusal",
              "benign over-refusal", "held-out accuracy", "helpful-base perplexity", "KL",
              "minutes: round (eval)")
    lines = ["# prefalign loop: rounds", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        counts = row.get("counts") or {}
        headline = row.get("eval") or {}
        label = "0 (original)" if row["round"] == 0 else str(row["round"])
        cells = (label, fmt_count(counts.get("written")), fmt_count(counts.get("tie")),
                 fmt_num(row.get("judge_mean")), fmt_rate(headline.get("harmful_refusal")),
                 fmt_rate(headline.get("benign_over_refusal")),
                 fmt_num(headline.get("heldout_accuracy")),
                 fmt_num(headline.get("helpful_perplexity")), fmt_num(headline.get("kl")),
                 _minutes(row.get("seconds")))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Refusal rates: the evaluation's refusal classifier, 95% Wilson intervals. "
              "Row 0 is the original model as round 1's evaluation measured it. Minutes: "
              "sampling, judging and training (the evaluation apart), each stage's last try."]
    return "\n".join(lines) + "\n"


def _minutes(seconds: Mapping[str, float] | None) -> str:
    """"12.3 (4.5)": the round's stages but its evaluation, then the evaluation, in minutes."""
    if not seconds:
        return "—"
    work = sum(value for stage, value in seconds.items() if stage != "eval")
    evaluation = f" ({seconds['eval'] / 60:.1f})" if "eval" in seconds else ""
    return f"{work / 60:.1f}{evaluation}"


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
