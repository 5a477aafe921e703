"""The audit's statistics over compact arrays: length bias, truncation impact, prompt leakage.

Lengths arrive as integer arrays and prompts as 64-bit hashes of their normalised text, so a
million pairs cost a few megabytes. Two different prompts share a 64-bit hash with odds of
about n²/2⁶⁵ (3·10⁻⁸ for a million), far below anything these counts could show.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from prefalign.data.types import PreferencePair

EXAMPLES_SHOWN = 5
EXAMPLE_CHARS = 120


@dataclass(frozen=True)
class LengthBias:
    unit: str  # "tokens" or "characters"
    pairs: int
    frac_chosen_longer: float
    frac_chosen_shorter: float
    frac_equal: float
    mean_difference: float  # chosen - rejected
    median_difference: float
    cohens_d: float  # (mean_c - mean_r) / pooled sd, sd with ddof=1
    length_only_accuracy: float  # best of "prefer longer" / "prefer shorter", ties count half
    length_only_rule: str


@dataclass(frozen=True)
class TruncationImpact:
    max_length: int
    max_prompt_length: int
    over_length: int  # pairs that need any truncation; dropped under on_overflow=drop
    prompt_truncated: int
    response_truncated: int  # pairs that lose response tokens under on_overflow=truncate


@dataclass(frozen=True)
class Leakage:
    eval_prompts: int
    leaked_pairs: int  # training pairs whose prompt is also an eval prompt
    leaked_prompts: int  # distinct such prompts
    examples: tuple[str, ...]


def length_bias(chosen_lengths: Sequence[int] | np.ndarray, rejected_lengths: Sequence[int] | np.ndarray,
                unit: str) -> LengthBias:
    """Length statistics of chosen against rejected responses (equal-length sequences, n >= 1)."""
    chosen = np.asarray(chosen_lengths, dtype=np.float64)
    rejected = np.asarray(rejected_lengths, dtype=np.float64)
    if chosen.shape != rejected.shape:
        raise ValueError(f"{len(chosen)} chosen lengths but {len(rejected)} rejected lengths")
    n = len(chosen)
    diffs = chosen - rejected
    longer = int(np.count_nonzero(diffs > 0)) / n
    shorter = int(np.count_nonzero(diffs < 0)) / n
    equal = 1.0 - longer - shorter
    rule, best = ("prefer longer", longer) if longer >= shorter else ("prefer shorter", shorter)
    return LengthBias(
        unit=unit, pairs=n, frac_chosen_longer=longer, frac_chosen_shorter=shorter,
        frac_equal=equal, mean_difference=float(diffs.mean()),
        median_difference=float(np.median(diffs)), cohens_d=_cohens_d(chosen, rejected),
        length_only_accuracy=best + equal / 2, length_only_rule=rule,
    )


def _cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return 0.0
    pooled = float((a.var(ddof=1) + b.var(ddof=1)) / 2) ** 0.5
    return 0.0 if pooled == 0 else float(a.mean() - b.mean()) / pooled


def truncation_impact(
    lengths: Sequence[tuple[int, int, int]] | np.ndarray, max_length: int, max_prompt_length: int
) -> TruncationImpact:
    """Counts under the truncation policy: keep the end of the prompt (down to
    max_prompt_length), then cut responses to fit max_length. lengths: (prompt, chosen, rejected)."""
    table = np.asarray(lengths, dtype=np.int64).reshape(-1, 3)  # (pairs, 3)
    prompt, longest = table[:, 0], table[:, 1:].max(axis=1)
    over = prompt + longest > max_length
    kept_prompt = np.minimum(prompt, max_prompt_length)
    return TruncationImpact(
        max_length, max_prompt_length, int(over.sum()),
        int((over & (kept_prompt < prompt)).sum()),
        int((over & (kept_prompt + longest > max_length)).sum()),
    )


def prompt_key(pair: PreferencePair) -> str:
    """Whitespace- and case-normalised text of the prompt's non-system messages."""
    turns = (f"{m.role}: {' '.join(m.content.split()).lower()}" for m in pair.prompt if m.role != "system")
    return "\n".join(turns)


def key_hash(key: str) -> int:
    """A 64-bit hash of a prompt key (stable across runs, unlike hash())."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def repeated_prompts(hashes: np.ndarray) -> int:
    """How many distinct prompts appear more than once."""
    _, counts = np.unique(hashes, return_counts=True)
    return int(np.count_nonzero(counts > 1))


def leakage_against(train_hashes: np.ndarray, evaluation: Iterable[PreferencePair]) -> Leakage:
    """Training prompts (as hashes) that are also prompts of the evaluation pairs."""
    train = np.unique(train_hashes)
    eval_hashes, examples = array("Q"), []
    for pair in evaluation:
        key = prompt_key(pair)
        value = key_hash(key)
        eval_hashes.append(value)
        position = int(np.searchsorted(train, np.uint64(value)))
        if position < len(train) and train[position] == value and key not in examples:
            # Keep the first EXAMPLES_SHOWN distinct leaked prompts in sorted order.
            bisect.insort(examples, key)
            del examples[EXAMPLES_SHOWN:]
    evaluated = np.unique(np.frombuffer(eval_hashes, dtype=np.uint64))
    return Leakage(
        eval_prompts=len(evaluated),
        leaked_pairs=int(np.isin(train_hashes, evaluated).sum()),
        leaked_prompts=len(np.intersect1d(train, evaluated)),
        examples=tuple(k[:EXAMPLE_CHARS] for k in examples),
    )


def leakage(train: Sequence[PreferencePair], evaluation: Iterable[PreferencePair]) -> Leakage:
    hashes = np.fromiter((key_hash(prompt_key(p)) for p in train), dtype=np.uint64, count=len(train))
    return leakage_against(hashes, evaluation)
