"""Regenerate the bundled hh-rlhf helpful-base train / held-out split (run from the repo root).

The split follows scripts/make_bundled_split.py: a conversation is held out when the first 8 hex
digits of sha256 of its first human turn (whitespace-normalised, lower-cased) are 0-14 mod 100,
so conversations that open with the same request land on the same side. Of the other rows a
seeded sample of TRAIN_SIZE is kept (the files stay small; a 10-minute reward model uses fewer),
in source order. Raw lines are copied byte for byte and gzipped with mtime 0 (reproducible).
Rows that fail prefalign's validation (and the upstream rows whose chosen equals rejected) are
left out and listed, so the bundled sets load without `--on-error skip`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from prefalign.data.load import LoadOptions, load_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bundled_split import HELD_OUT_BUCKETS, bucket, write_gz  # noqa: E402

SOURCE = Path("../shared/data/external/hh-rlhf-helpful-base/test.jsonl")
OUT = Path("src/prefalign/resources/data")
TRAIN_SIZE, SEED = 800, 0


def usable_lines() -> list[int]:
    """1-based source lines that give a pair prefalign keeps (valid, chosen != rejected)."""
    result = load_pairs(SOURCE, LoadOptions(on_error="skip", dedupe=False))
    for defect in result.defects:
        print(f"left out: {defect}")
    for pair in result.dropped_identical:
        print(f"left out: {pair.provenance.source}:{pair.provenance.line}: chosen equals rejected")
    return sorted({pair.provenance.line for pair in result.pairs})


def main() -> int:
    every = SOURCE.read_text(encoding="utf-8").splitlines(keepends=True)
    usable = usable_lines()
    held = [n for n in usable if bucket(every[n - 1]) < HELD_OUT_BUCKETS]
    rest = [n for n in usable if bucket(every[n - 1]) >= HELD_OUT_BUCKETS]
    train = sorted(random.Random(SEED).sample(rest, TRAIN_SIZE))
    write_gz(OUT / "hh_rlhf_helpful_train.jsonl.gz", [every[n - 1] for n in train])
    write_gz(OUT / "hh_rlhf_helpful_heldout.jsonl.gz", [every[n - 1] for n in held])
    assert all(json.loads(every[n - 1]) for n in train + held)
    print(f"train {len(train)} of {len(rest)}  held-out {len(held)}  "
          f"({len(every) - len(usable)} of {len(every)} source rows left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
