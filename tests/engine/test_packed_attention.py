"""Packed attention: windowed masks by hand, and each pair's block on its own against the whole row."""

from __future__ import annotations

import pytest
import torch

import prefalign.engine.forward.packed_attention as packed_attention_module
from prefalign.data.tokenize import TokenizedPair
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.engine.forward.packed_attention import (
    PACKED_ATTENTION,
    PackedAttention,
    packed_attention,
    row_blocks,
)
from prefalign.engine.forward.packed_layout import PairTokens, build_layout
from random_pairs import SHAPES, random_pairs
from tiny_models import tiny_llama

# float32; the blocks' softmax sums run over fewer terms than the whole row's
TOLERANCE = 1e-5


def test_blocks_cover_each_row_pair_by_pair():
    pairs = [PairTokens.from_tokenized(p) for p in random_pairs(100, SHAPES)]
    layout = build_layout(pairs, max_row_tokens=30)  # rows of several pairs, padded at the end
    blocks = row_blocks(layout.segment)
    segment = layout.segment.tolist()
    for row, row_blocks_ in zip(segment, blocks, strict=True):
        assert row_blocks_[0][0] == 0 and row_blocks_[-1][1] == len(row)
        for (_, end), (next_start, _) in zip(row_blocks_, row_blocks_[1:], strict=False):
            assert end == next_start
        for start, end in row_blocks_:
            assert len(set(row[start:end])) == 1  # one segment (or the padding) per block
    assert any(len(r) > 2 for r in blocks)  # the test packs several pairs per row
    mask = layout.attention_mask()[:, 0]  # (R, L, L): nothing visible outside the blocks
    inside = torch.zeros_like(mask)
    for row, row_blocks_ in enumerate(blocks):
        for start, end in row_blocks_:
            inside[row, start:end, start:end] = True
    assert not (mask & ~inside).any()


def _scores(model, pairs, blocks):
    model.zero_grad(set_to_none=True)
    logps = score_tokenized_pairs(model, pairs, attention_blocks=blocks)
    (logps.chosen.sum() - 2 * logps.rejected.sum()).backward()
    return logps, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_blocks_equal_the_whole_row(tiny_tokenizer, monkeypatch, dropout):
    """Same log-probs and gradients; the block path really runs (one call per block and layer)
    and the model's attention setting is back to sdpa afterwards. With attention dropout in
    eval mode (the reference's case) nothing changes either."""
    model = tiny_llama(tiny_tokenizer, attention_dropout=dropout).eval()
    pairs = random_pairs(len(tiny_tokenizer), SHAPES, seed=5)
    whole, whole_grads = _scores(model, pairs, blocks=False)
    calls = []
    original = packed_attention_module.sdpa_attention_forward
    monkeypatch.setattr(packed_attention_module, "sdpa_attention_forward",
                        lambda *a, **k: calls.append(a[1].shape[2]) or original(*a, **k))
    split, split_grads = _scores(model, pairs, blocks=True)
    assert len(calls) == len(SHAPES) * model.config.num_hidden_layers
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(split.chosen, whole.chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(split.rejected, whole.rejected, atol=TOLERANCE, rtol=0)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, atol=TOLERANCE, rtol=0, msg=name)


def test_the_attention_setting_is_restored_after_an_error(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer)
    layout = build_layout([PairTokens.from_tokenized(TokenizedPair("x", (1, 2), (3,), (4,)))])
    packed = PackedAttention(layout.attention_mask(), layout.position_ids, None, "sdpa",
                             torch.float32)
    with pytest.raises(RuntimeError, match="boom"), packed_attention(model.config, packed) as extra:
        assert model.config._attn_implementation == PACKED_ATTENTION
        assert extra == {"prefalign_packed": packed}
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_window_masks_by_hand():
    """Prompt (1, 2), chosen (3, 4), rejected (5): row 1 2 3 4 5, positions 0 1 2 3 2.
    Window 2 keeps a key when the query's position is less than 2 past it: chosen's last token
    (position 3) sees positions 2, 3 (columns 2, 3); the rejected token (position 2) sees the
    prompt's position 1 and itself (columns 1, 4), not the chosen tokens, as without a window.
    Eager's form adds 0 where visible and the dtype's minimum elsewhere."""
    layout = build_layout([PairTokens.from_tokenized(TokenizedPair("x", (1, 2), (3, 4), (5,)))])
    packed = PackedAttention(layout.attention_mask(), layout.position_ids, None, "eager",
                             torch.float32)
    windowed = packed.mask(2, additive=False)[0, 0].int().tolist()
    assert windowed[3] == [0, 0, 1, 1, 0] and windowed[4] == [0, 1, 0, 0, 1]
    assert windowed[2] == [0, 1, 1, 0, 0] and windowed[0] == [1, 0, 0, 0, 0]
    assert torch.equal(packed.mask(None, additive=False), layout.attention_mask())
    minimum = torch.finfo(torch.float32).min
    assert packed.mask(2, additive=True)[0, 0, 4].tolist() == [minimum, 0, minimum, minimum, 0]
    assert packed.mask(2, additive=True) is packed.mask(2, additive=True)  # built once
