"""The steps of the SFT truncation policy (described in `prefalign.data.sft_tokenize`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefalign.data.sft_encode import Encoded
from prefalign.data.template import batch_token_ids, render_prompt
from prefalign.data.tokenize import _cap_prompt  # DPO's prompt cap, so both keep the same text
from prefalign.data.types import Message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = tuple[Message, ...]


@dataclass(frozen=True)
class CharCap:
    """A conversation after the character cap, and what the cap changed."""

    messages: Messages
    total_chars: int
    exchanges_dropped: int = 0
    prompt_capped: bool = False
    reply_capped: bool = False

    @property
    def changed(self) -> bool:
        return self.exchanges_dropped > 0 or self.prompt_capped or self.reply_capped

    def warnings(self, conversation_id: str, budget: int) -> list[str]:
        if not self.changed:
            return []
        done = [f"dropped its first {self.exchanges_dropped} exchange(s)"] if (
            self.exchanges_dropped) else []
        if self.prompt_capped:
            done.append(f"kept the last {budget:,} characters of its last prompt")
        if self.reply_capped:
            done.append(f"kept the first {budget:,} characters of its last assistant turn")
        return [f"conversation {conversation_id}: {self.total_chars:,} characters; "
                f"{', '.join(done)} before tokenising"]


def split_exchanges(messages: Sequence[Message]) -> tuple[Messages, list[Messages]]:
    """(the system message if any, the user/assistant exchanges in order)."""
    system = tuple(messages[:1]) if messages and messages[0].role == "system" else ()
    rest = messages[len(system) :]
    return system, [tuple(rest[i : i + 2]) for i in range(0, len(rest), 2)]


def drop_exchanges(messages: Sequence[Message], count: int) -> Messages:
    """The conversation without its first `count` exchanges; a system message stays."""
    system, exchanges = split_exchanges(messages)
    return system + tuple(m for exchange in exchanges[count:] for m in exchange)


def cap_characters(messages: Messages, budget: int) -> CharCap:
    """Keep at most `budget` characters of content so huge records never reach the tokenizer
    whole: earliest exchanges go first; a last exchange still over keeps the end of its prompt
    and the start of its reply."""
    sizes = [len(m.content) for m in messages]
    total = sum(sizes)
    if total <= budget:
        return CharCap(messages, total)
    system, exchanges = split_exchanges(messages)
    remaining = total
    dropped = 0
    while dropped < len(exchanges) - 1 and remaining > budget:
        remaining -= sum(len(m.content) for m in exchanges[dropped])
        dropped += 1
    kept = drop_exchanges(messages, dropped)
    if remaining <= budget:
        return CharCap(kept, total, dropped)
    prompt, prompt_capped = _cap_prompt(kept[:-1], budget)
    reply = kept[-1].content
    capped = (*prompt, Message("assistant", reply[:budget]))
    return CharCap(capped, total, dropped, prompt_capped, len(reply) > budget)


def fit_by_dropping(
    tokenizer: PreTrainedTokenizerBase,
    entries: Sequence[tuple[Messages, int, int]],
    max_length: int,
) -> list[tuple[int, Messages]]:
    """Fewest earliest exchanges to drop so each conversation fits, and what is left.

    entries: (messages, current length, last reply length) per conversation. A conversation
    that fits drops none; one whose last exchange alone is too long drops all but that one.
    The length after dropping d is the rendered prompt of the last turn plus the reply, which
    does not change; it shrinks as d grows, so a binary search finds d, all conversations
    tokenised together in each round (about log2(exchanges) rounds).
    """
    low = [1] * len(entries)
    high = [len(split_exchanges(m)[1]) for m, _, _ in entries]  # "none fits" when reached
    for i, (_, length, _) in enumerate(entries):
        if length <= max_length:
            low[i] = high[i] = 0
    while active := [i for i in range(len(entries)) if low[i] < high[i]]:
        middles = {i: (low[i] + high[i]) // 2 for i in active}
        texts = [render_prompt(tokenizer, drop_exchanges(entries[i][0], middles[i])[:-1])
                 for i in active]
        for i, prompt in zip(active, batch_token_ids(tokenizer, texts), strict=True):
            if len(prompt) + entries[i][2] <= max_length:
                high[i] = middles[i]
            else:
                low[i] = middles[i] + 1
    exchanges = [len(split_exchanges(m)[1]) for m, _, _ in entries]
    counts = [min(d, n - 1) for d, n in zip(low, exchanges, strict=True)]
    return [(d, drop_exchanges(m, d)) for d, (m, _, _) in zip(counts, entries, strict=True)]


def cut_to_fit(
    encoded: Encoded, max_length: int, eot_id: int, reply_capped: bool
) -> tuple[Encoded, bool, bool]:
    """(the conversation within max_length, prompt cut at its start, reply cut at its end).

    A reply the character cap shortened first loses its end-of-turn token: its text was cut.
    """
    ids, spans = list(encoded.input_ids), list(encoded.spans)
    reply_cut = False
    if reply_capped and ids and ids[-1] == eot_id:
        ids.pop()
        spans[-1] = (spans[-1][0], len(ids))
        reply_cut = True
    prompt_length, reply_length = encoded.last_prompt_length, len(ids) - encoded.last_prompt_length
    if len(ids) <= max_length:
        return _window(encoded, ids, spans, 0, len(ids)), False, reply_cut
    kept_prompt = min(prompt_length, max(max_length - reply_length, max_length // 2))
    start = prompt_length - kept_prompt
    stop = prompt_length + min(reply_length, max_length - kept_prompt)
    return _window(encoded, ids, spans, start, stop), start > 0, reply_cut or stop < len(ids)


def _window(
    encoded: Encoded, ids: list[int], spans: list[tuple[int, int]], start: int, stop: int
) -> Encoded:
    """ids[start:stop], with the spans clipped to it (a span left empty is no labelled turn)."""
    clipped = [(max(s, start) - start, min(e, stop) - start) for s, e in spans]
    return Encoded(
        encoded.conversation_id,
        tuple(ids[start:stop]),
        tuple((s, e) for s, e in clipped if s < e),
        encoded.last_prompt_length - start,
    )
