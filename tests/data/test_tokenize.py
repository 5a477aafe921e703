"""Tokenising pairs: labels, the end-of-turn rule, the truncation policy and huge records."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from prefalign.data.bundled import bundled_path
from prefalign.data.template import TemplateMismatchError
from prefalign.data.tokenize import (
    DEFAULT_MAX_LENGTH,
    IGNORE_INDEX,
    SequenceTooLongError,
    TruncationOptions,
    _cap_prompt,
    token_lengths,
    tokenize_pairs,
)
from prefalign.data.types import Message, PreferencePair, Provenance


def words(n: int) -> str:
    """n tokens in the tiny vocabulary: "you" then " you" are single tokens."""
    return "you" + " you" * (n - 1)


def make_pair(
    chosen: str, rejected: str, record_id: str = "p1", user: str = "hi"
) -> PreferencePair:
    return PreferencePair(
        (Message("user", user),), chosen, rejected, Provenance("t.jsonl", 1, record_id)
    )


@pytest.fixture(scope="module")
def prompt_len(tiny_tokenizer) -> int:
    """P: tokens of the rendered tiny prompt for the user message "hi" (default system included)."""
    return token_lengths([make_pair("x", "y")], tiny_tokenizer)[0][0]


def test_options_are_validated_naming_the_field():
    assert TruncationOptions().prompt_limit == DEFAULT_MAX_LENGTH // 2
    assert TruncationOptions(max_length=100, max_prompt_length=10).prompt_limit == 10
    for bad in (0, 1, True, "8", 8.0):
        with pytest.raises(ValueError, match="^max_length: "):
            TruncationOptions(max_length=bad)
    for bad in (0, -3, 100, 200, False):
        with pytest.raises(ValueError, match="^max_prompt_length: "):
            TruncationOptions(max_length=100, max_prompt_length=bad)
    with pytest.raises(ValueError, match="^on_overflow: "):
        TruncationOptions(on_overflow="cut")


def test_labels_mask_the_prompt_and_responses_end_with_end_of_turn(tiny_tokenizer, prompt_len):
    """chosen "you you" -> 2 tokens + <|im_end|> = 3; the template's "\\n" after it is not kept."""
    result = tokenize_pairs([make_pair(words(2), words(5))], tiny_tokenizer)
    (tokenized,) = result.pairs
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(tokenized.prompt_ids) == prompt_len
    assert tiny_tokenizer.decode(tokenized.chosen_ids) == "you you<|im_end|>"
    assert (len(tokenized.chosen_ids), len(tokenized.rejected_ids)) == (3, 6)
    assert tokenized.chosen_ids[-1] == tokenized.rejected_ids[-1] == eot
    assert tokenized.input_ids("chosen") == tokenized.prompt_ids + tokenized.chosen_ids
    assert tokenized.labels("chosen") == (IGNORE_INDEX,) * prompt_len + tokenized.chosen_ids
    assert tokenized.labels("rejected")[prompt_len:] == tokenized.rejected_ids
    assert not tokenized.truncated
    assert result.counts == {
        "pairs_in": 1,
        "kept": 1,
        "dropped": 0,
        "prompt_truncated": 0,
        "response_truncated": 0,
        "huge_text_capped": 0,
    }


def test_system_prompt_and_multi_turn_are_kept_in_the_prompt(tiny_tokenizer):
    prompt = (
        Message("system", "You are terse."),
        Message("user", "Hello!"),
        Message("assistant", "Hello!"),
        Message("user", "Tell me a joke."),
    )
    pair = PreferencePair(prompt, "Why?", "No.", Provenance("t.jsonl", 3))
    (tokenized,) = tokenize_pairs([pair], tiny_tokenizer).pairs
    text = tiny_tokenizer.decode(tokenized.prompt_ids)
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!")
    assert text.endswith("Tell me a joke.<|im_end|>\n<|im_start|>assistant\n")


def test_overflow_cuts_the_prompt_start_then_the_longer_response(tiny_tokenizer, prompt_len):
    """P prompt tokens, chosen 10 words -> 11 tokens, rejected 30 -> 31.
    max_length P+22: P+31 > P+22, so the pair overflows. The prompt keeps its last P-8 tokens;
    the responses get (P+22) - (P-8) = 30 tokens: chosen (11) stays whole with its <|im_end|>,
    rejected is cut to its first 30 tokens and so loses its <|im_end|>."""
    p = prompt_len
    pair = make_pair(words(10), words(30))
    full_prompt = token_lengths([pair], tiny_tokenizer)
    assert full_prompt == [(p, 11, 31)]
    untruncated = tokenize_pairs(
        [pair], tiny_tokenizer, TruncationOptions(max_length=p + 40)
    ).pairs[0]
    options = TruncationOptions(max_length=p + 22, max_prompt_length=p - 8)
    result = tokenize_pairs([pair], tiny_tokenizer, options)
    (cut,) = result.pairs
    assert cut.prompt_ids == untruncated.prompt_ids[8:]  # the end of the prompt is kept
    assert cut.chosen_ids == untruncated.chosen_ids
    assert cut.rejected_ids == untruncated.rejected_ids[:30]
    assert (cut.prompt_truncated, cut.chosen_truncated, cut.rejected_truncated) == (
        True,
        False,
        True,
    )
    assert len(cut.input_ids("rejected")) == p + 22
    assert result.counts["prompt_truncated"] == result.counts["response_truncated"] == 1


