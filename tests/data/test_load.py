"""load_pairs / validate: all defects of all files, skip with a side file, identical and duplicate drops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.data.load import LoadOptions, load_pairs, validate
from prefalign.data.types import DataError

FILES = Path(__file__).parent / "files"
REAL = Path("/work/shared/data/external/hh-rlhf-harmless-base/test.jsonl")


def test_raise_lists_every_defect_of_every_file_after_reading_all():
    broken_ar, broken_trl = FILES / "ar_broken.jsonl", FILES / "trl_broken.jsonl"
    with pytest.raises(DataError) as error:
        load_pairs([broken_ar, FILES / "trl_standard.jsonl", broken_trl])
    defects = error.value.defects
    # 13 defects in 7 records of ar_broken, 8 in 5 records of trl_broken; 8 + 2 + 5 records read.
    assert len(defects) == 21
    assert {d.source for d in defects} == {str(broken_ar), str(broken_trl)}
    message = str(error.value)
    assert message.startswith("21 defect(s) in 12 of 15 record(s); nothing loaded")
    assert f"{broken_ar}:2: Accepted: has 3 item(s)" in message


def test_skip_writes_rejects_with_reasons_and_says_how_many(tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    result = load_pairs(FILES / "ar_broken.jsonl", LoadOptions(on_error="skip"), rejects_path=rejects)
    assert len(result.pairs) == 1 and result.records_rejected == 7
    assert result.warnings[0] == f"skipped 7 invalid record(s) (13 defect(s)); see {rejects}"
    rows = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert [row["line"] for row in rows] == [2, 3, 4, 5, 6, 7, 9]
    assert rows[0]["defects"][0]["field"] == "Accepted"
    assert rows[0]["record"]["Accepted"] == ["x", "y", "z"]  # the parsed record, kept whole
    assert rows[4]["record"].startswith('{"Template": ["CUSTOM"]')  # not JSON: the raw text
    assert rows[5]["record"] == "[1, 2, 3]"  # not an object: the raw text too
    assert [d["message"] for d in rows[2]["defects"]] == [
        "must be a list of exactly one string, got 2 items", "is null", "missing field"]


def test_skip_without_rejects_path_still_warns():
    result = load_pairs(FILES / "invalid_utf8.jsonl", LoadOptions(on_error="skip"))
    assert len(result.pairs) == 2
    assert result.warnings == [
        "skipped 1 invalid record(s) (1 defect(s)); pass rejects_path to keep them"]


def test_skip_with_nothing_to_skip_still_replaces_a_stale_rejects_file(tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text("stale\n", encoding="utf-8")
    result = load_pairs(FILES / "trl_standard.jsonl", LoadOptions(on_error="skip"), rejects_path=rejects)
    assert result.warnings == [] and rejects.read_text(encoding="utf-8") == ""


def test_identical_and_duplicate_pairs_are_dropped_with_counts():
    """duplicates.jsonl: lines 1, 2 and 4 have the same content (2 duplicates, the id does not
    count), line 3 has chosen == rejected (1 identical), line 5 is distinct: 2 kept."""
    result = load_pairs(FILES / "duplicates.jsonl")
    assert [p.provenance.line for p in result.pairs] == [1, 5]
    assert [p.provenance.line for p in result.dropped_duplicates] == [2, 4]
    assert [p.provenance.line for p in result.dropped_identical] == [3]
    path = FILES / "duplicates.jsonl"
    assert result.warnings == [
        f"dropped 1 pair(s) whose chosen equals rejected (first: {path}:3)",
        f"dropped 2 exact duplicate pair(s) (first: {path}:2)",
    ]


def test_dedupe_off_keeps_duplicates_but_never_identical_pairs():
    result = load_pairs(FILES / "duplicates.jsonl", LoadOptions(dedupe=False))
    assert [p.provenance.line for p in result.pairs] == [1, 2, 4, 5]
    assert len(result.dropped_identical) == 1 and result.dropped_duplicates == []


def test_duplicates_are_found_across_files_and_formats(tmp_path):
    """The same pair as JSONL and as a JSON array: the second copy is a duplicate."""
    array = tmp_path / "copy.json"
    array.write_text(json.dumps([json.loads(line) for line in
                                 (FILES / "trl_standard.jsonl").read_text().splitlines()]))
    result = load_pairs([FILES / "trl_standard.jsonl", array])
    assert len(result.pairs) == 2 and len(result.dropped_duplicates) == 2
    assert result.format_by_source == {str(FILES / "trl_standard.jsonl"): "trl", str(array): "trl"}


def test_records_that_give_no_pair_are_reported():
    result = load_pairs(FILES / "ar_valid.jsonl")
    assert len(result.pairs) == 3  # line 1: one pair; line 2: turns 1 and 2; line 4: none
    assert result.warnings == [
        "1 record(s) gave no pair because Accepted equals Rejected in every turn "
        f"(first: {FILES / 'ar_valid.jsonl'}:4)"]


def test_validate_never_raises_for_data_defects():
    result = validate([FILES / "ar_broken.jsonl", FILES / "mixed.jsonl"])
    assert len(result.defects) == 14 and result.records_rejected == 11
    assert result.format_by_source[str(FILES / "mixed.jsonl")] == "unknown"


def test_empty_file_is_a_defect(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert [str(d) for d in validate(empty).defects] == [f"{empty}:1: <source>: no records"]


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_pairs([FILES / "trl_standard.jsonl", tmp_path / "missing.jsonl"])


def test_list_of_dicts_and_dataset_sources():
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}]
    result = validate(rows)
    assert [str(d) for d in result.defects] == ["<list>:1: rejected: missing field"]
    datasets = pytest.importorskip("datasets")
    result = load_pairs(datasets.Dataset.from_list(rows[:1]))
    assert result.format_by_source == {"<dataset>": "trl"} and len(result.pairs) == 1


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="format must be 'auto' or one of"):
        LoadOptions(format="csv")
    with pytest.raises(ValueError, match="on_error must be"):
        LoadOptions(on_error="ignore")


@pytest.mark.skipif(not REAL.is_file(), reason="real hh-rlhf test split not present")
def test_real_hh_file_loads():
    result = load_pairs(REAL, LoadOptions(on_error="skip"))
    assert len(result.pairs) == 2308
