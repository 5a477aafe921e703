"""Rewards of the chosen and rejected sides of preference pairs, with the prompt computed once.

`RewardPairScorer` wraps a reward model (engine/models/reward.py) as `PairScorer` wraps a causal
LM: the six `collate_pairs` tensors in, `PairRewards` out. packed=True runs the decoder once on
`prefix | chosen tail | rejected tail` segments packed into rows (packed_layout.py: every token
sees exactly the tokens and positions of its own sequence) and applies the head to each side's
hidden state at its last non-pad token; packed=False runs transformers' own
sequence-classification forward on the (2B, T) stack of padded sequences. The two agree within
float32 rounding, and with transformers scoring each sequence alone (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prefalign.data.tokenize import IGNORE_INDEX
from prefalign.engine.forward.model_features import check_packed, check_positions
from prefalign.engine.forward.packed import decoder_states
from prefalign.engine.forward.packed_layout import (
    PackedLayout,
    PairTokens,
    build_layout,
    pair_tokens_from_batch,
)
from prefalign.engine.forward.scorer import causal_lm_of, decoder_of
from prefalign.engine.models.reward import reward_head


@dataclass(frozen=True)
class PairRewards:
    """Scalar rewards of B pairs' chosen and rejected sides, (B,) float32, and their response
    lengths in tokens, (B,) int64."""

    chosen: Tensor
    rejected: Tensor
    chosen_count: Tensor
    rejected_count: Tensor


class RewardPairScorer(nn.Module):
    """forward(batch) -> PairRewards for a `collate_pairs` batch (see the module docstring).

    max_row_tokens, attention_blocks: as in `PackedPairScorer` (packed only).
    """

    def __init__(self, model: nn.Module, *, packed: bool = True, attention_blocks: bool = True,
                 max_row_tokens: int | None = None):
        super().__init__()
        self.model = model
        self.packed = packed
        self.attention_blocks = attention_blocks
        self.max_row_tokens = max_row_tokens

    def forward(
        self,
        chosen_input_ids: Tensor,
        chosen_attention_mask: Tensor,
        chosen_labels: Tensor,
        rejected_input_ids: Tensor,
        rejected_attention_mask: Tensor,
        rejected_labels: Tensor,
    ) -> PairRewards:
        batch = chosen_input_ids.shape[0]
        if self.packed:
            pairs = pair_tokens_from_batch({
                "chosen_input_ids": chosen_input_ids, "chosen_attention_mask": chosen_attention_mask,
                "chosen_labels": chosen_labels, "rejected_input_ids": rejected_input_ids,
                "rejected_attention_mask": rejected_attention_mask,
                "rejected_labels": rejected_labels})
            rewards = packed_pair_rewards(self.model, pairs, max_row_tokens=self.max_row_tokens,
                                          attention_blocks=self.attention_blocks)  # (2B,)
        else:
            input_ids = torch.cat([chosen_input_ids, rejected_input_ids])  # (2B, T)
            attention_mask = torch.cat([chosen_attention_mask, rejected_attention_mask])
            rewards = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                 use_cache=False).logits[:, 0].float()  # (2B,)
        return PairRewards(
            chosen=rewards[:batch].clone(),  # FSDP2 warns of views among a sharded
            rejected=rewards[batch:].clone(),  # module's outputs
            chosen_count=(chosen_labels != IGNORE_INDEX).sum(-1),
            rejected_count=(rejected_labels != IGNORE_INDEX).sum(-1),
        )


def packed_pair_rewards(model: nn.Module, pairs: Sequence[PairTokens], *,
                        max_row_tokens: int | None = None,
                        attention_blocks: bool = True) -> Tensor:
    """(2B,) float32: the chosen sides' rewards, then the rejected sides', of un-padded pairs.

    model: a reward model (or a peft wrapper of one) using `sdpa` or `eager` attention.
    """
    config = causal_lm_of(model).config
    device = decoder_of(model).get_input_embeddings().weight.device
    layout = build_layout(pairs, max_row_tokens=max_row_tokens, device=device)
    check_packed(model)
    check_positions(model, layout.longest)
    hidden = decoder_states(model, layout, {"input_ids": layout.input_ids},
                            attention_blocks)  # (R, L, H)
    positions = reward_positions(pairs, layout, config.pad_token_id).to(device)  # (2B,)
    states = hidden.reshape(-1, hidden.shape[-1])[positions]  # (2B, H)
    return reward_head(model)(states)[:, 0].float()  # (2B,)


def reward_positions(pairs: Sequence[PairTokens], layout: PackedLayout,
                     pad_token_id: int | None) -> Tensor:
    """(2B,) flat indices (row * L + column) into `layout` of the token each side's reward is
    read at: chosen sides first, then rejected sides.

    Within a side's own sequence that is its last token whose id is not `pad_token_id`
    (transformers' rule for sequence classification; the first token when every one is, the
    last when there is no pad token). A rejected token past the shared prefix sits after the
    chosen tail in the packed row.
    """
    starts = segment_starts(layout)
    chosen, rejected = [], []
    for pair, start in zip(pairs, starts, strict=True):
        shared = pair.prefix_length
        chosen_tail = len(pair.chosen_ids) - shared
        chosen.append(start + last_token(pair.chosen_ids, pad_token_id))
        position = last_token(pair.rejected_ids, pad_token_id)
        rejected.append(start + position + (chosen_tail if position >= shared else 0))
    return torch.tensor(chosen + rejected, dtype=torch.long)


def segment_starts(layout: PackedLayout) -> list[int]:
    """The flat index where each pair's segment begins, in pair order (pairs are packed in
    order, row after row)."""
    segment = layout.segment.cpu()
    width = segment.shape[1]
    flat = segment.flatten().tolist()
    starts = [index for index, number in enumerate(flat) if number >= 0
              and (index % width == 0 or flat[index - 1] != number)]
    if len(starts) != layout.num_pairs:
        raise RuntimeError(f"found {len(starts)} segments for {layout.num_pairs} pairs")
    return starts


def last_token(ids: Sequence[int], pad_token_id: int | None) -> int:
    """Position of the last id that is not `pad_token_id` (as transformers picks it)."""
    if pad_token_id is None:
        return len(ids) - 1
    for position in range(len(ids) - 1, -1, -1):
        if ids[position] != pad_token_id:
            return position
    return 0


@torch.no_grad()
def sequence_rewards(model: nn.Module, sequences: Sequence[Sequence[int]], *,
                     batch_size: int = 8) -> Tensor:
    """(N,) float32 rewards of whole token sequences, through transformers' own forward on
    right-padded batches (shortest first, results back in input order)."""
    pad = causal_lm_of(model).config.pad_token_id
    device = decoder_of(model).get_input_embeddings().weight.device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    rewards = torch.zeros(len(sequences), dtype=torch.float32)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin:begin + batch_size]
        longest = max(len(sequences[i]) for i in chunk)
        input_ids = torch.full((len(chunk), longest), 0 if pad is None else pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)  # (b, T)
        for row, index in enumerate(chunk):
            input_ids[row, :len(sequences[index])] = torch.tensor(sequences[index])
            attention_mask[row, :len(sequences[index])] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                       use_cache=False).logits  # (b, 1)
        rewards[chunk] = logits[:, 0].float().cpu()
    return rewards
