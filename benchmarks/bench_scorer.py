"""Time and peak memory of the plain, prefix-shared and packed pair scorers on SmolLM2-135M (CPU).

Each scorer runs in a fresh process (peak RSS is per process): it loads SmolLM2-135M-Instruct in
float32, warms up on one short pair, then times forward + backward of `--batches` batches of
`--batch` bundled hh-rlhf harmless pairs (tokenised to `--max-length`), then a no_grad forward of
the same batches. Peak RSS is the process's high-water mark over each phase (reset between
phases through /proc/self/clear_refs where Linux allows it, else the lifetime peak).

    .venv/bin/python benchmarks/bench_scorer.py --batches 3 --batch 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from prefalign.data.collate import collate_pairs
from prefalign.data.tokenize import TokenizedPair

# plain: PairScorer; prefix-shared: PackedPairScorer with a row per pair; packed: one row per batch
SCORERS = ("plain", "prefix-shared", "packed")


@dataclass(frozen=True)
class Measurement:
    scorer: str
    pairs: int
    train_seconds: float  # forward + backward, all timed batches
    eval_seconds: float  # no_grad forward, all timed batches
    train_peak_mib: float
    eval_peak_mib: float
    loaded_mib: float  # resident memory with the model loaded, before the timed phases
    positions: int  # token positions the decoder ran on (padding included)
    logps: list[float]  # chosen then rejected summed log-probs of every pair, for a cross-check


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="pairs per batch")
    parser.add_argument("--batches", type=int, default=3, help="timed batches")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-row-tokens", type=int, default=None, help="packed scorer budget")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--scorers", nargs="+", choices=list(SCORERS), default=list(SCORERS))
    parser.add_argument("--worker", choices=list(SCORERS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_model_and_batches(args: argparse.Namespace):
    from transformers import AutoModelForCausalLM, GgufConfig

    from prefalign.data.bundled import resolve_data_path
    from prefalign.data.load import load_pairs
    from prefalign.data.tokenize import TruncationOptions, tokenize_pairs
    from prefalign.data.tokenizer import load_tokenizer
    from prefalign.sources import resolve_model_source

    source = resolve_model_source("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(
        source.path,
        **source.pretrained_kwargs(),
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    pairs = load_pairs(resolve_data_path("bundled:hh-harmless-train")).pairs
    wanted = args.batch * args.batches
    tokenized = tokenize_pairs(pairs[:wanted], tokenizer, TruncationOptions(args.max_length)).pairs
    batches = [tokenized[i : i + args.batch] for i in range(0, len(tokenized), args.batch)]
    return model, tokenizer.pad_token_id, batches


def make_scorer(name: str, model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    from prefalign.engine.forward.packed import PackedPairScorer
    from prefalign.engine.forward.scorer import PairScorer

    if name == "plain":
        return PairScorer(model, args.chunk_size)
    return PackedPairScorer(model, args.chunk_size, max_row_tokens=row_budget(name, args))


def row_budget(name: str, args: argparse.Namespace) -> int | None:
    return 1 if name == "prefix-shared" else args.max_row_tokens


def decoder_positions(name: str, pairs: list[TokenizedPair], args: argparse.Namespace) -> int:
    from prefalign.engine.forward.packed_layout import PairTokens, build_layout

    if name == "plain":
        return (
            2 * len(pairs) * max(len(p.input_ids(s)) for p in pairs for s in ("chosen", "rejected"))
        )
    tokens = [PairTokens.from_tokenized(p) for p in pairs]
    layout = build_layout(tokens, max_row_tokens=row_budget(name, args))
    return layout.input_ids.numel()


def reset_peak_rss() -> None:
    try:  # "5" resets the high-water mark that ru_maxrss reports (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * resource.getpagesize() / 2**20


def run_phase(scorer, batches, pad_token_id: int, train: bool) -> tuple[float, float, list]:
    """Seconds and peak RSS over all batches; the log-probs of every pair (chosen, rejected)."""
    scorer.model.train(train)
    reset_peak_rss()
    seconds, logps = 0.0, []
    for pairs in batches:
        batch = collate_pairs(pairs, pad_token_id)
        scorer.model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.set_grad_enabled(train):
            result = scorer(**batch)
            if train:
                (result.chosen.sum() - result.rejected.sum()).backward()
        seconds += time.perf_counter() - start
        logps += result.chosen.tolist() + result.rejected.tolist()
    return seconds, peak_rss_mib(), logps


def run_worker(args: argparse.Namespace, name: str) -> Measurement:
    model, pad_token_id, batches = load_model_and_batches(args)
    scorer = make_scorer(name, model, args)
    warmup = TokenizedPair("warmup", (1, 2, 3, 4), (5, 6), (7,))
    run_phase(scorer, [[warmup]], pad_token_id, train=True)
    model.zero_grad(set_to_none=True)
    loaded = resident_mib()
    train_seconds, train_peak, logps = run_phase(scorer, batches, pad_token_id, train=True)
    model.zero_grad(set_to_none=True)
    eval_seconds, eval_peak, _ = run_phase(scorer, batches, pad_token_id, train=False)
    positions = sum(decoder_positions(name, pairs, args) for pairs in batches)
    pairs = sum(len(b) for b in batches)
    return Measurement(
        name, pairs, train_seconds, eval_seconds, train_peak, eval_peak, loaded, positions, logps
    )


def measure_in_subprocess(argv: list[str], name: str) -> Measurement:
    command = [sys.executable, __file__, *argv, "--worker", name]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return Measurement(**json.loads(result.stdout.strip().splitlines()[-1]))


def print_table(args: argparse.Namespace, results: list[Measurement]) -> None:
    print(
        f"SmolLM2-135M-Instruct float32, {args.batches} batches x {args.batch} hh-harmless pairs, "
        f"max_length {args.max_length}, chunk_size {args.chunk_size}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; peak MiB = process high-water mark in that phase"
    )
    header = (
        f"{'scorer':<14} {'positions':>9} {'train s/pair':>12} {'speedup':>7} {'peak MiB':>8} "
        f"{'no_grad s/pair':>14} {'speedup':>7} {'peak MiB':>8} {'loaded MiB':>10} {'max |Δlogp|':>11}"
    )
    print(header)
    base = results[0]
    for m in results:
        drift = max(abs(a - b) for a, b in zip(m.logps, base.logps, strict=True))
        print(
            f"{m.scorer:<14} {m.positions:>9} {m.train_seconds / m.pairs:>12.3f} "
            f"{base.train_seconds / m.train_seconds:>7.2f} {m.train_peak_mib:>8.0f} "
            f"{m.eval_seconds / m.pairs:>14.3f} {base.eval_seconds / m.eval_seconds:>7.2f} "
            f"{m.eval_peak_mib:>8.0f} {m.loaded_mib:>10.0f} {drift:>11.2e}"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(asdict(run_worker(args, args.worker))))
        return
    results = [measure_in_subprocess(argv, name) for name in args.scorers]
    print_table(args, results)


if __name__ == "__main__":
    main()
