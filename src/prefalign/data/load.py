"""Loading preference pairs: read every record of every source, check it, then drop and report.

Every source is read to the end before anything is decided, so an error lists every defect of
every file. Pairs whose chosen equals rejected and exact duplicates are dropped with a warning.
Warnings are returned in `LoadResult.warnings`, not logged: the caller (CLI, trainer) shows them.
`load_pairs` and `validate` hold every pair in memory; `stream_pairs` hands them over one at a
time (same checks, same messages) for inputs too large to hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefalign.data.formats import FORMATS, ParseOptions
from prefalign.data.scan import PairStream, ScanSummary
from prefalign.data.types import Defect, PreferencePair

Source = str | os.PathLike[str]

__all__ = ["LoadOptions", "LoadResult", "PairStream", "ScanSummary", "load_pairs", "stream_pairs",
           "validate"]


@dataclass(frozen=True)
class LoadOptions:
    """How to read preference data.

    format: a name from FORMATS, or "auto" to detect it per source (then checked on every record).
    on_error: "raise" stops with every defect listed; "skip" leaves invalid records out.
    preference_axis: PKU-SafeRLHF rows only: orient pairs by "better" or "safer" response.
    dedupe: drop pairs with exactly the same prompt, chosen and rejected as an earlier pair.
    """

    format: str = "auto"
    on_error: Literal["raise", "skip"] = "raise"
    preference_axis: Literal["better", "safer"] = "better"
    dedupe: bool = True

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in FORMATS:
            raise ValueError(f"format must be 'auto' or one of {list(FORMATS)}, got {self.format!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        ParseOptions(self.preference_axis)  # validates the axis


@dataclass(frozen=True)
class LoadResult:
    """The pairs kept, and an account of everything that was not kept."""

    pairs: list[PreferencePair]
    defects: list[Defect]
    format_by_source: dict[str, str]
    records_read: int
    records_rejected: int
    dropped_identical: list[PreferencePair] = field(default_factory=list)
    dropped_duplicates: list[PreferencePair] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.records_read} record(s) read, {len(self.pairs)} pair(s) kept, "
                f"{self.records_rejected} record(s) rejected ({len(self.defects)} defect(s)), "
                f"{len(self.dropped_identical)} chosen==rejected and "
                f"{len(self.dropped_duplicates)} duplicate pair(s) dropped")


def load_pairs(
    sources: Source | list[Source] | list[dict] | Any,
    options: LoadOptions = LoadOptions(),
    rejects_path: Path | None = None,
) -> LoadResult:
    """Pairs from one or more sources; with on_error="raise" any defect raises DataError (all listed)."""
    return _collect(PairStream(sources, options, rejects_path, keep_dropped=True))


def validate(
    sources: Source | list[Source] | list[dict] | Any, options: LoadOptions = LoadOptions()
) -> LoadResult:
    """Check every record of every source; never raises for data defects, returns them all."""
    return _collect(PairStream(sources, options, validate_only=True, keep_dropped=True))


def stream_pairs(
    sources: Source | list[Source] | list[dict] | Any,
    options: LoadOptions = LoadOptions(),
    rejects_path: Path | None = None,
    *,
    validate_only: bool = False,
) -> PairStream:
    """`load_pairs` (or with `validate_only`, `validate`) one pair at a time: iterate the stream
    once, then read its `summary`. Under on_error="raise" the iteration ends in DataError."""
    return PairStream(sources, options, rejects_path, validate_only=validate_only)


def _collect(stream: PairStream) -> LoadResult:
    pairs = list(stream)
    summary = stream.summary
    return LoadResult(
        pairs=pairs, defects=summary.defects, format_by_source=summary.format_by_source,
        records_read=summary.records_read, records_rejected=summary.records_rejected,
        dropped_identical=stream.identical.pairs, dropped_duplicates=stream.duplicates.pairs,
        warnings=summary.warnings,
    )
