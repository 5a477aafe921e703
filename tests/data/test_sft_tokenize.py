"""Tokenising SFT conversations: assistant-only labels, `last`, system turns, the truncation
policy, the prefix check, huge records; with the tiny tokenizer and the real SmolLM2 one."""

from __future__ import annotations

import pytest

from prefalign.data.bundled import bundled_path
from prefalign.data.conversation import Conversation
from prefalign.data.sft_load import SftLoadOptions, load_conversations
from prefalign.data.sft_tokenize import TokenizedConversation, tokenize_conversations
from prefalign.data.template import TemplateMismatchError, render_prompt
from prefalign.data.tokenize import (
    IGNORE_INDEX,
    SequenceTooLongError,
    TruncationOptions,
    tokenize_pairs,
)
from prefalign.data.types import Message, PreferencePair, Provenance
from tiny import TINY_CHAT_TEMPLATE, TINY_DEFAULT_SYSTEM, build_tiny_tokenizer


def words(n: int) -> str:
    """n tokens in the tiny vocabulary: "you" then " you" are single tokens."""
    return "you" + " you" * (n - 1)


def chat(*contents: str, system: str | None = None, cid: str = "c1") -> Conversation:
    """Alternating user/assistant turns from `contents` (user first), after an optional system."""
    head = [Message("system", system)] if system is not None else []
    roles = ["user", "assistant"] * len(contents)
    body = [Message(role, text) for role, text in zip(roles, contents, strict=False)]
    return Conversation(tuple(head + body), Provenance("t.jsonl", 1, cid))


def spans(tokenized: TokenizedConversation) -> list[list[int]]:
    """The labelled runs of ids, in order (assistant turns never touch: user turns lie between)."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in tokenized.labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


def tokenize(conversations, tokenizer, max_length=512, **kw):
    return tokenize_conversations(conversations, tokenizer, max_length=max_length, **kw)


def dpo_ids(tokenizer, conversation: Conversation, index: int) -> tuple[int, ...]:
    """DPO's prompt + chosen ids for assistant message `index` answered after the ones before."""
    messages = conversation.messages
    pair = PreferencePair(messages[:index], messages[index].content, "other", Provenance("t", 1))
    (tokenized,) = tokenize_pairs([pair], tokenizer, TruncationOptions(max_length=4096)).pairs
    return tokenized.input_ids("chosen")


def assistant_texts(conversation: Conversation, eot: str = "<|im_end|>") -> list[str]:
    return [m.content + eot for m in conversation.messages if m.role == "assistant"]


@pytest.fixture(scope="module")
def prompt_len(tiny_tokenizer) -> int:
    """P: tokens of the rendered tiny prompt for one user message "hi" (default system too)."""
    return len(tiny_tokenizer(render_prompt(tiny_tokenizer, [Message("user", "hi")]),
                              add_special_tokens=False)["input_ids"])


# labels --------------------------------------------------------------------------------------

def test_every_assistant_turn_is_labelled_with_its_end_of_turn_token(tiny_tokenizer, prompt_len):
    """hi / you you / hi / you you you. Turn 1 occupies [P, P+3) (2 words + <|im_end|>); then
    "\\n<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n" is Q tokens of context and
    turn 2 occupies [P+3+Q, P+3+Q+4). The template's "\\n" after the last <|im_end|> is not kept."""
    tok = tiny_tokenizer
    conversation = chat("hi", words(2), "hi", words(3))
    result = tokenize([conversation], tok)
    (t,) = result.tokenized
    between = "\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    q = len(tok(between, add_special_tokens=False)["input_ids"])
    p = prompt_len
    ids = t.input_ids
    expected = ([IGNORE_INDEX] * p + list(ids[p : p + 3]) + [IGNORE_INDEX] * q
                + list(ids[p + 3 + q :]))
    assert len(ids) == p + 3 + q + 4
    assert t.labels == tuple(expected)
    assert [tok.decode(run) for run in spans(t)] == ["you you<|im_end|>", "you you you<|im_end|>"]
    assert tok.decode(list(ids)).startswith(f"<|im_start|>system\n{TINY_DEFAULT_SYSTEM}<|im_end|>")
    assert tok.decode(list(ids)).endswith("you you you<|im_end|>")
    assert (t.assistant_turns, t.num_targets, t.truncated) == (2, 7, False)
    assert result.counts == {
        "conversations_in": 1, "kept": 1, "dropped_overflow": 0, "truncated": 0,
        "exchanges_dropped": 0, "prompt_truncated": 0, "response_truncated": 0,
        "huge_text_capped": 0, "assistant_turns": 2, "target_tokens": 7,
    }


