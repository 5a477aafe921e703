"""Encode conversations with the chat template: token ids and the spans of assistant turns.

Each labelled assistant turn is encoded the way DPO encodes a response (`prefalign.data.template`):
the conversation up to the user turn before it, rendered with the open assistant header
(`render_prompt`), must tokenise to an exact prefix of the conversation rendered through that
turn (`render_full`); otherwise TemplateMismatchError, never a silent slice. The turn's span is
its content tokens plus the end-of-turn token, not the separator the template writes after it.
With several labelled turns they are chained: the ids through turn i must be an exact prefix of
turn i+1's prompt ids, so the one sequence (the last turn's prompt and span) holds every span
exactly where the template writes it. The system turn is whatever the template writes, as in
DPO: the conversation's own system message, else the template's default (SmolLM2's).

Cost: every labelled turn's prompt is tokenised whole, so loss_on="all" tokenises about
(turns + 1) / 2 times the text of loss_on="last"; all texts go through one batch call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prefalign.data.template import (
    TemplateMismatchError,
    check_prompt_prefix,
    encode_conversations,
    labelled_response_end,
    render_full,
    render_prompt,
)
from prefalign.data.types import Message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LossOn = Literal["all", "last"]


@dataclass(frozen=True)
class Encoded:
    """One conversation's ids, its labelled [start, end) spans in order, and where the last
    assistant turn's content starts (the length of its prompt)."""

    conversation_id: str
    input_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    last_prompt_length: int

    @property
    def reply_length(self) -> int:
        """Tokens of the last assistant turn as encoded (content + end-of-turn token)."""
        return len(self.input_ids) - self.last_prompt_length


@dataclass(frozen=True)
class _Turn:
    """One labelled assistant turn: its conversation and its message index."""

    item: int
    index: int


def assistant_indices(messages: Sequence[Message]) -> list[int]:
    return [i for i, m in enumerate(messages) if m.role == "assistant"]


def encode(
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[str, Sequence[Message]]],
    loss_on: LossOn,
    eot_id: int,
) -> list[Encoded]:
    """(conversation id, messages) -> Encoded, every labelled turn checked (module docstring)."""
    turns = [
        _Turn(item, index)
        for item, (_, messages) in enumerate(items)
        for index in _labelled(assistant_indices(messages), loss_on)
    ]
    if not turns:
        return []
    prompts = [render_prompt(tokenizer, items[t.item][1][: t.index]) for t in turns]
    fulls = [_render_through(tokenizer, items[t.item][1], t.index) for t in turns]
    prompt_ids, (full_ids,) = encode_conversations(tokenizer, prompts, (fulls,))
    per_item: list[list[tuple[list[int], list[int]]]] = [[] for _ in items]
    for turn, prompt, full in zip(turns, prompt_ids, full_ids, strict=True):
        conversation_id, messages = items[turn.item]
        content = messages[turn.index].content
        _check(tokenizer, prompt, full, conversation_id, _where(messages, turn.index), content)
        reply = full[len(prompt) :]
        per_item[turn.item].append((prompt, reply[: labelled_response_end(reply, eot_id)]))
    return [
        _chain(tokenizer, conversation_id, messages, per_item[item], loss_on)
        for item, (conversation_id, messages) in enumerate(items)
    ]


def _labelled(indices: list[int], loss_on: LossOn) -> list[int]:
    return indices if loss_on == "all" else indices[-1:]


def _render_through(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], index: int
) -> str:
    return render_full(tokenizer, messages[:index], messages[index].content)


def _where(messages: Sequence[Message], index: int) -> str:
    number = sum(m.role == "assistant" for m in messages[: index + 1])
    return f"assistant turn {number} (message {index})"


def _chain(
    tokenizer: PreTrainedTokenizerBase,
    conversation_id: str,
    messages: Sequence[Message],
    turns: list[tuple[list[int], list[int]]],
    loss_on: LossOn,
) -> Encoded:
    """The last turn's prompt + span, with each earlier span checked to sit inside it."""
    spans = []
    indices = _labelled(assistant_indices(messages), loss_on)
    for number, (prompt, span) in enumerate(turns):
        spans.append((len(prompt), len(prompt) + len(span)))
        if number + 1 < len(turns):
            where = (f"{_where(messages, indices[number])}: the ids through this turn are not a "
                     "prefix of the next turn's prompt")
            _check(tokenizer, prompt + span, turns[number + 1][0], conversation_id, where)
    last_prompt, last_span = turns[-1]
    return Encoded(conversation_id, tuple(last_prompt + last_span), tuple(spans), len(last_prompt))


def _check(
    tokenizer: PreTrainedTokenizerBase,
    prefix: Sequence[int],
    ids: Sequence[int],
    conversation_id: str,
    where: str,
    response: str | None = None,
) -> None:
    """DPO's prefix check, its error naming the conversation and the turn."""
    try:
        check_prompt_prefix(tokenizer, prefix, ids, response=response)
    except TemplateMismatchError as error:
        raise TemplateMismatchError(
            f"conversation {conversation_id}, {where}: {error}",
            position=error.position,
            pair_id=conversation_id,
        ) from None
