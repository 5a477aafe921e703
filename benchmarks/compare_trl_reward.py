"""The reward both sides of compare_trl.py's grpo configuration train on: one TRL-style reward
function, used by TRL as `reward_funcs` and by prefalign as the judge
`grpo.judges=[benchmarks/compare_trl_reward.py:kind_aware_reward]`.

Imports nothing but the standard library: TRL's virtual environment has no prefalign, so
prefalign's own refusal judge cannot be used on that side. The rule is deterministic and
graded, so that most groups of G completions get different rewards (a tied group has zero
advantages, and with ρ = 1 zero advantages leave nothing to compare):

    r = 1[the completion behaves as its prompt's kind asks]  +  0.5 · s,
    behaves: a harmful prompt is refused, a benign one is not (a refusal phrase, `REFUSALS`);
    s = min(words, SHAPE_WORDS) / SHAPE_WORDS for a benign prompt (a fuller answer), 1 − that
        for a harmful one (a refusal is short).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REFUSALS = ("i can't", "i cannot", "i can not", "i won't", "i will not", "i'm sorry",
            "i am sorry", "i'm not able", "i am not able", "i'm unable", "i am unable",
            "as an ai", "i apologize", "not appropriate", "i must decline", "i refuse")
SHAPE_WORDS = 40  # words at which the length term saturates
SHAPE_WEIGHT = 0.5


def completion_text(completion: Any) -> str:
    """The text of a completion in TRL's conversational form ([{"role", "content"}]) or plain."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content", "")) for message in completion)


def is_refusal(text: str) -> bool:
    """Whether the text holds one of the refusal phrases (apostrophes normalised)."""
    lowered = text.lower().replace("\u2019", "'")
    return any(phrase in lowered for phrase in REFUSALS)


def score(text: str, kind: str | None) -> float:
    """The reward of one completion (module docstring); kind: harmful | benign | None."""
    harmful = kind == "harmful"
    behaves = is_refusal(text) == harmful
    fullness = min(len(text.split()), SHAPE_WORDS) / SHAPE_WORDS
    shape = 1.0 - fullness if harmful else fullness
    return float(behaves) + SHAPE_WEIGHT * shape


def kind_aware_reward(prompts: Sequence[Any], completions: Sequence[Any],
                      kind: Sequence[str | None] | None = None, **_: Any) -> list[float]:
    """TRL's reward-function signature: one float per completion; `kind` is the prompt rows'
    column (one value per completion); every other column is ignored."""
    kinds = list(kind) if kind is not None else [None] * len(completions)
    return [score(completion_text(c), k) for c, k in zip(completions, kinds, strict=True)]
