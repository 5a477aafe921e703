"""Block attention (each pair's block of a packed row on its own) against the whole-row mask."""

from __future__ import annotations

import pytest
import torch
from test_packed import SHAPES, random_pairs

import prefalign.engine.forward.block_attention as block_attention
from prefalign.engine.forward.block_attention import BLOCK_ATTENTION, row_blocks, split_attention
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.engine.forward.packed_layout import PairTokens, build_layout
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
    original = block_attention.sdpa_attention_forward
    monkeypatch.setattr(block_attention, "sdpa_attention_forward",
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
    two_blocks = (((0, 3), (3, 5)),)
    with pytest.raises(RuntimeError, match="boom"), \
            split_attention(model.config, two_blocks) as extra:
        assert model.config._attn_implementation == BLOCK_ATTENTION
        assert extra == {"prefalign_blocks": two_blocks}
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    with split_attention(model.config, (((0, 5),),)) as extra:  # one block per row: no split
        assert model.config._attn_implementation == "sdpa" and extra == {}
