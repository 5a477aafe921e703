"""Scoring outside training: eval mode, and per-batch log-probs gathered back into split order
on the CPU (the reference pass, held-out evaluation and `prefalign eval` share these)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from prefalign.losses import PairLogps


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (no dropout) and restore each one's own mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def logps_to_cpu(logps: PairLogps) -> PairLogps:
    return PairLogps(
        chosen=logps.chosen.float().cpu(),
        rejected=logps.rejected.float().cpu(),
        chosen_count=logps.chosen_count.cpu(),
        rejected_count=logps.rejected_count.cpu(),
    )


def scatter_logps(parts: list[tuple[Tensor, PairLogps]], size: int) -> PairLogps:
    """Put batches scored out of order (index, logps) back into order: (size,) each."""
    chosen, rejected = torch.zeros(size), torch.zeros(size)  # (N,) each
    chosen_count = torch.zeros(size, dtype=torch.long)  # (N,)
    rejected_count = torch.zeros(size, dtype=torch.long)  # (N,)
    for index, logps in parts:
        chosen[index], rejected[index] = logps.chosen, logps.rejected
        chosen_count[index], rejected_count[index] = logps.chosen_count, logps.rejected_count
    return PairLogps(chosen, rejected, chosen_count, rejected_count)
