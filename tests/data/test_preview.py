"""The preview text: rendered prompt, boundary markers, token counts and truncation status."""

from __future__ import annotations

import pytest

from prefalign.data.preview import render_preview
from prefalign.data.tokenize import TruncationOptions, token_lengths
from prefalign.data.types import Message, PreferencePair, Provenance
from tiny import TINY_DEFAULT_SYSTEM

PAIR = PreferencePair(
    (Message("user", "What is the capital of France?"),),
    "Paris.",
    "I don't know.",
    Provenance("data.jsonl", 4),
)


def test_preview_marks_the_boundary_and_counts_tokens(tiny_tokenizer):
    prompt_len, chosen_len, rejected_len = token_lengths([PAIR], tiny_tokenizer)[0]
    text = render_preview(PAIR, tiny_tokenizer)
    lines = text.splitlines()
    assert lines[0] == "pair data.jsonl:4"
    assert lines[1] == (
        f"tokens: prompt {prompt_len}, chosen {chosen_len}, rejected {rejected_len} "
        f"(max_length 512, max_prompt_length 256)"
    )
    assert lines[2] == "status: fits"
    start = lines.index(f"──── prompt ({prompt_len} tokens) ────")
    chosen_marker = lines.index(f"──── chosen response ({chosen_len} tokens) ────")
    assert lines[start + 1] == "<|im_start|>system"
    assert lines[start + 2] == f"{TINY_DEFAULT_SYSTEM}<|im_end|>"  # the template's default
    assert lines[chosen_marker - 1] == "<|im_start|>assistant"
    assert lines[chosen_marker + 1] == "Paris.<|im_end|>"
    assert f"──── rejected response ({rejected_len} tokens) ────\nI don't know.<|im_end|>" in text
    assert lines[-1] == "──── end ────"


def test_preview_shows_truncation(tiny_tokenizer):
    prompt_len = token_lengths([PAIR], tiny_tokenizer)[0][0]
    options = TruncationOptions(max_length=prompt_len + 3, max_prompt_length=prompt_len - 2)
    text = render_preview(PAIR, tiny_tokenizer, options)
    assert "status: truncated: prompt (start removed), rejected (end removed)" in text
    assert f"──── prompt ({prompt_len - 2} tokens) ────" in text
    assert "──── rejected response (5 tokens) ────" in text  # (P+3) - (P-2)
    dropped = render_preview(
        PAIR,
        tiny_tokenizer,
        TruncationOptions(
            max_length=prompt_len + 3, max_prompt_length=prompt_len - 2, on_overflow="drop"
        ),
    )
    assert "status: over max_length: dropped (on_overflow='drop')" in dropped


def test_preview_of_a_huge_response_warns(tiny_tokenizer):
    huge = PreferencePair(PAIR.prompt, "word " * 1_000_000, "No.", Provenance("data.jsonl", 9))
    text = render_preview(huge, tiny_tokenizer, TruncationOptions(max_length=100))
    assert (
        "warning: pair data.jsonl:9: chosen is 5,000,000 characters; kept its first 1,600" in text
    )
    assert "status: truncated: chosen (end removed)" in text
    assert text.count("warning:") == 1


@pytest.mark.slow
def test_preview_with_smollm2_shows_its_default_system_prompt(smollm2_tokenizer):
    text = render_preview(PAIR, smollm2_tokenizer)
    assert "You are a helpful AI assistant named SmolLM" in text
    assert "Paris.<|im_end|>\n──── rejected response" in text
