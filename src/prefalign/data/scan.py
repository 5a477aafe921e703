"""Stream preference pairs from their sources: every record read and checked, one pair at a time.

Memory does not grow with the records: what is kept is the defects, counts, and a 16-byte
digest per kept pair (to drop exact duplicates), never the records or the pairs. With format
"auto" each source is read twice, once to detect its format from every record and once to
parse; a named format needs one reading. `load_pairs` and `validate` (load.py) collect this
stream; `data validate`, `data audit` and `data convert` consume it as it comes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefalign.data.formats import FORMATS, FormatDetectionError, FormatTally, ParseOptions
from prefalign.data.io import (
    DATASET_SOURCE,
    LIST_SOURCE,
    RawRecord,
    check_readable,
    is_dataset,
    iter_records,
)
from prefalign.data.types import DataError, Defect, PreferencePair, Provenance
from prefalign.data.writers import jsonl_writer

if TYPE_CHECKING:
    from prefalign.data.load import LoadOptions

WriteReject = Callable[[dict], None]


@dataclass(frozen=True)
class ScanSummary:
    """Everything about a finished stream except the pairs themselves."""

    defects: list[Defect]
    format_by_source: dict[str, str]
    records_read: int
    records_rejected: int
    pairs_kept: int
    identical_dropped: int
    duplicates_dropped: int
    warnings: list[str]


@dataclass
class _Dropped:
    """Pairs dropped for one reason: how many, the first one's id, and the pairs if asked."""

    keep: bool
    count: int = 0
    first: str | None = None
    pairs: list[PreferencePair] = field(default_factory=list)

    def add(self, pair: PreferencePair) -> None:
        self.count += 1
        self.first = self.first or pair.provenance.pair_id
        if self.keep:
            self.pairs.append(pair)


def content_digest(pair: PreferencePair) -> bytes:
    """16 bytes that identify the pair's content (prompt messages, chosen, rejected).

    The hashed text is the message count, then each role, content length and content, then
    each response's length and text, one per line: the lengths make it decodable, so two pairs
    share it only if their contents are equal (and three times cheaper than json.dumps).
    """
    parts = [str(len(pair.prompt))]
    for message in pair.prompt:
        parts += (message.role, str(len(message.content)), message.content)
    parts += (str(len(pair.chosen)), pair.chosen, str(len(pair.rejected)), pair.rejected)
    text = "\n".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


class PairStream:
    """The kept pairs of every source, in order, read once; `summary` after the last one.

    Load semantics (the default): with on_error="raise" the iteration ends by raising DataError
    listing every defect, so pairs handed over before it are provisional: commit nothing until
    the stream ends (`data convert` writes to a temp file that the error removes). With "skip"
    invalid records are left out, written to `rejects_path` (atomically, once everything is
    read) and counted in a warning. `validate_only`: never raise, write nothing.
    `keep_dropped` keeps the dropped pairs (for `load_pairs`).
    """

    def __init__(self, sources: Any, options: LoadOptions, rejects_path: Path | None = None, *,
                 validate_only: bool = False, keep_dropped: bool = False) -> None:
        self.sources = as_sources(sources)
        for source in self.sources:
            if isinstance(source, str | os.PathLike):
                check_readable(Path(source))  # a missing file fails now, not after the others
        self.options = options
        self.rejects_path = rejects_path if options.on_error == "skip" and not validate_only else None
        self.validate_only = validate_only
        self.identical, self.duplicates = _Dropped(keep_dropped), _Dropped(keep_dropped)
        self._summary: ScanSummary | None = None
        self._started = False

    @property
    def summary(self) -> ScanSummary:
        if self._summary is None:
            raise RuntimeError("the stream's summary exists once every pair has been read")
        return self._summary

    def __iter__(self) -> Iterator[PreferencePair]:
        if self._started:
            raise RuntimeError("a PairStream can be read once; make a new one")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[PreferencePair]:
        account = _Account(self.options, self.identical, self.duplicates)
        writer = jsonl_writer(self.rejects_path) if self.rejects_path else nullcontext(None)
        with writer as write_reject:
            for source in self.sources:
                yield from account.read_source(source, write_reject)
            summary = account.summary()
            if summary.defects and self.options.on_error == "raise" and not self.validate_only:
                raise DataError(summary.defects, summary=(
                    f"{len(summary.defects)} defect(s) in {summary.records_rejected} of "
                    f"{summary.records_read} record(s); nothing loaded (fix them, or leave "
                    "invalid records out with on_error='skip' / --on-error skip)"))
        if self.options.on_error == "skip" and not self.validate_only and summary.records_rejected:
            where = f"see {self.rejects_path}" if self.rejects_path else "pass rejects_path to keep them"
            summary.warnings.insert(0, f"skipped {summary.records_rejected} invalid record(s) "
                                       f"({len(summary.defects)} defect(s)); {where}")
        self._summary = summary


