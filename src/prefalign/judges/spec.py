"""Judge specifications as written on the command line: `KIND[:TARGET][@WEIGHT]`.

    rm:RUN_DIR           a reward model (`prefalign rm train`'s final/)       judges/reward_model.py
    implicit:RUN_DIR     a DPO run's implicit reward β·log(π/π_ref)          judges/implicit.py
    refusal              the refusal rules, kind-aware                       judges/refusal.py
    module:function      a Python callable, called as TRL calls reward functions  judges/python.py

A trailing `@NUMBER` is the judge's weight in a weighted sum (default 1). `rm:`, `implicit:`
and `refusal` are reserved; anything else with a colon is `module:function` (a module cannot
be named `rm` or `implicit`). Specs are parsed, all of them, before any model loads, so a typo
costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prefalign.judges.base import Judge, JudgeError
from prefalign.judges.combine import Combine, Panel, WeightedJudge, check_combine

JudgeKind = Literal["rm", "implicit", "refusal", "module"]
SPEC_HELP = "rm:RUN_DIR | implicit:RUN_DIR | refusal | module:function, optionally @WEIGHT"


@dataclass(frozen=True)
class JudgeSpec:
    """One parsed `--judge` value. target: the run directory or module:function (None for
    refusal); weight: its factor in a weighted sum."""

    kind: JudgeKind
    target: str | None
    weight: float = 1.0

    @property
    def id(self) -> str:
        """The judge's id, as its scores are recorded: the spec without its weight."""
        if self.kind == "refusal":
            return "refusal"
        return self.target if self.kind == "module" else f"{self.kind}:{self.target}"


def parse_judge_spec(text: str) -> JudgeSpec:
    """`text` as a JudgeSpec; JudgeError saying what the forms are when it is none of them."""
    body, weight = _split_weight(text)
    kind, colon, target = body.partition(":")
    if body == "refusal":
        return JudgeSpec("refusal", None, weight)
    if kind in ("rm", "implicit") and colon:
        if not target:
            raise JudgeError(f"judge {text!r}: {kind}: needs a run directory ({kind}:RUN_DIR)")
        return JudgeSpec(kind, target, weight)  # type: ignore[arg-type]
    if colon and kind and target:
        return JudgeSpec("module", body, weight)
    raise JudgeError(f"judge {text!r}: unknown judge; expected {SPEC_HELP}")


def _split_weight(text: str) -> tuple[str, float]:
    body, at, tail = text.rpartition("@")
    if not at:
        return text, 1.0
    try:
        weight = float(tail)
    except ValueError:
        raise JudgeError(f"judge {text!r}: the weight after @ must be a number, got "
                         f"{tail!r}") from None
    if not math.isfinite(weight):
        raise JudgeError(f"judge {text!r}: the weight must be finite, got {tail!r}")
    return body, weight


def load_panel(judges: Sequence[str], *, combine: Combine = "sum", safety: str | None = None,
               threshold: float | None = None) -> Panel:
    """The panel the command line describes: every spec parsed and the combination checked
    before the first judge loads."""
    specs = [parse_judge_spec(text) for text in judges]
    safety_spec = parse_judge_spec(safety) if safety is not None else None
    if safety_spec is not None and safety_spec.weight != 1.0:
        raise JudgeError(f"--safety-judge {safety}: the safety judge takes no weight")
    check_combine(combine, [spec.id for spec in specs],
                  safety_spec.id if safety_spec is not None else None, threshold)
    return Panel(tuple(WeightedJudge(load_judge(spec), spec.weight) for spec in specs), combine,
                 load_judge(safety_spec) if safety_spec is not None else None, threshold)


def load_judge(spec: JudgeSpec) -> Judge:
    """Build the judge `spec` names (loading its models); a failure is a JudgeError naming it."""
    try:
        return _load(spec)
    except JudgeError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise JudgeError(f"judge {spec.id}: {error}") from error


def _load(spec: JudgeSpec) -> Judge:
    # Imported here: a refusal judge needs neither torch nor transformers.
    if spec.kind == "refusal":
        from prefalign.judges.refusal import RefusalJudge

        return RefusalJudge()
    assert spec.target is not None
    if spec.kind == "rm":
        from prefalign.judges.reward_model import load_reward_model_judge

        return load_reward_model_judge(spec.target)
    if spec.kind == "implicit":
        from prefalign.judges.implicit import load_implicit_judge

        return load_implicit_judge(spec.target)
    from prefalign.judges.python import load_callable_judge

    return load_callable_judge(spec.target)
