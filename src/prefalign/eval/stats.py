"""Rates with Wilson score intervals, overall and per category (refusal and over-refusal rates)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """Wilson score interval for k successes in n trials (Wilson 1927); (None, None) when n = 0.

    p̂ = k/n,  centre = (p̂ + z²/2n) / (1 + z²/n),
    half-width = z·sqrt(p̂(1−p̂)/n + z²/4n²) / (1 + z²/n).
    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at k = 0 or k = n,
    which matters for refusal rates near 0% or 100% on ~100 prompts.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if z <= 0:
        raise ValueError(f"wilson_interval: z must be positive, got {z}")
    if n == 0:
        return None, None
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # At k = 0 (k = n) the bound is exactly 0 (1); rounding would otherwise leave it a hair off.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def _summary(flags: Sequence[bool]) -> dict:
    n = len(flags)
    k = sum(1 for flag in flags if flag)
    low, high = wilson_interval(k, n)
    return {"n": n, "rate": k / n if n else None, "low": low, "high": high}


def rate_summary(flags: Sequence[bool], categories: Sequence[str]) -> dict:
    """The rate of True flags with its 95% Wilson interval, overall and per category.

    Returns {"n", "rate", "low", "high", "by_category": {category: {"n", "rate", "low", "high"}}};
    rate, low and high are None when n = 0. Categories appear in sorted order.
    """
    if len(flags) != len(categories):
        raise ValueError(
            f"rate_summary: {len(flags)} flags but {len(categories)} categories; give one each"
        )
    groups: dict[str, list[bool]] = {}
    for flag, category in zip(flags, categories, strict=True):
        groups.setdefault(category, []).append(bool(flag))
    summary = _summary([bool(flag) for flag in flags])
    summary["by_category"] = {name: _summary(groups[name]) for name in sorted(groups)}
    return summary