class _Account:
    """The running account of one stream: defects, counts, digests of the pairs kept."""

    def __init__(self, options: LoadOptions, identical: _Dropped, duplicates: _Dropped) -> None:
        self.options = options
        self.parse_options = ParseOptions(options.preference_axis)
        self.source_defects: list[Defect] = []
        self.record_defects: list[Defect] = []
        self.format_by_source: dict[str, str] = {}
        self.records_read = self.records_rejected = self.kept = self.pairless = 0
        self.first_pairless: RawRecord | None = None
        self.seen: set[bytes] = set()
        self.identical, self.duplicates = identical, duplicates

    def read_source(self, source: object, write_reject: WriteReject | None) -> Iterator[PreferencePair]:
        name = source_name(source)
        fmt, source_defects, expected = self.options.format, [], None
        if fmt == "auto":
            fmt, source_defects, expected = _detect(source, name)
            self.source_defects += source_defects
        records = 0
        for record in iter_records(source):
            records += 1
            if record.defect is not None:
                self._reject(record, [record.defect], write_reject)
            elif source_defects:  # the source's defect is listed once, not per record
                self._reject(record, source_defects, write_reject, listed=True)
            else:
                yield from self._parse(record, fmt, write_reject)
        if expected is not None and records != expected:
            raise ValueError(f"{name} changed while it was read: {expected} record(s) at first, "
                             f"then {records}")
        if not records and expected is None:
            self.source_defects.append(_no_records(name))
        self.format_by_source[name] = fmt
        self.records_read += records

    def _parse(self, record: RawRecord, fmt: str, write_reject: WriteReject | None) -> Iterator[PreferencePair]:
        base = Provenance(record.source, record.line)
        pairs, defects = FORMATS[fmt].parse(record.data, base, self.parse_options)
        if defects:
            self._reject(record, defects, write_reject)
            return
        if not pairs:
            self.pairless += 1
            self.first_pairless = self.first_pairless or record
        for pair in pairs:
            if pair.chosen == pair.rejected:
                self.identical.add(pair)  # no preference to learn: DPO's gradient is exactly zero
                continue
            if self.options.dedupe:
                digest = content_digest(pair)
                if digest in self.seen:
                    self.duplicates.add(pair)
                    continue
                self.seen.add(digest)
            self.kept += 1
            yield pair

    def _reject(self, record: RawRecord, defects: list[Defect], write_reject: WriteReject | None,
                *, listed: bool = False) -> None:
        self.records_rejected += 1
        if not listed:
            self.record_defects += defects
        if write_reject is not None:
            write_reject({
                "source": record.source,
                "line": record.line,
                "defects": [d.to_dict() for d in defects],
                "record": record.data if record.data is not None else record.raw_text,
            })

    def summary(self) -> ScanSummary:
        warnings = []
        for dropped, what in ((self.identical, "pair(s) whose chosen equals rejected"),
                              (self.duplicates, "exact duplicate pair(s)")):
            if dropped.count:
                warnings.append(f"dropped {dropped.count} {what} (first: {dropped.first})")
        if self.first_pairless is not None:
            first = self.first_pairless
            warnings.append(f"{self.pairless} record(s) gave no pair because Accepted equals "
                            f"Rejected in every turn (first: {first.source}:{first.line})")
        return ScanSummary(
            defects=self.source_defects + self.record_defects,
            format_by_source=self.format_by_source, records_read=self.records_read,
            records_rejected=self.records_rejected, pairs_kept=self.kept,
            identical_dropped=self.identical.count, duplicates_dropped=self.duplicates.count,
            warnings=warnings,
        )


def _detect(source: object, name: str) -> tuple[str, list[Defect], int]:
    """The first reading of an auto-detected source: its format (or why it has none), and how
    many records it has."""
    tally, records = FormatTally(name), 0
    for record in iter_records(source):
        records += 1
        if record.defect is None:
            tally.add(record.line, record.data)
    if not records:
        return "unknown", [_no_records(name)], 0
    if tally.first_line is None:
        return "unknown", [], records  # every record is unreadable: each has its own defect
    try:
        return tally.result(), [], records
    except FormatDetectionError as error:
        return "unknown", [Defect(name, tally.first_line, "<format>", str(error))], records


def _no_records(name: str) -> Defect:
    return Defect(name, 0 if name in (LIST_SOURCE, DATASET_SOURCE) else 1, "<source>", "no records")


def source_name(source: object) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    return DATASET_SOURCE if is_dataset(source) else LIST_SOURCE


def as_sources(sources: object) -> list[object]:
    """One or more paths, one list of dicts, or one Dataset, as a list of sources."""
    if isinstance(sources, str | os.PathLike) or is_dataset(sources):
        return [sources]
    if isinstance(sources, list | tuple):
        if sources and all(isinstance(s, str | os.PathLike) for s in sources):
            return list(sources)
        if all(not isinstance(s, str | os.PathLike) for s in sources):
            return [list(sources)]  # one in-memory source
        raise TypeError("pass either paths or in-memory records (dicts), not a mix of both")
    raise TypeError(f"cannot load preference data from {type(sources).__name__}")
