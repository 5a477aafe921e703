"""Batch order without a DataLoader, for every trainer.

Epoch e visits the split in a permutation drawn from a generator seeded by (seed, e). Optimiser
step k of the epoch takes permutation[k*G:(k+1)*G], G = batch_size × grad_accum × world_size;
process r takes the r-th contiguous part of that, and its micro-batch j the j-th contiguous part
of its own. The same G examples thus make up step k however they are split over micro-batches
and processes, and the data position to resume from is (epoch, step). The last N mod G examples
of an epoch (fewer than one global batch) are left out of that epoch; another epoch's
permutation visits them.
"""

from __future__ import annotations

import torch

from prefalign.config import Config


def global_batch_size(config: Config, world_size: int) -> int:
    """Examples per optimiser step over all processes."""
    return config.train.batch_size * config.train.grad_accum * world_size


def steps_per_epoch(split_size: int, global_batch: int) -> int:
    """Optimiser steps in one epoch; the remainder (fewer than one global batch) is left out."""
    return split_size // global_batch


def epoch_permutation(split_size: int, seed: int, epoch: int) -> torch.Tensor:
    """The order (N,) int64 in which epoch `epoch` visits the split; the same on every process."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (1 << 63))
    return torch.randperm(split_size, generator=generator)  # (N,)


def micro_batch_indices(
    permutation: torch.Tensor,
    step_in_epoch: int,
    *,
    batch_size: int,
    grad_accum: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """This process's `grad_accum` micro-batches (each (batch_size,) int64) for one step."""
    per_process = batch_size * grad_accum
    start = step_in_epoch * per_process * world_size + rank * per_process
    mine = permutation[start : start + per_process]  # (batch_size * grad_accum,)
    if len(mine) < per_process:
        raise IndexError(f"step {step_in_epoch} is past the end of the epoch")
    return list(mine.split(batch_size))
