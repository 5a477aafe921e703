"""Chat-template rendering, the prompt-prefix property and the end-of-turn rule."""

from __future__ import annotations

import pytest

from prefalign.data.template import (
    TemplateMismatchError,
    batch_token_ids,
    check_prompt_prefix,
    encode_conversations,
    end_of_turn_token_id,
    labelled_response_end,
    render_full,
    render_prompt,
)
from prefalign.data.types import Message
from tiny import TINY_DEFAULT_SYSTEM, build_tiny_tokenizer

USER = Message("user", "What is the capital of France?")
MULTI_TURN = (
    Message("system", "You are terse."),
    Message("user", "Hello!"),
    Message("assistant", "Hello! How are you today?"),
    Message("user", "Tell me a joke about a cat."),
)

# Generation prompt "<|im_start|>assistant\n", but assistant turns rendered under another role
# name, so the prompt cannot be a prefix of prompt+response.
MISMATCHED_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<|im_start|>' + role + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_prompt_without_system_gets_the_template_default(tiny_tokenizer):
    assert render_prompt(tiny_tokenizer, [USER]) == (
        f"<|im_start|>system\n{TINY_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_full_text_is_prompt_plus_response_closed_by_end_of_turn(tiny_tokenizer):
    prompt = render_prompt(tiny_tokenizer, MULTI_TURN)
    full = render_full(tiny_tokenizer, MULTI_TURN, "Paris.")
    assert TINY_DEFAULT_SYSTEM not in prompt and prompt.startswith(
        "<|im_start|>system\nYou are terse."
    )
    assert full == prompt + "Paris.<|im_end|>\n"
    # dicts work as well as Message objects
    assert render_prompt(tiny_tokenizer, [m.to_dict() for m in MULTI_TURN]) == prompt


@pytest.mark.parametrize("messages", [(USER,), MULTI_TURN], ids=["single", "system+multi-turn"])
def test_prompt_ids_are_a_prefix_of_full_ids(tiny_tokenizer, messages):
    prompt_ids, full_ids = batch_token_ids(
        tiny_tokenizer,
        [render_prompt(tiny_tokenizer, messages), render_full(tiny_tokenizer, messages, "Paris.")],
    )
    check_prompt_prefix(tiny_tokenizer, prompt_ids, full_ids)
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    response = full_ids[len(prompt_ids) :]
    assert tiny_tokenizer.decode(response) == "Paris.<|im_end|>\n"
    assert response[: labelled_response_end(response, eot)][-1] == eot


def test_end_of_turn_token_is_found_from_the_template(tiny_tokenizer):
    assert end_of_turn_token_id(tiny_tokenizer) == tiny_tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )


