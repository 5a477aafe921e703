"""Summed log-probs of the labelled tokens of single sequences (SFT conversations), packed or
padded.

`PackedSequenceScorer` packs the batch's sequences into rows with no padding inside, each
sequence its own block of the row's block-diagonal causal mask with position ids restarting at
0, so no token sees another sequence; it is the pair scorer's layout with an empty rejected side
(`packed.score_pairs`), so block attention, chunked log-probs and the tied-embedding gradient
work the same. `SequenceScorer` runs the plain right-padded (B, T) batch. Both take
`collate_sequences` tensors and return `SequenceSums`; they agree within float32 rounding,
gradients too (tests/engine/test_sequences.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prefalign.data.tokenize import IGNORE_INDEX
from prefalign.engine.forward.logps import sequence_logps_from_hidden
from prefalign.engine.forward.packed import score_pairs
from prefalign.engine.forward.packed_layout import PairTokens
from prefalign.engine.forward.scorer import decoder_of, output_weight


@dataclass(frozen=True)
class SequenceSums:
    """sum (B,) float: Σ log π over each sequence's labelled tokens; count (B,) int64: how many."""

    sum: Tensor
    count: Tensor


def collate_sequences(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int
) -> dict[str, Tensor]:
    """(input_ids, labels) pairs, right-padded: input_ids, attention_mask, labels, each (B, T)."""
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
    for row, (ids, row_labels) in enumerate(sequences):
        if len(ids) != len(row_labels):
            raise ValueError(f"sequence {row}: {len(ids)} ids but {len(row_labels)} labels")
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(ids)] = torch.tensor(row_labels, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


class SequenceScorer(nn.Module):
    """forward(input_ids, attention_mask, labels) -> SequenceSums over a right-padded batch."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024, keep_mib: float = 0):
        super().__init__()
        self.model, self.chunk_size, self.keep_mib = model, chunk_size, keep_mib

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> SequenceSums:
        hidden = decoder_of(self.model)(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state  # (B, T, H)
        logps = sequence_logps_from_hidden(hidden, output_weight(self.model), labels,
                                           chunk_size=self.chunk_size, keep_mib=self.keep_mib)
        return SequenceSums(logps.sum, logps.count)


class PackedSequenceScorer(nn.Module):
    """forward(input_ids, attention_mask, labels) -> SequenceSums, the sequences packed.

    The padded batch is un-padded (attention mask 0 dropped) and packed into rows of at most
    `max_row_tokens` (None: one row); other arguments as in `PackedPairScorer`.
    """

    def __init__(self, model: nn.Module, chunk_size: int = 1024, *,
                 max_row_tokens: int | None = None, attention_blocks: bool = True,
                 keep_mib: float = 0):
        super().__init__()
        self.model, self.chunk_size, self.keep_mib = model, chunk_size, keep_mib
        self.max_row_tokens, self.attention_blocks = max_row_tokens, attention_blocks

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> SequenceSums:
        keep = attention_mask.bool().cpu()  # (B, T)
        rows = zip(input_ids.cpu(), labels.cpu(), keep, strict=True)
        # An empty second side: each sequence is one segment of the pair layout.
        tokens = [PairTokens(tuple(ids[k].tolist()), tuple(lab[k].tolist()), (), ())
                  for ids, lab, k in rows]
        logps = score_pairs(self.model, tokens, chunk_size=self.chunk_size,
                            max_row_tokens=self.max_row_tokens,
                            attention_blocks=self.attention_blocks, keep_mib=self.keep_mib)
        return SequenceSums(logps.chosen, logps.chosen_count)


def build_sequence_scorer(model: nn.Module, *, packed: bool, chunk_size: int,
                          attention_blocks: bool, keep_mib: float) -> nn.Module:
    """`train.scorer` for single sequences: packed or padded (same results)."""
    if packed:
        return PackedSequenceScorer(model, chunk_size, attention_blocks=attention_blocks,
                                    keep_mib=keep_mib)
    return SequenceScorer(model, chunk_size, keep_mib=keep_mib)
