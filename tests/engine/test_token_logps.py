"""Per-token log-probs of labelled tokens (the GRPO scorer) against the full logits by hand."""

from __future__ import annotations

import torch

from prefalign.engine.forward.logps import IGNORE_INDEX
from prefalign.engine.forward.token_logps import TokenLogpScorer
from tiny_models import tiny_llama


def test_labelled_tokens_laid_out_from_column_zero(tiny_tokenizer):
    """Row 0 scores tokens 2..5, row 1 tokens 3..4 then padding; entry (b, c) is log π of the
    c-th scored token of row b under the full softmax, zero and masked past the row's end."""
    model = tiny_llama(tiny_tokenizer).eval()
    torch.manual_seed(0)
    input_ids = torch.randint(5, 60, (2, 6))
    attention_mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 1, 0]])
    labels = input_ids.clone()
    labels[0, :2] = IGNORE_INDEX
    labels[1, :3] = IGNORE_INDEX
    labels[1, 5] = IGNORE_INDEX
    scorer = TokenLogpScorer(model, chunk_size=3)  # chunks smaller than the 6 scored tokens
    with torch.no_grad():
        out = scorer(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        full = torch.log_softmax(model(input_ids=input_ids,
                                       attention_mask=attention_mask).logits.float(), dim=-1)
    expected = torch.zeros(2, 4)
    for b, positions in enumerate(([2, 3, 4, 5], [3, 4])):
        for c, t in enumerate(positions):
            expected[b, c] = full[b, t - 1, input_ids[b, t]]
    torch.testing.assert_close(out.logps, expected, atol=1e-5, rtol=1e-5)
    assert out.mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
