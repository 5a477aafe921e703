"""Wilson intervals and rate summaries, checked against arithmetic worked out by hand."""

from __future__ import annotations

import math

import pytest

from prefalign.eval.stats import rate_summary, wilson_interval


def test_wilson_zero_successes() -> None:
    """k=0, n=10, z=1.96: z² = 3.8416, 1 + z²/n = 1.38416.
    centre = (0 + 3.8416/20) / 1.38416 = 0.19208 / 1.38416 = 0.138770
    half   = 1.96·sqrt(0 + 3.8416/400) / 1.38416 = 1.96·0.098 / 1.38416 = 0.138770
    → [0, 0.277540]."""
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.277540, abs=1e-6)


def test_wilson_half() -> None:
    """k=5, n=10: centre = (0.5 + 0.19208)/1.38416 = 0.5;
    half = 1.96·sqrt(0.025 + 0.009604)/1.38416 = 1.96·0.186021/1.38416 = 0.263410
    → [0.236590, 0.763410]."""
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.236590, abs=1e-6)
    assert high == pytest.approx(0.763410, abs=1e-6)


def test_wilson_is_symmetric_and_contains_the_rate() -> None:
    for n in (1, 7, 100):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            mirrored = wilson_interval(n - k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
            assert low == pytest.approx(1 - mirrored[1], abs=1e-12)


def test_wilson_empty_and_invalid() -> None:
    assert wilson_interval(0, 0) == (None, None)
    for k, n in ((3, 2), (-1, 4), (0, -1)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            wilson_interval(k, n)
    with pytest.raises(ValueError, match="z must be positive"):
        wilson_interval(1, 2, z=0)


def test_wider_z_gives_wider_interval() -> None:
    narrow = wilson_interval(3, 20, z=1.0)
    wide = wilson_interval(3, 20, z=2.576)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_rate_summary_overall_and_by_category() -> None:
    """5 of 10 overall (a: 0 of 4, b: 5 of 6)."""
    flags = [False] * 4 + [True] * 5 + [False]
    categories = ["a"] * 4 + ["b"] * 6
    summary = rate_summary(flags, categories)
    assert summary["n"] == 10 and summary["rate"] == 0.5
    assert (summary["low"], summary["high"]) == pytest.approx(wilson_interval(5, 10))
    assert list(summary["by_category"]) == ["a", "b"]
    a, b = summary["by_category"]["a"], summary["by_category"]["b"]
    assert a["n"] == 4 and a["rate"] == 0.0 and a["low"] == pytest.approx(0.0)
    assert b["n"] == 6 and math.isclose(b["rate"], 5 / 6)
    assert (b["low"], b["high"]) == pytest.approx(wilson_interval(5, 6))


def test_rate_summary_empty() -> None:
    assert rate_summary([], []) == {
        "n": 0, "rate": None, "low": None, "high": None, "by_category": {}
    }


def test_rate_summary_length_mismatch() -> None:
    with pytest.raises(ValueError, match="2 flags but 1 categories"):
        rate_summary([True, False], ["a"])
