"""Write the GRPO safety recipe's prompt files (run from the repo root).

Harmful: StrongREJECT's forbidden prompts (MIT), leaving out the rows it took from AdvBench and
any prompt that is in a set `prefalign eval` reads by default (its prompt sets and the human
turns of its helpful-base perplexity pairs, `bundled:hh-helpful-sample`; the benign side too). Benign: the first human turn of
single-turn hh-rlhf helpful-base test conversations (MIT), up to 300 characters. Both are
shuffled with a fixed seed and split into training and held-out files of
src/prefalign/resources/data/, rows {"id", "set", "kind", "category", "prompt"}. Attribution:
src/prefalign/resources/data/ATTRIBUTION.md.

    .venv/bin/python scripts/vendor_grpo_prompts.py [--source DIR]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
from pathlib import Path

SOURCE = Path("../shared/data/external")
OUT = Path("src/prefalign/resources/data")
EVAL_SETS = Path("src/prefalign/resources/data/prompts")
HELPFUL_SAMPLE = OUT / "hh_rlhf_helpful_sample.jsonl.gz"  # `prefalign eval`'s perplexity pairs
TRAIN, HELDOUT = 120, 30  # per kind
MAX_BENIGN_CHARS = 300


def eval_prompts() -> set[str]:
    """Every prompt `prefalign eval` reads by default, lower-cased: the vendored prompt sets and
    the human turns of the helpful-base pairs whose chosen replies it measures perplexity on."""
    taken = {json.loads(line)["prompt"].strip().lower()
             for path in EVAL_SETS.glob("*.jsonl") for line in path.open(encoding="utf-8")}
    with gzip.open(HELPFUL_SAMPLE, "rt", encoding="utf-8") as f:
        for line in f:
            turns = json.loads(line)["chosen"].split("\n\nHuman:")[1:]
            taken |= {turn.split("\n\nAssistant:", 1)[0].strip().lower() for turn in turns}
    return taken


def harmful(source: Path, taken: set[str]) -> list[dict[str, str]]:
    with open(source / "strongreject" / "strongreject.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{"id": f"strongreject:{i}", "set": "strongreject", "kind": "harmful",
             "category": row["category"], "prompt": row["forbidden_prompt"].strip()}
            for i, row in enumerate(rows)
            if row["source"] != "AdvBench" and row["forbidden_prompt"].strip().lower() not in taken]


def benign(source: Path, taken: set[str]) -> list[dict[str, str]]:
    items = []
    for i, line in enumerate((source / "hh-rlhf-helpful-base" / "test.jsonl").open(encoding="utf-8")):
        chosen = json.loads(line)["chosen"]
        if chosen.count("\n\nHuman:") != 1:
            continue
        prompt = chosen.split("\n\nHuman:", 1)[1].split("\n\nAssistant:", 1)[0].strip()
        if 0 < len(prompt) <= MAX_BENIGN_CHARS and prompt.lower() not in taken:
            items.append({"id": f"hh-helpful-base-test:{i}", "set": "hh-helpful-base",
                          "kind": "benign", "category": "helpful", "prompt": prompt})
    return items


def write(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    taken = eval_prompts()
    train, heldout = [], []
    for rows in (harmful(args.source, taken), benign(args.source, taken)):
        random.Random(0).shuffle(rows)
        train += rows[:TRAIN]
        heldout += rows[TRAIN:TRAIN + HELDOUT]
    write(OUT / "grpo_safety_train.jsonl", train)
    write(OUT / "grpo_safety_heldout.jsonl", heldout)
    print(f"{len(train)} training and {len(heldout)} held-out prompts in {OUT}")


if __name__ == "__main__":
    main()
