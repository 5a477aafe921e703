"""Parquet files, CSV files and save_to_disk folders: read, validated and located like JSONL."""

from __future__ import annotations

import datetime
import gzip
import json
from pathlib import Path

import pytest

from prefalign.data.io import iter_records
from prefalign.data.load import LoadOptions, load_pairs, validate
from prefalign.data.tables import BATCH_ROWS

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

FILES = Path(__file__).parent / "files"


def _jsonl_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FILES / name).read_text(encoding="utf-8").splitlines() if line]


# A table has one set of columns, so rows with and without a `prompt` do not share one.
CONVERSATIONAL = _jsonl_rows("trl_conversational.jsonl")
EXPLICIT = [row for row in CONVERSATIONAL if "prompt" in row]
IMPLICIT = [row for row in CONVERSATIONAL if "prompt" not in row]
BAD = {"prompt": [{"role": "robot", "content": "q"}], "chosen": [{"role": "assistant", "content": " "}],
       "rejected": [{"role": "assistant", "content": "no"}]}
BAD_DEFECTS = ["prompt[0].role: must be one of system, user, assistant; got 'robot'",
               "chosen[0].content: empty or whitespace-only content"]


def _content(pairs):
    return [(p.prompt, p.chosen, p.rejected) for p in pairs]


def _parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _json_cells(row: dict) -> dict:
    return {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}


def _write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(_json_cells(r) for r in rows)
    return path


# Parquet --------------------------------------------------------------------------------------

def test_parquet_gives_the_pairs_of_the_same_rows_as_jsonl(tmp_path):
    from_jsonl = validate(FILES / "trl_conversational.jsonl").pairs
    assert len(EXPLICIT) == 1 and len(IMPLICIT) == len(from_jsonl) - 1
    for name, rows, expected in (("explicit", EXPLICIT, from_jsonl[:1]), ("implicit", IMPLICIT, from_jsonl[1:])):
        path = _parquet(tmp_path / f"{name}.parquet", rows)
        from_parquet = validate(path)
        assert from_parquet.format_by_source == {str(path): "trl"} and not from_parquet.defects
        assert _content(from_parquet.pairs) == _content(expected)
        assert [p.provenance.line for p in from_parquet.pairs] == list(range(1, len(rows) + 1))


def test_a_null_cell_in_a_table_is_a_null_field(tmp_path):
    """Arrow fills a column a row lacks with null: the row's defect says so."""
    path = _parquet(tmp_path / "mixed.parquet", EXPLICIT + IMPLICIT[:1])
    assert [str(d) for d in validate(path).defects] == [
        f"{path}:2: prompt: is null",
        f"{path}:2: chosen: expected exactly one assistant message, got 4",
        f"{path}:2: rejected: expected exactly one assistant message, got 4",
    ]


def test_parquet_defects_name_file_row_and_field_across_batches(tmp_path):
    """Row 1 + 2*BATCH_ROWS + 3 sits in the third batch; rows count from 1."""
    good = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    rows = [good] * (2 * BATCH_ROWS + 10)
    bad_row = 2 * BATCH_ROWS + 3
    rows[bad_row - 1] = BAD
    path = _parquet(tmp_path / "big.parquet", rows)
    result = validate(path, LoadOptions(dedupe=False))
    assert [str(d) for d in result.defects] == [f"{path}:{bad_row}: {d}" for d in BAD_DEFECTS]
    assert result.records_read == len(rows) and len(result.pairs) == len(rows) - 1


