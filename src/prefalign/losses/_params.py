"""Hyper-parameters declared in a loss's own signature, and the checks derived from them.

A loss declares each hyper-parameter as a keyword-only argument with a default and an annotation
that says its type and, for numbers, its bounds:

    beta: Positive = 0.1                                   # a float in (0, inf)
    label_smoothing: Annotated[float, Range(0.0, 0.5)] = 0.0   # a float in [0, 0.5)
    steps: Annotated[int, Range(1)] = 4                    # an int in [1, inf)
    length_normalized: bool = False
    reduce: Literal["sum", "mean"] = "sum"

`make_loss` and direct calls (through `validated`) check values against these declarations, so
a bound is written once, beside its parameter. Booleans are never numbers; NaN and infinities
are never in a range; an int given for a float parameter becomes a float.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Annotated, Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_HOW_TO_ANNOTATE = (
    "annotate it float, int, bool, Literal[...] or Annotated[float, Range(...)] "
    "(prefalign.losses.Range) so make_loss can check it"
)


@dataclass(frozen=True)
class Range:
    """The interval a number must lie in: [low, high) unless `open_low` / `open_high` say
    otherwise. Values must also be finite, so an infinite end is never reached."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = True

    def contains(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def describe(self, kind: type) -> str:
        """The interval as written in messages, e.g. "(0.0, inf)" for a float, "[1, inf)" for an int."""
        low, high = (kind(end) if math.isfinite(end) else end for end in (self.low, self.high))
        return f"{'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


Positive = Annotated[float, Range(0.0, open_low=True)]
NonNegative = Annotated[float, Range(0.0)]


@dataclass(frozen=True)
class HyperParameter:
    """One declared hyper-parameter: its type (float, int or bool), or the choices of a
    Literal, its bounds (numbers only) and its default (already validated)."""

    name: str
    kind: type
    default: Any = None
    bounds: Range | None = None
    choices: tuple[Any, ...] = ()

    def validate(self, where: str, value: Any) -> Any:
        """`value` as the declared type; ValueError naming `where`, the parameter and what is
        allowed otherwise."""
        if self.choices:
            if any(type(value) is type(choice) and value == choice for choice in self.choices):
                return value
            allowed = ", ".join(repr(choice) for choice in self.choices)
            raise ValueError(f"{where}: {self.name} must be one of {allowed}, got {value!r}")
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError(f"{where}: {self.name} must be true or false, got {value!r}")
        return self._number(where, value)

    def _number(self, where: str, value: Any) -> int | float:
        typed: int | float | None = None
        if isinstance(value, bool):
            pass  # True is an int to Python, never a number to a loss
        elif self.kind is int and isinstance(value, Integral):
            typed = int(value)
        elif self.kind is float and isinstance(value, Real) and math.isfinite(value):
            typed = float(value)
        if typed is not None and (self.bounds is None or self.bounds.contains(typed)):
            return typed
        what = "an integer" if self.kind is int else "a finite number"
        interval = f" in {self.bounds.describe(self.kind)}" if self.bounds is not None else ""
        raise ValueError(f"{where}: {self.name} must be {what}{interval}, got {value!r}")


def require_positive(where: str, name: str, value: Any) -> float:
    """`value` as a float if it is finite and > 0; ValueError naming `where` and `name` otherwise."""
    return HyperParameter(name, float, bounds=Range(0.0, open_low=True)).validate(where, value)


def declared_hyperparameters(fn: Callable[..., Any]) -> dict[str, HyperParameter]:
    """The keyword-only parameters of `fn` that have a default, read from their annotations.

    Keyword-only parameters without a default are data inputs (KTO's `desirable`), not
    hyper-parameters. TypeError when an annotation is missing or cannot be checked, or a
    default fails its own annotation.
    """
    where = getattr(fn, "__qualname__", repr(fn))
    try:
        hints = typing.get_type_hints(inspect.unwrap(fn), include_extras=True)
    except Exception as error:  # e.g. NameError: a string annotation naming a local class
        raise TypeError(f"{where}: cannot resolve its annotations ({error})") from None
    declared = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and (
            parameter.default is not inspect.Parameter.empty
        ):
            declared[name] = _declare(where, name, hints.get(name), parameter.default)
    return declared


def _declare(where: str, name: str, hint: Any, default: Any) -> HyperParameter:
    if hint is None:
        raise TypeError(f"{where}: hyper-parameter {name!r} has no annotation; {_HOW_TO_ANNOTATE}")
    bounds = None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        ranges = [extra for extra in extras if isinstance(extra, Range)]
        if len(ranges) > 1:
            raise TypeError(f"{where}: hyper-parameter {name!r} has more than one Range")
        bounds = ranges[0] if ranges else None
    if typing.get_origin(hint) is Literal and bounds is None:
        choices = typing.get_args(hint)
        parameter = HyperParameter(name, type(choices[0]), choices=choices)
    elif hint in (float, int) or (hint is bool and bounds is None):
        parameter = HyperParameter(name, hint, bounds=bounds)
    else:
        shown = getattr(hint, "__name__", repr(hint))
        suffix = " with a Range" if bounds is not None else ""
        raise TypeError(
            f"{where}: hyper-parameter {name!r} is annotated {shown}{suffix}, which cannot be "
            f"checked; {_HOW_TO_ANNOTATE}"
        )
    try:
        typed_default = parameter.validate(where, default)
    except ValueError as error:
        reason = str(error).split(": ", 1)[1]
        raise TypeError(f"{where}: the default {name}={default!r} does not fit: {reason}") from None
    return HyperParameter(name, parameter.kind, typed_default, bounds, parameter.choices)


def validated(loss: str) -> Callable[[F], F]:
    """Decorate a loss so that direct calls check their hyper-parameters as `make_loss` does,
    naming the loss `loss` in errors; an int given for a float reaches the loss as a float."""

    def decorate(fn: F) -> F:
        declared = declared_hyperparameters(fn)

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            kwargs = {
                name: declared[name].validate(loss, value) if name in declared else value
                for name, value in kwargs.items()
            }
            return fn(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorate
