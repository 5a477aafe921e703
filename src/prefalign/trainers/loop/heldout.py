"""Scoring the held-out split during training: eval mode, no gradients, shared over processes.

Each process scores a contiguous share of the split with the unwrapped policy, then the
per-example numbers are gathered and put back in split order before the method's
`eval_metrics` summarises them. Under DDP the forward has no collective inside, so shares may
differ in size; a sharded policy (`train.fsdp`) gathers its parameters in every forward, so
there every process runs the same number of batches, the shorter shares topped up with batches
whose results are dropped.

The step-0 log-probs that reference-free losses compare against (`INITIAL_LOGPS`, written by the
DPO method) carry a sha256 of their tensors; `verify_initial_logps` checks that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prefalign.engine.checked_tensors import read_checked
from prefalign.engine.forward.gather import eval_mode
from prefalign.integrity import Check
from prefalign.trainers.loop.method import Columns
from prefalign.trainers.loop.step import concat_columns, gather_columns

if TYPE_CHECKING:
    from prefalign.trainers.loop.run import Run

INITIAL_LOGPS = "initial-eval-logps.safetensors"
INITIAL_NAMES = ("chosen", "rejected")


def score_heldout(run: Run, split_name: str = "eval") -> Columns:
    """Per-example columns of the whole split, in split order, identical on every process."""
    split, method = run.splits[split_name], run.method
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    share = torch.arange(len(split)).tensor_split(world)[rank]  # (N / world,)
    # Shortest first, so that batches carry little padding.
    lengths = torch.tensor([split.example_tokens(i) for i in share.tolist()])
    share = share[torch.argsort(lengths, stable=True)]
    size = run.config.train.eval_batch_size
    batches = list(share.split(size))
    rounds = batch_rounds(len(split), world, size) if run.sharded else len(batches)
    filler = share[:1] if len(share) else torch.zeros(1, dtype=torch.long)
    policy = run.accelerator.unwrap_model(run.scorer)
    parts, dropped = [], []
    with eval_mode(policy), torch.no_grad():
        for round_ in range(max(rounds, 1)):
            real = round_ < len(batches)
            batch = method.make_batch(split, batches[round_] if real else filler,
                                      run.pad_token_id)
            batch = {k: v.to(run.accelerator.device) for k, v in batch.items()}
            _, columns = method.forward(run, policy, batch, split_name)
            (parts if real else dropped).append(columns)
    mine = concat_columns(parts) if parts else {k: v[:0] for k, v in dropped[0].items()}
    columns = gather_columns(run.accelerator, mine)
    order = torch.argsort(columns["index"])
    return {name: value[order] for name, value in columns.items()}


def evaluate(run: Run) -> dict[str, float]:
    """The held-out metrics (unprefixed names) of the policy as it is now."""
    return run.method.eval_metrics(run, score_heldout(run))


def verify_initial_logps(path: Path) -> Check:
    """The verdict on a run's initial-eval-logps file (absent is fine: a resume rescores)."""
    if not path.is_file():
        return Check(path, True, "absent")
    tensors, problem = read_checked(path, INITIAL_NAMES, None)
    if tensors is None:
        return Check(path, False, str(problem))
    return Check(path, True, f"{len(tensors['chosen'])} pairs match their sha256")


def batch_rounds(pairs: int, world: int, batch_size: int) -> int:
    """Batches of the largest share when `pairs` are split over `world` processes."""
    largest = -(-pairs // world)
    return -(-largest // batch_size)