def test_a_file_that_is_not_parquet_is_a_file_defect(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text('{"prompt": "q"}\n', encoding="utf-8")
    (defect,) = validate(path).defects
    assert str(defect).startswith(f"{path}:1: <file>: cannot read Parquet data after row 0:")


def test_rejected_parquet_rows_keep_values_json_cannot_hold(tmp_path):
    rows = [{"prompt": "q", "chosen": "", "rejected": "b", "when": datetime.datetime(2024, 5, 1)}]
    rejects = tmp_path / "rejects.jsonl"
    load_pairs(_parquet(tmp_path / "t.parquet", rows), LoadOptions(on_error="skip"), rejects_path=rejects)
    (row,) = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert row["line"] == 1 and row["record"]["when"] == "2024-05-01 00:00:00"


# CSV ------------------------------------------------------------------------------------------

def test_csv_standard_rows_numbered_by_the_line_they_start_on(tmp_path):
    """The header is line 1; row 2's chosen spans lines 3-4, so the next row starts on line 5."""
    path = _csv(tmp_path / "std.csv", 'prompt,chosen,rejected\n'
                                      'Hi?,Hello!,Go away.\n'
                                      'Tell me more,"Line one\nline two",No.\n'
                                      '\n'
                                      'Empty chosen,,No.\n')
    result = validate(path)
    assert result.format_by_source == {str(path): "trl"}
    assert [(p.provenance.line, p.chosen) for p in result.pairs] == [(2, "Hello!"), (3, "Line one\nline two")]
    assert [str(d) for d in result.defects] == [f"{path}:6: chosen: empty or whitespace-only response"]


def test_csv_json_cells_hold_message_lists(tmp_path):
    path = _write_csv(tmp_path / "conv.csv", EXPLICIT + [BAD])
    result = validate(path)
    assert _content(result.pairs) == _content(validate(FILES / "trl_conversational.jsonl").pairs[:1])
    assert [str(d) for d in result.defects] == [f"{path}:3: {d}" for d in BAD_DEFECTS]


def test_csv_implicit_prompt_and_accepted_rejected_lists_are_detected(tmp_path):
    implicit = validate(_write_csv(tmp_path / "implicit.csv", IMPLICIT))
    assert implicit.format_by_source == {str(tmp_path / "implicit.csv"): "trl"}
    assert _content(implicit.pairs) == _content(validate(FILES / "trl_conversational.jsonl").pairs[1:])
    ar_rows = _jsonl_rows("ar_valid.jsonl")
    columns = ["Template", "User", "Accepted", "Rejected"]
    path = _write_csv(tmp_path / "ar.csv", [{k: r[k] for k in columns} for r in ar_rows])
    from_csv = validate(path)
    assert from_csv.format_by_source == {str(path): "accepted_rejected"}
    assert _content(from_csv.pairs) == _content(validate(FILES / "ar_valid.jsonl").pairs)


def test_csv_pku_ids_as_text(tmp_path):
    path = _csv(tmp_path / "pku.csv", "prompt,response_0,response_1,better_response_id,safer_response_id\n"
                                      "q,first,second,1,0\n"
                                      "q2,first,second,2,0\n")
    result = validate(path)
    assert [(p.chosen, p.rejected) for p in result.pairs] == [("second", "first")]
    assert [str(d) for d in result.defects] == [f"{path}:3: better_response_id: must be 0 or 1, got '2'"]


def test_csv_text_that_only_looks_like_json_stays_text(tmp_path):
    path = _csv(tmp_path / "t.csv", 'prompt,chosen,rejected\n"[INST] hi [/INST]","{a} b",[1\n')
    (pair,) = validate(path).pairs
    assert (pair.prompt[0].content, pair.chosen, pair.rejected) == ("[INST] hi [/INST]", "{a} b", "[1")


def test_csv_python_reprs_ragged_rows_and_bad_utf8_are_row_defects(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'prompt,chosen,rejected\n'
                     b'"[{\'role\': \'user\', \'content\': \'hi\'}]",a,b\n'
                     b'q,a\n'
                     b'q,\xff\xfe,b\n'
                     b'q,a,b\n')
    result = validate(path)
    assert [str(d) for d in result.defects] == [
        f"{path}:2: prompt: looks like a Python list or dict, not JSON; write list cells as JSON "
        "(json.dumps), not str() of the list",
        f"{path}:3: <row>: has 2 cell(s), the header has 3",
        f"{path}:4: <row>: invalid UTF-8 in this row",
    ]
    assert len(result.pairs) == 1


def test_csv_with_bom_gzip_and_a_repeated_column(tmp_path):
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(b"\xef\xbb\xbfprompt,chosen,rejected\nq,a,b\n"))
    assert [p.chosen for p in validate(gz).pairs] == ["a"]
    repeated = _csv(tmp_path / "rep.csv", "prompt,chosen,chosen\nq,a,b\n")
    assert [str(d) for d in validate(repeated).defects] == [
        f"{repeated}:1: <file>: the header row repeats column(s) 'chosen'"]


def test_csv_broken_quoting_stops_with_a_file_defect_after_the_rows_read(tmp_path):
    path = _csv(tmp_path / "quote.csv", 'prompt,chosen,rejected\nq,a,b\nq,"a"b,c\nq,a,b\n')
    result = validate(path)
    assert len(result.pairs) == 1
    assert [str(d) for d in result.defects] == [
        f"{path}:3: <file>: not valid CSV: ',' expected after '\"'"]
    unterminated = _csv(tmp_path / "open.csv", 'prompt,chosen,rejected\nq,"a,b\n')
    assert [str(d) for d in validate(unterminated).defects] == [
        f"{unterminated}:2: <file>: not valid CSV: unexpected end of data"]


# save_to_disk folders -------------------------------------------------------------------------

def test_saved_dataset_rows_count_from_one(tmp_path):
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(EXPLICIT + [BAD]).save_to_disk(str(folder))
    result = validate(folder)
    assert result.format_by_source == {str(folder): "trl"}
    assert [p.provenance.line for p in result.pairs] == [1]
    assert [str(d) for d in result.defects] == [f"{folder}:2: {d}" for d in BAD_DEFECTS]
    assert [r.line for r in iter_records(folder)] == [1, 2]


def test_a_saved_dataset_dict_asks_for_a_split(tmp_path):
    folder = tmp_path / "dd"
    split = datasets.Dataset.from_list(EXPLICIT)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(folder))
    with pytest.raises(ValueError, match=r"saved DatasetDict \(splits: train, test\); pass one "
                                         r"split's folder, e.g. .*dd/train"):
        validate(folder)
    assert len(validate(folder / "test").pairs) == 1


def test_a_folder_that_is_not_a_saved_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder but not a dataset saved with"):
        validate(tmp_path / "plain")


def test_every_input_kind_gives_the_same_pairs_and_fingerprint_order(tmp_path):
    rows = _jsonl_rows("trl_standard.jsonl")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    sources = [FILES / "trl_standard.jsonl", _parquet(tmp_path / "t.parquet", rows),
               _write_csv(tmp_path / "t.csv", rows), folder]
    contents = [_content(validate(source).pairs) for source in sources]
    assert all(c == contents[0] for c in contents) and contents[0]
    together = load_pairs(sources)
    assert len(together.dropped_duplicates) == 3 * len(contents[0])  # copies across formats
