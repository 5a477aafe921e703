"""Show one pair as the model will see it: rendered prompt, marked boundary, both responses."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from prefalign.data.tokenize import (
    TokenizedPair,
    TruncationOptions,
    tokenize_pairs,
)
from prefalign.data.types import PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

RULE = "────"


def marker(title: str) -> str:
    """A boundary line such as `──── chosen response (12 tokens) ────`."""
    return f"{RULE} {title} {RULE}"


def render_preview(
    pair: PreferencePair,
    tokenizer: PreTrainedTokenizerBase,
    options: TruncationOptions | None = None,
) -> str:
    """The pair's text as tokenised (after truncation), with token counts and truncation status.

    The text is decoded from the token ids the trainer uses, so it shows the template's system
    turn, special tokens and whatever truncation removed.
    """
    options = options or TruncationOptions()
    result = tokenize_pairs([pair], tokenizer, replace(options, on_overflow="truncate"))
    prompt_len, chosen_len, rejected_len = result.lengths[0]
    fitted = result.pairs[0]
    header = [
        f"pair {pair.provenance.pair_id}",
        f"tokens: prompt {prompt_len}, chosen {chosen_len}, rejected {rejected_len} "
        f"(max_length {options.max_length}, max_prompt_length {options.prompt_limit})",
        f"status: {_status(fitted, options)}",
        *(f"warning: {w}" for w in result.warnings),
    ]
    body = [
        marker(f"prompt ({len(fitted.prompt_ids)} tokens)"),
        _decode(tokenizer, fitted.prompt_ids),
        marker(f"chosen response ({len(fitted.chosen_ids)} tokens)"),
        _decode(tokenizer, fitted.chosen_ids),
        marker(f"rejected response ({len(fitted.rejected_ids)} tokens)"),
        _decode(tokenizer, fitted.rejected_ids),
        marker("end"),
    ]
    return "\n".join(header + body)


def _decode(tokenizer: PreTrainedTokenizerBase, ids: tuple[int, ...]) -> str:
    # The prompt ends with the header's newline already; strip it so the marker sits right below.
    return tokenizer.decode(list(ids), skip_special_tokens=False).removesuffix("\n")


def _status(fitted: TokenizedPair, options: TruncationOptions) -> str:
    if not fitted.truncated:
        return "fits"
    if options.on_overflow == "drop":
        return "over max_length: dropped (on_overflow='drop')"
    if options.on_overflow == "raise":
        return "over max_length: an error (on_overflow='raise')"
    cut = [
        name
        for name, flag in (
            ("prompt (start removed)", fitted.prompt_truncated),
            ("chosen (end removed)", fitted.chosen_truncated),
            ("rejected (end removed)", fitted.rejected_truncated),
        )
        if flag
    ]
    return "truncated: " + ", ".join(cut)
