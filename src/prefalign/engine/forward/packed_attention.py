"""Attention over packed rows: the layout's mask, windowed per layer, each pair's block on its own.

transformers' attention modules look their attention function up by `config._attn_implementation`
at every forward and call it with the decoder's extra keyword arguments and their own
`sliding_window` (the layer's window, which flash attention needs) and `softcap` (Gemma 2's
attention soft-capping). While the packed scorer's decoder runs, `packed_attention(config, packed)`
switches the model to `prefalign_packed` (registered below), which for every layer:
- windows the row's mask: a layer reporting `sliding_window=W` keeps a key only when the query's
  position is less than W past it (q − k < W, transformers' own sliding mask); positions are each
  side's own (`packed_layout`), so the window counts the tokens of the unshared sequence;
- runs `sdpa`, or the model's own eager function (its modeling module's
  `eager_attention_forward`) when the model was loaded with `eager` or the layer soft-caps its
  scores, which sdpa cannot;
- with `blocks`, runs on each diagonal block of a row alone. No token sees another segment, so a
  row's (L, L) mask is block-diagonal; the whole row costs attention over L² positions, its blocks
  Σ lᵢ² (a quarter for four equal pairs), with the same result (masked keys add exp(-inf) = 0 to
  a softmax either way; sums run in another order, so outputs agree to float rounding). Each
  block keeps its own slice of the mask, so what a token sees inside its segment is unchanged.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

PACKED_ATTENTION = "prefalign_packed"
Blocks = tuple[tuple[tuple[int, int], ...], ...]  # per row: (start, end) of each block


class PackedAttention:
    """One packed decoder forward's attention inputs; masks are built once per window and form.

    visible (R, 1, L, L) bool, True where a query may attend to a key (`PackedLayout`);
    position_ids (R, L); blocks: per row, the (start, end) of each block, or None for whole rows;
    implementation: the model's own, "sdpa" or "eager"; mask_dtype: of eager's additive mask.
    windows_seen: the sliding windows the layers reported during the forward.
    """

    def __init__(self, visible: Tensor, position_ids: Tensor, blocks: Blocks | None,
                 implementation: str, mask_dtype: torch.dtype) -> None:
        self.visible = visible
        self.position_ids = position_ids
        self.blocks = blocks
        self.implementation = implementation
        self.mask_dtype = mask_dtype
        self.windows_seen: set[int] = set()
        self._masks: dict[tuple[int | None, bool], Tensor] = {}

    def mask(self, window: int | None, additive: bool) -> Tensor:
        """(R, 1, L, L): bool (True = attend) for sdpa, or 0 / dtype-min for eager (`additive`),
        which adds it to the scores; keys `window` or more positions back are hidden."""
        key = (window, additive)
        if key not in self._masks:
            visible = self.visible
            if window is not None:
                positions = self.position_ids  # (R, L)
                near = positions[:, None, :] > positions[:, :, None] - window  # (R, L, L) k > q − W
                visible = visible & near[:, None]
            if additive:
                blocked = torch.zeros(visible.shape, dtype=self.mask_dtype, device=visible.device)
                visible = blocked.masked_fill_(~visible, torch.finfo(self.mask_dtype).min)
            self._masks[key] = visible
        return self._masks[key]


def packed_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    *args,
    prefalign_packed: PackedAttention,
    **kwargs,
) -> tuple[Tensor, None]:
    """Attention of query/key/value (R, heads, L, D) under the packed mask (the decoder's
    `attention_mask`, the unwindowed one, is replaced); returns (R, L, heads, D) as sdpa does."""
    packed = prefalign_packed
    window = kwargs.get("sliding_window")
    if window is not None:
        packed.windows_seen.add(window)
    eager = packed.implementation == "eager" or kwargs.get("softcap") is not None
    kernel = model_eager_attention(module) if eager else sdpa_attention_forward
    mask = packed.mask(window, additive=eager)  # (R, 1, L, L)
    if packed.blocks is None:
        return kernel(module, query, key, value, mask, *args, **kwargs)[0], None
    rows = []
    for row, blocks in enumerate(packed.blocks):
        parts = []
        for start, end in blocks:
            part, _ = kernel(
                module,
                query[row : row + 1, :, start:end],
                key[row : row + 1, :, start:end],
                value[row : row + 1, :, start:end],
                mask[row : row + 1, :, start:end, start:end],
                *args,
                **kwargs,
            )  # (1, l, heads, D)
            parts.append(part)
        rows.append(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
    return (torch.cat(rows) if len(rows) > 1 else rows[0]), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)


def model_eager_attention(module: nn.Module) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """The eager attention function of `module`'s modeling file: transformers' own scores,
    scaling and soft-capping for that architecture."""
    function = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if function is None:
        raise ValueError(f"{type(module).__name__}: its module {type(module).__module__} has no "
                         "eager_attention_forward, which the packed scorer runs for eager "
                         "attention; set train.scorer: padded")
    return function


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
def packed_attention(config, packed: PackedAttention) -> Iterator[dict[str, PackedAttention]]:
    """Within the block the model attends through `prefalign_packed`; yields the decoder keyword
    arguments that carry `packed`. The model's setting is restored after, error or not."""
    previous = config._attn_implementation
    config._attn_implementation = PACKED_ATTENTION
    try:
        yield {"prefalign_packed": packed}
    finally:
        config._attn_implementation = previous