def test_prompt_cut_alone_can_be_enough(tiny_tokenizer, prompt_len):
    """max_length P+25 < P+31 overflows; prompt kept P-8 leaves 33 >= 31 for the responses."""
    options = TruncationOptions(max_length=prompt_len + 25, max_prompt_length=prompt_len - 8)
    result = tokenize_pairs([make_pair(words(10), words(30))], tiny_tokenizer, options)
    (cut,) = result.pairs
    assert (len(cut.prompt_ids), len(cut.chosen_ids), len(cut.rejected_ids)) == (
        prompt_len - 8,
        11,
        31,
    )
    assert (result.counts["prompt_truncated"], result.counts["response_truncated"]) == (1, 0)


def test_short_prompt_is_kept_whole_and_responses_cut(tiny_tokenizer, prompt_len):
    """max_prompt_length P+5 > P keeps all P prompt tokens; max_length P+15 leaves 15 per
    response: chosen 11 whole, rejected 31 -> 15."""
    options = TruncationOptions(max_length=prompt_len + 15, max_prompt_length=prompt_len + 5)
    (cut,) = tokenize_pairs([make_pair(words(10), words(30))], tiny_tokenizer, options).pairs
    assert (len(cut.prompt_ids), len(cut.chosen_ids), len(cut.rejected_ids)) == (prompt_len, 11, 15)
    assert not cut.prompt_truncated and cut.rejected_truncated and not cut.chosen_truncated


def test_drop_removes_only_pairs_that_would_need_truncation(tiny_tokenizer, prompt_len):
    """max_length P+20: pair "fits" needs P+11 (kept), pair "long" needs P+31 (dropped)."""
    pairs = [make_pair(words(10), words(3), "fits"), make_pair(words(10), words(30), "long")]
    options = TruncationOptions(max_length=prompt_len + 20, on_overflow="drop")
    result = tokenize_pairs(pairs, tiny_tokenizer, options)
    assert [p.pair_id for p in result.pairs] == ["fits"]
    assert result.dropped == ["long"]
    assert result.counts == {
        "pairs_in": 2,
        "kept": 1,
        "dropped": 1,
        "prompt_truncated": 0,
        "response_truncated": 0,
        "huge_text_capped": 0,
    }


def test_raise_names_the_pair_and_its_lengths(tiny_tokenizer, prompt_len):
    options = TruncationOptions(max_length=prompt_len + 20, on_overflow="raise")
    with pytest.raises(SequenceTooLongError) as error:
        tokenize_pairs([make_pair(words(10), words(30), "long")], tiny_tokenizer, options)
    assert str(error.value).startswith(
        f"pair long: prompt {prompt_len} + longest response 31 tokens exceeds "
        f"max_length {prompt_len + 20}"
    )


def test_prefix_mismatch_is_a_hard_error_naming_the_pair(tiny_tokenizer):
    with pytest.raises(TemplateMismatchError, match=r"\(pair ws\)") as error:
        tokenize_pairs([make_pair("ok", "  leading spaces", "ws")], tiny_tokenizer)
    assert error.value.pair_id == "ws"


def test_huge_response_is_capped_quickly_with_a_warning(tiny_tokenizer, prompt_len):
    """A 5 MB response: only its first 1024 * 16 characters are tokenised; it is then cut to
    max_length - P tokens and carries no <|im_end|>."""
    huge = words(1_300_000)
    assert len(huge) > 5_000_000
    result = tokenize_pairs([make_pair(huge, words(4), "big")], tiny_tokenizer,
                            TruncationOptions(max_length=1024))
    (cut,) = result.pairs
    assert len(cut.chosen_ids) == 1024 - prompt_len
    assert cut.chosen_truncated and not cut.rejected_truncated and not cut.prompt_truncated
    assert cut.chosen_ids[-1] != tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert result.warnings == [
        f"pair big: chosen is {len(huge):,} characters; kept its first 16,384 before tokenising"
    ]
    assert result.counts["huge_text_capped"] == result.counts["response_truncated"] == 1


