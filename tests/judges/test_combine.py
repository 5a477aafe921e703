"""Combining judges by hand-computed cases: the weighted sum, Llama 2's piecewise rule (every row
of its table), score checks naming the judge, and the panel's flag combinations."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.data.types import Message
from prefalign.judges.base import Completions, JudgeError, checked_scores, judge_scores
from prefalign.judges.combine import Panel, WeightedJudge, piecewise, weighted_sum
from prefalign.judges.refusal import RefusalJudge


class ListJudge:
    """A judge that returns whatever it was given (to test what callers do with it)."""

    def __init__(self, judge_id: str, result: object):
        self.id, self.hash, self.result = judge_id, "h", result

    def score(self, completions: Completions) -> object:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _completions(kinds: list[str | None]) -> Completions:
    prompts = [(Message("user", f"prompt {i}"),) for i in range(len(kinds))]
    columns = [{"kind": kind, "prompt_id": f"p{i}"} if kind else {"prompt_id": f"p{i}"}
               for i, kind in enumerate(kinds)]
    return Completions(prompts, [f"answer {i}" for i in range(len(kinds))], columns)


def test_weighted_sum_by_hand():
    """[1, 2]·1 + [10, -4]·0.5 = [1 + 5, 2 - 2] = [6, 0]."""
    assert weighted_sum([[1.0, 2.0], [10.0, -4.0]], [1.0, 0.5]) == [6.0, 0.0]


@pytest.mark.parametrize(("safety", "helpful", "relevant", "expected"), [
    (0.9, 0.2, True, 0.9),    # safety-relevant prompt: the safety score
    (0.9, 0.2, False, 0.2),   # other prompt, safe answer: the helpfulness score
    (0.15, 0.7, False, 0.7),  # exactly at the threshold is not below it
    (0.1, 0.7, False, None),  # below the threshold: dropped (and R_s would be used)
    (0.1, 0.7, True, None),
])
def test_piecewise_rule_table(safety, helpful, relevant, expected):
    assert piecewise([safety], [helpful], [relevant], 0.15) == [expected]


def test_checked_scores_accepts_tensors_and_numpy_like_numbers():
    assert checked_scores("j", torch.tensor([1.0, 2.5]), 2) == [1.0, 2.5]
    assert checked_scores("j", (1, 2.0), 2) == [1.0, 2.0]


@pytest.mark.parametrize(("result", "message"), [
    ([1.0], "returned 1 score(s) for 2 completion(s)"),
    ([1.0, math.nan], "score 1 is nan; scores must be finite"),
    ([1.0, math.inf], "score 1 is inf"),
    ([1.0, None], "score 1 is None (NoneType); expected a number"),
    ([1.0, True], "score 1 is True (bool)"),
    ("12", "returned str; expected a list of 2 numbers"),
    (3.0, "returned float"),
    (KeyError("kind"), "raised KeyError: 'kind'"),
])
def test_bad_scores_are_errors_naming_the_judge(result, message):
    with pytest.raises(JudgeError) as error:
        judge_scores(ListJudge("my_rewards:broken", result), _completions(["benign", "benign"]))
    assert str(error.value).startswith("judge my_rewards:broken: ")
    assert message in str(error.value)


def test_panel_sum_and_piecewise_by_hand():
    completions = _completions(["harmful", "benign", "benign"])
    helpful = ListJudge("help", [0.3, 0.8, 0.9])
    other = ListJudge("other", [1.0, 1.0, -1.0])
    safety = ListJudge("safe", [0.6, 0.5, 0.05])
    summed = Panel((WeightedJudge(helpful), WeightedJudge(other, 0.5)))
    # 0.3 + 0.5, 0.8 + 0.5, 0.9 - 0.5
    assert summed.score(completions).combined == pytest.approx([0.8, 1.3, 0.4])
    panel = Panel((WeightedJudge(helpful),), "piecewise", safety, 0.15)
    verdicts = panel.score(completions)
    assert verdicts.combined == [0.6, 0.8, None]  # harmful: R_s; benign: R_h; 0.05 < τ: dropped
    assert verdicts.by_judge == {"help": [0.3, 0.8, 0.9], "safe": [0.6, 0.5, 0.05]}
    roles = [(j["id"], j["role"]) for j in panel.describe()["judges"]]
    assert roles == [("help", "helpfulness"), ("safe", "safety")]


def test_piecewise_needs_each_prompts_kind():
    panel = Panel((WeightedJudge(ListJudge("help", [1.0, 1.0])),), "piecewise",
                  ListJudge("safe", [1.0, 1.0]), 0.0)
    with pytest.raises(JudgeError, match=r"needs each prompt's `kind`.*prompt p1 \(None\)"):
        panel.score(_completions(["harmful", None]))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"combine": "piecewise"}, "needs --safety-judge and --threshold"),
    ({"combine": "piecewise", "safety": ListJudge("s", [])}, "needs --safety-judge and"),
    ({"threshold": 0.1}, "belong to --combine piecewise"),
    ({"combine": "max"}, "combine must be sum or piecewise"),
    ({"combine": "piecewise", "safety": ListJudge("a", []), "threshold": 0.1},
     "a judge is given twice: ['a']"),
])
def test_panel_flag_combinations(kwargs, message):
    with pytest.raises(JudgeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Panel((WeightedJudge(ListJudge("a", [])),), **kwargs)


def test_refusal_judge_is_kind_aware():
    """Refusing a harmful prompt and answering a benign one score 1; the opposite 0."""
    refuse, answer = "I'm sorry, but I can't help with that.", "Sure: here is how bread rises."
    completions = Completions(
        [(Message("user", "q"),)] * 4, [refuse, answer, refuse, answer],
        [{"kind": "harmful"}, {"kind": "harmful"}, {"kind": "benign"}, {"kind": "benign"}])
    judge = RefusalJudge()
    assert judge_scores(judge, completions) == [1.0, 0.0, 0.0, 1.0]
    assert judge.id == "refusal" and judge.hash.startswith("refusal-rules/1@")


def test_refusal_judge_without_kind_names_the_prompts():
    with pytest.raises(JudgeError, match=r"judge refusal: needs each prompt's `kind`.*"
                                         r"prompt p0 \(None\), prompt p1 \('unsafe'\)"):
        judge_scores(RefusalJudge(), Completions(
            [(Message("user", "q"),)] * 2, ["a", "b"],
            [{"prompt_id": "p0"}, {"prompt_id": "p1", "kind": "unsafe"}]))
