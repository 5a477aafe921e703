"""What every judge is: completions of prompts in, one finite float per completion out, with an
id and a hash that say which judge (and which weights) gave the scores.

A judge's `score` may raise or return anything; `judge_scores` is the one way callers read it,
and it turns every failure (an exception, the wrong number of scores, a NaN, a non-number) into
a `JudgeError` naming the judge, before anything is written.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prefalign.data.types import Message

KINDS = ("harmful", "benign")  # values of a prompt's `kind` column
KIND_COLUMN = "kind"


class JudgeError(ValueError):
    """A judge that cannot be built, raised while scoring, or returned unusable scores."""


@dataclass(frozen=True)
class Completions:
    """The completions to score: completion i answers prompts[i] (chat messages ending with a
    user turn); columns[i] holds that prompt row's other columns (`kind`, `category`, ...)."""

    prompts: Sequence[tuple[Message, ...]]
    texts: Sequence[str]
    columns: Sequence[Mapping[str, object]]

    def __post_init__(self) -> None:
        if not len(self.prompts) == len(self.texts) == len(self.columns):
            raise ValueError(f"Completions: {len(self.prompts)} prompts, {len(self.texts)} texts "
                             f"and {len(self.columns)} column rows; give one of each per completion")

    def __len__(self) -> int:
        return len(self.texts)


@runtime_checkable
class Judge(Protocol):
    """id: what the judge is (`rm:runs/rm-safety`, `refusal`, `my_rewards:length`); hash: its
    version (weights' sha256, rules' name and version, source file's sha256)."""

    id: str
    hash: str

    def score(self, completions: Completions) -> Sequence[float]:
        """One score per completion, in order; higher is better."""
        ...


def judge_scores(judge: Judge, completions: Completions) -> list[float]:
    """`judge.score(completions)` checked: one finite number per completion, else JudgeError."""
    try:
        raw = judge.score(completions)
    except JudgeError:
        raise
    except Exception as error:  # a user's judge may raise anything; name the judge that did
        raise JudgeError(f"judge {judge.id}: raised {type(error).__name__}: {error}") from error
    return checked_scores(judge.id, raw, len(completions))


def checked_scores(judge_id: str, raw: object, expected: int) -> list[float]:
    """`raw` as a list of `expected` finite floats, else JudgeError naming `judge_id`."""
    if hasattr(raw, "tolist") and callable(raw.tolist):  # a tensor or an array
        raw = raw.tolist()
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise JudgeError(f"judge {judge_id}: returned {type(raw).__name__}; expected a list of "
                         f"{expected} numbers, one per completion")
    if len(raw) != expected:
        raise JudgeError(f"judge {judge_id}: returned {len(raw)} score(s) for {expected} "
                         f"completion(s); expected one per completion")
    scores = []
    for index, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise JudgeError(f"judge {judge_id}: score {index} is {value!r} "
                             f"({type(value).__name__}); expected a number")
        if not math.isfinite(value):
            raise JudgeError(f"judge {judge_id}: score {index} is {value}; scores must be finite")
        scores.append(float(value))
    return scores


def prompt_kinds(judge_id: str, completions: Completions) -> list[str]:
    """Each completion's prompt `kind` (harmful | benign); JudgeError naming the first rows
    without one, since the judge cannot tell what a good answer is without it."""
    kinds = [columns.get(KIND_COLUMN) for columns in completions.columns]
    bad = [i for i, kind in enumerate(kinds) if kind not in KINDS]
    if bad:
        shown = ", ".join(f"{_prompt_name(completions, i)} ({kinds[i]!r})" for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise JudgeError(
            f"judge {judge_id}: needs each prompt's `{KIND_COLUMN}` column (harmful or benign); "
            f"got {shown}{more} (add a `{KIND_COLUMN}` column to the prompt file or the samples)")
    return kinds  # type: ignore[return-value]


def _prompt_name(completions: Completions, index: int) -> str:
    prompt_id = completions.columns[index].get("prompt_id")
    return f"prompt {prompt_id}" if prompt_id is not None else f"completion {index}"
