"""Regenerate the bundled train / held-out split of hh-rlhf harmless-base (run from the repo root).

The split is by a hash of the first human turn (whitespace-normalised, lower-cased), so every
conversation that opens with the same request lands on the same side: no prompt leaks from
train into held-out. Bucket = first 8 hex digits of sha256 mod 100; buckets 0-14 are held out.
Raw lines are copied byte for byte; only the file is split and gzipped (mtime 0, reproducible).
Rows that fail prefalign's own validation (4 pairs whose chosen reply is empty) are left out and
listed, so the bundled sets load without `--on-error skip`; the source file is untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

from prefalign.data.load import LoadOptions, load_pairs

SOURCE = Path("../shared/data/external/hh-rlhf-harmless-base/test.jsonl")
OUT = Path("src/prefalign/resources/data")
HELD_OUT_BUCKETS = 15  # of 100


def first_human_turn(chosen: str) -> str:
    text = chosen.split("\n\nHuman:", 1)[1].split("\n\nAssistant:", 1)[0]
    return " ".join(text.split()).lower()


def bucket(line: str) -> int:
    key = first_human_turn(json.loads(line)["chosen"]).encode("utf-8")
    return int(hashlib.sha256(key).hexdigest()[:8], 16) % 100


def write_gz(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write("".join(lines).encode("utf-8"))
    tmp.replace(path)


def invalid_lines() -> set[int]:
    """1-based line numbers of the source that prefalign's validation rejects."""
    result = load_pairs(SOURCE, LoadOptions(on_error="skip", dedupe=False))
    for defect in result.defects:
        print(f"left out: {defect}")
    return {defect.line for defect in result.defects}


def main() -> int:
    bad = invalid_lines()
    every = SOURCE.read_text(encoding="utf-8").splitlines(keepends=True)
    lines = [ln for number, ln in enumerate(every, start=1) if number not in bad]
    held = [ln for ln in lines if bucket(ln) < HELD_OUT_BUCKETS]
    train = [ln for ln in lines if bucket(ln) >= HELD_OUT_BUCKETS]
    write_gz(OUT / "hh_rlhf_harmless_train.jsonl.gz", train)
    write_gz(OUT / "hh_rlhf_harmless_heldout.jsonl.gz", held)
    print(f"train {len(train)}  held-out {len(held)}  of {len(every)} ({len(bad)} invalid left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
