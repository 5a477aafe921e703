"""The input formats, by name, and detection of a source's format from all of its records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from prefalign.data.formats import accepted_rejected, hh_rlhf, pku_saferlhf, trl
from prefalign.data.formats._common import ParseOptions
from prefalign.data.io import RawRecord

FORMATS = {
    "accepted_rejected": accepted_rejected,
    "trl": trl,
    "hh_rlhf": hh_rlhf,
    "pku_saferlhf": pku_saferlhf,
}

__all__ = ["FORMATS", "FormatDetectionError", "FormatTally", "ParseOptions", "detect_format"]


class FormatDetectionError(ValueError):
    """No record looks like a known format, or the records look like different formats."""


class FormatTally:
    """Which formats a source's records match, one record at a time, in bounded memory.

    It keeps, per format, how many records match and the first few of their lines (what the
    mixed-formats message shows), and the first record that matches none.
    """

    SHOWN = 5

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self.first_line: int | None = None  # of the first readable record
        self._lines: dict[str, list[int]] = {}
        self._counts: dict[str, int] = defaultdict(int)
        self._unmatched: tuple[int, Mapping] | None = None

    def add(self, line: int, data: Mapping) -> None:
        if self.first_line is None:
            self.first_line = line
        matches = [name for name, module in FORMATS.items() if module.looks_like(data)]
        for name in matches:
            shown = self._lines.setdefault(name, [])
            if len(shown) < self.SHOWN:
                shown.append(line)
            self._counts[name] += 1
        if not matches and self._unmatched is None:
            self._unmatched = (line, {key: None for key in data})  # its keys, for the message

    def result(self) -> str:
        """The one format every matching record has; FormatDetectionError otherwise."""
        where = f" of {self.source}" if self.source else ""
        if not self._lines:
            raise FormatDetectionError(_no_match_message(where, self._unmatched))
        if len(self._lines) > 1:
            listing = "; ".join(f"{name} at {_lines(lines, self._counts[name])}"
                                for name, lines in self._lines.items())
            raise FormatDetectionError(
                f"the records{where} mix formats: {listing}. Split them by format, or name one "
                "format to check every record against it"
            )
        return next(iter(self._lines))


def detect_format(records: Iterable[RawRecord | Mapping], source: str | None = None) -> str:
    """The one format that the records match, checked on every readable record.

    Records that match no format are left to that format's parser, which will name their
    defects; records that match a different format than the others make the source mixed.
    """
    tally = FormatTally(source)
    for index, record in enumerate(records):
        line, data = (record.line, record.data) if isinstance(record, RawRecord) else (index, record)
        if data is not None:
            tally.add(line, data)
    return tally.result()


def _no_match_message(where: str, unmatched: tuple[int, Mapping] | None) -> str:
    known = ", ".join(FORMATS)
    if unmatched is None:
        return f"cannot detect the format{where}: it has no readable records"
    line, data = unmatched
    return (f"cannot detect the format{where}: no record looks like a known format ({known}); "
            f"line {line} has keys {sorted(map(str, data))}")


def _lines(shown: list[int], count: int) -> str:
    head = ", ".join(map(str, shown))
    more = f" (+{count - len(shown)} more)" if count > len(shown) else ""
    return f"line{'s' if count > 1 else ''} {head}{more}"
