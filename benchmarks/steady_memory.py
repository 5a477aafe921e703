"""Resident memory of one long `prefalign train` run, sampled over time: does it stay flat?

    .venv/bin/python benchmarks/steady_memory.py --steps 300 [--set train.autocast=bfloat16 ...]

Runs `prefalign train` (full fine-tune of SmolLM2-135M-Instruct in float32 on the bundled
hh-rlhf harmless pairs, batch 4, max length 512, precomputed reference: the compare_trl.py
setting; the first `--pairs` pairs, in a new order each epoch) in a child process, samples the
child's resident set size (VmRSS) every `--interval` seconds, and prints one row per `--window`
minutes: optimiser steps done, pairs/s, and the lowest and highest RSS sampled in the window.
Growth = last window's highest RSS minus the first training window's highest. The samples are
saved as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFALIGN = Path(sys.executable).with_name("prefalign")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (4 pairs each)")
    parser.add_argument("--pairs", type=int, default=400,
                        help="training pairs (the run cycles over them in epochs)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--window", type=float, default=5.0, help="minutes per printed row")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra prefalign config override")
    parser.add_argument("--out", type=Path, default=Path("runs/steady-memory.json"))
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace, run_root: Path) -> list[str]:
    values = {
        "run.name": "steady-memory", "run.output_dir": str(run_root),
        "data.eval": [], "data.max_length": args.max_length,
        "data.limit_train": min(args.pairs, 4 * args.steps),
        "reference.strategy": "precomputed", "reference.cache": str(run_root / "reference-cache"),
        "optim.lr": 1e-6, "optim.schedule": "constant",
        "train.batch_size": 4, "train.grad_accum": 1, "train.max_steps": args.steps,
        "train.eval_every": 0, "train.save_every": 0, "train.keep_last": 1,
        "train.eval_batch_size": 2,
    }
    return [f"{key}={json.dumps(value)}" for key, value in values.items()] + args.set


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def steps_done(metrics: Path) -> int:
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if line.strip() and '"split": "train"' in line)


def sample(args: argparse.Namespace, run_root: Path) -> list[dict[str, float]]:
    """(seconds, rss MiB, steps done) every interval until the child exits."""
    command = [str(PREFALIGN), "train", *overrides(args, run_root)]
    metrics = run_root / "steady-memory" / "metrics.jsonl"
    log = open(run_root / "train.log", "w", encoding="utf-8")  # noqa: SIM115
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    start, samples = time.perf_counter(), []
    while child.poll() is None:
        rss = rss_mib(child.pid)
        if rss is not None:
            samples.append({"seconds": time.perf_counter() - start, "rss_mib": rss,
                            "steps": steps_done(metrics)})
        time.sleep(args.interval)
    log.close()
    if child.returncode != 0:
        tail = (run_root / "train.log").read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"prefalign train failed (exit {child.returncode}):\n" + "\n".join(tail))
    return samples


def windows(samples: list[dict[str, float]], minutes: float) -> list[dict[str, float]]:
    """One row per window that saw a training step; the first rows before step 1 are set-up."""
    width = minutes * 60
    rows: dict[int, list[dict[str, float]]] = {}
    for s in samples:
        rows.setdefault(int(s["seconds"] // width), []).append(s)
    out, previous_steps = [], 0
    for index in sorted(rows):
        part = rows[index]
        steps = part[-1]["steps"]
        seconds = part[-1]["seconds"] - part[0]["seconds"]
        out.append({"from_min": index * minutes, "steps": steps,
                    "pairs_per_s": 4 * (steps - previous_steps) / seconds if seconds else 0.0,
                    "min_rss_mib": min(s["rss_mib"] for s in part),
                    "max_rss_mib": max(s["rss_mib"] for s in part)})
        previous_steps = steps
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="steady-memory-") as tmp:
        samples = sample(args, Path(tmp))
    rows = windows(samples, args.window)
    print(f"{'from min':>8} {'steps':>6} {'pairs/s':>8} {'min RSS MiB':>12} {'max RSS MiB':>12}")
    for row in rows:
        print(f"{row['from_min']:8.0f} {row['steps']:6d} {row['pairs_per_s']:8.3f} "
              f"{row['min_rss_mib']:12.0f} {row['max_rss_mib']:12.0f}")
    training = [row for row in rows if row["steps"] > 0]
    growth = training[-1]["max_rss_mib"] - training[0]["max_rss_mib"] if training else 0.0
    peak = max(s["rss_mib"] for s in samples)
    minutes = samples[-1]["seconds"] / 60
    print(f"\n{minutes:.1f} min, peak {peak:.0f} MiB, growth first->last window {growth:+.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": sys.argv, "samples": samples, "windows": rows,
                                    "peak_rss_mib": peak, "growth_mib": growth}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
