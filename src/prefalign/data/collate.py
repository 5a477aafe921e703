"""Pad tokenised pairs into a batch of chosen and rejected sequences (right padding)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefalign.data.tokenize import IGNORE_INDEX, Side, TokenizedPair


def collate_pairs(pairs: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch of B pairs as int64 tensors of shape (B, T), T the longest sequence on either side.

    Keys: {chosen,rejected}_{input_ids,attention_mask,labels}. Padding is on the right; labels
    are IGNORE_INDEX (-100) on the prompt and on padding, the response ids elsewhere. Both sides
    share T so they can be stacked into one (2B, T) forward pass.
    """
    if not pairs:
        raise ValueError("collate_pairs: no pairs to collate")
    longest = max(len(p.input_ids(side)) for p in pairs for side in ("chosen", "rejected"))
    batch: dict[str, torch.Tensor] = {}
    for side in ("chosen", "rejected"):
        input_ids, attention_mask, labels = _pad_side(pairs, side, longest, pad_token_id)
        batch[f"{side}_input_ids"] = input_ids
        batch[f"{side}_attention_mask"] = attention_mask
        batch[f"{side}_labels"] = labels
    return batch


def _pad_side(
    pairs: Sequence[TokenizedPair], side: Side, length: int, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = (len(pairs), length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros(shape, dtype=torch.long)  # (B, T)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for row, pair in enumerate(pairs):
        ids = pair.input_ids(side)
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.tensor(pair.labels(side), dtype=torch.long)
    return input_ids, attention_mask, labels
