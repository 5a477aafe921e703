"""Tokenise preference pairs with the chat template under an explicit truncation policy.

Policy, when the prompt plus the longer response exceeds `max_length` tokens:
1. keep the END of the prompt: cut it from the left to `max_prompt_length` tokens (the rendered
   prompt's tokens, so the template's leading system turn is the first thing lost);
2. then cut each response from the right to fit `max_length` (a cut response loses its
   end-of-turn token, so the model is never taught to stop where the text was cut).
`on_overflow` decides what happens to such a pair: "truncate" (the steps above), "drop" or
"raise". Counts come back in `TokenizeResult.counts`. A response's tokens end with the
template's end-of-turn token and nothing after it (see `prefalign.data.template`).

Huge records: before tokenising, a response keeps only its first `max_length * 16` characters
and a prompt its last, so megabytes in one field never go through the tokenizer whole; a
warning names the pair. Such a pair counts as over-length whatever its token count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from prefalign.data.template import (
    check_prompt_prefix,
    encode_conversations,
    end_of_turn_token_id,
    labelled_response_end,
    render_full,
    render_prompt,
)
from prefalign.data.types import Message, PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Names what tokenize_pairs makes of a pair; the token cache keys on it. Bump it whenever loading
# or tokenising would give other pairs, ids or truncation for the same input.
TOKENIZE_VERSION = "prefalign-tokenize-v1"
IGNORE_INDEX = -100  # label of positions the loss skips (prompt and padding)
# English runs ~4 characters per token, so max_length * 16 characters hold far more than
# max_length tokens: the text the cap removes would have been cut as tokens anyway.
CHARS_PER_TOKEN_CAP = 16
# token_lengths' default character cap: far above any max_length * CHARS_PER_TOKEN_CAP in use.
LENGTHS_MAX_CHARS = 1 << 18

OnOverflow = Literal["truncate", "drop", "raise"]
Side = Literal["chosen", "rejected"]


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class SequenceTooLongError(ValueError):
    """A pair needs truncation under on_overflow="raise"."""


DEFAULT_MAX_LENGTH = 512  # tokens of prompt + response: the one default (config, CLI, library)


@dataclass(frozen=True)
class TruncationOptions:
    """max_length: tokens of prompt + response. max_prompt_length: prompt tokens kept when a
    pair overflows (default max_length // 2). on_overflow: "truncate", "drop" or "raise"."""

    max_length: int = DEFAULT_MAX_LENGTH
    max_prompt_length: int | None = None
    on_overflow: OnOverflow = "truncate"

    def __post_init__(self) -> None:
        if not _is_positive_int(self.max_length) or self.max_length < 2:
            raise ValueError(f"max_length: must be an integer >= 2, got {self.max_length!r}")
        prompt = self.max_prompt_length
        if prompt is not None and not _is_positive_int(prompt):
            raise ValueError(f"max_prompt_length: must be a positive integer, got {prompt!r}")
        if prompt is not None and prompt >= self.max_length:
            raise ValueError(
                f"max_prompt_length: must be below max_length ({self.max_length}) to leave room "
                f"for the response, got {prompt}"
            )
        if self.on_overflow not in ("truncate", "drop", "raise"):
            raise ValueError(
                f"on_overflow: must be 'truncate', 'drop' or 'raise', got {self.on_overflow!r}"
            )

    @property
    def prompt_limit(self) -> int:
        """max_prompt_length, or its default max_length // 2."""
        return (
            self.max_prompt_length if self.max_prompt_length is not None else self.max_length // 2
        )

    @property
    def char_budget(self) -> int:
        """Characters of one response (or prompt) read before tokenising."""
        return self.max_length * CHARS_PER_TOKEN_CAP


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one pair. Responses end with the end-of-turn token unless they were cut."""

    pair_id: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    prompt_truncated: bool = False
    chosen_truncated: bool = False
    rejected_truncated: bool = False

    def response_ids(self, side: Side) -> tuple[int, ...]:
        return self.chosen_ids if side == "chosen" else self.rejected_ids

    def input_ids(self, side: Side) -> tuple[int, ...]:
        """Prompt followed by the chosen or rejected response."""
        return self.prompt_ids + self.response_ids(side)

    def labels(self, side: Side) -> tuple[int, ...]:
        """input_ids with the prompt masked by IGNORE_INDEX."""
        return (IGNORE_INDEX,) * len(self.prompt_ids) + self.response_ids(side)

    @property
    def truncated(self) -> bool:
        return self.prompt_truncated or self.chosen_truncated or self.rejected_truncated


@dataclass
class TokenizeResult:
    """Kept pairs in input order, dropped pair ids, and counts: pairs_in, kept, dropped,
    prompt_truncated, response_truncated (pairs with either response cut), huge_text_capped."""

    pairs: list[TokenizedPair]
    dropped: list[str]  # pair ids dropped under on_overflow="drop"
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    # (prompt, chosen, rejected) tokens of every input pair before truncation, in input order
    lengths: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class _Encoded:
    """A pair's untruncated ids (after the character cap), before the policy is applied."""

    pair_id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    prompt_capped: bool
    chosen_capped: bool
    rejected_capped: bool

    @property
    def capped(self) -> bool:
        return self.prompt_capped or self.chosen_capped or self.rejected_capped


def _cap_response(text: str, budget: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= budget else (text[:budget], True)


def _cap_prompt(messages: Sequence[Message], budget: int) -> tuple[tuple[Message, ...], bool]:
    """Keep the last `budget` characters of the prompt's contents, every message (and its role)
    kept so the template renders the same turns; earlier contents shrink, possibly to ""."""
    if sum(len(m.content) for m in messages) <= budget:
        return tuple(messages), False
    kept: list[Message] = []
    remaining = budget
    for message in reversed(messages):
        content = message.content[max(0, len(message.content) - remaining) :] if remaining else ""
        remaining -= len(content)
        kept.append(Message(message.role, content))
    return tuple(reversed(kept)), True


def _render(
    pair: PreferencePair, tokenizer: PreTrainedTokenizerBase, char_budget: int, warnings: list[str]
) -> tuple[str, str, str, tuple[bool, bool, bool]]:
    """Prompt, prompt+chosen and prompt+rejected texts after the character cap, and its flags."""
    prompt, prompt_capped = _cap_prompt(pair.prompt, char_budget)
    chosen, chosen_capped = _cap_response(pair.chosen, char_budget)
    rejected, rejected_capped = _cap_response(pair.rejected, char_budget)
    for name, capped, size in (
        ("prompt", prompt_capped, sum(len(m.content) for m in pair.prompt)),
        ("chosen", chosen_capped, len(pair.chosen)),
        ("rejected", rejected_capped, len(pair.rejected)),
    ):
        if capped:
            kept = "last" if name == "prompt" else "first"
            _warn(
                warnings,
                f"pair {pair.provenance.pair_id}: {name} is {size:,} characters; "
                f"kept its {kept} {char_budget:,} before tokenising",
            )
    return (
        render_prompt(tokenizer, prompt),
        render_full(tokenizer, prompt, chosen),
        render_full(tokenizer, prompt, rejected),
        (prompt_capped, chosen_capped, rejected_capped),
    )


def _encode_pairs(
    pairs: Sequence[PreferencePair],
    tokenizer: PreTrainedTokenizerBase,
    eot_id: int,
    char_budget: int,
    warnings: list[str],
) -> list[_Encoded]:
    """Render every pair once, batch-encode, check the prompt prefix and split off responses."""
    rendered = [_render(pair, tokenizer, char_budget, warnings) for pair in pairs]
    if not rendered:
        return []
    prompts, chosen_texts, rejected_texts, _ = zip(*rendered, strict=True)
    prompt_ids, (chosen_full, rejected_full) = encode_conversations(
        tokenizer, prompts, (chosen_texts, rejected_texts)
    )
    encoded = []
    for i, pair in enumerate(pairs):
        pair_id, n = pair.provenance.pair_id, len(prompt_ids[i])
        responses = []
        for full, text in ((chosen_full[i], pair.chosen), (rejected_full[i], pair.rejected)):
            check_prompt_prefix(tokenizer, prompt_ids[i], full, pair_id=pair_id, response=text)
            response = full[n:]
            responses.append(response[: labelled_response_end(response, eot_id)])
        encoded.append(_Encoded(pair_id, prompt_ids[i], *responses, *rendered[i][3]))
    return encoded


def _warn(warnings: list[str], message: str) -> None:
    # One line per pair only at debug level: tokenize_pairs logs a single summary.
    warnings.append(message)
    logger.debug(message)


def _cut_response(
    ids: list[int], budget: int, capped: bool, eot_id: int
) -> tuple[tuple[int, ...], bool]:
    """Cut a response to `budget` tokens; a character-capped one also loses its end-of-turn."""
    if capped and ids and ids[-1] == eot_id:
        ids = ids[:-1]
    return tuple(ids[:budget]), capped or len(ids) > budget


def _apply_policy(item: _Encoded, options: TruncationOptions, eot_id: int) -> TokenizedPair | None:
    """The pair as it fits max_length, or None under "drop" when it does not fit."""
    longest = max(len(item.chosen_ids), len(item.rejected_ids))
    if not item.capped and len(item.prompt_ids) + longest <= options.max_length:
        return TokenizedPair(
            item.pair_id, tuple(item.prompt_ids), tuple(item.chosen_ids), tuple(item.rejected_ids)
        )
    if options.on_overflow == "drop":
        return None
    if options.on_overflow == "raise":
        capped = " (a field exceeds the character cap)" if item.capped else ""
        raise SequenceTooLongError(
            f"pair {item.pair_id}: prompt {len(item.prompt_ids)} + longest response {longest} "
            f"tokens exceeds max_length {options.max_length}{capped}; on_overflow='raise' "
            f"(use 'truncate' or 'drop', or raise max_length)"
        )
    kept_prompt = min(len(item.prompt_ids), options.prompt_limit)
    budget = options.max_length - kept_prompt
    chosen, chosen_cut = _cut_response(item.chosen_ids, budget, item.chosen_capped, eot_id)
    rejected, rejected_cut = _cut_response(item.rejected_ids, budget, item.rejected_capped, eot_id)
    return TokenizedPair(
        item.pair_id,
        tuple(item.prompt_ids[len(item.prompt_ids) - kept_prompt :]),
        chosen,
        rejected,
        prompt_truncated=item.prompt_capped or kept_prompt < len(item.prompt_ids),
        chosen_truncated=chosen_cut,
        rejected_truncated=rejected_cut,
    )


def tokenize_pairs(
    pairs: Sequence[PreferencePair],
    tokenizer: PreTrainedTokenizerBase,
    options: TruncationOptions | None = None,
) -> TokenizeResult:
    """Tokenise pairs with the chat template and apply the truncation policy (module docstring).

    Raises TemplateMismatchError when a prompt's ids are not a prefix of prompt+response ids,
    and SequenceTooLongError for an over-length pair under on_overflow="raise".
    """
    options = options or TruncationOptions()
    warnings: list[str] = []
    eot_id = end_of_turn_token_id(tokenizer)
    encoded = _encode_pairs(pairs, tokenizer, eot_id, options.char_budget, warnings)
    if warnings:
        logger.info("%d over-long text field(s) capped before tokenising (first: %s)",
                    len(warnings), warnings[0])
    kept: list[TokenizedPair] = []
    dropped: list[str] = []
    for item in encoded:
        fitted = _apply_policy(item, options, eot_id)
        if fitted is None:
            dropped.append(item.pair_id)
        else:
            kept.append(fitted)
    counts = {
        "pairs_in": len(pairs),
        "kept": len(kept),
        "dropped": len(dropped),
        "prompt_truncated": sum(p.prompt_truncated for p in kept),
        "response_truncated": sum(p.chosen_truncated or p.rejected_truncated for p in kept),
        "huge_text_capped": sum(item.capped for item in encoded),
    }
    lengths = [(len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)) for e in encoded]
    return TokenizeResult(kept, dropped, counts, warnings, lengths)


def token_lengths(
    pairs: Sequence[PreferencePair],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_chars: int = LENGTHS_MAX_CHARS,
) -> list[tuple[int, int, int]]:
    """Untruncated (prompt, chosen, rejected) token counts per pair, as tokenize_pairs counts
    them (responses up to their end-of-turn token). Fields longer than `max_chars` characters
    are capped first (with a warning), so their counts are lower bounds."""
    eot_id = end_of_turn_token_id(tokenizer)
    encoded = _encode_pairs(pairs, tokenizer, eot_id, max_chars, [])
    return [(len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)) for e in encoded]
