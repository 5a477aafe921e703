"""Reading records from tabular inputs: Parquet files, CSV files, `datasets.save_to_disk` folders.

Rows stream in batches (pyarrow's `iter_batches`, the csv module, `Dataset.iter`), so a file
is never held whole. Rows are numbered from 1; a CSV row by the file line it starts on (the
header is line 1), so an editor jumps to it. A problem that stops the reading of a file (not
Parquet, a broken CSV quote) comes back as a `<file>` defect after the rows read so far.

CSV cells are text, with one exception: a cell holding a JSON array or object (its text starts
with `[` or `{` and parses) is decoded, so message lists (conversational TRL) and the
Accepted/Rejected lists can live in a cell. A cell that looks like a Python list or dict
(`[{'role': ...`, what `str()` of a list gives, e.g. pandas' `to_csv`) is a defect rather than
text, because read as text it would silently become a prompt.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefalign.data.io import GZIP_ERRORS, RawRecord, as_record, open_bytes
from prefalign.data.types import Defect

BATCH_ROWS = 1024
# Responses of megabytes are legal input (tokenising caps them); the csv module's default cell
# limit (131,072 characters) would stop the file.
CSV_FIELD_LIMIT = 1 << 30
_PYTHON_REPR = re.compile(r"\s*[\[{]\s*[\[{]?\s*'")
_SAVED_DATASET_FILES = ("state.json", "dataset_info.json")


def _file_defect(name: str, line: int, message: str) -> RawRecord:
    return RawRecord(name, line, None, Defect(name, line, "<file>", message))


# Parquet --------------------------------------------------------------------------------------

def iter_parquet(path: Path) -> Iterator[RawRecord]:
    """Every row of a Parquet file, read one batch of rows at a time."""
    import pyarrow
    import pyarrow.parquet as pq

    name, row = str(path), 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        for batch in batches:
            for data in batch.to_pylist():
                row += 1
                yield RawRecord(name, row, data)
    except (pyarrow.ArrowException, OSError) as error:
        yield _file_defect(name, row + 1, f"cannot read Parquet data after row {row}: {error}")


# saved datasets -------------------------------------------------------------------------------

def iter_saved_dataset(path: Path) -> Iterator[RawRecord]:
    """Every row of a folder written by `Dataset.save_to_disk` (Arrow files; nothing unpickled)."""
    splits = _dataset_dict_splits(path)
    if splits is not None:
        shown = ", ".join(splits) or "none"
        example = path / splits[0] if splits else path / "SPLIT"
        raise ValueError(f"{path} is a saved DatasetDict (splits: {shown}); pass one split's "
                         f"folder, e.g. {example}")
    if not all((path / file).is_file() for file in _SAVED_DATASET_FILES):
        raise FileNotFoundError(
            f"{path} is a folder but not a dataset saved with datasets' save_to_disk (it has no "
            f"{' and '.join(_SAVED_DATASET_FILES)}); pass a .jsonl, .json, .parquet or .csv file, "
            "or such a folder")
    import datasets
    import pyarrow

    try:
        dataset = datasets.load_from_disk(str(path))
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        yield _file_defect(str(path), 1, f"cannot load the saved dataset: {error}")
        return
    yield from iter_dataset(dataset, str(path), first_row=1)


def _dataset_dict_splits(path: Path) -> list[str] | None:
    marker = path / "dataset_dict.json"
    if not marker.is_file():
        return None
    try:
        splits = json.loads(marker.read_text(encoding="utf-8")).get("splits", [])
    except (ValueError, AttributeError):
        splits = []
    return [str(s) for s in splits] if isinstance(splits, list) else []


def iter_dataset(dataset: Any, name: str, *, first_row: int) -> Iterator[RawRecord]:
    """The rows of a `datasets.Dataset`, fetched a batch at a time (row by row is far slower)."""
    row = first_row
    for batch in dataset.with_format(None).iter(batch_size=BATCH_ROWS):
        columns = list(batch)
        for values in zip(*batch.values(), strict=True):
            yield RawRecord(name, row, dict(zip(columns, values, strict=True)))
            row += 1


# CSV ------------------------------------------------------------------------------------------

def iter_csv(path: Path) -> Iterator[RawRecord]:
    """Every row of a CSV file with a header row (UTF-8, optional BOM; `.csv.gz` decompressed)."""
    name, line = str(path), 0
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    try:
        with open_bytes(path) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.reader(text, strict=True)  # a stray quote is an error, not a guess
            header: list[str] | None = None
            for cells in reader:
                start, line = line + 1, reader.line_num
                if not cells:
                    continue  # a blank line
                if header is None:
                    header = cells
                    problem = _header_problem(cells)
                    if problem:
                        yield _file_defect(name, start, problem)
                        return
                    continue
                yield _csv_record(name, start, header, cells)
    except csv.Error as error:
        yield _file_defect(name, line + 1, f"not valid CSV: {error}")
    except GZIP_ERRORS as error:
        yield _file_defect(name, line + 1, f"cannot decompress gzip data after line {line}: {error}")


def _header_problem(header: list[str]) -> str | None:
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        return f"the header row repeats column(s) {', '.join(map(repr, repeated))}"
    return None


def _csv_record(name: str, line: int, header: list[str], cells: list[str]) -> RawRecord:
    raw_text = ",".join(cells)
    try:
        raw_text.encode("utf-8")
    except UnicodeEncodeError:
        message = "invalid UTF-8 in this row"
        return RawRecord(name, line, None, Defect(name, line, "<row>", message),
                         raw_text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    if len(cells) != len(header):
        message = f"has {len(cells)} cell(s), the header has {len(header)}"
        return RawRecord(name, line, None, Defect(name, line, "<row>", message), raw_text)
    data: dict[str, object] = {}
    for column, cell in zip(header, cells, strict=True):
        value = _cell_value(cell)
        if value is _NOT_JSON:
            message = ("looks like a Python list or dict, not JSON; write list cells as JSON "
                       "(json.dumps), not str() of the list")
            return RawRecord(name, line, None, Defect(name, line, column, message), raw_text)
        data[column] = value
    return as_record(name, line, data, raw_text)


_NOT_JSON = object()


def _cell_value(cell: str) -> object:
    """The cell's text, or the JSON array/object it holds; _NOT_JSON for a Python repr."""
    if not cell.lstrip().startswith(("[", "{")):
        return cell
    try:
        value = json.loads(cell)
    except ValueError:
        return _NOT_JSON if _PYTHON_REPR.match(cell) else cell
    return value if isinstance(value, list | dict) else cell