def test_each_turn_is_exactly_what_dpo_tokenises_for_that_answer(tiny_tokenizer):
    """The sequence through assistant turn i equals DPO's prompt + chosen for that turn."""
    conversation = chat("Hello!", "Hi there.", "Tell me a joke.",
                        "Why did the cat sit on the computer?", "Again?", "No.",
                        system="You are terse.")
    (t,) = tokenize([conversation], tiny_tokenizer).tokenized
    ends = []
    for index in (2, 4, 6):
        reference = dpo_ids(tiny_tokenizer, conversation, index)
        assert t.input_ids[: len(reference)] == reference
        ends.append(len(reference))
    assert len(t.input_ids) == ends[-1]
    assert [tiny_tokenizer.decode(run) for run in spans(t)] == assistant_texts(conversation)


def test_last_labels_only_the_last_turn_of_the_same_sequence(tiny_tokenizer):
    conversation = chat("Hello!", "Hi there.", "Tell me a joke.", "Why?")
    (every,) = tokenize([conversation], tiny_tokenizer, loss_on="all").tokenized
    (last,) = tokenize([conversation], tiny_tokenizer, loss_on="last").tokenized
    assert last.input_ids == every.input_ids
    assert [tiny_tokenizer.decode(run) for run in spans(last)] == ["Why?<|im_end|>"]
    assert (last.assistant_turns, every.assistant_turns) == (1, 2)
    assert spans(last) == spans(every)[-1:]


