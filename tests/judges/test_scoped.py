"""A kind-scoped judge scores only its kind's completions (0 elsewhere) and names itself."""

from __future__ import annotations

import pytest

from prefalign.data.types import Message
from prefalign.judges.base import Completions, JudgeError, judge_scores
from prefalign.judges.scoped import KindScopedJudge


class LengthJudge:
    """len(text) + 0.5, recording what it was asked to score."""

    id, hash = "length", "h"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score(self, completions: Completions) -> list[float]:
        self.seen.extend(completions.texts)
        return [len(text) + 0.5 for text in completions.texts]


def _completions(kinds: list[str | None], texts: list[str]) -> Completions:
    prompts = [(Message("user", f"prompt {i}"),) for i in range(len(kinds))]
    columns = [{"kind": kind, "prompt_id": f"p{i}"} if kind else {"prompt_id": f"p{i}"}
               for i, kind in enumerate(kinds)]
    return Completions(prompts, texts, columns)


def test_scores_its_kind_and_zero_elsewhere_by_hand():
    inner = LengthJudge()
    judge = KindScopedJudge(inner, "benign")
    completions = _completions(["harmful", "benign", "benign", "harmful"], ["a", "bb", "", "ddd"])
    assert judge_scores(judge, completions) == [0.0, 2.5, 0.5, 0.0]
    assert inner.seen == ["bb", ""]  # the other kind is never shown to the judge
    assert judge.id == "length[benign]" and judge.hash == "h"


def test_no_prompt_of_its_kind_scores_nothing():
    inner = LengthJudge()
    scores = KindScopedJudge(inner, "harmful").score(_completions(["benign"], ["x"]))
    assert scores == [0.0] and inner.seen == []


def test_a_prompt_without_kind_is_an_error_naming_the_scoped_judge():
    judge = KindScopedJudge(LengthJudge(), "harmful")
    with pytest.raises(JudgeError, match=r"judge length\[harmful\]: needs each prompt's `kind`"):
        judge_scores(judge, _completions(["harmful", None], ["a", "b"]))
