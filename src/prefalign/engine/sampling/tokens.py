"""Which tokens end a response and which pads a batch, from the tokenizer and its template."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefalign.data.template import end_of_turn_token_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The template's end-of-turn token, then the eos token when it differs."""
    ids = [end_of_turn_token_id(tokenizer)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad token, else the first stop token (padding is masked either way)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return stop_token_ids(tokenizer)[0]
