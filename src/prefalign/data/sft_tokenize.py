"""Tokenise SFT conversations: labels on assistant turns only, under a truncation policy.

Labels are the token id where the loss scores a token and IGNORE_INDEX (-100) elsewhere (system,
user and template tokens, and assistant turns left as context). loss_on="all" labels every
assistant turn, "last" only the last one. How turns are encoded and checked: `sft_encode`.

Policy, when a conversation exceeds `max_length` tokens (on_overflow="truncate"):
1. drop whole earliest user/assistant exchanges, keeping a system message, until it fits; the
   shorter conversation is rendered again by the template (never spliced token by token);
2. if the last exchange alone is too long, the last assistant turn is cut at its end (so it
   loses its end-of-turn token and the model is not taught to stop where the text was cut); its
   prompt (system, user turn, header) keeps its last tokens, as many as the reply leaves room
   for but at least max_length // 2 (DPO's default prompt budget), so a prompt longer than that
   loses its start, the template's system turn first, as in DPO.
"drop" leaves such conversations out; "raise" raises SequenceTooLongError naming the first.
With loss_on="all", `assistant_turns` counts the labelled turns that were kept.

Huge records, as in DPO: a conversation over max_length * 16 characters loses its earliest
exchanges at the character level first, and a last exchange still over it keeps the prompt's last
and the reply's first max_length * 16 characters; a warning names it and it counts as over-length.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prefalign.data.conversation import Conversation
from prefalign.data.sft_encode import Encoded, LossOn, encode
from prefalign.data.sft_truncate import CharCap, cap_characters, cut_to_fit, fit_by_dropping
from prefalign.data.template import end_of_turn_token_id
from prefalign.data.tokenize import CHARS_PER_TOKEN_CAP, IGNORE_INDEX, SequenceTooLongError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

OnOverflow = Literal["truncate", "drop", "raise"]


@dataclass(frozen=True)
class TokenizedConversation:
    """One conversation as the model sees it; labels mark the scored assistant tokens."""

    conversation_id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # token id where scored, IGNORE_INDEX elsewhere
    assistant_turns: int  # assistant turns that carry labels
    truncated: bool = False

    @property
    def num_targets(self) -> int:
        """Labelled positions a causal LM predicts: position 0 has no previous token."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


@dataclass(frozen=True)
class SftTokenizeResult:
    """Kept conversations in input order. counts: conversations_in, kept, dropped_overflow,
    truncated, exchanges_dropped, prompt_truncated, response_truncated, huge_text_capped,
    assistant_turns and target_tokens (of the kept ones)."""

    tokenized: list[TokenizedConversation]
    counts: dict[str, int]
    warnings: list[str]


@dataclass
class _Item:
    """One conversation on its way through the policy."""

    conversation_id: str
    cap: CharCap
    encoded: Encoded
    exchanges_dropped: int = 0
    prompt_cut: bool = False
    reply_cut: bool = False
    dropped: bool = False

    @property
    def truncated(self) -> bool:
        return (self.cap.changed or self.exchanges_dropped > 0 or self.prompt_cut
                or self.reply_cut)


def tokenize_conversations(
    conversations: Sequence[Conversation],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    loss_on: LossOn = "all",
    on_overflow: OnOverflow = "truncate",
) -> SftTokenizeResult:
    """Tokenise with the chat template, label assistant turns, apply the policy (module doc).

    Raises TemplateMismatchError when a turn's prompt ids are not a prefix of the ids through
    that turn, and SequenceTooLongError for an over-length conversation under "raise".
    """
    _check_arguments(max_length, loss_on, on_overflow)
    eot_id = end_of_turn_token_id(tokenizer)
    budget = max_length * CHARS_PER_TOKEN_CAP
    caps = [cap_characters(c.messages, budget) for c in conversations]
    ids = [c.conversation_id for c in conversations]
    encoded = encode(tokenizer, [(i, cap.messages) for i, cap in zip(ids, caps, strict=True)],
                     loss_on, eot_id)
    items = [_Item(i, cap, enc) for i, cap, enc in zip(ids, caps, encoded, strict=True)]
    over = [item for item in items if item.cap.changed or len(item.encoded.input_ids) > max_length]
    if over and on_overflow == "raise":
        raise SequenceTooLongError(_too_long(over[0], max_length))
    if on_overflow == "truncate":
        _truncate(tokenizer, over, max_length, loss_on, eot_id)
    for item in over:
        item.dropped = on_overflow == "drop"
    kept = [_tokenized(item) for item in items if not item.dropped]
    warnings = [w for item in items for w in item.cap.warnings(item.conversation_id, budget)]
    warnings += _policy_warnings(over, on_overflow, max_length)
    for warning in warnings:
        logger.debug(warning)
    return SftTokenizeResult(kept, _counts(items, kept), warnings)


