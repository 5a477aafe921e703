"""Completions tokenised exactly as DPO tokenises a response: the prompt rendered with the chat
template (open assistant header), then the response up to and including the end-of-turn token.

Each completion goes in as one side of a `PreferencePair`, so `tokenize_pairs` (the training
path: template, prefix check, truncation policy) does the work. `pair_up` puts two completions
of the same prompt in one pair, so that a pair scorer computes that prompt once for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prefalign.data.tokenize import TokenizedPair, TruncationOptions, tokenize_pairs
from prefalign.data.types import PreferencePair, Provenance
from prefalign.judges.base import Completions

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SOURCE = "judge"


def pair_up(completions: Completions) -> list[tuple[int, int]]:
    """Indices of completions two by two among those with the same prompt, in order of first
    appearance; a prompt's odd one out is paired with itself."""
    groups: dict[tuple, list[int]] = {}
    for index, prompt in enumerate(completions.prompts):
        groups.setdefault(tuple((m.role, m.content) for m in prompt), []).append(index)
    pairs = []
    for indices in groups.values():
        pairs += [(indices[i], indices[min(i + 1, len(indices) - 1)])
                  for i in range(0, len(indices), 2)]
    return pairs


def tokenize_completion_pairs(
    tokenizer: PreTrainedTokenizerBase,
    completions: Completions,
    pairs: Sequence[tuple[int, int]],
    options: TruncationOptions,
) -> list[TokenizedPair]:
    """Pair (a, b) as prompt a with chosen text a and rejected text b. `options` should
    truncate (not drop), so that every completion gets a score."""
    built = [
        PreferencePair(tuple(completions.prompts[a]), completions.texts[a], completions.texts[b],
                       Provenance(SOURCE, a))
        for a, b in pairs
    ]
    tokenized = tokenize_pairs(built, tokenizer, options).pairs
    if len(tokenized) != len(built):
        raise ValueError("tokenize_completion_pairs: truncation dropped completions; use "
                         "on_overflow='truncate'")
    return tokenized
