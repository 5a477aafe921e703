"""One optimiser step: forward and backward over the micro-batches, gather, clip, update or skip.

Loss reduction: each micro-batch contributes Σ per-example losses / D, D the method's divisor
for this process's share of the step (for DPO the pairs it handles, batch_size × grad_accum),
so its accumulated gradient is the gradient of its mean loss; DDP (or FSDP's reduce-scatter)
averages the processes' gradients, which gives the gradient of the mean over the global batch.
Metrics are computed from the per-example numbers of every micro-batch of every process
(gathered), never as a mean of per-batch means.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from prefalign.trainers.loop.method import Columns
from prefalign.trainers.loop.sharding import clip_gradients, gradient_sync

if TYPE_CHECKING:
    from accelerate import Accelerator

    from prefalign.trainers.loop.run import Run



class NonFiniteLoss(RuntimeError):
    """A step whose loss or gradient is NaN or infinite, under `train.on_nan: stop`."""

    def __init__(self, step: int, pair_ids: list[str], what: str = "loss"):
        self.step, self.pair_ids = step, pair_ids
        shown = ", ".join(pair_ids[:20]) + (" ..." if len(pair_ids) > 20 else "")
        super().__init__(f"non-finite {what} at step {step}; examples: {shown} "
                         "(train.on_nan: skip leaves such steps out)")


@dataclass(frozen=True)
class StepResult:
    """The per-example numbers of the whole global batch (split order lost, index kept)."""

    columns: Columns
    grad_norm: float

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.columns["losses"]).all()) and \
            bool(torch.isfinite(torch.tensor(self.grad_norm)))


def concat_columns(parts: list[Columns]) -> Columns:
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def gather_columns(accelerator: Accelerator, columns: Columns) -> Columns:
    """Every process's columns concatenated in rank order (counts may differ per process)."""
    if accelerator.num_processes == 1:
        return {name: value.cpu() for name, value in columns.items()}
    names = sorted(columns)
    stacked = torch.stack([columns[n].double() for n in names], dim=1)  # (P, K)
    stacked = stacked.to(accelerator.device)
    count = torch.tensor([stacked.shape[0]], device=accelerator.device)
    counts = accelerator.gather(count).tolist()  # one per process
    padded = torch.zeros(max(counts), len(names), dtype=torch.float64, device=stacked.device)
    padded[: stacked.shape[0]] = stacked  # (max P, K)
    gathered = accelerator.gather(padded).cpu().split(max(counts))  # world × (max P, K)
    joined = torch.cat([part[:n] for part, n in zip(gathered, counts, strict=True)])  # (ΣP, K)
    integer = {n for n in names if not columns[n].is_floating_point()}
    return {n: joined[:, i].long() if n in integer else joined[:, i].to(columns[n].dtype)
            for i, n in enumerate(names)}


def train_step(run: Run, micro_batches: list[Tensor], step: int = 0) -> StepResult:
    """Forward and backward over this process's micro-batches of optimiser step `step`
    (0-based), then gather and clip."""
    accelerator, method = run.accelerator, run.method
    batches = method.step_batches(run, step, micro_batches)
    divisor = method.loss_divisor(run, micro_batches)
    parts = []
    for j, batch in enumerate(batches):
        batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
        last = j == len(batches) - 1
        with _sync_gradients(run, last):
            losses, columns = method.forward(run, run.scorer, batch, "train")
            accelerator.backward(losses.sum() / divisor)
        parts.append(columns)
    columns = gather_columns(accelerator, concat_columns(parts))
    max_norm = run.config.optim.max_grad_norm or float("inf")
    if run.sharded:
        return StepResult(columns, clip_gradients(run.trainable, max_norm))
    norm = accelerator.clip_grad_norm_(run.trainable, max_norm)
    return StepResult(columns, float(norm))


def _sync_gradients(run: Run, last: bool) -> contextlib.AbstractContextManager:
    """Gradients are reduced over processes once, on the last micro-batch of the step."""
    if run.sharded:
        return gradient_sync(run.scorer, last)
    return contextlib.nullcontext() if last else run.accelerator.no_sync(run.scorer)


def apply_update(run: Run, result: StepResult, step: int) -> bool:
    """Step the optimiser when the step is finite; True when it was skipped (on_nan: skip).

    A skipped step still consumes its batch and advances the schedule, so the data position
    and learning rate stay those of an unskipped run. Raises NonFiniteLoss under on_nan: stop.
    """
    skipped = not result.finite
    if skipped and run.config.train.on_nan == "stop":
        raise NonFiniteLoss(step, bad_pair_ids(run, result), _what(result))
    if not skipped:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    return skipped


def bad_pair_ids(run: Run, result: StepResult) -> list[str]:
    """Ids of the examples whose loss is non-finite, or of every example of the step when only
    the gradient is."""
    losses, index = result.columns["losses"], result.columns["index"]
    bad = ~torch.isfinite(losses)
    chosen = index[bad] if bad.any() else index
    return [run.splits["train"].example_id(i) for i in chosen.tolist()]


def _what(result: StepResult) -> str:
    return "loss" if not torch.isfinite(result.columns["losses"]).all() else "gradient norm"


def step_metrics(run: Run, result: StepResult, lr: float) -> dict[str, float]:
    """The method's summary of the step, with the gradient norm and learning rate."""
    return {**run.method.train_metrics(result.columns), "grad_norm": result.grad_norm, "lr": lr}
