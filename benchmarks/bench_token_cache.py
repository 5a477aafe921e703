"""Time DPO's `prepare_splits` on generated pairs with the token cache cold and warm.

For each size, writes that many generated TRL-format pairs (prompts of 20-120 common words,
replies of 10-150), then runs `prepare_splits` with the SmolLM2 tokenizer (max_length 512) in a
fresh process twice on one empty `$PREFALIGN_CACHE`: cold (loads, tokenises and writes the
cache) and warm (reads it). Each process reports the seconds of `prepare_splits`, of the first
4-pair batch and of one pass that builds every TokenizedPair, its peak RSS before and after, its
RSS at the end, and the size of the cache on disk. The tokenizer is converted once beforehand in
a process of its own, and loaded (with torch) before timing starts.
Usage: .venv/bin/python benchmarks/bench_token_cache.py [--sizes 10000 100000]
       [--cache-tokenized false]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could "
         "people my than first water been call who oil its now find long down day did get come "
         "made may part model data train answer question reason careful helpful safe").split()


def write_pairs(path: Path, count: int, seed: int = 0) -> None:
    """`count` distinct pairs of random words, one JSON object per line."""
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(low, high))).capitalize() + "."

    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            row = {"prompt": f"({i}) {text(20, 120)}", "chosen": text(10, 150),
                   "rejected": text(10, 150)}
            handle.write(json.dumps(row) + "\n")


def memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(data: Path | None, cache_tokenized: bool) -> dict[str, object]:
    """One `prepare_splits` in this process (the child side)."""
    from prefalign.config import config_from_dict
    from prefalign.data.tokenizer import load_tokenizer
    from prefalign.trainers.dpo.data import make_batch, prepare_splits

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    config = config_from_dict({"data": {"train": [str(data)], "eval": [], "max_length": 512,
                                        "cache_tokenized": cache_tokenized}})
    if data is None:
        return {}  # only warmed the tokenizer cache (the GGUF conversion is not timed)
    before = memory_mib("VmHWM")
    start = time.perf_counter()
    split = prepare_splits(config, tokenizer)["train"]
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    make_batch(split, [0, 1, 2, 3], tokenizer.pad_token_id)
    first_batch = time.perf_counter() - start
    start = time.perf_counter()
    tokens = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids)
                 for p in split.tokenized)
    every_pair = time.perf_counter() - start
    return {"pairs": len(split), "tokens": tokens, "prepare_s": prepared,
            "first_batch_s": first_batch, "every_pair_s": every_pair,
            "peak_before_mib": before, "peak_mib": memory_mib("VmHWM"),
            "rss_after_mib": memory_mib("VmRSS"),
            "token_cache": split.token_cache}


def entry_mib(cache: Path) -> float:
    """Size of everything under the token cache."""
    files = (cache / "tokenized").rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def run_child(data: Path | None, cache: Path, cache_tokenized: bool) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", str(data or "-"), "--cache-tokenized",
               str(cache_tokenized).lower()]
    env = {**os.environ, "PREFALIGN_CACHE": str(cache),
           "PYTHONPATH": ":".join(p for p in sys.path if p)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--cache-tokenized", choices=("true", "false"), default="true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    enabled = args.cache_tokenized == "true"
    if args.child is not None:
        print(json.dumps(measure(None if str(args.child) == "-" else args.child, enabled)))
        return 0
    print(f"{'pairs':>8} {'run':<5} {'prepare s':>9} {'1st batch s':>11} {'every pair s':>12} "
          f"{'peak before':>11} {'peak MiB':>8} {'RSS after':>9} {'hit':>5} {'entry MiB':>9}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="prefalign-bench-tokcache-") as scratch:
            data, cache = Path(scratch) / "pairs.jsonl", Path(scratch) / "cache"
            write_pairs(data, size)
            run_child(None, cache, enabled)
            for label in ("cold", "warm"):
                row = run_child(data, cache, enabled)
                hit = (row["token_cache"] or {}).get("hit", "-")
                print(f"{row['pairs']:>8} {label:<5} {row['prepare_s']:>9.2f} "
                      f"{row['first_batch_s']:>11.4f} {row['every_pair_s']:>12.2f} "
                      f"{row['peak_before_mib']:>11.0f} {row['peak_mib']:>8.0f} "
                      f"{row['rss_after_mib']:>9.0f} {hit!s:>5} {entry_mib(cache):>9.1f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
