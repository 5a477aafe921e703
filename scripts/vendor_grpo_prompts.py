"""Write the GRPO safety recipe's prompt files (run from the repo root).

Harmful: StrongREJECT's forbidden prompts (MIT), leaving out the rows it took from AdvBench.
Benign: hh-rlhf helpful-base test questions (MIT), up to 300 characters: first every opening
human turn that only looks unsafe (a word of LOOKS_UNSAFE: "How do I kill weeds?", "How do I
load my shotgun?"; category `looks-unsafe`), then single-turn questions (category `helpful`).
Every prompt `prefalign eval` reads by default is left out (its prompt sets and the human turns
of its helpful-base perplexity pairs, `bundled:hh-helpful-sample`). Each group is shuffled with a
fixed seed and split into training and held-out files of src/prefalign/resources/data/, rows
{"id", "set", "kind", "category", "prompt"}. Attribution: src/prefalign/resources/data/ATTRIBUTION.md.

    .venv/bin/python scripts/vendor_grpo_prompts.py [--source DIR]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import re
from pathlib import Path

SOURCE = Path("../shared/data/external")
OUT = Path("src/prefalign/resources/data")
EVAL_SETS = Path("src/prefalign/resources/data/prompts")
HELPFUL_SAMPLE = OUT / "hh_rlhf_helpful_sample.jsonl.gz"  # `prefalign eval`'s perplexity pairs
TRAIN, HELDOUT = 120, 30  # per kind
MAX_BENIGN_CHARS = 300
HELDOUT_SHARE = 0.2  # of the looks-unsafe prompts, held out
LOOKS_UNSAFE = re.compile(
    r"\b(kill|killing|shoot|shooting|steal|stealing|drugs?|weapons?|guns?|knife|knives|hack|"
    r"hacking|poison|poisonous|bomb|explode|explosive|attack|fight|murder|blood|burn|fire|"
    r"destroy|smoke|smoking|alcohol|vodka|lock|prison|police|cops|illegal|crime|hunt|hunting|"
    r"trap|virus|exploit|choke|chemicals?|bleach|get rid of|break into|sneak|spy|revenge|"
    r"dangerous|toxic|overdose|ammunition|rifle|pistol)\b")


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


def benign(source: Path, taken: set[str]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(looks-unsafe, helpful) rows: opening human turns with a LOOKS_UNSAFE word, and the
    other single-turn questions; each text once."""
    looks, plain, seen = [], [], set(taken)
    path = source / "hh-rlhf-helpful-base" / "test.jsonl"
    for i, line in enumerate(path.open(encoding="utf-8")):
        chosen = json.loads(line)["chosen"]
        prompt = chosen.split("\n\nHuman:", 1)[1].split("\n\nAssistant:", 1)[0].strip()
        key = prompt.lower()
        if not 0 < len(prompt) <= MAX_BENIGN_CHARS or key in seen:
            continue
        unsafe_looking = LOOKS_UNSAFE.search(key) is not None
        if not unsafe_looking and chosen.count("\n\nHuman:") != 1:
            continue
        seen.add(key)
        (looks if unsafe_looking else plain).append(
            {"id": f"hh-helpful-base-test:{i}", "set": "hh-helpful-base", "kind": "benign",
             "category": "looks-unsafe" if unsafe_looking else "helpful", "prompt": prompt})
    return looks, plain


def write(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    taken = eval_prompts()
    harm = harmful(args.source, taken)
    looks, plain = benign(args.source, taken)
    for rows in (harm, looks, plain):
        random.Random(0).shuffle(rows)
    held_looks = round(len(looks) * HELDOUT_SHARE)
    train_looks = len(looks) - held_looks
    train = harm[:TRAIN] + looks[:train_looks] + plain[:TRAIN - train_looks]
    heldout = (harm[TRAIN:TRAIN + HELDOUT] + looks[train_looks:]
               + plain[TRAIN - train_looks: TRAIN - train_looks + HELDOUT - held_looks])
    write(OUT / "grpo_safety_train.jsonl", train)
    write(OUT / "grpo_safety_heldout.jsonl", heldout)
    print(f"{len(train)} training and {len(heldout)} held-out prompts in {OUT}")


if __name__ == "__main__":
    main()
