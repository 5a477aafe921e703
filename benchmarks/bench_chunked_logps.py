"""Peak memory and time of plain vs chunked sequence log-probs (forward + backward, CPU)."""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from prefalign.engine.forward.logps import IGNORE_INDEX, sequence_logps, sequence_logps_from_hidden

PATHS = ("plain", "chunked")
MASKINGS = ("all", "response")  # every position scored / only the second half of each sequence


@dataclass(frozen=True)
class Measurement:
    path: str
    masking: str
    seconds: float  # median forward + backward time over the timed repeats
    peak_mib: float  # rise of the process's peak RSS during one forward + backward
    scored_tokens: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49_152)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frozen-weight", action="store_true", help="output projection frozen")
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "MASKING"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_inputs(args: argparse.Namespace, masking: str) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.batch, args.seq, args.hidden, generator=generator)  # (B, T, H)
    weight = torch.randn(args.vocab, args.hidden, generator=generator).mul_(0.05)  # (V, H)
    # in place: a temporary copy would raise the RSS high-water mark before the baseline
    labels = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator)  # (B, T)
    if masking == "response":
        labels[:, : args.seq // 2] = IGNORE_INDEX  # the first half plays the prompt
    hidden.requires_grad_(True)
    weight.requires_grad_(not args.frozen_weight)
    return hidden, weight, labels


def forward_backward(path: str, hidden, weight, labels, chunk_size: int) -> None:
    hidden.grad = weight.grad = None
    if path == "plain":
        logps = sequence_logps(hidden @ weight.t(), labels)  # logits (B, T, V) float32
    else:
        logps = sequence_logps_from_hidden(hidden, weight, labels, chunk_size=chunk_size)
    (logps.sum.sum() + logps.mean.sum()).backward()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_worker(args: argparse.Namespace, path: str, masking: str) -> Measurement:
    """Measure one path in this (fresh) process: the peak first, then warm timings."""
    hidden, weight, labels = make_inputs(args, masking)
    gc.collect()
    baseline = peak_rss_mib()
    forward_backward(path, hidden, weight, labels, args.chunk_size)
    peak = peak_rss_mib() - baseline
    timings = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward_backward(path, hidden, weight, labels, args.chunk_size)
        timings.append(time.perf_counter() - start)
    scored = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return Measurement(path, masking, statistics.median(timings), peak, scored)


def measure_in_subprocess(argv: list[str], path: str, masking: str) -> Measurement:
    command = [sys.executable, __file__, *argv, "--worker", path, masking]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return Measurement(**json.loads(result.stdout.strip().splitlines()[-1]))


def print_table(args: argparse.Namespace, results: list[Measurement]) -> None:
    print(
        f"B={args.batch} T={args.seq} H={args.hidden} V={args.vocab} float32, "
        f"chunk_size={args.chunk_size}, weight {'frozen' if args.frozen_weight else 'trained'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'masking':<9} {'path':<8} {'tokens':>7} {'fwd+bwd s':>10} {'peak MiB':>9} "
        f"{'time ratio':>10} {'memory ratio':>12}"
    )
    for masking in MASKINGS:
        rows = {m.path: m for m in results if m.masking == masking}
        plain = rows["plain"]
        for path in PATHS:
            m = rows[path]
            print(
                f"{masking:<9} {path:<8} {m.scored_tokens:>7} {m.seconds:>10.2f} "
                f"{m.peak_mib:>9.0f} {m.seconds / plain.seconds:>10.2f} "
                f"{m.peak_mib / plain.peak_mib:>12.2f}"
            )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(asdict(run_worker(args, *args.worker))))
        return
    results = [measure_in_subprocess(argv, p, m) for m in MASKINGS for p in PATHS]
    print_table(args, results)


if __name__ == "__main__":
    main()