def test_huge_prompt_keeps_its_end(tiny_tokenizer):
    """A 5 MB user message is cut to the last 16,384 characters, then to 512 prompt tokens."""
    pair = make_pair("ok", "no", "big-prompt", user="start " + words(1_250_000) + " cat")
    result = tokenize_pairs([pair], tiny_tokenizer, TruncationOptions(max_length=1024))
    (cut,) = result.pairs
    assert len(cut.prompt_ids) == 512 and cut.prompt_truncated
    assert tiny_tokenizer.decode(cut.prompt_ids).endswith(
        " you cat<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "pair big-prompt: prompt is" in result.warnings[0]


def test_prompt_cap_keeps_the_last_characters_and_every_turn():
    """Budget 7 from the end: "mnop" (4, 3 left), "kl" (2, 1 left), "ghij" -> "j", "abcdef" -> ""."""
    messages = (
        Message("system", "abcdef"),
        Message("user", "ghij"),
        Message("assistant", "kl"),
        Message("user", "mnop"),
    )
    capped, was_capped = _cap_prompt(messages, 7)
    assert was_capped
    assert [(m.role, m.content) for m in capped] == [
        ("system", ""),
        ("user", "j"),
        ("assistant", "kl"),
        ("user", "mnop"),
    ]
    assert _cap_prompt(messages, 16) == (messages, False)


def test_token_lengths_are_the_untruncated_counts(tiny_tokenizer, prompt_len):
    pairs = [make_pair(words(10), words(30), "a"), make_pair(words(1), words(2), "b")]
    assert token_lengths(pairs, tiny_tokenizer) == [(prompt_len, 11, 31), (prompt_len, 2, 3)]
    assert token_lengths([], tiny_tokenizer) == []
    assert tokenize_pairs([], tiny_tokenizer).counts["pairs_in"] == 0


def test_audit_truncation_counts_agree_with_tokenize(tiny_tokenizer, prompt_len):
    """The audit predicts the policy's counts from token_lengths alone."""
    audit = pytest.importorskip("prefalign.data.audit")
    pairs = [
        make_pair(words(c), words(r), f"p{c}-{r}")
        for c, r in [(1, 2), (10, 30), (25, 5), (40, 40), (3, 19)]
    ]
    options = TruncationOptions(max_length=prompt_len + 20, max_prompt_length=prompt_len - 4)
    counts = tokenize_pairs(pairs, tiny_tokenizer, options).counts
    impact = audit.truncation_impact(
        token_lengths(pairs, tiny_tokenizer), options.max_length, options.prompt_limit
    )
    assert (impact.prompt_truncated, impact.response_truncated) == (
        counts["prompt_truncated"],
        counts["response_truncated"],
    )
    dropped = tokenize_pairs(
        pairs,
        tiny_tokenizer,
        TruncationOptions(
            max_length=options.max_length,
            max_prompt_length=options.prompt_limit,
            on_overflow="drop",
        ),
    )
    assert impact.over_length == dropped.counts["dropped"]


def _hh_pairs(name: str) -> list[PreferencePair]:
    """Bundled hh-rlhf records split at their last "Assistant:" turn (a minimal reader)."""
    pairs = []
    with gzip.open(bundled_path(name), "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            record = json.loads(line)
            chosen, rejected = (
                re.split(r"\n\n(Human|Assistant): ", record[k]) for k in ("chosen", "rejected")
            )
            turns = list(zip(chosen[1:-2:2], chosen[2:-2:2], strict=True))
            prompt = tuple(
                Message("user" if r == "Human" else "assistant", t.strip()) for r, t in turns
            )
            if prompt and prompt[-1].role == "user" and chosen[-1].strip() and rejected[-1].strip():
                pairs.append(
                    PreferencePair(
                        prompt, chosen[-1].strip(), rejected[-1].strip(), Provenance(name, line_no)
                    )
                )
    return pairs


@pytest.mark.slow
def test_smollm2_on_bundled_hh_rlhf(smollm2_tokenizer):
    """Every hh-rlhf train pair tokenises with the real template; lengths match the policy."""
    pairs = _hh_pairs("hh-harmless-train")
    assert len(pairs) > 1900
    lengths = token_lengths(pairs, smollm2_tokenizer)
    result = tokenize_pairs(pairs, smollm2_tokenizer, TruncationOptions(max_length=512))
    eot = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert result.counts["kept"] == len(pairs)
    for tokenized, (p, c, r) in zip(result.pairs, lengths, strict=True):
        assert max(len(tokenized.input_ids("chosen")), len(tokenized.input_ids("rejected"))) <= 512
        if not tokenized.truncated:
            assert (
                len(tokenized.prompt_ids),
                len(tokenized.chosen_ids),
                len(tokenized.rejected_ids),
            ) == (p, c, r)
            assert tokenized.chosen_ids[-1] == tokenized.rejected_ids[-1] == eot
