"""Loading SFT conversations: read every record of every source, check it, then drop and report.

The same contract as `load_pairs`: every source is read to the end before anything is decided,
so an error lists every defect of every file (`PATH:LINE: FIELD: message`); exact duplicate
conversations are dropped with a warning; with on_error="skip" invalid records are left out,
counted, and written with their defects to `rejects_path` (atomically). Formats and their
rules: `prefalign.data.sft_formats` and `prefalign.data.conversation`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefalign.data.bundled import resolve_data_path
from prefalign.data.conversation import Conversation
from prefalign.data.formats import FORMATS, FormatDetectionError, ParseOptions, detect_format
from prefalign.data.io import DATASET_SOURCE, LIST_SOURCE, RawRecord, is_dataset, iter_records
from prefalign.data.sft_formats import (
    PREFERENCE_PREFIX,
    SFT_FORMATS,
    detect_sft_format,
    parse_record,
)
from prefalign.data.types import DataError, Defect, Provenance
from prefalign.data.writers import write_jsonl_atomic

__all__ = ["SFT_FORMATS", "SftLoadOptions", "SftLoadResult", "load_conversations",
           "validate_conversations"]


@dataclass(frozen=True)
class SftLoadOptions:
    """How to read SFT data.

    format: None to detect it per source from every record; else one of SFT_FORMATS
      ("preference" still detects which pair format) or `preference:NAME` (NAME in FORMATS).
    on_error: "raise" stops with every defect listed; "skip" leaves invalid records out.
    rejects_path: with on_error="skip", where the skipped records go with their defects.
    preference_axis: PKU-SafeRLHF rows only: "better" or "safer" picks the chosen response
      (None: the parser's default, "better").
    """

    format: str | None = None
    on_error: Literal["raise", "skip"] = "raise"
    rejects_path: Path | None = None
    preference_axis: str | None = None

    def __post_init__(self) -> None:
        named = self.format
        if named is not None and named not in SFT_FORMATS and not (
            named.startswith(PREFERENCE_PREFIX) and named.removeprefix(PREFERENCE_PREFIX) in FORMATS
        ):
            raise ValueError(
                f"format: must be None (detect), one of {list(SFT_FORMATS)} or preference:NAME "
                f"with NAME one of {list(FORMATS)}; got {named!r}"
            )
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error: must be 'raise' or 'skip', got {self.on_error!r}")
        self.parse_options()  # validates the axis

    def parse_options(self) -> ParseOptions:
        if self.preference_axis is None:
            return ParseOptions()
        return ParseOptions(self.preference_axis)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SftLoadResult:
    """The conversations kept, and an account of everything that was not kept.

    counts: records (read), skipped (records with defects, left out), defects, loaded (valid
    conversations), duplicates (dropped), kept, assistant_turns (in the kept conversations).
    formats: source -> format (`messages`, `prompt_completion`, `preference:NAME`, or
    `unknown` when it could not be told). defects: every defect (empty when nothing was wrong).
    """

    conversations: list[Conversation]
    counts: dict[str, int]
    warnings: list[str]
    formats: dict[str, str]
    defects: list[Defect] = field(default_factory=list)

    def summary(self) -> str:
        c = self.counts
        return (f"{c['records']} record(s) read, {c['kept']} conversation(s) kept, "
                f"{c['skipped']} record(s) rejected ({c['defects']} defect(s)), "
                f"{c['duplicates']} duplicate conversation(s) dropped")


@dataclass
class _Checked:
    """One source after parsing: conversations from valid records, rejected records."""

    name: str
    format: str
    records: int = 0
    conversations: list[Conversation] = field(default_factory=list)
    rejected: list[tuple[RawRecord, list[Defect]]] = field(default_factory=list)
    source_defects: list[Defect] = field(default_factory=list)


def load_conversations(
    sources: Any, options: SftLoadOptions = SftLoadOptions()
) -> SftLoadResult:
    """Conversations from paths, `bundled:NAME` names, a list of dicts or a datasets.Dataset.

    With on_error="raise" any defect raises DataError listing every defect; nothing is loaded.
    """
    checked = [_check_source(source, options) for source in _as_sources(sources)]
    result = _result(checked)
    if result.defects and options.on_error == "raise":
        c = result.counts
        raise DataError(result.defects, summary=(
            f"{c['defects']} defect(s) in {c['skipped']} of {c['records']} record(s) of SFT "
            "data; nothing loaded (fix them, or leave invalid records out with "
            "on_error='skip' / --on-error skip)"))
    if options.on_error == "skip":
        _report_skipped(checked, result, options.rejects_path)
    return result


def validate_conversations(
    sources: Any, options: SftLoadOptions = SftLoadOptions()
) -> SftLoadResult:
    """Check every record of every source; never raises for data defects, returns them all."""
    return _result([_check_source(source, options) for source in _as_sources(sources)])


def _as_sources(sources: object) -> list[object]:
    """Each path (bundled names resolved) is a source; a list of records is one source."""
    def resolve(path: object) -> object:
        return resolve_data_path(path) if isinstance(path, str) else path

    if isinstance(sources, str | os.PathLike) or is_dataset(sources):
        return [resolve(sources)]
    if isinstance(sources, list | tuple):
        if sources and all(isinstance(s, str | os.PathLike) for s in sources):
            return [resolve(s) for s in sources]
        if all(not isinstance(s, str | os.PathLike) for s in sources):
            return [list(sources)]
        raise TypeError("pass either paths or in-memory records (dicts), not a mix of both")
    raise TypeError(f"cannot load SFT data from {type(sources).__name__}")


def _check_source(source: object, options: SftLoadOptions) -> _Checked:
    records = list(iter_records(source))
    name = records[0].source if records else _source_name(source)
    checked = _Checked(name, options.format or "unknown", records=len(records))
    if not records:
        first_line = 0 if name in (LIST_SOURCE, DATASET_SOURCE) else 1
        checked.source_defects.append(Defect(name, first_line, "<source>", "no records"))
    readable = [r for r in records if r.defect is None]
    if options.format in (None, "preference") and readable:
        _detect(checked, readable, options.format)
    parse_options = options.parse_options()
    for record in records:
        if record.defect is not None:
            checked.rejected.append((record, [record.defect]))
        elif checked.source_defects:
            checked.rejected.append((record, checked.source_defects))
        else:
            _parse(checked, record, parse_options)
    return checked


def _detect(checked: _Checked, readable: list[RawRecord], named: str | None) -> None:
    try:
        if named == "preference":
            checked.format = PREFERENCE_PREFIX + detect_format(readable, checked.name)
        else:
            checked.format = detect_sft_format(readable, checked.name)
    except FormatDetectionError as error:
        checked.format = "unknown"
        checked.source_defects.append(Defect(checked.name, readable[0].line, "<format>", str(error)))


def _source_name(source: object) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    return DATASET_SOURCE if is_dataset(source) else LIST_SOURCE


def _parse(checked: _Checked, record: RawRecord, options: ParseOptions) -> None:
    base = Provenance(record.source, record.line)
    conversation, defects = parse_record(checked.format, record.data, base, options)
    if defects:
        checked.rejected.append((record, defects))
    elif conversation is not None:
        checked.conversations.append(conversation)


def _result(checked: list[_Checked]) -> SftLoadResult:
    defects = [d for c in checked for d in c.source_defects]
    # Records rejected for their source's defect (mixed formats, ...) do not repeat it.
    defects += [d for c in checked for _, ds in c.rejected if ds is not c.source_defects for d in ds]
    loaded = [conv for c in checked for conv in c.conversations]
    kept, duplicates = _drop_duplicates(loaded)
    warnings = []
    if duplicates:
        warnings.append(f"dropped {len(duplicates)} exact duplicate conversation(s) "
                        f"(first: {duplicates[0].conversation_id})")
    counts = {
        "records": sum(c.records for c in checked),
        "skipped": sum(len(c.rejected) for c in checked),
        "defects": len(defects),
        "loaded": len(loaded),
        "duplicates": len(duplicates),
        "kept": len(kept),
        "assistant_turns": sum(conv.assistant_turns for conv in kept),
    }
    formats = {c.name: c.format for c in checked}
    return SftLoadResult(kept, counts, warnings, formats, defects)


def _drop_duplicates(
    conversations: list[Conversation],
) -> tuple[list[Conversation], list[Conversation]]:
    kept, duplicates = [], []
    seen: set[tuple] = set()
    for conversation in conversations:
        key = conversation.content_key()
        if key in seen:
            duplicates.append(conversation)
        else:
            seen.add(key)
            kept.append(conversation)
    return kept, duplicates


def _report_skipped(
    checked: list[_Checked], result: SftLoadResult, rejects_path: Path | None
) -> None:
    """Say how many records were skipped, never silently; keep them in the side file if asked."""
    if rejects_path is not None:
        rows = (_reject_row(record, defects) for c in checked for record, defects in c.rejected)
        write_jsonl_atomic(rows, rejects_path)
    skipped = result.counts["skipped"]
    if skipped:
        where = f"see {rejects_path}" if rejects_path is not None else "pass rejects_path to keep them"
        result.warnings.insert(0, f"skipped {skipped} invalid record(s) "
                                  f"({result.counts['defects']} defect(s)); {where}")


def _reject_row(record: RawRecord, defects: list[Defect]) -> dict[str, object]:
    return {
        "source": record.source,
        "line": record.line,
        "defects": [d.to_dict() for d in defects],
        "record": record.data if record.data is not None else record.raw_text,
    }