def test_end_of_turn_falls_back_to_eos_when_the_template_writes_no_special_token():
    plain = build_tiny_tokenizer(
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    plain.eos_token = "<|endoftext|>"
    assert end_of_turn_token_id(plain) == plain.convert_tokens_to_ids("<|endoftext|>")


def test_labelled_response_ends_at_the_last_end_of_turn():
    """ids [5, 6, 2, 7] with eot 2 -> keep 3; no eot -> keep all; eot inside and at end -> all."""
    assert labelled_response_end([5, 6, 2, 7], 2) == 3
    assert labelled_response_end([5, 6, 7], 2) == 3
    assert labelled_response_end([5, 2, 6, 2], 2) == 4
    assert labelled_response_end([], 2) == 0


def test_template_that_breaks_the_prefix_raises_with_the_differing_tokens():
    tokenizer = build_tiny_tokenizer(MISMATCHED_TEMPLATE)
    prompt_ids, full_ids = batch_token_ids(
        tokenizer, [render_prompt(tokenizer, [USER]), render_full(tokenizer, [USER], "Paris.")]
    )
    with pytest.raises(TemplateMismatchError) as error:
        check_prompt_prefix(tokenizer, prompt_ids, full_ids, pair_id="data.jsonl:7")
    message = str(error.value)
    assert error.value.pair_id == "data.jsonl:7"
    assert "(pair data.jsonl:7)" in message
    # The first differing token is the role name right after the last <|im_start|>.
    start = max(
        i for i, t in enumerate(prompt_ids) if t == tokenizer.convert_tokens_to_ids("<|im_start|>")
    )
    assert error.value.position == start + 1
    assert f"first difference at token {start + 1}" in message
    prompt_line, full_line = (line for line in message.splitlines() if line.startswith("  prompt"))
    assert "'<|im_start|>' | 'a'" in prompt_line
    assert "'<|im_start|>' | 'm" in full_line


@pytest.mark.parametrize("response", ["  Paris.", "\n Paris.", "\n\nParis."])
def test_leading_whitespace_merging_across_the_seam_is_a_hard_error(tiny_tokenizer, response):
    """The texts are a prefix of each other, but "\\n" + " " merges into one token."""
    prompt = render_prompt(tiny_tokenizer, [USER])
    full = render_full(tiny_tokenizer, [USER], response)
    assert full.startswith(prompt)
    prompt_ids, full_ids = batch_token_ids(tiny_tokenizer, [prompt, full])
    with pytest.raises(TemplateMismatchError, match="strip leading whitespace from responses"):
        check_prompt_prefix(tiny_tokenizer, prompt_ids, full_ids, response=response)


def test_encode_conversations_equals_encoding_every_text_whole(tiny_tokenizer):
    """Covers the split path, a full text that does not extend its prompt, and a template-free
    prompt (no special token: encoded whole)."""
    prompts = [
        render_prompt(tiny_tokenizer, MULTI_TURN),
        render_prompt(tiny_tokenizer, [USER]),
        "plain prompt",
    ]
    chosen = [
        render_full(tiny_tokenizer, MULTI_TURN, "Paris."),
        "something else entirely",
        "plain prompt and more",
    ]
    rejected = [
        render_full(tiny_tokenizer, MULTI_TURN, " A cat.\n\nYes"),
        render_full(tiny_tokenizer, [USER], "  x"),
        "plain prompt!",
    ]
    prompt_ids, (chosen_ids, rejected_ids) = encode_conversations(
        tiny_tokenizer, prompts, (chosen, rejected)
    )
    assert prompt_ids == batch_token_ids(tiny_tokenizer, prompts)
    assert chosen_ids == batch_token_ids(tiny_tokenizer, chosen)
    assert rejected_ids == batch_token_ids(tiny_tokenizer, rejected)


@pytest.mark.slow
@pytest.mark.parametrize("messages", [(USER,), MULTI_TURN], ids=["single", "system+multi-turn"])
def test_smollm2_prefix_default_system_and_end_of_turn(smollm2_tokenizer, messages):
    tokenizer = smollm2_tokenizer
    prompt = render_prompt(tokenizer, messages)
    assert ("You are a helpful AI assistant named SmolLM" in prompt) == (len(messages) == 1)
    full = render_full(tokenizer, messages, "Paris.")
    assert full == prompt + "Paris.<|im_end|>\n"
    prompt_ids, full_ids = batch_token_ids(tokenizer, [prompt, full])
    check_prompt_prefix(tokenizer, prompt_ids, full_ids)
    eot = end_of_turn_token_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(eot) == "<|im_end|>"
    response = full_ids[len(prompt_ids) :]
    assert tokenizer.decode(response[: labelled_response_end(response, eot)]) == "Paris.<|im_end|>"


@pytest.mark.slow
def test_smollm2_leading_whitespace_mismatch_is_reported(smollm2_tokenizer):
    prompt_ids, full_ids = batch_token_ids(
        smollm2_tokenizer,
        [
            render_prompt(smollm2_tokenizer, [USER]),
            render_full(smollm2_tokenizer, [USER], "  Paris"),
        ],
    )
    with pytest.raises(TemplateMismatchError, match=r"'istant' \| '\\n ' ' Paris'"):
        check_prompt_prefix(smollm2_tokenizer, prompt_ids, full_ids, response="  Paris")


@pytest.mark.slow
@pytest.mark.parametrize("messages", [(USER,), MULTI_TURN], ids=["single", "system+multi-turn"])
def test_tiny_template_renders_like_smollm2(smollm2_tokenizer, tiny_tokenizer, messages):
    """The fast tests stand in for SmolLM2: same text apart from the default system prompt."""
    smollm2_default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    for render in (render_prompt, lambda tok, m: render_full(tok, m, "Paris.")):
        tiny_text = render(tiny_tokenizer, messages)
        assert render(smollm2_tokenizer, messages) == tiny_text.replace(
            TINY_DEFAULT_SYSTEM, smollm2_default
        )
