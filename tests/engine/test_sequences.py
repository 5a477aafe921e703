"""Single-sequence scorers (SFT): packed equals padded equals the model's own forward."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from prefalign.data.tokenize import IGNORE_INDEX
from prefalign.engine.forward.sequences import (
    PackedSequenceScorer,
    SequenceScorer,
    collate_sequences,
)
from tiny_models import tiny_llama

TOLERANCE = 1e-5


def _sequences(vocab_size: int, spans: list[list[tuple[int, bool]]], seed: int = 0):
    """Random ids; each sequence is a list of (length, labelled) spans, like a conversation's
    turns: unlabelled prompt turns and labelled assistant turns."""
    generator = torch.Generator().manual_seed(seed)
    sequences = []
    for parts in spans:
        ids, labels = [], []
        for length, labelled in parts:
            chunk = torch.randint(8, vocab_size, (length,), generator=generator).tolist()
            ids += chunk
            labels += chunk if labelled else [IGNORE_INDEX] * length
        sequences.append((ids, labels))
    return sequences


SPANS = [
    [(5, False), (4, True)],
    [(3, False), (2, True), (4, False), (6, True)],  # two assistant turns
    [(9, False), (1, True)],
    [(2, False), (7, True), (3, False), (3, True), (2, False), (1, True)],
]


def _own_forward_sums(model, sequences):
    """Σ log π of labelled tokens from the model's own unpadded forward and full logits."""
    sums = []
    for ids, labels in sequences:
        logits = model(torch.tensor([ids])).logits[0].float()  # (T, V)
        logps = torch.log_softmax(logits[:-1], dim=-1)  # (T-1, V)
        targets = torch.tensor(labels[1:])
        scored = targets != IGNORE_INDEX
        sums.append(logps[scored].gather(1, targets[scored, None]).sum())
    return torch.stack(sums)


def _sums_and_grads(scorer, batch):
    scorer.zero_grad()
    out = scorer(**batch)
    (out.sum * torch.arange(1.0, len(out.sum) + 1)).sum().backward()
    grads = {n: p.grad.clone() for n, p in scorer.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("blocks", [True, False], ids=["block-attention", "whole-row"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_packed_equals_padded_and_the_models_own_forward(tiny_tokenizer, blocks, lora):
    model = tiny_llama(tiny_tokenizer)
    if lora:
        torch.manual_seed(1)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                 target_modules=["q_proj", "v_proj"]))
    sequences = _sequences(len(tiny_tokenizer), SPANS)
    batch = collate_sequences(sequences, tiny_tokenizer.pad_token_id)
    padded, padded_grads = _sums_and_grads(SequenceScorer(model, chunk_size=3), batch)
    packed, packed_grads = _sums_and_grads(
        PackedSequenceScorer(model, chunk_size=3, attention_blocks=blocks), batch)
    with torch.no_grad():
        own = _own_forward_sums(model, sequences)
    expected_counts = [sum(n for n, labelled in parts if labelled) - (parts[0][1])
                       for parts in SPANS]
    assert packed.count.tolist() == padded.count.tolist() == expected_counts
    torch.testing.assert_close(padded.sum, own, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.sum, padded.sum, atol=TOLERANCE, rtol=0)
    assert packed_grads.keys() == padded_grads.keys() and packed_grads
    for name in padded_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], atol=TOLERANCE,
                                   rtol=1e-4, msg=name)


def test_packed_sequences_do_not_see_each_other(tiny_tokenizer):
    """Changing every token of one sequence leaves the others' log-probs exactly as they were."""
    model = tiny_llama(tiny_tokenizer).eval()
    sequences = _sequences(len(tiny_tokenizer), SPANS)
    other = _sequences(len(tiny_tokenizer), SPANS, seed=5)
    changed = [other[0], *sequences[1:]]
    scorer = PackedSequenceScorer(model, attention_blocks=False)  # one row, whole-row mask
    with torch.no_grad():
        before = scorer(**collate_sequences(sequences, 0)).sum
        after = scorer(**collate_sequences(changed, 0)).sum
    assert not torch.equal(before[0], after[0])
    torch.testing.assert_close(before[1:], after[1:], atol=1e-6, rtol=0)


def test_collate_refuses_ids_and_labels_of_different_lengths():
    with pytest.raises(ValueError, match="sequence 0: 3 ids but 2 labels"):
        collate_sequences([([1, 2, 3], [1, 2])], 0)
