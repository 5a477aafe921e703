"""Reading raw records: line numbers, BOM, invalid UTF-8, gzip, JSON arrays, lists and Datasets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from prefalign.data.io import RawRecord, iter_records

FILES = Path(__file__).parent / "files"


def _defects(records: list[RawRecord]) -> list[str]:
    return [str(r.defect) for r in records if r.defect is not None]


def test_jsonl_lines_are_1_based_and_blank_lines_are_skipped():
    records = list(iter_records(FILES / "ar_valid.jsonl"))
    # Lines 1, 2 and 4 hold records; line 3 is blank.
    assert [r.line for r in records] == [1, 2, 4]
    assert all(r.defect is None and r.source == str(FILES / "ar_valid.jsonl") for r in records)


def test_utf8_byte_order_mark_is_accepted():
    (record,) = iter_records(FILES / "bom.jsonl")
    assert record.defect is None
    assert record.data["prompt"] == "café?"


def test_invalid_utf8_is_a_defect_of_its_line_only(tmp_path):
    path = FILES / "invalid_utf8.jsonl"
    records = list(iter_records(path))
    # '{"prompt": "bad ' is 16 bytes, so the 0xff byte is byte 17 of line 2.
    assert _defects(records) == [f"{path}:2: <line>: invalid UTF-8 at byte 17 of the line"]
    assert [r.data["prompt"] for r in records if r.data] == ["one", "three"]
    assert "bad" in records[1].raw_text  # kept for the rejects file


def test_line_that_is_not_json_and_non_object_values():
    path = FILES / "ar_broken.jsonl"
    defects = _defects(list(iter_records(path)))
    assert f"{path}:6: <line>: not valid JSON: Expecting ',' delimiter (column 77)" in defects
    assert f"{path}:7: <record>: expected a JSON object, got array" in defects
    assert len(defects) == 2


def test_json_array_elements_are_numbered_by_0_based_index():
    records = list(iter_records(FILES / "ar_array.json"))
    assert [r.line for r in records] == [0, 1]
    assert records[1].data["Accepted"] == ["Bonjour"]


def test_json_array_that_does_not_parse_reports_its_file_line():
    path = FILES / "broken_array.json"
    (record,) = iter_records(path)
    assert str(record.defect) == (
        f"{path}:3: <line>: not valid JSON: Expecting ',' delimiter (line 3, column 33)"
    )


def test_non_object_array_element_is_a_defect(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"a": 1}, "oops", null]', encoding="utf-8")
    assert _defects(list(iter_records(path))) == [
        f"{path}:1: <record>: expected a JSON object, got string",
        f"{path}:2: <record>: expected a JSON object, got null",
    ]


def test_json_file_without_array_is_read_as_json_lines(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    assert [(r.line, r.data) for r in iter_records(path)] == [(1, {"a": 1}), (2, {"a": 2})]


@pytest.mark.parametrize("name", ["data.jsonl.gz", "data.json.gz"])
def test_gzipped_files(tmp_path, name):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "r", "chosen": "c", "rejected": "d"}]
    text = json.dumps(rows) if name.startswith("data.json.") else "\n".join(map(json.dumps, rows))
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    records = list(iter_records(path))
    assert [r.data for r in records] == rows
    assert [r.line for r in records] == ([0, 1] if name == "data.json.gz" else [1, 2])


def test_truncated_gzip_reports_where_reading_stopped(tmp_path):
    lines = "".join(json.dumps({"n": i, "pad": "x" * 50}) + "\n" for i in range(200))
    packed = gzip.compress(lines.encode("utf-8"))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    records = list(iter_records(path))
    *good, last = records
    assert all(r.defect is None for r in good) and good
    assert last.defect is not None and last.line == good[-1].line + 1
    assert last.defect.field == "<file>" and "cannot decompress gzip data" in last.defect.message


def test_missing_file_raises_with_its_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(iter_records(missing))


def test_list_of_dicts_uses_0_based_index():
    records = list(iter_records([{"a": 1}, 3]))
    assert (records[0].source, records[0].line, records[0].data) == ("<list>", 0, {"a": 1})
    assert str(records[1].defect) == "<list>:1: <record>: expected a JSON object, got integer"


def test_dataset_rows():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}] * 2)
    records = list(iter_records(ds))
    assert [(r.source, r.line) for r in records] == [("<dataset>", 0), ("<dataset>", 1)]
    assert records[1].data == {"prompt": "q", "chosen": "a", "rejected": "b"}


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="cannot read preference records from int"):
        list(iter_records(3))
