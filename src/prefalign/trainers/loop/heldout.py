"""Scoring the held-out split during training: eval mode, no gradients, shared over processes.

Each process scores a contiguous share of the split with the unwrapped policy, then the
per-pair numbers are gathered and put back in split order before `evaluate.eval_metrics`
summarises them. Under DDP the forward has no collective inside, so shares may differ in size;
a sharded policy (`train.fsdp`) gathers its parameters in every forward, so there every process
runs the same number of batches, the shorter shares topped up with batches whose results are
dropped.

Reference-free losses (SimPO, ORPO) have no reference to measure log-prob changes against, so
the policy's own log-probs at step 0 stand in: one extra pass over the held-out split at the
start of the run (as cheap as one evaluation, no second model), kept in the run directory with
a sha256 of its tensors so a resumed run compares against the same starting point. A resumed run
whose file is missing or fails the check scores a fresh copy of the starting model instead.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from prefalign.engine.checked_tensors import read_checked, write_checked
from prefalign.engine.forward.gather import eval_mode
from prefalign.engine.forward.select import build_scorer
from prefalign.engine.metrics import eval_metrics
from prefalign.engine.models.load import load_reference_model
from prefalign.integrity import Check
from prefalign.losses import PairLogps
from prefalign.trainers.dpo.data import make_batch
from prefalign.trainers.loop.step import (
    Columns,
    batch_columns,
    concat_columns,
    forward_pairs,
    gather_columns,
    records_of,
)

if TYPE_CHECKING:
    from prefalign.trainers.loop.run import Run

INITIAL_LOGPS = "initial-eval-logps.safetensors"
_NAMES = ("chosen", "rejected")


def score_heldout(run: Run, split_name: str = "eval") -> Columns:
    """Per-pair columns of the whole split, in split order, identical on every process."""
    split = run.splits[split_name]
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    share = torch.arange(len(split)).tensor_split(world)[rank]  # (N / world,)
    # Shortest first, so that batches carry little padding.
    lengths = torch.tensor([_length(split.tokenized[i]) for i in share.tolist()])
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
            batch = make_batch(split, batches[round_] if real else filler, run.pad_token_id)
            batch = {k: v.to(run.accelerator.device) for k, v in batch.items()}
            output, logps, reference = forward_pairs(run, policy, batch, split_name)
            columns = batch_columns(output, logps, reference, batch["index"])
            (parts if real else dropped).append(columns)
    mine = concat_columns(parts) if parts else {k: v[:0] for k, v in dropped[0].items()}
    columns = gather_columns(run.accelerator, mine)
    order = torch.argsort(columns["index"])
    return {name: value[order] for name, value in columns.items()}


def evaluate(run: Run) -> dict[str, float]:
    """The held-out metrics (unprefixed names) of the policy as it is now."""
    columns = score_heldout(run)
    if "reference_chosen" not in columns and run.initial_eval is not None:
        columns["reference_chosen"] = run.initial_eval.chosen
        columns["reference_rejected"] = run.initial_eval.rejected
    return eval_metrics(records_of(columns))


def initial_eval_logps(run: Run, run_dir: Path, resuming: bool) -> PairLogps:
    """The step-0 policy's held-out log-probs: read back when resuming, else scored and saved."""
    path = Path(run_dir) / INITIAL_LOGPS
    if not resuming:
        columns = score_heldout(run)
    else:
        tensors, problem = read_checked(path, _NAMES, len(run.splits["eval"]))
        if tensors is not None:
            return PairLogps(tensors["chosen"], tensors["rejected"])
        if run.is_main:
            print(f"prefalign: {path}: {problem}; scoring the starting model again",
                  file=sys.stderr)
        columns = _score_starting_model(run)
    logps = PairLogps(columns["policy_chosen"].float(), columns["policy_rejected"].float())
    if run.accelerator.is_main_process:
        tensors = {"chosen": logps.chosen.contiguous(), "rejected": logps.rejected.contiguous()}
        write_checked(path, tensors)
    return logps


def verify_initial_logps(path: Path) -> Check:
    """The verdict on a run's initial-eval-logps file (absent is fine: a resume rescores)."""
    if not path.is_file():
        return Check(path, True, "absent")
    tensors, problem = read_checked(path, _NAMES, None)
    if tensors is None:
        return Check(path, False, str(problem))
    return Check(path, True, f"{len(tensors['chosen'])} pairs match their sha256")


def _score_starting_model(run: Run) -> Columns:
    """Score the held-out split with a fresh copy of the model the run started from (the
    policy has moved on since): base weights, starting adapter merged."""
    model = load_reference_model(run.config.model, expected_hash=run.loaded.weight_hash)
    scorer = build_scorer(model.to(run.accelerator.device), run.config.train)
    return score_heldout(dataclasses.replace(run, scorer=scorer, sharded=False))


def batch_rounds(pairs: int, world: int, batch_size: int) -> int:
    """Batches of the largest share when `pairs` are split over `world` processes."""
    largest = -(-pairs // world)
    return -(-largest // batch_size)


def _length(pair) -> int:
    return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))
