"""PackedPairScorer (prefix sharing + packing) against the plain PairScorer, and its layout."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from prefalign.data.collate import collate_pairs
from prefalign.data.tokenize import IGNORE_INDEX, TokenizedPair
from prefalign.engine.forward.packed import PackedPairScorer, score_tokenized_pairs
from prefalign.engine.forward.packed_layout import (
    CHOSEN,
    PADDING,
    PREFIX,
    REJECTED,
    PairTokens,
    build_layout,
)
from prefalign.engine.forward.scorer import PairScorer
from random_pairs import SHAPES, logps_and_grads, random_pairs
from tiny_models import tiny_llama

TOLERANCE = 1e-4


def assert_same_as_plain(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], **packed_options
) -> None:
    plain, plain_grads = logps_and_grads(PairScorer(model), batch)
    packed, packed_grads = logps_and_grads(PackedPairScorer(model, **packed_options), batch)
    torch.testing.assert_close(packed.chosen, plain.chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, plain.rejected, atol=TOLERANCE, rtol=0)
    assert torch.equal(packed.chosen_count, plain.chosen_count)
    assert torch.equal(packed.rejected_count, plain.rejected_count)
    assert plain_grads.keys() == packed_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=TOLERANCE, rtol=0, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("max_row_tokens", [None, 1, 30])  # one row, a row per pair, a budget
@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "whole-row"])
def test_equals_plain_scorer(tiny_tokenizer, attention, max_row_tokens, blocks):
    model = tiny_llama(tiny_tokenizer, attn_implementation=attention)
    batch = collate_pairs(random_pairs(len(tiny_tokenizer), SHAPES), tiny_tokenizer.pad_token_id)
    assert_same_as_plain(model, batch, max_row_tokens=max_row_tokens, attention_blocks=blocks)


def test_equals_plain_scorer_with_lora(tiny_tokenizer):
    torch.manual_seed(1)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(tiny_llama(tiny_tokenizer), lora)
    batch = collate_pairs(random_pairs(len(tiny_tokenizer), SHAPES), tiny_tokenizer.pad_token_id)
    assert_same_as_plain(model, batch)


def test_responses_sharing_first_tokens_and_left_padding(tiny_tokenizer):
    """The shared prefix runs into the responses; un-padding follows the attention mask."""
    pairs = random_pairs(len(tiny_tokenizer), [(4, 6, 5), (2, 3, 7)], seed=3)
    first = pairs[0]
    pairs[0] = TokenizedPair(
        "same-start", first.prompt_ids, first.chosen_ids, first.chosen_ids[:3] + (9, 10)
    )
    batch = collate_pairs(pairs, tiny_tokenizer.pad_token_id)
    assert PairTokens.from_tokenized(pairs[0]).prefix_length == 4 + 3
    left_padded = {key: _move_padding_left(value, batch, key) for key, value in batch.items()}
    model = tiny_llama(tiny_tokenizer)
    plain = PairScorer(model)(**batch)
    packed = PackedPairScorer(model)(**left_padded)
    torch.testing.assert_close(packed.chosen, plain.chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, plain.rejected, atol=TOLERANCE, rtol=0)


def _move_padding_left(
    tensor: torch.Tensor, batch: dict[str, torch.Tensor], key: str
) -> torch.Tensor:
    side = key.split("_")[0]
    lengths = batch[f"{side}_attention_mask"].sum(dim=1)  # (B,)
    return torch.stack(
        [row.roll(int(row.shape[0] - n)) for row, n in zip(tensor, lengths, strict=True)]
    )


def test_score_tokenized_pairs_equals_forward(tiny_tokenizer):
    pairs = random_pairs(len(tiny_tokenizer), SHAPES)
    model = tiny_llama(tiny_tokenizer)
    with torch.no_grad():
        direct = score_tokenized_pairs(model, pairs)
        collated = PackedPairScorer(model)(**collate_pairs(pairs, tiny_tokenizer.pad_token_id))
    assert torch.equal(direct.chosen, collated.chosen)
    assert torch.equal(direct.rejected, collated.rejected)


def test_layout_by_hand():
    """Prompt (1, 2), chosen (3, 4), rejected (5): segment 1 2 3 4 5, positions 0 1 2 3 2.

    Chosen targets 3, 4 come from rows 1, 2; the rejected target 5 from row 1 (the last prompt
    token, not the chosen row before it). Row-end padding (budget 1, two rows) sees only itself.
    """
    pair = PairTokens.from_tokenized(TokenizedPair("x", (1, 2), (3, 4), (5,)))
    short = PairTokens.from_tokenized(TokenizedPair("y", (7,), (8,), (9,)))
    layout = build_layout([pair, short], max_row_tokens=1, pad_token_id=0)
    assert layout.input_ids.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 0, 0]]
    assert layout.part[0].tolist() == [PREFIX, PREFIX, CHOSEN, CHOSEN, REJECTED]
    assert layout.part[1].tolist() == [PREFIX, CHOSEN, REJECTED, PADDING, PADDING]
    # sequences: 0, 1 chosen of pairs 0, 1; 2, 3 rejected of pairs 0, 1; flat index = row * 5 + column
    assert layout.source_index.tolist() == [1, 2, 1, 5, 5]
    assert layout.target_ids.tolist() == [3, 4, 5, 8, 9]
    assert layout.sequence_index.tolist() == [0, 0, 2, 1, 3]
    assert layout.counts.tolist() == [2, 1, 1, 1]
    visible = layout.attention_mask()[:, 0].int().tolist()
    assert visible[0][4] == [1, 1, 0, 0, 1]  # rejected sees the prompt and itself, not chosen
    assert visible[0][3] == [1, 1, 1, 1, 0]  # chosen is plain causal
    assert visible[1][3] == [0, 0, 0, 1, 0] and visible[1][4] == [0, 0, 0, 0, 1]


def test_packed_row_is_block_diagonal():
    pairs = [PairTokens.from_tokenized(TokenizedPair(n, (1,), (2,), (3,))) for n in "ab"]
    layout = build_layout(pairs)  # one row: 1 2 3 | 1 2 3
    assert layout.position_ids.tolist() == [[0, 1, 1, 0, 1, 1]]
    visible = layout.attention_mask()[0, 0].int()
    assert visible[3:, :3].sum() == 0 and visible[:3, 3:].sum() == 0
    assert visible[5].tolist() == [0, 0, 0, 1, 0, 1]


def test_labels_decide_what_is_scored():
    """Ignored labels inside a response are skipped, exactly as the plain path skips them."""
    ids = (1, 2, 3, 4)
    pair = PairTokens(
        ids, (IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 4), ids, (IGNORE_INDEX, 2, 3, 4)
    )
    layout = build_layout([pair])
    assert layout.counts.tolist() == [1, 3]
    assert layout.source_index.tolist() == [2, 0, 1, 2]  # identical sides share every row


def test_refuses_attention_without_custom_masks(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer)
    model.set_attn_implementation("flex_attention")
    batch = collate_pairs(
        random_pairs(len(tiny_tokenizer), SHAPES[:1]), tiny_tokenizer.pad_token_id
    )
    with pytest.raises(ValueError, match="needs .sdpa. or .eager."):
        PackedPairScorer(model)(**batch)