def _check_arguments(max_length: object, loss_on: object, on_overflow: object) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length: must be an integer >= 2, got {max_length!r}")
    if loss_on not in ("all", "last"):
        raise ValueError(f"loss_on: must be 'all' or 'last', got {loss_on!r}")
    if on_overflow not in ("truncate", "drop", "raise"):
        raise ValueError(
            f"on_overflow: must be 'truncate', 'drop' or 'raise', got {on_overflow!r}"
        )


def _truncate(
    tokenizer: PreTrainedTokenizerBase,
    over: list[_Item],
    max_length: int,
    loss_on: LossOn,
    eot_id: int,
) -> None:
    """Steps 1 and 2 of the policy, in place on the over-length items."""
    entries = [(item.cap.messages, len(item.encoded.input_ids), item.encoded.reply_length)
               for item in over]
    fitted = fit_by_dropping(tokenizer, entries, max_length)
    shortened = [(item, dropped, messages)
                 for item, (dropped, messages) in zip(over, fitted, strict=True) if dropped]
    encoded = encode(
        tokenizer, [(item.conversation_id, messages) for item, _, messages in shortened],
        loss_on, eot_id,
    )
    for (item, dropped, _), enc in zip(shortened, encoded, strict=True):
        item.encoded, item.exchanges_dropped = enc, dropped
    for item in over:
        item.encoded, item.prompt_cut, item.reply_cut = cut_to_fit(
            item.encoded, max_length, eot_id, item.cap.reply_capped
        )


def _tokenized(item: _Item) -> TokenizedConversation:
    ids = item.encoded.input_ids
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in item.encoded.spans:
        labels[start:end] = ids[start:end]
    return TokenizedConversation(
        item.conversation_id, ids, tuple(labels), len(item.encoded.spans), item.truncated
    )


def _too_long(item: _Item, max_length: int) -> str:
    capped = " (and over the character cap)" if item.cap.changed else ""
    return (f"conversation {item.conversation_id}: {len(item.encoded.input_ids)} tokens exceeds "
            f"max_length {max_length}{capped}; on_overflow='raise' (use 'truncate' or 'drop', "
            "or raise max_length)")


def _policy_warnings(over: list[_Item], on_overflow: OnOverflow, max_length: int) -> list[str]:
    if not over:
        return []
    first = over[0].conversation_id
    if on_overflow == "drop":
        return [f"dropped {len(over)} conversation(s) over max_length {max_length} "
                f"(first: {first})"]
    return [f"truncated {len(over)} conversation(s) to max_length {max_length} (first: "
            f"{first}): {sum(i.exchanges_dropped for i in over)} earliest exchange(s) dropped, "
            f"{sum(i.reply_cut for i in over)} last assistant turn(s) cut at the end, "
            f"{sum(i.prompt_cut for i in over)} prompt(s) cut at the start"]


def _counts(items: list[_Item], kept: list[TokenizedConversation]) -> dict[str, int]:
    truncated = [item for item in items if item.truncated and not item.dropped]
    return {
        "conversations_in": len(items),
        "kept": len(kept),
        "dropped_overflow": sum(item.dropped for item in items),
        "truncated": len(truncated),
        "exchanges_dropped": sum(i.exchanges_dropped + i.cap.exchanges_dropped for i in truncated),
        "prompt_truncated": sum(i.prompt_cut or i.cap.prompt_capped for i in truncated),
        "response_truncated": sum(i.reply_cut for i in truncated),
        "huge_text_capped": sum(item.cap.changed for item in items),
        "assistant_turns": sum(t.assistant_turns for t in kept),
        "target_tokens": sum(t.num_targets for t in kept),
    }
