"""Regenerate the vendored evaluation prompt sets (run from the repo root).

Reads the public CSVs under ../shared/data/external/ (see each folder's SOURCE.md) and writes one
JSONL file per set to src/prefalign/resources/data/prompts/, rows
{"id", "set", "kind", "category", "prompt"} in source order. Only surrounding whitespace of a
prompt is changed (two source prompts end with a space). Licences and attribution:
src/prefalign/resources/data/ATTRIBUTION.md. Non-commercial sets are never vendored.

    .venv/bin/python scripts/vendor_prompts.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

SOURCE = Path("../shared/data/external")
OUT = Path("src/prefalign/resources/data/prompts")

Row = dict[str, str]


def read_csv(path: Path) -> list[Row]:
    """Rows with lower-cased column names (JBB's benign file has a lower-case header)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key.lower(): value for key, value in row.items()} for row in csv.DictReader(handle)]


def item(set_name: str, key: str, kind: str, category: str, prompt: str) -> Row:
    return {"id": f"{set_name}:{key}", "set": set_name, "kind": kind,
            "category": category, "prompt": prompt.strip()}


def advbench(source: Path) -> Iterator[Row]:
    """AdvBench harmful behaviours: `goal` is the prompt; no categories; id = 0-based row."""
    for index, row in enumerate(read_csv(source / "advbench" / "harmful_behaviors.csv")):
        yield item("advbench", str(index), "harmful", "uncategorised", row["goal"])


def harmbench(source: Path) -> Iterator[Row]:
    """HarmBench standard text behaviours (val + test); contextual and copyright rows left out."""
    for row in read_csv(source / "harmbench" / "harmbench_behaviors_text_all.csv"):
        if row["functionalcategory"] == "standard":
            yield item("harmbench", row["behaviorid"], "harmful", row["semanticcategory"],
                       row["behavior"])


def xstest(source: Path, unsafe: bool) -> Iterator[Row]:
    """XSTest v2: unsafe contrast prompts (type `contrast_*`) or the safe ones; category = type."""
    name, kind = ("xstest-unsafe", "harmful") if unsafe else ("xstest-safe", "benign")
    for row in read_csv(source / "xstest" / "xstest_prompts.csv"):
        is_contrast = row["type"].startswith("contrast_")
        if is_contrast != (row["label"] == "unsafe"):
            raise ValueError(f"xstest row {row['id']}: type {row['type']} vs label {row['label']}")
        if is_contrast == unsafe:
            yield item(name, row["id"], kind, row["type"], row["prompt"])


def jbb_benign(source: Path) -> Iterator[Row]:
    """JBB-Behaviors benign twins: `goal` is the prompt; category = JBB's policy category."""
    for row in read_csv(source / "jbb-behaviors" / "benign-behaviors.csv"):
        yield item("jbb-benign", row["index"], "benign", row["category"], row["goal"])


SETS: dict[str, Callable[[Path], Iterator[Row]]] = {
    "advbench": advbench,
    "harmbench": harmbench,
    "xstest-unsafe": lambda source: xstest(source, unsafe=True),
    "xstest-safe": lambda source: xstest(source, unsafe=False),
    "jbb-benign": jbb_benign,
}


def write_jsonl(path: Path, rows: list[Row]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, read in SETS.items():
        rows = list(read(args.source))
        ids = [row["id"] for row in rows]
        if len(set(ids)) != len(ids) or not all(row["prompt"] for row in rows):
            raise ValueError(f"{name}: duplicate ids or empty prompts in the source")
        write_jsonl(args.out / f"{name}.jsonl", rows)
        print(f"{name}: {len(rows)} prompts -> {args.out / f'{name}.jsonl'}")


if __name__ == "__main__":
    main()
