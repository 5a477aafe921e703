"""Padding tokenised pairs into batch tensors."""

from __future__ import annotations

import pytest
import torch

from prefalign.data.collate import collate_pairs
from prefalign.data.tokenize import IGNORE_INDEX, TokenizedPair, tokenize_pairs
from prefalign.data.types import Message, PreferencePair, Provenance

PAD = 0


def test_shapes_padding_and_labels_by_hand():
    """Pair a: prompt 2 + chosen 1 = 3, + rejected 3 = 5. Pair b: prompt 1 + chosen 2 = 3,
    + rejected 1 = 2. T = longest of all four = 5, so both sides are (2, 5)."""
    a = TokenizedPair("a", (11, 12), (21,), (31, 32, 33))
    b = TokenizedPair("b", (13,), (22, 23), (34,))
    batch = collate_pairs([a, b], pad_token_id=PAD)
    assert sorted(batch) == sorted(
        f"{side}_{key}"
        for side in ("chosen", "rejected")
        for key in ("input_ids", "attention_mask", "labels")
    )
    for tensor in batch.values():
        assert tensor.shape == (2, 5) and tensor.dtype == torch.int64
    x = IGNORE_INDEX
    assert batch["chosen_input_ids"].tolist() == [[11, 12, 21, PAD, PAD], [13, 22, 23, PAD, PAD]]
    assert batch["chosen_attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert batch["chosen_labels"].tolist() == [[x, x, 21, x, x], [x, 22, 23, x, x]]
    assert batch["rejected_input_ids"].tolist() == [[11, 12, 31, 32, 33], [13, 34, PAD, PAD, PAD]]
    assert batch["rejected_attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["rejected_labels"].tolist() == [[x, x, 31, 32, 33], [x, 34, x, x, x]]


def test_collated_rows_match_each_pair_unpadded(tiny_tokenizer):
    pairs = [
        PreferencePair((Message("user", u),), c, r, Provenance("t", i))
        for i, (u, c, r) in enumerate(
            [("hi", "Hello there!", "No."), ("Tell me a joke about a cat.", "Why?", "I can't.")]
        )
    ]
    tokenized = tokenize_pairs(pairs, tiny_tokenizer).pairs
    batch = collate_pairs(tokenized, tiny_tokenizer.pad_token_id)
    for row, pair in enumerate(tokenized):
        for side in ("chosen", "rejected"):
            n = int(batch[f"{side}_attention_mask"][row].sum())
            assert batch[f"{side}_input_ids"][row, :n].tolist() == list(pair.input_ids(side))
            assert batch[f"{side}_labels"][row, :n].tolist() == list(pair.labels(side))
            assert (batch[f"{side}_input_ids"][row, n:] == tiny_tokenizer.pad_token_id).all()


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="no pairs"):
        collate_pairs([], pad_token_id=PAD)
