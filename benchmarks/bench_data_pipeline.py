"""Time and peak memory of `prefalign data validate` and `data audit` as the input grows.

    .venv/bin/python benchmarks/bench_data_pipeline.py [--sizes 10k,100k,1M] [--tokenizer MODEL]
    .venv/bin/python benchmarks/bench_data_pipeline.py --stages [PATH]

Default mode: for each size, generates that many conversational TRL pairs (about 1 KB each:
a system prompt on a fifth of them, some multi-turn prompts, 1% exact duplicates, 0.5%
chosen == rejected, 5% reused prompts) into a JSONL file, then runs `validate` and `audit` on
it as the CLI does, each in its own child process, and prints a table of wall seconds, CPU seconds
(user + system: steadier than wall time on a shared machine) and the child's peak resident
memory (ru_maxrss from os.wait4). `--tokenizer` adds `audit --tokenizer
MODEL --max-length 512` (token counts through the chat template; the tokenizer cache is warmed
first, so its GGUF conversion is not timed).

`--stages` times each stage of validate + audit in this process on one file (default: the
2,312-pair hh-rlhf harmless test split) with the SmolLM2 tokenizer, cold and warm.
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

HH_TEST = Path(__file__).resolve().parents[1] / "../shared/data/external/hh-rlhf-harmless-base/test.jsonl"
WORDS = ("the of and to in is you that it for was on are with as be at this have from or one "
         "had by word but not what all were we when your can said there use an each which she "
         "do how their if will up other about out many then them these so some her would make "
         "like him into time has look two more write go see number no way could people my than "
         "first water been call who oil its now find long down day did get come made may part "
         "model answer question safety careful explain helpful because example reason").split()


def parse_size(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words)).capitalize() + "."


def generated_row(rng: random.Random, index: int, earlier: list[dict]) -> dict:
    """One conversational TRL row; now and then a copy of an earlier row or its prompt."""
    roll = rng.random()
    if earlier and roll < 0.01:
        return dict(rng.choice(earlier), id=f"g{index}")  # exact duplicate (the id does not count)
    if earlier and roll < 0.06:
        prompt = rng.choice(earlier)["prompt"]  # a prompt shared by several pairs
    else:
        prompt = [{"role": "user", "content": _text(rng, rng.randint(8, 40))}]
        if rng.random() < 0.2:
            prompt.insert(0, {"role": "system", "content": _text(rng, 12)})
        if rng.random() < 0.15:
            prompt[-1:-1] = [{"role": "user", "content": _text(rng, 10)},
                             {"role": "assistant", "content": _text(rng, 20)}]
    chosen = _text(rng, rng.randint(30, 110))
    rejected = chosen if roll > 0.995 else _text(rng, rng.randint(20, 100))
    return {"id": f"g{index}", "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def generate(path: Path, pairs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    earlier: list[dict] = []
    with path.open("w", encoding="utf-8") as handle:
        for index in range(pairs):
            row = generated_row(rng, index, earlier)
            if len(earlier) < 1000:
                earlier.append(row)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def measure(command: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB) and output of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n{output}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024, output  # Linux reports ru_maxrss in KiB


def sizes_table(args: argparse.Namespace) -> int:
    cli = [sys.executable, "-m", "prefalign.cli.main", "data"]
    commands = {"validate": ["validate"], "audit": ["audit"]}
    if args.tokenizer:
        commands["audit+tok"] = ["audit", "--tokenizer", args.tokenizer, "--max-length", "512"]
    if args.only:
        commands = {name: commands[name] for name in args.only.split(",")}
    columns = "".join(f" {n + ' s':>12} {'cpu s':>7} {'peak MiB':>9}" for n in commands)
    print(f"{'pairs':>9} {'file MB':>8}{columns}")
    with tempfile.TemporaryDirectory(prefix="prefalign-bench-", dir=args.workdir) as tmp:
        os.environ.setdefault("PREFALIGN_CACHE", str(Path(tmp) / "cache"))
        if args.tokenizer:  # convert the GGUF once, so every timed run loads from the cache
            warm = f"from prefalign.data.tokenizer import load_tokenizer; load_tokenizer({args.tokenizer!r})"
            subprocess.run([sys.executable, "-c", warm], check=True)
        for size in map(parse_size, args.sizes.split(",")):
            path = Path(tmp) / f"pairs-{size}.jsonl"
            generate(path, size)
            row = f"{size:>9,} {path.stat().st_size / 1e6:>8.1f}"
            for words in commands.values():
                seconds, cpu, peak, _ = measure([*cli, *words, str(path)])
                row += f" {seconds:>12.2f} {cpu:>7.2f} {peak:>9.0f}"
            print(row, flush=True)
            path.unlink()
    return 0


def stages(path: Path) -> int:
    """Each stage of validate + audit timed in this process (the tokenizer cold, then warm)."""
    os.environ["PREFALIGN_CACHE"] = tempfile.mkdtemp(prefix="prefalign-bench-")
    from prefalign.data.audit import audit
    from prefalign.data.fingerprint import fingerprint_pairs
    from prefalign.data.load import LoadOptions, load_pairs, validate
    from prefalign.data.tokenize import token_lengths
    from prefalign.data.tokenizer import load_tokenizer

    skip = LoadOptions(on_error="skip")  # the raw hh file has 4 empty chosen replies
    rows: list[tuple[str, float]] = []

    def timed(label: str, fn):
        start = time.perf_counter()
        value = fn()
        rows.append((label, time.perf_counter() - start))
        return value

    checked = timed("validate (read + check every record)", lambda: validate([path], skip))
    loaded = timed("load pairs for audit", lambda: load_pairs([path], skip))
    timed("tokenizer, cold (GGUF -> cache)", lambda: load_tokenizer("smollm2-135m-instruct"))
    tokenizer = timed("tokenizer, warm (from cache)", lambda: load_tokenizer("smollm2-135m-instruct"))
    lengths = timed("token lengths (chat template)", lambda: token_lengths(loaded.pairs, tokenizer))
    fp = timed("fingerprint", lambda: fingerprint_pairs(loaded.pairs))
    timed("audit numbers", lambda: audit(loaded, fp, lengths=lengths, max_length=512))
    print(f"{len(checked.pairs)} pairs, {len(checked.defects)} defects in {path.name}\n")
    print(f"{'stage':<40} {'seconds':>8}")
    for label, seconds in rows:
        print(f"{label:<40} {seconds:>8.2f}")
    seconds = dict(rows)
    everything = sum(seconds.values())
    warm, cold = seconds["tokenizer, cold (GGUF -> cache)"], seconds["tokenizer, warm (from cache)"]
    print(f"{'total with a warm tokenizer cache':<40} {everything - warm:>8.2f}")
    print(f"{'total on a cold cache (first run)':<40} {everything - cold:>8.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10k,100k,1M", help="comma-separated pair counts")
    parser.add_argument("--tokenizer", default=None, metavar="MODEL",
                        help="also time audit with token lengths from this tokenizer")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated columns to run (validate, audit, audit+tok)")
    parser.add_argument("--workdir", default=None, help="where the generated files go (default: /tmp)")
    parser.add_argument("--stages", nargs="?", const=HH_TEST, type=Path, default=None, metavar="PATH",
                        help="time each stage on one file instead (default: the hh-rlhf test split)")
    args = parser.parse_args(argv)
    if args.stages is not None:
        return stages(args.stages.resolve())
    return sizes_table(args)


if __name__ == "__main__":
    sys.exit(main())
