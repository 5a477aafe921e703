"""Regenerate the bundled hh-rlhf helpful-base sample (run from the repo root).

300 pairs drawn with a fixed seed from the helpful-base test split, raw lines copied byte for
byte in file order, gzipped with mtime 0 (reproducible). `prefalign eval` measures the
perplexity of their chosen replies under reference and policy (the cost of alignment on
helpful replies) and their preference accuracy. Rows that fail prefalign's validation are
skipped before sampling and listed.
"""

from __future__ import annotations

import gzip
import random
import sys
from pathlib import Path

from prefalign.data.load import LoadOptions, load_pairs

SOURCE = Path("../shared/data/external/hh-rlhf-helpful-base/test.jsonl")
OUT = Path("src/prefalign/resources/data/hh_rlhf_helpful_sample.jsonl.gz")
SIZE, SEED = 300, 0


def main() -> int:
    lines = SOURCE.read_text(encoding="utf-8").splitlines(keepends=True)
    loaded = load_pairs([SOURCE], LoadOptions(on_error="skip"))
    valid = sorted({pair.provenance.line for pair in loaded.pairs})  # 1-based source lines
    skipped = sorted(set(range(1, len(lines) + 1)) - set(valid))
    chosen = sorted(random.Random(SEED).sample(valid, SIZE))
    tmp = OUT.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write("".join(lines[i - 1] for i in chosen).encode("utf-8"))
    tmp.replace(OUT)
    print(f"wrote {OUT}: {SIZE} of {len(valid)} valid pairs (source lines skipped as invalid: "
          f"{skipped or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
