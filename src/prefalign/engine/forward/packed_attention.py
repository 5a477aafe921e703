"""Attention of a packed row one pair at a time: the row's mask is block-diagonal, so skip the zeros.

A packed row holds several pairs' segments, and no token sees another segment, so the (L, L)
mask is block-diagonal. Handing SDPA the whole row costs attention over L² positions; running it
on each segment's own block costs Σ lᵢ², a quarter of that for four equal pairs, with the same
result (masked keys add exp(-inf) = 0 to a softmax either way; sums run in another order, so
outputs agree to float rounding). Each block keeps its own slice of the mask, so what a token sees
inside its segment (the prefix-sharing rules) is unchanged.

Mechanism: transformers' attention modules look their attention function up by
`config._attn_implementation` at every forward and pass the decoder's extra keyword arguments on
to it. `split_attention(config, blocks)` switches an `sdpa` model to `prefalign_blocks`
(registered below) for one forward and yields the keyword argument that carries `blocks`;
without `blocks` the function is plain `sdpa`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

BLOCK_ATTENTION = "prefalign_blocks"
Blocks = tuple[tuple[tuple[int, int], ...], ...]  # per row: (start, end) of each block


def block_sdpa_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    *args,
    prefalign_blocks: Blocks | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """`sdpa_attention_forward` on each diagonal block of each row; query/key/value (R, heads, L, D),
    attention_mask (R, 1, L, L) bool. Returns (R, L, heads, D) as sdpa does."""
    if prefalign_blocks is None or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    rows = []
    for row, blocks in enumerate(prefalign_blocks):
        parts = []
        for start, end in blocks:
            part, _ = sdpa_attention_forward(
                module,
                query[row : row + 1, :, start:end],
                key[row : row + 1, :, start:end],
                value[row : row + 1, :, start:end],
                attention_mask[row : row + 1, :, start:end, start:end],
                *args,
                **kwargs,
            )  # (1, l, heads, D)
            parts.append(part)
        rows.append(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
    return (torch.cat(rows) if len(rows) > 1 else rows[0]), None


AttentionInterface.register(BLOCK_ATTENTION, block_sdpa_forward)


def row_blocks(segment: Tensor) -> Blocks:
    """(start, end) of each run of equal segment numbers in each row of `segment` (R, L); the
    row-end padding (-1) is a run too. The blocks of a row cover it exactly."""
    blocks = []
    for values in segment.cpu().tolist():
        starts = [0] + [i for i in range(1, len(values)) if values[i] != values[i - 1]]
        ends = starts[1:] + [len(values)]
        blocks.append(tuple(zip(starts, ends, strict=True)))
    return tuple(blocks)


@contextlib.contextmanager
def split_attention(config, blocks: Blocks) -> Iterator[dict[str, Blocks]]:
    """Within the block, an `sdpa` model whose rows hold several blocks attends through
    `prefalign_blocks`; yields the decoder keyword arguments that carry `blocks` ({} when the
    model keeps its own attention). The setting is restored after, error or not."""
    previous = getattr(config, "_attn_implementation", None)
    if previous != "sdpa" or not any(len(row) > 1 for row in blocks):
        yield {}
        return
    config._attn_implementation = BLOCK_ATTENTION
    try:
        yield {"prefalign_blocks": blocks}
    finally:
        config._attn_implementation = previous
