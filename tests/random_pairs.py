"""Random tokenised pairs for the scorer tests, and their log-probs with gradients."""

from __future__ import annotations

import torch

from prefalign.data.tokenize import TokenizedPair


def random_pairs(
    vocab_size: int, shapes: list[tuple[int, int, int]], seed: int = 0
) -> list[TokenizedPair]:
    """Pairs of random ids (specials excluded) with (prompt, chosen, rejected) token counts."""
    generator = torch.Generator().manual_seed(seed)

    def ids(count: int) -> tuple[int, ...]:
        return tuple(torch.randint(8, vocab_size, (count,), generator=generator).tolist())

    return [TokenizedPair(f"p{n}", ids(p), ids(c), ids(r)) for n, (p, c, r) in enumerate(shapes)]


# different prompt and response lengths, 1-token responses on either side
SHAPES = [(7, 5, 9), (3, 1, 4), (12, 6, 1), (1, 3, 2)]


def logps_and_grads(scorer: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """Summed log-probs, counts, and gradients of chosen.sum() - 2 * rejected.sum()."""
    scorer.zero_grad()
    logps = scorer(**batch)
    (logps.chosen.sum() - 2 * logps.rejected.sum()).backward()
    grads = {name: p.grad.clone() for name, p in scorer.named_parameters() if p.grad is not None}
    return logps, grads
