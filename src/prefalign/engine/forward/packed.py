"""Sequence log-probs of chosen and rejected with the prompt computed once, pairs packed, no padding.

`PackedPairScorer` is a drop-in for `PairScorer`: the same six `collate_pairs` tensors in, the
same `PairLogps` out (equal within float32 rounding, gradients too). Instead of a (2B, T) padded
stack it runs the decoder once on `prefix | chosen | rejected` segments packed into rows (see
`packed_layout`), so shared prompt tokens and padding cost nothing. `score_tokenized_pairs` does
the same for a list of `TokenizedPair` without collating.

Mask mechanism: transformers 5.x hands an attention mask that is already 4D, (R, 1, L, L), to the
attention function unchanged (`masking_utils._preprocess_mask_arguments` returns it as is), and
the explicit `position_ids` drive the rotary embeddings. The attention function is prefalign's
(`packed_attention`): it windows the mask for sliding-window layers and runs the model's `sdpa`
or `eager` attention on it. Other implementations (flash attention, flex attention) cannot take
this mask and are refused, as is what no mask can express (`model_features.check_packed`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from prefalign.data.tokenize import TokenizedPair
from prefalign.engine.forward.chunked import GradHandoff, chunked_token_logps
from prefalign.engine.forward.model_features import (
    check_packed,
    check_positions,
    check_windows_applied,
    logit_transform,
)
from prefalign.engine.forward.model_parts import causal_lm_of, decoder_of, output_weight
from prefalign.engine.forward.packed_attention import (
    PackedAttention,
    packed_attention,
    row_blocks,
)
from prefalign.engine.forward.packed_layout import (
    PackedLayout,
    PairTokens,
    build_layout,
    pair_tokens_from_batch,
)
from prefalign.engine.forward.tied_embedding import tied_embedding, tied_embeddings
from prefalign.losses import PairLogps


class PackedPairScorer(nn.Module):
    """forward(batch) -> PairLogps for a `collate_pairs` batch, prefix-shared and packed.

    chunk_size, keep_mib: response rows projected to the vocabulary at a time, and MiB of
    softmax kept for backward (as in `PairScorer`).
    max_row_tokens: token budget of one packed row; None packs the whole batch into one row,
    1 gives every pair its own row (prefix sharing only, rows padded to the longest).
    attention_blocks: attend within each pair's block of a row only (see `packed_attention`);
    False hands the attention function the whole row and its mask. Same results.
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
        check_packed(model)
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

    model: a transformers causal LM (or a peft wrapper of one) using `sdpa` or `eager` attention
    that `check_packed` accepts.
    """
    check_packed(model)
    weight = output_weight(model)  # (V, H)
    layout = build_layout(pairs, max_row_tokens=max_row_tokens, device=weight.device)
    check_positions(model, layout.longest)
    embedding = tied_embedding(model, weight)
    handoff = GradHandoff() if embedding is not None else None
    tokens = ({"input_ids": layout.input_ids} if embedding is None else
              {"inputs_embeds": tied_embeddings(layout.input_ids, embedding, handoff)})
    hidden = decoder_states(model, layout, tokens, attention_blocks)  # (R, L, H)
    rows = hidden.reshape(-1, hidden.shape[-1])[layout.source_index]  # (N, H) one per target
    token_logps = chunked_token_logps(rows, weight, layout.target_ids, chunk_size, keep_mib,
                                      handoff, logit_transform(model))  # (N,)
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


def decoder_states(model: nn.Module, layout: PackedLayout, tokens: dict[str, Tensor],
                   attention_blocks: bool) -> Tensor:
    """The decoder's last hidden states (R, L, H) of the packed rows, attending through
    `packed_attention` (the layout's mask, windowed per layer; each pair's block alone when
    `attention_blocks` and a row holds several)."""
    config = causal_lm_of(model).config
    blocks = row_blocks(layout.segment) if attention_blocks else ()
    packed = PackedAttention(
        layout.attention_mask(),  # (R, 1, L, L)
        layout.position_ids,
        blocks if any(len(row) > 1 for row in blocks) else None,
        implementation=config._attn_implementation,
        mask_dtype=decoder_of(model).get_input_embeddings().weight.dtype,
    )
    with packed_attention(config, packed) as extra:
        hidden = decoder_of(model)(
            **tokens,
            attention_mask=packed.visible,  # 4D: transformers hands it to attention unchanged
            position_ids=layout.position_ids,
            use_cache=False,
            **extra,
        ).last_hidden_state  # (R, L, H)
    check_windows_applied(model, packed.windows_seen, layout.longest)
    return hidden
