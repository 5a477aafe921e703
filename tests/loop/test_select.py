"""Choosing a prompt's pair from its samples' scores, by hand: each strategy, ties within the
margin, samples dropped by the safety threshold, and best-random's seeded pick."""

from __future__ import annotations

import pytest

from prefalign.loop.select import Choice, choose


@pytest.mark.parametrize(("scores", "strategy", "margin", "expected"), [
    ([0.2, 0.9, 0.5], "best-worst", 0.0, Choice(1, 0)),
    ([0.2, 0.9, 0.5], "best", 0.0, Choice(1)),
    ([0.5, 0.5], "best-worst", 0.0, "tie"),           # equal scores: no pair
    ([0.5, 0.5], "best", 0.0, Choice(0)),             # the first of equal maxima
    ([0.2, 0.9, 0.5], "best-worst", 0.7, "tie"),      # 0.9 - 0.2 = 0.7 is not more than 0.7
    ([0.2, 0.9, 0.5], "best-worst", 0.69, Choice(1, 0)),
    ([0.9, 0.2, 0.2], "best-worst", 0.0, Choice(0, 1)),  # the first of equal minima
    ([None, 0.3, None], "best-worst", 0.0, "too_few"),    # dropped samples take no part
    ([None, 0.3, None], "best", 0.0, Choice(1)),
    ([None, None], "best", 0.0, "too_few"),
    ([0.1, None, 0.4], "best-worst", 0.0, Choice(2, 0)),
    ([0.4, 0.1, 0.3], "best-random", 0.2, Choice(0, 1)),  # only 0.1 is beaten by more than 0.2
])
def test_choices(scores, strategy, margin, expected):
    assert choose(scores, strategy, min_margin=margin) == expected


def test_best_random_is_seeded_per_prompt_and_picks_a_beaten_sample():
    scores = [1.0, 0.0, 0.2, 0.4, 0.6, 0.8]
    picks = {choose(scores, "best-random", seed=seed, prompt_id="p").rejected for seed in range(40)}
    assert picks == {1, 2, 3, 4, 5}  # every beaten sample is picked by some seed, never the best
    assert choose(scores, "best-random", seed=3, prompt_id="p") == choose(
        scores, "best-random", seed=3, prompt_id="p")
    by_prompt = {choose(scores, "best-random", seed=3, prompt_id=f"p{i}").rejected
                 for i in range(20)}
    assert len(by_prompt) > 1  # the prompt id is part of the seed


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy must be one of best-worst, best-random, best"):
        choose([1.0, 0.0], "worst")
