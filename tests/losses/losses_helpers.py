"""Shared builders and plain-Python formulas for the loss tests (independent of prefalign)."""

from __future__ import annotations

import math

import torch

from prefalign.losses import PairLogps


def pair(chosen, rejected, chosen_count=None, rejected_count=None, *, grad=False) -> PairLogps:
    """PairLogps in float64 from Python lists; counts optional."""

    def tensor(values):
        return torch.tensor(values, dtype=torch.float64, requires_grad=grad)

    counts = (None, None)
    if chosen_count is not None:
        counts = (torch.tensor(chosen_count), torch.tensor(rejected_count))
    return PairLogps(tensor(chosen), tensor(rejected), *counts)


def random_pairs(batch: int, seed: int, *, grad: bool = False) -> tuple[PairLogps, PairLogps]:
    """Random policy and reference log-probs (float64) with token counts 1..20."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 21, (2, batch), generator=generator)
    values = -torch.rand(4, batch, generator=generator, dtype=torch.float64) * counts.repeat(2, 1)
    policy = PairLogps(
        values[0].clone().requires_grad_(grad),
        values[1].clone().requires_grad_(grad),
        counts[0],
        counts[1],
    )
    reference = PairLogps(values[2], values[3], counts[0], counts[1])
    return policy, reference


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def neg_log_sigmoid(x: float) -> float:
    """−log σ(x) = log(1 + e^(−x)), written directly."""
    return math.log1p(math.exp(-x))


def as_lists(p: PairLogps) -> list[tuple[float, float, int, int]]:
    """(chosen, rejected, chosen_count, rejected_count) per pair, as Python numbers."""
    size = len(p.chosen)
    chosen_counts = p.chosen_count.tolist() if p.has_counts else [1] * size
    rejected_counts = p.rejected_count.tolist() if p.has_counts else [1] * size
    columns = (p.chosen.tolist(), p.rejected.tolist(), chosen_counts, rejected_counts)
    return list(zip(*columns, strict=True))


def swap(p: PairLogps) -> PairLogps:
    """The same pairs with chosen and rejected exchanged."""
    return PairLogps(p.rejected, p.chosen, p.rejected_count, p.chosen_count)


def gradcheck_policy(loss_of_policy, policy: PairLogps) -> None:
    """torch.autograd.gradcheck of per-example losses w.r.t. the policy's chosen and rejected."""

    def fn(chosen, rejected):
        return loss_of_policy(
            PairLogps(chosen, rejected, policy.chosen_count, policy.rejected_count)
        )

    assert torch.autograd.gradcheck(fn, (policy.chosen, policy.rejected))
