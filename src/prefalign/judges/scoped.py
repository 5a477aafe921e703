"""A judge that scores the prompts of one kind only: R_i = R_judge(i) where kind(i) = k, else 0.

Reward models are not kind-aware: a helpfulness model prefers an answer to a refusal on every
prompt, a harmlessness model a refusal on every prompt. Scoped to the kind it is right for
(`grpo.harmful_judges`, `grpo.benign_judges`), each pushes only where its preference is the one
wanted. Inside a group every completion answers the same prompt, so the 0 of the other kind
is a constant there and changes no group-normalised advantage.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefalign.judges.base import Completions, Judge, judge_scores, prompt_kinds


@dataclass(frozen=True)
class KindScopedJudge:
    """`judge` on the completions whose prompt `kind` is `kind`; 0.0 on the others (which it
    does not see). Its id is the judge's with the kind: `rm:runs/rm-safety[harmful]`."""

    judge: Judge
    kind: str

    @property
    def id(self) -> str:
        return f"{self.judge.id}[{self.kind}]"

    @property
    def hash(self) -> str:
        return self.judge.hash

    def score(self, completions: Completions) -> list[float]:
        picked = in_scope(self, completions)
        scores = [0.0] * len(completions)
        if not picked:
            return scores
        subset = Completions([completions.prompts[i] for i in picked],
                             [completions.texts[i] for i in picked],
                             [completions.columns[i] for i in picked])
        for index, score in zip(picked, judge_scores(self.judge, subset), strict=True):
            scores[index] = score
        return scores


def in_scope(judge: KindScopedJudge, completions: Completions) -> list[int]:
    """Indices of the completions `judge` scores (their prompt's kind is its kind)."""
    return [i for i, kind in enumerate(prompt_kinds(judge.id, completions)) if kind == judge.kind]
