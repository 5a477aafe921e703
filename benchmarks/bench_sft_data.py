"""Time SFT loading and tokenisation of an hh-rlhf file with the SmolLM2 tokenizer.

Loads the chosen side of every pair as a conversation (`load_conversations`, invalid rows
skipped), then tokenises it with loss_on "all" and "last" at two max_lengths, and prints a
table of seconds, conversations, labelled turns and tokens. "all" tokenises every labelled
turn's prompt whole (see `prefalign.data.sft_encode`), so its cost grows with turns x length.
Usage: .venv/bin/python benchmarks/bench_sft_data.py [PATH ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "../shared/data/external/hh-rlhf-helpful-base/test.jsonl"


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:]] or [DEFAULT.resolve()]
    from prefalign.data.sft_load import SftLoadOptions, load_conversations
    from prefalign.data.sft_tokenize import tokenize_conversations
    from prefalign.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    start = time.perf_counter()
    loaded = load_conversations(paths, SftLoadOptions(on_error="skip"))
    print(f"load: {time.perf_counter() - start:.2f} s, {loaded.counts}")
    print(f"{'loss_on':>7} {'max_len':>7} {'seconds':>8} {'kept':>6} {'turns':>6} "
          f"{'tokens':>9} {'targets':>8} {'truncated':>9}")
    for loss_on in ("all", "last"):
        for max_length in (2048, 512):
            start = time.perf_counter()
            result = tokenize_conversations(loaded.conversations, tokenizer,
                                            max_length=max_length, loss_on=loss_on)
            seconds = time.perf_counter() - start
            c = result.counts
            tokens = sum(len(t.input_ids) for t in result.tokenized)
            print(f"{loss_on:>7} {max_length:>7} {seconds:>8.2f} {c['kept']:>6} "
                  f"{c['assistant_turns']:>6} {tokens:>9} {c['target_tokens']:>8} "
                  f"{c['truncated']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
