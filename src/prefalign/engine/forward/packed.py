"""Sequence log-probs of chosen and rejected with the prompt computed once, pairs packed, no padding.

`PackedPairScorer` is a drop-in for `PairScorer`: the same six `collate_pairs` tensors in, the
same `PairLogps` out (equal within float32 rounding, gradients too). Instead of a (2B, T) padded
stack it runs the decoder once on `prefix | chosen | rejected` segments packed into rows (see
`packed_layout`), so shared prompt tokens and padding cost nothing. `score_tokenized_pairs` does
the same for a list of `TokenizedPair` without collating.

Mask mechanism: transformers 5.x hands an attention mask that is already 4D, (R, 1, L, L), to the
attention function unchanged (`masking_utils._preprocess_mask_arguments` returns it as is), and
the explicit `position_ids` drive the rotary embeddings. `sdpa` takes a boolean mask (True =
attend); `eager` adds the mask to the scores, so it gets 0 / dtype-min floats. Other
implementations (flash attention, flex attention) cannot take this mask and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prefalign.data.tokenize import TokenizedPair
from prefalign.engine.forward.block_attention import row_blocks, split_attention
from prefalign.engine.forward.chunked import GradHandoff, chunked_token_logps
from prefalign.engine.forward.packed_layout import (
    PackedLayout,
    PairTokens,
    build_layout,
    pair_tokens_from_batch,
)
from prefalign.engine.forward.scorer import causal_lm_of, decoder_of, output_weight
from prefalign.engine.forward.tied_embedding import tied_embedding, tied_embeddings
from prefalign.losses import PairLogps

SUPPORTED_ATTENTION = ("sdpa", "eager")


class PackedPairScorer(nn.Module):
    """forward(batch) -> PairLogps for a `collate_pairs` batch, prefix-shared and packed.

    chunk_size, keep_mib: response rows projected to the vocabulary at a time, and MiB of
    softmax kept for backward (as in `PairScorer`).
    max_row_tokens: token budget of one packed row; None packs the whole batch into one row,
    1 gives every pair its own row (prefix sharing only, rows padded to the longest).
    attention_blocks: with `sdpa`, attend within each pair's block of a row only (see
    `block_attention`); False hands SDPA the whole row and its mask. Same results.
    """

    def __init__(
        self,
        model: nn.Module,
        chunk_size: int = 1024,
        *,
        max_row_tokens: int | None = None,
        attention_blocks: bool = True,
        keep_mib: float = 0,
    ):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        if max_row_tokens is not None and max_row_tokens < 1:
            raise ValueError(f"max_row_tokens must be None or >= 1, got {max_row_tokens!r}")
        self.model = model
        self.chunk_size = chunk_size
        self.max_row_tokens = max_row_tokens
        self.attention_blocks = attention_blocks
        self.keep_mib = keep_mib

    def forward(
        self,
        chosen_input_ids: Tensor,
        chosen_attention_mask: Tensor,
        chosen_labels: Tensor,
        rejected_input_ids: Tensor,
        rejected_attention_mask: Tensor,
        rejected_labels: Tensor,
    ) -> PairLogps:
        batch = {
            "chosen_input_ids": chosen_input_ids,
            "chosen_attention_mask": chosen_attention_mask,
            "chosen_labels": chosen_labels,
            "rejected_input_ids": rejected_input_ids,
            "rejected_attention_mask": rejected_attention_mask,
            "rejected_labels": rejected_labels,
        }
        pairs = pair_tokens_from_batch(batch)
        return self.score(pairs)

    def score(self, pairs: Sequence[PairTokens]) -> PairLogps:
        """Log-probs of un-padded pairs. Under DDP call the module itself, not this method."""
        return score_pairs(self.model, pairs, chunk_size=self.chunk_size,
                           max_row_tokens=self.max_row_tokens,
                           attention_blocks=self.attention_blocks, keep_mib=self.keep_mib)


def score_tokenized_pairs(
    model: nn.Module,
    pairs: Sequence[TokenizedPair],
    *,
    chunk_size: int = 1024,
    max_row_tokens: int | None = None,
    attention_blocks: bool = True,
) -> PairLogps:
    """`PackedPairScorer(model, ...)` on `collate_pairs(pairs)`, without collating (same result)."""
    tokens = [PairTokens.from_tokenized(pair) for pair in pairs]
    return score_pairs(model, tokens, chunk_size=chunk_size, max_row_tokens=max_row_tokens,
                       attention_blocks=attention_blocks)


def score_pairs(
    model: nn.Module,
    pairs: Sequence[PairTokens],
    *,
    chunk_size: int = 1024,
    max_row_tokens: int | None = None,
    attention_blocks: bool = True,
    keep_mib: float = 0,
) -> PairLogps:
    """Summed response log-probs and token counts of each pair's chosen and rejected side.

    model: a transformers causal LM (or a peft wrapper of one) using `sdpa` or `eager` attention.
    """
    weight = output_weight(model)  # (V, H)
    layout = build_layout(pairs, max_row_tokens=max_row_tokens, device=weight.device)
    mask = packed_attention_mask(model, layout)  # (R, 1, L, L)
    blocks = row_blocks(layout.segment) if attention_blocks else ()
    embedding = tied_embedding(model, weight)
    handoff = GradHandoff() if embedding is not None else None
    tokens = ({"input_ids": layout.input_ids} if embedding is None else
              {"inputs_embeds": tied_embeddings(layout.input_ids, embedding, handoff)})
    with split_attention(causal_lm_of(model).config, blocks) as extra:
        hidden = decoder_of(model)(
            **tokens,
            attention_mask=mask,
            position_ids=layout.position_ids,
            use_cache=False,
            **extra,
        ).last_hidden_state  # (R, L, H)
    rows = hidden.reshape(-1, hidden.shape[-1])[layout.source_index]  # (N, H) one per target
    token_logps = chunked_token_logps(rows, weight, layout.target_ids, chunk_size,
                                      keep_mib, handoff)  # (N,)
    sequences = layout.counts.shape[0]  # 2B: chosen sides, then rejected sides
    sums = token_logps.new_zeros(sequences)  # (2B,)
    sums = sums.index_add(0, layout.sequence_index, token_logps)
    batch = layout.num_pairs
    chosen, rejected = sums.split(batch)  # views of sums
    return PairLogps(
        chosen=chosen.clone(),  # FSDP2 warns of views among a sharded module's outputs
        rejected=rejected.clone(),
        chosen_count=layout.counts[:batch],
        rejected_count=layout.counts[batch:],
    )


def packed_attention_mask(model: nn.Module, layout: PackedLayout) -> Tensor:
    """The layout's mask in the form the model's attention implementation expects."""
    implementation = getattr(causal_lm_of(model).config, "_attn_implementation", None)
    if implementation not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"the packed scorer needs attn_implementation 'sdpa' or 'eager' (it passes a custom "
            f"4D attention mask), got {implementation!r}; load the model with "
            "attn_implementation='sdpa' or use the plain PairScorer"
        )
    visible = layout.attention_mask()  # (R, 1, L, L) bool
    if implementation == "sdpa":
        return visible
    dtype = decoder_of(model).get_input_embeddings().weight.dtype
    # eager adds the mask to the attention scores: 0 where visible, the dtype's minimum elsewhere
    blocked = torch.zeros(visible.shape, dtype=dtype, device=visible.device)  # (R, 1, L, L)
    return blocked.masked_fill_(~visible, torch.finfo(dtype).min)
