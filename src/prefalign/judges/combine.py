"""Several judges as one score: a weighted sum, or Llama 2's piecewise safety rule.

sum:        R = Σ_j w_j · R_j
piecewise:  R = R_s  if the prompt is safety-relevant or R_s < τ,  else  R_h
            (Touvron et al. 2023, Llama 2, arXiv:2307.09288), where R_s is the safety judge's
            score, R_h the weighted sum of the other judges (the helpfulness side) and τ the
            threshold; a prompt is safety-relevant when its `kind` column is `harmful`.
            Completions with R_s < τ are dropped (their combined score is None): Llama 2
            filters unsafe responses at that threshold.

The pure rules (`weighted_sum`, `piecewise`) are separate from `Panel`, which runs the judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prefalign.judges.base import Completions, Judge, JudgeError, judge_scores, prompt_kinds

Combine = Literal["sum", "piecewise"]


def weighted_sum(scores: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """Σ_j weights[j] · scores[j][i] for each completion i (scores: one list per judge)."""
    if len(scores) != len(weights) or not scores:
        raise ValueError(f"weighted_sum: {len(scores)} score list(s), {len(weights)} weight(s)")
    return [sum(w * judge[i] for w, judge in zip(weights, scores, strict=True))
            for i in range(len(scores[0]))]


def piecewise(safety: Sequence[float], helpfulness: Sequence[float],
              safety_relevant: Sequence[bool], threshold: float) -> list[float | None]:
    """Llama 2's rule per completion (module docstring); None where safety < threshold."""
    combined: list[float | None] = []
    for r_s, r_h, relevant in zip(safety, helpfulness, safety_relevant, strict=True):
        if r_s < threshold:
            combined.append(None)
        else:
            combined.append(r_s if relevant else r_h)
    return combined


def check_combine(combine: str, judge_ids: Sequence[str], safety_id: str | None,
                  threshold: float | None) -> None:
    """JudgeError unless the judges and the combination rule fit together (checked before any
    judge loads, and again by Panel)."""
    if not judge_ids:
        raise JudgeError("give at least one --judge")
    if combine not in ("sum", "piecewise"):
        raise JudgeError(f"combine must be sum or piecewise, got {combine!r}")
    given = (safety_id is not None, threshold is not None)
    if combine == "piecewise" and not all(given):
        raise JudgeError("--combine piecewise needs --safety-judge and --threshold")
    if combine == "sum" and any(given):
        raise JudgeError("--safety-judge and --threshold belong to --combine piecewise")
    ids = [*judge_ids, *([safety_id] if safety_id is not None else [])]
    if len(set(ids)) != len(ids):
        raise JudgeError(f"a judge is given twice: {sorted({i for i in ids if ids.count(i) > 1})}")


@dataclass(frozen=True)
class WeightedJudge:
    judge: Judge
    weight: float = 1.0


@dataclass(frozen=True)
class Verdicts:
    """Each judge's scores by judge id, and the combined score per completion (None: dropped
    by the piecewise rule's safety threshold)."""

    by_judge: dict[str, list[float]]
    combined: list[float | None]


@dataclass(frozen=True)
class Panel:
    """The judges of one run and how their scores combine. Under "piecewise", `judges` are the
    helpfulness side and `safety` the safety judge; `threshold` is τ."""

    judges: tuple[WeightedJudge, ...]
    combine: Combine = "sum"
    safety: Judge | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        ids = [entry.judge.id for entry in self.judges]
        check_combine(self.combine, ids, self.safety.id if self.safety is not None else None,
                      self.threshold)

    def score(self, completions: Completions) -> Verdicts:
        """Run every judge on every completion (each checked), then combine."""
        by_judge = {entry.judge.id: judge_scores(entry.judge, completions)
                    for entry in self.judges}
        helpfulness = weighted_sum([by_judge[entry.judge.id] for entry in self.judges],
                                   [entry.weight for entry in self.judges])
        if self.safety is None or self.threshold is None:
            return Verdicts(by_judge, list(helpfulness))
        by_judge[self.safety.id] = judge_scores(self.safety, completions)
        relevant = [kind == "harmful" for kind in prompt_kinds("piecewise", completions)]
        return Verdicts(by_judge, piecewise(by_judge[self.safety.id], helpfulness, relevant,
                                            self.threshold))

    def describe(self) -> dict[str, object]:
        """The panel as recorded in provenance: each judge's id, hash, weight and role."""
        judges = [{"id": e.judge.id, "hash": e.judge.hash, "weight": e.weight,
                   "role": "helpfulness" if self.combine == "piecewise" else "sum"}
                  for e in self.judges]
        if self.safety is not None:
            judges.append({"id": self.safety.id, "hash": self.safety.hash, "weight": None,
                           "role": "safety"})
        return {"combine": self.combine, "threshold": self.threshold, "judges": judges}
