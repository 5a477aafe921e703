"""Which samples of one prompt become a pair (or an SFT row), from their combined scores.

best-worst:  chosen = the highest score, rejected = the lowest;
best-random: chosen = the highest, rejected = a seeded random pick among the samples it beats
             by more than the margin (seeded by the run's seed and the prompt id, so the pick
             does not depend on the other prompts);
best:        the highest alone, an SFT row (rejection-sampling fine-tuning, as in Llama 2).
A pair needs chosen − rejected > min_margin; a prompt without such a pair is a tie. Samples
scored None (dropped by the piecewise safety threshold) take no part. Equal scores resolve to
the sample that comes first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["best-worst", "best-random", "best"]
STRATEGIES: tuple[Strategy, ...] = ("best-worst", "best-random", "best")
Skip = Literal["tie", "too_few"]


@dataclass(frozen=True)
class Choice:
    """Positions in the prompt's sample list: chosen, and rejected (None for `best`)."""

    chosen: int
    rejected: int | None = None


def choose(scores: Sequence[float | None], strategy: Strategy, *, min_margin: float = 0.0,
           seed: int = 0, prompt_id: str = "") -> Choice | Skip:
    """The choice for one prompt, or why there is none: "too_few" scored samples (fewer than
    two for a pair, none for `best`) or a "tie" within the margin."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    scored = [i for i, score in enumerate(scores) if score is not None]
    if len(scored) < (1 if strategy == "best" else 2):
        return "too_few"
    best = max(scored, key=lambda i: (scores[i], -i))  # the first of equal maxima
    if strategy == "best":
        return Choice(best)
    beaten = [i for i in scored if scores[best] - scores[i] > min_margin]  # type: ignore[operator]
    if not beaten:
        return "tie"
    if strategy == "best-worst":
        return Choice(best, min(beaten, key=lambda i: (scores[i], i)))
    return Choice(best, random.Random(f"{seed}:{prompt_id}").choice(beaten))
