"""Reading raw records from JSONL / JSON-array files (optionally gzipped), Parquet and CSV files,
`datasets.save_to_disk` folders, lists of dicts and Datasets (the tabular ones: `tables.py`).

Every record comes back with its location; a record that cannot be read (invalid UTF-8, not
JSON, not an object) comes back as a defect instead of stopping the reading, so that one pass
reports every problem in a file.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prefalign.data.types import Defect

BOM = b"\xef\xbb\xbf"
LIST_SOURCE = "<list>"
DATASET_SOURCE = "<dataset>"
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


@dataclass(frozen=True)
class RawRecord:
    """One record as read: its data, or the defect that kept it from being read.

    `line` is the 1-based line for JSONL files, the 1-based line a row starts on for CSV files
    (the header is line 1), the 1-based row for Parquet files and saved datasets, and the 0-based
    element index for JSON arrays, lists and in-memory Datasets. `raw_text` keeps the
    undecodable text of a defective line (for the rejects file).
    """

    source: str
    line: int
    data: dict | None
    defect: Defect | None = None
    raw_text: str | None = None


def json_type(value: object) -> str:
    """The JSON name of a value's type, for messages a data author recognises."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {str: "string", int: "integer", float: "number", list: "array", dict: "object"}
    return next((name for cls, name in names.items() if isinstance(value, cls)), type(value).__name__)


def is_dataset(source: object) -> bool:
    """A `datasets.Dataset`, recognised without importing `datasets` when it is not loaded yet."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(source, module.Dataset)


def iter_records(source: str | os.PathLike[str] | list[Mapping] | Any) -> Iterator[RawRecord]:
    """Every record of a path (.jsonl, .json, either gzipped; .parquet; .csv, .csv.gz; a folder
    written by `Dataset.save_to_disk`), a list of dicts or a Dataset."""
    if isinstance(source, str | os.PathLike):
        yield from _iter_path(check_readable(Path(source)))
    elif isinstance(source, list | tuple):
        yield from _iter_objects(source, LIST_SOURCE)
    elif is_dataset(source):
        from prefalign.data.tables import iter_dataset

        yield from iter_dataset(source, DATASET_SOURCE, first_row=0)
    else:
        raise TypeError(
            f"cannot read preference records from {type(source).__name__}; pass a path, "
            "a list of dicts or a datasets.Dataset"
        )


def _iter_objects(rows: Iterable[object], name: str) -> Iterator[RawRecord]:
    for index, row in enumerate(rows):
        yield as_record(name, index, row, None)


def as_record(source: str, line: int, value: object, raw_text: str | None) -> RawRecord:
    """The record for a value read at `line`; a defect unless it is a mapping."""
    if isinstance(value, Mapping):
        return RawRecord(source, line, dict(value))
    message = f"expected a JSON object, got {json_type(value)}"
    return RawRecord(source, line, None, Defect(source, line, "<record>", message), raw_text)


def check_readable(path: Path) -> Path:
    """The path, if it is a file or a folder (checked, when read, to be a saved dataset)."""
    if not path.exists():
        raise FileNotFoundError(f"no such preference data file: {path}")
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"not a file: {path}")
    return path


def _iter_path(path: Path) -> Iterator[RawRecord]:
    # pyarrow and datasets load only for the inputs that need them.
    if path.is_dir():
        from prefalign.data.tables import iter_saved_dataset

        yield from iter_saved_dataset(path)
    elif path.name.endswith(".parquet"):
        from prefalign.data.tables import iter_parquet

        yield from iter_parquet(path)
    elif path.name.endswith((".csv", ".csv.gz")):
        from prefalign.data.tables import iter_csv

        yield from iter_csv(path)
    else:
        yield from _iter_file(path)


def open_bytes(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed on the fly for a `.gz` name."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _iter_file(path: Path) -> Iterator[RawRecord]:
    name = str(path)
    last_line = 0
    try:
        with open_bytes(path) as handle:
            for record in _iter_handle(name, path.name.removesuffix(".gz"), handle):
                last_line = record.line
                yield record
    except GZIP_ERRORS as error:
        # A truncated or corrupt archive: report where reading stopped, keep what was read.
        message = f"cannot decompress gzip data after line {last_line}: {error}"
        yield RawRecord(name, last_line + 1, None, Defect(name, last_line + 1, "<file>", message))


def _iter_handle(name: str, plain_name: str, handle: IO[bytes]) -> Iterator[RawRecord]:
    """`.json` files holding an array are read whole; everything else is read as JSON lines."""
    if not plain_name.endswith(".json"):
        yield from _iter_lines(name, handle)
        return
    payload = handle.read()
    if payload.removeprefix(BOM).lstrip().startswith(b"["):
        yield from _iter_array(name, payload)
    else:
        yield from _iter_lines(name, payload.split(b"\n"))


def _iter_lines(name: str, lines: Iterable[bytes]) -> Iterator[RawRecord]:
    """JSONL: each line decoded on its own, so one bad line does not hide the others."""
    for number, raw in enumerate(lines, 1):
        if number == 1:
            raw = raw.removeprefix(BOM)
        raw = raw.rstrip(b"\r\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            message = f"invalid UTF-8 at byte {error.start + 1} of the line"
            text = raw.decode("utf-8", errors="replace")
            yield RawRecord(name, number, None, Defect(name, number, "<line>", message), text)
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            message = f"not valid JSON: {error.msg} (column {error.colno})"
            yield RawRecord(name, number, None, Defect(name, number, "<line>", message), text)
            continue
        yield as_record(name, number, value, text)


def _iter_array(name: str, payload: bytes) -> Iterator[RawRecord]:
    """A JSON array file: elements are numbered by their 0-based index."""
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = payload[: error.start].count(b"\n") + 1
        yield RawRecord(name, line, None, Defect(name, line, "<line>", "invalid UTF-8"))
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        yield RawRecord(name, error.lineno, None, Defect(name, error.lineno, "<line>", message))
        return
    if not isinstance(value, list):
        message = f"expected a JSON array of objects, got {json_type(value)}"
        yield RawRecord(name, 1, None, Defect(name, 1, "<file>", message))
        return
    for index, element in enumerate(value):
        raw = None if isinstance(element, Mapping) else json.dumps(element, ensure_ascii=False)
        yield as_record(name, index, element, raw)
