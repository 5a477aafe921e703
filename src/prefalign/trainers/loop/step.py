"""One optimiser step: forward and backward over the micro-batches, gather, clip, update or skip.

Loss reduction: each micro-batch contributes Σ per-pair losses / P, P the pairs this process
handles in the step (batch_size × grad_accum), so its accumulated gradient is the gradient of
its mean loss; DDP (or FSDP's reduce-scatter) averages the processes' gradients, which gives
the gradient of the mean over the global batch. Metrics are computed from the per-pair numbers
of every micro-batch of every process (gathered), never as a mean of per-batch means.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from prefalign.engine.forward.precision import policy_precision
from prefalign.engine.metrics import PairRecords
from prefalign.losses import LossOutput, PairLogps
from prefalign.trainers.dpo.data import make_batch, model_inputs
from prefalign.trainers.loop.sharding import clip_gradients, gradient_sync

if TYPE_CHECKING:
    from accelerate import Accelerator

    from prefalign.trainers.loop.run import Run

Columns = dict[str, Tensor]
_RECORD_FIELDS = tuple(PairRecords.__dataclass_fields__)


class NonFiniteLoss(RuntimeError):
    """A step whose loss or gradient is NaN or infinite, under `train.on_nan: stop`."""

    def __init__(self, step: int, pair_ids: list[str], what: str = "loss"):
        self.step, self.pair_ids = step, pair_ids
        shown = ", ".join(pair_ids[:20]) + (" ..." if len(pair_ids) > 20 else "")
        super().__init__(f"non-finite {what} at step {step}; pairs: {shown} "
                         "(train.on_nan: skip leaves such steps out)")


@dataclass(frozen=True)
class StepResult:
    """The per-pair numbers of the whole global batch (split order lost, index kept)."""

    columns: Columns
    grad_norm: float

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.columns["losses"]).all()) and \
            bool(torch.isfinite(torch.tensor(self.grad_norm)))


def forward_pairs(
    run: Run, scorer: torch.nn.Module, batch: Mapping[str, Tensor], split: str
) -> tuple[LossOutput, PairLogps, PairLogps | None]:
    """Policy log-probs (through `scorer`, under `train.autocast`), reference log-probs (under
    it only with `reference.precision: policy`: see `precision`) and the configured loss."""
    device = batch["chosen_input_ids"].device
    with policy_precision(run.config.train, device):
        policy = scorer(**model_inputs(dict(batch)))
    reference = run.reference.logps(batch, split)
    return run.loss(policy, reference), policy, reference


def batch_columns(
    output: LossOutput, policy: PairLogps, reference: PairLogps | None, index: Tensor
) -> Columns:
    """Detached per-pair numbers of one batch, each (B,); reference_* only with a reference."""
    columns: Columns = {
        "losses": output.losses.detach(),
        "chosen_rewards": output.chosen_rewards.detach(),
        "rejected_rewards": output.rejected_rewards.detach(),
        "policy_chosen": policy.chosen.detach(),
        "policy_rejected": policy.rejected.detach(),
        "chosen_tokens": policy.chosen_count,
        "rejected_tokens": policy.rejected_count,
        "index": index,
    }
    if reference is not None:
        columns["reference_chosen"] = reference.chosen.detach()
        columns["reference_rejected"] = reference.rejected.detach()
    columns.update({f"terms/{name}": term.detach() for name, term in output.terms.items()})
    return columns


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


def records_of(columns: Columns) -> PairRecords:
    """The columns as `PairRecords` (reference_* None when there was no reference)."""
    return PairRecords(**{name: columns.get(name) for name in _RECORD_FIELDS})


def train_step(run: Run, micro_batches: list[Tensor]) -> StepResult:
    """Forward and backward over this process's micro-batches, then gather and clip."""
    accelerator, split = run.accelerator, run.splits["train"]
    per_process = sum(len(indices) for indices in micro_batches)
    parts = []
    for j, indices in enumerate(micro_batches):
        batch = make_batch(split, indices, run.pad_token_id)
        batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
        last = j == len(micro_batches) - 1
        with _sync_gradients(run, last):
            output, policy, reference = forward_pairs(run, run.scorer, batch, "train")
            accelerator.backward(output.losses.sum() / per_process)
        parts.append(batch_columns(output, policy, reference, batch["index"]))
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
    """Pair ids whose loss is non-finite, or every pair of the step when only the gradient is."""
    losses, index = result.columns["losses"], result.columns["index"]
    bad = ~torch.isfinite(losses)
    chosen = index[bad] if bad.any() else index
    return [run.splits["train"].tokenized[i].pair_id for i in chosen.tolist()]


def _what(result: StepResult) -> str:
    return "loss" if not torch.isfinite(result.columns["losses"]).all() else "gradient norm"


def train_metrics(columns: Columns, grad_norm: float, lr: float) -> dict[str, float]:
    """The logged summary of one step over the global batch (means over pairs)."""
    def mean(name: str) -> float:
        return columns[name].double().mean().item()

    chosen, rejected = columns["chosen_rewards"], columns["rejected_rewards"]
    metrics = {
        "loss": mean("losses"),
        "rewards/accuracy": (chosen > rejected).double().mean().item(),
        "rewards/margin": (chosen.double() - rejected.double()).mean().item(),
        "rewards/chosen": mean("chosen_rewards"),
        "rewards/rejected": mean("rejected_rewards"),
        "logps/chosen": mean("policy_chosen"),
        "logps/rejected": mean("policy_rejected"),
    }
    if "reference_chosen" in columns:
        metrics["logps/chosen_change"] = mean("policy_chosen") - mean("reference_chosen")
        metrics["logps/rejected_change"] = mean("policy_rejected") - mean("reference_rejected")
    metrics.update({name: mean(name) for name in columns if name.startswith("terms/")})
    metrics.update(grad_norm=grad_norm, lr=lr)
    return metrics
