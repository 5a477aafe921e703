"""Hyper-parameter checks that name the loss, the parameter and its allowed range."""

from __future__ import annotations

import math
from numbers import Real


def require_number(
    loss: str,
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
) -> None:
    """Raise ValueError unless `value` is a finite real number inside the given interval."""
    is_number = isinstance(value, Real) and not isinstance(value, bool)
    inside = False
    if is_number and math.isfinite(value):  # type: ignore[arg-type]
        above = value > low if low_open else value >= low  # type: ignore[operator]
        below = value < high if high_open else value <= high  # type: ignore[operator]
        inside = above and below
    if not inside:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{loss}: {name} must be a finite number in {interval}, got {value!r}")


def require_positive(loss: str, name: str, value: object) -> None:
    require_number(loss, name, value, low=0.0, low_open=True)


def require_bool(loss: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{loss}: {name} must be true or false, got {value!r}")
