"""Loading preference pairs: read every record of every source, check it, then drop and report.

Every source is read to the end before anything is decided, so an error lists every defect of
every file. Pairs whose chosen equals rejected and exact duplicates are dropped with a warning.
Warnings are returned in `LoadResult.warnings`, not logged: the caller (CLI, trainer) shows them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefalign.data.formats import FORMATS, FormatDetectionError, ParseOptions, detect_format
from prefalign.data.io import (
    DATASET_SOURCE,
    LIST_SOURCE,
    RawRecord,
    is_dataset,
    iter_records,
)
from prefalign.data.types import DataError, Defect, PreferencePair, Provenance
from prefalign.data.writers import write_jsonl_atomic

Source = str | os.PathLike[str]


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


@dataclass
class _Checked:
    """One source after parsing: pairs from valid records, rejected records with their defects."""

    name: str
    format: str
    records: int = 0
    pairs: list[PreferencePair] = field(default_factory=list)
    rejected: list[tuple[RawRecord, list[Defect]]] = field(default_factory=list)
    pairless: list[RawRecord] = field(default_factory=list)
    source_defects: list[Defect] = field(default_factory=list)


def load_pairs(
    sources: Source | list[Source] | list[dict] | Any,
    options: LoadOptions = LoadOptions(),
    rejects_path: Path | None = None,
) -> LoadResult:
    """Pairs from one or more sources; with on_error="raise" any defect raises DataError (all listed)."""
    checked = [_check_source(source, options) for source in _as_sources(sources)]
    result = _result(checked, options)
    if result.defects and options.on_error == "raise":
        raise DataError(result.defects, summary=(
            f"{len(result.defects)} defect(s) in {result.records_rejected} of "
            f"{result.records_read} record(s); nothing loaded (fix them, or leave invalid "
            "records out with on_error='skip' / --on-error skip)"))
    if options.on_error == "skip":
        _report_skipped(checked, result, rejects_path)
    return result


def validate(
    sources: Source | list[Source] | list[dict] | Any, options: LoadOptions = LoadOptions()
) -> LoadResult:
    """Check every record of every source; never raises for data defects, returns them all."""
    return _result([_check_source(source, options) for source in _as_sources(sources)], options)


def _as_sources(sources: object) -> list[object]:
    if isinstance(sources, str | os.PathLike) or is_dataset(sources):
        return [sources]
    if isinstance(sources, list | tuple):
        if sources and all(isinstance(s, str | os.PathLike) for s in sources):
            return list(sources)
        if all(not isinstance(s, str | os.PathLike) for s in sources):
            return [list(sources)]  # one in-memory source
        raise TypeError("pass either paths or in-memory records (dicts), not a mix of both")
    raise TypeError(f"cannot load preference data from {type(sources).__name__}")


def _check_source(source: object, options: LoadOptions) -> _Checked:
    records = list(iter_records(source))
    name = records[0].source if records else _source_name(source)
    checked = _Checked(name, options.format, records=len(records))
    if not records:
        first_line = 0 if name in (LIST_SOURCE, DATASET_SOURCE) else 1
        checked.source_defects.append(Defect(name, first_line, "<source>", "no records"))
    if options.format == "auto":
        _detect(checked, [r for r in records if r.defect is None])
    parse_options = ParseOptions(options.preference_axis)
    for record in records:
        if record.defect is not None:
            checked.rejected.append((record, [record.defect]))
        elif checked.source_defects:
            checked.rejected.append((record, checked.source_defects))
        else:
            _parse_record(checked, record, parse_options)
    return checked


def _detect(checked: _Checked, readable: list[RawRecord]) -> None:
    """Set the source's format from all its readable records, or record why it cannot be known."""
    checked.format = "unknown"
    if not readable:
        return
    try:
        checked.format = detect_format(readable, checked.name)
    except FormatDetectionError as error:
        checked.source_defects.append(Defect(checked.name, readable[0].line, "<format>", str(error)))


def _source_name(source: object) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    return DATASET_SOURCE if is_dataset(source) else LIST_SOURCE


def _parse_record(checked: _Checked, record: RawRecord, options: ParseOptions) -> None:
    base = Provenance(record.source, record.line)
    pairs, defects = FORMATS[checked.format].parse(record.data, base, options)
    if defects:
        checked.rejected.append((record, defects))
    elif not pairs:
        checked.pairless.append(record)
    checked.pairs.extend(pairs)


def _result(checked: list[_Checked], options: LoadOptions) -> LoadResult:
    defects = [d for c in checked for d in c.source_defects]
    # Records rejected for their source's defect (e.g. mixed formats) do not repeat it.
    defects += [d for c in checked for _, ds in c.rejected if ds is not c.source_defects for d in ds]
    pairs = [p for c in checked for p in c.pairs]
    kept, identical, duplicates = _drop_identical_and_duplicates(pairs, options.dedupe)
    warnings = _drop_warnings(identical, duplicates)
    pairless = [r for c in checked for r in c.pairless]
    if pairless:
        first = pairless[0]
        warnings.append(f"{len(pairless)} record(s) gave no pair because Accepted equals "
                        f"Rejected in every turn (first: {first.source}:{first.line})")
    return LoadResult(
        pairs=kept,
        defects=defects,
        format_by_source={c.name: c.format for c in checked},
        records_read=sum(c.records for c in checked),
        records_rejected=sum(len(c.rejected) for c in checked),
        dropped_identical=identical,
        dropped_duplicates=duplicates,
        warnings=warnings,
    )


def _drop_identical_and_duplicates(
    pairs: list[PreferencePair], dedupe: bool
) -> tuple[list[PreferencePair], list[PreferencePair], list[PreferencePair]]:
    kept, identical, duplicates = [], [], []
    seen: set[tuple] = set()
    for pair in pairs:
        if pair.chosen == pair.rejected:
            identical.append(pair)  # no preference to learn: DPO's gradient is exactly zero
            continue
        key = pair.content_key()
        if dedupe and key in seen:
            duplicates.append(pair)
            continue
        seen.add(key)
        kept.append(pair)
    return kept, identical, duplicates


def _drop_warnings(identical: list[PreferencePair], duplicates: list[PreferencePair]) -> list[str]:
    warnings = []
    if identical:
        warnings.append(f"dropped {len(identical)} pair(s) whose chosen equals rejected "
                        f"(first: {identical[0].provenance.pair_id})")
    if duplicates:
        warnings.append(f"dropped {len(duplicates)} exact duplicate pair(s) "
                        f"(first: {duplicates[0].provenance.pair_id})")
    return warnings


def _report_skipped(checked: list[_Checked], result: LoadResult, rejects_path: Path | None) -> None:
    """Say how many records were skipped, never silently; keep them in the side file if asked."""
    if rejects_path is not None:
        rows = (_reject_row(record, defects) for c in checked for record, defects in c.rejected)
        write_jsonl_atomic(rows, rejects_path)
    if result.records_rejected:
        where = f"see {rejects_path}" if rejects_path is not None else "pass rejects_path to keep them"
        result.warnings.insert(0, f"skipped {result.records_rejected} invalid record(s) "
                                  f"({len(result.defects)} defect(s)); {where}")


def _reject_row(record: RawRecord, defects: list[Defect]) -> dict[str, object]:
    return {
        "source": record.source,
        "line": record.line,
        "defects": [d.to_dict() for d in defects],
        "record": record.data if record.data is not None else record.raw_text,
    }
