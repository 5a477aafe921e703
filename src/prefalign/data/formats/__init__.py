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

__all__ = ["FORMATS", "FormatDetectionError", "ParseOptions", "detect_format"]


class FormatDetectionError(ValueError):
    """No record looks like a known format, or the records look like different formats."""


def detect_format(records: Iterable[RawRecord | Mapping], source: str | None = None) -> str:
    """The one format that the records match, checked on every readable record.

    Records that match no format are left to that format's parser, which will name their
    defects; records that match a different format than the others make the source mixed.
    """
    lines_by_format: dict[str, list[int]] = defaultdict(list)
    unmatched: list[tuple[int, Mapping]] = []
    for index, record in enumerate(records):
        line, data = (record.line, record.data) if isinstance(record, RawRecord) else (index, record)
        if data is None:
            continue
        matches = [name for name, module in FORMATS.items() if module.looks_like(data)]
        for name in matches:
            lines_by_format[name].append(line)
        if not matches:
            unmatched.append((line, data))
    where = f" of {source}" if source else ""
    if not lines_by_format:
        raise FormatDetectionError(_no_match_message(where, unmatched))
    if len(lines_by_format) > 1:
        listing = "; ".join(f"{name} at {_lines(lines)}" for name, lines in lines_by_format.items())
        raise FormatDetectionError(
            f"the records{where} mix formats: {listing}. Split them by format, or name one "
            "format to check every record against it"
        )
    return next(iter(lines_by_format))


def _no_match_message(where: str, unmatched: list[tuple[int, Mapping]]) -> str:
    known = ", ".join(FORMATS)
    if not unmatched:
        return f"cannot detect the format{where}: it has no readable records"
    line, data = unmatched[0]
    return (f"cannot detect the format{where}: no record looks like a known format ({known}); "
            f"line {line} has keys {sorted(map(str, data))}")


def _lines(lines: list[int], shown: int = 5) -> str:
    head = ", ".join(map(str, lines[:shown]))
    more = f" (+{len(lines) - shown} more)" if len(lines) > shown else ""
    return f"line{'s' if len(lines) > 1 else ''} {head}{more}"
