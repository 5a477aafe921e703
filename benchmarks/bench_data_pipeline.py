"""Time `validate` + `audit` of the 2,312-pair hh-rlhf harmless file with the SmolLM2 tokenizer.

Runs each stage as the CLI does and prints a table. The tokenizer is timed twice: a cold load
(GGUF conversion, cache emptied) and a warm one (the converted tokenizer cached on disk).
Usage: .venv/bin/python benchmarks/bench_data_pipeline.py [PATH]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = (
    Path(__file__).resolve().parents[1] / "../shared/data/external/hh-rlhf-harmless-base/test.jsonl"
)


def timed(label: str, rows: list, fn):
    start = time.perf_counter()
    value = fn()
    rows.append((label, time.perf_counter() - start))
    return value


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT.resolve()
    os.environ["PREFALIGN_CACHE"] = tempfile.mkdtemp(prefix="prefalign-bench-")
    rows: list[tuple[str, float]] = []
    from prefalign.data.audit import audit
    from prefalign.data.fingerprint import fingerprint_pairs
    from prefalign.data.load import LoadOptions, load_pairs, validate
    from prefalign.data.tokenize import token_lengths
    from prefalign.data.tokenizer import load_tokenizer

    SKIP = LoadOptions(on_error="skip")  # the raw file has 4 empty chosen replies

    checked = timed(
        "validate (read + check every record)", rows, lambda: validate([path], SKIP)
    )
    loaded = timed("load pairs for audit", rows, lambda: load_pairs([path], SKIP))
    timed("tokenizer, cold (GGUF -> cache)", rows, lambda: load_tokenizer("smollm2-135m-instruct"))
    tokenizer = timed(
        "tokenizer, warm (from cache)", rows, lambda: load_tokenizer("smollm2-135m-instruct")
    )
    lengths = timed(
        "token lengths (chat template)", rows, lambda: token_lengths(loaded.pairs, tokenizer)
    )
    fp = timed("fingerprint", rows, lambda: fingerprint_pairs(loaded.pairs))
    timed("audit numbers", rows, lambda: audit(loaded, fp, lengths=lengths, max_length=512))
    print(f"{len(checked.pairs)} pairs, {len(checked.defects)} defects in {path.name}\n")
    print(f"{'stage':<40} {'seconds':>8}")
    for label, seconds in rows:
        print(f"{label:<40} {seconds:>8.2f}")
    seconds = dict(rows)
    everything = sum(seconds.values())
    print(
        f"{'total with a warm tokenizer cache':<40} {everything - seconds['tokenizer, cold (GGUF -> cache)']:>8.2f}"
    )
    print(
        f"{'total on a cold cache (first run)':<40} {everything - seconds['tokenizer, warm (from cache)']:>8.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
