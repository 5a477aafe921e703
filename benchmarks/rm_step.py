"""A reward-model training step against a DPO policy step on the same pairs, interleaved.

    .venv/bin/python benchmarks/rm_step.py [--steps 6] [--threads 2] [--max-length 256]

Both are full fine-tunes of SmolLM2-135M-Instruct in float32 (`prefalign rm train`'s and
`prefalign train`'s forward: packed, prompt computed once; AdamW; a step of 8 pairs as 2
micro-batches of 4). The DPO step is the policy's only, as with a precomputed reference (the
demo's setting). Steps alternate RM, DPO, RM, ... on the same batches, so that a machine
shared with other jobs slows both alike; the table gives each step's wall and process CPU
seconds and the median ratio RM / DPO. The first step of each is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="steps of each, after a warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    return parser.parse_args(argv)


def build(max_length: int):
    from prefalign.config import config_from_dict
    from prefalign.engine.forward.packed import PackedPairScorer
    from prefalign.engine.forward.reward import RewardPairScorer
    from prefalign.engine.models.load import load_model
    from prefalign.engine.models.reward import load_reward_model
    from prefalign.engine.pair_splits import prepare_splits

    config = config_from_dict({"data": {"train": ["bundled:hh-harmless-train"], "eval": [],
                                        "max_length": max_length, "length_balance": True}})
    reward = load_reward_model(config.model, config.lora, seed=0)
    policy = load_model(config.model, config.lora)
    split = prepare_splits(config, reward.tokenizer)["train"]
    scorers = {"rm": RewardPairScorer(reward.model.train()),
               "dpo": PackedPairScorer(policy.model.train(), 1024, keep_mib=256)}
    optimizers = {name: torch.optim.AdamW(scorer.parameters(), lr=1e-9)
                  for name, scorer in scorers.items()}
    return scorers, optimizers, split, reward.tokenizer.pad_token_id


def one_step(name, scorer, optimizer, split, step: int, pad: int) -> tuple[float, float]:
    from prefalign.engine.pair_splits import make_batch, model_inputs
    from prefalign.losses import bradley_terry_loss

    wall, cpu = time.perf_counter(), time.process_time()
    for micro in range(2):
        start = 8 * step + 4 * micro
        batch = model_inputs(make_batch(split, range(start, start + 4), pad))
        out = scorer(**batch)
        if name == "rm":
            loss = bradley_terry_loss(out.chosen, out.rejected).sum() / 8
        else:  # DPO against a constant (precomputed) reference: the policy's work only
            loss = torch.nn.functional.softplus(-0.1 * (out.chosen - out.rejected)).sum() / 8
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    from prefalign.engine.forward.onednn import cpu_matmul

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with cpu_matmul("auto"):
        scorers, optimizers, split, pad = build(args.max_length)
        times: dict[str, list[tuple[float, float]]] = {"rm": [], "dpo": []}
        print("| step | RM wall s | RM CPU s | DPO wall s | DPO CPU s |\n|---:|---:|---:|---:|---:|")
        for step in range(args.steps + 1):
            row = {name: one_step(name, scorers[name], optimizers[name], split, step, pad)
                   for name in ("rm", "dpo")}
            if step:
                for name in row:
                    times[name].append(row[name])
            print(f"| {step}{' (warm-up)' if not step else ''} | {row['rm'][0]:.1f} | "
                  f"{row['rm'][1]:.1f} | {row['dpo'][0]:.1f} | {row['dpo'][1]:.1f} |", flush=True)
    for index, what in ((0, "wall"), (1, "CPU")):
        ratios = [r[index] / d[index] for r, d in zip(times["rm"], times["dpo"], strict=True)]
        print(f"median RM / DPO step ({what}): {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
