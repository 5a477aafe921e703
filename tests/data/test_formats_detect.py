"""Format detection looks at every record and refuses mixed or unknown sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefalign.data.formats import FORMATS, FormatDetectionError, detect_format
from prefalign.data.io import iter_records
from prefalign.data.load import LoadOptions, validate

FILES = Path(__file__).parent / "files"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ar_valid.jsonl", "accepted_rejected"),
        ("ar_array.json", "accepted_rejected"),
        ("trl_standard.jsonl", "trl"),
        ("trl_conversational.jsonl", "trl"),
        ("hh_small.jsonl", "hh_rlhf"),
        ("pku_small.jsonl", "pku_saferlhf"),
    ],
)
def test_each_format_is_detected(name, expected):
    assert detect_format(iter_records(FILES / name)) == expected


def test_format_names_are_fixed():
    assert list(FORMATS) == ["accepted_rejected", "trl", "hh_rlhf", "pku_saferlhf"]
    assert all(module.NAME == name for name, module in FORMATS.items())


def test_mixed_file_names_the_lines_of_each_format():
    path = FILES / "mixed.jsonl"
    with pytest.raises(FormatDetectionError) as error:
        detect_format(iter_records(path), str(path))
    assert "accepted_rejected at lines 1, 4; trl at line 2; hh_rlhf at line 3" in str(error.value)


def test_mixed_file_is_a_defect_that_rejects_every_record():
    path = FILES / "mixed.jsonl"
    result = validate(path)
    (defect,) = result.defects
    assert str(defect).startswith(f"{path}:1: <format>: the records of {path} mix formats:")
    assert (result.records_read, result.records_rejected, result.pairs) == (4, 4, [])


def test_a_mismatch_deep_in_the_file_is_found():
    """Only record 300 of 300 is hh-rlhf: a first-row detector would miss it."""
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(299)]
    rows.append({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"})
    with pytest.raises(FormatDetectionError, match="trl at lines 0, 1, 2, 3, 4 \\(\\+294 more\\); hh_rlhf at line 299"):
        detect_format(rows)


def test_no_known_format():
    with pytest.raises(FormatDetectionError, match=r"line 0 has keys \['answer', 'question'\]"):
        detect_format([{"question": "q", "answer": "a"}])


def test_format_override_checks_every_record_against_that_format():
    path = FILES / "mixed.jsonl"
    result = validate(path, LoadOptions(format="trl"))
    assert result.format_by_source == {str(path): "trl"}
    # Lines 1 and 4 (Accepted/Rejected) lack chosen and rejected; line 3 lacks a prompt.
    assert [str(d) for d in result.defects] == [
        f"{path}:1: chosen: missing field",
        f"{path}:1: rejected: missing field",
        f"{path}:3: prompt: missing field (needed unless chosen and rejected are message lists "
        "that share the prompt; got string)",
        f"{path}:4: chosen: missing field",
        f"{path}:4: rejected: missing field",
    ]
    assert len(result.pairs) == 1