def test_system_turn_is_the_conversations_own_or_the_templates_default(tiny_tokenizer):
    own = chat("Hello!", "Hi.", system="You are terse.")
    default = chat("Hello!", "Hi.")
    (with_own, with_default) = tokenize([own, default], tiny_tokenizer).tokenized
    assert tiny_tokenizer.decode(list(with_own.input_ids)).startswith(
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!")
    assert TINY_DEFAULT_SYSTEM not in tiny_tokenizer.decode(list(with_own.input_ids))
    assert tiny_tokenizer.decode(list(with_default.input_ids)).startswith(
        f"<|im_start|>system\n{TINY_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHello!")
    assert with_default.input_ids == dpo_ids(tiny_tokenizer, default, 1)
    assert with_own.input_ids == dpo_ids(tiny_tokenizer, own, 2)


def test_num_targets_leaves_out_position_zero():
    """A causal LM predicts token t from the ones before it: a label at position 0 has no input."""
    t = TokenizedConversation("x", (5, 6, 7, 8), (5, IGNORE_INDEX, 7, 8), 1)
    assert t.num_targets == 2


# truncation ----------------------------------------------------------------------------------

def _exchanges(n: int, system: str = "Be brief.", cid: str = "long") -> Conversation:
    contents = [text for i in range(n) for text in (f"question {i}", words(10 + i))]
    return chat(*contents, system=system, cid=cid)


def _without_first(conversation: Conversation, count: int) -> Conversation:
    system, rest = conversation.messages[:1], conversation.messages[1:]
    return Conversation(system + rest[2 * count :], conversation.provenance)


@pytest.mark.parametrize("loss_on", ["all", "last"])
def test_earliest_exchanges_go_first_and_the_system_message_stays(tiny_tokenizer, loss_on):
    """Four exchanges; max_length is exactly the length of the last two (re-rendered), so two
    are dropped: the result is the two-exchange conversation tokenised whole. One token less
    and a third exchange goes."""
    conversation = _exchanges(4)
    kept_two = _without_first(conversation, 2)
    (whole,) = tokenize([kept_two], tiny_tokenizer, loss_on=loss_on).tokenized
    result = tokenize([conversation], tiny_tokenizer, max_length=len(whole.input_ids),
                      loss_on=loss_on)
    (cut,) = result.tokenized
    assert (cut.input_ids, cut.labels) == (whole.input_ids, whole.labels)
    assert cut.truncated and cut.assistant_turns == (2 if loss_on == "all" else 1)
    assert tiny_tokenizer.decode(list(cut.input_ids)).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nquestion 2")
    assert (result.counts["truncated"], result.counts["exchanges_dropped"]) == (1, 2)
    assert result.counts["response_truncated"] == result.counts["prompt_truncated"] == 0
    (tighter,) = tokenize([conversation], tiny_tokenizer, max_length=len(whole.input_ids) - 1,
                          loss_on=loss_on).tokenized
    (last_only,) = tokenize([_without_first(conversation, 3)], tiny_tokenizer,
                            loss_on=loss_on).tokenized
    assert tighter.input_ids == last_only.input_ids and tighter.assistant_turns == 1


def test_a_last_exchange_too_long_loses_the_end_of_its_reply(tiny_tokenizer, prompt_len):
    """Prompt P tokens, reply 3P words (+ <|im_end|>), max_length 2P: the prompt is kept whole
    (P <= 2P // 2), the reply keeps its first P tokens and so no <|im_end|>."""
    p = prompt_len
    conversation = chat("hi", words(3 * p), cid="long-reply")
    (whole,) = tokenize([conversation], tiny_tokenizer, max_length=10 * p).tokenized
    result = tokenize([conversation], tiny_tokenizer, max_length=2 * p)
    (cut,) = result.tokenized
    assert cut.input_ids == whole.input_ids[: 2 * p]
    assert cut.labels == (IGNORE_INDEX,) * p + cut.input_ids[p:]
    assert cut.input_ids[-1] != tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (result.counts["response_truncated"], result.counts["prompt_truncated"]) == (1, 0)
    assert result.warnings == [
        f"truncated 1 conversation(s) to max_length {2 * p} (first: long-reply): 0 earliest "
        "exchange(s) dropped, 1 last assistant turn(s) cut at the end, 0 prompt(s) cut at the start"
    ]


def test_a_long_prompt_keeps_its_end_and_leaves_the_reply_room(tiny_tokenizer, prompt_len):
    """User message of 3P words: its prompt is L > 2P tokens. A long reply gets half of
    max_length 2P (the prompt keeps its last P tokens); a 2-word reply (3 tokens) is kept whole
    and the prompt keeps its last 2P - 3."""
    p = prompt_len
    long_reply = chat(words(3 * p), words(3 * p), cid="a")
    short_reply = chat(words(3 * p), words(2), cid="b")
    whole = tokenize([long_reply, short_reply], tiny_tokenizer, max_length=20 * p).tokenized
    prompt_tokens = next(i for i, label in enumerate(whole[1].labels) if label != IGNORE_INDEX)
    result = tokenize([long_reply, short_reply], tiny_tokenizer, max_length=2 * p)
    cut_long, cut_short = result.tokenized
    assert cut_long.input_ids == whole[0].input_ids[prompt_tokens - p : prompt_tokens + p]
    assert cut_short.input_ids == whole[1].input_ids[prompt_tokens - (2 * p - 3) :]
    assert tiny_tokenizer.decode(spans(cut_short)[0]) == f"{words(2)}<|im_end|>"
    assert not tiny_tokenizer.decode(list(cut_long.input_ids)).startswith("<|im_start|>system")
    assert (result.counts["prompt_truncated"], result.counts["response_truncated"]) == (2, 1)


def test_drop_leaves_over_length_conversations_out(tiny_tokenizer, prompt_len):
    fits, long = chat("hi", words(3), cid="fits"), chat("hi", words(3 * prompt_len), cid="long")
    result = tokenize([fits, long], tiny_tokenizer, max_length=2 * prompt_len, on_overflow="drop")
    assert [t.conversation_id for t in result.tokenized] == ["fits"]
    assert (result.counts["dropped_overflow"], result.counts["kept"]) == (1, 1)
    assert result.counts["truncated"] == 0
    assert result.warnings == [
        f"dropped 1 conversation(s) over max_length {2 * prompt_len} (first: long)"]


def test_raise_names_the_conversation_and_its_length(tiny_tokenizer, prompt_len):
    long = chat("hi", words(3 * prompt_len), cid="long")
    with pytest.raises(SequenceTooLongError) as error:
        tokenize([long], tiny_tokenizer, max_length=2 * prompt_len, on_overflow="raise")
    assert str(error.value).startswith(
        f"conversation long: {4 * prompt_len + 1} tokens exceeds max_length {2 * prompt_len}; "
        "on_overflow='raise'")


def test_huge_reply_is_capped_by_characters_first(tiny_tokenizer):
    """A 5 MB reply: only its first 1024 * 16 characters reach the tokenizer; it is then cut to
    fit max_length 1024, with no <|im_end|>."""
    huge = words(1_300_000)
    result = tokenize([chat("hi", huge, cid="big")], tiny_tokenizer, max_length=1024)
    (cut,) = result.tokenized
    assert len(cut.input_ids) == 1024 and cut.truncated
    assert cut.input_ids[-1] != tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert result.warnings[0] == (f"conversation big: {len(huge) + 2:,} characters; kept the "
                                  "first 16,384 characters of its last assistant turn before "
                                  "tokenising")
    assert result.counts["huge_text_capped"] == result.counts["response_truncated"] == 1


def test_huge_history_loses_its_earliest_exchanges_by_characters(tiny_tokenizer):
    """Five exchanges of 8,021 characters (40,105 in all), budget 16 * 1024 = 16,384: the first
    three go before tokenising (2 x 8,021 fit). Two exchanges are still over 1024 tokens, so the
    policy drops one more, then keeps the end of the last prompt (2,000+ tokens)."""
    contents = [text for i in range(5) for text in (words(2000) + f" q{i}", words(5))]
    conversation = chat(*contents, cid="history")
    result = tokenize([conversation], tiny_tokenizer, max_length=1024, loss_on="last")
    (cut,) = result.tokenized
    assert result.warnings[0] == ("conversation history: 40,105 characters; dropped its first 3 "
                                  "exchange(s) before tokenising")
    assert result.counts["exchanges_dropped"] == 4 and result.counts["huge_text_capped"] == 1
    assert result.counts["prompt_truncated"] == 1 and result.counts["response_truncated"] == 0
    assert len(cut.input_ids) == 1024
    assert tiny_tokenizer.decode(list(cut.input_ids)).endswith(
        f" q4<|im_end|>\n<|im_start|>assistant\n{words(5)}<|im_end|>")


# the prefix check ----------------------------------------------------------------------------

def test_prefix_mismatch_is_an_error_naming_the_conversation_and_turn(tiny_tokenizer):
    """A reply starting with spaces merges with the header's newline: DPO's hard error. As
    context (loss_on="last", an earlier turn) the template's rendering is simply used."""
    conversation = chat("Hello!", "  leading spaces", "Again?", "Fine.", cid="ws")
    with pytest.raises(TemplateMismatchError, match=r"^conversation ws, assistant turn 1 "
                                                    r"\(message 1\): chat template") as error:
        tokenize([conversation], tiny_tokenizer)
    assert error.value.pair_id == "ws"
    assert "strip leading whitespace" in str(error.value)
    (context,) = tokenize([conversation], tiny_tokenizer, loss_on="last").tokenized
    assert [tiny_tokenizer.decode(run) for run in spans(context)] == ["Fine.<|im_end|>"]


def test_a_template_that_rewrites_earlier_turns_cannot_label_them():
    """This template writes earlier assistant turns as "(earlier)": turn 1 as labelled is not
    what the model sees before turn 2, so loss_on="all" refuses; "last" learns turn 2 only."""
    template = TINY_CHAT_TEMPLATE.replace(
        "message['content']",
        "(message['content'] if loop.last or message['role'] != 'assistant' else '(earlier)')")
    tok = build_tiny_tokenizer(template)
    conversation = chat("Hello!", "Hi there.", "Again?", "Fine.", cid="rewrites")
    with pytest.raises(TemplateMismatchError, match=r"^conversation rewrites, assistant turn 1 "
                                                    r"\(message 1\): the ids through this turn "
                                                    r"are not a prefix of the next turn's prompt"):
        tokenize([conversation], tok)
    (last,) = tokenize([conversation], tok, loss_on="last").tokenized
    assert "(earlier)" in tok.decode(list(last.input_ids))
    assert [tok.decode(run) for run in spans(last)] == ["Fine.<|im_end|>"]


def test_arguments_are_checked_naming_the_field(tiny_tokenizer):
    conversation = chat("hi", "ho")
    for bad in (1, 0, True, 8.0):
        with pytest.raises(ValueError, match="^max_length: "):
            tokenize([conversation], tiny_tokenizer, max_length=bad)
    with pytest.raises(ValueError, match="^loss_on: "):
        tokenize([conversation], tiny_tokenizer, loss_on="first")
    with pytest.raises(ValueError, match="^on_overflow: "):
        tokenize([conversation], tiny_tokenizer, on_overflow="cut")
    empty = tokenize([], tiny_tokenizer)
    assert empty.tokenized == [] and empty.counts["conversations_in"] == 0


# the real SmolLM2 tokenizer ------------------------------------------------------------------

def _bundled_conversations() -> list[Conversation]:
    sources = [bundled_path("examples"), bundled_path("hh-helpful-sample")]
    return load_conversations(sources, SftLoadOptions()).conversations


@pytest.mark.slow
def test_smollm2_labels_are_the_assistant_turns_of_bundled_data(smollm2_tokenizer):
    """Every labelled run decodes to an assistant turn's content plus <|im_end|>; conversations
    without a system message open with SmolLM2's default one; each turn's sequence is DPO's."""
    tok = smollm2_tokenizer
    conversations = _bundled_conversations()
    result = tokenize_conversations(conversations, tok, max_length=4096)
    assert result.counts["kept"] == len(conversations) > 300
    assert result.counts["truncated"] == 0
    for conversation, t in zip(conversations, result.tokenized, strict=True):
        assert [tok.decode(run) for run in spans(t)] == assistant_texts(conversation)
        text = tok.decode(list(t.input_ids))
        if conversation.system is None:
            assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named "
                                   "SmolLM, trained by Hugging Face<|im_end|>")
    sample = conversations[:40]
    for conversation, t in zip(sample, result.tokenized[:40], strict=True):
        last = max(i for i, m in enumerate(conversation.messages) if m.role == "assistant")
        assert t.input_ids == dpo_ids(tok, conversation, last)


@pytest.mark.slow
def test_smollm2_truncation_keeps_every_conversation_within_max_length(smollm2_tokenizer):
    conversations = _bundled_conversations()
    result = tokenize_conversations(conversations, smollm2_tokenizer, max_length=128)
    assert result.counts["kept"] == len(conversations)
    assert result.counts["truncated"] > 0 and result.counts["exchanges_dropped"] > 0
    for conversation, t in zip(conversations, result.tokenized, strict=True):
        assert len(t.input_ids) <= 128 and t.assistant_turns >= 1
        texts = assistant_texts(conversation)
        for run in spans(t):  # every label is an assistant turn, whole or cut at its end
            decoded = smollm2_tokenizer.decode(run)
            assert any(text.startswith(decoded) for text in texts), decoded
