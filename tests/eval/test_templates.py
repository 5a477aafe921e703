"""Alternate prompt templates: same responses and end-of-turn labels, other text around them."""

from __future__ import annotations

import pytest

from prefalign.data.template import end_of_turn_token_id, render_prompt
from prefalign.data.tokenize import TruncationOptions, tokenize_pairs
from prefalign.data.types import Message, PreferencePair, Provenance
from prefalign.eval.templates import ALTERNATE_TEMPLATES, with_template

PAIR = PreferencePair(
    (Message("user", "How do I boil an egg?"), Message("assistant", "In water."),
     Message("user", "For how long?")),
    "About nine minutes for a hard yolk.", "Forever.", Provenance("t", 1))


@pytest.mark.parametrize("name", sorted(ALTERNATE_TEMPLATES))
def test_alternate_template_keeps_responses_and_end_of_turn(tiny_tokenizer, name):
    alternate = with_template(tiny_tokenizer, name)
    assert alternate.chat_template != tiny_tokenizer.chat_template
    assert tiny_tokenizer.chat_template == tiny_tokenizer.chat_template  # original untouched
    eot = end_of_turn_token_id(tiny_tokenizer)
    assert end_of_turn_token_id(alternate) == eot
    default = tokenize_pairs([PAIR], tiny_tokenizer, TruncationOptions(256)).pairs[0]
    other = tokenize_pairs([PAIR], alternate, TruncationOptions(256)).pairs[0]
    # the response tokens (ending with the end-of-turn token) are the same, the prompts differ
    assert other.chosen_ids == default.chosen_ids and other.chosen_ids[-1] == eot
    assert other.rejected_ids == default.rejected_ids
    assert other.prompt_ids != default.prompt_ids
    text = render_prompt(alternate, PAIR.prompt)
    assert "How do I boil an egg?" in text and "For how long?" in text
    assert "<|im_start|>" not in text


def test_unknown_template_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="plain"):
        with_template(tiny_tokenizer, "nope")
